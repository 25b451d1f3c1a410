// Scenario: short connections (connect, send 100 B, close) in network namespaces → producer (real kernel capture) →
// bundled broker → the consumer's aggregator. A connection that closes before its `established` record is shipped is
// shipped once, as its `closed` record, and the rollups still count it opened and closed exactly once (issue 13).
// A connection that stays open is shipped as `established` once the producer stops holding it back.
import { rmSync, writeFileSync } from 'fs';
import { join } from 'path';
import { createLogger, silentLogger } from '../lib/log';
import { PartitionAggregator } from '../consumer/aggregator';
import { toAggInput } from '../consumer/records';
import { createProducer, type NettallyProducer, type ProducerConfig } from '../producer/producer';
import type { Decoded } from '../schemas/index';
import { startTestBroker, type TestBroker } from './helpers/broker';
import { randomPort, startClient, startServer, transfer } from './helpers/capture';
import { Cleanups } from './helpers/cleanups';
import { createNetnsPair, type NetnsPair } from './helpers/netns';
import { readTopic, seqGaps } from './helpers/producer';

const TCP = 6;
const TOPIC = 'nettally.records';
const LOG = process.env.NT_DEBUG ? createLogger({ level: 'debug' }) : silentLogger;
const cleanups = new Cleanups();
let pair: NetnsPair;

beforeAll(() => {
  pair = createNetnsPair('short');
  cleanups.push(() => pair.destroy());
});
afterAll(() => cleanups.run());

function config(address: string): ProducerConfig {
  const pinDir = `/sys/fs/bpf/nettally-short-${process.pid}`;
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }));
  return {
    stateDir: cleanups.tempDir('short'), kafka: { clientId: 'nettally-test', brokers: [address] }, topic: TOPIC, pinDir,
    // the daemon's defaults where they matter here: batch linger 200 ms, kernel flush interval 5 s
    spoolMaxBytes: 64 << 20, fsync: 'always', batchMaxRecords: 5000, batchMaxBytes: 1 << 20, batchMaxMs: 200,
    flushIntervalMs: 5000, flushThresholdBytes: 16 << 20, ifaceIntervalMs: 0, compression: 'none', idempotent: false,
    shutdownTimeoutMs: 10_000, statusIntervalMs: 0,
  };
}

async function brokerAndProducer(): Promise<{ broker: TestBroker; producer: NettallyProducer }> {
  const broker = await startTestBroker({ logger: silentLogger });
  cleanups.push(() => broker.stop());
  const producer = createProducer({ config: config(broker.address), logger: LOG });
  cleanups.push(() => producer.stop());
  await producer.start();
  return { broker, producer };
}

const mine = (d: Decoded, netns: number, port: number): boolean =>
  (d.kind === 'conn_event' || d.kind === 'conn_sample') && d.record.netns === netns && d.record.protocol === TCP && (d.record.dport === port || d.record.sport === port);

/** connections_opened / connections_closed per netns in the rollups the consumer's aggregator makes of these records. */
function rollups(recs: Decoded[]): Map<string, { opened: number; closed: number }> {
  const agg = new PartitionAggregator({ partition: 0 });
  for (const d of recs) agg.add(toAggInput(d));
  const out = new Map<string, { opened: number; closed: number }>();
  for (const p of agg.pending().points) {
    if (p.measurement !== 'nettally_traffic_1m') continue;
    const s = out.get(p.tags.netns) ?? { opened: 0, closed: 0 };
    s.opened += Number(p.fields.connections_opened ?? 0);
    s.closed += Number(p.fields.connections_closed ?? 0);
    out.set(p.tags.netns, s);
  }
  return out;
}

test('N short connections: N conn_event records per side (not 2N), and the rollups count N opened and N closed', async () => {
  const { broker, producer } = await brokerAndProducer();

  const N = 200;
  const t = await transfer(pair, 'tcp', 4, ['--conns', String(N)], ['--conns', String(N), '--bytes', '100']);
  expect(t.client).toHaveLength(N);
  const closedOf = (all: Decoded[], ns: number): number => all.filter((d) => mine(d, ns, t.port) && d.kind === 'conn_event' && d.record.event === 'closed').length;
  const recs = await readTopic(broker.address, TOPIC, { until: (all) => closedOf(all, pair.a.inode) === N && closedOf(all, pair.b.inode) === N, timeoutMs: 90_000 });
  // Let anything still held back reach the topic too: it must not be there.
  await producer.stop();
  const all = await readTopic(broker.address, TOPIC, { timeoutMs: 30_000 });
  expect(all.length).toBeGreaterThanOrEqual(recs.length);
  for (const ns of [pair.a.inode, pair.b.inode]) {
    const events = all.filter((d) => mine(d, ns, t.port) && d.kind === 'conn_event');
    expect({ ns, conn_events: events.length, closed: closedOf(all, ns) }).toEqual({ ns, conn_events: N, closed: N });
  }
  expect(seqGaps(all)).toEqual([]);
  const r = rollups(all.filter((d) => mine(d, pair.a.inode, t.port) || mine(d, pair.b.inode, t.port)));
  expect(r.get(String(pair.a.inode))).toEqual({ opened: N, closed: N });
  expect(r.get(String(pair.b.inode))).toEqual({ opened: N, closed: N });
  expect(producer.status().records_folded).toBeGreaterThanOrEqual(2 * N);
}, 180_000);

test('a connection that stays open is shipped as established while open; counted opened once when it closes', async () => {
  const { broker } = await brokerAndProducer();

  const go = cleanups.tempDir('go');
  const port = randomPort();
  const srv = await startServer(pair, 'tcp', 4, port, []);
  const cli = startClient(pair, 'tcp', 4, port, ['--parts', '100,7', '--pause-dir', go]);
  cleanups.push(() => {
    srv.kill();
    cli.kill();
  });
  await cli.waitLine('PART1');
  const established = (all: Decoded[], ns: number): boolean => all.some((d) => mine(d, ns, port) && d.kind === 'conn_event' && d.record.event === 'established');
  // held back only briefly (no later record of it came), then shipped: no timer may leave it behind
  await readTopic(broker.address, TOPIC, { until: (all) => established(all, pair.a.inode) && established(all, pair.b.inode), timeoutMs: 60_000 });
  writeFileSync(join(go, 'go1'), '');
  await Promise.all([srv.done, cli.done]);
  const closed = (all: Decoded[], ns: number): boolean => all.some((d) => mine(d, ns, port) && d.kind === 'conn_event' && d.record.event === 'closed');
  const all = await readTopic(broker.address, TOPIC, { until: (a) => closed(a, pair.a.inode) && closed(a, pair.b.inode), timeoutMs: 60_000 });
  const r = rollups(all.filter((d) => mine(d, pair.a.inode, port) || mine(d, pair.b.inode, port)));
  expect(r.get(String(pair.a.inode))).toEqual({ opened: 1, closed: 1 });
  expect(r.get(String(pair.b.inode))).toEqual({ opened: 1, closed: 1 });
}, 180_000);

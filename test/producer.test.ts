// Scenario: traffic in network namespaces → producer (real kernel capture) → bundled broker → a test reader
// decoding every record: per-connection and per-netns totals equal the bytes moved — also across a 30 s broker
// outage and a producer SIGKILL + restart (after dedupe by host, epoch, seq).
import { mkdtempSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { parseArgs } from '../lib/args';
import { createLogger, silentLogger } from '../lib/log';
import { command as producerCommand } from '../producer/cmd-producer';
import { KAFKA_DEFAULT_MAX_MESSAGE_BYTES } from '../producer/kafka-batch';
import { createProducer, type ProducerConfig } from '../producer/producer';
import type { Decoded } from '../schemas/index';
import { startBrokerProcess, startTestBroker } from './helpers/broker';
import { movedOf, randomPort, startClient, startServer, transfer, type Moved } from './helpers/capture';
import { createNetnsPair, type NetnsPair } from './helpers/netns';
import { batchSizesOnDisk, readTopic, seqGaps, startProducerProcess, totals, type Totals } from './helpers/producer';

const TCP = 6;
const TOPIC = 'nettally.records';
// NT_DEBUG=1 shows the in-process producer's log.
const LOG = process.env.NT_DEBUG ? createLogger({ level: 'debug' }) : silentLogger;
const cleanups: Array<() => Promise<unknown> | unknown> = [];
let pair: NetnsPair;

beforeAll(() => {
  pair = createNetnsPair('prod');
  cleanups.push(() => pair.destroy());
});
afterAll(async () => {
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch (e) {
      process.stderr.write(`cleanup failed: ${String(e)}\n`);
    }
  }
});

function tempDir(tag: string): string {
  const d = mkdtempSync(join(tmpdir(), `nettally-${tag}-`));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

let pins = 0;
function pinDir(): string {
  const d = `/sys/fs/bpf/nettally-ptest-${process.pid}-${pins++}`;
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function config(address: string, over: Partial<ProducerConfig> = {}): ProducerConfig {
  return {
    stateDir: tempDir('pstate'), kafka: { clientId: 'nettally-test', brokers: [address] }, topic: TOPIC, pinDir: pinDir(),
    spoolMaxBytes: 64 << 20, fsync: 'always', batchMaxRecords: 1000, batchMaxBytes: 1 << 20, batchMaxMs: 50,
    flushIntervalMs: 500, flushThresholdBytes: 1 << 20, ifaceIntervalMs: 0, compression: 'none', idempotent: false,
    shutdownTimeoutMs: 10_000, statusIntervalMs: 0, ...over,
  };
}

/** What the test moved, per socket, with the netns the socket lived in. */
interface Want {
  netns: number;
  m: Moved;
}
const clientSide = (ms: Moved[]): Want[] => ms.map((m) => ({ netns: pair.a.inode, m }));
const serverSide = (ms: Moved[]): Want[] => ms.map((m) => ({ netns: pair.b.inode, m }));

function connOf(t: Totals, w: Want): { tx: number; rx: number; closed: boolean } | undefined {
  for (const c of t.conns.values()) if (c.netns === w.netns && c.protocol === TCP && c.sport === w.m.sport && c.dport === w.m.dport) return c;
  return undefined;
}

/** Reads the topic until every wanted socket has its close record; then checks exact totals per connection and per netns. */
async function expectExact(address: string, want: Want[]): Promise<Decoded[]> {
  const recs = await readTopic(address, TOPIC, {
    until: (all) => {
      const t = totals(all);
      return want.every((w) => connOf(t, w)?.closed);
    },
    timeoutMs: 90_000,
  });
  const t = totals(recs);
  for (const w of want) {
    const c = connOf(t, w);
    expect({ netns: w.netns, sport: w.m.sport, tx: c?.tx, rx: c?.rx }).toEqual({ netns: w.netns, sport: w.m.sport, tx: w.m.tx, rx: w.m.rx });
  }
  // Every connection in the test's namespaces is one the test made: the netns totals are the sums of what it moved.
  for (const ns of [pair.a.inode, pair.b.inode]) {
    const mine = want.filter((w) => w.netns === ns);
    expect({ ns, ...t.netns.get(ns) }).toEqual({ ns, tx: mine.reduce((a, w) => a + w.m.tx, 0), rx: mine.reduce((a, w) => a + w.m.rx, 0) });
  }
  expect(seqGaps(recs)).toEqual([]);
  return recs;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('traffic in namespaces reaches Kafka with exact per-connection and per-netns totals', async () => {
  const broker = await startTestBroker({ logger: silentLogger });
  cleanups.push(() => broker.stop());
  const producer = createProducer({ config: config(broker.address), logger: LOG });
  cleanups.push(() => producer.stop());
  await producer.start();

  const big = await transfer(pair, 'tcp', 4, ['--conns', '2', '--reply', String(3 << 20)], ['--conns', '2', '--bytes', String(5 << 20)]);
  const many = await transfer(pair, 'tcp', 6, ['--conns', '40', '--reply', '777'], ['--conns', '40', '--bytes', '12345', '--chunk', '1000']);
  const want = [...clientSide(big.client), ...serverSide(big.server), ...clientSide(many.client), ...serverSide(many.server)];
  const recs = await expectExact(broker.address, want);

  // The records carry the contract's identity and enrichment.
  const hostId = recs[0].record.host_id;
  expect(hostId).toMatch(/^[0-9a-f]{32}$/);
  const ev = recs.find((d) => d.kind === 'conn_event' && d.record.event === 'closed' && d.record.netns === pair.a.inode);
  expect(ev?.record).toMatchObject({ comm: 'python3', protocol: TCP });
  if (ev?.kind === 'conn_event') {
    expect(ev.record.duration_ns).toBeGreaterThan(0);
    const ms = Number(ev.record.time_ns / 1_000_000n);
    expect(Math.abs(ms - Date.now())).toBeLessThan(120_000);
  }
  // Enrichment reads /proc/<pid>/cgroup when the record is shipped: the long transfers' processes are still alive then.
  expect(recs.some((d) => (d.kind === 'conn_event' || d.kind === 'conn_sample') && d.record.netns === pair.a.inode && d.record.cgroup_path !== null)).toBe(true);
  expect(recs.some((d) => d.kind === 'listen' && d.record.netns === pair.b.inode && d.record.port === big.port)).toBe(true);
  await producer.stop();
  expect(producer.status()).toMatchObject({ spool_records: 0, spool_bytes: 0 });
});

test('broker down for 30 s during traffic: after the drain, totals exact and spool empty', async () => {
  let broker = await startBrokerProcess();
  cleanups.push(() => broker.stop());
  const producer = createProducer({ config: config(broker.address, { statusIntervalMs: 1000 }), logger: LOG });
  cleanups.push(() => producer.stop());
  await producer.start();

  const go = tempDir('go');
  const port = randomPort();
  const parts = [1_000_000, 2_000_000, 3_000_001];
  const srv = await startServer(pair, 'tcp', 4, port, []);
  const cli = startClient(pair, 'tcp', 4, port, ['--parts', parts.join(','), '--pause-dir', go]);
  await cli.waitLine('PART1');
  await sleep(700); // a flush of the first part reaches Kafka

  await broker.kill();
  const downAt = Date.now();
  writeFileSync(join(go, 'go1'), ''); // the long connection moves more while Kafka is down
  const during = await transfer(pair, 'tcp', 4, ['--conns', '25', '--reply', '4321'], ['--conns', '25', '--bytes', '65432']);
  await sleep(1500);
  const s = producer.status();
  expect(s.kafka_ok).toBe(false);
  expect(s.spool_records).toBeGreaterThan(0);
  await sleep(Math.max(0, 30_000 - (Date.now() - downAt)));

  broker = await broker.restart();
  cleanups.push(() => broker.stop());
  writeFileSync(join(go, 'go2'), '');
  const client = movedOf(await cli.done);
  const server = movedOf(await srv.done);
  expect(client[0].tx).toBe(parts.reduce((a, b) => a + b, 0));

  const want = [...clientSide(client), ...serverSide(server), ...clientSide(during.client), ...serverSide(during.server)];
  await expectExact(broker.address, want);
  expect(await producer.drained(30_000)).toBe(true);
  expect(producer.status()).toMatchObject({ spool_records: 0, spool_bytes: 0, kafka_ok: true });
  await producer.stop();
}, 180_000);

test('producer SIGKILLed during traffic and restarted: totals exact after dedupe; SIGTERM then flushes everything', async () => {
  const broker = await startTestBroker({ logger: silentLogger });
  cleanups.push(() => broker.stop());
  const stateDir = tempDir('pkill');
  const pins = pinDir();
  const args = ['--brokers', broker.address, '--state-dir', stateDir, '--pin-dir', pins, '--flush-interval', '300ms', '--batch-max-ms', '20ms',
    '--status-interval', '0', '--iface-interval', '0'];
  let p = startProducerProcess(args);
  cleanups.push(() => p.child.kill('SIGKILL'));
  await p.ready;

  const go = tempDir('go');
  const port = randomPort();
  const parts = [700_000, 1_100_000, 1_300_007];
  const srv = await startServer(pair, 'tcp', 4, port, []);
  const cli = startClient(pair, 'tcp', 4, port, ['--parts', parts.join(','), '--pause-dir', go]);
  const before = await transfer(pair, 'tcp', 4, ['--conns', '30', '--reply', '1000'], ['--conns', '30', '--bytes', '20000']);
  await cli.waitLine('PART1');
  await sleep(400);

  p.child.kill('SIGKILL');
  expect(await p.exited).toBe('SIGKILL');
  // The long connection keeps moving bytes while no producer runs (TCP's own counters catch up on the next event).
  writeFileSync(join(go, 'go1'), '');
  await cli.waitLine('PART2');

  p = startProducerProcess(args);
  cleanups.push(() => p.child.kill('SIGKILL'));
  await p.ready;
  writeFileSync(join(go, 'go2'), '');
  const client = movedOf(await cli.done);
  const server = movedOf(await srv.done);
  const after = await transfer(pair, 'tcp', 6, ['--conns', '20', '--reply', '333'], ['--conns', '20', '--bytes', '4444']);

  const want = [...clientSide(client), ...serverSide(server), ...clientSide(before.client), ...serverSide(before.server), ...clientSide(after.client), ...serverSide(after.server)];
  const recs = await expectExact(broker.address, want);
  expect(new Set(recs.map((d) => d.record.epoch)).size).toBeGreaterThanOrEqual(2);

  p.child.kill('SIGTERM');
  expect(await p.exited).toBe(0);
  expect(p.stderr()).toContain('everything acknowledged by Kafka');
}, 180_000);

test('broker down while 6000 short connections are made: the backlog (>= 12k records) drains exactly with the daemon defaults', async () => {
  const dataDir = tempDir('pbroker');
  let broker = await startTestBroker({ logger: silentLogger, dataDir });
  const port = broker.port;
  cleanups.push(() => broker.stop());
  // The daemon's own batching defaults (records, bytes, --max-message-bytes) as `nettally producer` parses them.
  const defaults = parseArgs(producerCommand.spec, [], {});
  if (defaults === 'help') throw new Error('unexpected help');
  const batching = { batchMaxRecords: defaults.num('batch-max-records'), batchMaxBytes: defaults.num('batch-max-bytes'), maxMessageBytes: defaults.values['max-message-bytes'] as number | undefined };
  const producer = createProducer({ config: config(broker.address, { ...batching, batchMaxMs: 200 }), logger: LOG });
  cleanups.push(() => producer.stop());
  await producer.start();
  await broker.stop(); // Kafka goes away before the connections are made

  const many = await transfer(pair, 'tcp', 4, ['--conns', '6000', '--reply', '100'], ['--conns', '6000', '--bytes', '1000']);
  const want = [...clientSide(many.client), ...serverSide(many.server)];
  // Every socket's two kernel records (established, closed) are spooled while Kafka is down — or, for the
  // established ones, folded into the closed record of their socket (one record per short connection).
  const until = Date.now() + 120_000;
  while (producer.status().spool_records + producer.status().records_folded < 2 * want.length) {
    if (Date.now() > until) throw new Error(`backlog not spooled: ${JSON.stringify(producer.status())}`);
    await sleep(200);
  }
  expect(producer.status()).toMatchObject({ records_out: 0, kafka_ok: false });
  const backlog = producer.status().spool_records;
  expect(backlog).toBeGreaterThanOrEqual(12_000);

  broker = await startTestBroker({ logger: silentLogger, dataDir, port });
  cleanups.push(() => broker.stop());
  expect(await producer.drained(180_000)).toBe(true);
  const recs = await readTopic(broker.address, TOPIC, { timeoutMs: 120_000 });
  // Every record once, in seq order (one host and epoch, one partition).
  const t = totals(recs);
  expect(t.duplicates).toBe(0);
  expect(t.unique).toBe(recs.length);
  expect(recs.length).toBeGreaterThanOrEqual(backlog);
  expect(new Set(recs.map((d) => d.record.epoch)).size).toBe(1);
  expect(recs.every((d, i) => i === 0 || d.record.seq > recs[i - 1].record.seq)).toBe(true);
  expect(seqGaps(recs)).toEqual([]);
  // Exact per socket (indexed: 12000 sockets) and per netns.
  const byKey = new Map<string, { tx: number; rx: number; closed: boolean }>();
  for (const c of t.conns.values()) if (c.protocol === TCP) byKey.set(`${c.netns}/${c.sport}/${c.dport}`, c);
  const keys = want.map((w) => `${w.netns}/${w.m.sport}/${w.m.dport}`);
  expect(new Set(keys).size).toBe(want.length); // each socket is told apart by its ports
  const wrong = want
    .map((w, i) => ({ want: { key: keys[i], tx: w.m.tx, rx: w.m.rx }, got: byKey.get(keys[i]) }))
    .filter(({ want: w, got }) => !got || got.tx !== w.tx || got.rx !== w.rx || !got.closed);
  expect({ wrong: wrong.length, first: wrong.slice(0, 3) }).toEqual({ wrong: 0, first: [] });
  for (const ns of [pair.a.inode, pair.b.inode]) {
    const mine = want.filter((w) => w.netns === ns);
    expect({ ns, ...t.netns.get(ns) }).toEqual({ ns, tx: mine.reduce((a, w) => a + w.m.tx, 0), rx: mine.reduce((a, w) => a + w.m.rx, 0) });
  }
  // Each record batch the broker stored fits Kafka's default message.max.bytes.
  expect(Math.max(...batchSizesOnDisk(dataDir, TOPIC))).toBeLessThanOrEqual(KAFKA_DEFAULT_MAX_MESSAGE_BYTES);
  expect(producer.status()).toMatchObject({ batches_split: 0, records_dead_lettered: 0, kafka_state: 'ok' });
  await producer.stop();
}, 420_000);

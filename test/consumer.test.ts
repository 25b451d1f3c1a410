// Scenario: synthetic records with known totals → bundled broker → consumer → real influxd; `nettally usage` must
// return exactly those totals per window and group, for the v1 and the v2 write API; poison records go to the DLQ.
import type { Admin, Kafka } from 'kafkajs';
import { parseArgs } from '../lib/args';
import { silentLogger } from '../lib/log';
import { consumerConfigFrom, command as consumerCommand } from '../consumer/cmd-consumer';
import { createRollupConsumer, type RollupConsumer } from '../consumer/consumer';
import { synthesize } from '../consumer/synthetic';
import type { GroupKey } from '../consumer/usage';
import { startTestBroker, type InProcessBroker } from './helpers/broker';
import { startInflux, startV2Proxy, type TestInflux, type V2Proxy } from './helpers/influx';
import { createTopic, kafkaClient, messagesOf, produce, truthByGroup, usage, usageByGroup, waitCaughtUp } from './helpers/consumer';
import { Writable } from 'stream';
import { encode } from '../schemas';

const START = Date.UTC(2026, 0, 5, 10, 0, 0);
const FROM = START - 3_600_000;
const TO = START + 3 * 3_600_000;

let broker: InProcessBroker;
let influx: TestInflux;
let proxy: V2Proxy;
let kafka: Kafka;
let admin: Admin;
const running: RollupConsumer[] = [];

beforeAll(async () => {
  [broker, influx] = await Promise.all([startTestBroker(), startInflux()]);
  proxy = await startV2Proxy(influx.url);
  kafka = kafkaClient(broker.address);
  admin = kafka.admin();
  await admin.connect();
});

afterAll(async () => {
  for (const c of running) await c.stop().catch(() => undefined);
  await admin?.disconnect().catch(() => undefined);
  await proxy?.close();
  await broker?.stop();
  await influx?.destroy();
});

function startConsumer(argv: string[]): RollupConsumer {
  const args = parseArgs(consumerCommand.spec, ['--brokers', broker.address, '--flush-interval', '300ms', '--session-timeout', '6s', ...argv], {});
  if (args === 'help') throw new Error('help');
  const c = createRollupConsumer({ config: consumerConfigFrom(args), logger: silentLogger });
  running.push(c);
  return c;
}

async function expectExactUsage(influxArgs: string[], data: ReturnType<typeof synthesize>): Promise<void> {
  for (const window of ['1m', '1h'] as const) {
    for (const g of ['host', 'netns', 'port', 'process', 'direction'] as GroupKey[]) {
      const got = await usageByGroup(influxArgs, FROM, TO, g, window);
      expect(got.size).toBeGreaterThan(0);
      expect({ g, window, rows: got }).toEqual({ g, window, rows: truthByGroup(data.traffic, g, window) });
    }
  }
  const ifaceGot = await usageByGroup(influxArgs, FROM, TO, 'iface', '1m', 'iface');
  expect(ifaceGot.size).toBeGreaterThan(0);
  expect(ifaceGot).toEqual(truthByGroup(data.iface, 'iface', '1m'));
}

test('v1 write API: usage returns exactly the produced totals per window and group (duplicates, 3 partitions)', async () => {
  const topic = `records-v1-${process.pid}`;
  const db = `nt_v1_${process.pid}`;
  await createTopic(admin, topic, 3);
  const data = synthesize({ hosts: 5, connsPerHost: 30, startMs: START, minutes: 6, seed: 101 });
  const msgs = messagesOf(data, { dupEvery: 20, seed: 3 });
  expect(msgs.length).toBeGreaterThan(data.byHost.size * 30);
  const group = `g-v1-${process.pid}`;
  const c = startConsumer(['--topic', topic, '--group', group, '--influx-url', influx.url, '--influx-db', db, '--state-topic', `${topic}.state`, '--dlq-topic', `${topic}.dlq`]);
  await c.start();
  await produce(kafka, topic, msgs);
  await waitCaughtUp(admin, group, topic);
  expect(c.stats().duplicates).toBeGreaterThan(0);
  const influxArgs = ['--influx-url', influx.url, '--influx-db', db];
  await expectExactUsage(influxArgs, data);

  // finality: a window is final once every partition's watermark (newest event time − 2m lateness) passed its end
  const lastEventMs = [...data.byHost.values()].map((msgs) => Math.max(...msgs.map((m) => Number((m.record.time_ns as bigint) / 1_000_000n))));
  const surelyFinal = Math.min(...lastEventMs) - 120_000;
  const neverFinal = Math.max(...lastEventMs) - 120_000;
  const rows = JSON.parse(await usage([...influxArgs, '--from', new Date(FROM).toISOString(), '--to', new Date(TO).toISOString(), '--format', 'json'])) as { window: string; final: boolean }[];
  for (const r of rows) {
    const start = Date.parse(r.window);
    if (start + 60_000 <= surelyFinal) expect(r).toMatchObject({ final: true });
    if (start + 60_000 > neverFinal) expect(r).toMatchObject({ final: false });
  }
  expect(rows.some((r) => r.final)).toBe(true);
  expect(rows.some((r) => !r.final)).toBe(true);

  // the billing export totals exactly what the 1-hour rollup holds, per host and per netns
  for (const per of ['host', 'netns'] as const) {
    const csv = await usage([...influxArgs, '--billing', '--per', per, '--from', new Date(FROM).toISOString(), '--to', new Date(TO).toISOString()]);
    const [header, ...lines] = csv.trim().split('\n');
    const cols = header.split(',');
    expect(cols).toEqual(['hour', 'host_id', 'hostname', ...(per === 'netns' ? ['netns'] : []), 'tx_bytes', 'rx_bytes', 'total_bytes', 'final', 'gap']);
    const truth = truthByGroup(data.traffic, per, '1h');
    const got = new Map<string, Record<string, number>>();
    for (const l of lines) {
      const v = l.split(',');
      const r = Object.fromEntries(cols.map((k, i) => [k, v[i]]));
      got.set([String(Date.parse(r.hour)), r.host_id, r.hostname, ...(per === 'netns' ? [r.netns] : [])].join('|'), { tx: Number(r.tx_bytes), rx: Number(r.rx_bytes), total: Number(r.total_bytes) });
      expect(r.gap).toBe('false'); // nothing was deleted unread here
    }
    const want = new Map([...truth].map(([k, f]) => [k, { tx: f.tx_bytes, rx: f.rx_bytes, total: f.tx_bytes + f.rx_bytes }]).filter(([, f]) => (f as { total: number }).total > 0) as [string, Record<string, number>][]);
    expect(new Map([...got].filter(([, f]) => f.total > 0))).toEqual(want);
  }
  await c.stop();
});

test('v2 write API (through a /api/v2/write → /write proxy): exact totals per window and group', async () => {
  const topic = `records-v2-${process.pid}`;
  const db = `nt_v2_${process.pid}`;
  await influx.query(`CREATE DATABASE ${db}`);
  await createTopic(admin, topic, 2);
  const data = synthesize({ hosts: 3, connsPerHost: 25, startMs: START, minutes: 5, seed: 202 });
  const group = `g-v2-${process.pid}`;
  const before = proxy.v2Writes;
  const c = startConsumer([
    '--topic', topic, '--group', group, '--influx-url', proxy.url, '--influx-api', 'v2', '--influx-bucket', db, '--influx-org', 'nettally',
    '--influx-token', 'test-token', '--state-topic', `${topic}.state`, '--dlq-topic', `${topic}.dlq`,
  ]);
  await c.start();
  await produce(kafka, topic, messagesOf(data, { dupEvery: 15, seed: 5 }));
  await waitCaughtUp(admin, group, topic);
  expect(proxy.v2Writes).toBeGreaterThan(before);
  await expectExactUsage(['--influx-url', influx.url, '--influx-db', db], data);
  await c.stop();
});

test('poison records (bad magic, unknown fingerprint, truncated) land in the DLQ with the reason; the rest stays exact', async () => {
  const topic = `records-poison-${process.pid}`;
  const dlq = `${topic}.dlq`;
  const db = `nt_poison_${process.pid}`;
  await createTopic(admin, topic, 2);
  const data = synthesize({ hosts: 2, connsPerHost: 15, startMs: START, minutes: 4, seed: 303 });
  const good = messagesOf(data, { seed: 9 });
  const sample = [...data.byHost.values()][0][3];
  const valid = encode(sample.kind, sample.record as never);
  const unknownFp = Buffer.from(valid);
  unknownFp.writeUInt32LE(0xdeadbeef, 2);
  const poison = [
    { key: 'p1', value: Buffer.from('{"not":"avro"}'), headers: { id: 'bad_magic' } },
    { key: 'p2', value: unknownFp, headers: { id: 'unknown_fingerprint' } },
    { key: 'p3', value: valid.subarray(0, valid.length - 7), headers: { id: 'truncated' } },
  ];
  const mixed = [...good.slice(0, 40), poison[0], ...good.slice(40, 90), poison[1], poison[2], ...good.slice(90)];
  const group = `g-poison-${process.pid}`;
  const c = startConsumer(['--topic', topic, '--group', group, '--influx-url', influx.url, '--influx-db', db, '--state-topic', `${topic}.state`, '--dlq-topic', dlq]);
  await c.start();
  await produce(kafka, topic, mixed);
  await waitCaughtUp(admin, group, topic);
  expect(c.stats().dlq).toBe(3);

  const reader = kafka.consumer({ groupId: `dlq-reader-${process.pid}` });
  const seen: { id: string; reason: string; sourceTopic: string }[] = [];
  await reader.connect();
  await reader.subscribe({ topics: [dlq], fromBeginning: true });
  await reader.run({
    eachMessage: async ({ message }) => {
      seen.push({
        id: message.headers?.id?.toString() ?? '',
        reason: message.headers?.['nettally-dlq-reason']?.toString() ?? '',
        sourceTopic: message.headers?.['nettally-source-topic']?.toString() ?? '',
      });
    },
  });
  const deadline = Date.now() + 30_000;
  while (seen.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  await reader.disconnect();
  expect(seen.sort((a, b) => a.id.localeCompare(b.id))).toEqual(
    ['bad_magic', 'truncated', 'unknown_fingerprint'].map((id) => ({ id, reason: id, sourceTopic: topic })),
  );
  for (const g of ['host', 'port'] as GroupKey[]) {
    expect(await usageByGroup(['--influx-url', influx.url, '--influx-db', db], FROM, TO, g, '1m')).toEqual(truthByGroup(data.traffic, g, '1m'));
  }
  await c.stop();
});

test('consumer --check reports Kafka and InfluxDB reachable (exit 0), or which one failed (exit 1)', async () => {
  const run = async (argv: string[]): Promise<{ code: number; out: string }> => {
    let out = '';
    const stdout = new Writable({
      write(chunk: Buffer, _e, cb) {
        out += chunk.toString();
        cb();
      },
    });
    const args = parseArgs(consumerCommand.spec, ['--check', ...argv], {});
    if (args === 'help') throw new Error('help');
    const code = await consumerCommand.run(args, { logger: silentLogger, signal: new AbortController().signal, stdout });
    return { code, out };
  };
  const good = await run(['--brokers', broker.address, '--influx-url', influx.url]);
  expect(good).toEqual({ code: 0, out: expect.stringMatching(/kafka ok.*\n.*influxdb ok/) });
  const bad = await run(['--brokers', broker.address, '--influx-url', 'http://127.0.0.1:1']);
  expect(bad.code).toBe(1);
  expect(bad.out).toMatch(/influxdb FAILED: http:\/\/127\.0\.0\.1:1/);
});

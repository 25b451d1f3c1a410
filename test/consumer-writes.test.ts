// Scenario (bundled broker, real influxd 1.6.7): how often the consumer writes each window.
// - Draining a backlog, InfluxDB receives each point about once: a window is written when it becomes final (previews
//   only while caught up), counted by influxd itself (httpd pointsWrittenOK) against the distinct points it stores.
// - Offsets are committed on the strength of the state snapshot, not of written windows: a member killed after a
//   commit whose open windows it never wrote loses nothing and doubles nothing when the next member finishes them.
import { synthesize, type SynthData, type SynthMessage } from '../consumer/synthetic';
import { encode } from '../schemas';
import type { TestInflux } from './helpers/influx';
import { consumerScenario, createTopic, produce, waitCaughtUp } from './helpers/consumer';

const START = Date.UTC(2026, 0, 9, 8, 0, 0);
const FROM = START - 3_600_000;
const TO = START + 3 * 3_600_000;
const MEASUREMENTS = { nettally_traffic_1m: 'tx_bytes', nettally_traffic_1h: 'tx_bytes', nettally_iface_1m: 'rx_bytes', nettally_iface_1h: 'rx_bytes' };

const env = consumerScenario();

function names(name: string): { topic: string; group: string; db: string; args: string[] } {
  const topic = `records-${name}-${process.pid}`;
  const group = `g-${name}-${process.pid}`;
  const db = `nt_${name}_${process.pid}`;
  const args = [
    '--brokers', env.broker.address, '--topic', topic, '--group', group, '--state-topic', `${topic}.state`, '--dlq-topic', `${topic}.dlq`,
    '--points-dlq-topic', `${topic}.points-dlq`, '--influx-url', env.influx.url, '--influx-db', db, '--session-timeout', '6s',
  ];
  return { topic, group, db, args };
}

/** Points influxd accepted over HTTP since it started (its own counter; every database of this influxd). */
async function pointsReceived(influx: TestInflux): Promise<number> {
  const r = await influx.query("SHOW STATS FOR 'httpd'", '_internal');
  const s = r.results[0]?.series?.[0];
  if (!s) throw new Error(`influxd has no httpd stats: ${JSON.stringify(r)}`);
  return Number(s.values[0][s.columns.indexOf('pointsWrittenOK')]);
}

/** Distinct points stored in `db`, per measurement. */
async function pointsStored(db: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [m, field] of Object.entries(MEASUREMENTS)) {
    const r = await env.influx.query(`SELECT count("${field}") FROM "${m}"`, db);
    out[m] = Number(r.results[0]?.series?.[0]?.values[0]?.[1] ?? 0);
  }
  return out;
}

const timeOf = (m: SynthMessage): number => Number((m.record as { time_ns: bigint }).time_ns / 1_000_000n);

/** The records of `data` whose event time is in [fromMs, toMs), per host in order. */
function slice(data: SynthData, fromMs: number, toMs: number): SynthData {
  const inRange = (m: SynthMessage): boolean => timeOf(m) >= fromMs && timeOf(m) < toMs;
  return { byHost: new Map([...data.byHost].map(([h, msgs]) => [h, msgs.filter(inRange)])), traffic: [], iface: [] };
}

/** Every host's records in seq order, hosts merged by event time (as a fleet's producers send them live). */
function inTimeOrder(data: SynthData): { key: string; value: Buffer }[] {
  const all: { t: number; h: number; i: number; key: string; value: Buffer }[] = [];
  [...data.byHost].forEach(([key, msgs], h) => msgs.forEach((m, i) => all.push({ t: timeOf(m), h, i, key, value: encode(m.kind, m.record as never) })));
  all.sort((x, y) => x.t - y.t || x.h - y.h || x.i - y.i);
  return all.map(({ key, value }) => ({ key, value }));
}

const sum = (o: Record<string, number>): number => Object.values(o).reduce((a, b) => a + b, 0);

test('draining a backlog over many flushes: InfluxDB receives at most 1.2 points per distinct point it stores, totals exact', async () => {
  const n = names('amp');
  await createTopic(env.admin, n.topic, 2);
  // 40 minutes of event time: most windows become final during the drain, which spans many flushes
  const data = synthesize({ hosts: 20, connsPerHost: 16, startMs: START, minutes: 40, seed: 1201, sampleEverySec: 6 });
  await produce(env.kafka, n.topic, inTimeOrder(data), 500);
  const before = await pointsReceived(env.influx);
  const c = env.inProcess([...n.args, '--flush-interval', '100ms']);
  await c.start();
  await waitCaughtUp(env.admin, n.group, n.topic, 120_000);
  const flushes = c.stats().flushes;
  await c.stop();
  // the scenario means something only if the drain took many flushes (each of which used to rewrite open windows)
  expect(flushes).toBeGreaterThanOrEqual(6);
  await env.expectExact(n.db, data, FROM, TO);
  const received = (await pointsReceived(env.influx)) - before;
  const stored = await pointsStored(n.db);
  expect(sum(stored)).toBeGreaterThan(0);
  expect({ received, stored, ratio: received / sum(stored) <= 1.2 }).toEqual({ received, stored, ratio: true });
}, 240_000);

test('killed after committing a snapshot whose open windows it never wrote: the next member writes them exactly, once', async () => {
  const n = names('crash');
  await createTopic(env.admin, n.topic, 2);
  const data = synthesize({ hosts: 6, connsPerHost: 10, startMs: START, minutes: 8, seed: 1202 });
  const min = (m: number): number => START + m * 60_000;
  // No previews: the member only writes windows as they become final.
  const first = env.child([...n.args, '--flush-interval', '300ms', '--preview-interval', '1h']);
  await produce(env.kafka, n.topic, inTimeOrder(slice(data, 0, min(5))), 100);
  await waitCaughtUp(env.admin, n.group, n.topic, 120_000, () => first.stderr().slice(-2000));
  // The commit reached the end while windows 3 and 4 (and the hour) are open: they live only in the snapshot.
  const stored = await pointsStored(n.db);
  const open = await env.influx.query(`SELECT count(tx_bytes) FROM nettally_traffic_1m WHERE time >= ${min(3)}ms`, n.db);
  expect(open.results[0]?.series ?? []).toEqual([]);
  expect(stored.nettally_traffic_1h).toBe(0);
  expect(stored.nettally_traffic_1m).toBeGreaterThan(0);
  await first.kill();

  await produce(env.kafka, n.topic, inTimeOrder(slice(data, min(5), Infinity)), 100);
  const before = await pointsReceived(env.influx);
  const second = env.child([...n.args, '--flush-interval', '300ms']);
  await waitCaughtUp(env.admin, n.group, n.topic, 120_000, () => second.stderr().slice(-2000));
  expect(await second.stop()).toBe(0);
  await env.expectExact(n.db, data, FROM, TO);
  // Windows 3 and 4 became final under the second member: each is final now, and nothing the first member wrote
  // (the final windows 0..2) was written again.
  const flags = await env.influx.query(`SELECT "final" FROM nettally_traffic_1m WHERE time >= ${min(3)}ms AND time < ${min(5)}ms`, n.db);
  const values = flags.results[0]?.series?.[0]?.values ?? [];
  expect(new Set(values.map((v) => v[0])).size).toBe(2);
  expect(values.filter((v) => v[1] !== true)).toEqual([]);
  const received = (await pointsReceived(env.influx)) - before;
  const after = await pointsStored(n.db);
  expect(received).toBeLessThanOrEqual(sum(after) - sum(stored));
}, 240_000);

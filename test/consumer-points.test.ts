// Scenario (real broker, real influxd 1.6.7): points InfluxDB refuses never stop a partition — they are found by
// splitting the batch and go to the points dead-letter topic while every good point is stored exactly; and a
// rebalance during an InfluxDB outage never turns a final window back into a non-final one.
import type { KafkaMessage } from 'kafkajs';
import type { RollupConsumer, RollupConsumerConfig } from '../consumer/consumer';
import { synthesize, type SynthData } from '../consumer/synthetic';
import { createCodec } from '../schemas';
import { consumerScenario, createTopic, messagesOf, produce, truthByGroup, usageByGroup, waitCaughtUp } from './helpers/consumer';

const START = Date.UTC(2026, 0, 8, 8, 0, 0);
const FROM = START - 3_600_000;
const TO = START + 3 * 3_600_000;

const env = consumerScenario();

const names = (name: string): { topic: string; group: string; db: string; pointsDlq: string } => ({
  topic: `records-${name}-${process.pid}`,
  group: `g-${name}-${process.pid}`,
  db: `nt_${name}_${process.pid}`,
  pointsDlq: `records-${name}-${process.pid}.points-dlq`,
});

/** A member of test `name`'s group (or, with `stream`, of another topic and group writing into the same database). */
function member(name: string, extra: string[] = [], tweak: Partial<RollupConsumerConfig> = {}, stream = name): RollupConsumer {
  const n = { ...names(stream), db: names(name).db };
  const argv = [
    '--brokers', env.broker.address, '--topic', n.topic, '--group', n.group, '--state-topic', `${n.topic}.state`, '--dlq-topic', `${n.topic}.dlq`,
    '--points-dlq-topic', n.pointsDlq, '--influx-url', env.influx.url, '--influx-db', n.db, '--session-timeout', '6s', ...extra,
  ];
  return env.inProcess(argv, { tweak });
}

/** Every message of a topic (from the start), once `count` of them arrived. */
async function readTopic(topic: string, count: number, timeoutMs = 60_000): Promise<KafkaMessage[]> {
  const got: KafkaMessage[] = [];
  const c = env.kafka.consumer({ groupId: `reader-${topic}-${Date.now()}` });
  await c.connect();
  try {
    await c.subscribe({ topics: [topic], fromBeginning: true });
    await c.run({ eachMessage: async ({ message }) => void got.push(message) });
    const deadline = Date.now() + timeoutMs;
    while (got.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  } finally {
    await c.disconnect();
  }
  return got;
}

async function topicSize(topic: string): Promise<number> {
  return (await env.admin.fetchTopicOffsets(topic)).reduce((s, p) => s + Number(p.high), 0);
}

function withoutHost<T>(m: Map<string, T>, hostId: string): Map<string, T> {
  return new Map([...m].filter(([k]) => k.split('|')[1] !== hostId));
}

test('refused points (field type conflict, a 70 kB host name) go to the points DLQ; good points exact; partition keeps consuming', async () => {
  const n = names('pdlq');
  await createTopic(env.admin, n.topic, 2);
  const data = synthesize({ hosts: 4, connsPerHost: 12, startMs: START, minutes: 6, seed: 707 });
  // A producer (or anyone who can write to the broker) sends a host name InfluxDB cannot take as a tag: the series key
  // exceeds 64 KiB and influxd answers 400 for each of that host's points.
  const [badHost] = [...data.byHost.keys()];
  for (const m of data.byHost.get(badHost) ?? []) (m.record as { hostname: string }).hostname = 'h'.repeat(70_000);
  // A foreign writer stored tx_bytes as a string in the 1-hour traffic measurement: every 1h traffic point is
  // refused with a field type conflict (InfluxDB keeps one type per field and shard); the 1m points are fine.
  const good = [...data.byHost.keys()].find((h) => h !== badHost) as string;
  await fetch(`${env.influx.url}/query?${new URLSearchParams({ q: `CREATE DATABASE ${n.db}` })}`, { method: 'POST' });
  const foreign = await fetch(`${env.influx.url}/write?db=${n.db}&precision=ms`, { method: 'POST', body: `nettally_traffic_1h,host_id=${good},partition=0 tx_bytes="foreign" ${START}` });
  expect(foreign.status).toBe(204);

  const msgs = messagesOf(data, { dupEvery: 30, seed: 17 });
  const half = Math.floor(msgs.length / 2);
  const c = member('pdlq', ['--flush-interval', '300ms']);
  await c.start();
  // (small sends: the bad host's 70 kB records would exceed the broker's request size in batches of 50)
  await produce(env.kafka, n.topic, msgs.slice(0, half), 5);
  // Commits reach the end of both partitions: no partition stalled on the refused points.
  await waitCaughtUp(env.admin, n.group, n.topic, 90_000);
  expect(c.stats().points_dlq).toBeGreaterThan(0);
  // ... and later records are still consumed and counted
  await produce(env.kafka, n.topic, msgs.slice(half), 5);
  await waitCaughtUp(env.admin, n.group, n.topic, 90_000);
  const influxArgs = ['--influx-url', env.influx.url, '--influx-db', n.db];
  expect(withoutHost(await usageByGroup(influxArgs, FROM, TO, 'host', '1m'), badHost)).toEqual(withoutHost(truthByGroup(data.traffic, 'host', '1m'), badHost));
  expect(withoutHost(await usageByGroup(influxArgs, FROM, TO, 'iface', '1m', 'iface'), badHost)).toEqual(withoutHost(truthByGroup(data.iface, 'iface', '1m'), badHost));

  // after the stop: a graceful stop writes every changed cell (the open hour's too), which may dead-letter more
  await c.stop();
  const dlqCount = await topicSize(n.pointsDlq);
  const stats = c.stats();
  expect(stats.points_dlq).toBe(dlqCount);
  const dead = await readTopic(n.pointsDlq, dlqCount);
  expect(dead.length).toBe(dlqCount);
  const measurements = new Set<string>();
  for (const m of dead) {
    const h = Object.fromEntries(Object.entries(m.headers ?? {}).map(([k, v]) => [k, String(v)]));
    const line = m.value?.toString() ?? '';
    measurements.add(h['nettally-measurement']);
    if (m.key?.toString() === badHost) expect(['invalid_line', 'field_type_conflict']).toContain(h['nettally-dlq-reason']);
    else {
      // a good host's point is dead-lettered only for the conflict in the 1h measurement
      expect(h['nettally-measurement']).toBe('nettally_traffic_1h');
      expect(h['nettally-dlq-reason']).toBe('field_type_conflict');
      expect(h['nettally-influx-status']).toBe('400');
    }
    expect(line.startsWith(`${h['nettally-measurement']},`)).toBe(true);
    expect(h['nettally-dlq-error']).toMatch(/HTTP 400/);
  }
  // the bad host's points of every measurement were found among the good ones
  expect([...measurements].sort()).toEqual(['nettally_iface_1h', 'nettally_iface_1m', 'nettally_traffic_1h', 'nettally_traffic_1m']);
});

/** The records of `data` whose event time is in [fromMs, toMs), per host in order. */
function slice(data: SynthData, fromMs: number, toMs: number): SynthData {
  const byHost = new Map([...data.byHost].map(([h, msgs]) => [h, msgs.filter((m) => {
    const t = Number((m.record as { time_ns: bigint }).time_ns / 1_000_000n);
    return t >= fromMs && t < toMs;
  })]));
  return { byHost, traffic: [], iface: [] };
}

type FinalSeen = Map<string, boolean>;

/** Every point's final flag now, keyed measurement|tags|time. */
async function finalFlags(db: string): Promise<FinalSeen> {
  const res = await env.influx.query(`SELECT "final" FROM /^nettally_/ WHERE time >= ${FROM}ms GROUP BY *`, db);
  const out: FinalSeen = new Map();
  for (const s of res.results[0]?.series ?? []) for (const v of s.values) out.set(`${s.name}|${JSON.stringify(s.tags)}|${v[0]}`, v[1] === true);
  return out;
}

test('a rebalance while the old owner retries through an InfluxDB outage: no final window turns non-final, totals exact', async () => {
  const n = names('fence');
  await createTopic(env.admin, n.topic, 2);
  const data = synthesize({ hosts: 6, connsPerHost: 10, startMs: START, minutes: 10, seed: 808 });
  const min = (m: number): number => START + m * 60_000;
  // A gives up slowly (its next attempt comes long after InfluxDB is back), B retries fast: without fencing A's
  // stale final=false write of windows 3–4 lands after B wrote them final=true.
  const a = member('fence', ['--flush-interval', '2s'], { retryInitialMs: 4000, retryMaxMs: 16_000 });
  // (B joins during the outage: it must not wait for CREATE DATABASE, which A did)
  const b = member('fence', ['--flush-interval', '2s', '--no-create-db'], { retryInitialMs: 300, retryMaxMs: 1000 });
  await a.start();
  await produce(env.kafka, n.topic, messagesOf(slice(data, 0, min(3)), { seed: 1 }), 50);
  await waitCaughtUp(env.admin, n.group, n.topic, 90_000);

  await env.influx.stop();
  // windows 3 and 4 are open (non-final) in A when its flush starts failing
  await produce(env.kafka, n.topic, messagesOf(slice(data, min(3), min(5)), { seed: 2 }));
  const until = async (what: string, cond: () => boolean, ms = 60_000): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: a=${JSON.stringify(a.stats())} b=${JSON.stringify(b.stats())}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await until('A to see InfluxDB down', () => a.stats().influx_down_since !== undefined);
  await until('A to be in a long backoff', () => Date.now() - (a.stats().influx_down_since ?? Date.now()) > 6000);

  await b.start();
  await until('the partitions to split', () => a.stats().partitions.length === 1 && b.stats().partitions.length === 1);
  // B takes over a partition and finalizes windows 3..7 there (it cannot write them yet)
  await produce(env.kafka, n.topic, messagesOf(slice(data, min(5), Infinity), { seed: 3 }));
  await until('B to consume and see InfluxDB down', () => b.stats().records > 0 && b.stats().influx_down_since !== undefined);

  await env.influx.start();
  const everFinal = new Set<string>();
  const regressed: string[] = [];
  const watch = async (): Promise<void> => {
    for (const [k, final] of await finalFlags(n.db)) {
      if (final) everFinal.add(k);
      else if (everFinal.has(k) && !regressed.includes(k)) regressed.push(k);
    }
  };
  const deadline = Date.now() + 90_000;
  for (;;) {
    await watch();
    const ends = await env.admin.fetchTopicOffsets(n.topic);
    const committed = (await env.admin.fetchOffsets({ groupId: n.group, topics: [n.topic] }))[0]?.partitions ?? [];
    if (ends.every((e) => committed.find((c) => c.partition === e.partition)?.offset === e.high)) break;
    if (Date.now() > deadline) throw new Error('the group did not catch up after InfluxDB came back');
    await new Promise((r) => setTimeout(r, 250));
  }
  // The old owner's longest backoff (16 s) passes: a stale write it still had would land in this time.
  const settle = Date.now() + 18_000;
  while (Date.now() < settle) {
    await watch();
    await new Promise((r) => setTimeout(r, 250));
  }
  expect(everFinal.size).toBeGreaterThan(0);
  expect(regressed).toEqual([]);
  const influxArgs = ['--influx-url', env.influx.url, '--influx-db', n.db];
  for (const window of ['1m', '1h'] as const) {
    expect(await usageByGroup(influxArgs, FROM, TO, 'host', window)).toEqual(truthByGroup(data.traffic, 'host', window));
  }
  expect(await usageByGroup(influxArgs, FROM, TO, 'iface', '1m', 'iface')).toEqual(truthByGroup(data.iface, 'iface', '1m'));
  // windows 3..6 are final (the watermark passed them) on both partitions
  const flags = await finalFlags(n.db);
  for (const m of [3, 4, 5, 6]) {
    const at = [...flags].filter(([k]) => k.startsWith('nettally_traffic_1m|') && k.endsWith(`|${min(m)}`));
    expect({ m, n: at.length > 0, allFinal: at.every(([, f]) => f) }).toEqual({ m, n: true, allFinal: true });
  }
});

test('a writer replaying from older state (an old snapshot) never turns a window the last writer made final non-final', async () => {
  const n = names('replay');
  await createTopic(env.admin, n.topic, 2);
  const data = synthesize({ hosts: 4, connsPerHost: 10, startMs: START, minutes: 8, seed: 909 });
  const min = (m: number): number => START + m * 60_000;
  const g1 = member('replay', ['--flush-interval', '300ms']);
  await g1.start();
  const all = messagesOf(data, { seed: 5 });
  await produce(env.kafka, n.topic, all, 100);
  await waitCaughtUp(env.admin, n.group, n.topic);
  await g1.stop();
  const influxArgs = ['--influx-url', env.influx.url, '--influx-db', n.db];
  expect(await usageByGroup(influxArgs, FROM, TO, 'host', '1m')).toEqual(truthByGroup(data.traffic, 'host', '1m'));
  const finalBefore = [...(await finalFlags(n.db))].filter(([, f]) => f).map(([k]) => k);
  expect(finalBefore.some((k) => k.endsWith(`|${min(4)}`))).toBe(true);

  // The same partitions' records up to minute 5 only: what a member restoring an old snapshot holds while it
  // replays. Its watermark is behind: windows 3 and 4 are open in its state, but InfluxDB has them final.
  const o = names('replay-old');
  await createTopic(env.admin, o.topic, 2);
  const g2 = member('replay', ['--flush-interval', '300ms'], {}, 'replay-old');
  await g2.start();
  // (a prefix of the same stream, in the same order: a replay sees the records as they were)
  const codec = createCodec();
  const prefix = all.filter((m) => Number((codec.decode(m.value).record as { time_ns: bigint }).time_ns / 1_000_000n) < min(5));
  await produce(env.kafka, o.topic, prefix, 100);
  await waitCaughtUp(env.admin, o.group, o.topic);
  await g2.stop();
  const after = await finalFlags(n.db);
  expect(finalBefore.filter((k) => after.get(k) !== true)).toEqual([]);
  expect(await usageByGroup(influxArgs, FROM, TO, 'host', '1m')).toEqual(truthByGroup(data.traffic, 'host', '1m'));
});

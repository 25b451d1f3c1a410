// Scenario: the consumer survives SIGKILL mid-window, a second member joining (and the first leaving) mid-stream,
// and InfluxDB down for 30 s — each ends with exactly the produced totals: nothing lost, nothing counted twice.
import type { Admin, Kafka } from 'kafkajs';
import { synthesize } from '../consumer/synthetic';
import type { InProcessBroker } from './helpers/broker';
import type { TestInflux } from './helpers/influx';
import { consumerScenario, createTopic, messagesOf, produce, waitCaughtUp } from './helpers/consumer';

const START = Date.UTC(2026, 0, 6, 8, 0, 0);
const FROM = START - 3_600_000;
const TO = START + 3 * 3_600_000;

const scenario = consumerScenario();
let broker: InProcessBroker;
let influx: TestInflux;
let kafka: Kafka;
let admin: Admin;
beforeAll(() => {
  ({ broker, influx, kafka, admin } = scenario);
});

function baseArgs(name: string): string[] {
  return [
    '--brokers', broker.address, '--topic', `records-${name}-${process.pid}`, '--group', `g-${name}-${process.pid}`,
    '--state-topic', `records-${name}-${process.pid}.state`, '--dlq-topic', `records-${name}-${process.pid}.dlq`,
    '--influx-url', influx.url, '--influx-db', `nt_${name}_${process.pid}`, '--flush-interval', '300ms', '--session-timeout', '6s',
  ];
}

const startInProcess = (argv: string[]): ReturnType<typeof scenario.inProcess> => scenario.inProcess(argv);

async function expectExact(name: string, data: ReturnType<typeof synthesize>): Promise<void> {
  await scenario.expectExact(`nt_${name}_${process.pid}`, data, FROM, TO, ['host', 'port', 'process']);
}

async function committedTotal(group: string, topic: string): Promise<bigint> {
  const parts = (await admin.fetchOffsets({ groupId: group, topics: [topic] }))[0]?.partitions ?? [];
  return parts.reduce((s, p) => s + (BigInt(p.offset) > 0n ? BigInt(p.offset) : 0n), 0n);
}

test('consumer killed with SIGKILL mid-window and restarted: exact totals', async () => {
  const name = 'kill';
  const topic = `records-${name}-${process.pid}`;
  const group = `g-${name}-${process.pid}`;
  await createTopic(admin, topic, 3);
  const data = synthesize({ hosts: 4, connsPerHost: 40, startMs: START, minutes: 8, seed: 404 });
  const msgs = messagesOf(data, { dupEvery: 30, seed: 7 });
  const half = Math.floor(msgs.length / 2);

  // credentials reach the consumer from env/files and must never show up in its logs
  const secret = `pw-${process.pid}-never-logged`;
  const env = { INFLUX_USERNAME: 'nettally', INFLUX_PASSWORD: secret };
  let c = scenario.child(baseArgs(name), env);
  await produce(kafka, topic, msgs.slice(0, half));
  await waitCaughtUp(admin, group, topic, 90_000, () => c.stderr().slice(-3000));
  // Second half in small sends; kill while it is being consumed (after some commits, before the end).
  const before = await committedTotal(group, topic);
  const threeQuarters = half + Math.floor(half / 2);
  const sending = produce(kafka, topic, msgs.slice(half, threeQuarters), 20);
  const deadline = Date.now() + 60_000;
  while ((await committedTotal(group, topic)) === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await c.kill();
  await sending;
  await produce(kafka, topic, msgs.slice(threeQuarters));
  const atKill = await committedTotal(group, topic);
  expect(atKill).toBeGreaterThan(before);
  expect(atKill).toBeLessThan(BigInt(msgs.length));

  expect(c.stderr()).not.toContain(secret);
  c = scenario.child(baseArgs(name), env);
  await waitCaughtUp(admin, group, topic, 90_000, () => c.stderr().slice(-3000));
  // the restarted member resumed from stored snapshots (not from scratch)
  expect(c.stderr()).toMatch(/"snapshots":[1-9].*"msg":"partition state loaded"/);
  expect(await c.stop()).toBe(0);
  expect(c.stderr()).not.toContain(secret);
  await expectExact(name, data);
});

test('a second member joins mid-stream (rebalance), then the first leaves: exact totals', async () => {
  const name = 'rebalance';
  const topic = `records-${name}-${process.pid}`;
  const group = `g-${name}-${process.pid}`;
  await createTopic(admin, topic, 4);
  const data = synthesize({ hosts: 6, connsPerHost: 25, startMs: START, minutes: 8, seed: 505 });
  const msgs = messagesOf(data, { dupEvery: 30, seed: 11 });
  const third = Math.floor(msgs.length / 3);

  const a = startInProcess(baseArgs(name));
  await a.start();
  await produce(kafka, topic, msgs.slice(0, third), 50);
  const b = startInProcess(baseArgs(name));
  const joining = b.start();
  await produce(kafka, topic, msgs.slice(third, 2 * third), 25);
  await joining;
  const deadline = Date.now() + 30_000;
  const split = (): boolean => a.stats().partitions.length > 0 && b.stats().partitions.length > 0 && a.stats().partitions.length + b.stats().partitions.length === 4;
  while (!split() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  expect(a.stats().partitions.length + b.stats().partitions.length).toBe(4);
  expect(b.stats().partitions.length).toBeGreaterThan(0);
  const leaving = a.stop();
  await produce(kafka, topic, msgs.slice(2 * third), 25);
  await leaving;
  await waitCaughtUp(admin, group, topic);
  const allDeadline = Date.now() + 30_000;
  while (b.stats().partitions.length < 4 && Date.now() < allDeadline) await new Promise((r) => setTimeout(r, 100));
  expect(b.stats().partitions).toEqual([0, 1, 2, 3]);
  await waitCaughtUp(admin, group, topic);
  await b.stop();
  await expectExact(name, data);
});

test('InfluxDB stopped for 30 s: consumption pauses, nothing is committed, then everything lands exactly', async () => {
  const name = 'outage';
  const topic = `records-${name}-${process.pid}`;
  const group = `g-${name}-${process.pid}`;
  await createTopic(admin, topic, 2);
  const data = synthesize({ hosts: 3, connsPerHost: 30, startMs: START, minutes: 6, seed: 606 });
  const msgs = messagesOf(data, { dupEvery: 30, seed: 13 });
  const half = Math.floor(msgs.length / 2);

  const c = startInProcess([...baseArgs(name)]);
  await c.start();
  await produce(kafka, topic, msgs.slice(0, half));
  await waitCaughtUp(admin, group, topic);
  const committedBefore = await committedTotal(group, topic);

  await influx.stop();
  await produce(kafka, topic, msgs.slice(half));
  const end = (await admin.fetchTopicOffsets(topic)).reduce((s, p) => s + BigInt(p.high), 0n);
  const downUntil = Date.now() + 30_000;
  let sawDown = false;
  while (Date.now() < downUntil) {
    await new Promise((r) => setTimeout(r, 1000));
    if (c.stats().influx_down_since !== undefined) sawDown = true;
    // A commit rests on the state snapshot (it holds the open windows), so it may move while no window needs writing;
    // but a flush with windows to write (final ones, or previews once caught up) waits for InfluxDB: the end of the
    // topic, whose windows changed, is not committed while InfluxDB is down.
    const committed = await committedTotal(group, topic);
    expect(committed >= committedBefore && committed < end).toBe(true);
  }
  expect(sawDown).toBe(true);
  await influx.start();
  await waitCaughtUp(admin, group, topic);
  expect(c.stats().influx_down_since).toBeUndefined();
  await c.stop();
  await expectExact(name, data);
});

// Scenario: a 3-member kafkajs consumer group on a 6-partition topic; one member (a child process) is
// SIGKILLed; the survivors take over its partitions from its committed offsets, and nothing is lost.
import { spawn, type ChildProcess } from 'child_process';
import { resolve } from 'path';
import { Kafka, logLevel, type Consumer } from 'kafkajs';
import { startTestBroker, type InProcessBroker } from './helpers/broker';

const ROOT = resolve(__dirname, '..');
const TOPIC = 'group6';
const GROUP = 'g6';
const PER_PARTITION = 40;

// The member that gets killed: plain kafkajs in its own process, reporting assignments, messages and
// commits as JSON lines on stdout (pipes are synchronous on Linux, so a line is out before the commit).
const MEMBER_SCRIPT = `
const { Kafka, logLevel } = require(${JSON.stringify(`${ROOT}/node_modules/kafkajs`)});
const [broker, topic, group] = process.argv.slice(1);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const kafka = new Kafka({ brokers: [broker], clientId: 'member-c', logLevel: logLevel.NOTHING });
const c = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 300, rebalanceTimeout: 10000, maxWaitTimeInMs: 200 });
c.on(c.events.GROUP_JOIN, (e) => out({ type: 'join', assignment: e.payload.memberAssignment[topic] || [] }));
(async () => {
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await c.run({ autoCommitThreshold: 1, eachMessage: async ({ partition, message }) => out({ type: 'msg', partition, offset: Number(message.offset) }) });
})().catch((err) => { out({ type: 'error', message: String(err) }); process.exit(1); });
`;

interface Seen {
  member: string;
  partition: number;
  offset: number;
}

let b: InProcessBroker;
let child: ChildProcess | null = null;
const consumers: Consumer[] = [];

afterAll(async () => {
  child?.kill('SIGKILL');
  // Bounded: a failed run must still clean up within the hook timeout.
  await Promise.all(consumers.map((c) => Promise.race([c.disconnect().catch(() => undefined), new Promise((r) => setTimeout(r, 15_000).unref())])));
  await b?.stop();
});

async function until(what: string, cond: () => boolean, timeoutMs: number, refresh?: () => Promise<void>): Promise<void> {
  const end = Date.now() + timeoutMs;
  while ((await refresh?.(), !cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('member killed: survivors rebalance, resume from its committed offsets, nothing lost', async () => {
  b = await startTestBroker();
  const kafka = new Kafka({ brokers: [b.address], clientId: 'group-test', logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: TOPIC, numPartitions: 6 }] });
  const producer = kafka.producer();
  await producer.connect();
  const produce = async (round: number): Promise<void> => {
    for (let p = 0; p < 6; p++) {
      await producer.send({ topic: TOPIC, acks: -1, messages: Array.from({ length: PER_PARTITION }, (_, i) => ({ partition: p, value: `r${round}-p${p}-${i}` })) });
    }
  };
  await produce(1);

  const seen: Seen[] = [];
  const assignments = new Map<string, number[]>();

  child = spawn(process.execPath, ['-e', MEMBER_SCRIPT, b.address, TOPIC, GROUP], { stdio: ['ignore', 'pipe', 'inherit'] });
  let buf = '';
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = JSON.parse(buf.slice(0, nl)) as { type: string; partition: number; offset: number; assignment: number[] };
      buf = buf.slice(nl + 1);
      if (line.type === 'msg') seen.push({ member: 'C', partition: line.partition, offset: line.offset });
      if (line.type === 'join') assignments.set('C', line.assignment);
    }
  });

  for (const name of ['A', 'B']) {
    const c = kafka.consumer({ groupId: GROUP, sessionTimeout: 6000, heartbeatInterval: 300, rebalanceTimeout: 10000, maxWaitTimeInMs: 200 });
    consumers.push(c);
    c.on(c.events.GROUP_JOIN, (e) => assignments.set(name, e.payload.memberAssignment[TOPIC] ?? []));
    await c.connect();
    await c.subscribe({ topic: TOPIC, fromBeginning: true });
    await c.run({ autoCommitThreshold: 1, eachMessage: async ({ partition, message }) => void seen.push({ member: name, partition, offset: Number(message.offset) }) });
  }

  // All three in one generation, 2 partitions each, and round 1 fully consumed and committed.
  const spread = (): boolean => ['A', 'B', 'C'].every((m) => assignments.get(m)?.length === 2) && new Set([...assignments.values()].flat()).size === 6;
  await until('a 3-member assignment', spread, 60_000);
  const covered = (n: number): boolean => {
    const offs = new Set(seen.map((s) => `${s.partition}:${s.offset}`));
    for (let p = 0; p < 6; p++) for (let o = 0; o < n; o++) if (!offs.has(`${p}:${o}`)) return false;
    return true;
  };
  await until('round 1 consumed', () => covered(PER_PARTITION), 60_000);
  const partsC = [...(assignments.get('C') as number[])];
  // Round 1 committed everywhere (C's partitions may have been consumed and committed before C joined).
  let committed: string[] = [];
  await until('round 1 commits', () => committed.every((o) => o === String(PER_PARTITION)) && committed.length === 6, 20_000, async () => {
    committed = (await admin.fetchOffsets({ groupId: GROUP, topics: [TOPIC] }))[0].partitions.map((x) => x.offset);
  });

  child.kill('SIGKILL');
  const killedAt = seen.length;
  await produce(2);

  // C's session times out; A and B split all 6 partitions and consume round 2.
  await until('A and B to cover all partitions', () => new Set([...(assignments.get('A') ?? []), ...(assignments.get('B') ?? [])]).size === 6, 60_000);
  await until('round 2 consumed', () => covered(2 * PER_PARTITION), 60_000);

  // Committed offsets honoured: C's partitions were picked up exactly at C's commit, nothing before it redelivered.
  const after = seen.slice(killedAt).filter((s) => s.member !== 'C' && partsC.includes(s.partition));
  for (const p of partsC) {
    const offs = after.filter((s) => s.partition === p).map((s) => s.offset);
    expect(Math.min(...offs)).toBe(PER_PARTITION);
    expect(new Set(offs).size).toBe(PER_PARTITION);
  }
  // Nothing lost: every produced offset of both rounds was consumed by someone.
  expect(covered(2 * PER_PARTITION)).toBe(true);
  await producer.disconnect();
  await admin.disconnect();
}, 180_000);

// Scenario: the broker (a child process) is SIGKILLed while a producer is sending with acks=-1; after a
// restart every acknowledged record and every committed offset is there, and a torn tail is truncated.
import * as fs from 'fs';
import { join } from 'path';
import { Kafka, logLevel } from 'kafkajs';
import { startBrokerProcess, type BrokerProcess } from './helpers/broker';

const TOPIC = 'crash';
let first: BrokerProcess | null = null;
let second: BrokerProcess | null = null;

afterAll(async () => {
  await first?.stop();
  await second?.stop();
});

// 'never' too: a killed process leaves its writes in the page cache; only power loss needs the fsync.
test.each(['always', 'never'])('--fsync %s: SIGKILL mid-produce loses nothing acknowledged; committed offsets survive', async (fsync) => {
  await first?.stop();
  await second?.stop();
  first = await startBrokerProcess({ args: ['--fsync', fsync] });
  const kafka = new Kafka({ brokers: [first.address], clientId: 'crash-test', logLevel: logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: TOPIC, numPartitions: 3 }] });
  const committed = [
    { partition: 0, offset: '5' },
    { partition: 1, offset: '0' },
    { partition: 2, offset: '11' },
  ];
  await admin.setOffsets({ groupId: 'crash-g', topic: TOPIC, partitions: committed });
  await admin.disconnect();
  // A second broker on the same data dir is refused while the first runs.
  await expect(startBrokerProcess({ dataDir: first.dataDir })).rejects.toThrow(/in use by another broker/);

  const producer = kafka.producer({ retry: { retries: 0 } });
  await producer.connect();
  const acked: string[] = [];
  let stop = false;
  const loop = (async () => {
    for (let i = 0; !stop; i++) {
      const messages = Array.from({ length: 1 + (i % 5) }, (_, j) => ({ partition: i % 3, value: `m-${i}-${j}` }));
      try {
        await producer.send({ topic: TOPIC, acks: -1, messages });
        acked.push(...messages.map((m) => m.value));
      } catch {
        return;
      }
    }
  })();
  while (acked.length < 400) await new Promise((r) => setTimeout(r, 10));
  await first.kill();
  stop = true;
  await loop;
  await producer.disconnect().catch(() => undefined);
  expect(acked.length).toBeGreaterThanOrEqual(400);

  // A crash mid-write leaves a partial batch at the tail: simulate one on partition 0.
  const p0 = join(first.dataDir, 'topics', TOPIC, '0');
  const seg = fs.readdirSync(p0).filter((f) => f.endsWith('.log')).sort().pop() as string;
  const before = fs.statSync(join(p0, seg)).size;
  fs.appendFileSync(join(p0, seg), Buffer.from('00000000000000ff00000200', 'hex'));

  second = await first.restart();
  await new Promise((r) => setTimeout(r, 200));
  expect(fs.statSync(join(p0, seg)).size).toBe(before);
  expect(second.stderr()).toContain('truncated torn tail');

  const kafka2 = new Kafka({ brokers: [second.address], clientId: 'crash-test-2', logLevel: logLevel.NOTHING });
  const admin2 = kafka2.admin();
  await admin2.connect();
  const offsets = await admin2.fetchOffsets({ groupId: 'crash-g', topics: [TOPIC] });
  expect(offsets[0].partitions.sort((a, b) => a.partition - b.partition).map((p) => ({ partition: p.partition, offset: p.offset }))).toEqual(committed);
  const high = (await admin2.fetchTopicOffsets(TOPIC)).reduce((s, p) => s + Number(p.high), 0);
  await admin2.disconnect();

  const consumer = kafka2.consumer({ groupId: 'crash-verify', maxWaitTimeInMs: 200 });
  await consumer.connect();
  const got = new Set<string>();
  let count = 0;
  await consumer.subscribe({ topic: TOPIC, fromBeginning: true });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${count} of ${high}`)), 60_000);
    void consumer.run({
      eachMessage: async ({ message }) => {
        got.add(message.value?.toString() ?? '');
        if (++count >= high) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await consumer.disconnect();
  const missing = acked.filter((v) => !got.has(v));
  expect(missing).toEqual([]);
  expect(count).toBe(high);
}, 120_000);

// Scenario: kafkajs against the bundled broker — admin, produce/consume round trips, idempotent producer, gzip.
import { CompressionTypes, Kafka, logLevel, type Consumer } from 'kafkajs';
import { startTestBroker, type InProcessBroker } from './helpers/broker';

let b: InProcessBroker;
let kafka: Kafka;

beforeAll(async () => {
  b = await startTestBroker({ defaultPartitions: 2 });
  kafka = new Kafka({ brokers: [b.address], clientId: 'broker-test', logLevel: logLevel.NOTHING });
});
afterAll(async () => {
  await b?.stop();
});

async function consumeAll(consumer: Consumer, topic: string, expected: number, timeoutMs = 30_000): Promise<{ key: string; value: string; partition: number; offset: string }[]> {
  const got: { key: string; value: string; partition: number; offset: string }[] = [];
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumed ${got.length} of ${expected}`)), timeoutMs);
    void consumer.run({
      eachMessage: async ({ message, partition }) => {
        got.push({ key: message.key?.toString() ?? '', value: message.value?.toString() ?? '', partition, offset: message.offset });
        if (got.length >= expected) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  return got;
}

test('admin creates a topic with N partitions and metadata reports them', async () => {
  const admin = kafka.admin();
  await admin.connect();
  try {
    expect(await admin.createTopics({ topics: [{ topic: 'created', numPartitions: 6 }] })).toBe(true);
    expect(await admin.createTopics({ topics: [{ topic: 'created', numPartitions: 6 }] })).toBe(false);
    const md = await admin.fetchTopicMetadata({ topics: ['created'] });
    expect(md.topics[0].partitions.map((p) => p.partitionId).sort()).toEqual([0, 1, 2, 3, 4, 5]);
  } finally {
    await admin.disconnect();
  }
});

test('produce (acks=-1, gzip) then consume in a group returns exactly what was sent', async () => {
  const producer = kafka.producer();
  await producer.connect();
  const sent: { key: string; value: string }[] = [];
  for (let batch = 0; batch < 20; batch++) {
    const messages = Array.from({ length: 50 }, (_, i) => ({ key: `k${(batch * 50 + i) % 7}`, value: `value-${batch}-${i}-${'x'.repeat(i)}` }));
    sent.push(...messages);
    await producer.send({ topic: 'roundtrip', acks: -1, compression: batch % 2 ? CompressionTypes.GZIP : CompressionTypes.None, messages });
  }
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: 'rt', maxWaitTimeInMs: 200 });
  await consumer.connect();
  try {
    const got = await consumeAll(consumer, 'roundtrip', sent.length);
    expect(got.length).toBe(sent.length);
    expect(got.map((m) => `${m.key}=${m.value}`).sort()).toEqual(sent.map((m) => `${m.key}=${m.value}`).sort());
    // Per partition, offsets are dense from 0 and messages keep their send order.
    for (const p of [0, 1]) {
      const inP = got.filter((m) => m.partition === p);
      expect(inP.map((m) => Number(m.offset))).toEqual(inP.map((_, i) => i));
      const order = inP.map((m) => sent.findIndex((s) => s.key === m.key && s.value === m.value));
      expect(order).toEqual([...order].sort((a, c) => a - c));
    }
  } finally {
    await consumer.disconnect();
  }
});

test('idempotent producer: sequential sends land once each, offsets dense', async () => {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic: 'idem', numPartitions: 1 }] });
    const n = 30;
    for (let i = 0; i < n; i++) await producer.send({ topic: 'idem', acks: -1, messages: [{ key: 'h', value: `m${i}` }, { key: 'h', value: `n${i}` }] });
    const offsets = await admin.fetchTopicOffsets('idem');
    expect(offsets[0].high).toBe(String(2 * n));
    expect(offsets[0].low).toBe('0');
  } finally {
    await producer.disconnect();
    await admin.disconnect();
  }
  const consumer = kafka.consumer({ groupId: 'idem-g', maxWaitTimeInMs: 200 });
  await consumer.connect();
  try {
    const got = await consumeAll(consumer, 'idem', 60);
    expect(got.map((m) => m.value)).toEqual(Array.from({ length: 30 }, (_, i) => [`m${i}`, `n${i}`]).flat());
  } finally {
    await consumer.disconnect();
  }
});

test('close() returns promptly with clients still connected, and they see the broker go away', async () => {
  const extra = await startTestBroker();
  const k = new Kafka({ brokers: [extra.address], clientId: 'close-test', logLevel: logLevel.NOTHING, retry: { retries: 0 } });
  const producer = k.producer();
  await producer.connect();
  await producer.send({ topic: 'c', messages: [{ value: 'x' }] });
  const t = Date.now();
  await extra.stop();
  expect(Date.now() - t).toBeLessThan(3000);
  await expect(producer.send({ topic: 'c', messages: [{ value: 'y' }] })).rejects.toThrow();
  await producer.disconnect().catch(() => undefined);
});

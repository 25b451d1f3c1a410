// Scenario: malformed, oversized and abandoned requests close only their own connection; unknown APIs get an
// error answer; retention by size and by time deletes old segments while the newest data stays readable.
import * as fs from 'fs';
import * as net from 'net';
import { join } from 'path';
import { Kafka, logLevel } from 'kafkajs';
import { startTestBroker, type InProcessBroker } from './helpers/broker';

let b: InProcessBroker;
let kafka: Kafka;

beforeAll(async () => {
  b = await startTestBroker({ maxRequestBytes: 64 * 1024 });
  kafka = new Kafka({ brokers: [b.address], clientId: 'robust-test', logLevel: logLevel.NOTHING });
});
afterAll(async () => {
  await b?.stop();
});

function request(apiKey: number, version: number, correlationId: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const client = Buffer.from('raw');
  const head = Buffer.alloc(4 + 8 + 2 + client.length);
  head.writeInt32BE(8 + 2 + client.length + body.length, 0);
  head.writeInt16BE(apiKey, 4);
  head.writeInt16BE(version, 6);
  head.writeInt32BE(correlationId, 8);
  head.writeInt16BE(client.length, 12);
  client.copy(head, 14);
  return Buffer.concat([head, body]);
}

/** Connects, writes `data`, and collects what comes back until the broker closes or `waitMs` passes. */
function exchange(data: Buffer, waitMs = 1500): Promise<{ closedByBroker: boolean; received: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(b.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ closedByBroker: false, received: Buffer.concat(chunks) });
    }, waitMs);
    s.on('connect', () => s.write(data));
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('end', () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ closedByBroker: true, received: Buffer.concat(chunks) });
    });
  });
}

async function roundTrip(topic: string, n: number): Promise<void> {
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, acks: -1, messages: Array.from({ length: n }, (_, i) => ({ value: `v${i}` })) });
  await producer.disconnect();
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  expect(offsets.reduce((s, o) => s + Number(o.high), 0)).toBeGreaterThanOrEqual(n);
}

test('bad frames close that connection only; the broker keeps serving', async () => {
  // A kafkajs client connected before and used after the bad connections.
  await roundTrip('robust', 10);

  expect((await exchange(Buffer.from([0, 0, 0, 3, 1, 2, 3]))).closedByBroker).toBe(true);
  const tooBig = Buffer.alloc(8);
  tooBig.writeInt32BE(64 * 1024 + 1, 0);
  expect((await exchange(tooBig)).closedByBroker).toBe(true);
  // Metadata v1 whose topic array claims more entries than bytes follow.
  expect((await exchange(request(3, 1, 7, Buffer.from([0, 0, 0, 9, 0, 3, 97])))).closedByBroker).toBe(true);
  // A well-formed Metadata v1 (all topics) followed by junk: rejected, not half-understood.
  expect((await exchange(request(3, 1, 10, Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])))).closedByBroker).toBe(true);
  // Produce v3 with a records field longer than the frame.
  const produce = Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0x10, 0, 0, 0, 0, 1, 0, 1, 116, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x10, 0]);
  expect((await exchange(request(0, 3, 8, produce))).closedByBroker).toBe(true);
  // A client that vanishes mid-request.
  await new Promise<void>((resolve) => {
    const s = net.connect(b.port, '127.0.0.1', () => {
      s.write(request(3, 1, 9, Buffer.alloc(100)).subarray(0, 20));
      s.destroy();
      resolve();
    });
  });

  // Unknown API key: an UNSUPPORTED_VERSION answer, and the connection stays usable.
  const both = Buffer.concat([request(999, 0, 41), request(18, 0, 42)]);
  const r = await exchange(both, 500);
  expect(r.closedByBroker).toBe(false);
  expect(r.received.readInt32BE(4)).toBe(41);
  expect(r.received.readInt16BE(8)).toBe(35);
  const second = r.received.subarray(4 + r.received.readInt32BE(0));
  expect(second.readInt32BE(4)).toBe(42);
  expect(second.readInt16BE(8)).toBe(0);
  // ApiVersions in a version we do not speak (librdkafka starts with v3): v0-format answer with our ranges.
  const v3 = await exchange(request(18, 3, 43), 500);
  expect(v3.received.readInt16BE(8)).toBe(35);
  expect(v3.received.readInt32BE(10)).toBeGreaterThan(10);

  await roundTrip('robust', 10);
});

test('retention by size deletes the oldest segments; consumers start at the new log start', async () => {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [{ topic: 'ret-size', numPartitions: 1, configEntries: [{ name: 'segment.bytes', value: '2048' }, { name: 'retention.bytes', value: '4096' }] }],
  });
  const producer = kafka.producer();
  await producer.connect();
  const n = 60;
  for (let i = 0; i < n; i++) await producer.send({ topic: 'ret-size', acks: -1, messages: [{ value: `${i}:${'x'.repeat(200)}` }] });
  await producer.disconnect();
  const dir = join(b.dataDir, 'topics', 'ret-size', '0');
  const segmentsBefore = fs.readdirSync(dir).filter((f) => f.endsWith('.log')).length;
  expect(b.broker.applyRetention()).toBeGreaterThan(0);
  const segmentsAfter = fs.readdirSync(dir).filter((f) => f.endsWith('.log'));
  expect(segmentsAfter.length).toBeLessThan(segmentsBefore);
  const bytes = segmentsAfter.reduce((s, f) => s + fs.statSync(join(dir, f)).size, 0);
  expect(bytes).toBeGreaterThanOrEqual(4096);
  const [o] = await admin.fetchTopicOffsets('ret-size');
  await admin.disconnect();
  expect(Number(o.low)).toBeGreaterThan(0);
  expect(Number(o.high)).toBe(n);
  expect(Number(o.low)).toBe(Number(segmentsAfter.sort()[0].slice(0, 20)));

  const consumer = kafka.consumer({ groupId: 'ret-size-g', maxWaitTimeInMs: 200 });
  await consumer.connect();
  const got: string[] = [];
  try {
    await consumer.subscribe({ topic: 'ret-size', fromBeginning: true });
    await new Promise<void>((resolve) => {
      void consumer.run({
        eachMessage: async ({ message }) => {
          got.push(message.value?.toString().split(':')[0] ?? '');
          if (got.length === n - Number(o.low)) resolve();
        },
      });
    });
  } finally {
    await consumer.disconnect();
  }
  expect(got).toEqual(Array.from({ length: n - Number(o.low) }, (_, i) => String(Number(o.low) + i)));
});

test('retention by time deletes expired data, the active segment included, and the topic stays writable', async () => {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'ret-time', numPartitions: 1, configEntries: [{ name: 'retention.ms', value: '300' }] }] });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic: 'ret-time', acks: -1, messages: Array.from({ length: 25 }, (_, i) => ({ value: `old${i}` })) });
  await new Promise((r) => setTimeout(r, 600));
  expect(b.broker.applyRetention()).toBeGreaterThan(0);
  let [o] = await admin.fetchTopicOffsets('ret-time');
  expect([o.low, o.high]).toEqual(['25', '25']);
  await producer.send({ topic: 'ret-time', acks: -1, messages: [{ value: 'new' }] });
  [o] = await admin.fetchTopicOffsets('ret-time');
  expect([o.low, o.high]).toEqual(['25', '26']);
  await producer.disconnect();
  await admin.disconnect();
});

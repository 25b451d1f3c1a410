// The record and record-batch encoders of lib/kafkajs-encode.ts against kafkajs 2.2.4's own, on random record sets
// built the way kafkajs's produce request (src/protocol/requests/produce/v3/request.js) builds them: the same bytes
// (or the same error) for plain and gzip'd batches, empty and large records, null/undefined/empty keys, string and
// unicode keys and values, headers (single and repeated), timestamps before and after the first, many records, and
// inputs kafkajs encodes oddly or refuses (left to kafkajs). Then end to end through the bundled broker, read back by
// kcat (librdkafka, checking every batch's CRC32C): what a consumer reads is what was produced.
import { spawn } from 'child_process';
import { createRequire } from 'module';
// lib/kafka.ts first, as every command imports it: it must install the encoders before kafkajs loads its producer.
import { createKafkaClient } from './kafka';
import { encodeStats, FAST_ENCODE_ENV, fastEncodeInstalled, recordEncoders, setFastEncode, type RecordEncoders } from './kafkajs-encode';
import { startTestBroker, type InProcessBroker } from '../test/helpers/broker';
import { mulberry32 } from '../consumer/synthetic';

const req = createRequire(__filename);
const { Types } = req('kafkajs/src/protocol/message/compression') as { Types: { None: number; GZIP: number; Snappy: number } };

type Message = { key?: unknown; value?: unknown; headers?: unknown; timestamp?: unknown };

/** A random message: mostly what nettally sends (key + value Buffers), often something else kafkajs accepts. */
function randomMessage(r: () => number, odd: boolean): Message {
  const int = (n: number): number => Math.floor(r() * n);
  const size = (): number => [0, 1, 5, 63, 64, 127, 128, 8191, 8192, 70_000][int(10)];
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));
  const text = (): string => ['', 'host-a', 'é', 'ünïcödé ✓', '日本語のテキスト', '\u{1F600}\u{1F680}', '\ud800 lone', 'x'.repeat(200)][int(8)];
  const blob = (): unknown => {
    const p = r();
    if (p < 0.6) return r() < 0.97 ? bytes(int(300)) : bytes(size());
    if (p < 0.75) return text();
    if (p < 0.85) return null;
    if (p < 0.9) return undefined;
    return Buffer.alloc(0);
  };
  const m: Message = { key: blob(), value: blob() };
  if (r() < 0.2) {
    const headers: Record<string, unknown> = {};
    for (let k = int(4); k > 0; k--) headers[['a', 'trace-id', 'ключ', '', '1', '__proto__'][int(6)]] = r() < 0.2 ? [bytes(int(5)), text()] : r() < 0.5 ? bytes(int(40)) : text();
    m.headers = headers;
  }
  if (r() < 0.3) m.timestamp = String(1_764_000_000_000 + int(2_000_000) - 1_000_000);
  if (odd) {
    // what kafkajs encodes its own way or refuses: numbers as keys, null header values, Uint8Arrays, odd headers
    const p = r();
    if (p < 0.2) m.key = 42;
    else if (p < 0.4) m.headers = { h: null };
    else if (p < 0.6) m.value = new Uint8Array([1, 2, 3]);
    else if (p < 0.7) m.headers = new Map([['a', 'b']]);
    else if (p < 0.8) m.timestamp = 'not a number';
    else m.headers = { h: 7 };
  }
  return m;
}

/** What produce/v3/request.js's partitionsEncoder does with these messages (given its Date.now()), by `enc`. */
async function encodeBatch(enc: RecordEncoders, messages: Message[], dateNow: number, compression: number, extra: Record<string, unknown>): Promise<unknown> {
  try {
    const stamps = messages.map((m) => m.timestamp).filter((t) => t != null).sort() as unknown[];
    const timestamps = stamps.length === 0 ? [dateNow] : stamps;
    const firstTimestamp = timestamps[0];
    const records = messages.map((message, i) =>
      enc.Record({ ...message, offsetDelta: i, timestampDelta: ((message.timestamp || dateNow) as number) - (firstTimestamp as number) }),
    );
    const batch = await enc.RecordBatch({ compression, records, firstTimestamp, maxTimestamp: timestamps[timestamps.length - 1], lastOffsetDelta: records.length - 1, ...extra });
    return { size: batch.size(), bytes: batch.buffer.toString('hex') };
  } catch (e) {
    return { error: `${(e as Error).name}: ${(e as Error).message}` };
  }
}

test('installed before kafkajs loads its producer', () => {
  expect(fastEncodeInstalled()).toBe(true);
});

test('random record sets: byte for byte what kafkajs 2.2.4 encodes, or the same error', async () => {
  const { stock, fast } = recordEncoders();
  const r = mulberry32(13); // the same record sets on every run
  const before = encodeStats();
  let compared = 0;
  let refused = 0;
  for (let i = 0; i < 300; i++) {
    const n = [0, 1, 2, 7, 50, 128, 600][Math.floor(r() * 7)] + (i % 3);
    const odd = i % 10 === 9;
    const messages = Array.from({ length: n }, (_, k) => randomMessage(r, odd && k === n - 1));
    const compression = r() < 0.25 ? Types.GZIP : Types.None;
    const extra: Record<string, unknown> = r() < 0.2 ? { producerId: 1000 + i, producerEpoch: 3, firstSequence: 77 * i, transactional: true, partitionLeaderEpoch: 5 } : {};
    const dateNow = 1_764_000_000_000 + Math.floor(r() * 1e6);
    const want = await encodeBatch(stock, messages, dateNow, compression, extra);
    expect(await encodeBatch(fast, messages, dateNow, compression, extra)).toStrictEqual(want);
    compared++;
    if ('error' in (want as object)) refused++;
  }
  // a compression kafkajs does not implement: the same refusal
  const snappy = [{ key: Buffer.from('k'), value: Buffer.from('v') }];
  expect(await encodeBatch(fast, snappy, 1, Types.Snappy, {})).toStrictEqual(await encodeBatch(stock, snappy, 1, Types.Snappy, {}));
  expect(compared).toBe(300);
  expect(refused).toBeGreaterThan(0); // kafkajs's errors were met, and matched
  // both ways were taken: records written in place, and records left to kafkajs's encoder (the odd ones)
  const after = encodeStats();
  expect(after.fast - before.fast).toBeGreaterThan(10_000);
  expect(after.kafkajs - before.kafkajs).toBeGreaterThan(10);
}, 120_000);

test('a record of the fast encoder is still a kafkajs Encoder to anyone who reads it as one', () => {
  const { stock, fast } = recordEncoders();
  const args = { key: Buffer.from('k'), value: 'välue', headers: { a: ['x', Buffer.from([0xff])] }, offsetDelta: 300, timestampDelta: -70_000 };
  const want = stock.Record(args) as { buffer: Buffer; size(): number };
  const got = fast.Record(args) as { buffer: Buffer; size(): number };
  expect(got.size()).toBe(want.size());
  expect(got.buffer.equals(want.buffer)).toBe(true);
});

/** kcat as a child (asynchronously: the broker runs in this process), killed if it outlives 60 s. */
function kcat(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn('kcat', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('error', reject);
    p.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

test('switched off (setFastEncode, or NETTALLY_KAFKAJS_FAST_ENCODE=0 at load): kafkajs encodes everything itself', async () => {
  const { stock, fast } = recordEncoders();
  const messages = [{ key: Buffer.from('k'), value: Buffer.from('v') }];
  const want = await encodeBatch(stock, messages, 5, Types.None, {});
  const before = encodeStats();
  expect(setFastEncode(false)).toBe(true);
  try {
    expect(await encodeBatch(fast, messages, 5, Types.None, {})).toStrictEqual(want);
    // kafkajs's own Encoder per record, as without the patch
    expect(Object.getPrototypeOf(fast.Record(messages[0]))).toBe(Object.getPrototypeOf(stock.Record(messages[0])));
    expect(encodeStats()).toStrictEqual(before);
  } finally {
    setFastEncode(true);
  }
  expect(await encodeBatch(fast, messages, 5, Types.None, {})).toStrictEqual(want);
  expect(encodeStats().fast).toBe(before.fast + 1);
  // a fresh module registry (a new process, as far as modules go) with the escape hatch set
  process.env[FAST_ENCODE_ENV] = '0';
  try {
    jest.isolateModules(() => {
      const again = req('./kafkajs-encode') as typeof import('./kafkajs-encode');
      expect(again.fastEncodeInstalled()).toBe(false);
      const Record = req('kafkajs/src/protocol/recordBatch/record/v0') as unknown;
      expect(Record).toBe(again.recordEncoders().stock.Record);
    });
  } finally {
    delete process.env[FAST_ENCODE_ENV];
  }
});

let broker: InProcessBroker | undefined;
afterEach(async () => {
  await broker?.stop();
  broker = undefined;
});

test('through the bundled broker: kcat reads back every key, value, header and timestamp, CRCs checked', async () => {
  broker = await startTestBroker();
  const kafka = createKafkaClient({ brokers: [broker.address] });
  const producer = kafka.producer({ allowAutoTopicCreation: true, maxInFlightRequests: 1 });
  await producer.connect();
  const before = encodeStats().fast;
  const sent: { key: string | null; value: string; headers?: Record<string, string>; timestamp?: string }[] = [];
  for (let i = 0; i < 3000; i++) {
    sent.push({
      key: i % 7 === 0 ? null : `host-${i % 5}`,
      value: `v${i} ✓ ${'x'.repeat(i % 300)}`,
      ...(i % 13 === 0 ? { headers: { h: `hé${i}` } } : {}),
      ...(i % 2 === 0 ? { timestamp: String(1_764_000_000_000 + i * 1000 - (i % 3) * 5_000_000) } : {}),
    });
  }
  const asBuffers = (m: (typeof sent)[number]): Record<string, unknown> => ({ ...m, key: m.key === null ? null : Buffer.from(m.key), value: Buffer.from(m.value) });
  try {
    await producer.sendBatch({ topicMessages: [{ topic: 'enc', messages: sent.slice(0, 1000).map(asBuffers) as never }], acks: -1 });
    await producer.sendBatch({ topicMessages: [{ topic: 'enc', messages: sent.slice(1000, 2000) as never }], acks: -1, compression: Types.GZIP });
    await producer.sendBatch({ topicMessages: [{ topic: 'enc', messages: sent.slice(2000).map(asBuffers) as never }], acks: -1 });
  } finally {
    await producer.disconnect();
  }
  expect(encodeStats().fast - before).toBeGreaterThanOrEqual(3000);
  const kc = await kcat(['-C', '-b', broker.address, '-t', 'enc', '-o', 'beginning', '-e', '-J', '-X', 'check.crcs=true', '-q']);
  expect(kc.stderr).toBe('');
  expect(kc.status).toBe(0);
  const got = kc.stdout.trim().split('\n').map((l) => JSON.parse(l) as { offset: number; key: string | null; payload: string; ts: number; headers?: string[] });
  expect(got.map((g) => g.offset)).toEqual(sent.map((_, i) => i));
  expect(got.map((g) => ({ key: g.key, value: g.payload, ...(g.headers ? { headers: { [g.headers[0]]: g.headers[1] } } : {}) }))).toEqual(
    sent.map(({ key, value, headers }) => ({ key, value, ...(headers ? { headers } : {}) })),
  );
  // a message without its own timestamp gets the send time: between the first stamped one's and now
  for (let i = 0; i < sent.length; i++) {
    const t = sent[i].timestamp;
    if (t !== undefined) expect(got[i].ts).toBe(Number(t));
    else expect(got[i].ts).toBeGreaterThan(1_764_000_000_000);
  }
}, 90_000);

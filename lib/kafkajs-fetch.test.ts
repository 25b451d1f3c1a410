// The fetch decoder of lib/kafkajs-fetch.ts against kafkajs 2.2.4's own, on random record batches built with kafkajs's
// own encoder (plain and gzip'd, with and without keys, values and headers, offsets and timestamps past 2^53,
// log-append time, control and transactional batches) and on corrupted ones: the same message objects, or the same
// error. Then end to end through the bundled broker: what a consumer reads is what was produced.
import { createRequire } from 'module';
// lib/kafka.ts first, as every command imports it: it must install the decoder before kafkajs loads.
import { createKafkaClient } from './kafka';
import { batchDecoders, fastFetchDecodeInstalled, fetchDecodeStats, type BatchDecoder } from './kafkajs-fetch';
import { startTestBroker, type InProcessBroker } from '../test/helpers/broker';

const req = createRequire(__filename);
type Decoder = new (b: Buffer) => unknown;
const Decoder = req('kafkajs/src/protocol/decoder') as Decoder;
const { RecordBatch } = req('kafkajs/src/protocol/recordBatch/v0') as { RecordBatch: (o: Record<string, unknown>) => Promise<{ buffer: Buffer }> };
const Record = req('kafkajs/src/protocol/recordBatch/record/v0') as (o: Record<string, unknown>) => unknown;

/** xorshift32: the same batches on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

/**
 * A batch of kafkajs's own encoding. `small`: payload bytes < 0x80 and varints of at most 3 bytes, so that a corrupted
 * copy cannot make kafkajs's decoder loop over a garbage count of ~2^31 headers (it reads them one by one).
 */
async function randomBatch(r: () => number, small: boolean): Promise<Buffer> {
  const int = (n: number): number => Math.floor(r() * n);
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(small ? 128 : 256)));
  const size = (): number => [0, 1, 5, 63, 64, 200, 8191, 8192, 20_000][int(9)];
  const n = 1 + int(30);
  const records = Array.from({ length: n }, (_, i) => {
    const headers: Record<string, Buffer | Buffer[]> = {};
    if (r() < 0.15) headers[['a', 'b', '__proto__', ''][int(4)]] = bytes(int(5));
    if (r() < 0.05) headers.m = [bytes(2), bytes(3)];
    return Record({
      offsetDelta: r() < 0.05 ? i + 100_000 : i,
      timestampDelta: [0, 1, 63, -64, 5000, -5000, 2 ** 40, -(2 ** 40), 2 ** 50][int(small ? 6 : 9)],
      key: r() < 0.2 ? null : bytes(r() < 0.8 ? int(40) : size()),
      value: r() < 0.05 ? null : bytes(r() < 0.8 ? int(300) : size()),
      headers,
    });
  });
  const big = r() < 0.2;
  const enc = await RecordBatch({
    compression: r() < 0.3 ? 1 : 0,
    firstOffset: big ? 2n ** 53n - 5n + BigInt(int(10)) : BigInt(int(1_000_000)),
    firstTimestamp: r() < 0.1 ? -1 : r() < 0.1 ? 2 ** 53 + int(10) : 1_764_000_000_000 + int(1e9),
    maxTimestamp: 1_764_000_000_000 + int(1e9),
    lastOffsetDelta: n - 1,
    transactional: r() < 0.2,
    producerId: r() < 0.5 ? -1 : int(1000),
    records,
  });
  const buf = Buffer.from(enc.buffer);
  // attributes (int16 at 21): log-append time (0x08), control batch (0x20) — the encoder sets neither
  let attr = buf.readInt16BE(21);
  if (r() < 0.2) attr |= 0x08;
  if (r() < 0.1) attr |= 0x20;
  buf.writeInt16BE(attr, 21);
  return buf;
}

async function outcome(decode: BatchDecoder, buf: Buffer): Promise<unknown> {
  try {
    const d = new Decoder(buf) as { offset: number };
    const out = await decode(d as never);
    return { out, offset: d.offset };
  } catch (e) {
    return { error: `${(e as Error).name}: ${(e as Error).message}` };
  }
}

test('installed before kafkajs loads its fetch decoding', () => {
  expect(fastFetchDecodeInstalled()).toBe(true);
});

test('random batches: the same messages as kafkajs 2.2.4 decodes, also corrupted and truncated ones', async () => {
  const { stock, fast } = batchDecoders();
  const r = rng(12);
  let plain = 0;
  const before = fetchDecodeStats();
  for (let i = 0; i < 400; i++) {
    const small = i % 2 === 1;
    const buf = await randomBatch(r, small);
    const want = await outcome(stock, buf);
    expect(await outcome(fast, buf)).toStrictEqual(want);
    if (!('error' in (want as object))) plain++;
    if (!small) continue;
    // corrupted: a few bytes of the records changed (past the 61-byte batch header; to values < 0x80, which can end a
    // varint early but never lengthen one), or the batch cut short
    const bad = Buffer.from(buf);
    for (let k = 0; k < 1 + Math.floor(r() * 3); k++) {
      const at = 61 + Math.floor(r() * (bad.length - 61));
      bad[at] = Math.floor(r() * 128);
    }
    expect(await outcome(fast, bad)).toStrictEqual(await outcome(stock, bad));
    const cut = buf.subarray(0, 61 + Math.floor(r() * (buf.length - 61)));
    expect(await outcome(fast, cut)).toStrictEqual(await outcome(stock, cut));
  }
  expect(plain).toBe(400);
  // both ways were taken: records read in place, and records left to kafkajs (headers, long varints, offsets or timestamps past 2^53, corrupted ones)
  const after = fetchDecodeStats();
  expect(after.fast - before.fast).toBeGreaterThan(2000);
  expect(after.kafkajs - before.kafkajs).toBeGreaterThan(500);
}, 120_000);

let broker: InProcessBroker | undefined;
afterEach(async () => {
  await broker?.stop();
  broker = undefined;
});

test('through the bundled broker: plain and gzip batches, keys, null values and headers read back as produced', async () => {
  broker = await startTestBroker();
  const kafka = createKafkaClient({ brokers: [broker.address] });
  const producer = kafka.producer({ allowAutoTopicCreation: true, maxInFlightRequests: 1 });
  await producer.connect();
  const sent: { key: string | null; value: string | null; headers?: Record<string, string> }[] = [];
  for (let i = 0; i < 300; i++) sent.push({ key: i % 7 === 0 ? null : `k${i}`, value: i % 11 === 0 ? null : `v${i}`.repeat(1 + (i % 50)), ...(i % 13 === 0 ? { headers: { h: `x${i}` } } : {}) });
  await producer.send({ topic: 'fetch', acks: -1, messages: sent.slice(0, 150) });
  await producer.send({ topic: 'fetch', acks: -1, compression: 1, messages: sent.slice(150) });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: 'fetch-test', maxWaitTimeInMs: 100 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: ['fetch'], fromBeginning: true });
    const got: { offset: string; key: string | null; value: string | null; headers?: Record<string, string> }[] = [];
    let done!: () => void;
    const all = new Promise<void>((res) => (done = res));
    await consumer.run({
      eachMessage: async ({ message: m }) => {
        const headers = Object.fromEntries(Object.entries(m.headers ?? {}).map(([k, v]) => [k, String(v)]));
        got.push({ offset: m.offset, key: m.key?.toString() ?? null, value: m.value?.toString() ?? null, ...(Object.keys(headers).length ? { headers } : {}) });
        if (got.length === sent.length) done();
      },
    });
    await all;
    expect(fetchDecodeStats().fast).toBeGreaterThan(0);
    expect(got.map((g) => g.offset)).toEqual(sent.map((_, i) => String(i)));
    expect(got.map(({ key, value, headers }) => ({ key, value, ...(headers ? { headers } : {}) }))).toEqual(sent);
  } finally {
    await consumer.disconnect();
  }
}, 60_000);

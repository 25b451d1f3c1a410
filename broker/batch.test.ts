// Unit tests: CRC-32C and record batch framing checks.
import { makeBatch } from '../test/helpers/broker-batches';
import { BATCH, checkBatch, crc32c, splitBatches } from './batch';

test('crc32c matches the standard check value and a byte-at-a-time reference', () => {
  expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  expect(crc32c(Buffer.alloc(0))).toBe(0);
  const ref = (b: Buffer): number => {
    let c = ~0;
    for (const x of b) {
      c ^= x;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    }
    return ~c >>> 0;
  };
  const data = Buffer.from(Array.from({ length: 1000 }, (_, i) => (i * 131 + 7) & 0xff));
  for (const [s, e] of [[0, 1000], [3, 997], [5, 12], [0, 7]]) expect(crc32c(data, s, e)).toBe(ref(data.subarray(s, e)));
});

test('splitBatches accepts concatenated valid batches and reports each problem', () => {
  const a = makeBatch({ count: 3 });
  const b = makeBatch({ count: 1, payload: Buffer.alloc(100, 1) });
  const both = Buffer.concat([a, b]);
  const ok = splitBatches(both);
  expect(Array.isArray(ok) && ok.map((x) => [x.position, x.size, x.recordCount])).toEqual([[0, a.length, 3], [a.length, b.length, 1]]);

  expect(splitBatches(both.subarray(0, both.length - 1))).toBe('truncated');
  const corrupt = Buffer.from(both);
  corrupt[BATCH.HEADER_SIZE + 2] ^= 0xff;
  expect(splitBatches(corrupt)).toBe('bad-crc');
  const v1 = Buffer.from(a);
  v1.writeInt8(1, BATCH.MAGIC);
  expect(splitBatches(v1)).toBe('bad-magic');
  const short = Buffer.from(a);
  short.writeInt32BE(10, BATCH.LENGTH);
  expect(splitBatches(short)).toBe('bad-length');
  const badCount = makeBatch({ count: 3 });
  badCount.writeInt32BE(0, BATCH.LAST_OFFSET_DELTA);
  badCount.writeUInt32BE(crc32c(badCount, BATCH.ATTRIBUTES), BATCH.CRC);
  expect(checkBatch(badCount, 0, badCount.length)).toBe('bad-count');
});

test('splitBatches refuses a batch larger than the limit, measured as Kafka does (whole batch incl. log overhead)', () => {
  const small = makeBatch({ count: 1 });
  const big = makeBatch({ count: 2, payload: Buffer.alloc(1000, 7) });
  const both = Buffer.concat([small, big]);
  // Exactly at the limit is accepted; one byte over is refused, whichever batch of the set it is.
  expect(Array.isArray(splitBatches(both, big.length))).toBe(true);
  expect(splitBatches(both, big.length - 1)).toBe('too-large');
  expect(splitBatches(big, big.length - 1)).toBe('too-large');
  // The size check comes before the CRC (Kafka's order): an oversize corrupt batch is too large.
  const corrupt = Buffer.from(big);
  corrupt[BATCH.HEADER_SIZE + 5] ^= 0xff;
  expect(splitBatches(corrupt, big.length - 1)).toBe('too-large');
  expect(splitBatches(corrupt, big.length)).toBe('bad-crc');
});

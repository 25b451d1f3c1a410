// Unit tests: wire-protocol reader/writer round trips and bounds checks.
import { ProtocolError, Reader, Writer, frameResponse, frameResponseChunks, isSupported, validTopicName } from './protocol';

test('writer output reads back field for field', () => {
  const w = new Writer(4)
    .int8(-3)
    .int16(-2)
    .int32(123456789)
    .int64(2 ** 40 + 5)
    .string('héllo')
    .string(null)
    .bytes(Buffer.from([1, 2, 3]))
    .bytes(null)
    .array([7, 8], (x, v) => x.int32(v))
    .array(null, () => undefined);
  const r = new Reader(w.toBuffer());
  expect([r.int8(), r.int16(), r.int32(), r.int64(), r.string(), r.nullableString()]).toEqual([-3, -2, 123456789, 2 ** 40 + 5, 'héllo', null]);
  expect([...r.bytes()]).toEqual([1, 2, 3]);
  expect(r.nullableBytes()).toBeNull();
  expect(r.array((x) => x.int32())).toEqual([7, 8]);
  expect(r.nullableArray((x) => x.int32())).toBeNull();
  expect(r.remaining).toBe(0);
});

test('reader rejects truncated and absurd lengths instead of over-reading or allocating', () => {
  expect(() => new Reader(Buffer.from([0, 5, 65])).string()).toThrow(ProtocolError);
  expect(() => new Reader(Buffer.from([0, 0, 0])).int32()).toThrow(ProtocolError);
  expect(() => new Reader(Buffer.from([0x7f, 0xff, 0xff, 0xff])).array((x) => x.int8())).toThrow(ProtocolError);
  expect(() => new Reader(Buffer.from([0xff, 0xfe])).nullableString()).toThrow(ProtocolError);
  expect(() => new Reader(Buffer.from([0xff, 0xff])).string()).toThrow(ProtocolError);
});

test('framing, version table and topic names', () => {
  const f = frameResponse(42, Buffer.from([9, 9]));
  expect([f.readInt32BE(0), f.readInt32BE(4), f.length]).toEqual([6, 42, 10]);
  expect(isSupported(18, 2)).toBe(true);
  expect(isSupported(18, 3)).toBe(false);
  expect(isSupported(0, 2)).toBe(false);
  expect(isSupported(999, 0)).toBe(false);
  expect(validTopicName('nettally.records')).toBe(true);
  expect(validTopicName('bad/name')).toBe(false);
  expect(validTopicName('..')).toBe(false);
  expect(validTopicName('x'.repeat(250))).toBe(false);
});

test('bytesRef keeps large buffers by reference and the chunks equal the copied form', () => {
  const big = Buffer.alloc(40_000, 7);
  const w = new Writer(16).int32(1).bytesRef(Buffer.from([1, 2])).bytesRef(big).int16(5).bytesRef(null);
  const chunks = w.toChunks();
  expect(chunks.some((c) => c === big)).toBe(true);
  const flat = Buffer.concat(chunks);
  expect(flat.equals(w.toBuffer())).toBe(true);
  const r = new Reader(flat);
  expect(r.int32()).toBe(1);
  expect([...r.bytes()]).toEqual([1, 2]);
  expect(r.bytes().equals(big)).toBe(true);
  expect(r.int16()).toBe(5);
  expect(r.nullableBytes()).toBeNull();
  const f = frameResponseChunks(9, chunks);
  expect(f[0].readInt32BE(0)).toBe(4 + flat.length);
  expect(f[0].readInt32BE(4)).toBe(9);
});

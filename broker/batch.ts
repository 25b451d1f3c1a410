// Kafka record batch (magic 2) framing for the broker: CRC-32C, header fields, validation and splitting of
// a produced record set into batches. Batches are stored exactly as sent; only baseOffset is rewritten.

const CRC32C_TABLE = (() => {
  // Slicing-by-8 tables: the broker checks every produced byte, so the CRC is on the hot path.
  const t = new Int32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c;
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 8; s++) t[s * 256 + i] = (t[(s - 1) * 256 + i] >>> 8) ^ t[t[(s - 1) * 256 + i] & 0xff];
  }
  return t;
})();

/** CRC-32C (Castagnoli) of buf[start, end), as an unsigned 32-bit number. */
export function crc32c(buf: Buffer, start = 0, end = buf.length): number {
  const t = CRC32C_TABLE;
  let crc = ~0;
  let i = start;
  while (end - i >= 8) {
    const a = (buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24)) ^ crc;
    crc =
      t[7 * 256 + (a & 0xff)] ^
      t[6 * 256 + ((a >>> 8) & 0xff)] ^
      t[5 * 256 + ((a >>> 16) & 0xff)] ^
      t[4 * 256 + (a >>> 24)] ^
      t[3 * 256 + buf[i + 4]] ^
      t[2 * 256 + buf[i + 5]] ^
      t[256 + buf[i + 6]] ^
      t[buf[i + 7]];
    i += 8;
  }
  while (i < end) crc = t[(crc ^ buf[i++]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}

/** Byte offsets of the record batch v2 header fields. */
export const BATCH = {
  BASE_OFFSET: 0,
  LENGTH: 8,
  LEADER_EPOCH: 12,
  MAGIC: 16,
  CRC: 17,
  ATTRIBUTES: 21,
  LAST_OFFSET_DELTA: 23,
  FIRST_TIMESTAMP: 27,
  MAX_TIMESTAMP: 35,
  PRODUCER_ID: 43,
  PRODUCER_EPOCH: 51,
  BASE_SEQUENCE: 53,
  RECORD_COUNT: 57,
  HEADER_SIZE: 61,
  /** baseOffset + batchLength: what precedes the length-counted part. */
  LOG_OVERHEAD: 12,
} as const;

export interface BatchInfo {
  /** Byte position of the batch in the buffer it was parsed from. */
  position: number;
  /** Total size including the 12-byte log overhead. */
  size: number;
  baseOffset: number;
  lastOffsetDelta: number;
  recordCount: number;
  maxTimestamp: number;
  producerId: number;
  producerEpoch: number;
  baseSequence: number;
  attributes: number;
}

export type BatchProblem = 'truncated' | 'bad-length' | 'bad-magic' | 'bad-crc' | 'bad-count' | 'too-large';

/** Parses the header of the batch at `pos`; the batch must lie entirely inside buf. */
export function readBatchHeader(buf: Buffer, pos: number): BatchInfo {
  return {
    position: pos,
    size: BATCH.LOG_OVERHEAD + buf.readInt32BE(pos + BATCH.LENGTH),
    baseOffset: Number(buf.readBigInt64BE(pos + BATCH.BASE_OFFSET)),
    lastOffsetDelta: buf.readInt32BE(pos + BATCH.LAST_OFFSET_DELTA),
    recordCount: buf.readInt32BE(pos + BATCH.RECORD_COUNT),
    maxTimestamp: Number(buf.readBigInt64BE(pos + BATCH.MAX_TIMESTAMP)),
    producerId: Number(buf.readBigInt64BE(pos + BATCH.PRODUCER_ID)),
    producerEpoch: buf.readInt16BE(pos + BATCH.PRODUCER_EPOCH),
    baseSequence: buf.readInt32BE(pos + BATCH.BASE_SEQUENCE),
    attributes: buf.readInt16BE(pos + BATCH.ATTRIBUTES),
  };
}

/**
 * Checks the batch at `pos` (length, magic, CRC-32C over attributes..end, record count) and returns its
 * header, or the problem. `checkCrc` false skips the CRC (index rebuilds of already-verified segments).
 */
export function checkBatch(buf: Buffer, pos: number, end: number, checkCrc = true): BatchInfo | BatchProblem {
  if (end - pos < BATCH.HEADER_SIZE) return 'truncated';
  const len = buf.readInt32BE(pos + BATCH.LENGTH);
  if (len < BATCH.HEADER_SIZE - BATCH.LOG_OVERHEAD) return 'bad-length';
  if (pos + BATCH.LOG_OVERHEAD + len > end) return 'truncated';
  if (buf.readInt8(pos + BATCH.MAGIC) !== 2) return 'bad-magic';
  const info = readBatchHeader(buf, pos);
  // Producers number records 0..count-1 in a batch; anything else would make offsets jump arbitrarily.
  if (info.recordCount < 1 || info.lastOffsetDelta !== info.recordCount - 1) return 'bad-count';
  if (checkCrc && crc32c(buf, pos + BATCH.ATTRIBUTES, pos + info.size) !== buf.readUInt32BE(pos + BATCH.CRC)) return 'bad-crc';
  return info;
}

/**
 * Splits a produced record set into checked batches; a trailing partial batch or any bad one is a problem.
 * A batch larger than `maxBatchBytes` (whole batch incl. the 12-byte log overhead, what Kafka compares with
 * max.message.bytes) is 'too-large', found from its length field before any CRC work, as Kafka does.
 */
export function splitBatches(buf: Buffer, maxBatchBytes = Number.MAX_SAFE_INTEGER): BatchInfo[] | BatchProblem {
  const out: BatchInfo[] = [];
  let pos = 0;
  while (pos < buf.length) {
    if (buf.length - pos >= BATCH.LOG_OVERHEAD && BATCH.LOG_OVERHEAD + buf.readInt32BE(pos + BATCH.LENGTH) > maxBatchBytes) return 'too-large';
    const b = checkBatch(buf, pos, buf.length);
    if (typeof b === 'string') return b;
    out.push(b);
    pos += b.size;
  }
  return out;
}

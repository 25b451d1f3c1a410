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

/** Batch attributes bits (int16): compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), timestamp type. */
export const ATTR = { CODEC_MASK: 0x07, CODEC_GZIP: 1, LOG_APPEND_TIME: 0x08 } as const;

/**
 * Reads a zigzag varint/varlong at `pos` of `buf` (below `end`): [value, next position], or null when it runs
 * past `end` or over 10 bytes. Values beyond 2^53 lose precision, which is fine for what they are used for here
 * (lengths are bounded by the buffer; a timestamp that far off is out of any range anyway).
 */
function readZigzag(buf: Buffer, pos: number, end: number): [number, number] | null {
  let raw = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) return null;
    const b = buf[pos++];
    raw += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) return [raw % 2 === 0 ? raw / 2 : -(raw + 1) / 2, pos];
    scale *= 128;
  }
  return null;
}

/**
 * Smallest and largest record timestamp (firstTimestamp + each record's timestampDelta) of the records in
 * records[start, end), which must hold exactly `count` records: Kafka's Record v2 framing
 * (length varint, attributes int8, timestampDelta varlong, ...). 'corrupt' when the records do not parse or do not
 * fill the region exactly. Only the length and timestamp delta of each record are decoded.
 */
export function recordTimestampRange(records: Buffer, start: number, end: number, count: number, firstTimestamp: number): { min: number; max: number } | 'corrupt' {
  let min = Infinity;
  let max = -Infinity;
  let pos = start;
  for (let i = 0; i < count; i++) {
    const len = readZigzag(records, pos, end);
    if (!len || len[0] < 6) return 'corrupt';
    const bodyEnd = len[1] + len[0];
    if (bodyEnd > end) return 'corrupt';
    const delta = readZigzag(records, len[1] + 1, bodyEnd); // after the record's attributes byte
    if (!delta) return 'corrupt';
    const ts = firstTimestamp + delta[0];
    if (ts < min) min = ts;
    if (ts > max) max = ts;
    pos = bodyEnd;
  }
  return pos === end ? { min, max } : 'corrupt';
}

/**
 * Rewrites the batch at `pos` to carry `timestampType` and `maxTimestamp` (what Kafka's setMaxTimestamp does:
 * attributes bit 3 and MaxTimestamp) and recomputes its CRC-32C, which covers both. In place.
 */
export function setMaxTimestamp(buf: Buffer, pos: number, logAppendTime: boolean, maxTimestamp: number): void {
  const attrs = buf.readInt16BE(pos + BATCH.ATTRIBUTES);
  buf.writeInt16BE(logAppendTime ? attrs | ATTR.LOG_APPEND_TIME : attrs & ~ATTR.LOG_APPEND_TIME, pos + BATCH.ATTRIBUTES);
  buf.writeBigInt64BE(BigInt(maxTimestamp), pos + BATCH.MAX_TIMESTAMP);
  const size = BATCH.LOG_OVERHEAD + buf.readInt32BE(pos + BATCH.LENGTH);
  buf.writeUInt32BE(crc32c(buf, pos + BATCH.ATTRIBUTES, pos + size), pos + BATCH.CRC);
}

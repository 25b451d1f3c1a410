// Test helper: hand-built Kafka record batches (magic 2) for broker unit and scenario tests.
import { gzipSync } from 'zlib';
import { BATCH, crc32c } from '../../broker/batch';

interface HeaderOpts {
  producerId?: number;
  epoch?: number;
  seq?: number;
}

/** Frames a records region (count records) as a magic-2 batch with a valid CRC-32C. */
function frame(records: Buffer, count: number, o: HeaderOpts & { first: number; max: number; attributes: number }): Buffer {
  const buf = Buffer.alloc(BATCH.HEADER_SIZE + records.length);
  buf.writeBigInt64BE(0n, BATCH.BASE_OFFSET);
  buf.writeInt32BE(buf.length - BATCH.LOG_OVERHEAD, BATCH.LENGTH);
  buf.writeInt32BE(-1, BATCH.LEADER_EPOCH);
  buf.writeInt8(2, BATCH.MAGIC);
  buf.writeInt16BE(o.attributes, BATCH.ATTRIBUTES);
  buf.writeInt32BE(count - 1, BATCH.LAST_OFFSET_DELTA);
  buf.writeBigInt64BE(BigInt(o.first), BATCH.FIRST_TIMESTAMP);
  buf.writeBigInt64BE(BigInt(o.max), BATCH.MAX_TIMESTAMP);
  buf.writeBigInt64BE(BigInt(o.producerId ?? -1), BATCH.PRODUCER_ID);
  buf.writeInt16BE(o.epoch ?? -1, BATCH.PRODUCER_EPOCH);
  buf.writeInt32BE(o.seq ?? -1, BATCH.BASE_SEQUENCE);
  buf.writeInt32BE(count, BATCH.RECORD_COUNT);
  records.copy(buf, BATCH.HEADER_SIZE);
  buf.writeUInt32BE(crc32c(buf, BATCH.ATTRIBUTES), BATCH.CRC);
  return buf;
}

function zigzagVarint(n: bigint): Buffer {
  let z = n >= 0n ? n << 1n : (-n << 1n) - 1n;
  const out: number[] = [];
  do {
    let b = Number(z & 0x7fn);
    z >>= 7n;
    if (z > 0n) b |= 0x80;
    out.push(b);
  } while (z > 0n);
  return Buffer.from(out);
}

/** One Record v2: length, attributes, timestamp delta, offset delta, null key, value, `headers` empty headers. */
function record(offsetDelta: number, value: Buffer, timestampDelta = 0, headers = 0): Buffer {
  const body = Buffer.concat([
    Buffer.from([0]),
    zigzagVarint(BigInt(timestampDelta)),
    zigzagVarint(BigInt(offsetDelta)),
    zigzagVarint(-1n),
    zigzagVarint(BigInt(value.length)),
    value,
    zigzagVarint(BigInt(headers)),
    Buffer.alloc(2 * headers), // each header: empty key, empty value
  ]);
  return Buffer.concat([zigzagVarint(BigInt(body.length)), body]);
}

/**
 * `count` records taking exactly `size` bytes when size ≥ 7 per record (values cut from payload; one empty header
 * bridges the sizes where a varint grows by a byte), else the smallest such records.
 */
function recordsOf(count: number, payload: Buffer, size: number): Buffer {
  const head = Array.from({ length: count - 1 }, (_, i) => record(i, Buffer.alloc(0)));
  const used = head.reduce((n, r) => n + r.length, 0);
  const value = (v: number): Buffer => (v <= payload.length ? payload.subarray(0, v) : Buffer.alloc(v));
  for (let v = Math.max(0, size - used); v >= 0; v--) {
    for (const headers of [0, 1]) {
      const last = record(count - 1, value(v), 0, headers);
      if (used + last.length === size) return Buffer.concat([...head, last]);
    }
  }
  return Buffer.concat([...head, record(count - 1, Buffer.alloc(0))]);
}

/**
 * A magic-2 batch of `count` well-formed records (the broker reads each record's length and timestamp delta, as
 * Kafka validates them) carrying `payload`'s bytes as values. The batch is HEADER_SIZE + payload.length bytes
 * when payload has at least 7 bytes per record, so a test can make a batch of an exact size.
 */
export function makeBatch(opts: HeaderOpts & { count?: number; payload?: Buffer; ts?: number } = {}): Buffer {
  const count = opts.count ?? 1;
  const payload = opts.payload ?? Buffer.from('payload');
  const ts = opts.ts ?? 1_700_000_000_000;
  return frame(recordsOf(count, payload, payload.length), count, { ...opts, first: ts, max: ts, attributes: 0 });
}

/**
 * A magic-2 batch of real records (as kafkajs/librdkafka encode them): record i has timestamp
 * firstTimestamp + deltas[i] and value values[i]. `maxTimestamp` defaults to the largest record timestamp (what an
 * honest producer writes; a forger may write anything). `compress` gzips the records (attributes codec 1);
 * `attributes` sets other bits as given (e.g. a codec over plain records, for checks by header only).
 */
export function makeRecordBatch(
  opts: HeaderOpts & { firstTimestamp: number; deltas?: number[]; values?: string[]; maxTimestamp?: number; attributes?: number; compress?: boolean },
): Buffer {
  const deltas = opts.deltas ?? [0];
  let records = Buffer.concat(deltas.map((d, i) => record(i, Buffer.from(opts.values?.[i] ?? `record-${i}`), d)));
  if (opts.compress) records = gzipSync(records);
  return frame(records, deltas.length, {
    ...opts,
    first: opts.firstTimestamp,
    max: opts.maxTimestamp ?? opts.firstTimestamp + Math.max(...deltas),
    attributes: (opts.attributes ?? 0) | (opts.compress ? 1 : 0),
  });
}

// Test helper: hand-built Kafka record batches (magic 2) for broker unit and scenario tests.
import { BATCH, crc32c } from '../../broker/batch';

/** A magic-2 batch with `count` opaque records (the broker never parses records, only the header). */
export function makeBatch(opts: { count?: number; payload?: Buffer; producerId?: number; epoch?: number; seq?: number; ts?: number } = {}): Buffer {
  const count = opts.count ?? 1;
  const payload = opts.payload ?? Buffer.from('payload');
  const buf = Buffer.alloc(BATCH.HEADER_SIZE + payload.length);
  buf.writeBigInt64BE(0n, BATCH.BASE_OFFSET);
  buf.writeInt32BE(buf.length - BATCH.LOG_OVERHEAD, BATCH.LENGTH);
  buf.writeInt32BE(-1, BATCH.LEADER_EPOCH);
  buf.writeInt8(2, BATCH.MAGIC);
  buf.writeInt16BE(0, BATCH.ATTRIBUTES);
  buf.writeInt32BE(count - 1, BATCH.LAST_OFFSET_DELTA);
  buf.writeBigInt64BE(BigInt(opts.ts ?? 1_700_000_000_000), BATCH.FIRST_TIMESTAMP);
  buf.writeBigInt64BE(BigInt(opts.ts ?? 1_700_000_000_000), BATCH.MAX_TIMESTAMP);
  buf.writeBigInt64BE(BigInt(opts.producerId ?? -1), BATCH.PRODUCER_ID);
  buf.writeInt16BE(opts.epoch ?? -1, BATCH.PRODUCER_EPOCH);
  buf.writeInt32BE(opts.seq ?? -1, BATCH.BASE_SEQUENCE);
  buf.writeInt32BE(count, BATCH.RECORD_COUNT);
  payload.copy(buf, BATCH.HEADER_SIZE);
  buf.writeUInt32BE(crc32c(buf, BATCH.ATTRIBUTES), BATCH.CRC);
  return buf;
}

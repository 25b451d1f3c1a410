// Produce, Fetch and ListOffsets: the data path of the bundled broker (limits, timestamps, idempotence, long polls).
// Each handler is a function of the Broker (broker/server.ts), which dispatches requests to it.
import { gunzipSync } from 'zlib';
import { ATTR, BATCH, recordTimestampRange, setMaxTimestamp, splitBatches, type BatchInfo } from '../batch';
import { PartitionLog } from '../log';
import { ErrorCode, Reader, Writer } from '../protocol';
import type { Broker } from '../server';
import { MAX_INFLATED_BYTES, type Topic, type Waiter, endOfRequest } from './common';

export async function produce(broker: Broker, v: number, r: Reader, peer: string): Promise<Buffer | null> {
  r.nullableString(); // transactional_id: transactions are not supported (InitProducerId refuses them)
  const acks = r.int16();
  r.int32(); // timeout_ms: one replica, nothing to wait for but the fsync
  const topics = r.array((x) => ({
    name: x.string(),
    partitions: x.array((y) => ({ index: y.int32(), records: y.nullableBytes() })),
  }));
  endOfRequest(r);
  const results = new Map<string, { index: number; error: number; baseOffset: number; logStart: number }[]>();
  const toSync = new Set<PartitionLog>();
  const appended = new Set<PartitionLog>();
  for (const t of topics) {
    const out: { index: number; error: number; baseOffset: number; logStart: number }[] = [];
    results.set(t.name, out);
    for (const p of t.partitions) {
      const res = { index: p.index, error: ErrorCode.NONE as number, baseOffset: -1, logStart: -1 };
      out.push(res);
      if (acks !== 0 && acks !== 1 && acks !== -1) {
        res.error = ErrorCode.INVALID_REQUIRED_ACKS;
        continue;
      }
      const log = broker.partition(t.name, p.index);
      if (!log) {
        res.error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
        continue;
      }
      res.logStart = log.startOffset;
      if (!p.records || p.records.length === 0) {
        res.error = ErrorCode.CORRUPT_MESSAGE;
        continue;
      }
      const topic = broker.topics.get(t.name) as Topic;
      const maxMessageBytes = topic.config.maxMessageBytes ?? broker.cfg.maxMessageBytes;
      const batches = splitBatches(p.records, maxMessageBytes);
      if (batches === 'too-large') {
        // As Kafka: the partition's whole record set is refused, nothing of it stored; the client must split.
        res.error = ErrorCode.MESSAGE_TOO_LARGE;
        broker.counters.tooLargeBatches++;
        broker.log.warn({ peer, topic: t.name, partition: p.index, bytes: p.records.length, maxMessageBytes }, 'refused produce: record batch larger than max.message.bytes');
        continue;
      }
      if (typeof batches === 'string') {
        res.error = batches === 'bad-magic' ? ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT : ErrorCode.CORRUPT_MESSAGE;
        broker.log.warn({ peer, topic: t.name, partition: p.index, problem: batches }, 'rejected produced records');
        continue;
      }
      if (p.records.length > (topic.config.segmentBytes ?? broker.cfg.segmentBytes)) {
        // Kafka refuses a record set that cannot fit in one segment with RECORD_LIST_TOO_LARGE.
        res.error = ErrorCode.RECORD_LIST_TOO_LARGE;
        continue;
      }
      const logAppendTime = (topic.config.timestampType ?? broker.cfg.messageTimestampType) === 'LogAppendTime';
      const now = Date.now();
      const ts = checkTimestamps(broker, p.records, batches, topic, logAppendTime, now);
      if (ts.error !== ErrorCode.NONE) {
        res.error = ts.error;
        if (ts.error === ErrorCode.INVALID_TIMESTAMP) broker.counters.invalidTimestamps++;
        broker.log.warn({ peer, topic: t.name, partition: p.index, reason: ts.reason }, 'refused produce: ' + ts.reason);
        continue;
      }
      const seq = checkSequences(log, batches);
      if (seq.error !== ErrorCode.NONE || seq.duplicateOffset >= 0) {
        res.error = seq.error;
        res.baseOffset = seq.duplicateOffset;
        continue;
      }
      // As Kafka's LogValidator: LogAppendTime stamps every batch with the broker clock; CreateTime batches whose
      // header misstates their records' newest timestamp (or claims LogAppendTime) are corrected.
      for (const b of batches) {
        const fix = logAppendTime ? now : ts.fixes.get(b);
        if (fix === undefined) continue;
        setMaxTimestamp(p.records, b.position, logAppendTime, fix);
        b.maxTimestamp = fix;
        b.attributes = p.records.readInt16BE(b.position + BATCH.ATTRIBUTES);
      }
      try {
        res.baseOffset = log.append(p.records, batches);
        appended.add(log);
        if (broker.cfg.fsync === 'always' && acks !== 0) toSync.add(log);
      } catch (err) {
        broker.log.error({ err, topic: t.name, partition: p.index }, 'append failed');
        res.error = ErrorCode.KAFKA_STORAGE_ERROR;
      }
    }
  }
  if (appended.size > 0) broker.wakeFetchers(appended);
  if (toSync.size > 0) {
    try {
      await Promise.all([...toSync].map((l) => l.sync()));
    } catch (err) {
      broker.log.error({ err }, 'fsync failed; answering produce with KAFKA_STORAGE_ERROR');
      for (const out of results.values()) for (const res of out) if (res.error === ErrorCode.NONE) res.error = ErrorCode.KAFKA_STORAGE_ERROR;
    }
  }
  if (acks === 0) return null;
  const w = new Writer(128);
  w.array([...results], (w2, [name, parts]) => {
    w2.string(name);
    w2.array(parts, (w3, res) => {
      w3.int32(res.index).int16(res.error).int64(res.baseOffset).int64(-1);
      if (v >= 5) w3.int64(res.logStart);
    });
  });
  w.int32(0);
  return w.toBuffer();
}

/**
 * Kafka's timestamp validation of a produced record set (LogValidator): with CreateTime every record's timestamp
 * (firstTimestamp + timestampDelta; -1 = none) must lie within [now − before.max.ms, now + after.max.ms], else the
 * whole set is INVALID_TIMESTAMP. Records are read for uncompressed and gzip batches (gzip inflated with zlib, at
 * most MAX_INFLATED_BYTES); other codecs (snappy, lz4, zstd), which the broker does not decompress, are judged by
 * their header's first and max timestamps. Records that do not parse are CORRUPT_MESSAGE. `fixes`: CreateTime
 * batches whose MaxTimestamp or type bit must be rewritten to the records' newest timestamp.
 */
function checkTimestamps(broker: Broker, 
  set: Buffer,
  batches: BatchInfo[],
  topic: Topic,
  logAppendTime: boolean,
  now: number,
): { error: number; reason: string; fixes: Map<BatchInfo, number> } {
  const fixes = new Map<BatchInfo, number>();
  const ok = { error: ErrorCode.NONE as number, reason: '', fixes };
  const after = topic.config.timestampAfterMaxMs ?? broker.cfg.messageTimestampAfterMaxMs;
  const before = topic.config.timestampBeforeMaxMs ?? broker.cfg.messageTimestampBeforeMaxMs;
  const outOfRange = (ts: number): boolean => ts !== -1 && ((after >= 0 && ts - now > after) || (before >= 0 && now - ts > before));
  const invalid = (ts: number): { error: number; reason: string; fixes: Map<BatchInfo, number> } => ({
    error: ErrorCode.INVALID_TIMESTAMP,
    reason: `record timestamp ${ts} is outside [now - message.timestamp.before.max.ms, now + message.timestamp.after.max.ms] = [${before < 0 ? '-inf' : now - before}, ${after < 0 ? 'inf' : now + after}]`,
    fixes,
  });
  for (const b of batches) {
    const codec = b.attributes & ATTR.CODEC_MASK;
    // A LogAppendTime topic replaces every timestamp: only uncompressed records are still checked for framing.
    if (logAppendTime && codec !== 0) continue;
    const first = Number(set.readBigInt64BE(b.position + BATCH.FIRST_TIMESTAMP));
    let region: Buffer | null = null;
    if (codec === 0) region = set.subarray(b.position + BATCH.HEADER_SIZE, b.position + b.size);
    else if (codec === ATTR.CODEC_GZIP) {
      // Inflated although FirstTimestamp/MaxTimestamp sit outside the compressed records: the producer writes that
      // header, so it can hide a record's timestamp (as test/broker-timestamps.test.ts does), and Kafka's LogValidator
      // reads every record of a compressed batch too; the records also give the MaxTimestamp to store and their framing.
      try {
        region = gunzipSync(set.subarray(b.position + BATCH.HEADER_SIZE, b.position + b.size), { maxOutputLength: MAX_INFLATED_BYTES });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ERR_BUFFER_TOO_LARGE') return { error: ErrorCode.CORRUPT_MESSAGE, reason: `gzip records do not inflate: ${(err as Error).message}`, fixes };
        broker.log.warn({ topic: topic.name, bytes: b.size }, `gzip batch inflates beyond ${MAX_INFLATED_BYTES} bytes; timestamps judged by its header`);
      }
    }
    if (region === null) {
      // Not decompressed: the header's timestamps are all there is (readers of such a batch use them too).
      for (const ts of [first, b.maxTimestamp]) if (outOfRange(ts)) return invalid(ts);
      continue;
    }
    const range = recordTimestampRange(region, 0, region.length, b.recordCount, first);
    if (range === 'corrupt') return { error: ErrorCode.CORRUPT_MESSAGE, reason: 'records do not match the batch header (Record v2 framing)', fixes };
    if (logAppendTime) continue;
    for (const ts of [range.min, range.max]) if (outOfRange(ts)) return invalid(ts);
    if (b.maxTimestamp !== range.max || (b.attributes & ATTR.LOG_APPEND_TIME) !== 0) fixes.set(b, range.max);
  }
  return ok;
}

function checkSequences(log: PartitionLog, batches: BatchInfo[]): { error: number; duplicateOffset: number } {
  let duplicates = 0;
  let duplicateOffset = -1;
  for (const b of batches) {
    const c = log.checkSequence(b);
    if (c.kind === 'fenced') return { error: ErrorCode.INVALID_PRODUCER_EPOCH, duplicateOffset: -1 };
    if (c.kind === 'out-of-order') return { error: ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, duplicateOffset: -1 };
    if (c.kind === 'duplicate') {
      if (duplicates === 0) duplicateOffset = c.baseOffset;
      duplicates++;
    }
  }
  // A retried request is answered with the offset the original got, and not appended again.
  if (duplicates === batches.length) return { error: ErrorCode.NONE, duplicateOffset };
  if (duplicates > 0) return { error: ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, duplicateOffset: -1 };
  return { error: ErrorCode.NONE, duplicateOffset: -1 };
}

export async function fetch(broker: Broker, v: number, r: Reader): Promise<Buffer[]> {
  r.int32(); // replica_id
  const maxWaitMs = Math.max(0, r.int32());
  const minBytes = r.int32();
  const maxBytes = r.int32();
  r.int8(); // isolation_level: no transactions, so read_committed == read_uncommitted
  if (v >= 7) {
    r.int32(); // session_id: no incremental fetch sessions; always answer with session 0 (full)
    r.int32();
  }
  const topics = r.array((x) => ({
    name: x.string(),
    partitions: x.array((y) => {
      const index = y.int32();
      if (v >= 9) y.int32();
      const offset = y.int64();
      if (v >= 5) y.int64();
      return { index, offset, maxBytes: y.int32() };
    }),
  }));
  if (v >= 7) r.array((x) => ({ name: x.string(), partitions: x.array((y) => y.int32()) }));
  if (v >= 11) r.string();
  endOfRequest(r);

  const deadline = Date.now() + maxWaitMs;
  const logs = new Set<PartitionLog>();
  for (const t of topics) for (const p of t.partitions) {
    const l = broker.partition(t.name, p.index);
    if (l) logs.add(l);
  }
  type PartResult = { index: number; error: number; hw: number; start: number; records: Buffer | null };
  let results: { name: string; parts: PartResult[] }[] = [];
  // As Kafka (KIP-74): the response is capped by the request's max bytes and the broker's fetch.max.bytes,
  // each partition by its own max bytes; only the first batch of the first partition with data may exceed
  // them (so one large batch cannot stall a consumer); after that a batch that does not fit is left out.
  const cap = Math.max(0, Math.min(maxBytes, broker.cfg.fetchMaxBytes));
  const wantBytes = Math.min(minBytes, cap);
  for (;;) {
    let budget = cap;
    let total = 0;
    let anyError = false;
    results = topics.map((t) => ({
      name: t.name,
      parts: t.partitions.map((p) => {
        const log = broker.partition(t.name, p.index);
        if (!log) {
          anyError = true;
          return { index: p.index, error: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, hw: -1, start: -1, records: null };
        }
        const limit = Math.max(0, Math.min(p.maxBytes, budget));
        const data = log.read(p.offset, limit, total === 0);
        if (data === null) {
          anyError = true;
          return { index: p.index, error: ErrorCode.OFFSET_OUT_OF_RANGE, hw: log.nextOffset, start: log.startOffset, records: null };
        }
        total += data.length;
        budget = Math.max(0, budget - data.length);
        return { index: p.index, error: ErrorCode.NONE, hw: log.nextOffset, start: log.startOffset, records: data };
      }),
    }));
    const left = deadline - Date.now();
    if (total >= wantBytes || anyError || left <= 0 || broker.closed || logs.size === 0) break;
    await new Promise<void>((resolve) => {
      const waiter: Waiter = {
        keys: logs,
        wake: () => {
          clearTimeout(timer);
          broker.waiters.delete(waiter);
          resolve();
        },
      };
      const timer = setTimeout(waiter.wake, left);
      broker.waiters.add(waiter);
    });
  }
  const w = new Writer(1024);
  w.int32(0);
  if (v >= 7) w.int16(ErrorCode.NONE).int32(0);
  w.array(results, (w2, t) => {
    w2.string(t.name);
    w2.array(t.parts, (w3, p) => {
      w3.int32(p.index).int16(p.error).int64(p.hw).int64(p.hw);
      if (v >= 5) w3.int64(p.start);
      w3.array([], () => undefined);
      if (v >= 11) w3.int32(-1);
      w3.bytesRef(p.records);
    });
  });
  return w.toChunks();
}

export function listOffsets(broker: Broker, v: number, r: Reader): Buffer {
  r.int32(); // replica_id
  if (v >= 2) r.int8();
  const topics = r.array((x) => ({
    name: x.string(),
    partitions: x.array((y) => {
      const index = y.int32();
      if (v >= 4) y.int32();
      return { index, timestamp: y.int64() };
    }),
  }));
  endOfRequest(r);
  const w = new Writer(256);
  if (v >= 2) w.int32(0);
  w.array(topics, (w2, t) => {
    w2.string(t.name);
    w2.array(t.partitions, (w3, p) => {
      const log = broker.partition(t.name, p.index);
      let offset = -1;
      let error: number = ErrorCode.NONE;
      if (!log) error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
      else if (p.timestamp === -1) offset = log.nextOffset;
      else if (p.timestamp === -2) offset = log.startOffset;
      else offset = log.offsetForTimestamp(p.timestamp);
      w3.int32(p.index).int16(error).int64(-1).int64(offset);
      if (v >= 4) w3.int32(0);
    });
  });
  return w.toBuffer();
}

// Sizes of the Kafka record batch kafkajs builds from one sendBatch, so the producer can cut batches that a broker
// with a given max.message.bytes accepts. Kafka checks each record batch (magic v2) as a whole, header included:
// batch.sizeInBytes() = 12 bytes of log overhead + batchLength must be <= message.max.bytes (default 1048588).
import { Partitioners, type ICustomPartitioner } from 'kafkajs';

/** Apache Kafka's default message.max.bytes (broker) / max.message.bytes (topic): 1 MiB + the 12-byte log overhead. */
export const KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1048588;

/**
 * Bytes of a v2 record batch around its records: baseOffset 8, batchLength 4, partitionLeaderEpoch 4, magic 1,
 * crc 4, attributes 2, lastOffsetDelta 4, firstTimestamp 8, maxTimestamp 8, producerId 8, producerEpoch 2,
 * baseSequence 4, record count 4 (kafkajs src/protocol/recordBatch/v0).
 */
export const RECORD_BATCH_OVERHEAD = 61;

/** Bytes of a zigzag varint (Kafka's varint/varlong encoding of a signed value). */
export function varintSize(value: number): number {
  let v = value >= 0 ? value * 2 : -value * 2 - 1;
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n += 1;
  }
  return n;
}

/**
 * Bytes of one record in a v2 batch as kafkajs encodes it (src/protocol/recordBatch/record/v0): length varint,
 * attributes 1, timestampDelta varlong (0: nettally sets no per-message timestamp, kafkajs uses one Date.now() for the
 * whole batch), offsetDelta varint, key and value as varint-length bytes, header count varint (no headers).
 */
export function kafkaRecordSize(keyBytes: number, valueBytes: number, offsetDelta: number): number {
  const body = 1 + varintSize(0) + varintSize(offsetDelta) + varintSize(keyBytes) + keyBytes + varintSize(valueBytes) + valueBytes + varintSize(0);
  return varintSize(body) + body;
}

/**
 * The most bytes of records (uncompressed) a batch may carry so that its record batch stays within `maxMessageBytes`.
 * With gzip Kafka checks the compressed batch; incompressible data grows a little under deflate (zlib's deflateBound:
 * n + n/4096 + n/16384 + 25 with a gzip wrapper), so twice that margin is kept.
 */
export function recordsBudget(maxMessageBytes: number, compression: 'gzip' | 'none'): number {
  const room = maxMessageBytes - RECORD_BATCH_OVERHEAD;
  return compression === 'gzip' ? Math.floor(((room - 64) * 2048) / 2049) : room;
}

/** The largest single record (key + value) a batch can carry under `maxMessageBytes` (offset delta 0). */
export function fitsAlone(keyBytes: number, valueBytes: number, maxMessageBytes: number, compression: 'gzip' | 'none'): boolean {
  return kafkaRecordSize(keyBytes, valueBytes, 0) <= recordsBudget(maxMessageBytes, compression);
}

/** Adds records in order while the record batch they make stays within a byte limit. */
export class BatchSizer {
  private n = 0;
  private bytes = 0;
  private readonly budget: number;

  constructor(maxMessageBytes: number, compression: 'gzip' | 'none') {
    this.budget = recordsBudget(maxMessageBytes, compression);
  }

  /** Counts the record in and returns true if the batch still fits; on false the record is not counted. */
  add(keyBytes: number, valueBytes: number): boolean {
    const size = kafkaRecordSize(keyBytes, valueBytes, this.n);
    if (this.bytes + size > this.budget) return false;
    this.bytes += size;
    this.n += 1;
    return true;
  }

  /** Size of the (uncompressed) record batch so far, header included: what Kafka compares with its limit. */
  get batchBytes(): number {
    return RECORD_BATCH_OVERHEAD + this.bytes;
  }
}

/**
 * kafkajs' default partitioner (murmur2 of the key, as the Java client), asked once per key and topic metadata
 * instead of once per message: every message of a producer's batch has the same key (the host id), and kafkajs
 * hashes and filters the partition list for each one (~8% of the producer's CPU, bench/RESULTS.md).
 */
export const samePartitionPerKey: ICustomPartitioner = () => {
  const inner = Partitioners.DefaultPartitioner();
  let last: { key: Buffer; topic: string; meta: unknown; partition: number } | undefined;
  return (args) => {
    const key = args.message.key;
    if (!Buffer.isBuffer(key) || args.message.partition !== undefined) return inner(args);
    if (last && last.topic === args.topic && last.meta === args.partitionMetadata && (last.key === key || last.key.equals(key))) return last.partition;
    const partition = inner(args);
    last = { key, topic: args.topic, meta: args.partitionMetadata, partition };
    return partition;
  };
};

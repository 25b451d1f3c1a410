// The producer cuts Kafka batches by the size of the record batch kafkajs builds. These tests hold that size
// arithmetic against kafkajs' own encoder, and prove that no record of today's schemas can be too large on its own.
import { randomBytes } from 'crypto';
import { readFileSync } from 'fs';
import { join } from 'path';
import { createCodec, RECORD_KINDS, type RecordKind } from '../schemas/index';
import { BatchSizer, fitsAlone, KAFKA_DEFAULT_MAX_MESSAGE_BYTES, kafkaRecordSize, RECORD_BATCH_OVERHEAD, recordsBudget, varintSize } from './kafka-batch';
import { WORKLOAD_MAX_BYTES } from './workload-rules';

// kafkajs' internal encoders: exactly what producer.sendBatch puts on the wire for one partition (produce v3+).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { RecordBatch } = require('kafkajs/src/protocol/recordBatch/v0') as { RecordBatch: (o: object) => Promise<{ size(): number; buffer: Buffer }> };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const Record = require('kafkajs/src/protocol/recordBatch/record/v0') as (o: object) => unknown;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Types } = require('kafkajs/src/protocol/message/compression') as { Types: { None: number; GZIP: number } };

/** The record batch kafkajs encodes for these messages, as produce/v3/request.js builds it. */
async function kafkajsBatchBytes(messages: Array<{ key: Buffer; value: Buffer }>, gzip = false): Promise<number> {
  const records = messages.map((m, i) => Record({ ...m, offsetDelta: i, timestampDelta: 0 }));
  const batch = await RecordBatch({ compression: gzip ? Types.GZIP : Types.None, records, lastOffsetDelta: records.length - 1 });
  return batch.size();
}

describe('Kafka record batch sizes', () => {
  it('varints match Kafka zigzag encoding', () => {
    expect([0, 1, -1, 63, 64, -64, -65, 8191, 8192, 2 ** 20, 2 ** 31].map(varintSize)).toEqual([1, 1, 1, 1, 2, 1, 2, 2, 3, 4, 5]);
  });

  it('computes exactly the size kafkajs encodes, for small and large records and batches', async () => {
    const key = Buffer.from('feedfacefeedfacefeedfacefeedface');
    for (const [n, size] of [[1, 0], [1, 300], [7, 63], [130, 64], [3000, 330], [2, 70_000], [20_000, 5]] as const) {
      const messages = Array.from({ length: n }, (_, i) => ({ key, value: randomBytes(size + (i % 3)) }));
      const sizer = new BatchSizer(1 << 30, 'none');
      for (const m of messages) expect(sizer.add(m.key.length, m.value.length)).toBe(true);
      expect(sizer.batchBytes).toBe(await kafkajsBatchBytes(messages));
    }
  });

  it('never builds a batch over the limit: uncompressed, or gzipped random values', async () => {
    const key = Buffer.from('feedfacefeedfacefeedfacefeedface');
    for (const gzip of [false, true]) {
      for (const limit of [KAFKA_DEFAULT_MAX_MESSAGE_BYTES, 100_000, 4096]) {
        const sizer = new BatchSizer(limit, gzip ? 'gzip' : 'none');
        const messages: Array<{ key: Buffer; value: Buffer }> = [];
        for (;;) {
          const m = { key, value: randomBytes(200 + (messages.length % 97)) }; // random: incompressible
          if (!sizer.add(m.key.length, m.value.length)) break;
          messages.push(m);
        }
        const actual = await kafkajsBatchBytes(messages, gzip);
        expect(actual).toBeLessThanOrEqual(limit);
        // ... and uses the room: within one record of the limit (gzip saves the repeated keys, so it is smaller).
        if (!gzip) expect(limit - actual).toBeLessThan(600);
      }
    }
  });

  it('today\'s schemas cannot make a record too large for a default Kafka on its own (worst case of every field)', () => {
    // Upper bounds of each string field in UTF-8 bytes, from where its value comes from. Raw kernel bytes are
    // counted 4x (a byte becomes at most "\xNN" if escaped, or U+FFFD/latin-1 when decoded). A new string field
    // must get a bound here (the test fails on an unknown one), so the proof stays complete.
    const RAW = 4;
    const STRING_MAX: Record<string, number> = {
      host_id: 32, // machine-id, validated as 32 hex digits (host.ts)
      hostname: 64 * RAW, // kernel __NEW_UTS_LEN
      boot_id: 36, // kernel UUID text
      comm: 15 * RAW, // TASK_COMM_LEN 16 incl. NUL
      saddr: 45, daddr: 45, addr: 45, // INET6_ADDRSTRLEN - 1
      flush_reason: 16, event: 16, // fixed words ('threshold', 'established')
      cgroup_path: 4095 * RAW, // /proc/<pid>/cgroup is formatted into a PATH_MAX buffer
      container_id: 64, // 64 hex digits
      workload: WORKLOAD_MAX_BYTES, // producer/workload-rules.ts workloadName() cuts every name to it
    };
    const codec = createCodec();
    const key = 32;
    let largest = 0;
    for (const kind of RECORD_KINDS) {
      const schema = JSON.parse(readFileSync(join(__dirname, '../schemas', `${kind}.avsc`), 'utf8')) as { fields: Array<{ name: string; type: unknown }> };
      const rec: Record<string, unknown> = {};
      for (const f of schema.fields) {
        const types = (Array.isArray(f.type) ? f.type : [f.type]).map((t) => (typeof t === 'object' && t !== null ? (t as { type: string; logicalType?: string }) : { type: t as string }));
        const t = types.find((x) => x.type !== 'null');
        if (!t) throw new Error(`${kind}.${f.name}: only null`);
        if (t.type === 'string') {
          if (!(f.name in STRING_MAX)) throw new Error(`${kind}.${f.name} is a string with no known bound: add one to STRING_MAX`);
          rec[f.name] = 'x'.repeat(STRING_MAX[f.name]);
        } else if (t.type === 'long') rec[f.name] = t.logicalType === 'timestamp-nanos' ? -(2n ** 63n) : Number.MIN_SAFE_INTEGER; // longest varints
        else if (t.type === 'int') rec[f.name] = -(2 ** 31);
        else if (t.type === 'boolean') rec[f.name] = true;
        else if (t.type === 'double') rec[f.name] = 1.5;
        else throw new Error(`${kind}.${f.name} has type ${t.type}, which has no bound here: add one`);
      }
      const value = codec.encode(kind as RecordKind, rec as never);
      const batchAlone = RECORD_BATCH_OVERHEAD + kafkaRecordSize(key, value.length, 0);
      largest = Math.max(largest, batchAlone);
      expect(fitsAlone(key, value.length, KAFKA_DEFAULT_MAX_MESSAGE_BYTES, 'none')).toBe(true);
      expect(fitsAlone(key, value.length, KAFKA_DEFAULT_MAX_MESSAGE_BYTES, 'gzip')).toBe(true);
    }
    // The worst record alone makes a batch of ~17 KB, more than 32x below Kafka's default. (A broker limit set below
    // it would dead-letter such records: see the producer's dead-letter test.)
    expect(largest).toBeLessThan(recordsBudget(KAFKA_DEFAULT_MAX_MESSAGE_BYTES, 'gzip') / 32);
    expect(largest).toBeGreaterThan(16_000); // the bounds above were really applied
  });
});

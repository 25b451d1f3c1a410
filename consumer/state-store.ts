// Per-partition aggregation snapshots in a Kafka topic (default nettally.consumer-state), readable by every group
// member: gzip'd JSON, chunked under the message size limit, keyed group/topic/partition; the consumer's offset
// commit metadata points at the snapshot it mirrors, so a load reads only from there to the end.
import { randomBytes } from 'crypto';
import { gunzipSync, gzipSync } from 'zlib';
import type { Admin, Kafka, Producer } from 'kafkajs';
import { NettallyError } from '../lib/errors';
import type { Logger } from '../lib/log';

export const DEFAULT_STATE_TOPIC = 'nettally.consumer-state';
const META_PREFIX = 'nettally-state:';

export interface Snapshot {
  /** Next data-topic offset to consume (everything before it is in `state`). */
  offset: string;
  state: Record<string, unknown>;
}

export interface StateStoreOptions {
  kafka: Kafka;
  admin: Admin;
  producer: Producer;
  logger: Logger;
  group: string;
  topic: string;
  stateTopic: string;
  /** Largest message the store writes (gzip'd chunk). */
  chunkBytes?: number;
  /** Give up a load after this long (the caller retries). */
  loadTimeoutMs?: number;
}

/** Commit metadata naming the snapshot that the committed offset mirrors. */
export function commitMetadata(statePartition: number, stateOffset: string): string {
  return `${META_PREFIX}${statePartition}:${stateOffset}`;
}

export function parseCommitMetadata(meta: string | null | undefined): { partition: number; offset: string } | undefined {
  const m = meta ? /^nettally-state:(\d+):(\d+)$/.exec(meta) : null;
  return m ? { partition: Number(m[1]), offset: m[2] } : undefined;
}

interface Chunked {
  id: string;
  n: number;
  parts: Map<number, Buffer>;
  firstOffset: bigint;
}

export class StateStore {
  private statePartitions = 1;
  private readonly chunkBytes: number;
  constructor(private readonly o: StateStoreOptions) {
    this.chunkBytes = o.chunkBytes ?? 512 * 1024;
  }

  key(partition: number): string {
    return `${this.o.group}/${this.o.topic}/${partition}`;
  }

  statePartition(partition: number): number {
    return partition % this.statePartitions;
  }

  /** Creates the state topic when missing (one state partition per data partition) and learns its layout. */
  async init(dataPartitions: number): Promise<void> {
    const { admin, stateTopic } = this.o;
    const existing = await admin.listTopics();
    if (!existing.includes(stateTopic)) {
      const numPartitions = Math.max(1, dataPartitions);
      try {
        await admin.createTopics({ topics: [{ topic: stateTopic, numPartitions, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] }], waitForLeaders: true });
      } catch (e) {
        // Brokers without log compaction (the bundled one) refuse the config: the commit-metadata pointer
        // still bounds every read, the topic just grows until retention deletes old segments.
        this.o.logger.info({ err: (e as Error).message }, 'state topic created without cleanup.policy=compact');
        await admin.createTopics({ topics: [{ topic: stateTopic, numPartitions }], waitForLeaders: true }).catch((e2: unknown) => {
          // a concurrent member may have created it; anything else shows up in fetchTopicMetadata below
          this.o.logger.debug({ err: e2 }, 'create state topic');
        });
      }
    }
    const md = await admin.fetchTopicMetadata({ topics: [stateTopic] });
    this.statePartitions = Math.max(1, md.topics[0]?.partitions.length ?? 1);
  }

  /** Writes a snapshot; resolves to the commit metadata that points at it once the broker acknowledged it. */
  async save(partition: number, snap: Snapshot): Promise<string> {
    const gz = gzipSync(JSON.stringify(snap));
    const id = randomBytes(8).toString('hex');
    const n = Math.max(1, Math.ceil(gz.length / this.chunkBytes));
    const sp = this.statePartition(partition);
    const messages = [];
    for (let i = 0; i < n; i++) {
      messages.push({
        // One key per chunk index: a compacted topic then still holds every chunk of the newest snapshot.
        key: `${this.key(partition)}#${i}`,
        value: gz.subarray(i * this.chunkBytes, (i + 1) * this.chunkBytes),
        partition: sp,
        headers: { 'nettally-snapshot': id, 'nettally-chunk': `${i}/${n}`, 'nettally-offset': snap.offset },
      });
    }
    const res = await this.o.producer.send({ topic: this.o.stateTopic, acks: -1, messages });
    const base = res.find((r) => r.partition === sp)?.baseOffset ?? res[0]?.baseOffset;
    if (base === undefined) throw new NettallyError('KAFKA_UNAVAILABLE', 'state topic write returned no offset', { retriable: true });
    return commitMetadata(sp, base);
  }

  /**
   * Latest complete snapshot per data partition. `hints` are the state offsets from the group's commit
   * metadata: reading starts there (bounded); without a hint the state partition is read from its start.
   */
  async load(partitions: readonly number[], hints: ReadonlyMap<number, string | undefined>): Promise<Map<number, Snapshot>> {
    const { admin, stateTopic } = this.o;
    const out = new Map<number, Snapshot>();
    if (partitions.length === 0) return out;
    const ranges = new Map<number, { start: bigint; end: bigint }>();
    const offsets = await admin.fetchTopicOffsets(stateTopic);
    for (const p of partitions) {
      const sp = this.statePartition(p);
      const o = offsets.find((x) => x.partition === sp);
      if (!o) continue;
      const low = BigInt(o.low);
      const end = BigInt(o.high);
      const hint = hints.get(p);
      let start = hint !== undefined ? BigInt(hint) : low;
      if (start < low) start = low;
      const r = ranges.get(sp);
      ranges.set(sp, { start: r ? (r.start < start ? r.start : start) : start, end });
    }
    for (const [sp, r] of ranges) if (r.start >= r.end) ranges.delete(sp);
    if (ranges.size === 0) return out;

    const wanted = new Map(partitions.map((p) => [this.key(p), p]));
    const pending = new Map<string, Chunked>();
    const best = new Map<number, { at: bigint; snap: Snapshot }>();
    const seen = new Map<number, bigint>();
    // kafkajs has no manual assignment: a throwaway group that never commits reads the range.
    const reader = this.o.kafka.consumer({
      groupId: `${this.o.group}.state-reader.${process.pid}.${randomBytes(4).toString('hex')}`,
      maxWaitTimeInMs: 100,
      sessionTimeout: 10_000,
      heartbeatInterval: 1000,
      retry: { retries: 3 },
    });
    const timeoutMs = this.o.loadTimeoutMs ?? 60_000;
    try {
      await reader.connect();
      await reader.subscribe({ topics: [stateTopic], fromBeginning: true });
      let done!: () => void;
      const finished = new Promise<void>((resolve) => (done = resolve));
      const check = (): void => {
        for (const [sp, r] of ranges) if ((seen.get(sp) ?? -1n) < r.end - 1n) return;
        done();
      };
      await reader.run({
        autoCommit: false,
        eachBatch: async ({ batch, resolveOffset }) => {
          const sp = batch.partition;
          const r = ranges.get(sp);
          for (const m of batch.messages) {
            resolveOffset(m.offset);
            const off = BigInt(m.offset);
            if (off > (seen.get(sp) ?? -1n)) seen.set(sp, off);
            if (!r || off < r.start || off >= r.end) continue;
            const key = m.key?.toString().replace(/#\d+$/, '');
            const p = key === undefined ? undefined : wanted.get(key);
            if (p === undefined || !m.value) continue;
            const id = m.headers?.['nettally-snapshot']?.toString();
            const chunk = /^(\d+)\/(\d+)$/.exec(m.headers?.['nettally-chunk']?.toString() ?? '');
            if (!id || !chunk) continue;
            const pk = `${p}/${id}`;
            let c = pending.get(pk);
            if (!c) {
              c = { id, n: Number(chunk[2]), parts: new Map(), firstOffset: off };
              pending.set(pk, c);
            }
            c.parts.set(Number(chunk[1]), m.value);
            if (c.parts.size === c.n) {
              pending.delete(pk);
              const buf = Buffer.concat([...Array(c.n).keys()].map((i) => c!.parts.get(i) as Buffer));
              try {
                const snap = JSON.parse(gunzipSync(buf).toString('utf8')) as Snapshot;
                const prev = best.get(p);
                if (!prev || c.firstOffset > prev.at) best.set(p, { at: c.firstOffset, snap });
              } catch (e) {
                this.o.logger.warn({ err: e, partition: p, state_offset: String(c.firstOffset) }, 'skipping unreadable state snapshot');
              }
            }
          }
          check();
        },
      });
      for (const [sp, r] of ranges) reader.seek({ topic: stateTopic, partition: sp, offset: String(r.start) });
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new NettallyError('KAFKA_UNAVAILABLE', `reading consumer state from ${stateTopic} took longer than ${timeoutMs} ms`, { retriable: true })), timeoutMs);
      });
      try {
        await Promise.race([finished, timeout]);
      } finally {
        clearTimeout(timer);
      }
    } finally {
      await reader.disconnect().catch(() => undefined);
    }
    for (const [p, b] of best) out.set(p, b.snap);
    return out;
  }
}

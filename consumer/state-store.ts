// Per-partition aggregation snapshots in a Kafka topic (default nettally.consumer-state), readable by every group
// member: gzip'd JSON, chunked under the message size limit, keyed group/topic/partition; the consumer's offset
// commit metadata points at the snapshot it mirrors, so a load reads only from there to the end.
import { randomBytes } from 'crypto';
import { createGzip, gunzip } from 'zlib';
import { promisify } from 'util';
import type { Admin, Kafka, Producer, ProducerRecord, RecordMetadata } from 'kafkajs';
import { NettallyError } from '../lib/errors';
import type { Logger } from '../lib/log';

const gunzipAsync = promisify(gunzip);

export const DEFAULT_STATE_TOPIC = 'nettally.consumer-state';
const META_PREFIX = 'nettally-state:';

/**
 * Records of the data topic that retention deleted before this consumer group read them: offsets [from, to) of
 * one partition. Window points whose time range overlaps [from_ms, to_ms] are written with the field `gap=true`
 * (see consumer/README.md, the InfluxDB contract). Kept in the snapshot until those windows are final.
 */
export interface GapMark {
  from_offset: string;
  to_offset: string;
  /** Start of the oldest window open when the gap was found; null: no state, every window from the start. */
  from_ms: number | null;
  /** Newest event time once the first record after the gap was read, plus --allowed-lateness; null until then. */
  to_ms: number | null;
  /** Wall-clock time the gap was found (ms). */
  found_ms: number;
}

export interface Snapshot {
  /** Next data-topic offset to consume (everything before it is in `state`). */
  offset: string;
  state: Record<string, unknown>;
  /** Retention gaps whose windows are not final yet (absent in snapshots written before gaps were tracked). */
  gaps?: GapMark[];
}

/** Largest chunk the store writes: one chunk per produce request, well under Kafka's default 1 MiB per batch. */
export const DEFAULT_CHUNK_BYTES = 512 * 1024;
/** Smallest chunk size the store falls back to when a state topic refuses larger ones. */
const MIN_CHUNK_BYTES = 16 * 1024;
/** Longest stretch the snapshot encoder runs before it lets other partitions' work (and heartbeats) run. */
const SLICE_MS = 8;
/** Arrays at least this long are serialized element by element, with yields in between. */
const BIG_ARRAY = 64;

/** kafkajs reports a refused batch as MESSAGE_TOO_LARGE, possibly wrapped in a retries-exceeded error. */
function isMessageTooLarge(e: unknown): boolean {
  for (let x = e as { type?: unknown; originalError?: unknown; cause?: unknown } | undefined, depth = 0; x && depth < 4; depth++) {
    if (x.type === 'MESSAGE_TOO_LARGE') return true;
    x = (x.originalError ?? x.cause) as typeof x;
  }
  return false;
}

/** Tracks time on the event loop and yields (setImmediate) once a slice is used up. */
class Slicer {
  private t = performance.now();
  constructor(private readonly sliceMs: number, private readonly onYield: () => Promise<void>) {}
  async tick(): Promise<void> {
    if (performance.now() - this.t < this.sliceMs) return;
    await this.onYield();
    this.t = performance.now();
  }
}

/** A non-array iterable object (a generator): serialized as a JSON array. */
function isLazy(v: unknown): v is Iterable<unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && typeof (v as Iterable<unknown>)[Symbol.iterator] === 'function';
}

/** Whether a short array holds a lazy iterable within `depth` levels of nesting. */
function hasLazy(v: readonly unknown[], depth: number): boolean {
  return v.some((x) => isLazy(x) || (depth > 1 && Array.isArray(x) && x.length < BIG_ARRAY && hasLazy(x, depth - 1)));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;
}

/**
 * Appends the JSON text of `v` to `out` (same text as JSON.stringify for plain data): plain objects and long arrays
 * are walked here so the slicer can yield between elements; everything smaller is one JSON.stringify call.
 */
async function writeJson(v: unknown, out: string[], s: Slicer): Promise<void> {
  // Long arrays and lazy iterables (PartitionAggregator.snapshotLazy) become JSON arrays, element by element;
  // arrays holding lazy parts further down (the snapshot's window sets) are walked too.
  if (isLazy(v) || (Array.isArray(v) && (v.length >= BIG_ARRAY || hasLazy(v, 3)))) {
    out.push('[');
    let i = 0;
    for (const el of v as Iterable<unknown>) {
      if (i > 0) out.push(',');
      if (isLazy(el) || isPlainObject(el) || (Array.isArray(el) && (el.length >= BIG_ARRAY || hasLazy(el, 2)))) await writeJson(el, out, s);
      else out.push(JSON.stringify(el) ?? 'null');
      if ((++i & 127) === 0) await s.tick();
    }
    out.push(']');
  } else if (isPlainObject(v)) {
    out.push('{');
    let first = true;
    for (const [k, val] of Object.entries(v)) {
      if (val === undefined || typeof val === 'function') continue;
      out.push(`${first ? '' : ','}${JSON.stringify(k)}:`);
      first = false;
      await writeJson(val, out, s);
    }
    out.push('}');
  } else out.push(JSON.stringify(v) ?? 'null');
}

/**
 * gzip'd JSON of a snapshot without blocking the event loop for long: serialized in slices of a few ms, each slice
 * handed to zlib's async (thread-pool) stream. A full gzipSync(JSON.stringify()) of 100k connections blocks ~1 s.
 */
export async function encodeSnapshot(snap: Snapshot, sliceMs = SLICE_MS): Promise<Buffer> {
  const gz = createGzip();
  const outBufs: Buffer[] = [];
  gz.on('data', (b: Buffer) => outBufs.push(b));
  const ended = new Promise<void>((resolve, reject) => {
    gz.once('end', resolve);
    gz.once('error', reject);
  });
  const pieces: string[] = [];
  const drain = async (): Promise<void> => {
    if (pieces.length === 0) return;
    const text = pieces.join('');
    pieces.length = 0; // writeJson keeps appending to this same array
    // Backpressure: wait until zlib took the slice (also lets the loop run while it compresses).
    if (!gz.write(text)) await new Promise<void>((r) => gz.once('drain', r));
    else await new Promise<void>((r) => setImmediate(r));
  };
  const slicer = new Slicer(sliceMs, async () => {
    // each yield also hands the text so far to zlib, so memory holds one slice of text at a time
    await drain();
  });
  await writeJson(snap, pieces, slicer);
  await drain();
  gz.end();
  await ended;
  return Buffer.concat(outBufs);
}

/** Decodes what encodeSnapshot wrote (gunzip off the event loop; the JSON parse itself is synchronous). */
export async function decodeSnapshot(gz: Buffer): Promise<Snapshot> {
  return JSON.parse((await gunzipAsync(gz)).toString('utf8')) as Snapshot;
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
  /** Compaction-key slot ('' for snapshots written before slots existed). */
  slot: 'a' | 'b' | '';
}

/** `<group>/<topic>/<partition>#<slot><chunk>` → key and slot (slot '' in the format before slots). */
function parseChunkKey(key: string): { key: string; slot: 'a' | 'b' | '' } | undefined {
  const m = /^(.*)#([ab]?)\d+$/.exec(key);
  return m ? { key: m[1], slot: m[2] as 'a' | 'b' | '' } : undefined;
}

export class StateStore {
  private statePartitions = 1;
  private chunkBytes: number;
  /** Compaction-key slot of each partition's newest complete snapshot (see save()). */
  private readonly slots = new Map<number, 'a' | 'b' | ''>();
  constructor(private readonly o: StateStoreOptions) {
    this.chunkBytes = o.chunkBytes ?? DEFAULT_CHUNK_BYTES;
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

  /**
   * Writes a snapshot; resolves to the commit metadata that points at it once the broker acknowledged every chunk.
   *
   * Each chunk is its own produce request (so its own record batch, far below Kafka's default message.max.bytes of
   * 1 MiB), sent one after another. A snapshot counts only when all its chunks are stored: load() assembles a
   * snapshot only from all n chunks of one id, and the commit metadata moves to a new snapshot only after this
   * resolves, so a crash between chunks leaves the previous snapshot as the one loaded.
   *
   * Compaction keys alternate between two slots per partition (`<key>#a<i>`, `<key>#b<i>`): a new snapshot never
   * reuses the keys of the newest complete one, so a compacted topic cannot replace chunks of the snapshot we
   * would fall back to with chunks of a half-written one. The slot flips only after a save completed (a retried
   * save rewrites the same slot).
   */
  async save(partition: number, snap: Snapshot): Promise<string> {
    const gz = await encodeSnapshot(snap);
    const id = randomBytes(8).toString('hex');
    const n = Math.max(1, Math.ceil(gz.length / this.chunkBytes));
    const sp = this.statePartition(partition);
    const slot = this.slots.get(partition) === 'a' ? 'b' : 'a';
    let first: string | undefined;
    for (let i = 0; i < n; i++) {
      const res = await this.sendChunk({
        topic: this.o.stateTopic,
        acks: -1,
        messages: [{
          key: `${this.key(partition)}#${slot}${i}`,
          value: gz.subarray(i * this.chunkBytes, (i + 1) * this.chunkBytes),
          partition: sp,
          headers: { 'nettally-snapshot': id, 'nettally-chunk': `${i}/${n}`, 'nettally-offset': snap.offset },
        }],
      });
      if (i === 0) first = res.find((r) => r.partition === sp)?.baseOffset ?? res[0]?.baseOffset;
    }
    if (first === undefined) throw new NettallyError('KAFKA_UNAVAILABLE', 'state topic write returned no offset', { retriable: true });
    this.slots.set(partition, slot);
    return commitMetadata(sp, first);
  }

  /**
   * One chunk's produce request. A state topic whose max.message.bytes is below our chunk size (a hand-made topic)
   * refuses it with MESSAGE_TOO_LARGE: the chunk size is halved (down to 16 KiB) and the save fails retriably, so the
   * caller's retry writes the whole snapshot again in smaller chunks instead of sending the same request forever.
   */
  private async sendChunk(record: ProducerRecord): Promise<RecordMetadata[]> {
    try {
      return await this.o.producer.send(record);
    } catch (e) {
      if (!isMessageTooLarge(e) || this.chunkBytes <= MIN_CHUNK_BYTES) throw e;
      const was = this.chunkBytes;
      this.chunkBytes = Math.max(MIN_CHUNK_BYTES, Math.floor(was / 2));
      this.o.logger.error(
        { state_topic: this.o.stateTopic, chunk_bytes: was, next_chunk_bytes: this.chunkBytes },
        'the state topic refused a snapshot chunk as too large (its max.message.bytes is lower than nettally expects); writing smaller chunks',
      );
      throw new NettallyError('KAFKA_UNAVAILABLE', `state topic ${this.o.stateTopic} refused a ${was}-byte snapshot chunk (MESSAGE_TOO_LARGE)`, { retriable: true });
    }
  }

  /**
   * The snapshot per data partition to continue from. `hints` are the state offsets from the group's commit
   * metadata: reading starts there (bounded), and the snapshot the commit names (the one starting at the hint) is
   * the one taken: a newer one that no commit names (written by a member that crashed before its commit, or planted
   * by anyone who can write to the state topic; the bundled broker has no authentication) is used only when the
   * named one is unreadable, with a warning. Without a hint (no commit yet) the newest complete snapshot is taken.
   */
  async load(partitions: readonly number[], hints: ReadonlyMap<number, string | undefined>): Promise<Map<number, Snapshot>> {
    const { admin, stateTopic } = this.o;
    const out = new Map<number, Snapshot>();
    if (partitions.length === 0) return out;
    const ranges = new Map<number, { start: bigint; end: bigint }>();
    // A partition coming back after a rebalance takes the slot of whatever snapshot is found now, not its old one.
    for (const p of partitions) this.slots.delete(p);
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
    // Complete snapshots per partition, still compressed: only the newest readable one is decoded.
    const complete = new Map<number, Chunked[]>();
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
            const ck = m.key ? parseChunkKey(m.key.toString()) : undefined;
            const p = ck === undefined ? undefined : wanted.get(ck.key);
            if (p === undefined || !m.value) continue;
            const id = m.headers?.['nettally-snapshot']?.toString();
            const chunk = /^(\d+)\/(\d+)$/.exec(m.headers?.['nettally-chunk']?.toString() ?? '');
            if (!id || !chunk) continue;
            const pk = `${p}/${id}`;
            let c = pending.get(pk);
            if (!c) {
              c = { id, n: Number(chunk[2]), parts: new Map(), firstOffset: off, slot: ck?.slot ?? '' };
              pending.set(pk, c);
            }
            c.parts.set(Number(chunk[1]), m.value);
            if (c.parts.size === c.n) {
              pending.delete(pk);
              const list = complete.get(p) ?? [];
              list.push(c);
              complete.set(p, list);
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
    for (const [p, list] of complete) {
      const hint = hints.get(p);
      const named = (c: Chunked): boolean => hint !== undefined && c.firstOffset === BigInt(hint);
      // the committed one first, then newest first
      list.sort((x, y) => Number(named(y)) - Number(named(x)) || (x.firstOffset < y.firstOffset ? 1 : x.firstOffset > y.firstOffset ? -1 : 0));
      for (const c of list) {
        try {
          const snap = await decodeSnapshot(Buffer.concat([...Array(c.n).keys()].map((i) => c.parts.get(i) as Buffer)));
          if (hint !== undefined && !named(c)) {
            this.o.logger.warn({ partition: p, committed_state_offset: hint, used_state_offset: String(c.firstOffset) }, 'the snapshot the committed offset names is missing or unreadable; continuing from a newer one that no commit names');
          }
          out.set(p, snap);
          this.slots.set(p, c.slot);
          break;
        } catch (e) {
          this.o.logger.warn({ err: e, partition: p, state_offset: String(c.firstOffset) }, 'skipping unreadable state snapshot');
        }
      }
    }
    return out;
  }
}

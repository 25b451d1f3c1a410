// Per-partition aggregation snapshots in a Kafka topic (default nettally.consumer-state), readable by every group
// member: gzip'd JSON, chunked under the message size limit, keyed group/topic/partition; the consumer's offset
// commit metadata points at the snapshot it mirrors, so a load reads only from there to the end.
import { randomBytes } from 'crypto';
import { createGzip, gunzip } from 'zlib';
import { promisify } from 'util';
import type { Admin, Kafka, Producer, ProducerRecord, RecordMetadata } from 'kafkajs';
import { NettallyError } from '../lib/errors';
import type { Logger } from '../lib/log';
import { type Delta, type Link, type SavedRows, type TextSink, applyDeltas, linkSum, replayable, writeDelta, writeFull } from './snapshot-chain';

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
/** Longest stretch a snapshot's encoding runs before it lets other partitions' work (and heartbeats) run. */
const SLICE_MS = 8;
/** Text handed to zlib at a time: memory holds about this much of a snapshot's text, not all of it. */
const GZIP_PIECE_CHARS = 256 * 1024;

/** kafkajs reports a refused batch as MESSAGE_TOO_LARGE, possibly wrapped in a retries-exceeded error. */
function isMessageTooLarge(e: unknown): boolean {
  for (let x = e as { type?: unknown; originalError?: unknown; cause?: unknown } | undefined, depth = 0; x && depth < 4; depth++) {
    if (x.type === 'MESSAGE_TOO_LARGE') return true;
    x = (x.originalError ?? x.cause) as typeof x;
  }
  return false;
}

/**
 * A link's text, gzip'd as it is written: pieces go to zlib's async (thread-pool) stream every ~256k characters, so
 * neither the whole text nor a synchronous gzip of it (~1 s at 100k connections) is ever needed.
 */
class GzipSink implements TextSink {
  private pieces: string[] = [];
  private chars = 0;
  private readonly gz = createGzip();
  private readonly out: Buffer[] = [];
  private readonly ended: Promise<void>;
  constructor() {
    this.gz.on('data', (b: Buffer) => this.out.push(b));
    this.ended = new Promise<void>((resolve, reject) => {
      this.gz.once('end', resolve);
      this.gz.once('error', reject);
    });
    this.ended.catch(() => undefined); // awaited in end(); a destroyed (unused) sink rejects nobody
  }
  write(text: string): void {
    this.pieces.push(text);
    this.chars += text.length;
  }
  get buffered(): number {
    return this.chars;
  }
  /** Hands the text so far to zlib, waiting while it is behind (backpressure). */
  async drain(): Promise<void> {
    if (this.chars === 0) return;
    const text = this.pieces.join('');
    this.pieces = [];
    this.chars = 0;
    if (!this.gz.write(text)) await new Promise<void>((r) => this.gz.once('drain', r));
  }
  async end(): Promise<Buffer> {
    await this.drain();
    this.gz.end();
    await this.ended;
    return Buffer.concat(this.out);
  }
  destroy(): void {
    this.gz.destroy();
  }
}

/**
 * A snapshot link, gzip'd: the full state, or with `prev` the delta since that link (undefined when none can be
 * written: see writeDelta). Yields to the event loop every few ms so other partitions and heartbeats keep running.
 */
async function encodeLink(snap: Snapshot, prev: SavedRows | undefined): Promise<{ gz: Buffer; link: Link } | undefined> {
  const sink = new GzipSink();
  sink.write(`{"offset":${JSON.stringify(snap.offset)},${snap.gaps ? `"gaps":${JSON.stringify(snap.gaps)},` : ''}"${prev ? 'delta' : 'state'}":`);
  let t = performance.now();
  const tick = async (): Promise<void> => {
    if (sink.buffered >= GZIP_PIECE_CHARS) await sink.drain();
    if (performance.now() - t < SLICE_MS) return;
    await new Promise<void>((r) => setImmediate(r));
    t = performance.now();
  };
  const link = prev ? await writeDelta(prev, snap.state, sink, tick) : await writeFull(snap.state, sink, tick);
  if (!link) {
    sink.destroy();
    return undefined;
  }
  sink.write('}');
  return { gz: await sink.end(), link };
}

/** A full snapshot, gzip'd JSON (what save() writes when it does not write a delta; decodeSnapshot reads it). */
export async function encodeSnapshot(snap: Snapshot): Promise<Buffer> {
  return (await encodeLink(snap, undefined) as { gz: Buffer }).gz;
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
  /**
   * Incremental snapshots: a full snapshot at most every `fullEvery` saves of a partition (default 32), the saves in
   * between write deltas; 0 or 1: every save is full. See DEFAULT_FULL_EVERY.
   */
  fullEvery?: number;
  /** A full snapshot also when the chain's deltas would exceed this fraction of the last full one's bytes (0.5). */
  fullFraction?: number;
}

/** Saves per chain: one full snapshot, then up to 31 deltas (a restore reads at most 32 links). */
export const DEFAULT_FULL_EVERY = 32;
/** A chain ends once its deltas' bytes exceed half of its full snapshot's: a restore reads at most ~1.5 fulls. */
export const DEFAULT_FULL_FRACTION = 0.5;

/** Where the committed offset's state is: a full snapshot (`offset`), or a delta (`offset`) of the chain at `base`. */
export interface StateHint {
  offset: string;
  /** State offset of the full snapshot the named delta's chain starts from (absent: `offset` names a full one). */
  base?: string;
}

/**
 * Commit metadata naming the snapshot that the committed offset mirrors: `nettally-state:<sp>:<offset>` for a full
 * snapshot, `nettally-state:<sp>:<delta offset>:<full offset>` for a delta and the full snapshot its chain starts at.
 */
export function commitMetadata(statePartition: number, stateOffset: string, baseOffset?: string): string {
  return `${META_PREFIX}${statePartition}:${stateOffset}${baseOffset === undefined ? '' : `:${baseOffset}`}`;
}

export function parseCommitMetadata(meta: string | null | undefined): { partition: number; offset: string; base?: string } | undefined {
  const m = meta ? /^nettally-state:(\d+):(\d+)(?::(\d+))?$/.exec(meta) : null;
  if (!m) return undefined;
  return m[3] === undefined ? { partition: Number(m[1]), offset: m[2] } : { partition: Number(m[1]), offset: m[2], base: m[3] };
}

interface Chunked {
  id: string;
  n: number;
  parts: Map<number, Buffer>;
  firstOffset: bigint;
  /** Compaction-key slot ('' for snapshots written before slots existed). */
  slot: 'a' | 'b' | '';
  /** Chain headers (absent on snapshots written before chains: a full one). */
  kind: 'full' | 'delta';
  /** linkSum of the assembled chunks. */
  sum?: string;
  /** A delta's predecessor, `<id>:<sum>`, and its place in the chain (the full snapshot is 0). */
  prev?: string;
  seq: number;
}

/**
 * `<group>/<topic>/<partition>#<slot>[d<seq>.]<chunk>` → key and slot (slot '' in the format before slots). Deltas
 * use their chain's slot and their place in it: the next chain in the same slot overwrites them, never the chain
 * in the other slot that a restart may still need.
 */
function parseChunkKey(key: string): { key: string; slot: 'a' | 'b' | '' } | undefined {
  const m = /^(.*)#([ab]?)(?:d\d+\.)?\d+$/.exec(key);
  return m ? { key: m[1], slot: m[2] as 'a' | 'b' | '' } : undefined;
}

/** The chain a partition's saves continue (in memory, for the member that wrote its full snapshot). */
interface Chain {
  /** What the newest link saved, to diff the next state against (hashes and flags, not the rows' text). */
  saved: SavedRows;
  slot: 'a' | 'b';
  /** State offset of the chain's full snapshot. */
  base: string;
  /** id:sum of the newest link. */
  prev: string;
  seq: number;
  deltaBytes: number;
  fullBytes: number;
}

export class StateStore {
  private statePartitions = 1;
  private chunkBytes: number;
  /** Compaction-key slot of each partition's newest complete snapshot (see save()). */
  private readonly slots = new Map<number, 'a' | 'b' | ''>();
  /** Per partition, the chain the next save extends with a delta (none: the next save is full). */
  private readonly chains = new Map<number, Chain>();
  private readonly fullEvery: number;
  private readonly fullFraction: number;
  /** Links stored by this process: all, the deltas among them, gzip'd bytes (the consumer's status line). */
  readonly written = { state_saves: 0, state_deltas: 0, state_bytes: 0 };
  constructor(private readonly o: StateStoreOptions) {
    this.chunkBytes = o.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.fullEvery = o.fullEvery ?? DEFAULT_FULL_EVERY;
    this.fullFraction = o.fullFraction ?? DEFAULT_FULL_FRACTION;
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
   *
   * Incremental: after a full snapshot, up to fullEvery - 1 saves write a delta (rows added, changed and removed
   * since the previous link, plus the small rest of the state) naming its predecessor by id and checksum; the chain
   * ends early once its deltas' bytes would exceed fullFraction of the full one. A delta keeps its full snapshot's
   * slot (keys `<key>#<slot>d<seq>.<i>`), and the commit metadata names both the delta and the full snapshot.
   */
  async save(partition: number, snapIn: Snapshot): Promise<string> {
    // written up to twice (a delta, then in full if the delta is too big): one-shot row iterables become arrays
    const snap = { ...snapIn, state: replayable(snapIn.state) };
    const chain = this.chains.get(partition);
    let enc: { gz: Buffer; link: Link } | undefined;
    if (chain && chain.seq + 1 < this.fullEvery) {
      const d = await encodeLink(snap, chain.saved);
      // a chain whose deltas outgrow a fraction of its full snapshot ends: a restore would read more than it saves
      if (d && chain.deltaBytes + d.gz.length <= this.fullFraction * chain.fullBytes) enc = d;
    }
    const isDelta = enc !== undefined && chain !== undefined;
    enc ??= (await encodeLink(snap, undefined)) as { gz: Buffer; link: Link };
    const { gz, link } = enc;
    const id = randomBytes(8).toString('hex');
    const sum = linkSum(gz);
    const n = Math.max(1, Math.ceil(gz.length / this.chunkBytes));
    const sp = this.statePartition(partition);
    const slot = isDelta ? chain.slot : this.slots.get(partition) === 'a' ? 'b' : 'a';
    const seq = isDelta ? chain.seq + 1 : 0;
    const chainHeaders: Record<string, string> = isDelta ? { 'nettally-link': `delta/${seq}`, 'nettally-prev': chain.prev, 'nettally-sum': sum } : { 'nettally-link': 'full/0', 'nettally-sum': sum };
    let first: string | undefined;
    for (let i = 0; i < n; i++) {
      const res = await this.sendChunk({
        topic: this.o.stateTopic,
        acks: -1,
        messages: [{
          key: `${this.key(partition)}#${slot}${isDelta ? `d${seq}.` : ''}${i}`,
          value: gz.subarray(i * this.chunkBytes, (i + 1) * this.chunkBytes),
          partition: sp,
          headers: { 'nettally-snapshot': id, 'nettally-chunk': `${i}/${n}`, 'nettally-offset': snap.offset, ...chainHeaders },
        }],
      });
      if (i === 0) first = res.find((r) => r.partition === sp)?.baseOffset ?? res[0]?.baseOffset;
    }
    if (first === undefined) throw new NettallyError('KAFKA_UNAVAILABLE', 'state topic write returned no offset', { retriable: true });
    // the chain (and the rows' saved marks) move on only once the link is stored: a failed save is retried against
    // the same predecessor with the same rows marked
    link.commit();
    this.written.state_saves++;
    this.written.state_bytes += gz.length;
    if (isDelta) {
      this.written.state_deltas++;
      this.chains.set(partition, { ...chain, saved: link.saved, prev: `${id}:${sum}`, seq, deltaBytes: chain.deltaBytes + gz.length });
      return commitMetadata(sp, first, chain.base);
    }
    this.slots.set(partition, slot);
    if (this.fullEvery > 1) this.chains.set(partition, { saved: link.saved, slot, base: first, prev: `${id}:${sum}`, seq: 0, deltaBytes: 0, fullBytes: gz.length });
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
  async load(partitions: readonly number[], hints: ReadonlyMap<number, StateHint | undefined>): Promise<Map<number, Snapshot>> {
    const { admin, stateTopic } = this.o;
    const out = new Map<number, Snapshot>();
    if (partitions.length === 0) return out;
    const ranges = new Map<number, { start: bigint; end: bigint }>();
    // A partition coming back after a rebalance takes the slot of whatever snapshot is found now, not its old one.
    for (const p of partitions) {
      this.slots.delete(p);
      // and its next save is a full snapshot: the chain in memory may have been continued by another member since
      this.chains.delete(p);
    }
    const offsets = await admin.fetchTopicOffsets(stateTopic);
    for (const p of partitions) {
      const sp = this.statePartition(p);
      const o = offsets.find((x) => x.partition === sp);
      if (!o) continue;
      const low = BigInt(o.low);
      const end = BigInt(o.high);
      const hint = hints.get(p);
      // a delta's chain is read from its full snapshot on
      let start = hint !== undefined ? BigInt(hint.base ?? hint.offset) : low;
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
            const h = (name: string): string | undefined => m.headers?.[name]?.toString();
            const id = h('nettally-snapshot');
            const chunk = /^(\d+)\/(\d+)$/.exec(h('nettally-chunk') ?? '');
            const link = /^(full|delta)\/(\d+)$/.exec(h('nettally-link') ?? 'full/0');
            if (!id || !chunk || !link) continue;
            const pk = `${p}/${id}/${h('nettally-sum') ?? ''}`;
            let c = pending.get(pk);
            if (!c) {
              c = { id, n: Number(chunk[2]), parts: new Map(), firstOffset: off, slot: ck?.slot ?? '', kind: link[1] as 'full' | 'delta', seq: Number(link[2]), sum: h('nettally-sum'), prev: h('nettally-prev') };
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
      const snap = await this.pick(p, list, hints.get(p));
      if (snap) out.set(p, snap);
    }
    return out;
  }

  /**
   * The snapshot of partition `p` among its complete `links`. The committed one first: a full snapshot, or the delta
   * the commit names rebuilt from its verified chain. A broken chain (a link missing, incomplete, or not matching the
   * checksum its successor names) is refused with an error log, never applied in part: the state then comes from the
   * full snapshot the chain starts at — an earlier offset, so the consumer replays the records since then into the
   * same totals (or, if retention deleted them, reports a retention gap). Failing that, as before: a newer full
   * snapshot no commit names (with a warning); without a commit, the newest full one.
   */
  private async pick(p: number, links: Chunked[], hint: StateHint | undefined): Promise<Snapshot | undefined> {
    // each link's chunks are joined and hashed once: the checksum check and the decode read the same body
    const bodies = new Map<Chunked, Buffer>();
    const bodyOf = (c: Chunked): Buffer => {
      let b = bodies.get(c);
      if (!b) bodies.set(c, (b = Buffer.concat([...Array(c.n).keys()].map((i) => c.parts.get(i) as Buffer))));
      return b;
    };
    const sums = new Map<Chunked, boolean>();
    const intact = (c: Chunked): boolean => {
      let ok = sums.get(c);
      if (ok === undefined) sums.set(c, (ok = c.sum === undefined || linkSum(bodyOf(c)) === c.sum));
      return ok;
    };
    if (hint?.base !== undefined) {
      try {
        const chain = resolveChain(links, hint, intact);
        const full = await decodeSnapshot(bodyOf(chain[0]));
        const deltas: { offset: string; gaps?: GapMark[]; delta: Delta }[] = [];
        for (const c of chain.slice(1)) deltas.push(JSON.parse((await gunzipAsync(bodyOf(c))).toString('utf8')) as (typeof deltas)[number]);
        const last = deltas[deltas.length - 1];
        this.slots.set(p, chain[0].slot);
        this.o.logger.info({ partition: p, links: chain.length, state_offset: hint.offset, chain_start: hint.base }, 'restored a snapshot chain');
        return { offset: last.offset, state: applyDeltas(full.state, deltas.map((d) => d.delta)), ...(last.gaps ? { gaps: last.gaps } : {}) };
      } catch (e) {
        this.o.logger.error(
          { partition: p, committed_state_offset: hint.offset, chain_start: hint.base, err: (e as Error).message },
          'the snapshot chain the committed offset names is broken; restoring the full snapshot it starts from and replaying the records since then',
        );
      }
    }
    // the committed full snapshot (or the chain's start) first, then newest first; deltas are never taken alone
    const named = (c: Chunked): boolean => hint !== undefined && c.firstOffset === BigInt(hint.base ?? hint.offset);
    const fulls = links.filter((c) => c.kind === 'full');
    fulls.sort((x, y) => Number(named(y)) - Number(named(x)) || (x.firstOffset < y.firstOffset ? 1 : x.firstOffset > y.firstOffset ? -1 : 0));
    for (const c of fulls) {
      try {
        if (!intact(c)) throw new Error('checksum mismatch');
        const snap = await decodeSnapshot(bodyOf(c));
        if (hint !== undefined && !named(c)) {
          this.o.logger.warn({ partition: p, committed_state_offset: hint.offset, used_state_offset: String(c.firstOffset) }, 'the snapshot the committed offset names is missing or unreadable; continuing from a newer one that no commit names');
        }
        this.slots.set(p, c.slot);
        return snap;
      } catch (e) {
        this.o.logger.warn({ err: e, partition: p, state_offset: String(c.firstOffset) }, 'skipping unreadable state snapshot');
      }
    }
    return undefined;
  }
}

/**
 * The links from the full snapshot to the delta `hint` names, oldest first, each found by the id and checksum its
 * successor names (so a planted or duplicated link with another body is never taken) and intact; throws naming
 * the first link that is missing or does not fit.
 */
function resolveChain(links: readonly Chunked[], hint: StateHint, intact: (c: Chunked) => boolean): Chunked[] {
  let cur: Chunked | undefined = links.find((c) => c.kind === 'delta' && c.firstOffset === BigInt(hint.offset));
  if (!cur) throw new Error(`the delta at state offset ${hint.offset} is missing or incomplete`);
  if (!intact(cur)) throw new Error(`the delta at state offset ${hint.offset} does not match its checksum`);
  const chain = [cur];
  while (cur.kind === 'delta') {
    const want: string = cur.prev ?? '';
    const prevSeq: number = cur.seq - 1;
    const prev: Chunked | undefined = links.find((c) => `${c.id}:${c.sum ?? ''}` === want && c.seq === prevSeq && intact(c));
    if (!prev || prevSeq < 0) throw new Error(`link ${want || '(none)'} (number ${prevSeq} of the chain) before state offset ${String(cur.firstOffset)} is missing, incomplete or altered`);
    chain.unshift(prev);
    cur = prev;
  }
  if (cur.firstOffset !== BigInt(hint.base as string)) throw new Error(`the chain starts at state offset ${String(cur.firstOffset)}, the commit names ${String(hint.base)}`);
  return chain;
}

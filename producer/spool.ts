// Bounded on-disk write-ahead spool of Kafka messages: append-only segments of length+CRC framed entries,
// replayed in order, dropped only once Kafka acknowledged them; survives SIGKILL (torn tails are cut off).
import {
  closeSync, existsSync, fstatSync, fsync, fsyncSync, ftruncateSync, openSync, readdirSync, readFileSync,
  readSync, renameSync, unlinkSync, writeSync,
} from 'fs';
import { join } from 'path';
import { crc32 } from 'zlib';
import { NettallyError } from '../lib/errors';
import { ensurePrivateDir, PRIVATE_FILE_MODE } from '../lib/private-files';
import type { Logger } from '../lib/log';
import { silentLogger } from '../lib/log';

export type FsyncPolicy = 'always' | 'interval' | 'never';

export interface SpoolOptions {
  dir: string;
  /** Upper bound of unacknowledged bytes on disk (frames included). */
  maxBytes: number;
  /** A new segment file is started once the active one reaches this size. */
  segmentBytes?: number;
  /** always: fsync after every append (group-committed, off the event loop; whenDurable() waits for it); interval: every fsyncIntervalMs; never: leave it to the OS. */
  fsync?: FsyncPolicy;
  fsyncIntervalMs?: number;
  logger?: Logger;
}

export interface SpoolEntry {
  key: Buffer;
  value: Buffer;
}

/** A place in the spool: segment number and byte offset in it. */
export interface SpoolPosition {
  seg: number;
  off: number;
}

export interface SpoolBatch {
  entries: SpoolEntry[];
  /** Bytes of the entries on disk (frames included). */
  bytes: number;
  /** Hand this to ack() once Kafka acknowledged every entry. */
  end: SpoolPosition;
}

const FRAME_HEADER = 8; // u32 payload length, u32 CRC-32 of the payload
const MAX_FRAME = 64 * 1024 * 1024;
const SEG_RE = /^(\d{12})\.seg$/;

function segName(seg: number): string {
  return `${String(seg).padStart(12, '0')}.seg`;
}

/** Writes `e`'s frame into `buf` at `at` (which has room: Spool.entrySize(e)); returns the offset after it. */
function writeFrame(buf: Buffer, at: number, e: SpoolEntry): number {
  const payloadLen = 2 + e.key.length + e.value.length;
  buf.writeUInt32LE(payloadLen, at);
  buf.writeUInt16LE(e.key.length, at + FRAME_HEADER);
  e.key.copy(buf, at + FRAME_HEADER + 2);
  e.value.copy(buf, at + FRAME_HEADER + 2 + e.key.length);
  const end = at + FRAME_HEADER + payloadLen;
  buf.writeUInt32LE(crc32(buf.subarray(at + FRAME_HEADER, end)), at + 4);
  return end;
}

interface Segment {
  seg: number;
  size: number;
  readFd?: number;
}

export class Spool {
  private readonly segments: Segment[] = [];
  private head: SpoolPosition = { seg: 0, off: 0 };
  private appendFd = -1;
  /** Appends so far, and how many of them a completed fsync covers. */
  private appendGen = 0;
  private syncedGen = 0;
  private syncing = false;
  private syncAgain = false;
  private timer?: NodeJS.Timeout;
  private count = 0;
  private total = 0;
  private readonly segmentBytes: number;
  private readonly policy: FsyncPolicy;
  private readonly logger: Logger;
  private readonly syncWaiters: Array<{ gen: number; resolve: () => void }> = [];
  /** Bytes cut off torn or corrupt tails during recovery. */
  readonly recoveredTornBytes: number;

  private constructor(private readonly opts: SpoolOptions) {
    this.segmentBytes = opts.segmentBytes ?? Math.min(64 * 1024 * 1024, Math.max(64 * 1024, Math.floor(opts.maxBytes / 8)));
    this.policy = opts.fsync ?? 'always';
    this.logger = opts.logger ?? silentLogger;
    this.recoveredTornBytes = this.recover();
    if (this.policy === 'interval') {
      this.timer = setInterval(() => this.scheduleSync(), opts.fsyncIntervalMs ?? 200);
      this.timer.unref();
    }
  }

  /** Opens (creating it if needed) and recovers the spool in `dir`. */
  static open(opts: SpoolOptions): Spool {
    if (!(opts.maxBytes > 0)) throw new NettallyError('CONFIG_INVALID', 'spool max bytes must be positive', { context: { setting: '--spool-max-bytes' } });
    // Connection metadata of every process on the host: only the service user may read it.
    ensurePrivateDir(opts.dir, opts.logger ?? silentLogger);
    return new Spool(opts);
  }

  /** Unacknowledged entries. */
  get records(): number {
    return this.count;
  }

  /** Unacknowledged bytes on disk. */
  get bytes(): number {
    return this.total;
  }

  get maxBytes(): number {
    return this.opts.maxBytes;
  }

  /** Whether `bytes` more would fit. */
  fits(bytes: number): boolean {
    return this.total + bytes <= this.opts.maxBytes;
  }

  /** On-disk size of the given entries. */
  static sizeOf(entries: readonly SpoolEntry[]): number {
    let n = 0;
    for (const e of entries) n += Spool.entrySize(e);
    return n;
  }

  /** Bytes one entry takes in the spool (frame header, key length, key, value). */
  static entrySize(e: SpoolEntry): number {
    return FRAME_HEADER + 2 + e.key.length + e.value.length;
  }

  /**
   * Appends entries in order, all or nothing. Returns false (writing nothing) if they would exceed maxBytes.
   * When this returns they are in the page cache (which survives the process being killed); whenDurable()
   * says when they are on stable storage.
   */
  append(entries: readonly SpoolEntry[]): boolean {
    if (entries.length === 0) return true;
    const size = Spool.sizeOf(entries);
    if (size > this.opts.maxBytes) {
      throw new NettallyError('SPOOL_FULL', `a batch of ${size} bytes can never fit the spool limit of ${this.opts.maxBytes} bytes`, {
        context: { setting: '--spool-max-bytes' },
      });
    }
    if (!this.fits(size)) return false;
    let active = this.segments[this.segments.length - 1];
    if (active.size > 0 && active.size + size > this.segmentBytes) active = this.roll();
    // The frames written straight into one buffer: a frame per entry and then their concatenation were two copies
    // and an allocation per record.
    const buf = Buffer.allocUnsafe(size);
    let at = 0;
    for (const e of entries) at = writeFrame(buf, at, e);
    let done = 0;
    while (done < buf.length) done += writeSync(this.appendFd, buf, done, buf.length - done);
    active.size += size;
    this.total += size;
    this.count += entries.length;
    this.appendGen += 1;
    if (this.policy === 'always') this.scheduleSync();
    return true;
  }

  /**
   * Resolves once everything appended so far is on stable storage: after the next fsync for 'always' (group
   * committed, off the event loop) and 'interval', at once for 'never' (the page cache survives a killed process).
   */
  whenDurable(): Promise<void> {
    if (this.policy === 'never' || this.syncedGen >= this.appendGen) return Promise.resolve();
    const gen = this.appendGen;
    return new Promise((resolve) => this.syncWaiters.push({ gen, resolve }));
  }

  /** fsyncs pending appends now, synchronously. */
  sync(): void {
    if (this.appendFd >= 0 && this.syncedGen < this.appendGen) fsyncSync(this.appendFd);
    this.synced(this.appendGen);
  }

  private synced(gen: number): void {
    this.syncedGen = Math.max(this.syncedGen, gen);
    for (let i = this.syncWaiters.length - 1; i >= 0; i--) {
      const w = this.syncWaiters[i];
      if (w.gen <= this.syncedGen) {
        this.syncWaiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  /** One fsync at a time on the thread pool; appends made meanwhile are covered by the next one. */
  private scheduleSync(): void {
    if (this.syncedGen >= this.appendGen || this.appendFd < 0) return;
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = true;
    const gen = this.appendGen;
    fsync(this.appendFd, (err) => {
      this.syncing = false;
      // EBADF: the segment was rolled (and fsynced synchronously) meanwhile; the roll already marked it durable.
      if (err && err.code !== 'EBADF') this.logger.error({ err }, 'spool fsync failed; retrying');
      else this.synced(gen);
      if (this.syncAgain || err) {
        this.syncAgain = false;
        if (err) setTimeout(() => this.scheduleSync(), 100).unref();
        else this.scheduleSync();
      }
    });
  }

  /**
   * Reads up to maxRecords entries (and about maxBytes) from the oldest unacknowledged one, without removing them.
   * `fits`, if given, is asked about each entry in order; the batch ends before the first entry it refuses, except
   * that a batch always holds at least one entry: a first entry it refuses comes alone (the caller decides what to do
   * with it).
   */
  peek(maxRecords: number, maxBytes: number, fits?: (e: SpoolEntry) => boolean): SpoolBatch {
    const entries: SpoolEntry[] = [];
    let pos = { ...this.head };
    let bytes = 0;
    let full = false;
    const take = (e: SpoolEntry): boolean => {
      if (fits && !fits(e)) {
        full = true;
        // A first entry that does not fit alone is returned alone.
        if (entries.length > 0) return false;
      }
      entries.push(e);
      return true;
    };
    for (const s of this.segments) {
      if (s.seg < pos.seg) continue;
      if (s.seg > pos.seg) pos = { seg: s.seg, off: 0 };
      while (!full && pos.off < s.size && entries.length < maxRecords && (bytes < maxBytes || entries.length === 0)) {
        const want = Math.min(s.size - pos.off, Math.max(maxBytes - bytes, FRAME_HEADER));
        const chunk = this.readAt(s, pos.off, want);
        let at = 0;
        while (at + FRAME_HEADER <= chunk.length && entries.length < maxRecords) {
          const len = chunk.readUInt32LE(at);
          if (at + FRAME_HEADER + len > chunk.length) break;
          if (!take(this.entryOf(chunk.subarray(at + FRAME_HEADER, at + FRAME_HEADER + len)))) break;
          at += FRAME_HEADER + len;
          bytes += FRAME_HEADER + len;
          if (bytes >= maxBytes || full) break;
        }
        if (at === 0 && !full) {
          // One frame larger than the chunk: read exactly it.
          const len = this.readAt(s, pos.off, FRAME_HEADER).readUInt32LE(0);
          const frame = this.readAt(s, pos.off, FRAME_HEADER + len);
          if (take(this.entryOf(frame.subarray(FRAME_HEADER)))) {
            at = frame.length;
            bytes += frame.length;
          }
        }
        pos = { seg: s.seg, off: pos.off + at };
      }
      if (full || entries.length >= maxRecords || bytes >= maxBytes) break;
    }
    return { entries, bytes, end: pos };
  }

  /** Drops everything before `end` (from a peek) and frees fully acknowledged segments. */
  ack(batch: SpoolBatch): void {
    if (batch.entries.length === 0) return;
    this.head = { ...batch.end };
    this.count -= batch.entries.length;
    this.total -= batch.bytes;
    while (this.segments.length > 1 && (this.segments[0].seg < this.head.seg || this.head.off >= this.segments[0].size)) {
      const s = this.segments.shift() as Segment;
      if (s.seg === this.head.seg) this.head = { seg: this.segments[0].seg, off: 0 };
      this.dropSegment(s);
    }
    // Caught up with a sizeable active segment: start afresh so the disk usage shrinks too.
    const active = this.segments[this.segments.length - 1];
    if (this.count === 0 && active.size >= this.segmentBytes / 4) {
      this.roll();
      this.segments.shift();
      this.head = { seg: this.segments[0].seg, off: 0 };
      this.dropSegment(active);
    }
    writeFileAtomicNoSync(join(this.opts.dir, 'head'), `${this.head.seg} ${this.head.off}\n`);
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.sync();
    for (const s of this.segments) {
      if (s.readFd !== undefined) closeSync(s.readFd);
      s.readFd = undefined;
    }
    if (this.appendFd >= 0) closeSync(this.appendFd);
    this.appendFd = -1;
  }

  /** The last key handed out: every record of a host has the same key, so peeks share one Buffer of it. */
  private lastKey: Buffer = Buffer.alloc(0);

  private entryOf(payload: Buffer): SpoolEntry {
    const klen = payload.readUInt16LE(0);
    const key = payload.subarray(2, 2 + klen);
    if (!key.equals(this.lastKey)) this.lastKey = Buffer.from(key);
    // The value is a view of the chunk peek() read (a fresh buffer nobody else writes): no copy. The chunk lives as
    // long as the batch's entries do (until Kafka acknowledged them), about the batch's size.
    return { key: this.lastKey, value: payload.subarray(2 + klen) };
  }

  private readAt(s: Segment, off: number, len: number): Buffer {
    s.readFd ??= openSync(join(this.opts.dir, segName(s.seg)), 'r');
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const n = readSync(s.readFd, buf, got, len - got, off + got);
      if (n === 0) break;
      got += n;
    }
    return got === len ? buf : buf.subarray(0, got);
  }

  private roll(): Segment {
    const last = this.segments[this.segments.length - 1];
    if (this.appendFd >= 0) {
      fsyncSync(this.appendFd);
      closeSync(this.appendFd);
      this.synced(this.appendGen);
    }
    const seg: Segment = { seg: (last?.seg ?? 0) + 1, size: 0 };
    this.appendFd = openSync(join(this.opts.dir, segName(seg.seg)), 'a', PRIVATE_FILE_MODE);
    fsyncDir(this.opts.dir);
    this.segments.push(seg);
    return seg;
  }

  private dropSegment(s: Segment): void {
    if (s.readFd !== undefined) closeSync(s.readFd);
    s.readFd = undefined;
    try {
      unlinkSync(join(this.opts.dir, segName(s.seg)));
    } catch (e) {
      this.logger.warn({ err: e, seg: s.seg }, 'could not delete an acknowledged spool segment');
    }
  }

  /** Loads segments, cuts torn/corrupt tails, counts what is left after the persisted head. Returns bytes cut. */
  private recover(): number {
    const dir = this.opts.dir;
    const segs = readdirSync(dir)
      .map((f) => SEG_RE.exec(f))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    let head: SpoolPosition | undefined;
    const headPath = join(dir, 'head');
    if (existsSync(headPath)) {
      const m = /^(\d+) (\d+)\s*$/.exec(readFileSync(headPath, 'utf8'));
      if (m) head = { seg: Number(m[1]), off: Number(m[2]) };
      else this.logger.warn({ path: headPath }, 'spool head file unreadable; replaying every segment (duplicates are deduplicated downstream)');
    }
    let cut = 0;
    for (const seg of segs) {
      const path = join(dir, segName(seg));
      if (head && seg < head.seg) {
        unlinkSync(path);
        continue;
      }
      const start = head && seg === head.seg ? head.off : 0;
      const fd = openSync(path, 'r+');
      try {
        const size = fstatSync(fd).size;
        const s: Segment = { seg, size };
        const valid = this.scan(s, Math.min(start, size));
        if (valid.end < size) {
          cut += size - valid.end;
          this.logger.warn({ segment: path, valid_bytes: valid.end, cut_bytes: size - valid.end }, 'spool: cutting a torn or corrupt tail (an unfinished write before a crash)');
          ftruncateSync(fd, valid.end);
          fsyncSync(fd);
          s.size = valid.end;
        }
        this.count += valid.records;
        this.total += s.size - Math.min(start, s.size);
        this.segments.push(s);
      } finally {
        closeSync(fd);
      }
    }
    if (this.segments.length === 0) {
      this.roll();
    } else {
      const last = this.segments[this.segments.length - 1];
      this.appendFd = openSync(join(dir, segName(last.seg)), 'a');
    }
    this.head = head && this.segments.some((s) => s.seg === head.seg) ? { seg: head.seg, off: Math.min(head.off, this.segments.find((s) => s.seg === head.seg)?.size ?? 0) } : { seg: this.segments[0].seg, off: 0 };
    if (this.count > 0) this.logger.info({ records: this.count, bytes: this.total }, 'spool: unacknowledged records from a previous run will be sent first');
    return cut;
  }

  /** Walks frames from `from`; returns the end of the last valid frame and how many frames were valid. */
  private scan(s: Segment, from: number): { end: number; records: number } {
    let off = from;
    let records = 0;
    const hdr = Buffer.alloc(FRAME_HEADER);
    const fd = openSync(join(this.opts.dir, segName(s.seg)), 'r');
    try {
      while (off + FRAME_HEADER <= s.size) {
        if (readSync(fd, hdr, 0, FRAME_HEADER, off) < FRAME_HEADER) break;
        const len = hdr.readUInt32LE(0);
        if (len < 2 || len > MAX_FRAME || off + FRAME_HEADER + len > s.size) break;
        const payload = Buffer.allocUnsafe(len);
        if (readSync(fd, payload, 0, len, off + FRAME_HEADER) < len) break;
        if (crc32(payload) !== hdr.readUInt32LE(4) || payload.readUInt16LE(0) > len - 2) break;
        off += FRAME_HEADER + len;
        records += 1;
      }
    } finally {
      closeSync(fd);
    }
    return { end: off, records };
  }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The head only saves re-sending (downstream dedupes), so it is renamed into place without fsync. */
function writeFileAtomicNoSync(path: string, content: string): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', PRIVATE_FILE_MODE);
  try {
    writeSync(fd, content);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

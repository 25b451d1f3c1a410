// One partition's append-only segment log on disk: batches stored as sent (baseOffset assigned here), a
// sparse offset index per segment, crash recovery (torn tails truncated by length/CRC), retention, and
// idempotent-producer sequence state.
import * as fs from 'fs';
import { join } from 'path';
import { BATCH, checkBatch, readBatchHeader, type BatchInfo } from './batch';

export type FsyncPolicy = 'always' | 'interval' | 'never';

export interface LogConfig {
  segmentBytes: number;
  /** Bytes of log between two index entries. */
  indexIntervalBytes: number;
  fsync: FsyncPolicy;
}

interface Segment {
  base: number;
  logPath: string;
  indexPath: string;
  /** Open descriptor, or -1: closed segments are opened on demand (a few at a time, see fdOf). */
  fd: number;
  size: number;
  /** Last append time (ms): time retention deletes segments whose newest data is older than the limit. */
  lastWriteMs: number;
}

interface ProducerBatch {
  firstSeq: number;
  lastSeq: number;
  baseOffset: number;
}

interface ProducerState {
  epoch: number;
  lastSeq: number;
  /** The last few batches, so a retried batch is answered with its original offset (Kafka keeps 5). */
  recent: ProducerBatch[];
}

export type SequenceCheck =
  | { kind: 'ok' }
  | { kind: 'duplicate'; baseOffset: number }
  | { kind: 'out-of-order' }
  | { kind: 'fenced' };

const INDEX_ENTRY = 8;
const SCAN_CHUNK = 1 << 20;
const INDEX_CACHE = 16;
/** Closed segments kept open per partition (long retention must not exhaust file descriptors). */
const OPEN_CLOSED_SEGMENTS = 4;

function segmentName(base: number): string {
  return String(base).padStart(20, '0');
}

function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Finds the position of the last index entry with relative offset <= rel (0 when none). */
function indexLookup(index: Buffer, count: number, rel: number): number {
  let lo = 0;
  let hi = count - 1;
  let pos = 0;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (index.readInt32BE(mid * INDEX_ENTRY) <= rel) {
      pos = index.readInt32BE(mid * INDEX_ENTRY + 4);
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return pos;
}

/**
 * Walks the batches of one segment file from `from`, calling `each` per valid batch; stops at the first
 * torn or corrupt batch and returns the byte position where valid data ends.
 */
function scanSegment(fd: number, size: number, from: number, checkCrc: boolean, each: (b: BatchInfo, buf: Buffer) => void): number {
  let buf = Buffer.allocUnsafe(SCAN_CHUNK);
  let bufStart = from;
  let bufLen = fs.readSync(fd, buf, 0, Math.min(buf.length, size - from), from);
  let pos = from;
  while (pos < size) {
    let rel = pos - bufStart;
    // Refill so the whole batch is in memory (a batch may be larger than the chunk).
    if (bufLen - rel < BATCH.HEADER_SIZE || bufLen - rel < BATCH.LOG_OVERHEAD + buf.readInt32BE(rel + BATCH.LENGTH)) {
      let want = Math.min(Math.max(SCAN_CHUNK, BATCH.HEADER_SIZE), size - pos);
      if (bufLen - rel >= BATCH.LOG_OVERHEAD) {
        const batchSize = BATCH.LOG_OVERHEAD + buf.readInt32BE(rel + BATCH.LENGTH);
        if (batchSize > want && batchSize <= size - pos) want = batchSize;
      }
      if (want > buf.length) buf = Buffer.allocUnsafe(want);
      bufStart = pos;
      rel = 0;
      bufLen = fs.readSync(fd, buf, 0, want, pos);
    }
    const b = checkBatch(buf, rel, bufLen, checkCrc);
    if (typeof b === 'string') return pos;
    each({ ...b, position: pos }, buf);
    pos += b.size;
  }
  return pos;
}

export class PartitionLog {
  private segments: Segment[] = [];
  private next = 0;
  /** Index of the active segment, mirrored to its .index file. */
  private activeIndex = Buffer.allocUnsafe(4096);
  private activeIndexCount = 0;
  private activeIndexFd = -1;
  private bytesSinceIndex = 0;
  private readonly indexCache = new Map<number, { buf: Buffer; count: number }>();
  private readonly producers = new Map<number, ProducerState>();
  /** Closed segments with an open fd, least recently used first. */
  private readonly openClosed: Segment[] = [];
  /** Set by appends, cleared by sync(): what the interval flusher must fsync. */
  dirty = false;

  private constructor(
    readonly dir: string,
    private readonly config: LogConfig,
  ) {}

  /** Opens (creating if needed) the partition directory, recovering the active segment after a crash. */
  static open(dir: string, config: LogConfig, onTruncate?: (file: string, from: number, to: number) => void): PartitionLog {
    fs.mkdirSync(dir, { recursive: true });
    const log = new PartitionLog(dir, config);
    const bases = fs
      .readdirSync(dir)
      .filter((f) => /^\d{20}\.log$/.test(f))
      .map((f) => Number(f.slice(0, 20)))
      .sort((a, b) => a - b);
    if (bases.length === 0) {
      log.createSegment(0);
      return log;
    }
    bases.forEach((base, i) => {
      const logPath = join(dir, `${segmentName(base)}.log`);
      const fd = i === bases.length - 1 ? fs.openSync(logPath, 'r+') : -1;
      const st = fd >= 0 ? fs.fstatSync(fd) : fs.statSync(logPath);
      log.segments.push({ base, logPath, indexPath: join(dir, `${segmentName(base)}.index`), fd, size: st.size, lastWriteMs: st.mtimeMs });
    });
    for (const seg of log.segments.slice(0, -1)) {
      // Closed segments were fsynced with their index at roll time; rebuild only a missing/odd index.
      let ok = false;
      try {
        ok = fs.statSync(seg.indexPath).size % INDEX_ENTRY === 0;
      } catch {
        ok = false;
      }
      if (!ok) log.rebuildIndex(seg);
    }
    log.recoverActive(onTruncate);
    return log;
  }

  private get active(): Segment {
    return this.segments[this.segments.length - 1];
  }

  /** Offset the next appended record gets (= high watermark: one replica, so everything appended is committed). */
  get nextOffset(): number {
    return this.next;
  }

  /** Earliest offset still on disk. */
  get startOffset(): number {
    return this.segments[0].base;
  }

  get sizeBytes(): number {
    return this.segments.reduce((s, g) => s + g.size, 0);
  }

  get segmentCount(): number {
    return this.segments.length;
  }

  private createSegment(base: number): void {
    const logPath = join(this.dir, `${segmentName(base)}.log`);
    const indexPath = join(this.dir, `${segmentName(base)}.index`);
    const fd = fs.openSync(logPath, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o644);
    if (this.activeIndexFd >= 0) fs.closeSync(this.activeIndexFd);
    this.activeIndexFd = fs.openSync(indexPath, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o644);
    this.activeIndexCount = 0;
    this.bytesSinceIndex = 0;
    this.segments.push({ base, logPath, indexPath, fd, size: 0, lastWriteMs: Date.now() });
    this.next = base;
    if (this.config.fsync === 'always') fsyncDir(this.dir);
  }

  private rebuildIndex(seg: Segment): void {
    const entries: number[] = [];
    let since = 0;
    let last = 0;
    const fd = this.fdOf(seg);
    const end = scanSegment(fd, seg.size, 0, false, (b) => {
      since += b.position - last;
      last = b.position;
      if (since >= this.config.indexIntervalBytes) {
        entries.push(b.baseOffset - seg.base, b.position);
        since = 0;
      }
    });
    if (end !== seg.size) {
      fs.ftruncateSync(fd, end);
      seg.size = end;
    }
    const buf = Buffer.alloc(entries.length * 4);
    entries.forEach((v, i) => buf.writeInt32BE(v, i * 4));
    fs.writeFileSync(seg.indexPath, buf);
  }

  /** Scans the active segment with CRC checks, truncates a torn tail, rebuilds its index and producer state. */
  private recoverActive(onTruncate?: (file: string, from: number, to: number) => void): void {
    const seg = this.active;
    this.activeIndexFd = fs.openSync(seg.indexPath, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o644);
    this.activeIndexCount = 0;
    this.bytesSinceIndex = 0;
    let next = seg.base;
    let last = 0;
    const end = scanSegment(seg.fd, seg.size, 0, true, (b) => {
      this.bytesSinceIndex += b.position - last;
      last = b.position;
      if (this.bytesSinceIndex >= this.config.indexIntervalBytes) {
        this.addIndexEntry(b.baseOffset - seg.base, b.position);
        this.bytesSinceIndex = 0;
      }
      if (b.producerId >= 0) this.recordProducerBatch(b.producerId, b.producerEpoch, b.baseSequence, b.lastOffsetDelta, b.baseOffset);
      next = b.baseOffset + b.lastOffsetDelta + 1;
    });
    this.bytesSinceIndex += end - last;
    if (end !== seg.size) {
      onTruncate?.(seg.logPath, seg.size, end);
      fs.ftruncateSync(seg.fd, end);
      fs.fsyncSync(seg.fd);
      seg.size = end;
    }
    this.next = next;
  }

  /** The segment's fd, opening a closed segment on demand and closing the least recently used beyond a few. */
  private fdOf(seg: Segment): number {
    if (seg === this.active) return seg.fd;
    const at = this.openClosed.indexOf(seg);
    if (at >= 0) {
      this.openClosed.splice(at, 1);
      this.openClosed.push(seg);
      return seg.fd;
    }
    if (seg.fd < 0) seg.fd = fs.openSync(seg.logPath, 'r+');
    this.openClosed.push(seg);
    while (this.openClosed.length > OPEN_CLOSED_SEGMENTS) this.closeFd(this.openClosed[0]);
    return seg.fd;
  }

  private closeFd(seg: Segment): void {
    const at = this.openClosed.indexOf(seg);
    if (at >= 0) this.openClosed.splice(at, 1);
    if (seg.fd >= 0) fs.closeSync(seg.fd);
    seg.fd = -1;
  }

  private addIndexEntry(rel: number, position: number): void {
    if ((this.activeIndexCount + 1) * INDEX_ENTRY > this.activeIndex.length) {
      const grown = Buffer.allocUnsafe(this.activeIndex.length * 2);
      this.activeIndex.copy(grown, 0, 0, this.activeIndexCount * INDEX_ENTRY);
      this.activeIndex = grown;
    }
    const at = this.activeIndexCount * INDEX_ENTRY;
    this.activeIndex.writeInt32BE(rel, at);
    this.activeIndex.writeInt32BE(position, at + 4);
    fs.writeSync(this.activeIndexFd, this.activeIndex, at, INDEX_ENTRY, at);
    this.activeIndexCount++;
  }

  private roll(): void {
    const old = this.active;
    if (this.config.fsync !== 'never') {
      fs.fsyncSync(old.fd);
      fs.fsyncSync(this.activeIndexFd);
    }
    this.createSegment(this.next);
    // The old active segment joins the closed ones (its fd stays open as the most recently used).
    this.openClosed.push(old);
    while (this.openClosed.length > OPEN_CLOSED_SEGMENTS) this.closeFd(this.openClosed[0]);
  }

  /** Idempotent producer check for one batch, before appending it. */
  checkSequence(b: BatchInfo): SequenceCheck {
    if (b.producerId < 0) return { kind: 'ok' };
    const st = this.producers.get(b.producerId);
    if (!st) return { kind: 'ok' };
    if (b.producerEpoch < st.epoch) return { kind: 'fenced' };
    if (b.producerEpoch > st.epoch) return b.baseSequence === 0 ? { kind: 'ok' } : { kind: 'out-of-order' };
    const lastSeq = b.baseSequence + b.lastOffsetDelta;
    const dup = st.recent.find((r) => r.firstSeq === b.baseSequence && r.lastSeq === lastSeq);
    if (dup) return { kind: 'duplicate', baseOffset: dup.baseOffset };
    // Sequences wrap at 2^31; kafkajs and librdkafka start at 0 per (producer id, partition).
    if (b.baseSequence !== ((st.lastSeq + 1) | 0) && !(st.lastSeq === 0x7fffffff && b.baseSequence === 0)) return { kind: 'out-of-order' };
    return { kind: 'ok' };
  }

  private recordProducerBatch(producerId: number, epoch: number, baseSeq: number, lastOffsetDelta: number, baseOffset: number): void {
    let st = this.producers.get(producerId);
    if (!st || epoch !== st.epoch) {
      st = { epoch, lastSeq: -1, recent: [] };
      this.producers.set(producerId, st);
    }
    st.lastSeq = baseSeq + lastOffsetDelta;
    st.recent.push({ firstSeq: baseSeq, lastSeq: st.lastSeq, baseOffset });
    if (st.recent.length > 5) st.recent.shift();
  }

  /**
   * Appends checked batches (all of `set`, in order), assigning offsets; mutates the baseOffset fields of
   * `set`. Returns the offset of the first record. Durable per the fsync policy only after `sync()`.
   */
  append(set: Buffer, batches: readonly BatchInfo[]): number {
    if (this.active.size > 0 && this.active.size + set.length > this.config.segmentBytes) this.roll();
    const seg = this.active;
    const first = this.next;
    let next = this.next;
    let pendingIndex: [number, number][] | null = null;
    let since = this.bytesSinceIndex;
    for (const b of batches) {
      set.writeBigInt64BE(BigInt(next), b.position + BATCH.BASE_OFFSET);
      set.writeInt32BE(0, b.position + BATCH.LEADER_EPOCH);
      if (since >= this.config.indexIntervalBytes) {
        (pendingIndex ??= []).push([next - seg.base, seg.size + b.position]);
        since = 0;
      }
      since += b.size;
      next += b.lastOffsetDelta + 1;
    }
    try {
      let done = 0;
      while (done < set.length) done += fs.writeSync(seg.fd, set, done, set.length - done, seg.size + done);
    } catch (err) {
      // Never leave half a request on disk: the client retries the whole thing.
      try {
        fs.ftruncateSync(seg.fd, seg.size);
      } catch {
        /* the original error is what matters */
      }
      throw err;
    }
    let off = first;
    for (const b of batches) {
      if (b.producerId >= 0) this.recordProducerBatch(b.producerId, b.producerEpoch, b.baseSequence, b.lastOffsetDelta, off);
      off += b.lastOffsetDelta + 1;
    }
    if (pendingIndex) for (const [rel, pos] of pendingIndex) this.addIndexEntry(rel, pos);
    this.bytesSinceIndex = since;
    seg.size += set.length;
    seg.lastWriteMs = Date.now();
    this.next = next;
    this.dirty = true;
    return first;
  }

  /** Makes every append so far durable (fdatasync of the active segment). */
  async sync(): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    await fdatasync(this.active.fd);
  }

  private loadIndex(seg: Segment): { buf: Buffer; count: number } {
    if (seg === this.active) return { buf: this.activeIndex, count: this.activeIndexCount };
    const hit = this.indexCache.get(seg.base);
    if (hit) {
      this.indexCache.delete(seg.base);
      this.indexCache.set(seg.base, hit);
      return hit;
    }
    let buf: Buffer;
    try {
      buf = fs.readFileSync(seg.indexPath);
    } catch {
      buf = Buffer.alloc(0);
    }
    const entry = { buf, count: Math.floor(buf.length / INDEX_ENTRY) };
    this.indexCache.set(seg.base, entry);
    if (this.indexCache.size > INDEX_CACHE) this.indexCache.delete(this.indexCache.keys().next().value as number);
    return entry;
  }

  private segmentFor(offset: number): number {
    let lo = 0;
    let hi = this.segments.length - 1;
    let found = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.segments[mid].base <= offset) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  /**
   * Reads whole batches starting with the one containing `offset`, up to `maxBytes`. With `minOne` (the
   * default) the first batch is returned even when larger, as Kafka does for the first partition of a fetch
   * with data, so a large batch cannot stall a consumer; without it such a batch gives an empty result.
   * Null when offset is out of range.
   */
  read(offset: number, maxBytes: number, minOne = true): Buffer | null {
    if (offset < this.startOffset || offset > this.next) return null;
    if (offset === this.next) return Buffer.alloc(0);
    const header = Buffer.allocUnsafe(BATCH.HEADER_SIZE);
    for (let si = this.segmentFor(offset); si < this.segments.length; si++) {
      const seg = this.segments[si];
      const { buf, count } = this.loadIndex(seg);
      let pos = offset > seg.base ? indexLookup(buf, count, offset - seg.base) : 0;
      while (pos + BATCH.HEADER_SIZE <= seg.size) {
        fs.readSync(this.fdOf(seg), header, 0, BATCH.HEADER_SIZE, pos);
        const b = readBatchHeader(header, 0);
        if (b.baseOffset + b.lastOffsetDelta < offset) {
          pos += b.size;
          continue;
        }
        if (!minOne && b.size > maxBytes) return Buffer.alloc(0);
        const want = Math.min(seg.size - pos, Math.max(maxBytes, b.size));
        const out = Buffer.allocUnsafe(want);
        const got = fs.readSync(this.fdOf(seg), out, 0, want, pos);
        // Trim to whole batches.
        let end = 0;
        while (end + BATCH.LOG_OVERHEAD <= got) {
          const size = BATCH.LOG_OVERHEAD + out.readInt32BE(end + BATCH.LENGTH);
          if (end + size > got) break;
          end += size;
        }
        return out.subarray(0, end);
      }
    }
    return Buffer.alloc(0);
  }

  /** Offset of the first batch whose max timestamp is >= ts (ListOffsets by time), or nextOffset. */
  offsetForTimestamp(ts: number): number {
    const header = Buffer.allocUnsafe(BATCH.HEADER_SIZE);
    for (const seg of this.segments) {
      let pos = 0;
      while (pos + BATCH.HEADER_SIZE <= seg.size) {
        fs.readSync(this.fdOf(seg), header, 0, BATCH.HEADER_SIZE, pos);
        const b = readBatchHeader(header, 0);
        if (b.maxTimestamp >= ts) return Math.max(b.baseOffset, this.startOffset);
        pos += b.size;
      }
    }
    return this.next;
  }

  /**
   * Deletes whole old segments: those whose newest data is older than retentionMs, and the oldest ones
   * while the rest still hold at least retentionBytes. -1 disables either. When the active segment itself
   * has expired it is rolled first, so an idle topic's data still ages out. Returns segments deleted.
   */
  applyRetention(now: number, retentionMs: number, retentionBytes: number): number {
    if (retentionMs >= 0 && this.active.size > 0 && now - this.active.lastWriteMs > retentionMs) this.roll();
    let deleted = 0;
    let total = this.sizeBytes;
    while (this.segments.length > 1) {
      const seg = this.segments[0];
      const expired = retentionMs >= 0 && now - seg.lastWriteMs > retentionMs;
      const oversize = retentionBytes >= 0 && total - seg.size >= retentionBytes;
      if (!expired && !oversize) break;
      this.segments.shift();
      this.indexCache.delete(seg.base);
      this.closeFd(seg);
      fs.rmSync(seg.logPath, { force: true });
      fs.rmSync(seg.indexPath, { force: true });
      total -= seg.size;
      deleted++;
    }
    return deleted;
  }

  close(): void {
    for (const seg of this.segments) if (seg.fd >= 0) fs.closeSync(seg.fd);
    this.openClosed.length = 0;
    this.segments = [];
    if (this.activeIndexFd >= 0) fs.closeSync(this.activeIndexFd);
    this.activeIndexFd = -1;
  }
}

// The capture API: loads the eBPF counters (native addon), drains the ring buffer and yields decoded kernel records.
import { NettallyError, configError } from '../lib/errors';
import { silentLogger, type Logger } from '../lib/log';
import { loadNative, type NativeCapture } from '../native/index';
import { CAPTURE_DEFAULTS, CAPTURE_LIMITS, checkRingBufferBytes } from './capture-options';
import { u64 } from './layout-readers';
import { CONN_ENTRY as E, ConnFlag, LAYOUT, connEntryRecord, decodeBatch, decodeIfaces } from './records';
import type { ConnRecord, IfaceRecord, KernelRecord } from './records';

export type { ConnRecord, IfaceRecord, KernelRecord, ListenRecord, FlushReason } from './records';
export { KernelKind, Direction } from './records';

export interface CaptureOptions {
  /** A connection with unflushed bytes older than this gets a CONN_SAMPLE (kernel on its next event, else the sweep). Default: CAPTURE_DEFAULTS. */
  flushIntervalMs?: number;
  /** A connection with more unflushed bytes than this gets a CONN_SAMPLE on its next event. Default: CAPTURE_DEFAULTS. */
  flushThresholdBytes?: number;
  /** Ring buffer size in bytes (power of two, ≥ 4096 and a multiple of the page size). Default: CAPTURE_DEFAULTS. */
  ringBufferBytes?: number;
  /** bpffs directory for pinned maps (e.g. /sys/fs/bpf/nettally): reused when present, so counters continue across restarts. */
  pinDir?: string;
  /** How often IFACE records (per netns+ifindex wire counters) are emitted. 0 disables. Default: CAPTURE_DEFAULTS. */
  ifaceIntervalMs?: number;
  /** Benchmark only: one ring-buffer record per send/recv syscall. Default false. */
  naive?: boolean;
  /** Benchmark only: the send/recv programs are attached but return at once (the cost of the tracepoints alone). */
  hooksOnly?: boolean;
  /**
   * Backpressure: when this many records wait for the reader, the drain pauses (the kernel keeps counting; the ring
   * buffer may fill and drop records, never bytes) until the reader is down to a quarter. Default 100000.
   */
  maxQueuedRecords?: number;
  /**
   * Size of the kernel's connection map (open connections plus closed ones not yet forgotten). A full map is the one
   * way bytes go uncounted (stats conn_map_full), so it is sized for bursts while the reader lags. Default: CAPTURE_DEFAULTS.
   */
  maxConnections?: number;
}

/** Counters about the capture itself; snake_case like every record field. */
export interface KernelStats {
  /** Ring-buffer reservations that failed in the kernel (records lost; counters are not: the next flush carries the total). */
  ringbuf_drops: number;
  /** Connections not tracked because the connection map was full. */
  conn_map_full: number;
  /** Interface counters not tracked because the iface map was full. */
  iface_map_full: number;
  /** Records yielded so far (ring buffer + sweep + iface). */
  records: number;
  /** Batches handed over by the drain thread. */
  batches: number;
  /** Records produced by the user-space sweep (idle flushes, close records the kernel could not reserve). */
  sweep_records: number;
  /** Connections currently in the kernel's map (open, plus closed but not yet forgotten). */
  tracked_conns: number;
}

export interface Capture {
  /** Decoded batches in ring-buffer order (sweep and iface batches interleaved). Ends after close(). Iterate once. */
  records(): AsyncIterable<KernelRecord[]>;
  stats(): KernelStats;
  /** Every tracked connection's current cumulative counters (flush_reason 'snapshot'; kind CONN_CLOSE for closed ones). */
  snapshot(): ConnRecord[];
  /**
   * The same in chunks (≤ ~1,024 records each), read from the kernel as they are taken: the producer ships a large map
   * (up to --max-connections, 1M) without holding every record at once (~0.5 KB each).
   */
  snapshotChunks(): Iterable<ConnRecord[]>;
  /** Deletes connections from the kernel map once their close record is durable: pass close records' cookies only. Unknown cookies are ignored. */
  forget(cookies: readonly number[]): void;
  /** Stops draining, detaches programs, releases maps (pinned maps stay pinned). Idempotent. */
  close(): Promise<void>;
  /** The kernel programs' names and ids (benchmarks, bpftool); optional so other Capture sources need not have it. */
  programs?(): { name: string; id: number }[];
}

/** The periodic refresh waits at least this many times as long as the last one took: ≤ ~1% of a CPU. */
const REFRESH_CPU_FACTOR = 100;

function checkInt(name: string, v: number | undefined, min: number, max: number): void {
  if (v === undefined) return;
  if (!Number.isInteger(v) || v < min || v > max) throw configError(`capture option ${name}`, `must be a whole number in [${min}, ${max}], got ${v}`);
}

/** Validates options (naming the bad one) and applies defaults. */
export function resolveCaptureOptions(o: CaptureOptions): Required<Omit<CaptureOptions, 'pinDir'>> & { pinDir?: string; maxConnections: number } {
  for (const k of Object.keys(CAPTURE_LIMITS) as (keyof typeof CAPTURE_LIMITS)[]) checkInt(k, o[k], CAPTURE_LIMITS[k].min, CAPTURE_LIMITS[k].max);
  checkInt('maxQueuedRecords', o.maxQueuedRecords, 1, 100_000_000);
  const rb = o.ringBufferBytes ?? CAPTURE_DEFAULTS.ringBufferBytes;
  checkRingBufferBytes('capture option ringBufferBytes', rb);
  if (o.pinDir !== undefined && !o.pinDir.startsWith('/')) throw configError('capture option pinDir', `must be an absolute path on bpffs (e.g. /sys/fs/bpf/nettally), got ${o.pinDir}`);
  return {
    flushIntervalMs: o.flushIntervalMs ?? CAPTURE_DEFAULTS.flushIntervalMs,
    flushThresholdBytes: o.flushThresholdBytes ?? CAPTURE_DEFAULTS.flushThresholdBytes,
    ringBufferBytes: rb,
    ifaceIntervalMs: o.ifaceIntervalMs ?? CAPTURE_DEFAULTS.ifaceIntervalMs,
    naive: o.naive ?? false,
    hooksOnly: o.hooksOnly ?? false,
    maxQueuedRecords: o.maxQueuedRecords ?? 100_000,
    pinDir: o.pinDir,
    maxConnections: o.maxConnections ?? CAPTURE_DEFAULTS.maxConnections,
  };
}

/** CLOCK_BOOTTIME ns now (the clock of every ts_ns). */
export function bootTimeNs(): number {
  return Number(loadNative().clocks()[0]);
}

let offset: { ns: bigint; at: number } | undefined;

/** Unix-epoch ns of a kernel ts_ns (CLOCK_BOOTTIME), as a bigint (exact; a number cannot hold it). */
export function unixNsFromBootNs(tsNs: number): bigint {
  // the realtime-boottime offset only moves when the wall clock is set or slewed: re-read it once a second
  const now = Date.now();
  if (!offset || now - offset.at > 1000 || now < offset.at) {
    const [boot, real] = loadNative().clocks();
    offset = { ns: real - boot, at: now };
  }
  return offset.ns + BigInt(Math.round(tsNs));
}

function nativeError(e: unknown): unknown {
  if (!(e instanceof Error)) return e;
  const code = (e as Error & { code?: unknown }).code;
  if (code === 'PRIVILEGES' || code === 'KERNEL_UNSUPPORTED') return new NettallyError(code, e.message, { cause: e });
  if (code === 'CONFIG_INVALID') return new NettallyError('CONFIG_INVALID', e.message, { cause: e });
  return e;
}

/** Loads and attaches the kernel programs and starts draining. Rejects with PRIVILEGES / KERNEL_UNSUPPORTED / CONFIG_INVALID. */
export async function openCapture(options: CaptureOptions = {}, logger: Logger = silentLogger): Promise<Capture> {
  const opts = resolveCaptureOptions(options);
  const log = logger.child({ component: 'capture' });
  const addon = loadNative();
  const layout = addon.layout();
  for (const k of Object.keys(LAYOUT) as (keyof typeof LAYOUT)[]) {
    if (layout[k] !== LAYOUT[k]) throw new NettallyError('INTERNAL', `producer/records.ts and bpf/nettally.h disagree on ${k}: ${LAYOUT[k]} vs ${layout[k]} bytes; rebuild`);
  }
  return new KernelCapture(addon.Capture, opts, log);
}

type Resolved = ReturnType<typeof resolveCaptureOptions>;

/** Records per batch the sweep queues: about what one drain batch (256 KiB, native/addon.cc) carries. */
const SWEEP_BATCH = 2048;
/**
 * Connection map values read per batch syscall (192 B each: a 192 KiB buffer, reused). The map is walked in such
 * chunks and only the entries the sweep ships are decoded into records: reading the whole map at once cost
 * 2 × 192 MiB of copies plus a decoded object per entry at 1M closed-unforgotten connections.
 */
const CONN_CHUNK = 1024;

class KernelCapture implements Capture {
  private readonly native: NativeCapture;
  private readonly queue: KernelRecord[][] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  private closing: Promise<void> | undefined;
  private resolveClosed!: () => void;
  private readonly closed: Promise<void>;
  private readonly counters = { records: 0, batches: 0, sweep_records: 0, tracked_conns: 0 };
  private decodeError: unknown;
  private readonly timers: NodeJS.Timeout[] = [];
  /**
   * Per open connection: counters seen by the previous sweep, whether the sweep already emitted them, and the sweep
   * that last found it in the map (`gen`: entries a sweep did not find are dropped after it, without a set of every
   * cookie in the map).
   */
  private readonly seen = new Map<number, { tx: number; rx: number; emitted: boolean; gen: number }>();
  /** Closed connections whose CONN_CLOSE the sweep emitted (the kernel could not reserve it) → the sweep that last found it. */
  private readonly sweptClosed = new Map<number, number>();
  private sweepGen = 0;
  private chunkBuf: ArrayBuffer | undefined;
  private readonly lastIface = new Map<string, IfaceRecord>();
  /** Records queued for the reader; above maxQueuedRecords the drain pauses until the reader is down to a quarter. */
  private queued = 0;
  private paused = false;

  constructor(Native: new (o: import('../native/index').NativeCaptureOptions) => NativeCapture, private readonly opts: Resolved, private readonly log: Logger) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    try {
      this.native = new Native({
        flushIntervalNs: opts.flushIntervalMs * 1e6,
        flushThresholdBytes: opts.flushThresholdBytes,
        ringBufferBytes: opts.ringBufferBytes,
        maxConnections: opts.maxConnections,
        pinDir: opts.pinDir,
        naive: opts.naive,
        hooksOnly: opts.hooksOnly,
        onBatch: (buf) => this.onBatch(buf),
        onClosed: () => this.resolveClosed(),
      });
    } catch (e) {
      throw nativeError(e);
    }
    for (const w of this.native.warnings) log.warn(w);
    // connections and listeners that predate the capture: counted from here on, owned by the process holding them
    this.native.refresh();
    log.info({ ...opts }, 'kernel capture attached');
    this.refreshEveryMs = Math.max(1, Math.floor(opts.flushIntervalMs / 2));
    this.scheduleRefresh(this.refreshEveryMs);
    if (opts.ifaceIntervalMs > 0) this.timers.push(setInterval(() => this.guard(() => this.emitIfaces()), opts.ifaceIntervalMs));
  }

  /**
   * The kernel flushes TCP connections whose unflushed bytes are older than the interval when the refresh finds them
   * (the hot path only checks the threshold): a refresh twice per interval keeps that within ~1.5 intervals. Every
   * other one is followed by the sweep, which reads the map the refresh just brought up to date. The refresh walks
   * every open file of every process on a worker thread (~0.2 s at 100k open TCP sockets, bench/RESULTS.md), and
   * waits at least REFRESH_CPU_FACTOR times as long as the last one took before the next, so that it never takes
   * more than ~1% of a CPU: on such hosts interval flushes come later; bytes stay exact (every counter is read
   * again by the next refresh, snapshot and close).
   */
  private readonly refreshEveryMs: number;
  private refreshTimer: NodeJS.Timeout | undefined;
  private refreshTicks = 0;
  private refreshStretched = false;

  private scheduleRefresh(delayMs: number): void {
    this.refreshTimer = setTimeout(() => {
      const next = (ms: number): void => {
        if (this.closing) return;
        const wait = Math.max(this.refreshEveryMs, Math.ceil(ms * REFRESH_CPU_FACTOR));
        if ((wait > this.refreshEveryMs) !== this.refreshStretched) {
          this.refreshStretched = !this.refreshStretched;
          this.log.info({ refresh_ms: Math.round(ms), every_ms: wait }, this.refreshStretched ? 'the refresh is slow (many open files): running it less often than twice per flush interval' : 'the refresh runs twice per flush interval again');
        }
        this.scheduleRefresh(wait);
      };
      let run: Promise<number>;
      try {
        run = this.native.refreshAsync();
      } catch (e) {
        run = Promise.reject(e);
      }
      run.then(
        (ms) => {
          if (!this.closing && ++this.refreshTicks % 2 === 0) this.guard(() => this.sweep(false));
          next(ms);
        },
        (e: unknown) => {
          if (!this.closing) this.log.error({ err: e }, 'capture refresh failed');
          next(0);
        },
      );
    }, delayMs);
  }

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.log.error({ err: e }, 'capture sweep failed');
    }
  }

  private push(batch: KernelRecord[]): void {
    if (batch.length === 0 || this.ended) return;
    this.counters.records += batch.length;
    this.queue.push(batch);
    this.queued += batch.length;
    if (this.queued > this.opts.maxQueuedRecords && !this.paused) {
      this.paused = true;
      this.native.pause(true);
      this.log.warn({ queued: this.queued }, 'reader is behind: draining paused (the kernel keeps counting; records may be dropped, bytes are not)');
    }
    this.wake?.();
  }

  private onBatch(buf: ArrayBuffer): void {
    this.counters.batches++;
    try {
      const { records, naive } = decodeBatch(buf);
      this.counters.records += naive;
      this.push(records);
    } catch (e) {
      // a malformed batch means the header and the decoder disagree: surface it to the reader
      this.decodeError ??= e;
      this.wake?.();
    }
  }

  /**
   * User-space flush for what the kernel cannot flush itself: idle connections with unflushed bytes (no event
   * fires for them) and closed connections whose CONN_CLOSE could not be reserved. Counters are cumulative,
   * so a record here that duplicates a kernel one costs nothing.
   */
  private sweep(final: boolean): void {
    if (this.paused && !final) return; // nobody is reading; the next sweep after resuming covers it
    const now = bootTimeNs();
    const out: ConnRecord[] = [];
    // What the reader's queue has room for: after ring-buffer drops under churn the map can hold 100k closes the
    // kernel could not emit, and emitting them in one go held them all (and their wire records, Avro values) at once
    // (~160 MiB peak). The rest stay in the map, unshipped and not forgotten, for the next sweep.
    const room = final ? Infinity : Math.max(0, this.opts.maxQueuedRecords - this.queued);
    const gen = ++this.sweepGen;
    let tracked = 0;
    this.walkConns((dv, off) => {
      const flags = dv.getUint32(off + E.flags, true);
      if (!(flags & ConnFlag.ESTABLISHED)) return;
      tracked++;
      const c = u64(dv, off + E.cookie, 'cookie');
      if (flags & ConnFlag.CLOSED) {
        this.seen.delete(c);
        if (this.sweptClosed.has(c)) this.sweptClosed.set(c, gen);
        else if (!(flags & ConnFlag.CLOSE_EMITTED) && out.length < room) {
          this.sweptClosed.set(c, gen);
          const r = connEntryRecord(dv, off, flags);
          r.flush_reason = 'close';
          out.push(r);
        }
        return;
      }
      const tx = u64(dv, off + E.tx, 'tx_bytes');
      const rx = u64(dv, off + E.rx, 'rx_bytes');
      const dirty = tx !== u64(dv, off + E.flushedTx, 'flushed_tx') || rx !== u64(dv, off + E.flushedRx, 'flushed_rx');
      const prev = this.seen.get(c);
      if (prev) prev.gen = gen;
      const idle = prev !== undefined && prev.tx === tx && prev.rx === rx;
      let emitted: boolean;
      if (dirty && (idle || final) && !(prev?.emitted && idle)) {
        if (out.length >= room) return; // unchanged in `seen`: still idle and dirty at the next sweep
        const r = connEntryRecord(dv, off, flags);
        r.ts_ns = now;
        r.flush_reason = 'interval';
        out.push(r);
        emitted = true;
      } else if (!idle) emitted = false;
      else return;
      if (!prev) this.seen.set(c, { tx, rx, emitted, gen });
      else {
        prev.tx = tx;
        prev.rx = rx;
        prev.emitted = emitted;
      }
    });
    for (const [c, s] of this.seen) if (s.gen !== gen) this.seen.delete(c);
    for (const [c, g] of this.sweptClosed) if (g !== gen) this.sweptClosed.delete(c);
    this.counters.tracked_conns = tracked;
    this.counters.sweep_records += out.length;
    // In batches of a drain batch's size, so that an ingest round stays one round (it takes a queued batch whole).
    for (let i = 0; i < out.length; i += SWEEP_BATCH) this.push(out.slice(i, i + SWEEP_BATCH));
  }

  /** Calls `fn` with every connection map value (a DataView and the value's offset), CONN_CHUNK values at a time. */
  private walkConns(fn: (dv: DataView, off: number) => void): void {
    for (const chunk of this.walkConnChunks()) chunk(fn);
  }

  /** The map walk one batch lookup at a time: each step reads a chunk and yields a visitor of its values. */
  private *walkConnChunks(): Generator<(fn: (dv: DataView, off: number) => void) => void> {
    const cursor = new Float64Array(2);
    while (cursor[1] !== 2) {
      const buf = (this.chunkBuf ??= new ArrayBuffer(CONN_CHUNK * LAYOUT.conn));
      const n = this.native.connsChunk(buf, cursor);
      const dv = new DataView(buf);
      yield (fn) => {
        for (let i = 0; i < n; i++) fn(dv, i * LAYOUT.conn);
      };
    }
  }

  private emitIfaces(): void {
    const recs = decodeIfaces(this.native.ifaces(), bootTimeNs());
    const changed: IfaceRecord[] = [];
    for (const r of recs) {
      const key = `${r.netns}/${r.ifindex}`;
      const prev = this.lastIface.get(key);
      if (prev && prev.rx_packets === r.rx_packets && prev.tx_packets === r.tx_packets) continue;
      this.lastIface.set(key, r);
      changed.push(r);
    }
    this.push(changed);
  }

  async *iterate(): AsyncGenerator<KernelRecord[]> {
    while (true) {
      if (this.decodeError !== undefined) {
        const e = this.decodeError;
        this.decodeError = undefined;
        throw e;
      }
      const b = this.queue.shift();
      if (b) {
        this.queued -= b.length;
        if (this.paused && this.queued <= this.opts.maxQueuedRecords / 4) {
          this.paused = false;
          if (!this.ended) this.native.pause(false);
          this.log.info('reader caught up: draining resumed');
        }
        yield b;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }

  records(): AsyncIterable<KernelRecord[]> {
    return { [Symbol.asyncIterator]: () => this.iterate() };
  }

  private finalKernel: number[] | undefined;

  stats(): KernelStats {
    const s = this.finalKernel ?? this.native.stats();
    return {
      ringbuf_drops: s[0] ?? 0,
      conn_map_full: s[1] ?? 0,
      iface_map_full: s[2] ?? 0,
      ...this.counters,
    };
  }

  snapshot(): ConnRecord[] {
    const out: ConnRecord[] = [];
    for (const chunk of this.snapshotChunks()) for (const r of chunk) out.push(r);
    return out;
  }

  *snapshotChunks(): Generator<ConnRecord[]> {
    if (this.ended) throw new NettallyError('INTERNAL', 'snapshot() after close()');
    const now = bootTimeNs();
    this.native.refresh();
    // One native chunk per yield: a sweep between two yields may reuse the chunk buffer, never this walk's cursor.
    for (const chunk of this.walkConnChunks()) {
      const out: ConnRecord[] = [];
      chunk((dv, off) => {
        const flags = dv.getUint32(off + E.flags, true);
        if (!(flags & ConnFlag.ESTABLISHED)) return;
        const r = connEntryRecord(dv, off, flags);
        if (!(flags & ConnFlag.CLOSED)) r.ts_ns = now;
        out.push(r);
      });
      if (out.length > 0) yield out;
    }
  }

  programs(): { name: string; id: number }[] {
    return this.ended ? [] : this.native.programs();
  }

  forget(cookies: readonly number[]): void {
    if (this.ended || cookies.length === 0) return;
    this.native.forget(Float64Array.from(cookies));
    for (const c of cookies) this.sweptClosed.delete(c);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const t of this.timers) clearInterval(t);
      clearTimeout(this.refreshTimer);
      this.guard(() => {
        this.native.refresh();
        this.sweep(true);
      });
      if (this.opts.ifaceIntervalMs > 0) this.guard(() => this.emitIfaces());
      const final = this.stats();
      this.finalKernel = this.native.stats();
      this.native.close();
      await this.closed;
      this.ended = true;
      this.wake?.();
      this.log.info({ ...final }, 'kernel capture closed');
    })();
    return this.closing;
  }
}

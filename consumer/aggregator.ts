// Per-partition exact aggregation: dedupe by (host, epoch, seq), cumulative→delta per connection/interface,
// event-time tumbling windows (1 m + 1 h) with a watermark, and a JSON snapshot of all of it for crash recovery.
// Deterministic: the same records in the same order give the same windows, whatever the wall clock says.

/** A connection record (kernel kinds CONN_OPEN/CONN_SAMPLE/CONN_CLOSE), normalised by consumer/records.ts. */
/** What every record carries from the producer: identity for dedupe and connection keys, and event time. */
export interface RecordHeader {
  host_id: string;
  hostname: string;
  boot_id: string;
  epoch: number;
  seq: number;
  /** Event time, Unix epoch milliseconds (time_ns / 1e6, floored). */
  time_ms: number;
}

export interface ConnInput extends RecordHeader {
  kind: 'conn';
  event: 'open' | 'sample' | 'close';
  cookie: string;
  tx_bytes: number;
  rx_bytes: number;
  retransmits: number;
  netns: number;
  comm: string;
  protocol: number;
  direction: number;
  sport: number;
  dport: number;
  flush_reason: string;
}

export interface ListenInput extends RecordHeader {
  kind: 'listen';
  netns: number;
  port: number;
  protocol: number;
}

export interface IfaceInput extends RecordHeader {
  kind: 'iface';
  netns: number;
  ifindex: number;
  rx_bytes: number;
  rx_packets: number;
  tx_bytes: number;
  tx_packets: number;
}

export type AggInput = ConnInput | ListenInput | IfaceInput;

export interface AggregatorOptions {
  /** Kafka partition: part of every point's series identity (tag `partition`). */
  partition: number;
  windowMs: number;
  rollupMs: number;
  allowedLatenessMs: number;
  /** Event time after which a silent connection/interface/producer-epoch's state is dropped. */
  idleTimeoutMs: number;
  /** Event time a closed connection's state is kept (catches stragglers). */
  closeGraceMs: number;
  /** Seqs below the high-water mark remembered as gaps (out-of-order within a producer epoch). */
  dedupeWindow: number;
}

export const DEFAULT_AGG_OPTIONS: Omit<AggregatorOptions, 'partition'> = {
  windowMs: 60_000,
  rollupMs: 3_600_000,
  allowedLatenessMs: 120_000,
  idleTimeoutMs: 24 * 3_600_000,
  closeGraceMs: 600_000,
  dedupeWindow: 1024,
};

/** One InfluxDB point to write (tags and fields are the public contract; see consumer/README.md). */
export interface OutPoint {
  measurement: string;
  tags: Record<string, string>;
  fields: Record<string, number | boolean>;
  /** Window start, Unix epoch ms. */
  time_ms: number;
}

export type Outcome = 'counted' | 'duplicate' | 'too_late' | 'ignored';

// Same names as the InfluxDB contract in consumer/README.md.
export const TRAFFIC_TAGS = ['host_id', 'hostname', 'netns', 'protocol', 'direction', 'service_port', 'comm'] as const;
export const TRAFFIC_FIELDS = ['tx_bytes', 'rx_bytes', 'connections_opened', 'connections_closed', 'retransmits'] as const;
export const IFACE_TAGS = ['host_id', 'hostname', 'netns', 'ifindex'] as const;
export const IFACE_FIELDS = ['rx_bytes', 'rx_packets', 'tx_bytes', 'tx_packets'] as const;

interface Cell {
  tags: string[];
  v: number[];
  dirty: boolean;
}

/** Tumbling windows of one measurement: start ms → dimension key → totals. */
class WindowSet {
  readonly windows = new Map<number, Map<string, Cell>>();
  constructor(
    readonly measurement: string,
    readonly sizeMs: number,
    readonly tagNames: readonly string[],
    readonly fieldNames: readonly string[],
  ) {}

  start(timeMs: number): number {
    return Math.floor(timeMs / this.sizeMs) * this.sizeMs;
  }

  /** `key` is `tags.join('\u0000')`, computed once by the caller. */
  add(timeMs: number, tags: string[], key: string, deltas: number[]): void {
    const start = this.start(timeMs);
    let w = this.windows.get(start);
    if (!w) {
      w = new Map();
      this.windows.set(start, w);
    }
    let c = w.get(key);
    if (!c) {
      c = { tags, v: new Array<number>(deltas.length).fill(0), dirty: true };
      w.set(key, c);
    }
    for (let i = 0; i < deltas.length; i++) c.v[i] += deltas[i];
    c.dirty = true;
  }

  /** Points to write now: dirty cells of open windows, every cell of windows that became final. */
  pending(watermarkMs: number, partition: string, out: OutPoint[], finals: number[]): void {
    for (const [start, w] of this.windows) {
      const final = start + this.sizeMs <= watermarkMs;
      if (final) finals.push(start);
      for (const c of w.values()) {
        if (!final && !c.dirty) continue;
        const tags: Record<string, string> = { partition };
        for (let i = 0; i < this.tagNames.length; i++) tags[this.tagNames[i]] = c.tags[i];
        const fields: Record<string, number | boolean> = { final };
        for (let i = 0; i < this.fieldNames.length; i++) fields[this.fieldNames[i]] = c.v[i];
        out.push({ measurement: this.measurement, tags, fields, time_ms: start });
      }
    }
  }

  markWritten(finals: readonly number[]): void {
    for (const s of finals) this.windows.delete(s);
    for (const w of this.windows.values()) for (const c of w.values()) c.dirty = false;
  }

  /** Windows as [start, cells] pairs; the cells lazily (see PartitionAggregator.snapshotLazy). */
  toJSONLazy(): [number, Iterable<unknown>][] {
    return [...this.windows].map(([s, w]) => [s, lazyMap(w.values(), (c) => [c.tags, c.v, c.dirty ? 1 : 0])]);
  }

  load(data: unknown): void {
    this.windows.clear();
    for (const [s, cells] of data as [number, [string[], number[], number][]][]) {
      const w = new Map<string, Cell>();
      for (const [tags, v, dirty] of cells) w.set(tags.join('\u0000'), { tags, v, dirty: dirty === 1 });
      this.windows.set(s, w);
    }
  }
}

interface ConnState {
  tx: number;
  rx: number;
  retr: number;
  last_ms: number;
  /** Event time of the close record, -1 while open. */
  closed_ms: number;
  tags: string[];
  /** tags joined: the window cell key. */
  key: string;
}

interface IfaceState {
  epoch: number;
  v: number[];
  last_ms: number;
}

interface EpochMark {
  hwm: number;
  /** Seqs in (hwm - dedupeWindow, hwm) not yet seen. */
  gaps: number[];
  last_ms: number;
}

export interface AggCounters {
  records: number;
  duplicates: number;
  too_late: number;
  ignored: number;
}

const SNAPSHOT_VERSION = 1;

/** A one-shot iterable of `fn` over `it`: a snapshot's big collections are serialized without a full copy. */
function* lazyMap<T, U>(it: Iterable<T>, fn: (x: T) => U): Generator<U> {
  for (const x of it) yield fn(x);
}

/** Deep copy with every non-array iterable turned into an array (what JSON.stringify can take). */
function toArrays(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(toArrays);
  if (typeof v === 'object' && v !== null && Symbol.iterator in v) return Array.from(v as Iterable<unknown>, toArrays);
  if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toArrays(x)]));
  return v;
}

const PROTOCOLS: Record<number, string> = { 6: 'tcp', 17: 'udp' };
const DIRECTIONS: Record<number, string> = { 0: 'unknown', 1: 'outbound', 2: 'inbound' };

/** Measurement-name suffix of a window size: 60000 → "1m", 3600000 → "1h" (so different sizes never share series). */
export function sizeName(ms: number): string {
  return ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

function tagValue(s: string): string {
  // InfluxDB drops tags with empty values, which would merge series; keep them visible instead.
  return s === '' ? '-' : s;
}

/** Exact aggregation state of one Kafka partition. */
export class PartitionAggregator {
  readonly opts: AggregatorOptions;
  private readonly partitionTag: string;
  private readonly traffic1m: WindowSet;
  private readonly traffic1h: WindowSet;
  private readonly iface1m: WindowSet;
  private readonly iface1h: WindowSet;
  private conns = new Map<string, ConnState>();
  private ifaces = new Map<string, IfaceState>();
  private marks = new Map<string, EpochMark>();
  /** host \0 netns \0 protocol → port → event ms of the listen record. */
  private listeners = new Map<string, Map<number, number>>();
  private maxEventMs = Number.NEGATIVE_INFINITY;
  counters: AggCounters = { records: 0, duplicates: 0, too_late: 0, ignored: 0 };

  constructor(opts: Partial<AggregatorOptions> & { partition: number }) {
    this.opts = { ...DEFAULT_AGG_OPTIONS, ...opts };
    if (this.opts.rollupMs % this.opts.windowMs !== 0) throw new Error('rollup must be a multiple of the window');
    this.partitionTag = String(this.opts.partition);
    const n = sizeName;
    this.traffic1m = new WindowSet(`nettally_traffic_${n(this.opts.windowMs)}`, this.opts.windowMs, TRAFFIC_TAGS, TRAFFIC_FIELDS);
    this.traffic1h = new WindowSet(`nettally_traffic_${n(this.opts.rollupMs)}`, this.opts.rollupMs, TRAFFIC_TAGS, TRAFFIC_FIELDS);
    this.iface1m = new WindowSet(`nettally_iface_${n(this.opts.windowMs)}`, this.opts.windowMs, IFACE_TAGS, IFACE_FIELDS);
    this.iface1h = new WindowSet(`nettally_iface_${n(this.opts.rollupMs)}`, this.opts.rollupMs, IFACE_TAGS, IFACE_FIELDS);
  }

  /** Event-time watermark: windows ending at or before it are final. */
  get watermarkMs(): number {
    return this.maxEventMs - this.opts.allowedLatenessMs;
  }

  get maxEventTimeMs(): number {
    return this.maxEventMs;
  }

  /** Live state sizes, for the status line and memory bounds. */
  get sizes(): { connections: number; interfaces: number; epochs: number; windows: number } {
    return { connections: this.conns.size, interfaces: this.ifaces.size, epochs: this.marks.size, windows: this.traffic1m.windows.size + this.iface1m.windows.size };
  }

  private expired(lastMs: number): boolean {
    return lastMs < this.watermarkMs - this.opts.idleTimeoutMs;
  }

  /** Dedupe by (host_id, epoch, seq); true when the record is new. */
  private accept(r: AggInput): boolean {
    const key = `${r.host_id}\u0000${r.epoch}`;
    let m = this.marks.get(key);
    if (m && this.expired(m.last_ms)) m = undefined;
    if (!m) {
      this.marks.set(key, { hwm: r.seq, gaps: [], last_ms: r.time_ms });
      return true;
    }
    if (r.time_ms > m.last_ms) m.last_ms = r.time_ms;
    const W = this.opts.dedupeWindow;
    if (r.seq > m.hwm) {
      for (let s = Math.max(m.hwm + 1, r.seq - W + 1); s < r.seq; s++) m.gaps.push(s);
      m.hwm = r.seq;
      if (m.gaps.length > 0 && m.gaps[0] <= m.hwm - W) m.gaps = m.gaps.filter((s) => s > m!.hwm - W);
      return true;
    }
    const i = m.gaps.indexOf(r.seq);
    if (i < 0) return false;
    m.gaps.splice(i, 1);
    return true;
  }

  /** Window-start time a record's deltas go to: its own, or (too late) the oldest still-open window. */
  private attribution(timeMs: number): { at: number; late: boolean } {
    const wm = this.watermarkMs;
    if (Math.floor(timeMs / this.opts.windowMs) * this.opts.windowMs + this.opts.windowMs <= wm) return { at: wm, late: true };
    return { at: timeMs, late: false };
  }

  /** Applies one decoded record. */
  add(r: AggInput): Outcome {
    if (!this.accept(r)) {
      this.counters.duplicates++;
      return 'duplicate';
    }
    const { at, late } = this.attribution(r.time_ms);
    if (r.time_ms > this.maxEventMs) this.maxEventMs = r.time_ms;
    this.counters.records++;
    if (late) this.counters.too_late++;
    switch (r.kind) {
      case 'conn':
        this.addConn(r, at);
        break;
      case 'iface':
        this.addIface(r, at);
        break;
      case 'listen': {
        const key = `${r.host_id}\u0000${r.netns}\u0000${r.protocol}`;
        let ports = this.listeners.get(key);
        if (!ports) {
          ports = new Map();
          this.listeners.set(key, ports);
        }
        ports.set(r.port, Math.max(ports.get(r.port) ?? r.time_ms, r.time_ms));
        break;
      }
      default:
        this.counters.ignored++;
        return 'ignored';
    }
    return late ? 'too_late' : 'counted';
  }

  private servicePort(r: ConnInput): number {
    if (r.direction === 1) return r.dport;
    if (r.direction === 2) return r.sport;
    const ports = this.listeners.get(`${r.host_id}\u0000${r.netns}\u0000${r.protocol}`);
    if (ports?.has(r.sport)) return r.sport;
    if (ports?.has(r.dport)) return r.dport;
    // No listener known: the ephemeral side is (almost always) the higher port.
    return Math.min(r.sport, r.dport);
  }

  private addConn(r: ConnInput, at: number): void {
    const key = `${r.host_id}\u0000${r.boot_id}\u0000${r.cookie}`;
    let st = this.conns.get(key);
    if (st && (this.expired(st.last_ms) || (st.closed_ms >= 0 && st.closed_ms < this.watermarkMs - this.opts.closeGraceMs))) st = undefined;
    let opened = 0;
    if (!st) {
      st = {
        tx: 0,
        rx: 0,
        retr: 0,
        last_ms: r.time_ms,
        closed_ms: -1,
        key: '',
        tags: [
          r.host_id,
          tagValue(r.hostname),
          String(r.netns),
          PROTOCOLS[r.protocol] ?? String(r.protocol),
          DIRECTIONS[r.direction] ?? String(r.direction),
          String(this.servicePort(r)),
          tagValue(r.comm),
        ],
      };
      st.key = st.tags.join('\u0000');
      this.conns.set(key, st);
      // A connection the producer found already open at its start was opened before anyone watched.
      if (r.event !== 'sample' || r.flush_reason !== 'snapshot') opened = 1;
    }
    const dtx = r.tx_bytes > st.tx ? r.tx_bytes - st.tx : 0;
    const drx = r.rx_bytes > st.rx ? r.rx_bytes - st.rx : 0;
    const dre = r.retransmits > st.retr ? r.retransmits - st.retr : 0;
    st.tx += dtx;
    st.rx += drx;
    st.retr += dre;
    if (r.time_ms > st.last_ms) st.last_ms = r.time_ms;
    let closed = 0;
    if (r.event === 'close' && st.closed_ms < 0) {
      st.closed_ms = r.time_ms;
      closed = 1;
    }
    if (dtx === 0 && drx === 0 && dre === 0 && opened === 0 && closed === 0) return;
    const d = [dtx, drx, opened, closed, dre];
    this.traffic1m.add(at, st.tags, st.key, d);
    this.traffic1h.add(at, st.tags, st.key, d);
  }

  private addIface(r: IfaceInput, at: number): void {
    const key = `${r.host_id}\u0000${r.boot_id}\u0000${r.netns}\u0000${r.ifindex}`;
    const cur = [r.rx_bytes, r.rx_packets, r.tx_bytes, r.tx_packets];
    let st = this.ifaces.get(key);
    if (st && this.expired(st.last_ms)) st = undefined;
    const d = [0, 0, 0, 0];
    if (!st) {
      st = { epoch: r.epoch, v: [0, 0, 0, 0], last_ms: r.time_ms };
      this.ifaces.set(key, st);
    }
    // A newer producer epoch with lower counters: the kernel program restarted counting from zero.
    const reset = r.epoch > st.epoch && cur.some((x, i) => x < st!.v[i]);
    for (let i = 0; i < 4; i++) {
      if (reset) {
        d[i] = cur[i];
        st.v[i] = cur[i];
      } else if (cur[i] > st.v[i]) {
        d[i] = cur[i] - st.v[i];
        st.v[i] = cur[i];
      }
    }
    if (r.epoch > st.epoch) st.epoch = r.epoch;
    if (r.time_ms > st.last_ms) st.last_ms = r.time_ms;
    if (d.every((x) => x === 0)) return;
    const tags = [r.host_id, tagValue(r.hostname), String(r.netns), String(r.ifindex)];
    const tkey = tags.join('\u0000');
    this.iface1m.add(at, tags, tkey, d);
    this.iface1h.add(at, tags, tkey, d);
  }

  /**
   * Points that must be written before the state can be snapshotted, and a `commit` to call once they are
   * durably written (marks them clean, drops final windows and expired state). Nothing changes until then.
   */
  pending(): { points: OutPoint[]; commit: () => void } {
    const points: OutPoint[] = [];
    const wm = this.watermarkMs;
    const sets = [this.traffic1m, this.traffic1h, this.iface1m, this.iface1h];
    const finals = sets.map((s) => {
      const f: number[] = [];
      s.pending(wm, this.partitionTag, points, f);
      return f;
    });
    return {
      points,
      commit: () => {
        sets.forEach((s, i) => s.markWritten(finals[i]));
        this.sweep();
      },
    };
  }

  /** Frees state that is logically gone already (add() treats it as absent), so sweeping never changes results. */
  private sweep(): void {
    const wm = this.watermarkMs;
    for (const [k, c] of this.conns) {
      if (this.expired(c.last_ms) || (c.closed_ms >= 0 && c.closed_ms < wm - this.opts.closeGraceMs)) this.conns.delete(k);
    }
    for (const [k, s] of this.ifaces) if (this.expired(s.last_ms)) this.ifaces.delete(k);
    for (const [k, m] of this.marks) if (this.expired(m.last_ms)) this.marks.delete(k);
  }

  /** Everything needed to continue exactly where this state stands (JSON-safe). */
  snapshot(): Record<string, unknown> {
    return toArrays(this.snapshotLazy()) as Record<string, unknown>;
  }

  /**
   * snapshot() with the per-connection/-window collections as one-shot iterables instead of arrays, so a sliced
   * encoder (consumer/state-store.ts encodeSnapshot) serializes 100k connections without first copying them all in
   * one blocking step. Must be consumed before the next add()/pending commit (the consumer holds the partition lock).
   */
  snapshotLazy(): Record<string, unknown> {
    return {
      v: SNAPSHOT_VERSION,
      partition: this.opts.partition,
      window_ms: this.opts.windowMs,
      rollup_ms: this.opts.rollupMs,
      max_event_ms: Number.isFinite(this.maxEventMs) ? this.maxEventMs : null,
      counters: this.counters,
      windows: [this.traffic1m.toJSONLazy(), this.traffic1h.toJSONLazy(), this.iface1m.toJSONLazy(), this.iface1h.toJSONLazy()],
      conns: lazyMap(this.conns, ([k, c]) => [k, c.tx, c.rx, c.retr, c.last_ms, c.closed_ms, c.tags]),
      ifaces: lazyMap(this.ifaces, ([k, s]) => [k, s.epoch, s.v, s.last_ms]),
      marks: lazyMap(this.marks, ([k, m]) => [k, m.hwm, m.gaps, m.last_ms]),
      listeners: [...this.listeners].map(([k, p]) => [k, [...p]]),
    };
  }

  /** Restores a snapshot() taken with the same window sizes; throws if it does not fit. */
  restore(snap: Record<string, unknown>): void {
    if (snap.v !== SNAPSHOT_VERSION) throw new Error(`unsupported snapshot version ${String(snap.v)}`);
    if (snap.window_ms !== this.opts.windowMs || snap.rollup_ms !== this.opts.rollupMs) {
      throw new Error(`snapshot was taken with window ${String(snap.window_ms)}ms/${String(snap.rollup_ms)}ms, this consumer uses ${this.opts.windowMs}ms/${this.opts.rollupMs}ms`);
    }
    this.maxEventMs = snap.max_event_ms === null ? Number.NEGATIVE_INFINITY : (snap.max_event_ms as number);
    this.counters = { ...(snap.counters as AggCounters) };
    const w = snap.windows as unknown[];
    [this.traffic1m, this.traffic1h, this.iface1m, this.iface1h].forEach((s, i) => s.load(w[i]));
    this.conns = new Map(
      (snap.conns as [string, number, number, number, number, number, string[]][]).map(([k, tx, rx, retr, last_ms, closed_ms, tags]) => [
        k,
        { tx, rx, retr, last_ms, closed_ms, tags, key: tags.join('\u0000') },
      ]),
    );
    this.ifaces = new Map((snap.ifaces as [string, number, number[], number][]).map(([k, epoch, v, last_ms]) => [k, { epoch, v, last_ms }]));
    this.marks = new Map((snap.marks as [string, number, number[], number][]).map(([k, hwm, gaps, last_ms]) => [k, { hwm, gaps, last_ms }]));
    this.listeners = new Map((snap.listeners as [string, [number, number][]][]).map(([k, p]) => [k, new Map(p)]));
  }
}

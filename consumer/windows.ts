// Event-time tumbling windows of one measurement (start → tag set → totals) and the InfluxDB points they become:
// the part of the aggregation that knows the InfluxDB contract's names (consumer/README.md).
import { TrackedRows } from './agg-state';

/** One InfluxDB point to write (tags and fields are the public contract; see consumer/README.md). */
export interface OutPoint {
  measurement: string;
  tags: Record<string, string>;
  fields: Record<string, number | boolean>;
  /** Window start, Unix epoch ms. */
  time_ms: number;
}

// Same names as the InfluxDB contract in consumer/README.md.
export const TRAFFIC_TAGS = ['host_id', 'hostname', 'netns', 'protocol', 'direction', 'service_port', 'comm', 'workload', 'remote_class'] as const;
/** active_connections and peak_connections are computed by consumer/active.ts from two internal values per cell. */
export const TRAFFIC_FIELDS = ['tx_bytes', 'rx_bytes', 'connections_opened', 'connections_closed', 'retransmits', 'active_connections', 'peak_connections'] as const;
/** Internal per-cell values after the traffic fields (never written): see consumer/active.ts. */
export const TRAFFIC_INTERNAL = 2;
export const IFACE_TAGS = ['host_id', 'hostname', 'netns', 'ifindex', 'workload'] as const;
export const IFACE_FIELDS = ['rx_bytes', 'rx_packets', 'tx_bytes', 'tx_packets'] as const;

export interface Cell {
  tags: string[];
  v: number[];
  dirty: boolean;
  /**
   * Start of its window; NaN once the window was dropped (written final, or replaced by a restore), so a reference
   * kept elsewhere (a connection's cached cell, see cachedCell) is never used again. Never snapshotted.
   */
  start: number;
  /**
   * Changed since the state store last saved it (values or `dirty`): set wherever either changes, cleared once a save
   * holding it is stored, so a delta serializes only these cells (consumer/snapshot-chain.ts). Never snapshotted.
   */
  unsaved: boolean;
}

/** Tumbling windows of one measurement: start ms → dimension key → totals. */
export class WindowSet {
  readonly windows = new Map<number, Map<string, Cell>>();
  constructor(
    readonly measurement: string,
    readonly sizeMs: number,
    readonly tagNames: readonly string[],
    readonly fieldNames: readonly string[],
    /** Values per cell kept after the written fields (internal state, snapshotted, never written). */
    readonly internal = 0,
  ) {}

  start(timeMs: number): number {
    return Math.floor(timeMs / this.sizeMs) * this.sizeMs;
  }

  /** The cell of `key` (`tags.join('\u0000')`, computed once by the caller) in the window of `timeMs`, created empty. */
  cell(timeMs: number, tags: string[], key: string): Cell {
    const start = this.start(timeMs);
    let w = this.windows.get(start);
    if (!w) {
      w = new Map();
      this.windows.set(start, w);
    }
    let c = w.get(key);
    if (!c) {
      c = { tags, v: new Array<number>(this.fieldNames.length + this.internal).fill(0), dirty: true, start, unsaved: true };
      w.set(key, c);
    }
    return c;
  }

  /**
   * cell(), skipping both map lookups when `cached` (the cell this caller got last for the same key) is still the
   * cell of the window of `timeMs`: a connection's records mostly land in the window its previous record did.
   */
  cachedCell(timeMs: number, tags: string[], key: string, cached: Cell | null): Cell {
    if (cached !== null && cached.start === this.start(timeMs)) return cached;
    return this.cell(timeMs, tags, key);
  }

  /** Adds `deltas` to the first fields of the cell (the others keep their values). */
  add(timeMs: number, tags: string[], key: string, deltas: number[]): void {
    const c = this.cell(timeMs, tags, key);
    for (let i = 0; i < deltas.length; i++) c.v[i] += deltas[i];
    c.dirty = true;
    c.unsaved = true;
  }

  /**
   * Points to write now: every cell of windows that became final (written once, final=true, then dropped by
   * markWritten) and, with `preview`, the cells of open windows changed since their last write (final=false).
   * Cells put in `written` are the ones markWritten marks clean; cells not previewed stay dirty (and say so in the
   * snapshot), so a later preview or their final write still carries them.
   */
  pending(watermarkMs: number, partition: string, out: OutPoint[], finals: number[], preview: boolean, written: Cell[]): void {
    for (const [start, w] of this.windows) {
      const final = start + this.sizeMs <= watermarkMs;
      if (final) finals.push(start);
      else if (!preview) continue;
      for (const c of w.values()) {
        if (!final && !c.dirty) continue;
        if (!final) written.push(c);
        const tags: Record<string, string> = { partition };
        // a cell restored from an older snapshot has fewer tags (added since): it keeps the series it was written to
        for (let i = 0; i < this.tagNames.length && i < c.tags.length; i++) tags[this.tagNames[i]] = c.tags[i];
        const fields: Record<string, number | boolean> = { final };
        for (let i = 0; i < this.fieldNames.length; i++) fields[this.fieldNames[i]] = c.v[i];
        out.push({ measurement: this.measurement, tags, fields, time_ms: start });
      }
    }
  }

  /** After a durable write: final windows are dropped, previewed cells are clean until they change again. */
  markWritten(finals: readonly number[], written: readonly Cell[]): void {
    for (const s of finals) this.drop(s);
    for (const c of written) {
      c.dirty = false;
      c.unsaved = true; // its row says dirty 0 now
    }
  }

  /** Removes a window; its cells, wherever still referenced, no longer match any window (Cell.start). */
  private drop(start: number): void {
    const w = this.windows.get(start);
    if (!w) return;
    for (const c of w.values()) c.start = Number.NaN;
    this.windows.delete(start);
  }

  /** Windows as [start, cells] pairs; the cells lazily, tracked (see PartitionAggregator.snapshotLazy). */
  toJSONLazy(): [number, Iterable<unknown>][] {
    return [...this.windows].map(([s, w]) => [s, new TrackedRows(w, (_k, c) => [c.tags, c.v, c.dirty ? 1 : 0])]);
  }

  load(data: unknown): void {
    for (const s of [...this.windows.keys()]) this.drop(s);
    for (const [s, cells] of data as [number, [string[], number[], number][]][]) {
      const w = new Map<string, Cell>();
      // cells of an older snapshot have fewer values (fields added since): those start at 0
      const width = this.fieldNames.length + this.internal;
      for (const [tags, v, dirty] of cells) w.set(tags.join('\u0000'), { tags, v: v.length < width ? [...v, ...new Array<number>(width - v.length).fill(0)] : v, dirty: dirty === 1, start: s, unsaved: true });
      this.windows.set(s, w);
    }
  }
}

/** Adds one connection record's deltas to a traffic cell (TRAFFIC_FIELDS order), without an array per record. */
export function addTraffic(c: Cell, tx: number, rx: number, opened: number, closed: number, retransmits: number): void {
  const v = c.v;
  v[0] += tx;
  v[1] += rx;
  v[2] += opened;
  v[3] += closed;
  v[4] += retransmits;
  c.dirty = true;
  c.unsaved = true;
}

/** A one-shot iterable of `fn` over `it`: a snapshot's big collections are serialized without a full copy. */
export function* lazyMap<T, U>(it: Iterable<T>, fn: (x: T) => U): Generator<U> {
  for (const x of it) yield fn(x);
}

/** Measurement-name suffix of a window size: 60000 → "1m", 3600000 → "1h" (so different sizes never share series). */
export function sizeName(ms: number): string {
  return ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}


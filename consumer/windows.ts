// Event-time tumbling windows of one measurement (start → tag set → totals) and the InfluxDB points they become:
// the part of the aggregation that knows the InfluxDB contract's names (consumer/README.md).

/** One InfluxDB point to write (tags and fields are the public contract; see consumer/README.md). */
export interface OutPoint {
  measurement: string;
  tags: Record<string, string>;
  fields: Record<string, number | boolean>;
  /** Window start, Unix epoch ms. */
  time_ms: number;
}

// Same names as the InfluxDB contract in consumer/README.md.
export const TRAFFIC_TAGS = ['host_id', 'hostname', 'netns', 'protocol', 'direction', 'service_port', 'comm'] as const;
export const TRAFFIC_FIELDS = ['tx_bytes', 'rx_bytes', 'connections_opened', 'connections_closed', 'retransmits'] as const;
export const IFACE_TAGS = ['host_id', 'hostname', 'netns', 'ifindex'] as const;
export const IFACE_FIELDS = ['rx_bytes', 'rx_packets', 'tx_bytes', 'tx_packets'] as const;

export interface Cell {
  tags: string[];
  v: number[];
  dirty: boolean;
}

/** Tumbling windows of one measurement: start ms → dimension key → totals. */
export class WindowSet {
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
        for (let i = 0; i < this.tagNames.length; i++) tags[this.tagNames[i]] = c.tags[i];
        const fields: Record<string, number | boolean> = { final };
        for (let i = 0; i < this.fieldNames.length; i++) fields[this.fieldNames[i]] = c.v[i];
        out.push({ measurement: this.measurement, tags, fields, time_ms: start });
      }
    }
  }

  /** After a durable write: final windows are dropped, previewed cells are clean until they change again. */
  markWritten(finals: readonly number[], written: readonly Cell[]): void {
    for (const s of finals) this.windows.delete(s);
    for (const c of written) c.dirty = false;
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

/** A one-shot iterable of `fn` over `it`: a snapshot's big collections are serialized without a full copy. */
export function* lazyMap<T, U>(it: Iterable<T>, fn: (x: T) => U): Generator<U> {
  for (const x of it) yield fn(x);
}

/** Measurement-name suffix of a window size: 60000 → "1m", 3600000 → "1h" (so different sizes never share series). */
export function sizeName(ms: number): string {
  return ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}


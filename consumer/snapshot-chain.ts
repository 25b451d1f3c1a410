// Incremental snapshots (consumer/state-store.ts): a partition's state flattened into keyed rows, the delta between
// two such flattenings, and a full state rebuilt from a full snapshot plus its deltas in order.
//
// The aggregator's big collections (connections, interfaces, dedupe marks, host progress, window cells) are rows
// with a key; everything else (counters, watermark, active counts, listeners, which windows are open) is small and
// is written whole in every delta. A delta holds the rows that were added or changed (compared as their JSON text)
// and the keys of the rows removed since the link before it; a window no longer open drops all its cells.
import { createHash } from 'crypto';

/** Row collections of an aggregator snapshot (consumer/aggregator.ts snapshotLazy), each row's key at index 0. */
const KEYED = ['conns', 'ifaces', 'marks', 'hosts'] as const;
/** Window sets of `state.windows`: rows are cells `[tags, values, dirty]`, in collections named `w<set>@<start>`. */
const cellColl = (set: number, start: number): string => `w${set}@${start}`;

/** A state as rows: collection → key → the row's JSON text; `rest` is everything else (plain JSON values). */
export interface Flat {
  rest: Record<string, unknown>;
  rows: Map<string, Map<string, string>>;
  /** The key order of the state's own fields, so a full snapshot keeps the layout snapshot() writes. */
  order: string[];
}

function isIterable(v: unknown): v is Iterable<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as Iterable<unknown>)[Symbol.iterator] === 'function';
}

/**
 * Flattens a (lazy) snapshot state. `tick` is awaited every 1024 rows so 100k connections do not block the event
 * loop in one step. A state without the aggregator's collections (tests, older layouts) is all `rest`.
 */
export async function flatten(state: Record<string, unknown>, tick: () => Promise<void> = async () => undefined): Promise<Flat> {
  const rows = new Map<string, Map<string, string>>();
  const rest: Record<string, unknown> = {};
  let n = 0;
  const put = async (coll: string, key: string, row: unknown): Promise<void> => {
    let m = rows.get(coll);
    if (!m) rows.set(coll, (m = new Map()));
    m.set(key, JSON.stringify(row));
    if ((++n & 1023) === 0) await tick();
  };
  for (const [field, v] of Object.entries(state)) {
    if ((KEYED as readonly string[]).includes(field) && isIterable(v)) {
      rows.set(field, new Map());
      for (const row of v) await put(field, String((row as unknown[])[0]), row);
    } else if (field === 'windows' && Array.isArray(v)) {
      const starts: number[][] = [];
      for (let i = 0; i < v.length; i++) {
        starts.push([]);
        for (const [start, cells] of v[i] as [number, Iterable<[string[], ...unknown[]]>][]) {
          starts[i].push(start);
          rows.set(cellColl(i, start), new Map());
          for (const cell of cells) await put(cellColl(i, start), cell[0].join('\u0000'), cell);
        }
      }
      rest.windows = starts;
    } else rest[field] = isIterable(v) && !Array.isArray(v) ? [...v] : v;
  }
  return { rest, rows, order: Object.keys(state) };
}

/** The JSON text of the full state of `f` (the layout of PartitionAggregator.snapshot()). */
export function fullText(f: Flat): string {
  const out: string[] = [];
  for (const field of f.order) {
    let v: string;
    if ((KEYED as readonly string[]).includes(field) && f.rows.has(field)) v = `[${[...(f.rows.get(field) as Map<string, string>).values()].join(',')}]`;
    else if (field === 'windows' && Array.isArray(f.rest.windows)) {
      v = `[${(f.rest.windows as number[][]).map((starts, i) => `[${starts.map((s) => `[${s},[${[...(f.rows.get(cellColl(i, s)) ?? new Map<string, string>()).values()].join(',')}]]`).join(',')}]`).join(',')}]`;
    } else if (f.rest[field] === undefined) continue;
    else v = JSON.stringify(f.rest[field]);
    out.push(`${JSON.stringify(field)}:${v}`);
  }
  return `{${out.join(',')}}`;
}

/**
 * The JSON text of the delta from `prev` to `next`: `{rest, up: {coll: [[key, row]…]}, del: {coll: [key…]}}`.
 * Collections absent from `next` (windows that became final) are dropped by the reader from `rest.windows`, so their
 * rows are not listed one by one.
 */
export async function deltaText(prev: Flat, next: Flat, tick: () => Promise<void> = async () => undefined): Promise<string> {
  const up: string[] = [];
  const del: string[] = [];
  let n = 0;
  for (const [coll, rows] of next.rows) {
    const old = prev.rows.get(coll);
    const changed: string[] = [];
    for (const [k, json] of rows) {
      if (old?.get(k) !== json) changed.push(`[${JSON.stringify(k)},${json}]`);
      // 100k rows compared in one go would block other partitions' work for tens of ms
      if ((++n & 4095) === 0) await tick();
    }
    if (changed.length > 0) up.push(`${JSON.stringify(coll)}:[${changed.join(',')}]`);
    if (!old) continue;
    const gone: string[] = [];
    for (const k of old.keys()) if (!rows.has(k)) gone.push(JSON.stringify(k));
    if (gone.length > 0) del.push(`${JSON.stringify(coll)}:[${gone.join(',')}]`);
  }
  return `{"rest":${JSON.stringify(next.rest)},"order":${JSON.stringify(next.order)},"up":{${up.join(',')}},"del":{${del.join(',')}}}`;
}

export interface Delta {
  rest: Record<string, unknown>;
  order: string[];
  up: Record<string, [string, unknown][]>;
  del: Record<string, string[]>;
}

/** A parsed state as rows (the reader's side of flatten, on parsed JSON). */
interface Rows {
  rest: Record<string, unknown>;
  order: string[];
  rows: Map<string, Map<string, unknown>>;
}

function rowsOf(state: Record<string, unknown>): Rows {
  const rows = new Map<string, Map<string, unknown>>();
  const rest: Record<string, unknown> = {};
  for (const [field, v] of Object.entries(state)) {
    if ((KEYED as readonly string[]).includes(field) && Array.isArray(v)) rows.set(field, new Map(v.map((r: unknown[]) => [String(r[0]), r])));
    else if (field === 'windows' && Array.isArray(v)) {
      rest.windows = (v as [number, [string[], ...unknown[]][]][][]).map((set, i) => set.map(([start, cells]) => {
        rows.set(cellColl(i, start), new Map(cells.map((c) => [c[0].join('\u0000'), c])));
        return start;
      }));
    } else rest[field] = v;
  }
  return { rest, order: Object.keys(state), rows };
}

/**
 * The state a full snapshot's `state` plus `deltas` (oldest first) stand for, in the layout of snapshot(). Row order
 * within a collection may differ from the live state's (a changed row keeps its place): nothing depends on it.
 */
export function applyDeltas(full: Record<string, unknown>, deltas: readonly Delta[]): Record<string, unknown> {
  const s = rowsOf(full);
  for (const d of deltas) {
    s.rest = d.rest;
    s.order = d.order;
    for (const [coll, ups] of Object.entries(d.up)) {
      let m = s.rows.get(coll);
      if (!m) s.rows.set(coll, (m = new Map()));
      for (const [k, row] of ups) m.set(k, row);
    }
    for (const [coll, keys] of Object.entries(d.del)) for (const k of keys) s.rows.get(coll)?.delete(k);
    for (const f of KEYED) if (s.order.includes(f) && !s.rows.has(f)) s.rows.set(f, new Map());
    // windows no longer open (final and written) drop with all their cells
    const open = new Set(((s.rest.windows ?? []) as number[][]).flatMap((starts, i) => starts.map((st) => cellColl(i, st))));
    for (const coll of [...s.rows.keys()]) if (coll.startsWith('w') && !open.has(coll)) s.rows.delete(coll);
  }
  const out: Record<string, unknown> = {};
  for (const field of s.order) {
    if ((KEYED as readonly string[]).includes(field) && s.rows.has(field)) out[field] = [...(s.rows.get(field) as Map<string, unknown>).values()];
    else if (field === 'windows' && Array.isArray(s.rest.windows)) {
      out.windows = (s.rest.windows as number[][]).map((starts, i) => starts.map((st) => [st, [...(s.rows.get(cellColl(i, st)) ?? new Map<string, unknown>()).values()]]));
    } else if (field in s.rest) out[field] = s.rest[field];
  }
  return out;
}

/** Checksum of one link's stored bytes (its gzip'd body): named by the next link and verified on restore. */
export function linkSum(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex').slice(0, 32);
}

// Incremental snapshots (consumer/state-store.ts): a partition's state written as a full snapshot or as the delta
// since the link saved before it, and a full state rebuilt from a full snapshot plus its deltas in order.
//
// The aggregator's big collections (connections, interfaces, dedupe marks, host progress, window cells) are rows
// with a key; everything else (counters, watermark, active counts, listeners, which windows are open) is small and
// is written whole in every delta. A delta holds the rows that were added or changed and the keys of the rows removed
// since the link before it; a window no longer open drops all its cells.
//
// What a member keeps to diff against is small: connections and window cells (nearly all rows) mark their own
// changes (TrackedRows: `unsaved` flags, removed connections tracked by their map), so a delta serializes only the
// changed ones and keeps nothing per row; the small per-host collections (interfaces, dedupe marks, host progress)
// keep a 53-bit hash per row (SavedRows), not its text.
import { createHash } from 'crypto';
import { TrackedRows } from './agg-state';

/** Row collections of an aggregator snapshot (consumer/aggregator.ts snapshotLazy), each row's key at index 0. */
const KEYED = ['conns', 'ifaces', 'marks', 'hosts'] as const;
const isKeyed = (field: string): boolean => (KEYED as readonly string[]).includes(field);
/** Window sets of `state.windows`: rows are cells `[tags, values, dirty]`, in collections named `w<set>@<start>`. */
const cellColl = (set: number, start: number): string => `w${set}@${start}`;

/** Where a link's JSON text goes, piece by piece (the state store: a gzip stream). */
export interface TextSink {
  write(text: string): void;
}

/** Collects the text (tests, benchmarks). */
export class StringSink implements TextSink {
  private parts: string[] = [];
  write(text: string): void {
    this.parts.push(text);
  }
  text(): string {
    return this.parts.join('');
  }
}

/**
 * What a member keeps of the link it saved last, to diff the next state against: per untracked collection a hash of
 * each row's JSON text (~50 B per row instead of its ~250 B text), and per tracked collection the live map whose
 * flags say what changed since (a different map — a restored aggregator — cannot be diffed: the next save is full).
 */
export interface SavedRows {
  hashes: Map<string, Map<string, number>>;
  sources: Map<string, object>;
}

/** A written link: what to keep for the next delta, and `commit` to call once the link is stored (clears flags). */
export interface Link {
  saved: SavedRows;
  /** Rows serialized for this link (a delta: the changed ones and the untracked collections' rows). */
  rows: number;
  commit: () => void;
}

/**
 * 53-bit hash of a row's JSON text (two 32-bit multiplicative hashes over its UTF-16 units), the whole of what a member
 * keeps per untracked row. A changed row whose text collides with its previous text's hash would be left out of a
 * delta: with 53 bits that is ~1e-16 per changed row, below the rate of undetected memory errors.
 */
export function rowHash(text: string): number {
  let a = 0x811c9dc5;
  let b = 0x9e3779b9 ^ text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 13;
  }
  return (a >>> 0) * 0x200000 + ((b >>> 0) & 0x1fffff);
}

function isIterable(v: unknown): v is Iterable<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as Iterable<unknown>)[Symbol.iterator] === 'function';
}

/** A small field as JSON.stringify writes it in snapshot() (non-array iterables as arrays). */
const plain = (v: unknown): unknown => (isIterable(v) && !Array.isArray(v) ? [...v] : v);

type Tick = () => Promise<void>;
const noTick: Tick = async () => undefined;

/** The state's collections in field order, as the writers below walk them. */
type Part =
  | { kind: 'tracked'; field: string; rows: TrackedRows<{ unsaved: boolean }> }
  | { kind: 'rows'; field: string; coll: string; rows: Iterable<unknown[]>; keyOf: (row: unknown[]) => string }
  | { kind: 'windows'; field: string; sets: [number, Iterable<unknown[]>][][] }
  | { kind: 'value'; field: string; value: unknown };

function partsOf(state: Record<string, unknown>): Part[] {
  return Object.entries(state).map(([field, v]): Part => {
    if (isKeyed(field) && v instanceof TrackedRows) return { kind: 'tracked', field, rows: v as TrackedRows<{ unsaved: boolean }> };
    if (isKeyed(field) && isIterable(v)) return { kind: 'rows', field, coll: field, rows: v as Iterable<unknown[]>, keyOf: (r) => String(r[0]) };
    if (field === 'windows' && Array.isArray(v)) return { kind: 'windows', field, sets: v as [number, Iterable<unknown[]>][][] };
    return { kind: 'value', field, value: v };
  });
}

/**
 * The state with its one-shot iterables (the aggregator's lazy row generators) made arrays, so it can be written
 * twice — as a delta, then in full when the delta outgrew the chain's budget. TrackedRows walk their live map and
 * stay as they are; the rows copied are the small per-host collections (and cells of a state without tracking).
 */
export function replayable(state: Record<string, unknown>): Record<string, unknown> {
  const once = (v: unknown): unknown => (isIterable(v) && !Array.isArray(v) && !(v instanceof TrackedRows) ? [...v] : v);
  const out: Record<string, unknown> = {};
  for (const [field, v] of Object.entries(state)) {
    out[field] = field === 'windows' && Array.isArray(v) ? (v as [number, unknown][][]).map((set) => set.map(([start, cells]) => [start, once(cells)])) : once(v);
  }
  return out;
}

const cellKey = (cell: unknown[]): string => (cell[0] as string[]).join('\u0000');

/**
 * Writes the full state as JSON — exactly the text of JSON.stringify(snapshot()) — to `sink`, `tick` awaited every 1024
 * rows (100k connections must not block the event loop in one step). A state without the aggregator's collections
 * (tests, older layouts) is written whole.
 */
export async function writeFull(state: Record<string, unknown>, sink: TextSink, tick: Tick = noTick): Promise<Link> {
  const saved: SavedRows = { hashes: new Map(), sources: new Map() };
  const tracked: TrackedRows<{ unsaved: boolean }>[] = [];
  let n = 0;
  const rows = async (coll: string, it: Iterable<unknown[]>, keyOf: (r: unknown[]) => string): Promise<void> => {
    let hashes: Map<string, number> | undefined;
    if (it instanceof TrackedRows) {
      saved.sources.set(coll, it.map);
      tracked.push(it as TrackedRows<{ unsaved: boolean }>);
    } else saved.hashes.set(coll, (hashes = new Map()));
    sink.write('[');
    let i = 0;
    for (const row of it) {
      const text = JSON.stringify(row);
      sink.write(i++ === 0 ? text : `,${text}`);
      hashes?.set(keyOf(row), rowHash(text));
      if ((++n & 1023) === 0) await tick();
    }
    sink.write(']');
  };
  let first = true;
  for (const p of partsOf(state)) {
    const value = p.kind === 'value' ? plain(p.value) : undefined;
    if (p.kind === 'value' && (value === undefined || typeof value === 'function')) continue;
    sink.write(`${first ? '{' : ','}${JSON.stringify(p.field)}:`);
    first = false;
    if (p.kind === 'tracked') await rows(p.field, p.rows, (r) => String(r[0]));
    else if (p.kind === 'rows') await rows(p.coll, p.rows, p.keyOf);
    else if (p.kind === 'windows') {
      for (let i = 0; i < p.sets.length; i++) {
        sink.write(i === 0 ? '[[' : ',[');
        for (let j = 0; j < p.sets[i].length; j++) {
          const [start, cells] = p.sets[i][j];
          sink.write(`${j === 0 ? '' : ','}[${JSON.stringify(start)},`);
          await rows(cellColl(i, start), cells, cellKey);
          sink.write(']');
        }
        sink.write(']');
      }
      if (p.sets.length === 0) sink.write('[');
      sink.write(']');
    } else sink.write(JSON.stringify(value));
  }
  sink.write(first ? '{}' : '}');
  return { saved, rows: n, commit: () => tracked.forEach((t) => t.allSaved()) };
}

/**
 * Writes the delta from the link `prev` describes to `state` as JSON: `{up: {coll: [[key, row]…]}, del: {coll: [key…]},
 * rest, order}`. Tracked collections contribute their unsaved rows and removed keys only; the others are hashed row by
 * row and compared. Collections absent from `state` (windows that became final) are dropped by the reader from
 * `rest.windows`, so their rows are not listed one by one. Undefined (nothing written) when a tracked collection is
 * not the map `prev` saw: only a full snapshot can follow then.
 */
export async function writeDelta(prev: SavedRows, state: Record<string, unknown>, sink: TextSink, tick: Tick = noTick): Promise<Link | undefined> {
  const parts = partsOf(state);
  // the flags belong to the maps the previous link saw; a window opened since then is new (all its cells unsaved)
  const foreign = (coll: string, rows: unknown): boolean => rows instanceof TrackedRows && prev.sources.has(coll) ? prev.sources.get(coll) !== rows.map : false;
  if (parts.some((p) => p.kind === 'tracked' && prev.sources.get(p.field) !== p.rows.map)) return undefined;
  if (parts.some((p) => p.kind === 'windows' && p.sets.some((set, i) => set.some(([start, cells]) => foreign(cellColl(i, start), cells))))) return undefined;
  const saved: SavedRows = { hashes: new Map(), sources: new Map() };
  const rest: Record<string, unknown> = {};
  const del: string[] = [];
  const done: (() => void)[] = [];
  let n = 0;
  let firstColl = true;
  /** Starts collection `coll`'s list of changed rows at its first one. */
  const upWriter = (coll: string): ((key: string, text: string) => void) => {
    let open = false;
    return (key, text) => {
      sink.write(`${open ? ',' : `${firstColl ? '' : '],'}${JSON.stringify(coll)}:[`}[${JSON.stringify(key)},${text}]`);
      open = true;
      firstColl = false;
    };
  };
  const diff = async (coll: string, it: Iterable<unknown[]>, keyOf: (r: unknown[]) => string): Promise<void> => {
    const old = prev.hashes.get(coll);
    const h = new Map<string, number>();
    saved.hashes.set(coll, h);
    const up = upWriter(coll);
    for (const row of it) {
      const text = JSON.stringify(row);
      const key = keyOf(row);
      const hash = rowHash(text);
      h.set(key, hash);
      if (old?.get(key) !== hash) up(key, text);
      if ((++n & 1023) === 0) await tick();
    }
    if (!old) return;
    const gone: string[] = [];
    for (const k of old.keys()) if (!h.has(k)) gone.push(JSON.stringify(k));
    if (gone.length > 0) del.push(`${JSON.stringify(coll)}:[${gone.join(',')}]`);
  };
  /** A tracked collection: its unsaved rows (a flag test per row, no serializing) and the keys its map removed. */
  const changed = async (coll: string, rows: TrackedRows<{ unsaved: boolean }>): Promise<void> => {
    saved.sources.set(coll, rows.map);
    const up = upWriter(coll);
    const written: { unsaved: boolean }[] = [];
    let seen = 0;
    for (const [k, v] of rows.map) {
      if (v.unsaved) {
        up(k, JSON.stringify(rows.row(k, v)));
        written.push(v);
        n++;
      }
      if ((++seen & 65535) === 0) await tick();
    }
    const removed = [...(rows.removed ?? [])];
    if (removed.length > 0) del.push(`${JSON.stringify(coll)}:${JSON.stringify(removed)}`);
    done.push(() => {
      for (const v of written) v.unsaved = false;
      for (const k of removed) rows.removed?.delete(k);
    });
  };
  sink.write('{"up":{');
  for (const p of parts) {
    if (p.kind === 'tracked') await changed(p.field, p.rows);
    else if (p.kind === 'rows') await diff(p.coll, p.rows, p.keyOf);
    else if (p.kind === 'windows') {
      rest.windows = p.sets.map((set) => set.map(([start]) => start));
      for (let i = 0; i < p.sets.length; i++) {
        for (const [start, cells] of p.sets[i]) {
          if (cells instanceof TrackedRows) await changed(cellColl(i, start), cells as TrackedRows<{ unsaved: boolean }>);
          else await diff(cellColl(i, start), cells, cellKey);
        }
      }
    } else rest[p.field] = plain(p.value);
  }
  sink.write(`${firstColl ? '' : ']'}},"del":{${del.join(',')}},"rest":${JSON.stringify(rest)},"order":${JSON.stringify(parts.map((p) => p.field))}}`);
  return { saved, rows: n, commit: () => done.forEach((f) => f()) };
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

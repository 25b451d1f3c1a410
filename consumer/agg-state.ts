// The per-partition aggregation state's parts (consumer/aggregator.ts) and the helpers over its keys and tags.
import type { Cell } from './windows';

export interface ConnState {
  tx: number;
  rx: number;
  retr: number;
  /** start_ns of the counting these cumulatives belong to; null = unknown (restored from a version-1 snapshot). */
  start: number | null;
  last_ms: number;
  /** Event time of the close record, -1 while open. */
  closed_ms: number;
  /**
   * Window-cell tags; null while dormant: a connection silent for --idle-timeout keeps only its cumulatives (its
   * baseline), so a connection that comes back counts only new bytes, however long it was silent.
   */
  tags: string[] | null;
  /** tags joined: the window cell key ('' while dormant). */
  key: string;
  /**
   * remote_class of its remote address, classified once when the consumer first saw the connection (kept while
   * dormant and in snapshots, so a changed class map applies to new connections only); null = not yet (restored
   * from a snapshot before version 3: classified at its next record).
   */
  cls: string | null;
  /**
   * The group it counts in as an open connection (consumer/active.ts): its tags when first seen (the same array as
   * `tags` until it goes dormant); null once it no longer counts (closed, its host rebooted or was forgotten) or
   * never did (restored from a snapshot before version 3).
   */
  atags: string[] | null;
  /**
   * Derived, never snapshotted: the 1 m and 1 h traffic cells of `key` its deltas went to last (WindowSet.cachedCell),
   * so a record in the same windows adds without looking the cells up. null whenever `key` changes.
   */
  cell1m: Cell | null;
  cell1h: Cell | null;
  /**
   * Changed since the state store last saved it (consumer/snapshot-chain.ts): set wherever the aggregator changes a
   * connection, cleared once a save that holds it is stored. A delta serializes only these rows, so a save's CPU
   * follows what changed, not how many connections are live.
   */
  unsaved: boolean;
}

/** A connection going dormant: its tags, cell key and cached cells go (taken anew at its next record). */
export function dropGroup(c: ConnState): void {
  c.tags = null;
  c.key = '';
  c.cell1m = null;
  c.cell1h = null;
  c.unsaved = true;
}

export interface IfaceState {
  epoch: number;
  v: number[];
  last_ms: number;
}

export interface EpochMark {
  hwm: number;
  /** Seqs in (hwm - dedupeWindow, hwm) not yet seen. */
  gaps: number[];
  last_ms: number;
  /** boot_id of the epoch's records ('' until known, after restoring a version-1 snapshot). */
  boot: string;
}

/**
 * Event-time progress of one host: its state is judged against its own clock, never another host's — and per boot,
 * since a host can come back from a reboot with its clock days behind (before NTP).
 */
export interface HostState {
  /** boot_id of its latest record (arrival order: one host's records stay in order in one partition). */
  boot: string;
  /**
   * boot_id → newest (effective) event time of that boot's records: the clock its state is judged by. A boot that is not the latest and has been silent for
   * --idle-timeout of the host's progress is retired: its sockets and interfaces are gone, its state is dropped.
   * (Judged by the boot's own silence, so a single record naming another boot retires nothing.)
   */
  boots: Map<string, number>;
  /** The partition's newest event time when this host's last record arrived (how long the host has been silent). */
  seen_ms: number;
}

/** Deep copy with every non-array iterable turned into an array (what JSON.stringify can take). */
export function toArrays(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(toArrays);
  if (typeof v === 'object' && v !== null && Symbol.iterator in v) return Array.from(v as Iterable<unknown>, toArrays);
  if (typeof v === 'object' && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toArrays(x)]));
  return v;
}

export const PROTOCOLS: Record<number, string> = { 6: 'tcp', 17: 'udp' };
export const DIRECTIONS: Record<number, string> = { 0: 'unknown', 1: 'outbound', 2: 'inbound' };

/** Tag value of a record's workload: "" (a producer that did not resolve workloads, schema r1) is `unknown`. */
export function workloadTag(s: string): string {
  return s === '' ? 'unknown' : s;
}

export function tagValue(s: string): string {
  // InfluxDB drops tags with empty values, which would merge series; keep them visible instead.
  return s === '' ? '-' : s;
}

/** The host_id and boot_id parts of a `host \0 boot \0 …` state key. */
export function hostBootOf(key: string): [string, string] {
  const a = key.indexOf('\u0000');
  const b = key.indexOf('\u0000', a + 1);
  return [key.slice(0, a), key.slice(a + 1, b)];
}

/**
 * A Map keyed by `part \0 part [\0 part]` strings (the form snapshots and sweeps use, unchanged) that can also find an
 * entry from its parts without building that key: find() walks a nested index of the same entries (one small map per
 * part), which costs a few lookups by short or already-hashed strings instead of concatenating and hashing a ~100
 * character key per record (most of the aggregator's per-record cost before). The index is derived from the keys on
 * every set/delete/clear, so the Map as such stays the single truth: find(a, b, c) returns exactly get(`a\0b\0c`)
 * when it finds something (a key split at its first `depth - 1` separators joins back to itself); a miss means
 * "look up by key" (a part containing \0, from a forged record, is only found that way).
 */
export class PartsMap<V> extends Map<string, V> {
  private index = new Map<string, Map<string, unknown>>();
  // The last part is indexed as a number when it is the decimal text of a safe integer (String(n) === part: one text
  // per number, so this is still exact): a connection is found by its cookie without making a string of it. A
  // find() by such a part's text misses (and the caller looks up by key): pass the number.
  private depth: 2 | 3;
  /**
   * With removal tracking (the connections): keys deleted since the last saved snapshot, which a delta lists as
   * removed (TrackedRows); a key set again leaves it. Cleared by the save that records them.
   */
  readonly removed: Set<string> | undefined;

  constructor(depth: 2 | 3, entries?: Iterable<readonly [string, V]>, trackRemovals = false) {
    super();
    this.depth = depth;
    this.removed = trackRemovals ? new Set() : undefined;
    if (entries) for (const [k, v] of entries) this.set(k, v);
  }

  /** The index path of a key: its first part, the middle one (depth 3) and the rest (see lastKey). */
  private split(k: string): [string, string, string | number] | undefined {
    const a = k.indexOf('\u0000');
    if (a < 0) return undefined;
    if (this.depth === 2) return [k.slice(0, a), '', lastKey(k.slice(a + 1))];
    const b = k.indexOf('\u0000', a + 1);
    if (b < 0) return undefined;
    return [k.slice(0, a), k.slice(a + 1, b), lastKey(k.slice(b + 1))];
  }

  /** The innermost index map of parts `a`(, `b`), created with `create`. */
  private leaf(a: string, b: string, create: boolean): Map<string | number, V> | undefined {
    let m = this.index.get(a);
    if (m === undefined) {
      if (!create) return undefined;
      m = new Map();
      this.index.set(a, m);
    }
    if (this.depth === 2) return m as Map<string | number, V>;
    let l = m.get(b) as Map<string | number, V> | undefined;
    if (l === undefined && create) {
      l = new Map();
      m.set(b, l);
    }
    return l;
  }

  override set(k: string, v: V): this {
    super.set(k, v);
    this.removed?.delete(k);
    // (Map's constructor calls set before this class's fields exist: entries go through the constructor above instead)
    const p = this.split(k);
    if (p) this.leaf(p[0], p[1], true)!.set(p[2], v);
    return this;
  }

  override delete(k: string): boolean {
    if (this.removed !== undefined && super.has(k)) this.removed.add(k);
    const p = this.split(k);
    if (p) {
      const l = this.leaf(p[0], p[1], false);
      if (l) {
        l.delete(p[2]);
        if (l.size === 0) {
          // empty inner maps go too, so a forgotten host or boot leaves nothing behind
          if (this.depth === 2) this.index.delete(p[0]);
          else {
            const m = this.index.get(p[0])!;
            m.delete(p[1]);
            if (m.size === 0) this.index.delete(p[0]);
          }
        }
      }
    }
    return super.delete(k);
  }

  override clear(): void {
    if (this.removed !== undefined) for (const k of super.keys()) this.removed.add(k);
    this.index.clear();
    super.clear();
  }

  /**
   * Depth 3: each (first part, middle part) with its entries by last part — what a sweep walks to judge a host's and a
   * boot's state once per group instead of splitting every key. Visits every entry whose key has both separators (the
   * aggregator's keys always do). Deleting while walking is not allowed: collect, then delete.
   */
  forEachGroup(fn: (a: string, b: string, entries: ReadonlyMap<string | number, V>) => void): void {
    for (const [a, m] of this.index) for (const [b, l] of m) fn(a, b, l as Map<string | number, V>);
  }

  /** Depth 3: the entries of first part `a`, by middle part then last part (forEachGroup for one `a`). */
  groupsOf(a: string): ReadonlyMap<string, ReadonlyMap<string | number, V>> | undefined {
    return this.index.get(a) as Map<string, Map<string | number, V>> | undefined;
  }

  /**
   * Deletes, through delete() (so removal tracking lists them), every entry whose first part is `a` — and at depth 3
   * whose middle part passes `which`: a host forgotten or a boot retired costs that host's entries, not a scan of the
   * whole map. Keys are rebuilt from their index path, which joins back to exactly the key (see lastKey). Entries of
   * a key whose first part contains \0 are filed under a shorter `a` and not reached: the caller scans for those.
   */
  deleteGroups(a: string, which?: (b: string) => boolean): void {
    const m = this.index.get(a);
    if (m === undefined) return;
    const keys: string[] = [];
    if (this.depth === 2) for (const last of m.keys()) keys.push(`${a}\u0000${last}`);
    else {
      for (const [b, l] of m) {
        if (which !== undefined && !which(b)) continue;
        for (const last of (l as Map<string | number, V>).keys()) keys.push(`${a}\u0000${b}\u0000${last}`);
      }
    }
    for (const k of keys) this.delete(k);
  }

  /** get(`a \0 last`) of a depth-2 map, or undefined when the index does not have it (then look up by key). */
  find2(a: string, last: string | number): V | undefined {
    return (this.index.get(a) as Map<string | number, V> | undefined)?.get(last);
  }

  /** get(`a \0 b \0 last`) of a depth-3 map, or undefined when the index does not have it (then look up by key). */
  find3(a: string, b: string, last: string | number): V | undefined {
    return (this.index.get(a)?.get(b) as Map<string | number, V> | undefined)?.get(last);
  }
}

/**
 * The rows of a map whose values mark their own changes (`unsaved`): iterated, it is the plain row list a full
 * snapshot holds; the state store's delta walks `map` instead and serializes only the unsaved rows
 * (consumer/snapshot-chain.ts). Rows removed one by one must be tracked by the map (a PartsMap with trackRemovals:
 * the connections); a plain Map is for values never removed one by one (a window's cells go with their window).
 */
export class TrackedRows<V extends { unsaved: boolean }> implements Iterable<unknown[]> {
  readonly removed: Set<string> | undefined;
  constructor(readonly map: Map<string, V>, readonly row: (k: string, v: V) => unknown[]) {
    this.removed = map instanceof PartsMap ? (map as PartsMap<V>).removed : undefined;
    if (map instanceof PartsMap && this.removed === undefined) throw new Error('TrackedRows needs a PartsMap that tracks removals');
  }

  *[Symbol.iterator](): Generator<unknown[]> {
    for (const [k, v] of this.map) yield this.row(k, v);
  }

  /** Everything the map holds is saved (after a stored full snapshot). */
  allSaved(): void {
    for (const v of this.map.values()) v.unsaved = false;
    this.removed?.clear();
  }
}

/** A key's last part as PartsMap indexes it: the number whose decimal text it is, or the text. */
function lastKey(part: string): string | number {
  const n = Number(part);
  return Number.isSafeInteger(n) && String(n) === part ? n : part;
}

/**
 * One shared tags array and cell key per distinct tag set (issue 12): most connections of a host share a few
 * tag sets (host, service port, comm, workload, remote class), so a connection holds references to the shared pair
 * instead of its own array of ~9 strings and its own ~100-character key. Identity is never meaning: two equal tag
 * sets are the same group whether or not they are the same array (activeChange and snapshots compare by content
 * where it matters; `atags === tags` only shortens the snapshot row).
 */
export class TagSets {
  private sets = new Map<string, { tags: string[]; key: string }>();
  /** retain() walks the connections only when the table is larger than this. */
  private floor = 256;

  /**
   * The shared tags and key equal to `tags` (which becomes the shared one when the set is new). Shared, so never
   * mutated by anyone; not Object.freeze'd: frozen arrays made the per-record aggregation ~15% slower (bench:consumer).
   */
  intern(tags: string[]): { tags: string[]; key: string } {
    const key = tags.join('\u0000');
    let s = this.sets.get(key);
    if (s === undefined) {
      s = { tags, key };
      this.sets.set(key, s);
    }
    return s;
  }

  /**
   * Keeps only the sets some connection counts in now (its tags): without this a host's churn of service ports or
   * comms would grow the table for ever. Kept entries are the same objects (interned arrays keep their identity); a
   * set only an open-connection group (atags) still holds just stops being shared (equal content, new array later).
   * A hash lookup per connection by its already-hashed key (no joins), and only once the table has grown past twice
   * what the last pass kept (+256): amortized, not a walk of every connection at every flush.
   */
  retain(conns: Iterable<ConnState>): void {
    if (this.sets.size <= this.floor) return;
    const next = new Map<string, { tags: string[]; key: string }>();
    for (const c of conns) {
      if (c.tags === null || next.has(c.key)) continue;
      next.set(c.key, this.sets.get(c.key) ?? { tags: c.tags, key: c.key });
    }
    this.sets = next;
    this.floor = 2 * next.size + 256;
  }

  get size(): number {
    return this.sets.size;
  }
}

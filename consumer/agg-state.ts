// The per-partition aggregation state's parts (consumer/aggregator.ts) and the helpers over its keys and tags.

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

// The aggregator's options and what it reports (consumer/aggregator.ts): shared by the consumer's config, its
// command line and the finality rules, without importing the aggregation itself.

import { DEFAULT_REMOTE_CLASSES, type RemoteClasses } from './classes';

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
  /** A record whose event time is further ahead of its Kafka timestamp than this is placed at that timestamp. */
  maxAheadMs: number;
  /** A host silent for this long (partition event time) is forgotten with all its state. */
  forgetHostMs: number;
  /** Destination class map (--remote-classes): a connection's remote_class, taken when it is first seen. */
  remoteClasses: RemoteClasses;
}

export const DEFAULT_AGG_OPTIONS: Omit<AggregatorOptions, 'partition'> = {
  windowMs: 60_000,
  rollupMs: 3_600_000,
  allowedLatenessMs: 120_000,
  idleTimeoutMs: 24 * 3_600_000,
  closeGraceMs: 600_000,
  dedupeWindow: 1024,
  maxAheadMs: 300_000,
  forgetHostMs: 30 * 24 * 3_600_000,
  remoteClasses: DEFAULT_REMOTE_CLASSES,
};

export type Outcome = 'counted' | 'duplicate' | 'too_late' | 'ignored';

export interface AggCounters {
  records: number;
  duplicates: number;
  too_late: number;
  ignored: number;
  /** Records further ahead of their Kafka timestamp than maxAheadMs, placed at that timestamp. */
  clamped: number;
  /** Connection records whose start_ns shows that the kernel started counting again (new baseline). */
  counter_restarts: number;
  /** Connection records older than what is already counted (a reading delivered out of order): add nothing. */
  stale: number;
}

/** Something an operator should see (the aggregator is pure; the consumer logs these once per flush). */
export interface AggNotice {
  kind: 'clamped' | 'counter_restart';
  /** How many of this kind since the last takeNotices(); the fields below describe the first. */
  n: number;
  host_id: string;
  time_ms: number;
  ref_ms?: number;
  cookie?: string;
}

// A partition's state in the consumer (aggregator, offsets, gaps, dead letters) and its ownership fence: a state
// this member no longer owns throws Revoked and writes nothing more.
import type { KafkaMessage } from 'kafkajs';
import type { PartitionAggregator } from './aggregator';
import type { AggregatorOptions } from './agg-options';
import type { OutPoint } from './windows';
import type { GapMark } from './state-store';
import { offsetBefore, offsetLag } from './offsets';

export interface PartitionState {
  partition: number;
  agg: PartitionAggregator;
  /** Next data offset to process (everything before it is in agg); undefined until known. */
  next: string | undefined;
  /** `next` as of the last snapshot. */
  snapshotted: string | undefined;
  /** Retention gaps whose windows are not final yet: their points get `gap=true` (saved in the snapshot). */
  gaps: GapMark[];
  dlq: { message: KafkaMessage; reason: string; error: string }[];
  lastFlush: number;
  /** When changed open windows were last written as previews (wall ms; see RollupConsumer.flush). */
  lastPreview: number;
  high: string | undefined;
  /** Too-late records since the last flush (logged once per flush), with the first one as an example. */
  late: { n: number; host_id?: string; time_ms?: number };
  /** Serializes batch processing and timer flushes of this partition. */
  lock: Promise<void>;
  /** Assignment generation this state was created in (see revokeAll). */
  generation: number;
  /** Aborted when this member no longer owns this state (rebalance, new assignment): its writes stop, even mid-retry. */
  fence: AbortController;
  /** Windows (`measurement@start`) known to be final in InfluxDB: never written as non-final again (see flush). */
  finalWindows: BoundedSet;
  /** Windows whose finality in InfluxDB was already looked up by this state. */
  checkedWindows: BoundedSet;
  /** InfluxQL refused the finality lookup (logged once). */
  finalLookupFailed?: boolean;
}

/** Thrown when a partition's state lost ownership; its flush stops without writing anything more. */
export class Revoked extends Error {
  constructor(partition: number, why: string) {
    super(`partition ${partition} is no longer ours (${why}); stopped writing it`);
    this.name = 'Revoked';
  }
}

/** Insertion-ordered set that forgets its oldest entries past `max` (window keys: ~61 per hour per measurement). */
export class BoundedSet {
  private readonly s = new Set<string>();
  constructor(private readonly max = 8192) {}
  has(k: string): boolean {
    return this.s.has(k);
  }
  add(k: string): void {
    this.s.delete(k);
    this.s.add(k);
    if (this.s.size > this.max) this.s.delete(this.s.values().next().value as string);
  }
}

export function windowKey(p: Pick<OutPoint, 'measurement' | 'time_ms'>): string {
  return `${p.measurement}@${p.time_ms}`;
}

/**
 * Previews are for people watching live traffic. While a partition replays a backlog of older records (it is
 * behind its end, and its newest event time is further back than a window plus the allowed lateness), the windows
 * it replays become final within seconds, so previews would only multiply the points InfluxDB receives (each
 * window rewritten at every flush of the drain). A partition that is behind on recent records (a burst, a loaded
 * machine) keeps previewing: its windows become final no faster than real time. Before the first batch of a
 * restored state the end is unknown: its open windows wait for that batch (or for becoming final). The wall clock
 * decides only when previews are written, never a value.
 */
export function previewable(ps: PartitionState, agg: Pick<AggregatorOptions, 'windowMs' | 'allowedLatenessMs'>, nowMs: number): boolean {
  if (ps.high === undefined || ps.next === undefined) return false;
  if (!offsetBefore(ps.next, ps.high)) return true;
  return ps.agg.maxEventTimeMs >= nowMs - agg.windowMs - agg.allowedLatenessMs;
}

/** Messages behind the partitions' ends, summed (partitions whose end or position is not known yet count 0). */
export function lagOf(parts: Iterable<PartitionState>): number {
  let lag = 0;
  for (const ps of parts) if (ps.high !== undefined && ps.next !== undefined) lag += offsetLag(ps.high, ps.next);
  return lag;
}

// The finality guard's lookup: which windows InfluxDB already holds as final for a partition (see
// RollupConsumer.writePoints: a window known final is never written non-final again).
import type { Logger } from '../lib/log';
import { NettallyError } from '../lib/errors';
import type { AggregatorOptions } from './agg-options';
import { sizeName, type OutPoint } from './windows';
import { quoteIdent, type InfluxClient, type InfluxQLResult } from './influx';
import { windowKey, type PartitionState } from './partition-state';

export interface FinalityContext {
  influx: InfluxClient;
  aggregation: Pick<AggregatorOptions, 'windowMs' | 'rollupMs'>;
  log: Logger;
}

/** Marks the windows of non-final points that InfluxDB already holds as final for this partition (one query). */
export async function lookUpFinal(ctx: FinalityContext, ps: PartitionState, points: readonly OutPoint[], signal: AbortSignal): Promise<void> {
  const agg = ctx.aggregation;
  const byMeasurement = new Map<string, number[]>();
  for (const p of points) {
    const k = windowKey(p);
    if (p.fields.final === true || ps.checkedWindows.has(k) || ps.finalWindows.has(k)) continue;
    const times = byMeasurement.get(p.measurement) ?? [];
    if (!times.includes(p.time_ms)) times.push(p.time_ms);
    byMeasurement.set(p.measurement, times);
  }
  if (byMeasurement.size === 0) return;
  const sizeOf = (m: string): number => (m.endsWith(`_${sizeName(agg.windowMs)}`) ? agg.windowMs : agg.rollupMs);
  const statements = [...byMeasurement].map(([m, times]) => {
    const size = sizeOf(m);
    const from = Math.min(...times);
    const to = Math.max(...times) + size;
    // count per window (GROUP BY time buckets align with the windows: both start at multiples of the size)
    return `SELECT count("final") AS n FROM ${quoteIdent(m)} WHERE "partition" = '${ps.partition}' AND "final" = true AND time >= ${from}ms AND time < ${to}ms GROUP BY time(${size}ms) fill(none)`;
  });
  let results: InfluxQLResult[] = [];
  try {
    results = await ctx.influx.query(statements.join('; '), signal);
  } catch (e) {
    if (!(e instanceof NettallyError) || e.retriable) throw e;
    // InfluxQL refused (e.g. --influx-api v2 with no database mapping for --influx-db): the write path cannot read
    // finality back, so only the windows this state wrote final are guarded. Said once per partition state.
    if (!ps.finalLookupFailed) ctx.log.warn({ partition: ps.partition, err: e.message }, 'cannot read window finality back from InfluxDB; guarding only windows this member wrote final');
    ps.finalLookupFailed = true;
  }
  [...byMeasurement].forEach(([m, times], i) => {
    const found = new Set<number>();
    for (const s of results[i]?.series ?? []) for (const v of s.values) if (typeof v[1] === 'number' && v[1] > 0) found.add(v[0] as number);
    for (const t of times) {
      const k = windowKey({ measurement: m, time_ms: t });
      ps.checkedWindows.add(k);
      if (found.has(t)) ps.finalWindows.add(k);
    }
  });
}

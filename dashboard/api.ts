// The dashboard's JSON/CSV endpoints: request validation and the shapes the page draws. Every number comes from
// consumer/usage.ts (the queries behind `nettally usage`), so the page and the CLI cannot disagree.
import { configError } from '../lib/errors';
import type { InfluxClient } from '../consumer/influx';
import { quoteIdent } from '../consumer/influx';
import { BILLING_PER, billingCsv, billingQuery, flatten, groupTags, measurementName, parseGroupBy, runUsage, type GroupKey, type UsageQuery, type UsageRow } from '../consumer/usage';

/** The page shows bytes only: reading 2 of the 5 traffic fields makes a 24 h query over 300 hosts ~2.5× faster. */
const BYTES: readonly string[] = ['tx_bytes', 'rx_bytes'];
const MINUTE = 60_000;
const HOUR = 3_600_000;

/** Time ranges of the picker: the rollup read and the chart's bucket size (bounded point count per series). */
const RANGES: Record<string, { ms: number; windowMs: number; stepMs: number }> = {
  '15m': { ms: 15 * MINUTE, windowMs: MINUTE, stepMs: MINUTE },
  '1h': { ms: HOUR, windowMs: MINUTE, stepMs: MINUTE },
  '6h': { ms: 6 * HOUR, windowMs: MINUTE, stepMs: 5 * MINUTE },
  '24h': { ms: 24 * HOUR, windowMs: MINUTE, stepMs: 10 * MINUTE },
  '7d': { ms: 7 * 24 * HOUR, windowMs: HOUR, stepMs: HOUR },
};

/** Dimensions the page groups by: payload traffic (sockets) per workload, wire traffic per interface. */
const DASHBOARD_GROUPS: Record<UsageQuery['measurement'], readonly GroupKey[]> = {
  traffic: ['host', 'netns', 'workload', 'remote_class', 'port', 'process', 'protocol', 'direction'],
  iface: ['host', 'netns', 'workload', 'iface'],
};
const METRICS = ['total', 'tx', 'rx'] as const;
export type Metric = (typeof METRICS)[number];
/** Rows the hourly totals table sends at most; the billing CSV has all of them. */
const TOTALS_ROW_LIMIT = 2000;

/** Query-string parameters of one request, validated; errors are CONFIG_INVALID naming the parameter (→ HTTP 400). */
export class Params {
  private readonly used = new Set<string>();
  constructor(private readonly q: URLSearchParams) {}

  private one(name: string, fallback: string): string {
    this.used.add(name);
    const all = this.q.getAll(name);
    if (all.length > 1) throw configError(`parameter ${name}`, 'given more than once');
    return all[0] ?? fallback;
  }

  range(): { name: string; ms: number; windowMs: number; stepMs: number } {
    const name = this.one('range', '1h');
    const r = RANGES[name];
    if (!r) throw configError('parameter range', `expected one of ${Object.keys(RANGES).join(', ')}, got ${JSON.stringify(name)}`);
    return { name, ...r };
  }

  /** Payload bytes of sockets (`traffic`, default) or wire bytes of interfaces (`iface`). */
  measurement(): UsageQuery['measurement'] {
    const m = this.one('measurement', 'traffic');
    if (m !== 'traffic' && m !== 'iface') throw configError('parameter measurement', `expected traffic or iface, got ${JSON.stringify(m)}`);
    return m;
  }

  groupBy(measurement: UsageQuery['measurement'] = 'traffic'): GroupKey[] {
    const allowed = DASHBOARD_GROUPS[measurement];
    const raw = this.one('group', 'host').split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (raw.length === 0) throw configError('parameter group', `expected one or more of ${allowed.join(', ')}`);
    for (const g of raw) if (!(allowed as readonly string[]).includes(g)) throw configError('parameter group', `unknown group ${JSON.stringify(g)} for measurement ${measurement}; choose from ${allowed.join(', ')}`);
    return parseGroupBy('parameter group', raw, measurement);
  }

  metric(): Metric {
    const m = this.one('metric', 'total');
    if (!(METRICS as readonly string[]).includes(m)) throw configError('parameter metric', `expected one of ${METRICS.join(', ')}, got ${JSON.stringify(m)}`);
    return m as Metric;
  }

  per(): GroupKey {
    const p = this.one('per', 'host');
    if (!(BILLING_PER as readonly string[]).includes(p)) throw configError('parameter per', `expected one of ${BILLING_PER.join(', ')}, got ${JSON.stringify(p)}`);
    return p as GroupKey;
  }

  top(): number {
    const t = this.one('top', '8');
    if (!/^\d{1,2}$/.test(t) || Number(t) < 1 || Number(t) > 20) throw configError('parameter top', `expected a whole number from 1 to 20, got ${JSON.stringify(t)}`);
    return Number(t);
  }

  /** Rejects parameters the endpoint does not read: a typo must not silently fall back to a default. */
  done(): void {
    for (const k of this.q.keys()) if (!this.used.has(k)) throw configError(`parameter ${k}`, `not known here (known: ${[...this.used].join(', ') || 'none'})`);
  }
}

function floorTo(ms: number, step: number): number {
  return Math.floor(ms / step) * step;
}

function bytesOf(r: UsageRow, metric: Metric): number {
  const tx = r.fields.tx_bytes ?? 0;
  const rx = r.fields.rx_bytes ?? 0;
  return metric === 'tx' ? tx : metric === 'rx' ? rx : tx + rx;
}

/** A person's name for a group: hostname rather than host id, `tcp/443` for a port; the host id is added when two hosts share a name. */
function labeller(tags: readonly string[], rows: readonly UsageRow[]): (t: Record<string, string>) => string {
  const base = (t: Record<string, string>): string => {
    const parts: string[] = [];
    for (const k of tags) {
      if (k === 'host_id' && tags.includes('hostname')) continue;
      if (k === 'service_port' && tags.includes('protocol')) continue;
      if (k === 'protocol' && tags.includes('service_port')) parts.push(`${t.protocol}/${t.service_port}`);
      else if (k === 'netns') parts.push(`netns ${t.netns}`);
      else if (k === 'ifindex') parts.push(`if ${t.ifindex}`);
      else parts.push(t[k]);
    }
    return parts.join(' · ');
  };
  const hostsOf = new Map<string, Set<string>>();
  for (const r of rows) {
    const b = base(r.tags);
    if (!hostsOf.has(b)) hostsOf.set(b, new Set());
    hostsOf.get(b)!.add(r.tags.host_id ?? '');
  }
  return (t) => {
    const b = base(t);
    return (hostsOf.get(b)?.size ?? 0) > 1 ? `${b} (${(t.host_id ?? '').slice(0, 8)})` : b;
  };
}

function groupKey(tags: Record<string, string>, names: readonly string[]): string {
  return names.map((n) => tags[n] ?? '').join('\u0000');
}

export interface SeriesResponse {
  range: string;
  from_ms: number;
  to_ms: number;
  step_ms: number;
  measurement: string;
  metric: Metric;
  group_by: GroupKey[];
  /** Bucket starts, Unix seconds (uPlot's x values). */
  times: number[];
  /** Top groups by bytes in the range, biggest first; the rest summed into one "other" series. */
  series: { label: string; tags: Record<string, string>; total_bytes: number; values: number[] }[];
  other_groups: number;
  /** Per bucket: every point summed into it is final. */
  final: boolean[];
}

/** Stacked-chart data: bytes per bucket and group over the range, every bucket present (0 where nothing moved). */
export async function seriesData(client: InfluxClient, p: Params, now = Date.now()): Promise<SeriesResponse> {
  const range = p.range();
  const measurement = p.measurement();
  const groupBy = p.groupBy(measurement);
  const metric = p.metric();
  const top = p.top();
  p.done();
  const fromMs = floorTo(now - range.ms, range.stepMs);
  const q: UsageQuery = { measurement, fromMs, toMs: now, windowMs: range.windowMs, stepMs: range.stepMs, groupBy, fields: BYTES };
  const rows = await runUsage(client, q);
  const names = groupTags(q);
  const times: number[] = [];
  for (let t = fromMs; t < now; t += range.stepMs) times.push(t);
  const index = new Map(times.map((t, i) => [t, i]));
  const groups = new Map<string, { tags: Record<string, string>; total: number; values: number[] }>();
  const final = times.map(() => true);
  for (const r of rows) {
    const i = index.get(r.time_ms);
    if (i === undefined) continue;
    const k = groupKey(r.tags, names);
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { tags: r.tags, total: 0, values: times.map(() => 0) }));
    const b = bytesOf(r, metric);
    g.values[i] += b;
    g.total += b;
    if (!r.final) final[i] = false;
  }
  const sorted = [...groups.values()].sort((a, b) => b.total - a.total);
  const label = labeller(names, rows);
  const series = sorted.slice(0, top).map((g) => ({ label: label(g.tags), tags: g.tags, total_bytes: g.total, values: g.values }));
  const rest = sorted.slice(top);
  if (rest.length > 0) {
    const values = times.map((_, i) => rest.reduce((s, g) => s + g.values[i], 0));
    series.push({ label: `other (${rest.length} groups)`, tags: {}, total_bytes: rest.reduce((s, g) => s + g.total, 0), values });
  }
  return {
    range: range.name,
    from_ms: fromMs,
    to_ms: now,
    step_ms: range.stepMs,
    measurement: measurementName(q),
    metric,
    group_by: groupBy,
    times: times.map((t) => t / 1000),
    series,
    other_groups: rest.length,
    final,
  };
}

/** Hourly totals (the 1-hour rollup, whole hours from the one the range starts in): the rows `nettally usage --window 1h --format json` prints (bytes and final). */
export async function totalsData(client: InfluxClient, p: Params, now = Date.now()): Promise<Record<string, unknown>> {
  const range = p.range();
  const groupBy = p.groupBy();
  p.done();
  const q: UsageQuery = { measurement: 'traffic', fromMs: floorTo(now - range.ms, HOUR), toMs: now, windowMs: HOUR, groupBy, fields: BYTES };
  const rows = await runUsage(client, q);
  const hours = new Map<number, { window: string; tx_bytes: number; rx_bytes: number; total_bytes: number; groups: number; final: boolean }>();
  for (const r of rows) {
    let h = hours.get(r.time_ms);
    if (!h) hours.set(r.time_ms, (h = { window: new Date(r.time_ms).toISOString(), tx_bytes: 0, rx_bytes: 0, total_bytes: 0, groups: 0, final: true }));
    h.tx_bytes += r.fields.tx_bytes ?? 0;
    h.rx_bytes += r.fields.rx_bytes ?? 0;
    h.total_bytes += bytesOf(r, 'total');
    h.groups++;
    h.final &&= r.final;
  }
  // Newest hour first, then the biggest groups: what a person scans for.
  const ordered = [...rows].sort((a, b) => b.time_ms - a.time_ms || bytesOf(b, 'total') - bytesOf(a, 'total'));
  return {
    range: range.name,
    from_ms: q.fromMs,
    to_ms: q.toMs,
    measurement: measurementName(q),
    group_by: groupBy,
    tags: groupTags(q),
    hours: [...hours.values()].sort((a, b) => b.window.localeCompare(a.window)),
    rows: flatten(ordered.slice(0, TOTALS_ROW_LIMIT)),
    total_rows: rows.length,
  };
}

/** The billing export of `nettally usage --billing --per host|netns|workload|remote_class`, byte for byte, over the range's whole hours. */
export async function billingData(client: InfluxClient, p: Params, now = Date.now()): Promise<{ csv: string; filename: string }> {
  const range = p.range();
  const per = p.per();
  p.done();
  const q = billingQuery(floorTo(now - range.ms, HOUR), now, per);
  const csv = billingCsv(await runUsage(client, q), q);
  const stamp = (ms: number): string => new Date(ms).toISOString().slice(0, 16).replace(/[:]/g, '');
  return { csv, filename: `nettally-billing-${per}-${stamp(q.fromMs)}-${stamp(q.toMs)}.csv` };
}

/** The current minute (still filling) and the one before it, per group, biggest talkers first. */
export async function liveData(client: InfluxClient, p: Params, now = Date.now()): Promise<Record<string, unknown>> {
  const groupBy = p.groupBy();
  const top = p.top();
  p.done();
  const current = floorTo(now, MINUTE);
  const q: UsageQuery = { measurement: 'traffic', fromMs: current - MINUTE, toMs: now + 1, windowMs: MINUTE, groupBy, fields: BYTES };
  const rows = await runUsage(client, q);
  const names = groupTags(q);
  const label = labeller(names, rows);
  const groups = new Map<string, { label: string; tags: Record<string, string>; current: { tx_bytes: number; rx_bytes: number }; previous: { tx_bytes: number; rx_bytes: number } }>();
  for (const r of rows) {
    const k = groupKey(r.tags, names);
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { label: label(r.tags), tags: r.tags, current: { tx_bytes: 0, rx_bytes: 0 }, previous: { tx_bytes: 0, rx_bytes: 0 } }));
    const slot = r.time_ms === current ? g.current : g.previous;
    slot.tx_bytes += r.fields.tx_bytes ?? 0;
    slot.rx_bytes += r.fields.rx_bytes ?? 0;
  }
  const sum = (x: { tx_bytes: number; rx_bytes: number }): number => x.tx_bytes + x.rx_bytes;
  const all = [...groups.values()].sort((a, b) => sum(b.current) - sum(a.current) || sum(b.previous) - sum(a.previous));
  return { now_ms: now, current_window_ms: current, previous_window_ms: current - MINUTE, group_by: groupBy, groups: all.slice(0, top), total_groups: all.length };
}

/** What `nettally up` knows about its children (from their structured status events), when it runs the dashboard. */
export interface PipelineStatus {
  as_of_ms: number;
  producer: { ready: boolean; records_per_s?: number; kernel_drops?: number; map_full?: number; spool_bytes?: number; kafka_ok?: boolean; kafka_error?: string };
  consumer: { ready: boolean; events_per_s?: number; lag?: number; last_window?: string; influx?: string };
}

/** InfluxDB's view of the pipeline: newest window written and newest final window of each rollup, plus reachability. */
export async function healthData(client: InfluxClient, p: Params, pipeline: (() => PipelineStatus) | undefined, now = Date.now()): Promise<Record<string, unknown>> {
  p.done();
  const started = Date.now();
  const newest = async (windowMs: number, finalOnly: boolean): Promise<string | null> => {
    const m = quoteIdent(measurementName({ measurement: 'traffic', windowMs }));
    // Bounded look-back: last() without a time bound would read every shard.
    const lookBack = windowMs === HOUR ? 8 * 24 * HOUR : 24 * HOUR;
    const res = await client.query(`SELECT last("tx_bytes") FROM ${m} WHERE time >= ${now - lookBack}ms${finalOnly ? ' AND "final" = true' : ''}`);
    const t = res[0]?.series?.[0]?.values?.[0]?.[0];
    return typeof t === 'number' ? new Date(t).toISOString() : null;
  };
  let influx: Record<string, unknown>;
  try {
    const [w1m, f1m, w1h, f1h] = await Promise.all([newest(MINUTE, false), newest(MINUTE, true), newest(HOUR, false), newest(HOUR, true)]);
    influx = { ok: true, query_ms: Date.now() - started, last_window_1m: w1m, last_final_window_1m: f1m, last_window_1h: w1h, last_final_window_1h: f1h };
  } catch (e) {
    influx = { ok: false, error: (e as Error).message };
  }
  return { now_ms: now, influx, pipeline: pipeline ? pipeline() : null };
}

// History and billing queries over the rollups (InfluxQL, summed across the partition tag) and their output formats.
import { configError } from '../lib/errors';
import { parseDuration } from '../lib/args';
import { sizeName } from './windows';
import { escapeControls } from '../lib/text';
import { decodeTagText, quoteIdent, type InfluxClient, type InfluxQLResult } from './influx';

export type GroupKey = 'host' | 'netns' | 'port' | 'process' | 'protocol' | 'direction' | 'iface' | 'workload' | 'remote_class';

/** Tags behind each --group-by choice (host_id is the identity; hostname rides along for people). */
export const GROUP_BY_TAGS: Record<GroupKey, string[]> = {
  host: ['host_id', 'hostname'],
  netns: ['host_id', 'hostname', 'netns'],
  port: ['protocol', 'service_port'],
  process: ['host_id', 'hostname', 'comm'],
  protocol: ['protocol'],
  direction: ['direction'],
  iface: ['host_id', 'hostname', 'netns', 'ifindex'],
  // across hosts: a workload (a pod, a container, a named namespace) is what a tenant is billed for
  workload: ['workload'],
  remote_class: ['remote_class'],
};

/** Groups that apply to the interface measurement too (the others are traffic only). */
const IFACE_GROUPS: readonly GroupKey[] = ['host', 'netns', 'iface', 'workload'];

/**
 * active_connections / peak_connections are per window (open at its end / most at once): summed over groups and
 * partitions within one window, not over windows, so only reads whose step is the window size ask for them.
 */
export const TRAFFIC_SUM_FIELDS = ['tx_bytes', 'rx_bytes', 'connections_opened', 'connections_closed', 'retransmits', 'active_connections', 'peak_connections'];
export const IFACE_SUM_FIELDS = ['rx_bytes', 'rx_packets', 'tx_bytes', 'tx_packets'];

export interface UsageQuery {
  measurement: 'traffic' | 'iface';
  fromMs: number;
  toMs: number;
  windowMs: number;
  groupBy: GroupKey[];
  /** Sum consecutive windows into buckets of this size (a multiple of windowMs; default windowMs): charts over long ranges. */
  stepMs?: number;
  /** Sum only these fields (default: all of the measurement's): each field read costs InfluxDB a full scan of it. */
  fields?: readonly string[];
}

export interface UsageRow {
  /** Window start, Unix ms. */
  time_ms: number;
  tags: Record<string, string>;
  fields: Record<string, number>;
  /** Every point summed into this row is final (its window is past the consumer's watermark). */
  final: boolean;
  /** Some point summed into this row is marked `gap`: records of its partition were deleted by retention unread. */
  gap: boolean;
}

/** Time from `now`, `-1h`/`-30m` (relative), an ISO 8601 date, or Unix seconds/milliseconds. */
export function parseTime(setting: string, text: string, now = Date.now()): number {
  const t = text.trim();
  if (t === 'now') return now;
  if (t.startsWith('-')) {
    const d = parseDuration(t.slice(1));
    if (d === undefined) throw configError(setting, `expected now, -<duration> (e.g. -1h), an ISO date or Unix time, got ${JSON.stringify(text)}`);
    return now - d;
  }
  if (/^\d+$/.test(t)) return t.length <= 10 ? Number(t) * 1000 : Number(t);
  const ms = Date.parse(t);
  if (Number.isNaN(ms)) throw configError(setting, `expected now, -<duration> (e.g. -1h), an ISO date or Unix time, got ${JSON.stringify(text)}`);
  return ms;
}

/** Validated group-by choices for a measurement; the error names `setting` and the accepted values. */
export function parseGroupBy(setting: string, groups: readonly string[], measurement: UsageQuery['measurement']): GroupKey[] {
  for (const g of groups) {
    if (!(g in GROUP_BY_TAGS)) throw configError(setting, `unknown group ${JSON.stringify(g)}; choose from ${Object.keys(GROUP_BY_TAGS).join(', ')}`);
    const ifaceOnly = g === 'iface';
    const trafficOnly = !IFACE_GROUPS.includes(g as GroupKey);
    if ((measurement === 'traffic' && ifaceOnly) || (measurement === 'iface' && trafficOnly)) {
      throw configError(setting, `${g} does not apply to --measurement ${measurement}`);
    }
  }
  return groups as GroupKey[];
}

export function measurementName(q: Pick<UsageQuery, 'measurement' | 'windowMs'>): string {
  return `nettally_${q.measurement}_${sizeName(q.windowMs)}`;
}

export function groupTags(q: Pick<UsageQuery, 'groupBy'>): string[] {
  const out: string[] = [];
  for (const g of q.groupBy) for (const t of GROUP_BY_TAGS[g]) if (!out.includes(t)) out.push(t);
  return out;
}

/** The InfluxQL statements: sums per window and group, and which of those groups hold non-final or gap points. */
export function buildQueries(q: UsageQuery): { sums: string; open: string; gaps: string } {
  const perWindow = (f: string): boolean => f === 'active_connections' || f === 'peak_connections';
  const coarse = q.stepMs !== undefined && q.stepMs !== q.windowMs;
  // a count at each window's end does not add up over windows: buckets wider than the window leave them out
  const fields = q.fields ?? (q.measurement === 'traffic' ? TRAFFIC_SUM_FIELDS.filter((f) => !coarse || !perWindow(f)) : IFACE_SUM_FIELDS);
  const m = quoteIdent(measurementName(q));
  const where = `time >= ${q.fromMs}ms AND time < ${q.toMs}ms`;
  const group = [`time(${q.stepMs ?? q.windowMs}ms)`, ...groupTags(q).map(quoteIdent)].join(', ');
  const sel = fields.map((f) => `sum(${quoteIdent(f)}) AS ${quoteIdent(f)}`).join(', ');
  return {
    sums: `SELECT ${sel} FROM ${m} WHERE ${where} GROUP BY ${group} fill(none)`,
    open: `SELECT count(${quoteIdent(fields[0])}) AS n FROM ${m} WHERE ${where} AND "final" = false GROUP BY ${group} fill(none)`,
    gaps: `SELECT count(${quoteIdent(fields[0])}) AS n FROM ${m} WHERE ${where} AND "gap" = true GROUP BY ${group} fill(none)`,
  };
}

function rowKey(time: number, tags: Record<string, string>, names: readonly string[]): string {
  return [time, ...names.map((n) => tags[n] ?? '')].join('\u0000');
}

export async function runUsage(client: InfluxClient, q: UsageQuery): Promise<UsageRow[]> {
  const { sums, open, gaps } = buildQueries(q);
  const names = groupTags(q);
  const [sumRes, openRes, gapRes] = await Promise.all([client.query(sums), client.query(open), client.query(gaps)]);
  const keysOf = (res: InfluxQLResult[]): Set<string> => {
    const out = new Set<string>();
    for (const s of series(res)) for (const v of s.values) out.add(rowKey(v[0] as number, s.tags ?? {}, names));
    return out;
  };
  const notFinal = keysOf(openRes);
  const withGap = keysOf(gapRes);
  const rows: UsageRow[] = [];
  for (const s of series(sumRes)) {
    for (const v of s.values) {
      const fields: Record<string, number> = {};
      s.columns.forEach((c, i) => {
        if (i > 0) fields[c] = typeof v[i] === 'number' ? (v[i] as number) : 0;
      });
      const stored: Record<string, string> = {};
      for (const n of names) stored[n] = s.tags?.[n] ?? '';
      const time = v[0] as number;
      const key = rowKey(time, stored, names);
      const final = !notFinal.has(key);
      const gap = withGap.has(key);
      // back from the stored tag text to the names as the producers sent them (influx.ts encodeTagText)
      const tags = Object.fromEntries(names.map((n) => [n, decodeTagText(stored[n])]));
      rows.push({ time_ms: time, tags, fields, final, gap });
    }
  }
  rows.sort((a, b) => a.time_ms - b.time_ms || rowKey(0, a.tags, names).localeCompare(rowKey(0, b.tags, names)));
  return rows;
}

function series(res: InfluxQLResult[]): NonNullable<InfluxQLResult['series']> {
  return res.flatMap((r) => r.series ?? []);
}

/** Flat records for output: window start (ISO), group tags, summed fields, final, gap. */
export function flatten(rows: readonly UsageRow[], extra?: (r: UsageRow) => Record<string, number>): Record<string, string | number | boolean>[] {
  return rows.map((r) => ({ window: new Date(r.time_ms).toISOString(), ...r.tags, ...r.fields, ...(extra ? extra(r) : {}), final: r.final, gap: r.gap }));
}

function csvCell(v: string | number | boolean): string {
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Billing rows (`usage --billing`): one per hour and group of an hourly query, with total_bytes. */
export function billingCsv(rows: readonly UsageRow[], q: Pick<UsageQuery, 'groupBy'>): string {
  const recs = flatten(rows, (r) => ({ total_bytes: (r.fields.tx_bytes ?? 0) + (r.fields.rx_bytes ?? 0) })).map(({ window, ...rest }) => ({ hour: window, ...rest }));
  return formatRows(recs, ['hour', ...groupTags(q), 'tx_bytes', 'rx_bytes', 'total_bytes', 'final', 'gap'], 'csv');
}

/** What `usage --billing --per` can split an hour by (several at once: `--per workload,remote_class`). */
export const BILLING_PER: readonly GroupKey[] = ['host', 'netns', 'workload', 'remote_class'];

/** Validated `--per` choices; the error names `setting` and the accepted values. */
export function parseBillingPer(setting: string, per: readonly string[]): GroupKey[] {
  for (const p of per) if (!BILLING_PER.includes(p as GroupKey)) throw configError(setting, `unknown ${JSON.stringify(p)}; choose from ${BILLING_PER.join(', ')} (comma-separated)`);
  if (per.length === 0) throw configError(setting, `give at least one of ${BILLING_PER.join(', ')}`);
  return per as GroupKey[];
}

/** The billing query of `usage --billing --per host|netns|workload|remote_class[,…]`: the 1-hour traffic rollup per group. */
export function billingQuery(fromMs: number, toMs: number, per: GroupKey | readonly GroupKey[]): UsageQuery {
  return { measurement: 'traffic', fromMs, toMs, windowMs: 3_600_000, groupBy: typeof per === 'string' ? [per] : [...per], fields: ['tx_bytes', 'rx_bytes'] };
}

export function formatRows(recs: readonly Record<string, string | number | boolean>[], columns: readonly string[], format: 'table' | 'csv' | 'json'): string {
  if (format === 'json') return JSON.stringify(recs.map((r) => Object.fromEntries(columns.map((c) => [c, r[c]]))), null, 2) + '\n';
  if (format === 'csv') return [columns.join(','), ...recs.map((r) => columns.map((c) => csvCell(r[c] ?? '')).join(','))].join('\n') + '\n';
  if (recs.length === 0) return '(no data in this time range)\n';
  // a table is for a terminal: control characters in names (any local user picks a process name) are shown as \xHH
  // instead of being sent to it; csv and json carry the exact text
  const cells = [columns.map(String), ...recs.map((r) => columns.map((c) => escapeControls(String(r[c] ?? ''))))];
  const widths = columns.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  const numeric = columns.map((c) => recs.every((r) => typeof r[c] === 'number'));
  return cells.map((row) => row.map((v, i) => (numeric[i] ? v.padStart(widths[i]) : v.padEnd(widths[i]))).join('  ').trimEnd()).join('\n') + '\n';
}

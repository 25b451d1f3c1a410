// The provisioned Grafana dashboard (scripts/grafana/provisioning/dashboards/nettally-traffic.json) proven without
// Grafana: every panel query runs against a real influxd holding rollup points with known totals, with Grafana's
// macros substituted as Grafana does for InfluxQL ($timeFilter, $__interval, a multi-value regex variable with its
// "All" value), and each must return exactly the series the known data implies.
import * as fs from 'fs';
import { resolve } from 'path';
import type { OutPoint } from '../consumer/windows';
import { encodeTagText, InfluxClient } from '../consumer/influx';
import { startInflux, type TestInflux } from './helpers/influx';
import { hostName, ifacePoints, rollupBatches, type RollupSpec } from './helpers/rollups';

const DASHBOARD = resolve(__dirname, '../scripts/grafana/provisioning/dashboards/nettally-traffic.json');
const MINUTE = 60_000;
const HOUR = 3_600_000;

interface Target {
  query: string;
  resultFormat: string;
}
interface Panel {
  id: number;
  title: string;
  type: string;
  targets?: Target[];
}
interface Variable {
  name: string;
  query: string;
  allValue?: string;
  multi?: boolean;
}
const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[]; templating: { list: Variable[] } };

/** What each panel shows, as an oracle over the written points: measurement, group tags, columns, filter. */
const EXPECT: Record<number, { measurement: string; group: string[]; cols: Record<string, (p: OutPoint) => number>; step: number; finalOnly?: boolean }> = {
  1: { measurement: 'nettally_traffic_1m', group: ['hostname', 'netns'], cols: { tx: (p) => p.fields.tx_bytes as number, rx: (p) => p.fields.rx_bytes as number }, step: MINUTE },
  2: { measurement: 'nettally_traffic_1m', group: ['hostname'], cols: { tx: (p) => p.fields.tx_bytes as number, rx: (p) => p.fields.rx_bytes as number }, step: MINUTE },
  3: { measurement: 'nettally_traffic_1m', group: ['direction', 'protocol', 'service_port'], cols: { bytes: (p) => (p.fields.tx_bytes as number) + (p.fields.rx_bytes as number) }, step: MINUTE },
  4: { measurement: 'nettally_traffic_1m', group: ['comm', 'hostname'], cols: { bytes: (p) => (p.fields.tx_bytes as number) + (p.fields.rx_bytes as number) }, step: MINUTE },
  5: { measurement: 'nettally_iface_1m', group: ['hostname', 'ifindex', 'netns'], cols: { tx: (p) => p.fields.tx_bytes as number, rx: (p) => p.fields.rx_bytes as number }, step: MINUTE },
  6: { measurement: 'nettally_traffic_1m', group: ['hostname'], cols: { opened: (p) => p.fields.connections_opened as number, closed: (p) => p.fields.connections_closed as number, retransmits: (p) => p.fields.retransmits as number }, step: MINUTE },
  9: { measurement: 'nettally_traffic_1m', group: ['workload'], cols: { tx: (p) => p.fields.tx_bytes as number, rx: (p) => p.fields.rx_bytes as number }, step: MINUTE },
  10: { measurement: 'nettally_traffic_1m', group: ['remote_class'], cols: { bytes: (p) => (p.fields.tx_bytes as number) + (p.fields.rx_bytes as number) }, step: MINUTE },
  11: { measurement: 'nettally_traffic_1m', group: ['workload'], cols: { open: (p) => p.fields.active_connections as number }, step: MINUTE },
  7: { measurement: 'nettally_traffic_1h', group: ['host_id', 'hostname'], cols: { tx_bytes: (p) => p.fields.tx_bytes as number, rx_bytes: (p) => p.fields.rx_bytes as number }, step: HOUR, finalOnly: true },
};

let influx: TestInflux;
let spec: RollupSpec;
const written: OutPoint[] = [];

beforeAll(async () => {
  influx = await startInflux();
  const now = Date.now();
  const currentMinute = Math.floor(now / MINUTE) * MINUTE;
  spec = { hosts: 3, fromMs: Math.floor(now / HOUR) * HOUR - HOUR, toMs: currentMinute, watermarkMs: currentMinute - 2 * MINUTE, splitHosts: [1] };
  const client = new InfluxClient({ url: influx.url, api: 'v1', db: 'nettally', batchSize: 5000, timeoutMs: 30_000 });
  await client.ensureDatabase();
  for (const batch of [...rollupBatches(spec), ifacePoints(spec)]) {
    await client.write(batch);
    written.push(...batch);
  }
}, 120_000);

afterAll(async () => {
  await influx?.destroy();
});

/** Grafana's InfluxQL interpolation: $timeFilter as epoch-ms bounds, $__interval, and a regex variable formatted as Grafana formats it. */
function interpolate(query: string, fromMs: number, toMs: number, hosts: string[] | 'all', variable: Variable): string {
  const escape = (v: string): string => v.replace(/[\\^$*+?.()|[\]{}/-]/g, '\\$&');
  const value = hosts === 'all' ? (variable.allValue ?? '.*') : hosts.length === 1 ? escape(hosts[0]) : `(${hosts.map(escape).join('|')})`;
  return query
    .replace(/\$timeFilter/g, `time >= ${fromMs}ms and time <= ${toMs}ms`)
    .replace(/\$__interval/g, '1m')
    .replace(new RegExp(`\\$${variable.name}\\b`, 'g'), value);
}

type Series = { tags?: Record<string, string>; columns: string[]; values: unknown[][] };

function expected(id: number, fromMs: number, toMs: number, hosts: string[] | 'all'): Map<string, Map<number, Record<string, number>>> {
  const e = EXPECT[id];
  const out = new Map<string, Map<number, Record<string, number>>>();
  for (const p of written) {
    if (p.measurement !== e.measurement || p.time_ms < fromMs || p.time_ms > toMs) continue;
    if (hosts !== 'all' && !hosts.includes(p.tags.hostname)) continue;
    if (e.finalOnly && p.fields.final !== true) continue;
    // Grafana shows the stored tag text: a backslash or control character in a name as \xHH (encodeTagText).
    const key = e.group.map((g) => `${g}=${encodeTagText(p.tags[g])}`).join(',');
    const t = Math.floor(p.time_ms / e.step) * e.step;
    if (!out.has(key)) out.set(key, new Map());
    const row = out.get(key)!.get(t) ?? Object.fromEntries(Object.keys(e.cols).map((c) => [c, 0]));
    for (const [c, f] of Object.entries(e.cols)) row[c] += f(p);
    out.get(key)!.set(t, row);
  }
  return out;
}

function actual(series: Series[]): Map<string, Map<number, Record<string, number>>> {
  const out = new Map<string, Map<number, Record<string, number>>>();
  for (const s of series) {
    const key = Object.keys(s.tags ?? {}).sort().map((k) => `${k}=${s.tags![k]}`).join(',');
    const m = out.get(key) ?? new Map<number, Record<string, number>>();
    for (const v of s.values) m.set(v[0] as number, Object.fromEntries(s.columns.slice(1).map((c, i) => [c, v[i + 1] as number])));
    out.set(key, m);
  }
  return out;
}

test('the host variable lists every host', async () => {
  const v = dash.templating.list.find((x) => x.name === 'hostname')!;
  const res = await influx.query(v.query);
  expect(res.results[0].error).toBeUndefined();
  expect(res.results[0].series?.[0].values.map((r) => r[1]).sort()).toEqual([0, 1, 2].map(hostName));
});

test('every panel query returns the series the known data implies, for all hosts and for a selection', async () => {
  const variable = dash.templating.list.find((x) => x.name === 'hostname')!;
  const panels = dash.panels.filter((p) => (p.targets ?? []).length > 0);
  // Every panel with a query has an oracle here: a new panel must be proven too.
  expect(panels.map((p) => p.id).sort()).toEqual(Object.keys(EXPECT).map(Number).sort());
  // Grafana's range "last 6 hours" ends now; the data's last window is the current minute.
  const toMs = Date.now();
  const fromMs = toMs - 6 * HOUR;
  for (const hosts of ['all', [hostName(1)], [hostName(0), hostName(2)]] as const) {
    for (const p of panels) {
      for (const t of p.targets!) {
        const q = interpolate(t.query, fromMs, toMs, hosts === 'all' ? 'all' : [...hosts], variable);
        expect(q).not.toMatch(/\$\w/);
        const res = await influx.query(q);
        expect({ panel: p.title, error: res.results[0].error }).toEqual({ panel: p.title, error: undefined });
        const got = actual(res.results[0].series ?? []);
        const want = expected(p.id, fromMs, toMs, hosts === 'all' ? 'all' : [...hosts]);
        expect({ panel: p.title, hosts, series: [...got.keys()].sort() }).toEqual({ panel: p.title, hosts, series: [...want.keys()].sort() });
        expect(want.size).toBeGreaterThan(0);
        for (const [key, rows] of want) expect({ panel: p.title, key, rows: Object.fromEntries(got.get(key)!) }).toEqual({ panel: p.title, key, rows: Object.fromEntries(rows) });
      }
    }
  }
}, 120_000);

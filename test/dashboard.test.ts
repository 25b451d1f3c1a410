/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// `nettally dashboard` in a real browser: a real influxd holds rollup points with known totals (written with the
// consumer's InfluxClient, shaped as the consumer writes them), the real CLI serves the page, Debian's headless
// Chromium loads it. Checks: the chart is drawn (coloured pixels on uPlot's canvas), the chart data, the hourly
// totals the page shows and the billing CSV it offers equal what `nettally usage` prints and the ground truth;
// the live view and health show the newest window; bad input gets a 400 naming it. Screenshot: build/dashboard.png.
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as http from 'http';
import { resolve } from 'path';
import { InfluxClient } from '../consumer/influx';
import { startBrowser, type TestBrowser } from './helpers/browser';
import { startInflux, type TestInflux } from './helpers/influx';
import { hostId, hostName, ifacePoints, rollupBatches, truthPerHost, bytesAt, DEFAULT_SERVICES, type RollupSpec } from './helpers/rollups';

const ROOT = resolve(__dirname, '..');
const BIN = resolve(ROOT, 'dist/bin/nettally.js');
const MINUTE = 60_000;
const HOUR = 3_600_000;

let influx: TestInflux;
let browser: TestBrowser | undefined;
let server: ChildProcess | undefined;
let url = '';
let spec: RollupSpec;
let serverOut = '';

function cli(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function usageJson(args: string[]): Record<string, string | number | boolean>[] {
  const r = cli(['usage', '--influx-url', influx.url, '--format', 'json', ...args]);
  if (r.code !== 0) throw new Error(`usage ${args.join(' ')} failed: ${r.err}`);
  return JSON.parse(r.out) as Record<string, string | number | boolean>[];
}

async function startServer(extra: string[] = []): Promise<{ proc: ChildProcess; url: string; out: () => string }> {
  const proc = spawn(process.execPath, [BIN, 'dashboard', '--influx-url', influx.url, '--listen', '127.0.0.1:0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const m = /nettally dashboard: (http:\/\/\S+\/)/.exec(out);
    if (m) return { proc, url: m[1], out: () => out };
    if (proc.exitCode !== null) throw new Error(`dashboard exited ${proc.exitCode}: ${out}`);
    if (Date.now() > deadline) throw new Error(`dashboard did not print its URL: ${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  influx = await startInflux();
  const now = Date.now();
  const currentMinute = Math.floor(now / MINUTE) * MINUTE;
  // The current hour and the two before it, up to the current minute; host 1 is split over two partitions.
  spec = { hosts: 3, fromMs: Math.floor(now / HOUR) * HOUR - 2 * HOUR, toMs: currentMinute, watermarkMs: currentMinute - 2 * MINUTE, splitHosts: [1] };
  const client = new InfluxClient({ url: influx.url, api: 'v1', db: 'nettally', batchSize: 5000, timeoutMs: 30_000 });
  await client.ensureDatabase();
  for (const batch of [...rollupBatches(spec), ifacePoints(spec)]) await client.write(batch);
  const s = await startServer();
  server = s.proc;
  url = s.url;
  serverOut = s.out();
  browser = await startBrowser();
}, 180_000);

afterAll(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((r) => server?.once('exit', r));
  }
  await influx?.destroy();
});

test('the page draws the stacked chart and shows the totals, billing CSV and live view of nettally usage', async () => {
  const page = await browser!.context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  const seriesResponse = page.waitForResponse((r) => r.url().includes('/api/series'));
  await page.goto(`${url}#range=6h&group=host&metric=total`);
  await page.waitForSelector('body[data-state="ready"]', { timeout: 60_000 });
  await page.waitForSelector('#pipeline dt', { timeout: 30_000 });
  fs.mkdirSync(resolve(ROOT, 'build'), { recursive: true });
  await page.screenshot({ path: resolve(ROOT, 'build/dashboard.png'), fullPage: true });
  expect(errors).toEqual([]);

  // The chart: three series, and uPlot's canvas has coloured (filled) pixels, not only background and grid.
  expect(await page.getAttribute('body', 'data-chart-series')).toBe('3');
  const pixels = await page.evaluate(() => {
    const c = document.querySelector('#chart canvas') as HTMLCanvasElement;
    const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
    let coloured = 0;
    for (let i = 0; i < d.length; i += 4) if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) coloured++;
    return { coloured, total: d.length / 4 };
  });
  expect(pixels.coloured / pixels.total).toBeGreaterThan(0.01);

  // The chart's data: per host, its total over the range equals usage over the same minutes and the ground truth.
  const series = (await (await seriesResponse).json()) as { from_ms: number; to_ms: number; step_ms: number; series: { label: string; tags: Record<string, string>; total_bytes: number; values: number[] }[] };
  const perMinute = usageJson(['--from', String(series.from_ms), '--to', String(series.to_ms), '--group-by', 'host']);
  const truth = truthPerHost(spec, series.from_ms, series.to_ms);
  for (let h = 0; h < spec.hosts; h++) {
    const s = series.series.find((x) => x.tags.host_id === hostId(h));
    expect(s?.label).toBe(hostName(h));
    const fromUsage = perMinute.filter((r) => r.host_id === hostId(h)).reduce((n, r) => n + (r.tx_bytes as number) + (r.rx_bytes as number), 0);
    expect(s?.total_bytes).toBe(fromUsage);
    expect(s?.total_bytes).toBe(truth.get(h)!.tx + truth.get(h)!.rx);
  }

  // The hourly totals table, read as a person sees it, equals `nettally usage --window 1h` for the same hours.
  const range = await page.$eval('#totals', (t) => ({ from: Number((t as HTMLElement).dataset.fromMs), to: Number((t as HTMLElement).dataset.toMs) }));
  const shown = await page.$$eval('#totals tbody tr', (trs) =>
    trs.map((tr) => {
      const row: Record<string, string | number | boolean> = { window: (tr as HTMLElement).dataset.window ?? '' };
      for (const td of tr.querySelectorAll('td')) {
        const el = td as HTMLElement;
        if (el.dataset.tag) row[el.dataset.tag] = el.textContent ?? '';
        else if (el.dataset.field === 'final') row.final = el.textContent === 'final';
        else if (el.dataset.field) row[el.dataset.field] = Number((el.textContent ?? '').replace(/[^0-9]/g, ''));
      }
      return row;
    }),
  );
  const hourly = usageJson(['--from', String(range.from), '--to', String(range.to), '--window', '1h', '--group-by', 'host']).map((r) => ({ window: r.window, host_id: r.host_id, hostname: r.hostname, tx_bytes: r.tx_bytes, rx_bytes: r.rx_bytes, final: r.final }));
  const key = (r: Record<string, unknown>): string => `${String(r.window)}/${String(r.host_id)}`;
  expect(shown.length).toBe(3 * spec.hosts);
  expect([...shown].sort((a, b) => key(a).localeCompare(key(b)))).toEqual([...hourly].sort((a, b) => key(a).localeCompare(key(b))));
  // Hours that ended before the watermark are final, later ones not; the ground truth of each hour is on the page.
  for (const r of shown) {
    expect(r.final).toBe(Date.parse(String(r.window)) + HOUR <= spec.watermarkMs);
    const h = [0, 1, 2].find((i) => hostId(i) === r.host_id)!;
    const t = truthPerHost(spec, Date.parse(String(r.window)), Date.parse(String(r.window)) + HOUR).get(h)!;
    expect([r.tx_bytes, r.rx_bytes]).toEqual([t.tx, t.rx]);
  }

  // The billing download is `nettally usage --billing` for those hours, byte for byte.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#billing-host')]);
  const csv = fs.readFileSync((await download.path())!, 'utf8');
  const billing = cli(['usage', '--influx-url', influx.url, '--billing', '--per', 'host', '--from', String(range.from), '--to', 'now']);
  expect(billing.code).toBe(0);
  expect(csv).toBe(billing.out);
  expect(csv.split('\n')[0]).toBe('hour,host_id,hostname,tx_bytes,rx_bytes,total_bytes,final,gap');

  // The live view: per host, this minute and the previous one, exact bytes in the cells' titles.
  const live = await page.$eval('#live', (t) => ({
    current: Number((t as HTMLElement).dataset.currentWindowMs),
    rows: [...t.querySelectorAll('tbody tr')].map((tr) => ({ label: (tr as HTMLElement).dataset.label, cells: [...tr.querySelectorAll('td')].map((td) => td.getAttribute('title') ?? '') })),
  }));
  // (On a machine so slow that two minutes passed since the write, both minutes are empty, and the page says so.)
  if (live.current - MINUTE > spec.toMs) expect(live.rows.map((r) => r.label)).toEqual([undefined]);
  for (let h = 0; h < spec.hosts && live.current - MINUTE <= spec.toMs; h++) {
    const row = live.rows.find((r) => r.label === hostName(h));
    expect(row).toBeDefined();
    const parse = (title: string): number[] => [...title.matchAll(/([\d,]+) B/g)].map((m) => Number(m[1].replace(/,/g, '')));
    for (const [cell, start] of [[1, live.current], [2, live.current - MINUTE]] as const) {
      const want = start > spec.toMs ? { tx: 0, rx: 0 } : DEFAULT_SERVICES.reduce((acc, _, s) => ({ tx: acc.tx + bytesAt(h, s, start).tx, rx: acc.rx + bytesAt(h, s, start).rx }), { tx: 0, rx: 0 });
      expect(parse(row!.cells[cell])).toEqual([want.tx, want.rx]);
    }
  }

  // Health from InfluxDB: the newest window written is the last minute the test wrote.
  const pipeline = await page.textContent('#pipeline');
  expect(pipeline).toContain(new Date(spec.toMs).toISOString().slice(0, 16).replace('T', ' '));
  expect(pipeline).toContain('not known here');
  await page.close();
}, 240_000);

test('the page switches range and grouping, and the chart follows', async () => {
  const page = await browser!.context.newPage();
  await page.goto(`${url}#range=1h&group=host`);
  await page.waitForSelector('body[data-state="ready"]', { timeout: 60_000 });
  await page.selectOption('#group', 'port');
  await page.waitForFunction(() => document.body.dataset.state === 'ready' && document.querySelector('#chart-title')?.textContent?.includes('port'), undefined, { timeout: 60_000 });
  expect(await page.getAttribute('body', 'data-chart-series')).toBe(String(DEFAULT_SERVICES.length));
  const legend = await page.$$eval('.u-legend .u-series th', (ths) => ths.map((t) => t.textContent ?? ''));
  for (const s of DEFAULT_SERVICES) expect(legend.some((l) => l.includes(`${s.protocol}/${s.port}`))).toBe(true);
  // A process name with markup is shown as text, never parsed as HTML (legend, live table, totals).
  await page.selectOption('#group', 'process');
  await page.waitForFunction(() => document.body.dataset.state === 'ready' && document.querySelector('#chart-title')?.textContent?.includes('process'), undefined, { timeout: 60_000 });
  const hostile = DEFAULT_SERVICES[2].comm;
  expect(await page.$$eval('.u-legend .u-series th', (ths) => ths.map((t) => t.textContent ?? ''))).toEqual(expect.arrayContaining([expect.stringContaining(hostile)]));
  expect(await page.$$eval('#totals td[data-tag="comm"]', (tds) => tds.map((t) => t.textContent))).toContain(hostile);
  expect(await page.$$eval('#live tbody tr', (trs) => trs.map((t) => t.getAttribute('data-label')))).toContain(`${hostName(2)} · ${hostile}`);
  expect(await page.$$('main i')).toEqual([]);
  // Wire bytes per interface: the chart reads the interface rollup; its totals are those of usage --measurement iface.
  const ifaceSeries = page.waitForResponse((r) => r.url().includes('/api/series') && r.url().includes('measurement=iface') && r.url().includes('group=iface'));
  await page.selectOption('#measurement', 'iface');
  await page.selectOption('#group', 'iface');
  await page.waitForFunction(() => document.body.dataset.state === 'ready' && document.querySelector('#chart-title')?.textContent?.includes('by interface'), undefined, { timeout: 60_000 });
  expect(await page.getAttribute('body', 'data-chart-series')).toBe(String(spec.hosts * 2));
  const wire = (await (await ifaceSeries).json()) as { from_ms: number; to_ms: number; series: { label: string; tags: Record<string, string>; total_bytes: number }[] };
  const wireUsage = usageJson(['--measurement', 'iface', '--group-by', 'iface', '--from', String(wire.from_ms), '--to', String(wire.to_ms)]);
  for (const s of wire.series) {
    expect(s.label).toBe(`${s.tags.hostname} · netns ${s.tags.netns} · if ${s.tags.ifindex}`);
    const rows = wireUsage.filter((r) => r.host_id === s.tags.host_id && r.ifindex === s.tags.ifindex);
    expect(s.total_bytes).toBe(rows.reduce((n, r) => n + (r.tx_bytes as number) + (r.rx_bytes as number), 0));
  }
  await page.screenshot({ path: resolve(ROOT, 'build/dashboard-wire.png') });
  // Totals and the last minute stay payload (what is billed): by host when the chart is by interface.
  expect(await page.textContent('#totals-title')).toBe('By host and hour');
  await page.selectOption('#measurement', 'traffic');
  await page.waitForFunction(() => document.body.dataset.state === 'ready' && location.hash.includes('measurement=traffic') && location.hash.includes('group=host'), undefined, { timeout: 60_000 });
  await page.click('button[data-range="7d"]');
  await page.waitForFunction(() => location.hash.includes('range=7d') && document.body.dataset.state === 'ready', undefined, { timeout: 60_000 });
  expect(await page.textContent('#chart-note')).toContain('nettally_traffic_1h');
  await page.close();
}, 180_000);

test('bad input gets a 400 naming it; another Host is refused; a non-loopback address needs --allow-remote', async () => {
  const get = async (path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> => {
    const r = await fetch(new URL(path, url), { headers });
    return { status: r.status, body: await r.text() };
  };
  for (const [path, name] of [
    ['api/series?range=2h', 'range'],
    ['api/series?group=bogus', 'group'],
    ['api/series?group=iface', 'group'],
    ['api/series?metric=both', 'metric'],
    ['api/series?measurement=iface&group=port', 'group'],
    ['api/series?measurement=wire', 'measurement'],
    ['api/series?top=0', 'top'],
    ['api/totals?range=1h&range=6h', 'range'],
    ['api/billing.csv?per=pod', 'per'],
    ['api/series?rnage=1h', 'rnage'],
  ]) {
    const r = await get(path);
    expect({ path, status: r.status }).toEqual({ path, status: 400 });
    expect(JSON.parse(r.body).error).toContain(`parameter ${name}`);
  }
  expect((await get('api/nothing')).status).toBe(404);
  expect((await fetch(new URL('api/series', url), { method: 'POST' })).status).toBe(405);
  // DNS rebinding: a page elsewhere that resolves its own name to 127.0.0.1 sends its own Host.
  const port = new URL(url).port;
  const rebound = await new Promise<number>((done, fail) => {
    const req = http.get({ host: '127.0.0.1', port: Number(port), path: '/api/health', headers: { host: `evil.example:${port}` } }, (res) => {
      res.resume();
      done(res.statusCode ?? 0);
    });
    req.on('error', fail);
  });
  expect(rebound).toBe(421);
  const remote = cli(['dashboard', '--influx-url', influx.url, '--listen', '0.0.0.0:0']);
  expect(remote.code).toBe(2);
  expect(remote.err).toContain('--listen');
  expect(remote.err).toContain('--allow-remote');
  expect(cli(['dashboard', '--help']).out).toContain('no authentication');
  expect(serverOut).toContain('No authentication');
}, 120_000);

test('InfluxDB down: endpoints answer 502 naming it, the page says so and stays usable, and recovers when it is back', async () => {
  const page = await browser!.context.newPage();
  await page.goto(`${url}#range=1h&group=host`);
  await page.waitForSelector('body[data-state="ready"]', { timeout: 60_000 });
  await influx.stop();
  try {
    const r = await fetch(new URL('api/series?range=1h', url));
    expect(r.status).toBe(502);
    expect(((await r.json()) as { error: string }).error).toContain('InfluxDB query failed');
    // The health poll (every 5 s) shows it; a new view shows the error where the chart would be.
    await page.waitForFunction(() => document.querySelector('#health')?.textContent?.includes('InfluxDB unreachable'), undefined, { timeout: 30_000 });
    await page.click('button[data-range="6h"]');
    await page.waitForFunction(() => document.body.dataset.state === 'ready' && !(document.querySelector('#chart-error') as HTMLElement).hidden, undefined, { timeout: 60_000 });
    expect(await page.textContent('#chart-error')).toContain('InfluxDB query failed');
    expect(await page.$('#chart canvas')).toBeNull(); // not the previous range's chart under the new title
  } finally {
    await influx.start();
  }
  await page.waitForFunction(() => document.querySelector('#health .badge')?.textContent?.startsWith('InfluxDB ok'), undefined, { timeout: 30_000 });
  await page.click('button[data-range="1h"]');
  await page.waitForFunction(() => document.body.dataset.state === 'ready' && (document.querySelector('#chart-error') as HTMLElement).hidden && document.body.dataset.chartSeries === '3', undefined, { timeout: 60_000 });
  await page.close();
}, 180_000);

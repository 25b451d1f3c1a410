// `npm run bench:dashboard`: is the dashboard responsive with a fleet's history? Writes 24 h of 1-minute rollups
// (and their 1-hour rollups) for BENCH_HOSTS hosts × BENCH_SERVICES services into a real influxd, exactly as the
// consumer writes them, then measures each API endpoint per range and the page's load in headless Chromium
// (navigation → chart drawn and totals shown).
import { InfluxClient } from '../consumer/influx';
import { startDashboard } from '../dashboard/server';
import { silentLogger } from '../lib/log';
import { startBrowser } from '../test/helpers/browser';
import { startInflux } from '../test/helpers/influx';
import { DEFAULT_SERVICES, rollupBatches } from '../test/helpers/rollups';
import { benchHelp } from './help';

benchHelp("bench:dashboard", "writes 24 h of rollups for a fleet into a real influxd, then times each dashboard API endpoint per range and the page load in headless Chromium.", {
  BENCH_HOSTS: "hosts (300)",
  BENCH_SERVICES: "services per host (3)",
  BENCH_HOURS: "hours of history (24)",
  BENCH_RUNS: "runs per endpoint (3)",
  BENCH_INFLUX_URL: "use this influxd instead of starting one",
  BENCH_WRITE: "0: the influxd already holds the data",
});

const HOSTS = Number(process.env.BENCH_HOSTS ?? 300);
const SERVICES = Number(process.env.BENCH_SERVICES ?? 3);
const HOURS = Number(process.env.BENCH_HOURS ?? 24);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const MINUTE = 60_000;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timed(url: string): Promise<{ ms: number; bytes: number }> {
  const t = performance.now();
  const res = await fetch(url);
  const body = await res.arrayBuffer();
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${Buffer.from(body).toString().slice(0, 200)}`);
  return { ms: performance.now() - t, bytes: body.byteLength };
}

async function main(): Promise<void> {
  // BENCH_INFLUX_URL: an influxd that already holds the data (BENCH_WRITE=0), to compare query changes quickly.
  const influx = process.env.BENCH_INFLUX_URL ? { url: process.env.BENCH_INFLUX_URL, destroy: async () => undefined } : await startInflux();
  try {
    const client = new InfluxClient({ url: influx.url, api: 'v1', db: 'nettally', batchSize: 5000, timeoutMs: 120_000 });
    await client.ensureDatabase();
    const now = Date.now();
    const toMs = Math.floor(now / MINUTE) * MINUTE;
    const spec = { hosts: HOSTS, services: DEFAULT_SERVICES.slice(0, SERVICES), fromMs: toMs - HOURS * 60 * MINUTE, toMs, watermarkMs: toMs - 2 * MINUTE };
    let points = 0;
    let t = performance.now();
    if (process.env.BENCH_WRITE !== '0') {
      for (const batch of rollupBatches(spec)) {
        await client.write(batch);
        points += batch.length;
        if (points % 200_000 < batch.length) process.stderr.write(`bench:dashboard: ${points} points written\n`);
      }
      const writeS = (performance.now() - t) / 1000;
      process.stdout.write(`data: ${HOSTS} hosts × ${SERVICES} services, ${HOURS} h of 1-minute windows + 1-hour windows = ${points.toLocaleString('en-US')} points (written in ${writeS.toFixed(0)} s)\n\n`);
    }

    // Right after a bulk write influxd compacts for a while; a fleet's steady state has its history compacted.
    t = performance.now();
    while (performance.now() - t < 300_000) {
      const stats = await client.query('SHOW STATS');
      const active = stats.flatMap((r) => r.series ?? []).filter((x) => x.name === 'tsm1_engine').reduce((n, x) => n + x.columns.reduce((m, c, i) => m + (c.endsWith('CompactionsActive') ? Number(x.values[0][i]) : 0), 0), 0);
      if (active === 0) break;
      await new Promise((r) => setTimeout(r, 2000));
    }
    process.stdout.write(`waited ${((performance.now() - t) / 1000).toFixed(0)} s for influxd's compactions to finish\n\n`);

    const dash = await startDashboard({ client, host: '127.0.0.1', port: 0, logger: silentLogger });
    try {
      process.stdout.write(`API (median of ${RUNS}, ms; response size)\n\n| endpoint | 15m | 1h | 6h | 24h | 7d |\n|---|---|---|---|---|---|\n`);
      const endpoints: [string, (r: string) => string][] = [
        ['series, by host', (r) => `api/series?range=${r}&group=host`],
        ['series, by process', (r) => `api/series?range=${r}&group=process`],
        ['totals, by host', (r) => `api/totals?range=${r}&group=host`],
        ['billing.csv per host', (r) => `api/billing.csv?range=${r}&per=host`],
      ];
      for (const [name, path] of endpoints) {
        const cells: string[] = [];
        for (const r of ['15m', '1h', '6h', '24h', '7d']) {
          const runs = [];
          for (let i = 0; i < RUNS; i++) runs.push(await timed(dash.url + path(r)));
          cells.push(`${median(runs.map((x) => x.ms)).toFixed(0)} (${(runs[0].bytes / 1024).toFixed(0)} KiB)`);
        }
        process.stdout.write(`| ${name} | ${cells.join(' | ')} |\n`);
      }
      for (const path of ['api/live?group=host', 'api/health']) {
        const runs = [];
        for (let i = 0; i < RUNS; i++) runs.push(await timed(dash.url + path));
        process.stdout.write(`| ${path} | ${median(runs.map((x) => x.ms)).toFixed(0)} (${(runs[0].bytes / 1024).toFixed(0)} KiB) | | | | |\n`);
      }

      const browser = await startBrowser();
      try {
        process.stdout.write(`\npage load in headless Chromium (median of ${RUNS}, ms from navigation; the panels load side by side)\n\n| view | totals shown | chart drawn | everything (chart, totals, last minute) |\n|---|---|---|---|\n`);
        for (const view of ['range=1h&group=host', 'range=24h&group=host', 'range=24h&group=process', 'range=7d&group=host']) {
          const runs: number[][] = [];
          for (let i = 0; i < RUNS; i++) {
            const page = await browser.context.newPage();
            t = performance.now();
            const at = (selector: string): Promise<number> => page.waitForSelector(selector, { timeout: 120_000 }).then(() => performance.now() - t);
            await page.goto(`${dash.url}#${view}`);
            runs.push(await Promise.all([at('#totals tbody tr'), at('body[data-chart-series]'), at('body[data-state="ready"][data-chart-series]')]));
            await page.close();
          }
          process.stdout.write(`| ${view} | ${[0, 1, 2].map((k) => median(runs.map((r) => r[k])).toFixed(0)).join(' | ')} |\n`);
        }
      } finally {
        await browser.close();
      }
    } finally {
      await dash.close();
    }
  } finally {
    await influx.destroy();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:dashboard: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});

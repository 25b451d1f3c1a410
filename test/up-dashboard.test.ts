/// <reference lib="dom" />
// Scenario: `nettally up` serves the dashboard in its own process and prints its URL; the page's health endpoint
// carries up's view of its children (producer attached, records/s, consumer lag), not only InfluxDB's.
import { spawnSync } from 'child_process';
import { mkdtempSync, rmSync } from 'fs';
import { createServer, type Server } from 'net';
import { tmpdir } from 'os';
import { join } from 'path';
import { resolve } from 'path';
import { freePort } from '../bin/influxd';
import { startBrowser } from './helpers/browser';
import { spawnUp, waitReady, type UpProcess } from './helpers/up';

let upProc: UpProcess | undefined;
let blocker: Server | undefined;
const dataDir = mkdtempSync(join(tmpdir(), 'nettally-up-dash-'));
const pinDir = `/sys/fs/bpf/nettally-up-dash-${process.pid}`;

afterAll(async () => {
  await upProc?.kill();
  await new Promise((r) => (blocker ? blocker.close(r) : r(undefined)));
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(pinDir, { recursive: true, force: true });
});

test('up prints the dashboard URL, and the page reports the pipeline up runs', async () => {
  const [kafkaPort, influxPort, dashPort] = [await freePort(), await freePort(), await freePort()];
  upProc = spawnUp(['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--status-interval', '500ms', '--dashboard-listen', `127.0.0.1:${dashPort}`]);
  await waitReady(upProc);
  const url = `http://127.0.0.1:${dashPort}/`;
  expect(upProc.out).toMatch(new RegExp(`nettally up: ready .*Dashboard: ${url.replace(/[./]/g, '\\$&')}`));
  expect((await fetch(url)).status).toBe(200);
  // Status events arrive every 500 ms; wait for the first ones instead of sleeping.
  let health: { influx: { ok: boolean }; pipeline: { producer: { ready: boolean; records_per_s?: number; kernel_drops?: number }; consumer: { ready: boolean; lag?: number } } | null } | undefined;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    health = (await (await fetch(`${url}api/health`)).json()) as typeof health;
    if (health?.pipeline?.producer.records_per_s !== undefined && health.pipeline.consumer.lag !== undefined) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  expect(health?.influx.ok).toBe(true);
  expect(health?.pipeline?.producer.ready).toBe(true);
  expect(health?.pipeline?.consumer.ready).toBe(true);
  expect(typeof health?.pipeline?.producer.records_per_s).toBe('number');
  expect(health?.pipeline?.producer.kernel_drops).toBe(0);
  expect(typeof health?.pipeline?.consumer.lag).toBe('number');
  // The page shows it: producer and consumer badges and the pipeline table, in a real browser.
  const browser = await startBrowser();
  try {
    const page = await browser.context.newPage();
    await page.goto(`${url}#range=15m&group=process`);
    await page.waitForSelector('body[data-state="ready"]', { timeout: 60_000 });
    await page.waitForFunction(() => document.querySelector('#pipeline')?.textContent?.includes('records/s'), undefined, { timeout: 30_000 });
    const badges = await page.$$eval('#health .badge', (els) => els.map((e) => e.textContent ?? ''));
    expect(badges.some((b) => /^producer \d+ rec\/s$/.test(b))).toBe(true);
    expect(badges.some((b) => /^consumer lag \d+$/.test(b))).toBe(true);
    const rows = await page.$$eval('#pipeline dt', (dts) => Object.fromEntries(dts.map((dt) => [dt.textContent, dt.nextElementSibling?.textContent])));
    expect(rows['kernel drops']).toBe('0');
    expect(rows.producer).toBe('attached');
    await page.screenshot({ path: resolve(__dirname, '../build/dashboard-up.png'), fullPage: true });
  } finally {
    await browser.close();
  }
  process.kill(-(upProc.child.pid as number), 'SIGINT');
  expect(await upProc.exited).toBe(0);
  // The page stops with up.
  await expect(fetch(url)).rejects.toThrow();
}, 180_000);

test('a busy default dashboard port costs the page, not the pipeline: up warns and runs on', async () => {
  // Hold 127.0.0.1:8087 (if something else already holds it, the situation is the same).
  blocker = await new Promise<Server | undefined>((r) => {
    const s = createServer();
    s.once('error', () => r(undefined));
    s.listen(8087, '127.0.0.1', () => r(s));
  });
  const [kafkaPort, influxPort] = [await freePort(), await freePort()];
  const env = { ...process.env };
  delete env.NETTALLY_DASHBOARD_LISTEN;
  upProc = spawnUp(['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir], { env });
  await waitReady(upProc);
  expect(upProc.err).toContain('dashboard not started');
  expect(upProc.err).toContain('127.0.0.1:8087 is already in use');
  expect(upProc.out).not.toContain('Dashboard:');
  process.kill(-(upProc.child.pid as number), 'SIGINT');
  expect(await upProc.exited).toBe(0);
}, 180_000);

test('a bad or non-loopback --dashboard-listen is refused at start, naming it, before anything starts', () => {
  for (const value of ['nonsense', '0.0.0.0:8087']) {
    const r = spawnSync(process.execPath, [resolve(__dirname, '../dist/bin/nettally.js'), 'up', '--data-dir', dataDir, '--dashboard-listen', value], { encoding: 'utf8', timeout: 30_000 });
    expect({ value, status: r.status }).toEqual({ value, status: 2 });
    expect(r.stderr).toContain('--dashboard-listen');
    expect(r.stdout).not.toContain('nettally up: Kafka');
  }
});

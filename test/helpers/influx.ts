// Test helper: a real influxd 1.6.7 (Debian) on free ports with temp meta/data/wal dirs, stoppable and restartable
// on the same port (outage tests); plus a v2-write translating proxy (/api/v2/write → /write, as InfluxDB 1.8 does).
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as http from 'http';
import * as net from 'net';
import { tmpdir } from 'os';
import { join } from 'path';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface TestInflux {
  url: string;
  port: number;
  dir: string;
  /** Stops influxd (SIGTERM), keeping its data. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data. */
  start(): Promise<void>;
  /** InfluxQL against it (JSON results, epoch ms). */
  query(q: string, db?: string): Promise<{ results: { series?: { name: string; tags?: Record<string, string>; columns: string[]; values: unknown[][] }[]; error?: string }[] }>;
  /** Stops it and removes every file it made. */
  destroy(): Promise<void>;
}

async function waitReady(url: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`influxd exited with ${child.exitCode}: ${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const req = http.get(`${url}/ping`, (res) => {
        res.resume();
        resolve(res.statusCode === 204);
      });
      req.on('error', () => resolve(false));
      req.setTimeout(1000, () => {
        req.destroy();
        resolve(false);
      });
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`influxd did not answer /ping within 30 s: ${log()}`);
}

export async function startInflux(): Promise<TestInflux> {
  const dir = fs.mkdtempSync(join(tmpdir(), 'nettally-influx-'));
  const port = await freePort();
  const rpc = await freePort();
  const conf = join(dir, 'influxdb.conf');
  fs.writeFileSync(
    conf,
    [
      'reporting-disabled = true',
      `bind-address = "127.0.0.1:${rpc}"`,
      '[meta]',
      `  dir = "${join(dir, 'meta')}"`,
      '[data]',
      `  dir = "${join(dir, 'data')}"`,
      `  wal-dir = "${join(dir, 'wal')}"`,
      '  query-log-enabled = false',
      '  wal-fsync-delay = "0s"',
      '[http]',
      `  bind-address = "127.0.0.1:${port}"`,
      '  log-enabled = false',
      '[monitor]',
      '  store-enabled = false',
      '[continuous_queries]',
      '  enabled = false',
      '[subscriber]',
      '  enabled = false',
      '[logging]',
      '  level = "warn"',
      '',
    ].join('\n'),
  );
  const url = `http://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  let log = '';
  const start = async (): Promise<void> => {
    log = '';
    const c = spawn('influxd', ['run', '-config', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    c.stderr?.on('data', (d: Buffer) => {
      log = (log + d.toString()).slice(-4000);
    });
    await waitReady(url, c, () => log);
  };
  const stop = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  };
  await start();
  return {
    url,
    port,
    dir,
    stop,
    start,
    async query(q, db = 'nettally') {
      const res = await fetch(`${url}/query?${new URLSearchParams({ db, q, epoch: 'ms' })}`, { method: 'POST' });
      return (await res.json()) as Awaited<ReturnType<TestInflux['query']>>;
    },
    async destroy() {
      await stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface V2Proxy {
  url: string;
  /** Requests that went through /api/v2/write. */
  v2Writes: number;
  close(): Promise<void>;
}

/**
 * A proxy in front of influxd 1.x that accepts the v2 write API (`/api/v2/write?org=&bucket=db[/rp]&precision=`,
 * `Authorization: Token …`) and forwards it to `/write?db=&rp=&precision=`; other paths pass through unchanged.
 */
export async function startV2Proxy(target: string): Promise<V2Proxy> {
  const t = new URL(target);
  const state = { v2Writes: 0 };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://proxy');
    let path = u.pathname + u.search;
    if (u.pathname === '/api/v2/write') {
      const bucket = u.searchParams.get('bucket');
      if (!bucket || !u.searchParams.get('org')) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ code: 'invalid', message: 'org and bucket are required' }));
        return;
      }
      state.v2Writes++;
      const [db, rp] = bucket.split('/');
      const q = new URLSearchParams({ db, precision: u.searchParams.get('precision') ?? 'ns' });
      if (rp) q.set('rp', rp);
      path = `/write?${q}`;
    }
    const headers = { ...req.headers };
    delete headers.host;
    const up = http.request({ host: t.hostname, port: t.port, path, method: req.method, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', (e) => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ code: 'unavailable', message: e.message }));
    });
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    get v2Writes() {
      return state.v2Writes;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

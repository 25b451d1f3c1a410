// Test helper: a real influxd 1.6.7 (Debian) on free ports with temp meta/data/wal dirs, stoppable and restartable
// on the same port (outage tests); plus a v2-write translating proxy (/api/v2/write → /write, as InfluxDB 1.8 does).
import * as fs from 'fs';
import * as http from 'http';
import * as net from 'net';
import { tmpdir } from 'os';
import { join } from 'path';
import { freePort, startLocalInflux, type LocalInflux } from '../../bin/influxd';
import { silentLogger } from '../../lib/log';

export { freePort };

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

/** influxd through bin/influxd.ts (the launcher `nettally up` uses), in a temp dir that destroy() removes. */
export async function startInflux(): Promise<TestInflux> {
  const dir = fs.mkdtempSync(join(tmpdir(), 'nettally-influx-'));
  const port = await freePort();
  const rpc = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let server: LocalInflux | undefined;
  const start = async (): Promise<void> => {
    server = await startLocalInflux({ dataDir: dir, httpPort: port, rpcPort: rpc, logger: silentLogger });
  };
  const stop = async (): Promise<void> => {
    const s = server;
    server = undefined;
    await s?.close();
  };
  try {
    await start();
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
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

// The dashboard's HTTP server: the page (static/), uPlot from node_modules, and the JSON/CSV endpoints of api.ts.
// It has no authentication, so it binds to loopback unless told otherwise, and refuses Host names other than the
// address it listens on (a web page elsewhere cannot reach it through DNS rebinding).
import { existsSync, readFileSync } from 'fs';
import * as http from 'http';
import type { AddressInfo } from 'net';
import { dirname, join } from 'path';
import type { InfluxClient } from '../consumer/influx';
import { parseHostPort, type HostPort } from '../lib/args';
import { configError, NettallyError } from '../lib/errors';
import type { Logger } from '../lib/log';
import { isLoopbackIp } from '../lib/net';
import { billingData, healthData, liveData, Params, seriesData, totalsData, type PipelineStatus } from './api';

export interface DashboardOptions {
  client: InfluxClient;
  host: string;
  port: number;
  /** The setting named in errors about the address (default --listen). */
  setting?: string;
  /** Serve on a non-loopback address (the page has no authentication). */
  allowRemote?: boolean;
  logger: Logger;
  /** What `nettally up` knows about its producer and consumer; without it the page shows what InfluxDB tells. */
  pipeline?: () => PipelineStatus;
}

export interface Dashboard {
  url: string;
  close(): Promise<void>;
}

/** A loopback address (lib/net.ts), bracketed or not, or the name localhost. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || isLoopbackIp(h);
}

/** Refuses a non-loopback address unless allowed: the page has no authentication. */
export function checkListenAddress(setting: string, host: string, allowRemote = false): void {
  if (!allowRemote && !isLoopback(host)) {
    throw configError(setting, `${host} is not a loopback address; the dashboard has no authentication: serve it to the network only with 'nettally dashboard --allow-remote' behind a proxy that authenticates`);
  }
}

/** The dashboard address (`dashboard --listen`, `up --dashboard-listen`, named by `setting`); port 0 picks a free one. */
export function parseListen(setting: string, value: string): HostPort {
  return parseHostPort(setting, value, { example: '127.0.0.1:8087' });
}

/** The folder holding static/ — beside this file in the source tree, and found from dist/dashboard/ after a build. */
function staticDir(): string {
  for (let d = __dirname; ; d = dirname(d)) {
    const candidate = join(d, 'dashboard', 'static');
    if (existsSync(join(candidate, 'index.html'))) return candidate;
    if (dirname(d) === d) throw new NettallyError('INTERNAL', `dashboard/static not found above ${__dirname}`);
  }
}

interface Asset {
  body: Buffer;
  type: string;
  cache: string;
}

function loadAssets(): Map<string, Asset> {
  const dir = staticDir();
  const own = (file: string, type: string): Asset => ({ body: readFileSync(join(dir, file)), type, cache: 'no-cache' });
  // uPlot ships with the package (a dependency), never from a CDN: the machine may have no internet.
  let uplotDir: string;
  try {
    uplotDir = dirname(require.resolve('uplot/package.json'));
  } catch {
    throw new NettallyError('INTERNAL', "the chart library uplot is not installed (a dependency since the dashboard): run 'npm install' in the nettally checkout");
  }
  const vendor = (file: string, type: string): Asset => ({ body: readFileSync(join(uplotDir, 'dist', file)), type, cache: 'max-age=86400' });
  return new Map([
    ['/', own('index.html', 'text/html; charset=utf-8')],
    ['/app.js', own('app.js', 'text/javascript; charset=utf-8')],
    ['/style.css', own('style.css', 'text/css; charset=utf-8')],
    ['/vendor/uPlot.esm.js', vendor('uPlot.esm.js', 'text/javascript; charset=utf-8')],
    ['/vendor/uPlot.min.css', vendor('uPlot.min.css', 'text/css; charset=utf-8')],
  ]);
}

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

function send(res: http.ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': String(Buffer.byteLength(body)), ...SECURITY_HEADERS, ...extra });
  res.end(body);
}

function sendJson(res: http.ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value), { 'cache-control': 'no-store' });
}

/** Starts the server; resolves once it listens. Throws CONFIG_INVALID for a non-loopback host without allowRemote or a busy port. */
export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const { client, logger } = opts;
  const setting = opts.setting ?? '--listen';
  checkListenAddress(setting, opts.host, opts.allowRemote);
  const assets = loadAssets();
  let boundPort = opts.port;
  const hostAllowed = (hostHeader: string | undefined): boolean => {
    if (opts.allowRemote) return true;
    if (!hostHeader) return false;
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(hostHeader);
    return m !== null && isLoopback(m[1]) && (m[2] === undefined ? boundPort === 80 : Number(m[2]) === boundPort);
  };

  const api: Record<string, (p: Params) => Promise<unknown>> = {
    '/api/series': (p) => seriesData(client, p),
    '/api/totals': (p) => totalsData(client, p),
    '/api/live': (p) => liveData(client, p),
    '/api/health': (p) => healthData(client, p, opts.pipeline),
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const started = Date.now();
    const url = new URL(req.url ?? '/', 'http://dashboard');
    if (!hostAllowed(req.headers.host)) {
      sendJson(res, 421, { error: `Host ${JSON.stringify(req.headers.host ?? '')} is not this dashboard's loopback address` });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, { error: `method ${req.method} not allowed: the dashboard only reads` });
      return;
    }
    const asset = assets.get(url.pathname === '/index.html' ? '/' : url.pathname);
    if (asset) {
      send(res, 200, asset.type, asset.body, { 'cache-control': asset.cache });
      return;
    }
    const params = new Params(url.searchParams);
    try {
      if (url.pathname === '/api/billing.csv') {
        const { csv, filename } = await billingData(client, params);
        send(res, 200, 'text/csv; charset=utf-8', csv, { 'content-disposition': `attachment; filename="${filename}"`, 'cache-control': 'no-store' });
      } else if (api[url.pathname]) {
        sendJson(res, 200, await api[url.pathname](params));
      } else {
        sendJson(res, 404, { error: `no such page: ${url.pathname}` });
        return;
      }
      logger.debug({ path: url.pathname, query: url.search, ms: Date.now() - started }, 'served');
    } catch (e) {
      if (e instanceof NettallyError && e.code === 'CONFIG_INVALID') {
        sendJson(res, 400, { error: e.message.replace(/^invalid setting /, 'invalid ') });
      } else if (e instanceof NettallyError && e.code === 'INFLUX_UNAVAILABLE') {
        logger.warn({ path: url.pathname, err: e.message }, 'InfluxDB query failed');
        sendJson(res, 502, { error: e.message });
      } else {
        logger.error({ path: url.pathname, err: e }, 'dashboard request failed');
        sendJson(res, 500, { error: 'internal error (see the dashboard log)' });
      }
    }
  };

  const server = http.createServer((req, res) => void handle(req, res));
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      reject(
        e.code === 'EADDRINUSE'
          ? configError(setting, `${opts.host}:${opts.port} is already in use; pick another address`)
          : configError(setting, `cannot listen on ${opts.host}:${opts.port}: ${e.message}`),
      );
    });
    server.listen(opts.port, opts.host, () => resolveListen());
  });
  boundPort = (server.address() as AddressInfo).port;
  const shown = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const url = `http://${shown}:${boundPort}/`;
  logger.info({ url }, 'dashboard listening');
  return {
    url,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// InfluxDB access for the consumer and `nettally usage`: line-protocol writes (v1 /write or v2 /api/v2/write) with
// batching and retries, and InfluxQL /query (1.x, 2.x's v1 API, 3.x). Credentials go in headers, never in logs.
import { InfluxDB, Point, HttpError } from '@influxdata/influxdb-client';
import type { OptionSpec, ParsedArgs } from '../lib/args';
import { configError, NettallyError } from '../lib/errors';
import type { OutPoint } from './aggregator';

export interface InfluxConfig {
  url: string;
  api: 'v1' | 'v2';
  /** v1 database (and the v2 bucket, unless `bucket` is set). */
  db: string;
  rp?: string;
  bucket?: string;
  org?: string;
  token?: string;
  username?: string;
  password?: string;
  /** Lines per HTTP request. */
  batchSize: number;
  timeoutMs: number;
}

export const INFLUX_OPTIONS: readonly OptionSpec[] = [
  { name: 'influx-url', type: 'string', env: 'INFLUX_URL', default: 'http://127.0.0.1:8086', help: 'InfluxDB base URL' },
  { name: 'influx-api', type: 'enum', env: 'INFLUX_API', choices: ['v1', 'v2'], default: 'v1', help: 'write API: v1 /write (InfluxDB 1.x) or v2 /api/v2/write (1.8+, 2.x, 3.x)' },
  { name: 'influx-db', type: 'string', env: 'INFLUX_DB', default: 'nettally', help: 'database (v1 writes and all InfluxQL queries)' },
  { name: 'influx-rp', type: 'string', env: 'INFLUX_RP', help: 'retention policy for v1 writes and queries (default: the database default)' },
  { name: 'influx-bucket', type: 'string', env: 'INFLUX_BUCKET', help: 'bucket for v2 writes (default: <influx-db>/<influx-rp> or <influx-db>)' },
  { name: 'influx-org', type: 'string', env: 'INFLUX_ORG', default: '-', help: 'organization for v2 writes ("-" for 1.8 compatibility)' },
  { name: 'influx-token', type: 'string', env: 'INFLUX_TOKEN', secret: true, help: 'API token (Authorization: Token)' },
  { name: 'influx-username', type: 'string', env: 'INFLUX_USERNAME', help: 'user name (1.x authentication)' },
  { name: 'influx-password', type: 'string', env: 'INFLUX_PASSWORD', secret: true, help: 'password (1.x authentication)' },
  { name: 'influx-timeout', type: 'duration', env: 'INFLUX_TIMEOUT', default: 10_000, min: 100, help: 'timeout of one InfluxDB request' },
];

export function influxConfigFrom(args: ParsedArgs, batchSize = 5000): InfluxConfig {
  const url = args.str('influx-url');
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw configError('--influx-url (env INFLUX_URL)', `${JSON.stringify(url)} is not a URL such as http://127.0.0.1:8086`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw configError('--influx-url (env INFLUX_URL)', 'must be http:// or https://');
  const db = args.str('influx-db');
  if (db === '') throw configError('--influx-db (env INFLUX_DB)', 'must not be empty');
  const username = args.optStr('influx-username');
  const password = args.optStr('influx-password');
  const token = args.optStr('influx-token');
  if ((username === undefined) !== (password === undefined)) {
    throw configError('--influx-username/--influx-password (env INFLUX_USERNAME/INFLUX_PASSWORD)', 'give both or neither');
  }
  if (token !== undefined && username !== undefined) throw configError('--influx-token (env INFLUX_TOKEN)', 'give a token or a user name/password, not both');
  return Object.freeze({
    url: url.replace(/\/+$/, ''),
    api: args.str('influx-api') as 'v1' | 'v2',
    db,
    rp: args.optStr('influx-rp'),
    bucket: args.optStr('influx-bucket'),
    org: args.optStr('influx-org'),
    token,
    username,
    password,
    batchSize,
    timeoutMs: args.num('influx-timeout'),
  });
}

/** Line protocol of one point with the client's escaping; integers stay integers (`i` suffix). */
export function toLine(p: OutPoint): string {
  const pt = new Point(p.measurement);
  for (const [k, v] of Object.entries(p.tags)) pt.tag(k, v);
  for (const [k, v] of Object.entries(p.fields)) {
    if (typeof v === 'boolean') pt.booleanField(k, v);
    else pt.intField(k, v);
  }
  pt.timestamp(String(p.time_ms));
  const line = pt.toLineProtocol();
  if (line === undefined) throw new NettallyError('INTERNAL', `point ${p.measurement} has no fields`);
  return line;
}

function unavailable(what: string, err: unknown): NettallyError {
  const status = err instanceof HttpError ? err.statusCode : undefined;
  const body = err instanceof HttpError ? err.body?.slice(0, 300) : undefined;
  // 4xx other than timeouts/rate limits will not get better by retrying the same request.
  const retriable = status === undefined || status >= 500 || status === 408 || status === 429;
  return new NettallyError('INFLUX_UNAVAILABLE', `InfluxDB ${what} failed: ${status ? `HTTP ${status} ` : ''}${body ?? (err as Error).message}`, {
    retriable,
    cause: err,
    context: { status },
  });
}

/** A thin InfluxDB client: whole-batch writes (the caller retries) and InfluxQL queries. */
export class InfluxClient {
  private readonly client: InfluxDB;
  constructor(readonly config: InfluxConfig) {
    this.client = new InfluxDB({ url: config.url, timeout: config.timeoutMs });
  }

  private headers(): Record<string, string> {
    const c = this.config;
    if (c.token !== undefined) return { Authorization: `Token ${c.token}` };
    if (c.username !== undefined) {
      if (c.api === 'v2') return { Authorization: `Token ${c.username}:${c.password ?? ''}` };
      return { Authorization: `Basic ${Buffer.from(`${c.username}:${c.password ?? ''}`).toString('base64')}` };
    }
    return {};
  }

  private writePath(): string {
    const c = this.config;
    const q = new URLSearchParams();
    if (c.api === 'v1') {
      q.set('db', c.db);
      if (c.rp) q.set('rp', c.rp);
      q.set('precision', 'ms');
      return `/write?${q}`;
    }
    q.set('org', c.org ?? '-');
    q.set('bucket', c.bucket ?? (c.rp ? `${c.db}/${c.rp}` : c.db));
    q.set('precision', 'ms');
    return `/api/v2/write?${q}`;
  }

  /** Writes all points (in batches); resolves once InfluxDB acknowledged every one. Throws INFLUX_UNAVAILABLE. */
  async write(points: readonly OutPoint[], signal?: AbortSignal): Promise<void> {
    const path = this.writePath();
    for (let i = 0; i < points.length; i += this.config.batchSize) {
      const body = points.slice(i, i + this.config.batchSize).map(toLine).join('\n');
      try {
        await this.client.transport.request(path, body, {
          method: 'POST',
          headers: { 'content-type': 'text/plain; charset=utf-8', ...this.headers() },
          gzipThreshold: 64 * 1024,
          ...(signal ? { signal } : {}),
        });
      } catch (e) {
        throw unavailable('write', e);
      }
    }
  }

  /** Runs InfluxQL; returns the `results` array of the 1.x JSON response. Times are epoch ms. */
  async query(q: string, signal?: AbortSignal): Promise<InfluxQLResult[]> {
    const params = new URLSearchParams({ db: this.config.db, q, epoch: 'ms' });
    if (this.config.rp) params.set('rp', this.config.rp);
    let res: { results?: InfluxQLResult[]; error?: string };
    try {
      res = (await this.client.transport.request(`/query?${params}`, '', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...this.headers() },
        ...(signal ? { signal } : {}),
      })) as { results?: InfluxQLResult[]; error?: string };
    } catch (e) {
      throw unavailable('query', e);
    }
    if (res.error) throw new NettallyError('INFLUX_UNAVAILABLE', `InfluxDB query failed: ${res.error}`);
    for (const r of res.results ?? []) if (r.error) throw new NettallyError('INFLUX_UNAVAILABLE', `InfluxDB query failed: ${r.error}`, { context: { query: q } });
    return res.results ?? [];
  }

  /** CREATE DATABASE (idempotent on 1.x); a no-op error on servers without it is left to the caller. */
  async ensureDatabase(): Promise<void> {
    await this.query(`CREATE DATABASE ${quoteIdent(this.config.db)}`);
  }
}

export interface InfluxQLSeries {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values: unknown[][];
}

export interface InfluxQLResult {
  statement_id?: number;
  series?: InfluxQLSeries[];
  error?: string;
}

export function quoteIdent(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

export function quoteString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

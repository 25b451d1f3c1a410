// InfluxDB access for the consumer and `nettally usage`: line-protocol writes (v1 /write or v2 /api/v2/write) with
// batching and retries, and InfluxQL /query (1.x, 2.x's v1 API, 3.x). Credentials go in headers, never in logs.
import { InfluxDB, HttpError } from '@influxdata/influxdb-client';
import type { OptionSpec, ParsedArgs } from '../lib/args';
import { configError, NettallyError } from '../lib/errors';
import type { OutPoint } from './windows';
import { escapeControls, hexEscape } from '../lib/text';

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

// Tag text. InfluxDB 1.x cannot store every string as a tag value: a newline ends the line, and a backslash right
// before `,`, `=`, a space or the end of the value is always read as an escape, however many backslashes precede it
// (`x\` wrote `comm=x\,direction=…`: HTTP 400 "invalid tag format", and the partition stalled). So tag values are
// stored in a reversible text encoding that leaves ordinary names as they are: the backslash itself, control
// characters (C0, DEL, C1) and nothing else become `\xHH` (two lower-case hex digits), so every stored backslash is
// followed by `x`; lone UTF-16 surrogates become U+FFFD (UTF-8 cannot carry them; a decoded Avro string never has
// one). Readers undo it with decodeTagText (`nettally usage` does). test/influx-write.test.ts checks it byte by byte
// against influxd.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** A tag value as stored in InfluxDB (before line-protocol escaping): see the contract in consumer/README.md. */
export function encodeTagText(s: string): string {
  return escapeControls(s.replace(LONE_SURROGATE, '\ufffd').replace(/\\/g, hexEscape));
}

/** Inverse of encodeTagText; a backslash not starting `\xHH` (tags written before the encoding existed) stays. */
export function decodeTagText(s: string): string {
  if (!s.includes('\\')) return s;
  return s.replace(/\\x([0-9a-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

/** Line-protocol escaping of a tag key/value or field key (`,`, `=` and space; after encodeTagText no newline is left). */
function lp(s: string): string {
  return encodeTagText(s).replace(/[,= ]/g, '\\$&');
}

// lp() of tag values and keys seen lately: tag values repeat across a flush's points (hosts, ports, process names…),
// so each distinct one is escaped once instead of through three regular expressions per point. Bounded: cleared
// when full (tag cardinality is bounded by design; the bound only caps a pathological fleet).
const LP_CACHE_MAX = 50_000;
const lpCache = new Map<string, string>();
function lpCached(s: string): string {
  let v = lpCache.get(s);
  if (v === undefined) {
    v = lp(s);
    if (lpCache.size >= LP_CACHE_MAX) lpCache.clear();
    lpCache.set(s, v);
  }
  return v;
}

/** How one shape of point (measurement, its tag keys and field keys in insertion order) is written. */
interface LinePlan {
  tagKeys: string[];
  fieldKeys: string[];
  /** Tag keys sorted, with their escaped `,key=` prefix. */
  tags: [string, string][];
  /** Field keys sorted, with their escaped `key=` prefix (`,key=` after the first). */
  fields: [string, string][];
  measurement: string;
}
const plans = new Map<string, LinePlan>();

function sameKeys(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The plan of `p`'s shape: cached per measurement while its points keep the same keys (windows.ts builds them so). */
function planOf(p: OutPoint): LinePlan {
  const tagKeys = Object.keys(p.tags);
  const fieldKeys = Object.keys(p.fields);
  const cached = plans.get(p.measurement);
  if (cached && sameKeys(cached.tagKeys, tagKeys) && sameKeys(cached.fieldKeys, fieldKeys)) return cached;
  const plan: LinePlan = {
    tagKeys,
    fieldKeys,
    tags: [...tagKeys].sort().map((k) => [k, `,${lp(k)}=`]),
    fields: [...fieldKeys].sort().map((k, i) => [k, `${i > 0 ? ',' : ''}${lp(k)}=`]),
    measurement: p.measurement.replace(/[, ]/g, '\\$&'),
  };
  if (plans.size >= 1000) plans.clear();
  plans.set(p.measurement, plan);
  return plan;
}

/**
 * Line protocol of one point: tags sorted by key (what InfluxDB prefers), empty tag values left out (InfluxDB has no
 * empty tag; it reads back as ''), integers in exact decimal with the `i` suffix. A field that is not an integer or
 * boolean cannot be written (a bug upstream): INTERNAL; the writer dead-letters that point instead of stalling.
 * Escaped keys, their order and escaped tag values are cached (planOf, lpCached): one string built per point.
 */
export function toLine(p: OutPoint): string {
  const plan = planOf(p);
  let line = plan.measurement;
  for (const [k, prefix] of plan.tags) {
    const v = p.tags[k];
    if (v !== '') line += prefix + lpCached(v);
  }
  if (plan.fields.length === 0) throw new NettallyError('INTERNAL', `point ${p.measurement} has no fields`);
  line += ' ';
  for (const [k, prefix] of plan.fields) {
    const v = p.fields[k];
    if (typeof v === 'boolean') line += prefix + (v ? 'T' : 'F');
    // exact decimal: String() of a safe integer; BigInt past 2^53 (String(1e21) is "1e+21", not line protocol)
    else if (Number.isSafeInteger(v)) line += `${prefix}${v}i`;
    else if (Number.isInteger(v)) line += `${prefix}${BigInt(v)}i`;
    else throw new NettallyError('INTERNAL', `point ${p.measurement} field ${k} is ${v}, not an integer`);
  }
  if (!Number.isSafeInteger(p.time_ms)) throw new NettallyError('INTERNAL', `point ${p.measurement} has time ${p.time_ms}`);
  return `${line} ${p.time_ms}`;
}

/** A point InfluxDB refused for its content (or that could not be encoded): the consumer dead-letters it. */
export interface RejectedPoint {
  point: OutPoint;
  /** The line-protocol line as sent ('' when it could not be encoded). */
  line: string;
  status: number | undefined;
  /** field_type_conflict, too_large, beyond_retention, limit_exceeded, invalid_line, unencodable, refused. */
  reason: string;
  error: string;
}

/**
 * 4xx answers that refuse the *content* of a write (a bad or conflicting point, a too large body): the batch is split
 * to find the refused points. 401/403/404 (credentials, permissions, missing database/bucket) refuse the request
 * itself: every point would be refused alike, so they block and retry like an outage (loudly) instead of
 * dead-lettering all data; 408/429 are transient.
 */
function refusesContent(status: number | undefined): boolean {
  return status !== undefined && status >= 400 && status < 500 && ![401, 403, 404, 407, 408, 429].includes(status);
}

function refusalReason(status: number | undefined, body: string): string {
  if (status === 413) return 'too_large';
  if (/field type conflict/i.test(body)) return 'field_type_conflict';
  if (/beyond retention/i.test(body)) return 'beyond_retention';
  if (/max-(values-per-tag|series-per-database)/i.test(body)) return 'limit_exceeded';
  if (/unable to parse|invalid/i.test(body)) return 'invalid_line';
  return 'refused';
}

function unavailable(what: string, err: unknown): NettallyError {
  const status = err instanceof HttpError ? err.statusCode : undefined;
  const body = err instanceof HttpError ? err.body?.slice(0, 300) : undefined;
  // 4xx other than timeouts/rate limits will not get better by retrying the same request.
  const retriable = status === undefined || status >= 500 || status === 408 || status === 429;
  return new NettallyError('INFLUX_UNAVAILABLE', `InfluxDB ${what} failed: ${status ? `HTTP ${status} ` : ''}${body ?? (err as Error).message}`, {
    retriable,
    cause: err,
    context: { status, refusesContent: what === 'write' && refusesContent(status) },
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

  /**
   * Writes all points in batches and resolves once InfluxDB acknowledged every one it accepts. A batch refused for
   * its content is bisected down to the refused points, which are returned (the others are written; rewriting a
   * point InfluxDB already took from a partial write is idempotent). Throws INFLUX_UNAVAILABLE for anything else
   * (outage, 5xx, timeout, 401/403/404, or `signal` aborted): the caller retries the whole call.
   */
  async write(points: readonly OutPoint[], signal?: AbortSignal): Promise<RejectedPoint[]> {
    const rejected: RejectedPoint[] = [];
    const lines: { point: OutPoint; line: string }[] = [];
    for (const point of points) {
      try {
        lines.push({ point, line: toLine(point) });
      } catch (e) {
        rejected.push({ point, line: '', status: undefined, reason: 'unencodable', error: (e as Error).message });
      }
    }
    for (let i = 0; i < lines.length; i += this.config.batchSize) await this.writeSplitting(lines.slice(i, i + this.config.batchSize), rejected, signal);
    return rejected;
  }

  private async writeSplitting(batch: readonly { point: OutPoint; line: string }[], rejected: RejectedPoint[], signal: AbortSignal | undefined): Promise<void> {
    try {
      await this.post(batch.map((b) => b.line).join('\n'), signal);
    } catch (e) {
      if (!(e instanceof NettallyError) || e.context.refusesContent !== true) throw e;
      if (batch.length === 1) {
        const status = e.context.status as number | undefined;
        rejected.push({ ...batch[0], status, reason: refusalReason(status, e.message), error: e.message });
        return;
      }
      // Halves until the refused points are alone: k bad points in a batch of n cost about 2·k·log2(n) requests.
      const mid = batch.length >> 1;
      await this.writeSplitting(batch.slice(0, mid), rejected, signal);
      await this.writeSplitting(batch.slice(mid), rejected, signal);
    }
  }

  private async post(body: string, signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted) throw new NettallyError('INFLUX_UNAVAILABLE', 'InfluxDB write aborted', { retriable: true });
    try {
      await this.client.transport.request(this.writePath(), body, {
        method: 'POST',
        headers: { 'content-type': 'text/plain; charset=utf-8', ...this.headers() },
        gzipThreshold: 64 * 1024,
        ...(signal ? { signal } : {}),
      });
    } catch (e) {
      throw unavailable('write', e);
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

// Scenario: hostile tag text against a real influxd 1.6.7. Every byte value 0..255 (as the producer maps kernel comm
// bytes: one byte → the code point of the same value) and combinations of the line-protocol specials are written as
// `comm` (and `hostname`) and read back through runUsage — the query code of `nettally usage` — exactly.
import { InfluxClient } from '../consumer/influx';
import { runUsage } from '../consumer/usage';
import type { OutPoint } from '../consumer/aggregator';
import { startInflux, type TestInflux } from './helpers/influx';

const T0 = Date.UTC(2026, 0, 7, 10, 0, 0);
let influx: TestInflux;

beforeAll(async () => {
  influx = await startInflux();
});

afterAll(async () => {
  await influx?.destroy();
});

function client(db: string, batchSize = 5000): InfluxClient {
  return new InfluxClient({ url: influx.url, api: 'v1', db, batchSize, timeoutMs: 10_000 });
}

function point(hostId: string, comm: string, tx: number, timeMs = T0, hostname = 'h'): OutPoint {
  return {
    measurement: 'nettally_traffic_1m',
    tags: { partition: '0', host_id: hostId, hostname, netns: '1', protocol: 'tcp', direction: 'outbound', service_port: '80', comm },
    fields: { final: true, tx_bytes: tx, rx_bytes: 0, connections_opened: 0, connections_closed: 0, retransmits: 0 },
    time_ms: timeMs,
  };
}

/** Names built from kernel bytes the way producer/records.ts cstr() does (latin1: byte b → U+00bb). */
function fromBytes(bytes: number[]): string {
  return Buffer.from(bytes).toString('latin1');
}

function hostileNames(): string[] {
  const names = new Set<string>();
  for (let b = 0; b < 256; b++) {
    names.add(fromBytes([b]));
    names.add(fromBytes([0x61, b]));
    names.add(fromBytes([b, 0x61]));
    names.add(fromBytes([0x61, b, 0x62]));
    names.add(fromBytes([b, b]));
  }
  const specials = ['\\', ',', '=', ' ', '"', "'", '\n', '\r', '\t', '#', '\x00', '\x1b', '\x7f', '\x85', '\xff', 'x'];
  for (const a of specials) for (const b of specials) {
    names.add(a + b);
    names.add(`p${a}${b}`);
    for (const c of ['\\', ',', ' ', '=']) names.add(a + b + c);
  }
  for (const s of ['ev"il=,x \\', 'x\\', '\\\\', '\\x41', '\\\\x41', '\\n', '-', ' lead', 'trail ', '=eq', 'a\\ b', 'a\\,b', 'a\\=b']) names.add(s);
  // random 1..15-byte names (the kernel's TASK_COMM_LEN − 1), seeded so a failure reproduces
  let s = 12345;
  const rnd = (n: number): number => (s = (s * 1103515245 + 12345) % 2147483648) % n;
  for (let i = 0; i < 400; i++) names.add(fromBytes(Array.from({ length: 1 + rnd(15) }, () => rnd(256))));
  // names other producers may send as real UTF-8 text: any code point, astral ones too
  const cps = [0x5c, 0x2c, 0x3d, 0x20, 0x0a, 0xe9, 0x2028, 0xfeff, 0xfffd, 0x65e5, 0x1f600, 0x10ffff];
  const anyScalar = (): number => {
    const cp = rnd(0x110000);
    return cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp; // a scalar value: surrogates are not characters
  };
  for (let i = 0; i < 100; i++) names.add(String.fromCodePoint(...Array.from({ length: 1 + rnd(8) }, () => (rnd(2) ? cps[rnd(cps.length)] : anyScalar()))));
  names.delete(''); // an empty comm never reaches InfluxDB: the aggregator writes '-'
  return [...names];
}

test('every byte value and combination of specials as comm and hostname reads back exactly through nettally usage', async () => {
  const db = 'nt_fuzz';
  const c = client(db, 700);
  await c.ensureDatabase();
  const names = hostileNames();
  expect(names.length).toBeGreaterThan(1500);
  const points = names.map((n, i) => point(`h${i}`, n, i + 1, T0, n));
  const rejected = await c.write(points);
  expect(rejected.map((r) => r.line)).toEqual([]);
  const rows = await runUsage(c, { measurement: 'traffic', fromMs: T0 - 60_000, toMs: T0 + 60_000, windowMs: 60_000, groupBy: ['process'] });
  const got = new Map(rows.map((r) => [r.tags.host_id, { comm: r.tags.comm, hostname: r.tags.hostname, tx: r.fields.tx_bytes }]));
  const mismatches: string[] = [];
  names.forEach((n, i) => {
    const g = got.get(`h${i}`);
    if (!g || g.comm !== n || g.hostname !== n || g.tx !== i + 1) mismatches.push(`${JSON.stringify(n)} → ${JSON.stringify(g)}`);
  });
  expect(mismatches).toEqual([]);
  expect(rows.length).toBe(names.length);
});

test('a batch with refused points among good ones: the refused ones are found and returned, every other point is stored', async () => {
  const c = client('nt_bisect', 400);
  await c.ensureDatabase();
  const bad = new Set([0, 137, 138, 901, 999]);
  // a series key over 64 KiB is refused by influxd (HTTP 400) point by point
  const points = Array.from({ length: 1000 }, (_, i) => point(`h${i}`, bad.has(i) ? 'x'.repeat(70_000) : `p${i}`, i + 1));
  const rejected = await c.write(points);
  expect(rejected.map((r) => Number(r.point.tags.host_id.slice(1))).sort((a, b) => a - b)).toEqual([...bad]);
  expect(rejected.every((r) => r.status === 400 && r.reason === 'invalid_line' && r.line.startsWith('nettally_traffic_1m,'))).toBe(true);
  const rows = await runUsage(c, { measurement: 'traffic', fromMs: T0 - 60_000, toMs: T0 + 60_000, windowMs: 60_000, groupBy: ['host'] });
  expect(rows.map((r) => r.tags.host_id).sort()).toEqual(points.map((p, i) => (bad.has(i) ? '' : p.tags.host_id)).filter(Boolean).sort());
  expect(rows.reduce((s, r) => s + r.fields.tx_bytes, 0)).toBe(points.reduce((s, _p, i) => s + (bad.has(i) ? 0 : i + 1), 0));
});

test('a refusal of the request itself (database missing: HTTP 404) throws instead of dead-lettering every point', async () => {
  const c = client('nt_never_created');
  await expect(c.write([point('h1', 'curl', 1)])).rejects.toMatchObject({ code: 'INFLUX_UNAVAILABLE', context: { status: 404, refusesContent: false } });
});

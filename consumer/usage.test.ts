// Unit tests of the usage queries/formatting, the line protocol of points and the state-store commit pointer.
import { toLine } from './influx';
import { parseCommitMetadata, commitMetadata } from './state-store';
import { billingQuery, buildQueries, formatRows, groupTags, measurementName, parseBillingPer, parseGroupBy, parseTime } from './usage';
import { nsToMs } from './records';

test('parseTime accepts now, relative durations, ISO dates and Unix seconds/ms, and names the setting otherwise', () => {
  const now = Date.UTC(2026, 10, 22, 12, 0, 0);
  expect(parseTime('--from', 'now', now)).toBe(now);
  expect(parseTime('--from', '-90m', now)).toBe(now - 90 * 60_000);
  expect(parseTime('--from', '2026-11-01T00:00:00Z', now)).toBe(Date.UTC(2026, 10, 1));
  expect(parseTime('--from', '1700000000', now)).toBe(1_700_000_000_000);
  expect(parseTime('--from', '1700000000123', now)).toBe(1_700_000_000_123);
  expect(() => parseTime('--from', 'yesterday', now)).toThrow(/--from/);
});

test('queries sum across partitions per window and group, and find non-final groups', () => {
  const q = { measurement: 'traffic' as const, fromMs: 1000, toMs: 2000, windowMs: 60_000, groupBy: ['host' as const, 'port' as const] };
  expect(measurementName(q)).toBe('nettally_traffic_1m');
  expect(groupTags(q)).toEqual(['host_id', 'hostname', 'protocol', 'service_port']);
  const { sums, open } = buildQueries(q);
  expect(sums).toBe(
    'SELECT sum("tx_bytes") AS "tx_bytes", sum("rx_bytes") AS "rx_bytes", sum("connections_opened") AS "connections_opened", ' +
      'sum("connections_closed") AS "connections_closed", sum("retransmits") AS "retransmits", sum("active_connections") AS "active_connections", ' +
      'sum("peak_connections") AS "peak_connections" FROM "nettally_traffic_1m" ' +
      'WHERE time >= 1000ms AND time < 2000ms GROUP BY time(60000ms), "host_id", "hostname", "protocol", "service_port" fill(none)',
  );
  expect(open).toContain('"final" = false');
  expect(measurementName({ measurement: 'iface', windowMs: 3_600_000 })).toBe('nettally_iface_1h');
});

test('workload and remote_class groups; billing per several groups; open-connection counts never summed over windows', () => {
  expect(groupTags({ groupBy: parseGroupBy('--group-by', ['workload', 'remote_class'], 'traffic') })).toEqual(['workload', 'remote_class']);
  expect(parseGroupBy('--group-by', ['workload'], 'iface')).toEqual(['workload']);
  expect(() => parseGroupBy('--group-by', ['remote_class'], 'iface')).toThrow('invalid setting --group-by: remote_class does not apply to --measurement iface');
  expect(billingQuery(0, 1, parseBillingPer('--per', ['workload', 'remote_class'])).groupBy).toEqual(['workload', 'remote_class']);
  expect(() => parseBillingPer('--per', ['pod'])).toThrow('invalid setting --per: unknown "pod"; choose from host, netns, workload, remote_class');
  const coarse = buildQueries({ measurement: 'traffic', fromMs: 0, toMs: 1, windowMs: 60_000, stepMs: 600_000, groupBy: ['workload'] }).sums;
  expect(coarse).toContain('sum("retransmits")');
  expect(coarse).not.toContain('active_connections');
});

test('a query can sum fewer fields in coarser buckets (dashboard charts, billing)', () => {
  const q = { measurement: 'traffic' as const, fromMs: 0, toMs: 3_600_000, windowMs: 60_000, stepMs: 600_000, groupBy: ['host' as const], fields: ['tx_bytes', 'rx_bytes'] };
  const { sums, open } = buildQueries(q);
  expect(sums).toBe('SELECT sum("tx_bytes") AS "tx_bytes", sum("rx_bytes") AS "rx_bytes" FROM "nettally_traffic_1m" WHERE time >= 0ms AND time < 3600000ms GROUP BY time(600000ms), "host_id", "hostname" fill(none)');
  expect(open).toBe('SELECT count("tx_bytes") AS n FROM "nettally_traffic_1m" WHERE time >= 0ms AND time < 3600000ms AND "final" = false GROUP BY time(600000ms), "host_id", "hostname" fill(none)');
  expect(buildQueries(billingQuery(0, 3_600_000, 'netns')).sums).toBe(
    'SELECT sum("tx_bytes") AS "tx_bytes", sum("rx_bytes") AS "rx_bytes" FROM "nettally_traffic_1h" WHERE time >= 0ms AND time < 3600000ms GROUP BY time(3600000ms), "host_id", "hostname", "netns" fill(none)',
  );
});

test('formats: aligned table, CSV with quoting, JSON', () => {
  const recs = [
    { window: '2026-01-01T00:00:00.000Z', comm: 'a,b', tx_bytes: 5, final: true },
    { window: '2026-01-01T00:01:00.000Z', comm: 'say "hi"', tx_bytes: 12345, final: false },
  ];
  const cols = ['window', 'comm', 'tx_bytes', 'final'];
  expect(formatRows(recs, cols, 'csv')).toBe('window,comm,tx_bytes,final\n2026-01-01T00:00:00.000Z,"a,b",5,true\n2026-01-01T00:01:00.000Z,"say ""hi""",12345,false\n');
  expect(JSON.parse(formatRows(recs, cols, 'json'))).toEqual(recs);
  const table = formatRows(recs, cols, 'table').split('\n');
  expect(table[0]).toMatch(/^window\s+comm\s+tx_bytes\s+final$/);
  expect(table[1]).toContain('        5');
  expect(formatRows([], cols, 'table')).toMatch(/no data/);
});

test('points become line protocol with integer fields, escaped tags and ms timestamps', () => {
  const line = toLine({ measurement: 'nettally_traffic_1m', tags: { partition: '0', comm: 'my proc,x' }, fields: { tx_bytes: 12, final: true }, time_ms: 1_700_000_000_000 });
  expect(line).toBe('nettally_traffic_1m,comm=my\\ proc\\,x,partition=0 final=T,tx_bytes=12i 1700000000000');
});

test('commit metadata points at a state snapshot', () => {
  expect(parseCommitMetadata(commitMetadata(3, '12345'))).toEqual({ partition: 3, offset: '12345' });
  expect(parseCommitMetadata(commitMetadata(3, '12399', '12345'))).toEqual({ partition: 3, offset: '12399', base: '12345' });
  expect(parseCommitMetadata('')).toBeUndefined();
  expect(parseCommitMetadata(null)).toBeUndefined();
});

test('nanosecond event times become ms exactly, also past 2^53', () => {
  expect(nsToMs(1_795_316_707_609_123_456n)).toBe(1_795_316_707_609);
  expect(nsToMs(-1n)).toBe(-1);
  expect(nsToMs(5_000_000)).toBe(5);
});

test('a table shows control characters in names as \\xHH; csv and json keep the exact text', () => {
  const recs = [{ comm: 'a\x1b]0;x\x07', tx_bytes: 1 }];
  expect(formatRows(recs, ['comm', 'tx_bytes'], 'table')).toContain('a\\x1b]0;x\\x07');
  expect(formatRows(recs, ['comm', 'tx_bytes'], 'json')).toContain('a\\u001b]0;x\\u0007');
  expect(formatRows(recs, ['comm', 'tx_bytes'], 'csv')).toContain('a\x1b]0;x\x07');
});

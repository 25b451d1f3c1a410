// The opened/closed counting rule (issue 13): a connection counts as opened exactly once, on the first record the
// consumer sees of it — established, sample or closed — since producers ship a short connection only as `closed`.
// Not counted: a connection whose first record is a producer `snapshot` sample (it was open before anyone watched).
// Deduped across producer restarts (the same connection re-sent under a new epoch) and consumer restarts (state
// snapshot + restore).
import { PartitionAggregator } from './aggregator';
import type { ConnInput } from './records';

const T0 = Date.UTC(2026, 0, 5, 10, 0, 0);
const HOST = 'h';

let seq = 0;
function rec(event: ConnInput['event'], over: Partial<ConnInput> = {}): ConnInput {
  seq += 1;
  return {
    kind: 'conn', event, host_id: HOST, hostname: 'host', boot_id: 'b', epoch: 1, seq, time_ms: T0 + seq, cookie: '42',
    tx_bytes: 100, rx_bytes: 0, retransmits: 0, netns: 1, comm: 'curl', protocol: 6, direction: 1, sport: 50000, dport: 443,
    flush_reason: event === 'open' ? 'open' : event === 'close' ? 'close' : 'interval', start_ns: 1_000, ...over,
  };
}

/** connections_opened / connections_closed per 1-minute window start (ms offset from T0). */
function counts(agg: PartitionAggregator): Record<number, [number, number]> {
  const out: Record<number, [number, number]> = {};
  for (const p of agg.pending().points) {
    if (p.measurement !== 'nettally_traffic_1m') continue;
    const o = Number(p.fields.connections_opened ?? 0);
    const c = Number(p.fields.connections_closed ?? 0);
    if (o === 0 && c === 0) continue;
    const k = p.time_ms - T0;
    const prev = out[k] ?? [0, 0];
    out[k] = [prev[0] + o, prev[1] + c];
  }
  return out;
}

function run(records: ConnInput[]): Record<number, [number, number]> {
  const agg = new PartitionAggregator({ partition: 0 });
  for (const r of records) agg.add(r);
  return counts(agg);
}

test('a connection shipped only as closed counts opened and closed once', () => {
  expect(run([rec('close')])).toEqual({ 0: [1, 1] });
});

test('whichever record comes first (established, sample, closed) counts the opening; later ones do not', () => {
  expect(run([rec('open', { tx_bytes: 0 }), rec('close')])).toEqual({ 0: [1, 1] });
  expect(run([rec('sample'), rec('sample', { tx_bytes: 200 }), rec('close', { tx_bytes: 200 })])).toEqual({ 0: [1, 1] });
  expect(run([rec('sample', { flush_reason: 'threshold' }), rec('close')])).toEqual({ 0: [1, 1] });
});

test('a connection first seen in a producer snapshot sample was open before anyone watched: closed, not opened', () => {
  expect(run([rec('sample', { flush_reason: 'snapshot' }), rec('close')])).toEqual({ 0: [0, 1] });
});

test('the same closed connection re-sent by a restarted producer (new epoch, snapshot close) counts once', () => {
  const first = rec('close');
  const again = rec('close', { epoch: 2, seq: 1, flush_reason: 'snapshot', time_ms: first.time_ms + 5_000 });
  expect(run([first, again])).toEqual({ 0: [1, 1] });
});

test('a consumer restart (state snapshot, restore) keeps the connection counted: a re-sent close adds nothing', () => {
  const a = new PartitionAggregator({ partition: 0 });
  a.add(rec('close'));
  expect(counts(a)).toEqual({ 0: [1, 1] });
  const b = new PartitionAggregator({ partition: 0 });
  b.restore(JSON.parse(JSON.stringify(a.snapshot())) as Record<string, unknown>);
  b.add(rec('close', { epoch: 2, seq: 1, flush_reason: 'snapshot' }));
  expect(counts(b)).toEqual({ 0: [1, 1] });
});

test('the opening is counted in the window of the first record seen: established in its window, closed-only in the close window', () => {
  const minute = 60_000;
  expect(run([rec('open', { tx_bytes: 0, time_ms: T0 + 59_999 }), rec('close', { time_ms: T0 + minute + 1 })])).toEqual({ 0: [1, 0], [minute]: [0, 1] });
  expect(run([rec('close', { time_ms: T0 + minute + 1 })])).toEqual({ [minute]: [1, 1] });
});

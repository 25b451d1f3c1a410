// Following live traffic, the 1 h rollup is rewritten at most once per 1 m window (when one of its inputs became
// final), not at every preview round (issue 12: InfluxDB received ~720 rewrites of each busy hour at 5 s previews).
// The hour's final point and the 1 m points stay exact; a graceful stop ('all') still writes every changed cell.
import { PartitionAggregator } from './aggregator';
import type { AggInput } from './records';

const START = Date.UTC(2026, 0, 5, 10, 0, 0);
const MIN = 60_000;

function conn(seq: number, time_ms: number, tx_bytes: number): AggInput {
  return {
    kind: 'conn', event: seq === 1 ? 'open' : 'sample', host_id: 'h', hostname: 'h', boot_id: 'b', epoch: 1, cookie: '1', rx_bytes: 0,
    retransmits: 0, netns: 1, comm: 'a', protocol: 6, direction: 1, sport: 40000, dport: 443, flush_reason: 'interval', start_ns: 1,
    seq, time_ms, tx_bytes, workload: 'w',
  } as AggInput;
}

/** A connection sending 10 bytes every 5 s of event time for `minutes`, a preview round after each record. */
function live(minutes: number, mode: 'previews' | 'all'): { hourWrites: number; minuteWrites: number; hourFinal: number; minuteFinalSum: number } {
  const agg = new PartitionAggregator({ partition: 0, allowedLatenessMs: 0 });
  let hourWrites = 0;
  let minuteWrites = 0;
  let hourFinal = -1;
  let minuteFinalSum = 0;
  const flush = (m: 'finals' | 'previews' | 'all'): void => {
    const p = agg.pending(m);
    for (const pt of p.points) {
      if (pt.measurement === 'nettally_traffic_1h') {
        hourWrites++;
        if (pt.fields.final === true) hourFinal = pt.fields.tx_bytes as number;
      } else if (pt.measurement === 'nettally_traffic_1m') {
        minuteWrites++;
        if (pt.fields.final === true) minuteFinalSum += pt.fields.tx_bytes as number;
      }
    }
    p.commit();
  };
  const n = (minutes * MIN) / 5000;
  for (let i = 1; i <= n; i++) {
    agg.add(conn(i, START + (i - 1) * 5000, i * 10));
    flush(mode);
  }
  // the next hour's first record makes the whole first hour final
  agg.add(conn(n + 1, START + 60 * MIN, (n + 1) * 10));
  flush('finals');
  return { hourWrites, minuteWrites, hourFinal, minuteFinalSum };
}

test('live previews rewrite the 1 h rollup about once per 1 m window, the 1 m cells at every round; totals exact', () => {
  const r = live(60, 'previews');
  const sent = 60 * 12 * 10; // 720 records of 10 bytes in the hour (the first record's 10 bytes included)
  expect(r.hourFinal).toBe(sent);
  expect(r.minuteFinalSum).toBe(sent);
  // 1 m: each window previewed at each of its 12 rounds (11 while open + its final) → ~13 per window
  expect(r.minuteWrites).toBeGreaterThanOrEqual(60 * 12);
  // 1 h: one preview per round in which a 1 m window became final (≤ 60) + the final write
  expect(r.hourWrites).toBeLessThanOrEqual(61);
  expect(r.hourWrites).toBeGreaterThanOrEqual(2);
});

test("a graceful stop ('all') still writes the rollup's changed cells in every round", () => {
  const r = live(10, 'all');
  expect(r.hourWrites).toBeGreaterThanOrEqual(10 * 12);
});

// Incremental snapshots without Kafka: a full snapshot plus its deltas rebuilds exactly the state a full snapshot
// of the live aggregator holds, after random operations (the broker-level chain tests are in
// test/consumer-state.test.ts).
import { PartitionAggregator } from './aggregator';
import type { AggInput } from './records';
import { toAggInput } from './records';
import { type Delta, applyDeltas, deltaText, flatten, fullText } from './snapshot-chain';
import { mulberry32, synthesize } from './synthetic';
import type { Decoded } from '../schemas';

const START = Date.UTC(2026, 0, 5, 10, 0, 0);

/** Records of all hosts in event-time order (each host's own order kept). */
function merged(seed: number, hosts: number, conns: number, minutes: number): AggInput[] {
  const data = synthesize({ hosts, connsPerHost: conns, startMs: START, minutes, seed });
  const all = [...data.byHost.values()].flatMap((msgs) => msgs.map((m, i) => ({ m, i, t: Number((m.record.time_ns as bigint) / 1_000_000n) })));
  all.sort((a, b) => a.t - b.t || a.i - b.i);
  return all.map((x) => toAggInput(x.m as Decoded));
}

/** A state's JSON with row order normalised (a delta-rebuilt collection keeps a changed row in its old place). */
function canon(state: Record<string, unknown>): string {
  const byKey = (rows: unknown[]): unknown[] => [...rows].sort((a, b) => (JSON.stringify((a as unknown[])[0]) < JSON.stringify((b as unknown[])[0]) ? -1 : 1));
  const s = JSON.parse(JSON.stringify(state)) as Record<string, unknown>;
  for (const f of ['conns', 'ifaces', 'marks', 'hosts']) s[f] = byKey(s[f] as unknown[]);
  s.windows = (s.windows as [number, unknown[]][][]).map((set) => set.map(([start, cells]) => [start, byKey(cells)]));
  return JSON.stringify(s);
}

test('a full snapshot plus its deltas restores the state a full snapshot holds, after random operations', async () => {
  const records = merged(4242, 4, 60, 12);
  const rnd = mulberry32(99);
  const live = new PartitionAggregator({ partition: 3 });
  let prev = await flatten(live.snapshotLazy());
  const base = JSON.parse(fullText(prev)) as Record<string, unknown>;
  const deltas: Delta[] = [];
  let i = 0;
  let checks = 0;
  while (i < records.length) {
    // a random batch, sometimes with duplicates (a producer retry), then sometimes a flush (windows become final)
    const n = 1 + Math.floor(rnd() * 400);
    for (const r of records.slice(i, i + n)) {
      live.add(r);
      if (rnd() < 0.02) live.add(r);
    }
    i += n;
    if (rnd() < 0.6) live.pending().commit();
    const next = await flatten(live.snapshotLazy());
    deltas.push((JSON.parse(await deltaText(prev, next)) as Delta));
    prev = next;
    // the full text of a flattening is exactly snapshot()'s JSON
    expect(fullText(next)).toBe(JSON.stringify(live.snapshot()));
    const restored = new PartitionAggregator({ partition: 3 });
    restored.restore(applyDeltas(base, deltas));
    expect(canon(restored.snapshot())).toBe(canon(live.snapshot()));
    checks++;
  }
  expect(checks).toBeGreaterThan(5);
  // and the rebuilt state goes on exactly like the live one: the same points for the same next records
  const restored = new PartitionAggregator({ partition: 3 });
  restored.restore(applyDeltas(base, deltas));
  const more = merged(777, 4, 30, 3).map((r) => ({ ...r, time_ms: r.time_ms + 12 * 60_000 }) as AggInput);
  for (const r of more) {
    live.add(r);
    restored.add(r);
  }
  const sortPts = (a: PartitionAggregator): string => JSON.stringify(a.pending().points.map((p) => JSON.stringify(p)).sort());
  expect(sortPts(restored)).toBe(sortPts(live));
});

test('a delta is proportional to what changed: 1% of 5000 connections changing costs a few % of a full snapshot', async () => {
  const agg = new PartitionAggregator({ partition: 0 });
  const conn = (i: number, seq: number, tx: number): AggInput => ({
    kind: 'conn', event: seq === 1 ? 'open' : 'sample', host_id: `h${i % 50}`, hostname: `host-${i % 50}`, boot_id: `b${i % 50}`, epoch: 1,
    seq: seq * 1000 + Math.floor(i / 50), time_ms: START + seq * 1000, cookie: String(10_000 + i), tx_bytes: tx, rx_bytes: 2 * tx, retransmits: 0,
    netns: 4026531840, comm: 'curl', protocol: 6, direction: 1, sport: 40000 + (i % 20000), dport: 443, flush_reason: seq === 1 ? 'open' : 'interval',
  } as AggInput);
  for (let i = 0; i < 5000; i++) agg.add(conn(i, 1, 0));
  agg.pending().commit();
  const before = await flatten(agg.snapshotLazy());
  for (let i = 0; i < 50; i++) agg.add(conn(i * 100, 2, 5000 + i));
  const after = await flatten(agg.snapshotLazy());
  // uncompressed: gzip of these look-alike rows hides the difference (the bench measures gzip'd bytes)
  const full = fullText(after).length;
  const delta = (await deltaText(before, after)).length;
  expect(delta).toBeLessThan(full * 0.03);
  const d = JSON.parse(await deltaText(before, after)) as Delta;
  expect(d.up.conns).toHaveLength(50);
  expect(d.del).toEqual({});
});

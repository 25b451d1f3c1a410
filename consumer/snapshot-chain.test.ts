// Incremental snapshots without Kafka: a full snapshot plus its deltas rebuilds exactly the state a full snapshot
// of the live aggregator holds, after random operations (the broker-level chain tests are in
// test/consumer-state.test.ts).
import { PartitionAggregator } from './aggregator';
import type { AggInput } from './records';
import { toAggInput } from './records';
import { type Delta, type Link, type SavedRows, StringSink, applyDeltas, replayable, writeDelta, writeFull } from './snapshot-chain';
import { mulberry32, synthesize } from './synthetic';
import type { Decoded } from '../schemas';

const START = Date.UTC(2026, 0, 5, 10, 0, 0);

/** A full link of the live state: its text, and the link committed (as the state store does once it is stored). */
async function full(state: Record<string, unknown>): Promise<{ text: string; link: Link }> {
  const sink = new StringSink();
  const link = await writeFull(state, sink);
  link.commit();
  return { text: sink.text(), link };
}

/** The delta since `prev`, committed. */
async function delta(prev: SavedRows, state: Record<string, unknown>): Promise<{ text: string; link: Link }> {
  const sink = new StringSink();
  const link = await writeDelta(prev, state, sink);
  if (!link) throw new Error('no delta possible');
  link.commit();
  return { text: sink.text(), link };
}

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
  const first = await full(live.snapshotLazy());
  let prev = first.link.saved;
  const base = JSON.parse(first.text) as Record<string, unknown>;
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
    // a full link's text is exactly snapshot()'s JSON (written, not committed: the chain goes on with deltas)
    const sink = new StringSink();
    await writeFull(live.snapshotLazy(), sink);
    expect(sink.text()).toBe(JSON.stringify(live.snapshot()));
    const d = await delta(prev, live.snapshotLazy());
    deltas.push(JSON.parse(d.text) as Delta);
    prev = d.link.saved;
    const restored = new PartitionAggregator({ partition: 3 });
    restored.restore(applyDeltas(base, deltas));
    expect(canon(restored.snapshot())).toBe(canon(live.snapshot()));
    checks++;
  }
  expect(checks).toBeGreaterThan(5);
  // the run covered connections removed (closed and swept) as well as changed
  expect(deltas.some((d) => (d.del.conns?.length ?? 0) > 0)).toBe(true);
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

/** 5000 connections of 50 hosts saved in a full link, then 50 of them (1%) sending a sample. */
async function fiftyOf5000Changed(): Promise<{ agg: PartitionAggregator; before: SavedRows }> {
  const agg = new PartitionAggregator({ partition: 0 });
  const conn = (i: number, seq: number, tx: number): AggInput => ({
    kind: 'conn', event: seq === 1 ? 'open' : 'sample', host_id: `h${i % 50}`, hostname: `host-${i % 50}`, boot_id: `b${i % 50}`, epoch: 1,
    seq: seq * 1000 + Math.floor(i / 50), time_ms: START + seq * 1000, cookie: String(10_000 + i), tx_bytes: tx, rx_bytes: 2 * tx, retransmits: 0,
    netns: 4026531840, comm: 'curl', protocol: 6, direction: 1, sport: 40000 + (i % 20000), dport: 443, flush_reason: seq === 1 ? 'open' : 'interval',
  } as AggInput);
  for (let i = 0; i < 5000; i++) agg.add(conn(i, 1, 0));
  agg.pending().commit();
  const before = (await full(agg.snapshotLazy())).link.saved;
  for (let i = 0; i < 50; i++) agg.add(conn(i * 100, 2, 5000 + i));
  return { agg, before };
}

test('a delta is proportional to what changed: 1% of 5000 connections changing costs a few % of a full snapshot', async () => {
  const { agg, before } = await fiftyOf5000Changed();
  // uncompressed: gzip of these look-alike rows hides the difference (the bench measures gzip'd bytes)
  const sink = new StringSink();
  await writeFull(agg.snapshotLazy(), sink);
  const { text } = await delta(before, agg.snapshotLazy());
  expect(text.length).toBeLessThan(sink.text().length * 0.03);
  const d = JSON.parse(text) as Delta;
  expect(d.up.conns).toHaveLength(50);
  expect(d.del).toEqual({});
});

test('a delta serializes only the connections that changed (save CPU follows change, not live connections)', async () => {
  const { agg, before } = await fiftyOf5000Changed();
  // connection rows are the arrays whose key has three parts (host, boot, cookie)
  const spy = jest.spyOn(JSON, 'stringify');
  let after: SavedRows;
  try {
    after = (await delta(before, agg.snapshotLazy())).link.saved;
    expect(spy.mock.calls.filter((c) => Array.isArray(c[0]) && typeof c[0][0] === 'string' && (c[0][0] as string).split('\u0000').length === 3).length).toBe(50);
  } finally {
    spy.mockRestore();
  }
  // and once that delta is stored, nothing is left to write: an unchanged state gives an empty delta
  const again = JSON.parse((await delta(after, agg.snapshotLazy())).text) as Delta;
  expect(again.up).toEqual({});
  expect(again.del).toEqual({});
});

test('a delta that was written but never stored (a failed save) leaves its rows marked: the retry writes them again', async () => {
  const records = merged(31, 2, 40, 3);
  const agg = new PartitionAggregator({ partition: 1 });
  for (const r of records.slice(0, 200)) agg.add(r);
  const first = await full(agg.snapshotLazy());
  for (const r of records.slice(200, 400)) agg.add(r);
  const lost = await writeDelta(first.link.saved, agg.snapshotLazy(), new StringSink()); // not committed
  expect(lost?.rows).toBeGreaterThan(0);
  const retry = await delta(first.link.saved, agg.snapshotLazy());
  const restored = new PartitionAggregator({ partition: 1 });
  restored.restore(applyDeltas(JSON.parse(first.text) as Record<string, unknown>, [JSON.parse(retry.text) as Delta]));
  expect(JSON.stringify(restored.pending().points)).toBe(JSON.stringify(agg.pending().points));
});

test('a restored aggregator (another map of connections) gets no delta against the link saved before: a full one follows', async () => {
  const agg = new PartitionAggregator({ partition: 0 });
  for (const r of merged(5, 2, 20, 2)) agg.add(r);
  const { link, text } = await full(agg.snapshotLazy());
  const restored = new PartitionAggregator({ partition: 0 });
  restored.restore(JSON.parse(text) as Record<string, unknown>);
  expect(await writeDelta(link.saved, restored.snapshotLazy(), new StringSink())).toBeUndefined();
});

test('one state written as a delta and then in full (a chain past its budget) holds every row in the full one', async () => {
  const agg = new PartitionAggregator({ partition: 2 });
  const records = merged(77, 3, 30, 3);
  for (const r of records.slice(0, 300)) agg.add(r);
  const first = await full(agg.snapshotLazy());
  for (const r of records.slice(300)) agg.add(r);
  // what StateStore.save does: the delta first, then (over budget) the full snapshot of the same state
  const state = replayable(agg.snapshotLazy());
  expect(await writeDelta(first.link.saved, state, new StringSink())).toBeDefined();
  const sink = new StringSink();
  await writeFull(state, sink);
  expect(sink.text()).toBe(JSON.stringify(agg.snapshot()));
});

// The aggregator's per-record shortcuts are derived state only: a connection's cached window cells and the parts
// index over its state maps (consumer/agg-state.ts PartsMap) must give exactly what the lookups by key give, and
// nothing a snapshot holds may depend on them.
import { PartitionAggregator } from './aggregator';
import { PartsMap } from './agg-state';
import { toAggInput, type AggInput } from './records';
import { synthesize } from './synthetic';
import { WindowSet, type OutPoint } from './windows';
import type { Decoded } from '../schemas';

const START = Date.UTC(2026, 0, 5, 10, 0, 0);
const MIN = 60_000;

function conn(o: { seq: number; time_ms: number; tx_bytes: number } & Partial<Record<string, unknown>>): AggInput {
  return {
    kind: 'conn', event: 'sample', host_id: 'h', hostname: 'h', boot_id: 'b', epoch: 1, cookie: '1', rx_bytes: 0, retransmits: 0,
    netns: 1, comm: 'a', protocol: 6, direction: 1, sport: 40000, dport: 443, flush_reason: 'interval', start_ns: 1, ...o,
  } as AggInput;
}

/** Every point written, as text in write order, with the snapshot after each flush. */
function drive(rs: readonly AggInput[], flushEvery: number, opts: Partial<ConstructorParameters<typeof PartitionAggregator>[0]>, restoreEachFlush: boolean): { points: string[]; snaps: string[] } {
  let agg = new PartitionAggregator({ partition: 0, ...opts });
  const points: string[] = [];
  const snaps: string[] = [];
  const flush = (): void => {
    const p = agg.pending();
    points.push(...p.points.map((x: OutPoint) => JSON.stringify(x)));
    p.commit();
    const snap = JSON.stringify(agg.snapshot());
    snaps.push(snap);
    if (restoreEachFlush) {
      // a fresh aggregator from the snapshot has no cached cell and no index entry it did not rebuild from the state
      agg = new PartitionAggregator({ partition: 0, ...opts });
      agg.restore(JSON.parse(snap) as Record<string, unknown>);
    }
  };
  rs.forEach((r, i) => {
    agg.add(r);
    if ((i + 1) % flushEvery === 0) flush();
  });
  flush();
  return { points, snaps };
}

test('a connection that comes back from dormancy in another group adds to the new group, also in the window its cached cell is in', () => {
  // comm "a" until it goes dormant (idle 5 min by its host's clock), then back as comm "b" in the same hour: the 1 h
  // cell it last added to (group "a") is still that hour's window, and must not take the new bytes
  const rs = [
    conn({ seq: 1, event: 'open', time_ms: START, tx_bytes: 100 }),
    conn({ seq: 2, time_ms: START + MIN, tx_bytes: 200 }),
    conn({ seq: 3, cookie: '2', time_ms: START + 10 * MIN, tx_bytes: 7 }),
    conn({ seq: 4, comm: 'b', time_ms: START + 11 * MIN, tx_bytes: 500 }),
  ];
  const agg = new PartitionAggregator({ partition: 0, idleTimeoutMs: 5 * MIN });
  for (const r of rs) agg.add(r);
  const hour = agg.pending().points.filter((p) => p.measurement === 'nettally_traffic_1h');
  const byComm = Object.fromEntries(hour.map((p) => [p.tags.comm, p.fields.tx_bytes]));
  expect(byComm).toEqual({ a: 200 + 7, b: 300 });
});

test('results and snapshots do not depend on the caches: restored at every flush (caches empty) = run on', () => {
  const data = synthesize({ hosts: 4, connsPerHost: 60, startMs: START, minutes: 12, seed: 11, sampleEverySec: 8 });
  const streams = [...data.byHost.values()];
  const rs: AggInput[] = [];
  for (let i = 0; streams.some((s) => i < s.length); i++) {
    for (const s of streams) if (i < s.length) rs.push(toAggInput(s[i] as Decoded, START + i * 50));
  }
  // and a connection that goes dormant and comes back under another comm, plus a record too late for its window
  const late = START + 12 * MIN;
  rs.push(conn({ host_id: streams[0][0].record.host_id, boot_id: streams[0][0].record.boot_id, epoch: 9, seq: 1, cookie: '77', time_ms: START, tx_bytes: 10 }));
  rs.push(conn({ host_id: streams[0][0].record.host_id, boot_id: streams[0][0].record.boot_id, epoch: 9, seq: 2, cookie: '77', comm: 'z', time_ms: late, tx_bytes: 25 }));
  rs.push(conn({ host_id: streams[0][0].record.host_id, boot_id: streams[0][0].record.boot_id, epoch: 9, seq: 3, cookie: '78', time_ms: START, tx_bytes: 3 }));
  const opts = { idleTimeoutMs: 4 * MIN, allowedLatenessMs: MIN };
  for (const every of [97, 1000]) {
    const on = drive(rs, every, opts, false);
    const restored = drive(rs, every, opts, true);
    expect(restored.points).toEqual(on.points);
    expect(restored.snaps).toEqual(on.snaps);
  }
});

test('a cached cell of a window that was written final or replaced by a restore is never used again', () => {
  const ws = new WindowSet('m_1m', MIN, ['k'], ['n']);
  const first = ws.cachedCell(0, ['a'], 'a', null);
  first.v[0] += 1;
  expect(ws.cachedCell(30_000, ['a'], 'a', first)).toBe(first);
  const out: OutPoint[] = [];
  const finals: number[] = [];
  ws.pending(MIN, '0', out, finals, false, []);
  ws.markWritten(finals, []);
  expect(ws.windows.size).toBe(0);
  // the window is gone: the old cell no longer matches its start, a new one is made
  const again = ws.cachedCell(0, ['a'], 'a', first);
  expect(again).not.toBe(first);
  expect(again.v[0]).toBe(0);
  ws.load([[0, [[['a'], [5], 0]]]]);
  const loaded = ws.cachedCell(0, ['a'], 'a', again);
  expect(loaded).not.toBe(again);
  expect(loaded.v[0]).toBe(5);
});

test('PartsMap: find() is get() of the joined key or a miss, through sets, deletes, number-like and separator-holding parts', () => {
  let s = 5;
  const rnd = (n: number): number => (s = (s * 1103515245 + 12345) % 2147483648) % n;
  const parts = ['h', 'h\u0000x', 'x', 'x\u0000b', 'b', '', '1', '01', '-0', '1\u00002', '9007199254740993'];
  // what the aggregator passes as the last part: the number when the text is one (a cookie, an epoch)
  const last = (x: string): string | number => (Number.isSafeInteger(Number(x)) && String(Number(x)) === x ? Number(x) : x);
  for (const depth of [2, 3] as const) {
    const m = new PartsMap<number>(depth);
    const plain = new Map<string, number>();
    const pick = (): string[] => Array.from({ length: depth }, () => parts[rnd(parts.length)]);
    for (let i = 0; i < 3000; i++) {
      const p = pick();
      const k = p.join('\u0000');
      const op = rnd(10);
      if (op < 5) {
        m.set(k, i);
        plain.set(k, i);
      } else if (op < 9) {
        expect(m.delete(k)).toBe(plain.delete(k));
      } else if (rnd(20) === 0) {
        m.clear();
        plain.clear();
      }
      const q = pick();
      const found = depth === 2 ? m.find2(q[0], last(q[1])) : m.find3(q[0], q[1], last(q[2]));
      const want = plain.get(q.join('\u0000'));
      // a hit is exact; a miss is allowed only where a part before the last holds the separator
      if (found !== undefined || !q.slice(0, -1).some((x) => x.includes('\u0000'))) expect(found).toBe(want);
    }
    expect([...m]).toEqual([...plain]);
    // after deleting everything, no index entry is left behind
    for (const k of [...m.keys()]) m.delete(k);
    expect((m as unknown as { index: Map<string, unknown> }).index.size).toBe(0);
  }
});

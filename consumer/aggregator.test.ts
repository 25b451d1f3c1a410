// Unit tests of the exact aggregation: truth from synthetic streams with duplicates, interleaving, crash/replay.
import { PartitionAggregator, type AggInput, type OutPoint } from './aggregator';
import { toAggInput } from './records';
import { synthesize, sumTruth, type SynthData, type TruthRow } from './synthetic';
import type { Decoded } from '../schemas';

const START = Date.UTC(2026, 0, 5, 10, 0, 0);

/** What InfluxDB would hold: last write per (measurement, tags, time) wins. */
class FakeInflux {
  readonly points = new Map<string, OutPoint>();
  write(ps: readonly OutPoint[]): void {
    for (const p of ps) this.points.set(`${p.measurement}|${JSON.stringify(p.tags)}|${p.time_ms}`, p);
  }
  /** Sum over partitions by window and tags, like `nettally usage` does. */
  sum(measurement: string, tagNames: readonly string[]): Map<string, Record<string, number>> {
    const out = new Map<string, Record<string, number>>();
    for (const p of this.points.values()) {
      if (p.measurement !== measurement) continue;
      const key = [String(p.time_ms), ...tagNames.map((t) => p.tags[t])].join('|');
      const f = out.get(key) ?? {};
      for (const [k, v] of Object.entries(p.fields)) if (typeof v === 'number') f[k] = (f[k] ?? 0) + v;
      out.set(key, f);
    }
    return out;
  }
}

function nonZero(m: Map<string, Record<string, number>>): Map<string, Record<string, number>> {
  return new Map([...m].filter(([, f]) => Object.values(f).some((v) => v !== 0)).sort(([a], [b]) => a.localeCompare(b)));
}

function flush(agg: PartitionAggregator, db: FakeInflux): void {
  const p = agg.pending();
  db.write(p.points);
  p.commit();
}

/** Host streams merged in arrival order: per-host order kept, hosts skewed up to `skewMs`, some batches re-sent. */
function arrival(data: SynthData, seed: number, skewMs: number, dupEvery: number): AggInput[] {
  let s = seed;
  const rnd = (): number => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const streams = [...data.byHost.values()].map((msgs) => ({ msgs, i: 0, skew: Math.floor(rnd() * skewMs) }));
  const out: AggInput[] = [];
  for (;;) {
    let best: (typeof streams)[number] | undefined;
    let bestT = Infinity;
    for (const st of streams) {
      if (st.i >= st.msgs.length) continue;
      const t = Number((st.msgs[st.i].record.time_ns as bigint) / 1_000_000n) + st.skew;
      if (t < bestT) {
        bestT = t;
        best = st;
      }
    }
    if (!best) break;
    out.push(toAggInput(best.msgs[best.i] as Decoded));
    best.i++;
    if (dupEvery > 0 && rnd() < 1 / dupEvery) {
      // a producer retry re-sends the last few records of this host
      const n = 1 + Math.floor(rnd() * 4);
      for (let j = Math.max(0, best.i - n); j < best.i; j++) out.push(toAggInput(best.msgs[j] as Decoded));
    }
  }
  return out;
}

const TRAFFIC_ALL = ['host_id', 'hostname', 'netns', 'protocol', 'direction', 'service_port', 'comm'];

function expectExact(db: FakeInflux, truth: readonly TruthRow[], iface: readonly TruthRow[]): void {
  expect(nonZero(db.sum('nettally_traffic_1m', TRAFFIC_ALL))).toEqual(nonZero(sumTruth(truth, 60_000, TRAFFIC_ALL)));
  expect(nonZero(db.sum('nettally_traffic_1h', ['host_id', 'service_port']))).toEqual(nonZero(sumTruth(truth, 3_600_000, ['host_id', 'service_port'])));
  expect(nonZero(db.sum('nettally_iface_1m', ['host_id', 'netns', 'ifindex']))).toEqual(nonZero(sumTruth(iface, 60_000, ['host_id', 'netns', 'ifindex'])));
}

describe('PartitionAggregator', () => {
  const data = synthesize({ hosts: 3, connsPerHost: 40, startMs: START, minutes: 7, seed: 7 });
  const input = arrival(data, 11, 30_000, 25);

  test('exact totals per window and tag set despite duplicates and cross-host interleaving', () => {
    const agg = new PartitionAggregator({ partition: 0 });
    const db = new FakeInflux();
    input.forEach((r, i) => {
      agg.add(r);
      if (i % 97 === 0) flush(agg, db);
    });
    flush(agg, db);
    expect(agg.counters.duplicates).toBeGreaterThan(0);
    expect(agg.counters.too_late).toBe(0);
    expectExact(db, data.traffic, data.iface);
  });

  test('windows become final once the watermark passes them, and are then written with final=true', () => {
    const agg = new PartitionAggregator({ partition: 3, allowedLatenessMs: 30_000 });
    const db = new FakeInflux();
    for (const r of input) agg.add(r);
    flush(agg, db);
    const wm = agg.watermarkMs;
    const ps = [...db.points.values()].filter((p) => p.measurement === 'nettally_traffic_1m');
    expect(ps.length).toBeGreaterThan(0);
    for (const p of ps) {
      expect(p.tags.partition).toBe('3');
      expect(p.fields.final).toBe(p.time_ms + 60_000 <= wm);
    }
    expect(ps.some((p) => p.fields.final === true)).toBe(true);
    expect(ps.some((p) => p.fields.final === false)).toBe(true);
  });

  test('a crash after any record replays from the snapshot into identical points', () => {
    const ref = new FakeInflux();
    const a = new PartitionAggregator({ partition: 0 });
    input.forEach((r, i) => {
      a.add(r);
      if (i % 50 === 0) flush(a, ref);
    });
    flush(a, ref);

    const db = new FakeInflux();
    let agg = new PartitionAggregator({ partition: 0 });
    let snap = { offset: 0, state: JSON.stringify(agg.snapshot()) };
    let i = 0;
    let crashes = 0;
    while (i < input.length) {
      agg.add(input[i]);
      i++;
      if (i % 50 === 0) {
        flush(agg, db);
        snap = { offset: i, state: JSON.stringify(agg.snapshot()) };
      }
      if (i % 173 === 0 && crashes < 10) {
        // crash: in-memory state lost, maybe after a partial write; resume from the last snapshot
        flush(agg, db);
        crashes++;
        agg = new PartitionAggregator({ partition: 0 });
        agg.restore(JSON.parse(snap.state));
        i = snap.offset;
      }
    }
    flush(agg, db);
    expect(crashes).toBe(10);
    expect([...db.points.entries()].sort()).toEqual([...ref.points.entries()].sort());
    expectExact(db, data.traffic, data.iface);
  });

  test('too-late records lose no bytes: their deltas go to the oldest open window, and are counted', () => {
    const base = { host_id: 'h', hostname: 'x', boot_id: 'b', epoch: 1, comm: 'c', protocol: 6, direction: 1, sport: 40000, dport: 443, netns: 1, flush_reason: 'interval', retransmits: 0 };
    const agg = new PartitionAggregator({ partition: 0, allowedLatenessMs: 60_000 });
    const db = new FakeInflux();
    agg.add({ kind: 'conn', event: 'open', ...base, seq: 1, time_ms: START, cookie: '1', tx_bytes: 0, rx_bytes: 0 });
    // another host runs 10 minutes ahead: START's window is final
    agg.add({ kind: 'conn', event: 'open', ...base, host_id: 'h2', seq: 1, time_ms: START + 600_000, cookie: '9', tx_bytes: 5, rx_bytes: 0 });
    flush(agg, db);
    expect(agg.add({ kind: 'conn', event: 'close', ...base, seq: 2, time_ms: START + 1000, cookie: '1', tx_bytes: 700, rx_bytes: 30 })).toBe('too_late');
    flush(agg, db);
    expect(agg.counters.too_late).toBe(1);
    const sums = db.sum('nettally_traffic_1m', ['host_id']);
    expect(sums.get(`${START}|h`)).toEqual({ tx_bytes: 0, rx_bytes: 0, connections_opened: 1, connections_closed: 0, retransmits: 0 });
    const wmWindow = Math.floor(agg.watermarkMs / 60_000) * 60_000;
    expect(sums.get(`${wmWindow}|h`)).toEqual({ tx_bytes: 700, rx_bytes: 30, connections_opened: 0, connections_closed: 1, retransmits: 0 });
  });

  test('dedupe remembers gaps below the high-water mark', () => {
    const agg = new PartitionAggregator({ partition: 0 });
    const rec = (seq: number, tx: number): AggInput => ({
      kind: 'conn', event: 'sample', host_id: 'h', hostname: 'x', boot_id: 'b', epoch: 1, seq, time_ms: START, cookie: String(seq),
      tx_bytes: tx, rx_bytes: 0, retransmits: 0, netns: 1, comm: 'c', protocol: 6, direction: 1, sport: 1, dport: 2, flush_reason: 'interval',
    });
    expect([1, 2, 4, 3, 3, 4, 2, 5].map((s) => agg.add(rec(s, 10)))).toEqual([
      'counted', 'counted', 'counted', 'counted', 'duplicate', 'duplicate', 'duplicate', 'counted',
    ]);
    // a new producer epoch restarts seq
    expect(agg.add({ ...rec(1, 10), epoch: 2 } as AggInput)).toBe('counted');
  });

  test('interface counters: deltas within an epoch, a restart from zero under a new epoch', () => {
    const agg = new PartitionAggregator({ partition: 0 });
    const db = new FakeInflux();
    const f = (epoch: number, seq: number, t: number, v: number): AggInput => ({
      kind: 'iface', host_id: 'h', hostname: 'x', boot_id: 'b', epoch, seq, time_ms: START + t, netns: 1, ifindex: 2, rx_bytes: v, rx_packets: v, tx_bytes: v, tx_packets: v,
    });
    [f(1, 1, 0, 100), f(1, 2, 1000, 250), f(1, 3, 2000, 240), f(2, 1, 3000, 40), f(2, 2, 4000, 90)].forEach((r) => agg.add(r));
    flush(agg, db);
    expect(db.sum('nettally_iface_1m', ['host_id']).get(`${START}|h`)?.rx_bytes).toBe(250 + 90);
  });

  test('service port: outbound → remote port, inbound → local port, unknown → a known listener', () => {
    const agg = new PartitionAggregator({ partition: 0 });
    const db = new FakeInflux();
    const c = (seq: number, direction: number, sport: number, dport: number): AggInput => ({
      kind: 'conn', event: 'open', host_id: 'h', hostname: 'x', boot_id: 'b', epoch: 1, seq, time_ms: START, cookie: String(seq),
      tx_bytes: 1, rx_bytes: 0, retransmits: 0, netns: 1, comm: '', protocol: 17, direction, sport, dport, flush_reason: 'open',
    });
    agg.add({ kind: 'listen', host_id: 'h', hostname: 'x', boot_id: 'b', epoch: 1, seq: 1, time_ms: START, netns: 1, port: 50000, protocol: 17 });
    agg.add(c(2, 1, 40000, 443));
    agg.add(c(3, 2, 22, 50001));
    agg.add(c(4, 0, 50000, 3));
    agg.add(c(5, 0, 45000, 1234));
    flush(agg, db);
    const ports = [...db.sum('nettally_traffic_1m', ['service_port', 'comm']).keys()].sort();
    expect(ports).toEqual([`${START}|1234|-`, `${START}|22|-`, `${START}|443|-`, `${START}|50000|-`]);
  });
});

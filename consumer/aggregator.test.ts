// Unit tests of the exact aggregation: truth from synthetic streams with duplicates, interleaving, crash/replay.
import { PartitionAggregator } from './aggregator';
import type { AggInput } from './records';
import type { OutPoint } from './windows';
import { toAggInput } from './records';
import { synthesize, sumTruth, type SynthData, type TruthRow } from './synthetic';
import type { Decoded } from '../schemas';

const START = Date.UTC(2026, 0, 5, 10, 0, 0);
const ACTIVE_FIELDS = ['active_connections', 'peak_connections'];

/** What InfluxDB would hold: last write per (measurement, tags, time) wins. */
class FakeInflux {
  readonly points = new Map<string, OutPoint>();
  write(ps: readonly OutPoint[]): void {
    for (const p of ps) this.points.set(`${p.measurement}|${JSON.stringify(p.tags)}|${p.time_ms}`, p);
  }
  /** Sum over partitions by window and tags, like `nettally usage` does (the open-connection counts only if asked). */
  sum(measurement: string, tagNames: readonly string[], withActive = false): Map<string, Record<string, number>> {
    const out = new Map<string, Record<string, number>>();
    for (const p of this.points.values()) {
      if (p.measurement !== measurement) continue;
      const key = [String(p.time_ms), ...tagNames.map((t) => p.tags[t])].join('|');
      const f = out.get(key) ?? {};
      for (const [k, v] of Object.entries(p.fields)) if (typeof v === 'number' && (withActive || !ACTIVE_FIELDS.includes(k))) f[k] = (f[k] ?? 0) + v;
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
    // (a lower value within an epoch is a restart too: see 'a cumulative that goes backwards within an epoch')
    [f(1, 1, 0, 100), f(1, 2, 1000, 250), f(1, 3, 2000, 260), f(2, 1, 3000, 40), f(2, 2, 4000, 90)].forEach((r) => agg.add(r));
    flush(agg, db);
    expect(db.sum('nettally_iface_1m', ['host_id']).get(`${START}|h`)?.rx_bytes).toBe(260 + 90);
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

// Issue 11: wrong clocks, forged future records, idle expiry and counter restarts must never change a total.
describe('PartitionAggregator: clocks and counter restarts', () => {
  const MIN = 60_000;
  const HOUR = 3_600_000;
  const S1 = 5_000_000_000; // start_ns of the kernel's first counting of the connection
  const S2 = 9_000_000_000; // a later counting (fresh maps after a pin reset)

  /** A connection record with every field a test does not care about filled in; ref_ms is the Kafka timestamp. */
  function conn(host: string, o: { seq: number; time_ms: number; tx_bytes: number } & Record<string, unknown>): AggInput {
    return {
      kind: 'conn', event: 'sample', host_id: host, hostname: host, boot_id: 'b', epoch: 1, cookie: '1', rx_bytes: 0, retransmits: 0,
      netns: 1, comm: 'c', protocol: 6, direction: 1, sport: 40000, dport: 443, flush_reason: 'interval', start_ns: S1, ...o,
    } as AggInput;
  }

  /** Sum of a field per host over every window (1m and 1h separately): what billing adds up. */
  function perHost(db: FakeInflux, field: string): { m: Record<string, number>; h: Record<string, number> } {
    const sum = (measurement: string): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const p of db.points.values()) {
        if (p.measurement === measurement) out[p.tags.host_id] = (out[p.tags.host_id] ?? 0) + (p.fields[field] as number);
      }
      return out;
    };
    return { m: sum('nettally_traffic_1m'), h: sum('nettally_traffic_1h') };
  }

  function run(agg: PartitionAggregator, rs: readonly AggInput[], flushEvery = 1): FakeInflux {
    const db = new FakeInflux();
    rs.forEach((r, i) => {
      agg.add(r);
      if (i % flushEvery === 0) flush(agg, db);
    });
    flush(agg, db);
    return db;
  }

  for (const mode of ['broker clock', 'host clocks'] as const) {
    test(`hosts 48 h ahead and 48 h behind in one partition are all billed exactly (Kafka timestamps from the ${mode})`, () => {
      const hosts = [
        { id: 'honest', skew: 0, per: 300 },
        { id: 'ahead', skew: 48 * HOUR, per: 500 },
        { id: 'behind', skew: -48 * HOUR, per: 700 },
      ];
      const rs: AggInput[] = [];
      for (let i = 0; i < 10; i++) {
        for (const h of hosts) {
          const now = START + i * MIN + 1000;
          rs.push(conn(h.id, {
            seq: i + 1, event: i === 0 ? 'open' : i === 9 ? 'close' : 'sample', time_ms: now + h.skew, tx_bytes: (i + 1) * h.per,
            ref_ms: mode === 'broker clock' ? now + 5 : now + h.skew + 5,
          }));
        }
      }
      const agg = new PartitionAggregator({ partition: 0 });
      const db = run(agg, rs);
      const want = { honest: 3000, ahead: 5000, behind: 7000 };
      expect(perHost(db, 'tx_bytes')).toEqual({ m: want, h: want });
      expect(perHost(db, 'connections_opened').m).toEqual({ honest: 1, ahead: 1, behind: 1 });
      if (mode === 'broker clock') {
        // the host 48 h ahead cannot drag the partition's watermark (and everyone's windows) two days forward
        expect(agg.watermarkMs).toBeLessThan(START + 11 * MIN);
        expect(agg.counters.clamped).toBe(10);
      }
    });
  }

  for (const forgedRef of [false, true]) {
    test(`one record from the future does not inflate an honest host (Kafka timestamp ${forgedRef ? 'forged too' : 'honest'})`, () => {
      const rs: AggInput[] = [];
      for (let i = 0; i < 10; i++) {
        rs.push(conn('honest', { seq: i + 1, time_ms: START + i * MIN, tx_bytes: (i + 1) * 500, ref_ms: START + i * MIN + 3 }));
        if (i === 2) {
          const future = START + 48 * HOUR;
          rs.push(conn('mallory', { seq: 1, time_ms: future, tx_bytes: 1, ref_ms: forgedRef ? future : START + i * MIN + 4 }));
        }
      }
      const agg = new PartitionAggregator({ partition: 0 });
      const db = run(agg, rs);
      expect(perHost(db, 'tx_bytes')).toEqual({ m: { honest: 5000, mallory: 1 }, h: { honest: 5000, mallory: 1 } });
      if (!forgedRef) {
        // attributed to the window of its Kafka timestamp, and the watermark did not move two days
        const at = [...db.points.values()].find((p) => p.tags.host_id === 'mallory' && p.measurement === 'nettally_traffic_1m');
        expect(at?.time_ms).toBe(START + 2 * MIN);
        expect(agg.watermarkMs).toBeLessThan(START + 10 * MIN);
      }
    });
  }

  test('a connection whose state expired (idle timeout) and then comes back adds only its new bytes', () => {
    const rs: AggInput[] = [conn('h', { seq: 1, event: 'open', time_ms: START, tx_bytes: 1000 })];
    let seq = 2;
    // another connection of the same host keeps event time moving for 3 idle timeouts
    for (let t = 10 * MIN; t <= 3 * HOUR; t += 10 * MIN) rs.push(conn('h', { seq: seq++, cookie: '2', time_ms: START + t, tx_bytes: t / MIN }));
    rs.push(conn('h', { seq: seq++, time_ms: START + 3 * HOUR + MIN, tx_bytes: 1500 }));
    rs.push(conn('h', { seq: seq++, event: 'close', time_ms: START + 3 * HOUR + 2 * MIN, tx_bytes: 1600 }));
    const agg = new PartitionAggregator({ partition: 0, idleTimeoutMs: HOUR });
    const db = run(agg, rs);
    expect(perHost(db, 'tx_bytes').h).toEqual({ h: 1600 + 180 });
    expect(perHost(db, 'connections_opened').h).toEqual({ h: 2 }); // cookies 1 and 2, each once
    expect(perHost(db, 'connections_closed').h).toEqual({ h: 1 });
  });

  /** epoch 1 counts a long connection to 10000 B; then the producer restarts (epoch 2, seq from 1). */
  function restart(start2: number, afterRestart: readonly number[]): AggInput[] {
    const rs = [
      conn('h', { seq: 1, event: 'open', time_ms: START, tx_bytes: 0 }),
      conn('h', { seq: 2, time_ms: START + MIN, tx_bytes: 4000 }),
      conn('h', { seq: 3, time_ms: START + 2 * MIN, tx_bytes: 10_000 }),
    ];
    afterRestart.forEach((tx, i) => {
      rs.push(conn('h', { epoch: 2, seq: i + 1, start_ns: start2, flush_reason: i === 0 ? 'snapshot' : 'interval', time_ms: START + (3 + i) * MIN, tx_bytes: tx }));
    });
    return rs;
  }

  test('a new epoch whose counters restarted (pins removed) starts a new baseline: before + after', () => {
    const agg = new PartitionAggregator({ partition: 0 });
    const db = run(agg, restart(S2, [500, 9000]));
    expect(perHost(db, 'tx_bytes').h).toEqual({ h: 19_000 });
    expect(perHost(db, 'connections_opened').h).toEqual({ h: 1 });
    expect(agg.counters.counter_restarts).toBe(1);
  });

  test('retransmits are TCP\'s per-socket total: a new counting of the bytes does not count them again', () => {
    const agg = new PartitionAggregator({ partition: 0 });
    const db = run(agg, [
      conn('h', { seq: 1, event: 'open', time_ms: START, tx_bytes: 0 }),
      conn('h', { seq: 2, time_ms: START + MIN, tx_bytes: 4000, retransmits: 5 }),
      conn('h', { epoch: 2, seq: 1, start_ns: S2, flush_reason: 'snapshot', time_ms: START + 2 * MIN, tx_bytes: 0, retransmits: 5 }),
      conn('h', { epoch: 2, seq: 2, start_ns: S2, time_ms: START + 3 * MIN, tx_bytes: 100, retransmits: 7 }),
    ]);
    expect(perHost(db, 'retransmits').h).toEqual({ h: 7 });
    expect(perHost(db, 'tx_bytes').h).toEqual({ h: 4100 });
  });

  test('a new epoch on pinned counters (same counting, same start_ns) does not count twice', () => {
    const agg = new PartitionAggregator({ partition: 0 });
    const db = run(agg, restart(S1, [10_000, 12_000]));
    expect(perHost(db, 'tx_bytes').h).toEqual({ h: 12_000 });
    expect(agg.counters.counter_restarts).toBe(0);
  });

  test('a cumulative that goes backwards within an epoch: a new counting counts from zero, an older reading adds nothing', () => {
    const agg = new PartitionAggregator({ partition: 0 });
    const db = run(agg, [
      conn('h', { seq: 1, event: 'open', time_ms: START, tx_bytes: 5000 }),
      conn('h', { seq: 2, time_ms: START + 1000, tx_bytes: 4000 }), // an older reading delivered late (drain vs sweep)
      conn('h', { seq: 3, time_ms: START + 2000, tx_bytes: 5200 }),
      conn('h', { seq: 4, time_ms: START + 3000, tx_bytes: 300, start_ns: S2 }), // the kernel started counting again
      conn('h', { seq: 5, time_ms: START + 4000, tx_bytes: 800, start_ns: S2 }),
    ]);
    expect(perHost(db, 'tx_bytes').h).toEqual({ h: 5200 + 800 });
    expect(agg.counters.counter_restarts).toBe(1);
    // interface counters come from one periodic reader: lower within an epoch can only be a restart
    const ifa = new PartitionAggregator({ partition: 0 });
    const f = (seq: number, v: number): AggInput => ({
      kind: 'iface', host_id: 'h', hostname: 'x', boot_id: 'b', epoch: 1, seq, time_ms: START + seq, netns: 1, ifindex: 2, rx_bytes: v, rx_packets: v, tx_bytes: v, tx_packets: v,
    });
    const idb = run(ifa, [f(1, 100), f(2, 250), f(3, 40), f(4, 90)]);
    expect(idb.sum('nettally_iface_1m', ['host_id']).get(`${START}|h`)?.rx_bytes).toBe(250 + 90);
  });

  test('snapshot/restore carries the new state: crash after every record of a restart and an idle revival', () => {
    const rs = [...restart(S2, [500, 9000])];
    rs.push(conn('h', { epoch: 2, seq: 3, cookie: '7', time_ms: START + 6 * MIN, tx_bytes: 100 }));
    for (let i = 0; i < 4; i++) rs.push(conn('h', { epoch: 2, seq: 4 + i, cookie: '8', time_ms: START + (i + 1) * HOUR, tx_bytes: i + 1 }));
    rs.push(conn('h', { epoch: 2, seq: 8, cookie: '7', time_ms: START + 5 * HOUR, tx_bytes: 150 }));
    rs.push(conn('h', { epoch: 2, seq: 9, cookie: '9', time_ms: START + 50 * HOUR, ref_ms: START + 5 * HOUR, tx_bytes: 4 })); // clamped
    const ref = run(new PartitionAggregator({ partition: 0, idleTimeoutMs: HOUR }), rs);
    const db = new FakeInflux();
    let state = JSON.stringify(new PartitionAggregator({ partition: 0, idleTimeoutMs: HOUR }).snapshot());
    for (const r of rs) {
      const agg = new PartitionAggregator({ partition: 0, idleTimeoutMs: HOUR });
      agg.restore(JSON.parse(state));
      agg.add(r);
      flush(agg, db);
      state = JSON.stringify(agg.snapshot());
    }
    expect([...db.points.entries()].sort()).toEqual([...ref.points.entries()].sort());
    expect(perHost(db, 'tx_bytes').h).toEqual({ h: 19_000 + 150 + 4 + 4 });
  });

  test('a reboot retires the old boot\'s state once it is idle; results do not depend on when flushes (sweeps) run', () => {
    const rs: AggInput[] = [conn('h', { seq: 1, event: 'open', time_ms: START, tx_bytes: 100 })];
    // the host reboots: new boot, new epoch, same cookie number (cookies are per boot); its clock starts 48 h behind
    for (let i = 0; i < 30; i++) {
      rs.push(conn('h', { boot_id: 'b2', epoch: 2, seq: i + 1, start_ns: 7, cookie: '1', time_ms: START - 48 * HOUR + i * 10 * MIN, tx_bytes: (i + 1) * 10 }));
    }
    rs.push(conn('h', { boot_id: 'b2', epoch: 2, seq: 31, start_ns: 7, cookie: '1', time_ms: START + 2 * HOUR, tx_bytes: 400 }));
    const opts = { partition: 0, idleTimeoutMs: HOUR };
    const often = run(new PartitionAggregator(opts), rs, 1);
    const agg = new PartitionAggregator(opts);
    const rarely = run(agg, rs, 1000);
    expect(perHost(often, 'tx_bytes').h).toEqual({ h: 100 + 400 });
    expect(perHost(rarely, 'tx_bytes').h).toEqual({ h: 100 + 400 });
    expect(perHost(often, 'tx_bytes').m).toEqual(perHost(rarely, 'tx_bytes').m);
    expect(agg.sizes).toMatchObject({ connections: 1, dormant: 0, interfaces: 0, hosts: 1 });
  });

  test('a host rebooted with its clock 48 h behind keeps deduplicating its new epoch (judged by its new boot\'s clock)', () => {
    const agg = new PartitionAggregator({ partition: 0, idleTimeoutMs: HOUR });
    const db = new FakeInflux();
    agg.add(conn('h', { seq: 1, event: 'open', time_ms: START, tx_bytes: 100 }));
    const f = (seq: number, t: number, v: number): AggInput => ({
      kind: 'iface', host_id: 'h', hostname: 'h', boot_id: 'b2', epoch: 2, seq, time_ms: START - 48 * HOUR + t, netns: 1, ifindex: 2, rx_bytes: v, rx_packets: v, tx_bytes: v, tx_packets: v,
    });
    // (too late: the partition's watermark is the old boot's time; the bytes go to the oldest open window)
    expect([f(1, 0, 50), f(2, MIN, 80), f(1, 0, 50), f(3, 2 * MIN, 90), f(2, MIN, 80)].map((r) => agg.add(r))).toEqual(['too_late', 'too_late', 'duplicate', 'too_late', 'duplicate']);
    flush(agg, db);
    const rx = [...db.points.values()].filter((p) => p.measurement === 'nettally_iface_1h').reduce((a, p) => a + (p.fields.rx_bytes as number), 0);
    expect(rx).toBe(90);
  });

  test('a host silent for forgetHostMs is forgotten with all its state (memory stays bounded)', () => {
    const agg = new PartitionAggregator({ partition: 0, idleTimeoutMs: HOUR, forgetHostMs: 10 * HOUR });
    const db = new FakeInflux();
    agg.add(conn('gone', { seq: 1, event: 'open', time_ms: START, tx_bytes: 10 }));
    agg.add({ kind: 'listen', host_id: 'gone', hostname: 'g', boot_id: 'b', epoch: 1, seq: 2, time_ms: START, netns: 1, port: 80, protocol: 6 });
    for (let i = 1; i <= 12; i++) agg.add(conn('busy', { seq: i, cookie: String(i), time_ms: START + i * HOUR, tx_bytes: 1 }));
    flush(agg, db);
    expect(agg.sizes).toMatchObject({ hosts: 1, epochs: 1 });
    expect(agg.snapshot().listeners).toEqual([]);
  });

  test('a version-1 snapshot (before start_ns and host progress were kept) still restores and continues exactly', () => {
    const key = 'h\u0000b\u00001';
    const tags = ['h', 'h', '1', 'tcp', 'outbound', '443', 'c'];
    const v1 = {
      v: 1, partition: 0, window_ms: 60_000, rollup_ms: 3_600_000, max_event_ms: START + MIN,
      counters: { records: 2, duplicates: 0, too_late: 0, ignored: 0 },
      windows: [[[START, [[tags, [700, 0, 1, 0, 0], 0]]]], [[START, [[tags, [700, 0, 1, 0, 0], 0]]]], [], []],
      conns: [[key, 700, 0, 0, START + MIN, -1, tags]],
      ifaces: [['h\u0000b\u00001\u00002', 1, [10, 1, 10, 1], START + MIN]],
      marks: [['h\u00001', 2, [], START + MIN]],
      listeners: [],
    };
    const agg = new PartitionAggregator({ partition: 0 });
    agg.restore(JSON.parse(JSON.stringify(v1)));
    const db = new FakeInflux();
    // what the consumer before the upgrade wrote (its tag set had no workload/remote_class): those series stay,
    // later bytes go to the new tag set, so the sums over both are exact (nothing rewritten under two identities)
    const old = Object.fromEntries(['host_id', 'hostname', 'netns', 'protocol', 'direction', 'service_port', 'comm'].map((t, i) => [t, tags[i]]));
    for (const m of ['nettally_traffic_1m', 'nettally_traffic_1h']) {
      db.write([{ measurement: m, tags: { partition: '0', ...old }, fields: { tx_bytes: 700, rx_bytes: 0, connections_opened: 1, connections_closed: 0, retransmits: 0, final: false }, time_ms: START }]);
    }
    expect(agg.add(conn('h', { seq: 2, time_ms: START + MIN, tx_bytes: 700 }))).toBe('duplicate');
    agg.add(conn('h', { seq: 3, time_ms: START + 2 * MIN, tx_bytes: 1000 }));
    agg.add({ kind: 'iface', host_id: 'h', hostname: 'h', boot_id: 'b', epoch: 1, seq: 4, time_ms: START + 2 * MIN, netns: 1, ifindex: 2, rx_bytes: 15, rx_packets: 2, tx_bytes: 10, tx_packets: 1 });
    flush(agg, db);
    expect(perHost(db, 'tx_bytes').h).toEqual({ h: 1000 });
    expect(db.sum('nettally_iface_1h', ['host_id']).get(`${START}|h`)?.rx_bytes).toBe(5);
    // cells of the old snapshot (fewer fields and tags) are written with their old tag set and no NaN anywhere
    for (const p of db.points.values()) for (const v of Object.values(p.fields)) if (typeof v === 'number') expect(Number.isFinite(v)).toBe(true);
    for (const p of db.points.values()) expect(Object.values(p.tags).every((t) => typeof t === 'string')).toBe(true);
  });
});

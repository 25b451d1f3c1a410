// Unit tests of what the rollups carry beyond bytes: open connections per group at each window's end and their peak
// (across window ends, quiet windows, reboots, snapshot restores), and the workload and remote_class tags.
import { PartitionAggregator } from './aggregator';
import { parseRemoteClasses } from './classes';
import type { AggInput } from './records';
import type { OutPoint } from './windows';

const MIN = 60_000;
const START = Date.UTC(2026, 0, 5, 10, 0, 0);

let seq = 0;
function conn(o: { cookie: string; time_ms?: number; event?: 'open' | 'sample' | 'close' } & Record<string, unknown>): AggInput {
  return {
    kind: 'conn', event: 'sample', host_id: 'h', hostname: 'h', boot_id: 'b1', epoch: 1, seq: ++seq, tx_bytes: 10, rx_bytes: 0, retransmits: 0,
    netns: 1, comm: 'c', protocol: 6, direction: 1, sport: 40000, dport: 443, flush_reason: 'interval', start_ns: 1, workload: 'team-a', daddr: '10.0.0.9', time_ms: START, ...o,
  } as AggInput;
}

/** Last write per series and window wins, as in InfluxDB. */
function write(db: Map<string, OutPoint>, agg: PartitionAggregator): void {
  const p = agg.pending();
  for (const x of p.points) db.set(`${x.measurement}|${JSON.stringify(x.tags)}|${x.time_ms}`, x);
  p.commit();
}

/** measurement → `window offset in minutes|tag=value…` → [active_connections, peak_connections], summed over partitions. */
function active(db: Map<string, OutPoint>, measurement: string, tags: readonly string[]): Record<string, [number, number]> {
  const out: Record<string, [number, number]> = {};
  for (const p of db.values()) {
    if (p.measurement !== measurement) continue;
    const k = [(p.time_ms - START) / MIN, ...tags.map((t) => p.tags[t])].join('|');
    const cur = out[k] ?? [0, 0];
    out[k] = [cur[0] + (p.fields.active_connections as number), cur[1] + (p.fields.peak_connections as number)];
  }
  return out;
}

/** Three connections of one group across two window ends, one of another workload, then quiet windows. */
function scenario(): AggInput[] {
  seq = 0;
  return [
    conn({ cookie: '1', event: 'open', time_ms: START + 10_000 }),
    conn({ cookie: '2', event: 'open', time_ms: START + 20_000 }),
    conn({ cookie: '9', event: 'open', time_ms: START + 30_000, workload: 'team-b' }),
    conn({ cookie: '3', event: 'open', time_ms: START + MIN + 5_000 }), // 3 open at once
    conn({ cookie: '1', event: 'close', time_ms: START + MIN + 10_000 }),
    conn({ cookie: '3', event: 'close', time_ms: START + MIN + 20_000 }),
    conn({ cookie: '2', time_ms: START + MIN + 30_000, tx_bytes: 500 }),
    // a connection the producer found already open at its start: open, but not opened in this window
    conn({ cookie: '4', time_ms: START + 2 * MIN + 5_000, flush_reason: 'snapshot' }),
    // nothing of these groups for minutes 3..5; another host's record moves the watermark to minute 6
    conn({ cookie: '5', host_id: 'other', time_ms: START + 6 * MIN + 30_000 }),
  ];
}

describe('active connections', () => {
  test('open at every window end, per group, also in windows without records of the group; peak within the window', () => {
    const agg = new PartitionAggregator({ partition: 0, allowedLatenessMs: 0 });
    const db = new Map<string, OutPoint>();
    for (const r of scenario()) agg.add(r);
    write(db, agg);
    const m = active(db, 'nettally_traffic_1m', ['host_id', 'workload']);
    expect(m).toEqual({
      '0|h|team-a': [2, 2],
      '1|h|team-a': [1, 3], // 2 at the start, +1 (3 open at once), −1, −1
      '2|h|team-a': [2, 2], // cookie 4 found open
      '3|h|team-a': [2, 2], // quiet: still open
      '4|h|team-a': [2, 2],
      '5|h|team-a': [2, 2],
      '6|h|team-a': [2, 2],
      '0|h|team-b': [1, 1],
      '1|h|team-b': [1, 1],
      '2|h|team-b': [1, 1],
      '3|h|team-b': [1, 1],
      '4|h|team-b': [1, 1],
      '5|h|team-b': [1, 1],
      '6|h|team-b': [1, 1],
      '6|other|team-a': [1, 1],
    });
    // the hour so far: 4 open of team-a at most... 3 at once (minute 1), 2 now
    expect(active(db, 'nettally_traffic_1h', ['host_id', 'workload'])).toEqual({ '0|h|team-a': [2, 3], '0|h|team-b': [1, 1], '0|other|team-a': [1, 1] });
    // opened counts only the connections that started while watched
    const opened = [...db.values()].filter((p) => p.measurement === 'nettally_traffic_1m').reduce((s, p) => s + (p.fields.connections_opened as number), 0);
    expect(opened).toBe(5);

    // later: closes in minute 8; windows 7 and 8 carry the counts until then
    agg.add(conn({ cookie: '2', event: 'close', time_ms: START + 8 * MIN + 1_000 }));
    agg.add(conn({ cookie: '4', event: 'close', time_ms: START + 8 * MIN + 2_000 }));
    agg.add(conn({ cookie: '9', event: 'close', time_ms: START + 8 * MIN + 3_000, workload: 'team-b' }));
    agg.add(conn({ cookie: '6', host_id: 'other', time_ms: START + 10 * MIN }));
    write(db, agg);
    const later = active(db, 'nettally_traffic_1m', ['host_id', 'workload']);
    expect([later['7|h|team-a'], later['8|h|team-a'], later['9|h|team-a'], later['8|h|team-b'], later['9|h|team-b']]).toEqual([[2, 2], [0, 2], undefined, [0, 1], undefined]);
  });

  test('a restart from a snapshot after any record writes the same counts (restore, replay)', () => {
    const input = scenario();
    const ref = new Map<string, OutPoint>();
    const a = new PartitionAggregator({ partition: 0, allowedLatenessMs: 30_000 });
    input.forEach((r, i) => {
      a.add(r);
      if (i % 2 === 0) write(ref, a);
    });
    write(ref, a);
    for (let crashAt = 1; crashAt < input.length; crashAt++) {
      const db = new Map<string, OutPoint>();
      const b = new PartitionAggregator({ partition: 0, allowedLatenessMs: 30_000 });
      let snap = JSON.stringify(b.snapshot());
      let snapAt = 0;
      input.slice(0, crashAt).forEach((r, i) => {
        b.add(r);
        if (i % 2 === 0) {
          write(db, b);
          snap = JSON.stringify(b.snapshot());
          snapAt = i + 1;
        }
      });
      write(db, b); // written, but its snapshot lost with the crash
      const c = new PartitionAggregator({ partition: 0, allowedLatenessMs: 30_000 });
      c.restore(JSON.parse(snap) as Record<string, unknown>);
      input.slice(snapAt).forEach((r, i) => {
        c.add(r);
        if ((snapAt + i) % 2 === 0) write(db, c);
      });
      write(db, c);
      expect({ crashAt, points: [...db.entries()].sort() }).toEqual({ crashAt, points: [...ref.entries()].sort() });
    }
  });

  test('a reboot (a new boot_id) ends the open connections of the boots before it', () => {
    seq = 0;
    const agg = new PartitionAggregator({ partition: 0, allowedLatenessMs: 0 });
    const db = new Map<string, OutPoint>();
    agg.add(conn({ cookie: '1', event: 'open', time_ms: START + 1_000 }));
    agg.add(conn({ cookie: '2', event: 'open', time_ms: START + 2_000 }));
    agg.add(conn({ cookie: '1', event: 'open', boot_id: 'b2', time_ms: START + 2 * MIN + 1_000 }));
    agg.add(conn({ cookie: '7', host_id: 'other', time_ms: START + 4 * MIN }));
    write(db, agg);
    expect(active(db, 'nettally_traffic_1m', ['host_id'])).toEqual({ '0|h': [2, 2], '1|h': [2, 2], '2|h': [1, 2], '3|h': [1, 1], '4|h': [1, 1], '4|other': [1, 1] });
  });
});

describe('workload and remote_class tags', () => {
  test('remote_class from the class map (IPv4, IPv6, IPv4-mapped), workload "" → unknown, interfaces carry workload', () => {
    seq = 0;
    const remoteClasses = parseRemoteClasses('10.20.0.0/16 zone-b\n2001:db8::/32 partner\n', 'c.txt', '--remote-classes');
    const agg = new PartitionAggregator({ partition: 0, remoteClasses });
    const db = new Map<string, OutPoint>();
    agg.add(conn({ cookie: '1', daddr: '10.20.0.5', tx_bytes: 100 }));
    agg.add(conn({ cookie: '2', daddr: '::ffff:10.20.9.9', tx_bytes: 200 }));
    agg.add(conn({ cookie: '3', daddr: '2001:db8::1', tx_bytes: 400 }));
    agg.add(conn({ cookie: '4', daddr: '8.8.8.8', tx_bytes: 800 }));
    agg.add(conn({ cookie: '5', daddr: '10.1.1.1', tx_bytes: 1600, workload: '' }));
    agg.add({ kind: 'iface', host_id: 'h', hostname: 'h', boot_id: 'b1', epoch: 1, seq: ++seq, time_ms: START, netns: 1, ifindex: 2, rx_bytes: 5, rx_packets: 1, tx_bytes: 5, tx_packets: 1, workload: '' });
    write(db, agg);
    const bytes: Record<string, number> = {};
    for (const p of db.values()) {
      if (p.measurement !== 'nettally_traffic_1m') continue;
      const k = `${p.tags.workload}|${p.tags.remote_class}`;
      bytes[k] = (bytes[k] ?? 0) + (p.fields.tx_bytes as number);
    }
    expect(bytes).toEqual({ 'team-a|zone-b': 300, 'team-a|partner': 400, 'team-a|internet': 800, 'unknown|internal': 1600 });
    expect([...db.values()].filter((p) => p.measurement === 'nettally_iface_1m').map((p) => p.tags.workload)).toEqual(['unknown']);
  });

  test('a connection keeps the class it was first seen with across a snapshot restored under a changed map', () => {
    seq = 0;
    const before = parseRemoteClasses('203.0.113.0/24 zone-b\n', 'old.txt', '--remote-classes');
    const after = parseRemoteClasses('203.0.113.0/24 zone-c\n', 'new.txt', '--remote-classes');
    const a = new PartitionAggregator({ partition: 0, remoteClasses: before });
    a.add(conn({ cookie: '1', daddr: '203.0.113.7', tx_bytes: 100 }));
    const b = new PartitionAggregator({ partition: 0, remoteClasses: after });
    b.restore(JSON.parse(JSON.stringify(a.snapshot())) as Record<string, unknown>);
    const db = new Map<string, OutPoint>();
    b.add(conn({ cookie: '1', daddr: '203.0.113.7', tx_bytes: 150, time_ms: START + 1_000 }));
    b.add(conn({ cookie: '2', daddr: '203.0.113.8', tx_bytes: 70, time_ms: START + 2_000 }));
    write(db, b);
    const got = [...db.values()].filter((p) => p.measurement === 'nettally_traffic_1m').map((p) => [p.tags.remote_class, p.fields.tx_bytes]).sort();
    expect(got).toEqual([['zone-b', 150], ['zone-c', 70]]);
  });
});

// Issue 12, memory and purges: connections of one tag set share one tags array and cell key (a connection must not
// cost its own copy of ~9 strings and a ~100-character key), and a retired boot or a forgotten host is dropped
// through the PartsMap host index — a fleet-wide reboot must not scan every connection of the partition once per
// host — with removal tracking still listing every dropped connection (the delta snapshots depend on it).
import { PartitionAggregator } from './aggregator';
import type { ConnState, PartsMap } from './agg-state';
import type { AggInput } from './records';

const START = Date.UTC(2026, 0, 5, 10, 0, 0);
const MIN = 60_000;

function conn(o: { host_id: string; boot_id: string; seq: number; time_ms: number; cookie: number } & Partial<Record<string, unknown>>): AggInput {
  return {
    kind: 'conn', event: 'sample', hostname: 'h', epoch: 1, tx_bytes: 10, rx_bytes: 0, retransmits: 0,
    netns: 1, comm: 'a', protocol: 6, direction: 1, sport: 40000, dport: 443, flush_reason: 'interval', start_ns: 1, ...o,
  } as AggInput;
}

function iface(host_id: string, boot_id: string, seq: number, time_ms: number): AggInput {
  return { kind: 'iface', host_id, hostname: 'h', boot_id, epoch: 1, seq, time_ms, netns: 1, ifindex: 2, rx_bytes: seq, rx_packets: 1, tx_bytes: 1, tx_packets: 1 } as AggInput;
}

// the aggregator's state maps (private): what these tests check is their contents, created here by the records
function maps(agg: PartitionAggregator): { conns: PartsMap<ConnState>; ifaces: Map<string, unknown>; marks: Map<string, unknown> } {
  return agg as unknown as { conns: PartsMap<ConnState>; ifaces: Map<string, unknown>; marks: Map<string, unknown> };
}

test('connections of one tag set share one tags array and one cell key, also after a restore', () => {
  const agg = new PartitionAggregator({ partition: 0 });
  let seq = 0;
  for (let c = 1; c <= 50; c++) agg.add(conn({ host_id: `h${String(c % 2)}`, boot_id: 'b', seq: ++seq, time_ms: START, cookie: c, dport: c % 2 === 0 ? 443 : 80 }));
  const check = (a: PartitionAggregator): void => {
    const cs = [...maps(a).conns.values()];
    expect(new Set(cs.map((c) => c.tags)).size).toBe(2); // two distinct tag sets, one array each
    expect(new Set(cs.map((c) => c.key)).size).toBe(2);
    for (const c of cs) expect(c.key).toBe(c.tags!.join('\u0000'));
  };
  check(agg);
  const again = new PartitionAggregator({ partition: 0 });
  again.restore(JSON.parse(JSON.stringify(agg.snapshot())) as Record<string, unknown>);
  check(again);
  expect(new Set([...maps(again).conns.values()].map((c) => c.tags))).toEqual(new Set([...maps(again).conns.values()].map((c) => c.atags)));
});

test('a fleet-wide reboot retires each host\'s old boot through the host index, and the delta lists every dropped connection', () => {
  const HOSTS = 40;
  const CONNS = 25;
  const agg = new PartitionAggregator({ partition: 0, idleTimeoutMs: 5 * MIN });
  const { conns, ifaces } = maps(agg);
  const seq = new Map<string, number>();
  const next = (h: string): number => {
    seq.set(h, (seq.get(h) ?? 0) + 1);
    return seq.get(h)!;
  };
  const old = new Set<string>();
  for (let h = 0; h < HOSTS; h++) {
    const host = `host-${h}`;
    agg.add(iface(host, 'b1', next(host), START));
    for (let c = 1; c <= CONNS; c++) {
      agg.add(conn({ host_id: host, boot_id: 'b1', seq: next(host), time_ms: START, cookie: c, event: 'open' }));
      old.add(`${host}\u0000b1\u0000${c}`);
    }
  }
  agg.pending().commit();
  conns.removed!.clear(); // as a stored snapshot would: from here on the delta lists what the reboot drops
  // every host reboots (new epoch, new boot) and runs 10 minutes: its old boot is retired at the next sweep
  for (let h = 0; h < HOSTS; h++) {
    const host = `host-${h}`;
    for (const t of [START + MIN, START + 10 * MIN]) agg.add(conn({ host_id: host, boot_id: 'b2', epoch: 2, seq: next(host), time_ms: t, cookie: 1 }));
  }
  let keyScans = 0;
  for (const m of [conns, ifaces]) {
    const keys = m.keys.bind(m);
    m.keys = (): MapIterator<string> => {
      keyScans++;
      return keys();
    };
  }
  agg.pending().commit();
  expect(keyScans).toBe(0); // no walk over every key of the partition per retired boot
  expect([...conns.keys()].sort()).toEqual(Array.from({ length: HOSTS }, (_, h) => `host-${h}\u0000b2\u00001`).sort());
  expect([...ifaces.keys()]).toEqual([]);
  expect(new Set(conns.removed)).toEqual(old);
  // nothing of the retired boots is left in the index either: a lookup by parts finds nothing
  expect(conns.find3('host-0', 'b1', 1)).toBeUndefined();
  expect(conns.groupsOf('host-0')?.has('b1')).toBe(false);
});

test('a forgotten host is dropped through the index, a host_id with \\0 in it (forged) by its keys, and no other host loses state', () => {
  const agg = new PartitionAggregator({ partition: 0, forgetHostMs: 30 * MIN, idleTimeoutMs: 5 * MIN });
  const { conns, ifaces, marks } = maps(agg);
  let seq = 0;
  for (const host of ['gone', 'x\u0000forged']) {
    agg.add(iface(host, 'b', ++seq, START));
    for (let c = 1; c <= 5; c++) agg.add(conn({ host_id: host, boot_id: 'b', seq: ++seq, time_ms: START, cookie: c }));
  }
  // another host keeps sending for an hour: the two silent ones are forgotten
  for (let i = 0; i <= 6; i++) agg.add(conn({ host_id: 'live', boot_id: 'b', seq: ++seq, time_ms: START + i * 10 * MIN, cookie: 1 }));
  agg.pending().commit();
  expect([...conns.keys()]).toEqual(['live\u0000b\u00001']);
  expect([...ifaces.keys()]).toEqual([]);
  expect([...marks.keys()]).toEqual(['live\u00001']);
  expect(conns.removed!.size).toBe(10);
  expect(agg.sizes.hosts).toBe(1);
});

test('the shared tag-set table keeps only sets a connection still counts in (a churn of ports does not grow it past its bound)', () => {
  const agg = new PartitionAggregator({ partition: 0, closeGraceMs: MIN, idleTimeoutMs: 5 * MIN });
  const table = (agg as unknown as { tagSets: { size: number } }).tagSets;
  let seq = 0;
  for (let c = 1; c <= 300; c++) {
    agg.add(conn({ host_id: 'h', boot_id: 'b', seq: ++seq, time_ms: START, cookie: c, dport: 1000 + c, event: 'open' }));
    agg.add(conn({ host_id: 'h', boot_id: 'b', seq: ++seq, time_ms: START, cookie: c, dport: 1000 + c, event: 'close' }));
  }
  agg.add(conn({ host_id: 'h', boot_id: 'b', seq: ++seq, time_ms: START + 2 * MIN, cookie: 1000, dport: 443 }));
  expect(table.size).toBe(301); // more than the table's first bound (256): the next sweep prunes it
  agg.pending().commit();
  expect(table.size).toBe(1); // the closed ones are gone after the close grace, and their tag sets with them
});

// Unit tests of `nettally top`'s model: rates from cumulative snapshots, closed connections kept in group totals.
import { blankConn, type ConnRecord } from './records';
import { TopModel, renderFrame } from './top';

function conn(cookie: number, pid: number, netns: number, tx: number, rx: number, closed = false): ConnRecord {
  return Object.assign(blankConn(closed ? 3 : 2), {
    cookie, tx_bytes: tx, rx_bytes: rx, cgroup_id: 1, netns, netns_cookie: 1, pid, comm: `p${pid}`, family: 2, protocol: 6,
    direction: 1, saddr: '10.0.0.1', daddr: '10.0.0.2', sport: 1000 + cookie, dport: 80, flush_reason: 'snapshot',
  });
}

test('rates are deltas over the interval; totals survive a connection closing', () => {
  const m = new TopModel();
  const a = m.update([conn(1, 10, 7, 1000, 0), conn(2, 10, 7, 0, 500), conn(3, 20, 8, 300, 300)], 1000, 1);
  expect(a.frame.processes.find((p) => p.pid === 10)).toMatchObject({ tx_bytes: 1000, rx_bytes: 500, tx_bytes_per_s: 1000, rx_bytes_per_s: 500, conns: 2 });
  expect(a.closed).toEqual([]);

  const b = m.update([conn(1, 10, 7, 3000, 0, true), conn(2, 10, 7, 0, 500), conn(3, 20, 8, 300, 300)], 2000, 2);
  expect(b.closed).toEqual([1]);
  expect(b.frame.connections.find((c) => c.cookie === 1)).toMatchObject({ closed: true, tx_bytes_per_s: 1000 });
  expect(b.frame.processes.find((p) => p.pid === 10)).toMatchObject({ tx_bytes: 3000, rx_bytes: 500, tx_bytes_per_s: 1000, rx_bytes_per_s: 0, conns: 1 });

  // the closed connection was forgotten in the kernel: it is gone from the snapshot but not from the totals
  const c = m.update([conn(2, 10, 7, 0, 900), conn(3, 20, 8, 300, 300)], 1000, 3);
  expect(c.frame.processes.find((p) => p.pid === 10)).toMatchObject({ tx_bytes: 3000, rx_bytes: 900, rx_bytes_per_s: 400 });
  expect(c.frame.netns.find((n) => n.netns === 7)).toMatchObject({ tx_bytes: 3000, rx_bytes: 900 });
  expect(c.frame.netns[0].netns).toBe(7); // busiest first
  expect(renderFrame(c.frame, 5)).toMatch(/p10/);
});

test('pid and netns filters', () => {
  const m = new TopModel({ netns: 8 });
  const { frame } = m.update([conn(1, 10, 7, 1000, 0), conn(3, 20, 8, 300, 300)], 1000, 1);
  expect(frame.connections.map((c) => c.cookie)).toEqual([3]);
  const p = new TopModel({ pid: 10 }).update([conn(1, 10, 7, 1000, 0), conn(3, 20, 8, 300, 300)], 1000, 1).frame;
  expect(p.processes.map((x) => x.pid)).toEqual([10]);
});

test('workloads: each connection carries its workload; per-workload totals keep closed connections', () => {
  const m = new TopModel({}, (r) => (r.netns === 7 ? 'tenant-a' : 'host'));
  m.update([conn(1, 10, 7, 1000, 0), conn(2, 11, 7, 0, 500), conn(3, 20, 8, 300, 300)], 1000, 1);
  const { frame } = m.update([conn(1, 10, 7, 1000, 0, true), conn(3, 20, 8, 600, 300)], 1000, 2);
  expect(frame.connections.find((c) => c.cookie === 1)?.workload).toBe('tenant-a');
  // connection 2 left the snapshot unclosed (forgotten): only closed connections stay in group totals
  expect(frame.workloads).toEqual([
    expect.objectContaining({ workload: 'host', tx_bytes: 600, rx_bytes: 300, conns: 1 }),
    expect.objectContaining({ workload: 'tenant-a', tx_bytes: 1000, rx_bytes: 0, conns: 0 }),
  ]);
  const text = renderFrame(frame, 5);
  expect(text).toMatch(/WORKLOAD/);
  expect(text).toMatch(/tenant-a/);
});

test('a snapshot in chunks: group rows count every connection, only the busiest connLimit become rows', () => {
  const m = new TopModel({}, () => 'host', 3);
  const chunk = (from: number): ConnRecord[] => Array.from({ length: 1024 }, (_, i) => conn(from + i, 10 + ((from + i) % 4), 7, from + i, 1));
  const chunks = [0, 1024, 2048, 3072].map(chunk);
  const { frame } = m.updateChunks(chunks, 1000, 1);
  expect(frame.connections.map((c) => c.cookie)).toEqual([4095, 4094, 4093]);
  let tx = 0;
  for (let i = 0; i < 4096; i++) tx += i;
  expect(frame.netns).toEqual([expect.objectContaining({ netns: 7, conns: 4096, tx_bytes: tx, rx_bytes: 4096 })]);
  expect(frame.processes.reduce((n, p) => n + p.conns, 0)).toBe(4096);
  // the same model fed the whole array at once gives the same frame
  const whole = new TopModel({}, () => 'host', 3).update(chunks.flat(), 1000, 1).frame;
  expect(whole).toEqual(frame);
});

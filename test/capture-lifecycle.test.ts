// Scenario: listen events, ring-buffer overflow without losing bytes, and a restart that continues pinned counters.
import { mkdtempSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import path from 'path';
import { loadNative } from '../native/index';
import { openCapture } from '../producer/capture';
import { LAYOUT, decodeConnEntries, type ConnEntry } from '../producer/records';
import { Collector, movedOf, randomPort, startClient, startServer, transfer } from './helpers/capture';
import { createNetnsPair, nsSpawn, type NetnsPair } from './helpers/netns';

/** Every tracked connection, by the chunked map walk the producer uses (connsChunk). */
function connEntries(cap: { connsChunk(dst: ArrayBuffer, cursor: Float64Array): number }): ConnEntry[] {
  const out: ConnEntry[] = [];
  const cursor = new Float64Array(2);
  const buf = new ArrayBuffer(256 * LAYOUT.conn);
  while (cursor[1] !== 2) out.push(...decodeConnEntries(buf.slice(0, cap.connsChunk(buf, cursor) * LAYOUT.conn)));
  return out;
}

const TCP = 6;
let pair: NetnsPair;
const cleanups: (() => void)[] = [];

beforeAll(() => {
  pair = createNetnsPair('life');
});

afterAll(() => {
  for (const c of cleanups.reverse()) c();
  pair?.destroy();
});

test('listen events carry netns inode, address, port and backlog; a 2nd listen() updates the backlog', async () => {
  const col = new Collector(await openCapture({ ifaceIntervalMs: 0 }));
  try {
    const p4 = randomPort();
    const p6 = randomPort();
    await (await startServer(pair, 'tcp', 4, p4, ['--conns', '0', '--backlog', '7', '--relisten', '33'])).done;
    await (await startServer(pair, 'tcp', 6, p6, ['--conns', '0', '--backlog', '5'])).done;
    await col.waitFor(() => col.listens().filter((l) => l.port === p4).length >= 2 && col.listens().some((l) => l.port === p6));
    const l4 = col.listens().filter((l) => l.port === p4);
    expect(l4.map((l) => l.backlog)).toEqual([7, 33]);
    for (const l of l4) expect(l).toMatchObject({ netns: pair.b.inode, addr: pair.b.addr4, family: 2, protocol: TCP, comm: 'python3' });
    expect(l4[0].cookie).toBe(l4[1].cookie);
    expect(col.listens().find((l) => l.port === p6)).toMatchObject({ netns: pair.b.inode, addr: pair.b.addr6, family: 10, backlog: 5 });
  } finally {
    await col.end();
  }
});

test('a 2nd listen() on a listener that stays open is reported by the next refresh', async () => {
  const col = new Collector(await openCapture({ flushIntervalMs: 200, ifaceIntervalMs: 0 }));
  try {
    const port = randomPort();
    const srv = await startServer(pair, 'tcp', 4, port, ['--conns', '1', '--backlog', '9', '--relisten', '21']);
    // the server now waits in accept(): its listening socket is open, nothing closes it
    await col.waitFor(() => col.listens().filter((l) => l.port === port).length >= 2, 5000);
    expect(col.listens().filter((l) => l.port === port).map((l) => l.backlog)).toEqual([9, 21]);
    startClient(pair, 'tcp', 4, port, ['--bytes', '1']);
    await srv.done;
  } finally {
    await col.end();
  }
});

test('the refresh on a worker thread finds a connection that predates the capture; close() may run meanwhile', async () => {
  const go = mkdtempSync(path.join(tmpdir(), 'nettally-go-'));
  cleanups.push(() => rmSync(go, { recursive: true, force: true }));
  const port = randomPort();
  const srv = await startServer(pair, 'tcp', 4, port, []);
  const cli = startClient(pair, 'tcp', 4, port, ['--parts', '5000,7', '--pause-dir', go]);
  await cli.waitLine('PART1');
  let closed!: () => void;
  const done = new Promise<void>((r) => (closed = r));
  const { Capture } = loadNative();
  const cap = new Capture({
    flushIntervalNs: 5e9, flushThresholdBytes: 1 << 20, ringBufferBytes: 1 << 20, maxConnections: 1 << 16,
    naive: false, hooksOnly: false, onBatch: () => undefined, onClosed: () => closed(),
  });
  let open = true;
  try {
    // the sockets moved nothing since the capture attached, so they have no cookie: the worker creates them
    // (SO_COOKIE through the holder's fd) and walks again, and both ends are tracked from now on
    expect(await cap.refreshAsync()).toBeGreaterThanOrEqual(0);
    const ends = connEntries(cap).filter((e) => e.record.protocol === TCP && (e.record.dport === port || e.record.sport === port));
    expect(ends.map((e) => e.record.netns).sort()).toEqual([pair.a.inode, pair.b.inode].sort());
    for (const e of ends) expect(e.record).toMatchObject({ tx_bytes: 0, rx_bytes: 0, direction: 0 });
    // one more refresh in flight while the capture closes: it holds its own reference to the iterator
    const inFlight = cap.refreshAsync();
    cap.close();
    open = false;
    await done;
    expect(await inFlight).toBeGreaterThanOrEqual(0);
  } finally {
    if (open) {
      cap.close();
      await done;
    }
    writeFileSync(path.join(go, 'go1'), '');
    await cli.done;
    await srv.done;
  }
});

test('a connection that predates the capture is found by the first refresh and counted from then on', async () => {
  const go = mkdtempSync(path.join(tmpdir(), 'nettally-go-'));
  cleanups.push(() => rmSync(go, { recursive: true, force: true }));
  const parts = [700_000, 1_234_567, 89];
  const port = randomPort();
  const srv = await startServer(pair, 'tcp', 4, port, []);
  const cli = startClient(pair, 'tcp', 4, port, ['--parts', parts.join(','), '--pause-dir', go]);
  await cli.waitLine('PART1');
  const col = new Collector(await openCapture({ flushIntervalMs: 200, ifaceIntervalMs: 0 }));
  try {
    writeFileSync(path.join(go, 'go1'), '');
    await cli.waitLine('PART2');
    writeFileSync(path.join(go, 'go2'), '');
    const client = movedOf(await cli.done);
    await srv.done;
    await col.waitFor(() => col.closeOf(pair.a.inode, TCP, client[0].sport, port) !== undefined);
    const r = col.closeOf(pair.a.inode, TCP, client[0].sport, port);
    // the bytes sent before the capture opened are not ours to count; everything after is, exactly
    expect(r).toMatchObject({ tx_bytes: parts[1] + parts[2], rx_bytes: 0, direction: 0, comm: 'python3' });
    expect(r?.pid).toBeGreaterThan(0);
    expect(col.conns().some((c) => c.cookie === r?.cookie && c.kind === 1)).toBe(true);
  } finally {
    await col.end();
  }
});

test('a tiny ring buffer under heavy churn drops records but every connection still ends exact', async () => {
  const cap = await openCapture({ ringBufferBytes: 4096, flushIntervalMs: 200, ifaceIntervalMs: 0 });
  const col = new Collector(cap);
  try {
    const port = randomPort();
    const srv = await startServer(pair, 'tcp', 4, port, ['--conns', '150', '--reply', '100', '--chunk', '500']);
    const cli = startClient(pair, 'tcp', 4, port, ['--conns', '150', '--bytes', '3000', '--chunk', '500']);
    // keep the JS thread busy: the drain thread backs up and the kernel's ring buffer overflows
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2500);
    const server = movedOf(await srv.done);
    const client = movedOf(await cli.done);
    expect(client).toHaveLength(150);
    const want = [...client.map((m) => ({ ns: pair.a.inode, m })), ...server.map((m) => ({ ns: pair.b.inode, m }))];
    await col.waitFor(() => want.every(({ ns, m }) => col.closeOf(ns, TCP, m.sport, m.dport) !== undefined), 15000);
    for (const { ns, m } of want) {
      const r = col.closeOf(ns, TCP, m.sport, m.dport);
      expect({ tx: r?.tx_bytes, rx: r?.rx_bytes }).toEqual({ tx: m.tx, rx: m.rx });
    }
    const stats = cap.stats();
    expect(stats.ringbuf_drops).toBeGreaterThan(0);
    expect(stats.sweep_records).toBeGreaterThan(0);
  } finally {
    await col.end();
  }
});

test('a reader that falls behind pauses the drain; once it reads again every connection is exact', async () => {
  const cap = await openCapture({ ringBufferBytes: 8192, flushIntervalMs: 200, ifaceIntervalMs: 0, maxQueuedRecords: 20 });
  try {
    const port = randomPort();
    const srv = await startServer(pair, 'tcp', 4, port, ['--conns', '80', '--reply', '10']);
    const cli = startClient(pair, 'tcp', 4, port, ['--conns', '80', '--bytes', '2000']);
    const server = movedOf(await srv.done);
    const client = movedOf(await cli.done);
    await new Promise((r) => setTimeout(r, 300)); // nobody reads meanwhile
    const col = new Collector(cap);
    const want = [...client.map((m) => ({ ns: pair.a.inode, m })), ...server.map((m) => ({ ns: pair.b.inode, m }))];
    await col.waitFor(() => want.every(({ ns, m }) => col.closeOf(ns, TCP, m.sport, m.dport) !== undefined), 15000);
    for (const { ns, m } of want) {
      const r = col.closeOf(ns, TCP, m.sport, m.dport);
      expect({ tx: r?.tx_bytes, rx: r?.rx_bytes }).toEqual({ tx: m.tx, rx: m.rx });
    }
    expect(cap.stats().ringbuf_drops).toBeGreaterThan(0);
    await col.end();
  } finally {
    await cap.close();
  }
});

test('a restarted capture reuses the pinned maps and continues the counters', async () => {
  const pinDir = `/sys/fs/bpf/nettally-test-${process.pid}-${Date.now()}`;
  const go = mkdtempSync(path.join(tmpdir(), 'nettally-go-'));
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }), () => rmSync(go, { recursive: true, force: true }));
  const parts = [1_000_000, 2_000_000, 3_000_123];
  const col1 = new Collector(await openCapture({ pinDir, flushIntervalMs: 200, ifaceIntervalMs: 0 }));
  const port = randomPort();
  const srv = await startServer(pair, 'tcp', 4, port, []);
  const cli = startClient(pair, 'tcp', 4, port, ['--parts', parts.join(','), '--pause-dir', go]);
  let cookie = 0;
  try {
    await cli.waitLine('PART1');
    await col1.waitFor(() => col1.conns().some((r) => r.netns === pair.a.inode && r.dport === port && r.tx_bytes === parts[0]));
    cookie = col1.conns().find((r) => r.netns === pair.a.inode && r.dport === port)?.cookie ?? 0;
  } finally {
    await col1.end();
  }
  // bytes moved while no capture runs are still counted: TCP's sequence numbers are read again by the next refresh
  writeFileSync(path.join(go, 'go1'), '');
  await cli.waitLine('PART2');
  const cap2 = await openCapture({ pinDir, flushIntervalMs: 200, ifaceIntervalMs: 0 });
  const col2 = new Collector(cap2);
  try {
    expect(cap2.snapshot().find((r) => r.cookie === cookie)).toMatchObject({ tx_bytes: parts[0] + parts[1], flush_reason: 'snapshot' });
    writeFileSync(path.join(go, 'go2'), '');
    const client = movedOf(await cli.done);
    const server = movedOf(await srv.done);
    const total = parts.reduce((a, b) => a + b, 0);
    expect(client[0].tx).toBe(total);
    await col2.waitFor(() => col2.closeOf(pair.a.inode, TCP, client[0].sport, port) !== undefined && col2.closeOf(pair.b.inode, TCP, port, client[0].sport) !== undefined);
    expect(col2.closeOf(pair.a.inode, TCP, client[0].sport, port)).toMatchObject({ cookie, tx_bytes: total, rx_bytes: 0 });
    expect(col2.closeOf(pair.b.inode, TCP, port, client[0].sport)).toMatchObject({ rx_bytes: server[0].rx, tx_bytes: 0 });
    expect(server[0].rx).toBe(total);
  } finally {
    await col2.end();
  }
});

test('transfers after a restart are exact too (fresh entries in reused maps)', async () => {
  const pinDir = `/sys/fs/bpf/nettally-test-${process.pid}-${Date.now()}-b`;
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }));
  for (let round = 0; round < 2; round++) {
    const col = new Collector(await openCapture({ pinDir, ifaceIntervalMs: 0 }));
    try {
      const res = await transfer(pair, 'tcp', 4, ['--reply', '12345'], ['--bytes', '54321']);
      await col.waitFor(() => col.closeOf(pair.a.inode, TCP, res.client[0].sport, res.port) !== undefined);
      expect(col.closeOf(pair.a.inode, TCP, res.client[0].sport, res.port)).toMatchObject({ tx_bytes: 54321, rx_bytes: 12345 });
    } finally {
      await col.end();
    }
  }
});

test('a refused connect() leaves nothing behind in the kernel map and emits no records', async () => {
  const cap = await openCapture({ ifaceIntervalMs: 0 });
  const col = new Collector(cap);
  try {
    const port = randomPort();
    const py = `import socket,sys\ns=socket.socket()\ntry:\n  s.connect(('${pair.b.addr4}',${port}))\nexcept ConnectionRefusedError:\n  print(s.getsockname()[1])`;
    const out = await nsSpawn(pair.a.name, 'python3', ['-c', py]).done;
    const sport = Number(out.trim());
    expect(sport).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(cap.snapshot().filter((r) => r.netns === pair.a.inode && r.dport === port)).toEqual([]);
    expect(col.conns().filter((r) => r.netns === pair.a.inode && r.dport === port)).toEqual([]);
  } finally {
    await col.end();
  }
});

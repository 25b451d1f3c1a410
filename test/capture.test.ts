// Scenario: known transfers between two network namespaces give exact per-connection and per-netns payload totals.
import { execFileSync } from 'child_process';
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import path from 'path';
import { openCapture } from '../producer/capture';
import { Collector, movedOf, randomPort, startServer, transfer, type Moved, type TransferResult } from './helpers/capture';
import { ifaceBaseline, ifaceCountedSince } from './helpers/iface';
import { createNetnsPair, ifindexOf, nsSpawn, type NetnsPair } from './helpers/netns';

const TCP = 6;
const UDP = 17;

let pair: NetnsPair;
let col: Collector;

beforeAll(async () => {
  pair = createNetnsPair('cap');
  // a small threshold so long transfers also produce CONN_SAMPLE flushes on the way
  col = new Collector(await openCapture({ flushThresholdBytes: 1 << 20, flushIntervalMs: 500, ifaceIntervalMs: 200 }));
});

afterAll(async () => {
  await col?.end();
  pair?.destroy();
});

/** Every socket's CONN_CLOSE carries exactly the bytes its own syscalls moved. */
async function expectExact(res: TransferResult, protocol: number): Promise<void> {
  const want: { netns: number; m: Moved }[] = [
    ...res.client.map((m) => ({ netns: pair.a.inode, m })),
    ...res.server.map((m) => ({ netns: pair.b.inode, m })),
  ];
  await col.waitFor(() => want.every(({ netns, m }) => col.closeOf(netns, protocol, m.sport, m.dport) !== undefined));
  for (const { netns, m } of want) {
    const rec = col.closeOf(netns, protocol, m.sport, m.dport);
    expect({ sport: m.sport, tx: rec?.tx_bytes, rx: rec?.rx_bytes }).toEqual({ sport: m.sport, tx: m.tx, rx: m.rx });
  }
}

/** Per-netns totals from the final record of each connection, restricted to one server port. */
function netnsTotals(netns: number, protocol: number, port: number): { tx: number; rx: number } {
  const last = new Map<number, { tx: number; rx: number }>();
  for (const r of col.conns()) {
    if (r.netns !== netns || r.protocol !== protocol || (r.sport !== port && r.dport !== port)) continue;
    last.set(r.cookie, { tx: r.tx_bytes, rx: r.rx_bytes });
  }
  let tx = 0;
  let rx = 0;
  for (const v of last.values()) {
    tx += v.tx;
    rx += v.rx;
  }
  return { tx, rx };
}

function sum(ms: Moved[]): { tx: number; rx: number } {
  return { tx: ms.reduce((a, m) => a + m.tx, 0), rx: ms.reduce((a, m) => a + m.rx, 0) };
}

test('TCP IPv4 large writes: exact per connection and per netns, samples on the way', async () => {
  const res = await transfer(pair, 'tcp', 4, ['--conns', '3', '--reply', String(3 << 20)], ['--conns', '3', '--bytes', String(8 << 20), '--chunk', String(128 << 10)]);
  expect(sum(res.client).tx).toBe(3 * (8 << 20));
  await expectExact(res, TCP);
  expect(netnsTotals(pair.a.inode, TCP, res.port)).toEqual(sum(res.client));
  expect(netnsTotals(pair.b.inode, TCP, res.port)).toEqual(sum(res.server));
  const client = col.closeOf(pair.a.inode, TCP, res.client[0].sport, res.port);
  expect(client).toMatchObject({ family: 2, saddr: pair.a.addr4, daddr: pair.b.addr4, direction: 1, comm: 'python3', flush_reason: 'close' });
  expect(client?.duration_ns).toBeGreaterThan(0);
  const server = col.closeOf(pair.b.inode, TCP, res.port, res.client[0].sport);
  expect(server).toMatchObject({ saddr: pair.b.addr4, daddr: pair.a.addr4, direction: 2, comm: 'python3' });
  const samples = col.conns().filter((r) => r.cookie === client?.cookie && r.kind === 2);
  expect(samples.length).toBeGreaterThan(0);
  expect(col.conns().some((r) => r.cookie === client?.cookie && r.kind === 1)).toBe(true);
});

test('TCP IPv4 small (64 B) writes', async () => {
  const res = await transfer(pair, 'tcp', 4, ['--reply', '1000'], ['--bytes', String(64 * 4000), '--chunk', '64']);
  await expectExact(res, TCP);
});

test('many short TCP connections', async () => {
  const res = await transfer(pair, 'tcp', 4, ['--conns', '60', '--reply', '333', '--chunk', '100'], ['--conns', '60', '--bytes', '1000', '--chunk', '100']);
  expect(res.client).toHaveLength(60);
  await expectExact(res, TCP);
  expect(netnsTotals(pair.a.inode, TCP, res.port)).toEqual({ tx: 60000, rx: 60 * 333 });
});

test('TCP IPv6 with sendfile, and a splice-only receiver', async () => {
  const res = await transfer(pair, 'tcp', 6, ['--conns', '2', '--reply', '4096', '--recv-mode', 'splice'], ['--conns', '2', '--bytes', String((5 << 20) + 7), '--send-mode', 'sendfile']);
  await expectExact(res, TCP);
  const r = col.closeOf(pair.a.inode, TCP, res.client[0].sport, res.port);
  expect(r).toMatchObject({ family: 10, saddr: pair.a.addr6, daddr: pair.b.addr6 });
});

test('TCP splice to the socket, sendmsg with several buffers, and a receiver that peeks', async () => {
  for (const mode of ['splice', 'sendmsg']) {
    const res = await transfer(pair, 'tcp', 4, ['--reply', '2049', '--recv-mode', 'peek'], ['--bytes', String((3 << 20) + 3), '--chunk', '30000', '--send-mode', mode]);
    expect(res.client[0].tx).toBe((3 << 20) + 3);
    await expectExact(res, TCP);
  }
});

test('full duplex: both ends send and receive at the same time (concurrent refreshes of one socket)', async () => {
  const res = await transfer(pair, 'tcp', 4, ['--conns', '2', '--duplex', '--reply', String((6 << 20) + 11), '--chunk', '1000'], ['--conns', '2', '--duplex', '--bytes', String((6 << 20) + 5), '--chunk', '1500']);
  expect(res.server[0]).toMatchObject({ rx: (6 << 20) + 5, tx: (6 << 20) + 11 });
  await expectExact(res, TCP);
});

test('sendmmsg (UDP and TCP) and recvmmsg (UDP)', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'nettally-mmsg-'));
  try {
    const bin = path.join(dir, 'mmsg');
    execFileSync('cc', ['-O2', '-o', bin, path.join(__dirname, 'helpers', 'mmsg.c')]);
    const moved = (out: string): Moved => JSON.parse(out.trim().split('\n').pop() ?? '') as Moved;
    const port = randomPort();
    const rcv = nsSpawn(pair.b.name, bin, ['udp-recv', pair.b.addr4, String(port), '100']);
    await rcv.waitLine('READY');
    const sent = moved(await nsSpawn(pair.a.name, bin, ['udp-send', pair.b.addr4, String(port), '100', '1400']).done);
    const got = moved(await rcv.done);
    expect(sent.tx).toBe(140000);
    await expectExact({ port, client: [sent], server: [got] }, UDP);

    const tport = randomPort();
    const srv = await startServer(pair, 'tcp', 4, tport, []);
    const tsent = moved(await nsSpawn(pair.a.name, bin, ['tcp-send', pair.b.addr4, String(tport), '500', '3000']).done);
    const server = movedOf(await srv.done);
    expect(tsent.tx).toBe(1_500_000);
    await expectExact({ port: tport, client: [tsent], server }, TCP);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('io_uring send and receive (IORING_OP_SEND / IORING_OP_RECV)', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'nettally-uring-'));
  try {
    const bin = path.join(dir, 'uring');
    execFileSync('cc', ['-O2', '-o', bin, path.join(__dirname, 'helpers', 'uring.c')]);
    const moved = (out: string): Moved => JSON.parse(out.trim().split('\n').pop() ?? '') as Moved;
    const port = randomPort();
    const rcv = nsSpawn(pair.b.name, bin, ['tcp-recv', pair.b.addr4, String(port)]);
    await rcv.waitLine('READY');
    const sent = moved(await nsSpawn(pair.a.name, bin, ['tcp-send', pair.b.addr4, String(port), String((2 << 20) + 321), '10000']).done);
    const got = moved(await rcv.done);
    expect(got.rx).toBe((2 << 20) + 321);
    await expectExact({ port, client: [sent], server: [got] }, TCP);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('UDP IPv4 and IPv6 datagrams', async () => {
  for (const family of [4, 6] as const) {
    const res = await transfer(pair, 'udp', family, ['--count', '200', '--reply', '777'], ['--count', '200', '--chunk', '1200', '--reply', '1']);
    expect(res.client[0].tx).toBe(240000);
    // the server's socket is unconnected: its identity has no peer (daddr 0, dport 0)
    await expectExact({ ...res, server: res.server.map((m) => ({ ...m, dport: 0 })) }, UDP);
  }
});

test('UDP datagrams the receive buffer cannot hold are not counted as received', async () => {
  const port = randomPort();
  // a receiver with a tiny buffer that reads only after the sender is done: most datagrams are dropped by the kernel
  const receiver = `
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.bind((sys.argv[1], int(sys.argv[2])))
print('READY', flush=True)
time.sleep(1.5)
s.setblocking(False)
rx = n = 0
while True:
    try:
        d = s.recv(65536)
    except BlockingIOError:
        break
    rx += len(d)
    n += 1
print(json.dumps({'conns': [{'sport': int(sys.argv[2]), 'dport': 0, 'tx': 0, 'rx': rx, 'n': n}]}), flush=True)
s.close()
`;
  const sender = `
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
tx = sum(s.send(b'u' * 1000) for _ in range(300))
print(json.dumps({'conns': [{'sport': s.getsockname()[1], 'dport': int(sys.argv[2]), 'tx': tx, 'rx': 0}]}), flush=True)
s.close()
`;
  const rcv = nsSpawn(pair.b.name, 'python3', ['-c', receiver, pair.b.addr4, String(port)]);
  await rcv.waitLine('READY');
  const sent = movedOf(await nsSpawn(pair.a.name, 'python3', ['-c', sender, pair.b.addr4, String(port)]).done);
  const got = movedOf(await rcv.done);
  expect(sent[0].tx).toBe(300 * 1000);
  // the drop path was exercised: fewer datagrams arrived than were sent
  expect((got[0] as Moved & { n: number }).n).toBeLessThan(300);
  expect(got[0].rx).toBeGreaterThan(0);
  await expectExact({ port, client: sent, server: got }, UDP);
});

test('per-interface wire counters cover the payload', async () => {
  await new Promise((r) => setTimeout(r, 400));
  const ifaces = col.records.filter((r) => r.kind === 5 && r.netns === pair.a.inode);
  expect(ifaces.length).toBeGreaterThan(0);
  const last = new Map<number, (typeof ifaces)[number]>();
  for (const r of ifaces) last.set(r.kind === 5 ? r.ifindex : 0, r);
  const moved = sum(col.conns().filter((r) => r.netns === pair.a.inode && r.kind === 3).map((r) => ({ sport: 0, dport: 0, tx: r.tx_bytes, rx: r.rx_bytes })));
  let tx = 0;
  let rx = 0;
  for (const r of last.values()) {
    if (r.kind !== 5) continue;
    tx += r.tx_bytes;
    rx += r.rx_bytes;
  }
  // wire bytes are payload plus headers (and retransmits): never less than the payload the sockets moved
  expect(tx).toBeGreaterThan(moved.tx);
  expect(rx).toBeGreaterThan(moved.rx);
});

test('per-interface wire counters are exact on a quiet link (IP packets, headers included)', async () => {
  const quiet = createNetnsPair('capq', { quiet: true });
  try {
    const ifindex = ifindexOf(quiet.a.name, quiet.a.dev);
    // counted since a baseline: a reused netns inode can bring a deleted namespace's counters along
    const base = await ifaceBaseline(col, quiet.a.name, quiet.a.inode, [ifindex]);
    const res = await transfer(quiet, 'udp', 4, ['--count', '50', '--reply', '777'], ['--count', '50', '--chunk', '1000', '--reply', '1']);
    expect(res.server[0].rx).toBe(50000);
    const ip = 20;
    const udp = 8;
    const want = { rx_bytes: 777 + udp + ip, rx_packets: 1, tx_bytes: 50 * (1000 + udp + ip), tx_packets: 50 };
    expect(await ifaceCountedSince(col, base, quiet.a.inode, ifindex, (c) => c.rx_packets >= 1 && c.tx_packets >= 50)).toEqual(want);
  } finally {
    quiet.destroy();
  }
});

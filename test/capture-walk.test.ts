// Scenario: the connection map read in chunks (native connsChunk: one batch lookup per 1,024 entries). 1,500 loopback
// connections (3,000 tracked sockets, three chunks and a part) are each in the snapshot exactly once, with the bytes
// this test wrote on each. Ground truth: the sockets and byte counts the test made itself.
import net from 'net';
import { openCapture, type Capture } from '../producer/capture';

const PAIRS = 1500;
const TCP = 6;

test('a snapshot across several map chunks has every connection once, with exact bytes', async () => {
  const server = net.createServer();
  const sockets: net.Socket[] = [];
  let received = 0;
  server.on('connection', (s) => {
    sockets.push(s);
    s.on('data', (d) => (received += d.length));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  let cap: Capture | undefined;
  try {
    cap = await openCapture({ ifaceIntervalMs: 0 });
    const sent = new Map<number, number>(); // client port -> bytes written
    let total = 0;
    for (let i = 0; i < PAIRS; i++) {
      const c = net.connect(port, '127.0.0.1');
      sockets.push(c);
      await new Promise<void>((r, j) => c.once('connect', r).once('error', j));
      const n = (i % 7) + 1;
      c.write(Buffer.alloc(n, 1));
      sent.set(c.localPort as number, n);
      total += n;
    }
    const until = Date.now() + 60_000;
    while (received < total && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(received).toBe(total);

    const snap = cap.snapshot().filter((r) => r.protocol === TCP && (r.sport === port || r.dport === port));
    expect(snap).toHaveLength(2 * PAIRS);
    expect(new Set(snap.map((r) => r.cookie)).size).toBe(2 * PAIRS);
    const clients = snap.filter((r) => r.dport === port);
    expect(clients).toHaveLength(PAIRS);
    for (const r of clients) expect({ port: r.sport, tx: r.tx_bytes, rx: r.rx_bytes }).toEqual({ port: r.sport, tx: sent.get(r.sport), rx: 0 });
    const servers = snap.filter((r) => r.sport === port);
    expect(servers.reduce((n, r) => n + r.rx_bytes, 0)).toBe(total);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
    await cap?.close();
  }
}, 180_000);

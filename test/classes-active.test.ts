// Scenario (kernel capture → producer → bundled broker → consumer → influxd, real traffic in network namespaces this
// test creates): a --remote-classes file (given through NETTALLY_REMOTE_CLASSES) splits one namespace's traffic to two
// addresses of its peer namespace into two classes, with the exact bytes the generators moved; the peer's side is
// `internal` by the built-in ranges; `usage --group-by workload` shows each namespace's bytes under its `ip netns` name.
// And connections held open across window ends are the rollup's
// active_connections at each of those ends, also across a consumer restart in the middle (state from its snapshot).
import { execFileSync } from 'child_process';
import { writeFileSync, rmSync } from 'fs';
import { join } from 'path';
import { Cleanups } from './helpers/cleanups';
import { movedOf, randomPort } from './helpers/capture';
import { consumerScenario, usage, waitCaughtUp } from './helpers/consumer';
import { createNetnsPair, nsSpawn, type NetnsPair, type Spawned } from './helpers/netns';
import { startProducerProcess, type ProducerProcess } from './helpers/producer';

const TRAFFIC = join(__dirname, 'helpers/traffic.py');
const WINDOW_MS = 10_000;
const ZONE_C_ADDR = '10.77.0.3';
const HOLD = 3;
/** Opens `n` TCP connections, sends `bytes` on each, prints OPEN, holds them until `<dir>/close` exists, closes. */
const HOLD_PY = [
  'import socket, sys, os, time, json',
  'host, port, n, nbytes, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]',
  'cs = [socket.create_connection((host, port)) for _ in range(n)]',
  "for c in cs: c.sendall(b'h' * nbytes)",
  "print('OPEN', flush=True)",
  "while not os.path.exists(os.path.join(d, 'close')): time.sleep(0.02)",
  'for c in cs: c.close()',
  "print(json.dumps({'conns': [{'tx': nbytes, 'rx': 0}] * n}), flush=True)",
].join('\n');

const s = consumerScenario();
const cleanups = new Cleanups();
afterAll(() => cleanups.run());

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await sleep(500);
  }
}

/** A traffic.py server in pair.b bound to `addr`, serving `conns` connections and replying `reply` bytes to each. */
async function server(pair: NetnsPair, addr: string, port: number, conns: number, reply: number): Promise<Spawned> {
  const srv = nsSpawn(pair.b.name, 'python3', [TRAFFIC, 'tcp-server', '--bind', addr, '--port', String(port), '--conns', String(conns), '--reply', String(reply)], 180_000);
  cleanups.push(() => srv.kill());
  await Promise.race([srv.waitLine('READY'), srv.done]);
  return srv;
}

test('a class file splits a namespace\'s traffic by remote address with exact totals; held connections are active at every window end, across a consumer restart', async () => {
  const pair = createNetnsPair('cls');
  cleanups.push(() => pair.destroy());
  // a second address on the peer's side of the veth: same namespace, same link, another class
  execFileSync('ip', ['-n', pair.b.name, 'addr', 'add', `${ZONE_C_ADDR}/24`, 'dev', pair.b.dev]);
  const dir = cleanups.tempDir('classes');
  const classFile = join(dir, 'classes.txt');
  writeFileSync(classFile, `# test map\n${pair.b.addr4}/32 zone-b   # the peer's first address\n${ZONE_C_ADDR} zone-c\n`);

  const topic = `nettally.records.cls.${process.pid}`;
  const db = `nt_cls_${process.pid}`;
  const group = `g-cls-${process.pid}`;
  const pins = `/sys/fs/bpf/nettally-cls-${process.pid}`;
  cleanups.push(() => rmSync(pins, { recursive: true, force: true }));
  const producer: ProducerProcess = startProducerProcess(['--brokers', s.broker.address, '--topic', topic, '--state-dir', cleanups.tempDir('cls-state'), '--pin-dir', pins,
    '--flush-interval', '300ms', '--batch-max-wait', '20ms', '--status-interval', '0', '--iface-interval', '0']);
  cleanups.push(() => producer.child.kill('SIGKILL'));
  await producer.ready;
  const consumerArgs = ['--brokers', s.broker.address, '--topic', topic, '--group', group, '--state-topic', `${topic}.state`, '--dlq-topic', `${topic}.dlq`,
    '--influx-url', s.influx.url, '--influx-db', db, '--window', `${WINDOW_MS / 1000}s`, '--allowed-lateness', '2s', '--flush-interval', '500ms',
    '--status-interval', '0'];
  const env = { NETTALLY_REMOTE_CLASSES: classFile };
  let consumer = s.child(consumerArgs, env);

  // Classes: 2 connections to zone-b, 1 to zone-c, replies of different sizes.
  const [pb, pc, ph] = [randomPort(), randomPort() + 1, randomPort() + 2];
  const srvB = await server(pair, pair.b.addr4, pb, 2, 4321);
  const srvC = await server(pair, ZONE_C_ADDR, pc, 1, 777);
  const cliB = nsSpawn(pair.a.name, 'python3', [TRAFFIC, 'tcp-client', '--host', pair.b.addr4, '--port', String(pb), '--conns', '2', '--bytes', '1000003']);
  const cliC = nsSpawn(pair.a.name, 'python3', [TRAFFIC, 'tcp-client', '--host', ZONE_C_ADDR, '--port', String(pc), '--conns', '1', '--bytes', '2500007']);
  const sum = (out: string, k: 'tx' | 'rx'): number => movedOf(out).reduce((a, c) => a + c[k], 0);
  const [outB, outC] = [await cliB.done, await cliC.done];
  await Promise.all([srvB.done, srvC.done]);

  // Held connections (zone-b, their own port): open across at least two window ends, the consumer restarted between.
  const srvH = await server(pair, pair.b.addr4, ph, HOLD, 0);
  const hold = nsSpawn(pair.a.name, 'python3', ['-c', HOLD_PY, pair.b.addr4, String(ph), String(HOLD), '5000', dir], 180_000);
  cleanups.push(() => hold.kill());
  await Promise.race([hold.waitLine('OPEN'), hold.done]);
  const openedAt = Date.now();
  await sleep(WINDOW_MS + 2_000);
  expect(await consumer.stop()).toBe(0); // SIGTERM: final write, snapshot, commit
  consumer = s.child(consumerArgs, env);
  await sleep(WINDOW_MS + 2_000);
  const closingAt = Date.now();
  writeFileSync(join(dir, 'close'), '');
  const outH = await hold.done;
  await srvH.done;

  const truth = {
    'zone-b': { tx: sum(outB, 'tx') + sum(outH, 'tx'), rx: sum(outB, 'rx') + sum(outH, 'rx') },
    'zone-c': { tx: sum(outC, 'tx'), rx: sum(outC, 'rx') },
  };
  expect(truth['zone-b'].tx).toBe(2 * 1000003 + HOLD * 5000);
  expect(truth['zone-c']).toEqual({ tx: 2500007, rx: 777 });

  // `nettally usage --group-by netns,remote_class` (1-hour rollup) has exactly those bytes per class.
  const influxArgs = ['--influx-url', s.influx.url, '--influx-db', db, '--from', '-2h', '--to', 'now', '--window', '1h', '--format', 'json'];
  type Row = { netns: string; remote_class: string; tx_bytes: number; rx_bytes: number };
  const byClass = async (): Promise<Record<string, { tx: number; rx: number }>> => {
    const out: Record<string, { tx: number; rx: number }> = {};
    for (const r of JSON.parse(await usage([...influxArgs, '--group-by', 'netns,remote_class'])) as Row[]) {
      const k = `${r.netns === String(pair.a.inode) ? 'a' : r.netns === String(pair.b.inode) ? 'b' : 'other'}|${r.remote_class}`;
      const t = (out[k] ??= { tx: 0, rx: 0 });
      t.tx += r.tx_bytes;
      t.rx += r.rx_bytes;
    }
    return out;
  };
  const want = {
    'a|zone-b': truth['zone-b'],
    'a|zone-c': truth['zone-c'],
    // the peer's side: its remote address 10.77.0.1 is RFC 1918, internal by the built-in ranges (bytes mirrored)
    'b|internal': { tx: truth['zone-b'].rx + truth['zone-c'].rx, rx: truth['zone-b'].tx + truth['zone-c'].tx },
  };
  const pick = (v: Record<string, { tx: number; rx: number }>): Record<string, unknown> => Object.fromEntries(Object.keys(want).map((k) => [k, v[k]]));
  const got = await waitFor('bytes per class', byClass, (v) => JSON.stringify(pick(v)) === JSON.stringify(want));
  expect(pick(got)).toEqual(want);
  expect(Object.keys(got).filter((k) => k.startsWith('a|') || k.startsWith('b|')).sort()).toEqual(['a|zone-b', 'a|zone-c', 'b|internal']);

  // `--group-by workload`: each named namespace's traffic under its `ip netns` name (the producer resolves it on the
  // host), with exactly the bytes moved, mirrored on the two sides
  type WRow = { workload: string; tx_bytes: number; rx_bytes: number };
  const byWorkload: Record<string, { tx: number; rx: number }> = {};
  for (const r of JSON.parse(await usage([...influxArgs, '--group-by', 'workload'])) as WRow[]) {
    const t = (byWorkload[r.workload] ??= { tx: 0, rx: 0 });
    t.tx += r.tx_bytes;
    t.rx += r.rx_bytes;
  }
  const sent = { tx: truth['zone-b'].tx + truth['zone-c'].tx, rx: truth['zone-b'].rx + truth['zone-c'].rx };
  expect({ a: byWorkload[pair.a.name], b: byWorkload[pair.b.name] }).toEqual({ a: sent, b: { tx: sent.rx, rx: sent.tx } });

  // Active connections of the held group (namespace a, its port) per 10 s window, once the close is written final.
  const measurement = `nettally_traffic_${WINDOW_MS / 1000}s`;
  const perWindow = async (): Promise<{ t: number; active: number; peak: number; closed: number; final: boolean }[]> => {
    const q = `SELECT sum(active_connections), sum(peak_connections), sum(connections_closed), min(final) FROM ${measurement} WHERE netns = '${pair.a.inode}' AND service_port = '${ph}' GROUP BY time(${WINDOW_MS}ms) fill(none)`;
    const r = await s.influx.query(q, db);
    return (r.results[0]?.series?.[0]?.values ?? []).map((v) => ({ t: typeof v[0] === 'number' ? v[0] : Date.parse(String(v[0])), active: Number(v[1]), peak: Number(v[2]), closed: Number(v[3]), final: v[4] === true }));
  };
  const rows = await waitFor('the close of the held connections written final', perWindow, (v) => v.some((w) => w.closed === HOLD && w.final));
  await waitCaughtUp(s.admin, group, topic);
  // every window that ended while all were held open counts them; there are at least two such ends
  const held = rows.filter((w) => w.t + WINDOW_MS > openedAt + 500 && w.t + WINDOW_MS < closingAt - 500);
  expect({ windowEndsHeld: held.length >= 2, rows, openedAt, closingAt }).toMatchObject({ windowEndsHeld: true });
  expect(held.map((w) => [w.t, w.active, w.peak])).toEqual(held.map((w) => [w.t, HOLD, HOLD]));
  // the window of the close: none open at its end, all of them open at its start
  const closeWindow = rows.find((w) => w.closed === HOLD);
  expect(closeWindow).toMatchObject({ active: 0, peak: HOLD });
  // and no window of this group ever shows more than were opened
  expect(Math.max(...rows.map((w) => w.peak))).toBe(HOLD);
  expect(consumer.stderr()).not.toMatch(/points dead-letter|InfluxDB refused|dead-letter/);
}, 300_000);

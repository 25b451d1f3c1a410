// Scenario: `nettally up` run the way a user runs it — traffic in network namespaces reaches `nettally usage` exactly,
// and Ctrl-C leaves no process, pin or mount behind. Runs in a private mount namespace without bpffs/tracefs, so up's own
// mount/unmount is exercised without touching the machine's mounts.
import { execFileSync, spawnSync } from 'child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { connect } from 'net';
import { tmpdir } from 'os';
import { Kafka, logLevel } from 'kafkajs';
import { join, resolve } from 'path';
import { freePort } from '../bin/influxd';
import { startTestBroker } from './helpers/broker';
import { startInflux } from './helpers/influx';
import { createNetnsPair, nsSpawn, type NetnsPair } from './helpers/netns';
import { spawnUp, waitReady } from './helpers/up';

const ROOT = resolve(__dirname, '..');
const BIN = join(ROOT, 'dist/bin/nettally.js');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch {
      // best effort: the next cleanup still runs
    }
  }
});

function mountsOf(nsFile: string): string[] {
  // Mount point + type, sorted: what up may change (options and ids of untouched mounts stay as they are).
  return execFileSync('nsenter', [`--mount=${nsFile}`, 'cat', '/proc/self/mounts'], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ').slice(1, 3).join(' '))
    // Other tests' `ip netns add` mounts propagate in and out of /run/netns; they are not up's business.
    .filter((m) => !m.startsWith('/run/netns/'))
    .sort();
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
  });
}

/** Processes whose command line mentions any of `needles` (our data dir, our ports). */
function processesMentioning(needles: string[]): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    if (Number(pid) === process.pid) continue;
    let cmd = '';
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (needles.some((n) => cmd.includes(n))) found.push(`${pid}: ${cmd}`);
  }
  return found;
}

const SERVER_PY = `
import json, socket, sys
n, reply, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(('::', port))
s.listen(16)
print('listening', flush=True)
got = []
for i in range(n):
    c, _ = s.accept()
    t = 0
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        t += len(b)
    c.sendall(b'r' * reply)
    c.close()
    got.append(t)
print(json.dumps({'got': got}), flush=True)
`;

const CLIENT_PY = `
import json, socket, sys
host4, host6, port, reply = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sizes = [int(x) for x in sys.argv[5].split(',')]
res = []
for i, n in enumerate(sizes):
    fam, host = (socket.AF_INET6, host6) if i % 2 else (socket.AF_INET, host4)
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.connect((host, port))
    c.sendall(b's' * n)
    c.shutdown(socket.SHUT_WR)
    t = 0
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        t += len(b)
    c.close()
    res.append({'sent': n, 'received': t})
print(json.dumps(res), flush=True)
`;

interface UsageRow {
  netns?: string;
  tx_bytes: number;
  rx_bytes: number;
  connections_opened: number;
  connections_closed: number;
}

function usageByNetns(influxUrl: string): Map<string, { tx: number; rx: number; opened: number; closed: number }> {
  const r = spawnSync(process.execPath, [BIN, 'usage', '--influx-url', influxUrl, '--from', '-2h', '--to', 'now', '--group-by', 'netns,port,direction', '--format', 'json'], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.status !== 0) throw new Error(`nettally usage exited ${r.status}: ${r.stderr}`);
  const out = new Map<string, { tx: number; rx: number; opened: number; closed: number }>();
  for (const row of JSON.parse(r.stdout) as UsageRow[]) {
    const k = String(row.netns);
    const t = out.get(k) ?? { tx: 0, rx: 0, opened: 0, closed: 0 };
    t.tx += row.tx_bytes ?? 0;
    t.rx += row.rx_bytes ?? 0;
    t.opened += row.connections_opened ?? 0;
    t.closed += row.connections_closed ?? 0;
    out.set(k, t);
  }
  return out;
}

test('up --help; bad settings named at start; without root it says so', () => {
  const help = spawnSync(process.execPath, [BIN, 'up', '--help'], { encoding: 'utf8' });
  expect(help.status).toBe(0);
  for (const s of ['--data-dir', '--kafka-listen', 'KAFKA_BROKERS', 'INFLUX_URL', '--influx-port', '--pin-dir']) expect(help.stdout).toContain(s);
  const dir = mkdtempSync(join(tmpdir(), 'nettally-up-bad-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  for (const [flag, value] of [['--kafka-listen', 'nonsense'], ['--pin-dir', '/tmp/not-bpffs'], ['--brokers', 'no-port'], ['--flush-interval', 'soon']]) {
    const r = spawnSync(process.execPath, [BIN, 'up', '--data-dir', dir, flag, value], { encoding: 'utf8', timeout: 30_000 });
    expect({ flag, code: r.status, err: r.stderr }).toEqual({ flag, code: 2, err: expect.stringContaining(flag) });
  }
  expect(readdirSync(dir)).toEqual([]);
  // Without root it says what it needs before touching anything.
  const unpriv = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, 'up', '--data-dir', join(dir, 'x')], { encoding: 'utf8', timeout: 30_000 });
  expect({ code: unpriv.status, err: unpriv.stderr }).toEqual({ code: 1, err: expect.stringContaining('needs root') });
  expect(readdirSync(dir)).toEqual([]);
});

test('traffic in namespaces reaches `nettally usage` exactly; Ctrl-C leaves nothing behind', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'nettally-up-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const [kafkaPort, influxPort] = [await freePort(), await freePort()];
  const pinDir = `/sys/fs/bpf/nettally-up-test-${process.pid}`;

  // A private mount namespace kept alive by a bind-mounted ns file; without bpffs there, up must mount (and unmount) it.
  const nsFile = join(dataDir, 'mntns');
  writeFileSync(nsFile, '');
  execFileSync('unshare', [`--mount=${nsFile}`, '--propagation', 'private', 'true']);
  cleanups.push(() => execFileSync('umount', [nsFile]));
  // A fresh machine: neither bpffs nor tracefs (debugfs is not mounted here either, so no tracing under it).
  for (const m of mountsOf(nsFile).filter((l) => / (bpf|tracefs|debugfs)$/.test(l))) execFileSync('nsenter', [`--mount=${nsFile}`, 'umount', m.split(' ')[0]]);
  const mountsBefore = mountsOf(nsFile);
  expect(mountsBefore.filter((m) => / (bpf|tracefs|debugfs)$/.test(m))).toEqual([]);

  const pair: NetnsPair = createNetnsPair('up');
  cleanups.push(() => pair.destroy());

  // Started like a terminal would: its own process group, which gets the Ctrl-C.
  const upProc = spawnUp(
    ['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--flush-interval', '1s', '--status-interval', '1s'],
    { wrapper: ['nsenter', `--mount=${nsFile}`] },
  );
  const up = upProc.child;
  const { exited, logs } = upProc;
  cleanups.push(async () => {
    await upProc.kill();
    // Whatever a failed run left: kill by our unique data dir / ports.
    for (const p of processesMentioning([dataDir, `127.0.0.1:${kafkaPort}`, `127.0.0.1:${influxPort}`])) process.kill(Number(p.split(':')[0]), 'SIGKILL');
  });
  await waitReady(upProc);
  // up mounted bpffs in its namespace (and only there), and nothing it does not need: no tracefs.
  expect(mountsOf(nsFile)).toEqual(expect.arrayContaining(['/sys/fs/bpf bpf']));
  expect(mountsOf(nsFile).filter((m) => / (tracefs|debugfs)$/.test(m))).toEqual([]);
  expect(existsSync(pinDir)).toBe(false);

  // Ground truth: what the client (netns a) sent and received, per connection, over IPv4 and IPv6.
  const sizes = [1, 65_536 * 3 + 7, 20_000_003, 12_345, 999_999];
  const reply = 54_321;
  // The namespaces are ours alone, so a fixed port cannot collide.
  const port = 5201;
  const server = nsSpawn(pair.b.name, 'python3', ['-c', SERVER_PY, String(sizes.length), String(reply), String(port)]);
  cleanups.push(() => server.kill());
  await Promise.race([server.waitLine('listening'), server.done]);
  const client = nsSpawn(pair.a.name, 'python3', ['-c', CLIENT_PY, pair.b.addr4, pair.b.addr6, String(port), String(reply), sizes.join(',')]);
  const moved = JSON.parse(await client.done) as { sent: number; received: number }[];
  const serverOut = await server.done;
  const got = (JSON.parse(serverOut.trim().split('\n').pop() as string) as { got: number[] }).got;
  expect(got).toEqual(sizes);
  const sent = moved.reduce((s, c) => s + c.sent, 0);
  const received = moved.reduce((s, c) => s + c.received, 0);
  expect(received).toBe(reply * sizes.length);

  const want = {
    [String(pair.a.inode)]: { tx: sent, rx: received, opened: sizes.length, closed: sizes.length },
    [String(pair.b.inode)]: { tx: received, rx: sent, opened: sizes.length, closed: sizes.length },
  };
  const influxUrl = `http://127.0.0.1:${influxPort}`;
  const t0 = Date.now();
  let seen: Record<string, unknown> = {};
  for (;;) {
    const u = usageByNetns(influxUrl);
    seen = { [String(pair.a.inode)]: u.get(String(pair.a.inode)), [String(pair.b.inode)]: u.get(String(pair.b.inode)) };
    if (JSON.stringify(seen) === JSON.stringify(want)) break;
    if (Date.now() - t0 > 60_000) break;
    await sleep(1000);
  }
  expect(seen).toEqual(want);
  const visibleMs = Date.now() - t0;
  expect(visibleMs).toBeLessThan(60_000);
  // The status line shows the pipeline moving (a rate needs two producer status reports).
  const statusBy = Date.now() + 15_000;
  while (!(/producer \d+ rec\/s/.test(upProc.out) && /consumer \d+ ev\/s, lag \d+, last window \d{4}-/.test(upProc.out)) && Date.now() < statusBy) await sleep(200);
  expect(upProc.out).toMatch(/\[up \d\d:\d\d:\d\d\] producer \d+ rec\/s, kernel drops \d+/);
  expect(upProc.out).toMatch(/consumer \d+ ev\/s, lag \d+, last window \d{4}-/);

  // Ctrl-C: SIGINT to the foreground process group.
  process.kill(-(up.pid as number), 'SIGINT');
  const code = await Promise.race([exited, sleep(90_000).then(() => 'timeout')]);
  expect({ code, tail: code === 0 ? '' : logs() }).toEqual({ code: 0, tail: '' });
  expect(upProc.out).toContain('nettally up: stopped');

  expect(processesMentioning([dataDir, `127.0.0.1:${kafkaPort}`, `127.0.0.1:${influxPort}`])).toEqual([]);
  expect(await portOpen(kafkaPort)).toBe(false);
  expect(await portOpen(influxPort)).toBe(false);
  for (const m of upProc.err.matchAll(/"(?:child_pid|influxd_pid)":(\d+)/g)) expect(existsSync(`/proc/${m[1]}`)).toBe(false);
  expect(mountsOf(nsFile)).toEqual(mountsBefore);
  expect(existsSync(pinDir)).toBe(false);
}, 240_000);

test('up killed with SIGKILL: its children stop on their own, and nothing holds the ports', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'nettally-up-kill-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const pinDir = `/sys/fs/bpf/nettally-up-kill-${process.pid}`;
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }));
  const [kafkaPort, influxPort] = [await freePort(), await freePort()];
  const upProc = spawnUp(['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--status-interval', '1s']);
  cleanups.push(async () => {
    await upProc.kill();
    for (const p of processesMentioning([dataDir])) process.kill(Number(p.split(':')[0]), 'SIGKILL');
  });
  await waitReady(upProc);
  // broker, influxd, consumer and producer, each in its own process group (up logs their pids)
  const children = [...upProc.err.matchAll(/"(?:child_pid|influxd_pid)":(\d+)/g)].map((m) => Number(m[1]));
  expect(children.length).toBe(4);
  const alive = (): number[] => children.filter((pid) => existsSync(`/proc/${pid}`));
  expect(alive()).toEqual(children);
  // up alone dies, the way the OOM killer or `kill -9` does it: nobody tells the children
  process.kill(upProc.child.pid as number, 'SIGKILL');
  await upProc.exited;
  const deadline = Date.now() + 60_000;
  while (alive().length > 0 && Date.now() < deadline) await sleep(200);
  expect(alive()).toEqual([]);
  expect(processesMentioning([dataDir])).toEqual([]);
  expect(await portOpen(kafkaPort)).toBe(false);
  expect(await portOpen(influxPort)).toBe(false);
}, 150_000);

test('KAFKA_BROKERS and INFLUX_URL: up uses those servers, starts neither, and leaves them running', async () => {
  const broker = await startTestBroker({ autoCreateTopics: false });
  cleanups.push(() => broker.stop());
  const influx = await startInflux();
  cleanups.push(() => influx.destroy());
  const dataDir = mkdtempSync(join(tmpdir(), 'nettally-up-ext-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const topic = `up-ext-${process.pid}`;
  const kernelMounts = (): string[] => readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((l) => / (bpf|tracefs) /.test(l)).sort();
  const mountsBefore = kernelMounts();
  const pinDir = `/sys/fs/bpf/nettally-up-ext-${process.pid}`;

  const upProc = spawnUp(['--data-dir', dataDir, '--partitions', '2', '--pin-dir', pinDir, '--flush-interval', '500ms', '--status-interval', '1s'], {
    env: { ...process.env, KAFKA_BROKERS: broker.address, INFLUX_URL: influx.url, KAFKA_TOPIC: topic },
  });
  const up = upProc.child;
  const { exited, logs } = upProc;
  cleanups.push(async () => {
    await upProc.kill();
    for (const p of processesMentioning([dataDir])) process.kill(Number(p.split(':')[0]), 'SIGKILL');
  });
  const by = Date.now() + 90_000;
  await waitReady(upProc);
  expect(upProc.out).toContain(`Kafka ${broker.address}, topic ${topic}; InfluxDB ${influx.url},`);
  // up created the records topic with the partitions asked for (the broker auto-creates nothing here).
  const admin = new Kafka({ brokers: [broker.address], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  const md = await admin.fetchTopicMetadata({ topics: [topic] }).finally(() => admin.disconnect());
  expect(md.topics[0]?.partitions.length).toBe(2);
  // Records flow into the external InfluxDB (the producer's own Kafka connection is traffic too).
  let points = 0;
  while (points === 0 && Date.now() < by) {
    const r = await influx.query('SELECT count("tx_bytes") FROM "nettally_traffic_1m"');
    points = Number(r.results[0]?.series?.[0]?.values[0]?.[1] ?? 0);
    if (!points) await sleep(500);
  }
  expect(points).toBeGreaterThan(0);

  process.kill(-(up.pid as number), 'SIGINT');
  const code = await Promise.race([exited, sleep(90_000).then(() => 'timeout')]);
  expect({ code, tail: code === 0 ? '' : logs() }).toEqual({ code: 0, tail: '' });
  expect(readdirSync(join(dataDir, 'logs')).sort()).toEqual(['consumer.log', 'producer.log']);
  expect(existsSync(join(dataDir, 'influxdb'))).toBe(false);
  expect(processesMentioning([dataDir])).toEqual([]);
  expect(await portOpen(broker.port)).toBe(true);
  expect((await fetch(`${influx.url}/ping`)).status).toBe(204);
  expect(kernelMounts()).toEqual(mountsBefore);
  expect(existsSync(pinDir)).toBe(false);
}, 180_000);

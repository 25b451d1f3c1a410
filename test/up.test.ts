// Scenario: `nettally up` run the way a user runs it — traffic in network namespaces reaches `nettally usage` exactly,
// and Ctrl-C leaves no process, pin or mount behind. Runs in a private mount namespace without bpffs/tracefs, so up's own
// mount/unmount is exercised without touching the machine's mounts.
import { execFileSync, spawnSync } from 'child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'fs';
import { connect } from 'net';
import { tmpdir } from 'os';
import { ConfigResourceTypes, Kafka, logLevel } from 'kafkajs';
import { join, resolve } from 'path';
import { freePort } from '../bin/influxd';
import { startTestBroker } from './helpers/broker';
import { startInflux } from './helpers/influx';
import { createNetnsPair, nsSpawn, type NetnsPair } from './helpers/netns';
import { spawnInTerminal, spawnUp, spawnUpIntoPipe, waitReady, type UpProcess } from './helpers/up';

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
  for (const s of ['--data-dir', '--kafka-listen', 'KAFKA_BROKERS', 'INFLUX_URL', '--influx-port', '--pin-dir', '--ring-buffer-bytes', '--max-connections', 'NETTALLY_FLUSH_THRESHOLD_BYTES']) expect(help.stdout).toContain(s);
  const dir = mkdtempSync(join(tmpdir(), 'nettally-up-bad-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const files = mkdtempSync(join(tmpdir(), 'nettally-up-files-'));
  cleanups.push(() => rmSync(files, { recursive: true, force: true }));
  const badClasses = join(files, 'classes.txt');
  writeFileSync(badClasses, '10.0.0.0/8 zone-a\n10.1.0.0/33 zone-b\n');
  for (const [flag, value] of [['--kafka-listen', 'nonsense'], ['--kafka-listen', '127.0.0.1:0'], ['--dashboard-listen', '::1:8087'], ['--pin-dir', '/tmp/not-bpffs'], ['--brokers', 'no-port'], ['--flush-interval', 'soon'], ['--ring-buffer-bytes', '12KiB'], ['--max-connections', '10'],
    ['--workload-rules', join(files, 'missing-rules')], ['--remote-classes', badClasses]]) {
    const r = spawnSync(process.execPath, [BIN, 'up', '--data-dir', dir, flag, value], { encoding: 'utf8', timeout: 30_000 });
    expect({ flag, code: r.status, err: r.stderr }).toEqual({ flag, code: 2, err: expect.stringContaining(flag) });
  }
  // The billing files are read before anything starts: the message names the file (and the line).
  for (const [flag, value, named] of [['--workload-rules', join(files, 'missing-rules'), 'missing-rules'], ['--remote-classes', badClasses, 'classes.txt:2']]) {
    const r = spawnSync(process.execPath, [BIN, 'up', '--data-dir', dir, flag, value], { encoding: 'utf8', timeout: 30_000 });
    expect({ flag, code: r.status, err: r.stderr }).toEqual({ flag, code: 2, err: expect.stringContaining(named) });
  }
  // Port 0 on --dashboard-listen is any free port, as its help says (--kafka-listen, above, needs a real one: the
  // producer and consumer are given it as written): here the first bad setting is the empty topic checked after it.
  const zero = spawnSync(process.execPath, [BIN, 'up', '--data-dir', dir, '--dashboard-listen', '127.0.0.1:0', '--topic', ''], { encoding: 'utf8', timeout: 30_000 });
  expect({ code: zero.status, err: zero.stderr }).toEqual({ code: 2, err: expect.stringContaining('--topic') });
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
  // Billing settings up forwards: a rule names side a's namespace (by inode: up runs in its own mount namespace), a
  // class file puts side b's addresses in a class of their own.
  const settings = mkdtempSync(join(tmpdir(), 'nettally-up-settings-'));
  cleanups.push(() => rmSync(settings, { recursive: true, force: true }));
  writeFileSync(join(settings, 'rules'), `netns ${pair.a.inode} tenant-up-a\n`);
  writeFileSync(join(settings, 'classes'), `# the server side\n${pair.b.addr4}/32 zone-up-b\n${pair.b.addr6}/128 zone-up-b\n`);

  // Started like a terminal would: its own process group, which gets the Ctrl-C.
  const upProc = spawnUp(
    ['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--flush-interval', '1s', '--status-interval', '1s',
      '--max-connections', '65536', '--ring-buffer-bytes', '1MiB', '--workload-rules', join(settings, 'rules'), '--remote-classes', join(settings, 'classes')],
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
  // up hands its capture settings to the producer: its kernel capture opened with them.
  const attached = async (): Promise<unknown[]> => {
    const file = join(dataDir, 'logs', 'producer.log');
    for (const until = Date.now() + 15_000; Date.now() < until; await sleep(200)) {
      const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l.includes('"kernel capture attached"')) : [];
      if (lines.length > 0) return lines.map((l) => JSON.parse(l) as unknown);
    }
    return [];
  };
  expect(await attached()).toEqual([expect.objectContaining({ maxConnections: 65536, ringBufferBytes: 1 << 20, flushIntervalMs: 1000, pinDir })]);
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
  // Side a's traffic is billed to the rule's name and to the class the file gives side b's addresses.
  const byWorkload = spawnSync(process.execPath, [BIN, 'usage', '--influx-url', influxUrl, '--from', '-2h', '--to', 'now', '--group-by', 'netns,workload,remote_class', '--format', 'json'], { encoding: 'utf8', timeout: 30_000 });
  expect(byWorkload.status).toBe(0);
  const aRows = (JSON.parse(byWorkload.stdout) as (UsageRow & { workload?: string; remote_class?: string })[]).filter((r) => String(r.netns) === String(pair.a.inode));
  const aTotals = new Map<string, { tx: number; rx: number }>();
  for (const r of aRows) {
    const k = `${r.workload}/${r.remote_class}`;
    const t = aTotals.get(k) ?? { tx: 0, rx: 0 };
    t.tx += r.tx_bytes ?? 0;
    t.rx += r.rx_bytes ?? 0;
    aTotals.set(k, t);
  }
  expect(Object.fromEntries(aTotals)).toEqual({ 'tenant-up-a/zone-up-b': { tx: sent, rx: received } });
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
  expect(running(childPids(upProc.err))).toEqual([]);
  expect(mountsOf(nsFile)).toEqual(mountsBefore);
  expect(existsSync(pinDir)).toBe(false);
}, 240_000);

/** A data dir, a pin dir and two free ports for one up run, removed after the tests. */
async function scratch(name: string): Promise<{ dataDir: string; pinDir: string; kafkaPort: number; influxPort: number }> {
  const dataDir = mkdtempSync(join(tmpdir(), `nettally-up-${name}-`));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const pinDir = `/sys/fs/bpf/nettally-up-${name}-${process.pid}`;
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }));
  return { dataDir, pinDir, kafkaPort: await freePort(), influxPort: await freePort() };
}

/** The pids of broker, influxd, consumer and producer, from up's "started …" log lines. */
function childPids(log: string): number[] {
  return [...log.matchAll(/"(?:child_pid|influxd_pid)":(\d+)/g)].map((m) => Number(m[1]));
}

/** Processes of `pids` that still run: a zombie (dead, reparented to an init that reaps slowly) holds nothing. */
function running(pids: number[]): number[] {
  return pids.filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
    } catch {
      return false;
    }
  });
}

async function waitGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const alive = (): number[] => running(pids);
  const deadline = Date.now() + timeoutMs;
  while (alive().length > 0 && Date.now() < deadline) await sleep(200);
  return alive();
}

async function ctrlC(up: UpProcess): Promise<void> {
  process.kill(-(up.child.pid as number), 'SIGINT');
  const code = await Promise.race([up.exited, sleep(90_000).then(() => 'timeout')]);
  expect({ code, tail: code === 0 ? '' : up.logs() }).toEqual({ code: 0, tail: '' });
}

/** Inode of every pinned object in `dir`: new pins get new inodes, so this tells reused pins from fresh ones. */
function pinInodes(dir: string): Record<string, number> {
  return Object.fromEntries(readdirSync(dir).map((f) => [f, statSync(join(dir, f)).ino]));
}

test('up killed with SIGKILL: its children stop on their own, and nothing holds the ports', async () => {
  const { dataDir, pinDir, kafkaPort, influxPort } = await scratch('kill');
  const upProc = spawnUp(['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--status-interval', '1s']);
  cleanups.push(async () => {
    await upProc.kill();
    for (const p of processesMentioning([dataDir])) process.kill(Number(p.split(':')[0]), 'SIGKILL');
  });
  await waitReady(upProc);
  // broker, influxd, consumer and producer, each in its own process group (up logs their pids)
  const children = childPids(upProc.err);
  expect(children.length).toBe(4);
  expect(running(children)).toEqual(children);
  // up alone dies, the way the OOM killer or `kill -9` does it: nobody tells the children
  process.kill(upProc.child.pid as number, 'SIGKILL');
  await upProc.exited;
  expect(await waitGone(children, 60_000)).toEqual([]);
  expect(processesMentioning([dataDir])).toEqual([]);
  expect(await portOpen(kafkaPort)).toBe(false);
  expect(await portOpen(influxPort)).toBe(false);
}, 150_000);

test('`up 2>&1 | tee` whose tee dies, then Ctrl-C: up keeps going (status in logs/up.log), then stops everything and leaves nothing behind', async () => {
  const { dataDir, pinDir, kafkaPort, influxPort } = await scratch('pipe');
  const upProc = await spawnUpIntoPipe(['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--status-interval', '500ms']);
  cleanups.push(async () => {
    upProc.reader.kill('SIGKILL');
    await upProc.kill();
    for (const p of processesMentioning([dataDir])) process.kill(Number(p.split(':')[0]), 'SIGKILL');
  });
  await waitReady(upProc);
  const children = childPids(upProc.out);
  expect(children.length).toBe(4);
  expect(readdirSync(pinDir).length).toBeGreaterThan(0);

  // Ctrl-C reaches tee first (it is quicker to die); from now on every write of up to its stdout/stderr hits EPIPE.
  upProc.reader.kill('SIGINT');
  await new Promise((r) => (upProc.reader.exitCode !== null || upProc.reader.signalCode !== null ? r(null) : upProc.reader.once('exit', r)));
  const upLog = join(dataDir, 'logs', 'up.log');
  const statusLines = (): number => (existsSync(upLog) ? (readFileSync(upLog, 'utf8').match(/\[up \d\d:\d\d:\d\d\] producer/g) ?? []).length : 0);
  const before = statusLines();
  // Several status lines later (each one a write into the broken pipe) up is still running, and they are in up.log.
  const by = Date.now() + 30_000;
  while (statusLines() < before + 4 && upProc.child.exitCode === null && upProc.child.signalCode === null && Date.now() < by) await sleep(200);
  expect({ exit: upProc.child.exitCode, signal: upProc.child.signalCode }).toEqual({ exit: null, signal: null });
  expect(statusLines()).toBeGreaterThanOrEqual(before + 4);
  expect(readFileSync(upLog, 'utf8')).toContain('EPIPE');

  await ctrlC(upProc);
  expect(readFileSync(upLog, 'utf8')).toContain('nettally up: stopped');
  expect(await waitGone(children, 1000)).toEqual([]);
  expect(processesMentioning([dataDir, `127.0.0.1:${kafkaPort}`, `127.0.0.1:${influxPort}`])).toEqual([]);
  expect(await portOpen(kafkaPort)).toBe(false);
  expect(await portOpen(influxPort)).toBe(false);
  expect(existsSync(pinDir)).toBe(false);
  // Nothing of this run is left that the next up would take for a running or crashed one.
  expect(readdirSync(dataDir).filter((f) => f.startsWith('up.'))).toEqual([]);
}, 240_000);

test('a SIGKILLed up leaves its pins and a marker: the next up removes them; pins no up created are kept', async () => {
  const { dataDir, pinDir, kafkaPort, influxPort } = await scratch('stale');
  const args = (pins: string): string[] => ['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pins, '--status-interval', '1s'];
  const run = (pins: string): UpProcess => {
    const p = spawnUp(args(pins));
    cleanups.push(async () => {
      await p.kill();
      for (const x of processesMentioning([dataDir])) process.kill(Number(x.split(':')[0]), 'SIGKILL');
    });
    return p;
  };

  const first = run(pinDir);
  await waitReady(first);
  const staleInodes = pinInodes(pinDir);
  expect(Object.keys(staleInodes).length).toBeGreaterThan(0);
  process.kill(first.child.pid as number, 'SIGKILL');
  await first.exited;
  // Its children stop on their own (pdeathsig); the pins stay: nobody was left to remove them.
  expect(await waitGone(childPids(first.err), 60_000)).toEqual([]);
  expect(pinInodes(pinDir)).toEqual(staleInodes);

  const second = run(pinDir);
  await waitReady(second);
  const said = second.err.split('\n').filter((l) => l.includes('stale') && l.includes(pinDir));
  expect(said.length).toBeGreaterThan(0);
  expect(said.join('\n')).toContain(`"pid":${first.child.pid}`);
  // The producer runs on fresh pins: not one of the old objects is still pinned.
  const fresh = pinInodes(pinDir);
  for (const [name, ino] of Object.entries(fresh)) expect({ name, ino }).not.toEqual({ name, ino: staleInodes[name] });
  await ctrlC(second);
  expect(existsSync(pinDir)).toBe(false);

  // A pin dir no up left a marker for (another producer's, an operator's): up continues on it, says so, and keeps it.
  const foreignDir = `/sys/fs/bpf/nettally-up-foreign-${process.pid}`;
  cleanups.push(() => rmSync(foreignDir, { recursive: true, force: true }));
  mkdirSync(foreignDir);
  execFileSync('bpftool', ['map', 'create', join(foreignDir, 'foreign'), 'type', 'array', 'key', '4', 'value', '8', 'entries', '1', 'name', 'foreign']);
  const foreignIno = statSync(join(foreignDir, 'foreign')).ino;
  const third = run(foreignDir);
  await waitReady(third);
  expect(third.err.split('\n').filter((l) => l.includes('"level":40') && l.includes(foreignDir) && l.includes('continues')).length).toBeGreaterThan(0);
  await ctrlC(third);
  expect(statSync(join(foreignDir, 'foreign')).ino).toBe(foreignIno);
  expect(readdirSync(foreignDir).length).toBeGreaterThan(1);
}, 360_000);

test('every other way out cleans up too: a child that dies, an unexpected error in up, SIGHUP, a forced second Ctrl-C', async () => {
  const { dataDir, pinDir, kafkaPort, influxPort } = await scratch('exits');
  // An unexpected error inside up (a bug), thrown from a timer once the trigger file appears: preloaded into the up
  // process only (its children get the same NODE_OPTIONS, and ignore it).
  const trigger = join(dataDir, 'throw-now');
  const preload = join(dataDir, 'bug.js');
  writeFileSync(
    preload,
    `if (process.argv[2] === 'up') { const fs = require('fs'); const t = setInterval(() => { if (fs.existsSync(${JSON.stringify(trigger)})) { clearInterval(t); throw new Error('injected bug'); } }, 50); t.unref(); }\n`,
  );
  const start = (): UpProcess => {
    const p = spawnUp(['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--status-interval', '1s'], {
      env: { ...process.env, NODE_OPTIONS: `--require ${preload}` },
    });
    cleanups.push(async () => {
      await p.kill();
      for (const x of processesMentioning([dataDir])) process.kill(Number(x.split(':')[0]), 'SIGKILL');
    });
    return p;
  };
  const leftNothing = async (up: UpProcess, what: string): Promise<void> => {
    expect({ what, alive: await waitGone(childPids(up.err), 1000) }).toEqual({ what, alive: [] });
    expect({ what, procs: processesMentioning([dataDir, `127.0.0.1:${kafkaPort}`, `127.0.0.1:${influxPort}`]) }).toEqual({ what, procs: [] });
    expect({ what, ports: [await portOpen(kafkaPort), await portOpen(influxPort)] }).toEqual({ what, ports: [false, false] });
    expect({ what, pins: existsSync(pinDir), markers: readdirSync(dataDir).filter((f) => f.startsWith('up.')) }).toEqual({ what, pins: false, markers: [] });
  };
  const exitCode = (up: UpProcess): Promise<unknown> => Promise.race([up.exited, sleep(90_000).then(() => 'timeout')]);

  // The producer dies: up stops the rest and exits 1, naming it.
  const a = start();
  await waitReady(a);
  const producerPid = Number(/"component":"producer","child_pid":(\d+)/.exec(a.err)?.[1]);
  expect(readdirSync(pinDir).length).toBeGreaterThan(0);
  process.kill(producerPid, 'SIGKILL');
  expect(await exitCode(a)).toBe(1);
  expect(a.err).toContain('producer exited unexpectedly');
  await leftNothing(a, 'producer died');

  // A bug in up: it logs the error, stops everything, exits 1.
  const b = start();
  await waitReady(b);
  writeFileSync(trigger, '');
  expect(await exitCode(b)).toBe(1);
  expect(b.err).toContain('injected bug');
  rmSync(trigger);
  await leftNothing(b, 'exception in up');

  // The terminal closes (SIGHUP to the foreground group): an orderly stop, as on Ctrl-C.
  const h = start();
  await waitReady(h);
  process.kill(-(h.child.pid as number), 'SIGHUP');
  expect({ code: await exitCode(h), out: h.out }).toEqual({ code: 0, out: expect.stringContaining('nettally up: stopped') });
  await leftNothing(h, 'SIGHUP');

  // Ctrl-C, then Ctrl-C again while it stops: no orderly stop any more, but nothing is left either.
  const c = start();
  await waitReady(c);
  // A consumer that does not stop (stopped itself) holds up in its orderly stop for its 30 s grace.
  const consumerPid = Number(/"component":"consumer","child_pid":(\d+)/.exec(c.err)?.[1]);
  process.kill(consumerPid, 'SIGSTOP');
  process.kill(-(c.child.pid as number), 'SIGINT');
  const by = Date.now() + 60_000;
  while (!c.err.includes('stopping consumer') && Date.now() < by) await sleep(50);
  expect(c.err).toContain('stopping consumer');
  // The dispatcher takes a second signal within 1 s for a duplicate of the first.
  await sleep(1200);
  process.kill(c.child.pid as number, 'SIGINT');
  expect(await exitCode(c)).toBe(130);
  await leftNothing(c, 'forced exit');
}, 300_000);

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
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  expect(md.topics[0]?.partitions.length).toBe(2);
  // ... with the broker's clock as every record's Kafka timestamp (the consumer's bound on forged/ahead times).
  const cfg = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['message.timestamp.type'] }] }).finally(() => admin.disconnect());
  expect(cfg.resources[0]?.configEntries.map((e) => e.configValue)).toEqual(['LogAppendTime']);
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
  expect(readdirSync(join(dataDir, 'logs')).sort()).toEqual(['consumer.log', 'producer.log', 'up.log']);
  expect(existsSync(join(dataDir, 'influxdb'))).toBe(false);
  expect(processesMentioning([dataDir])).toEqual([]);
  expect(await portOpen(broker.port)).toBe(true);
  expect((await fetch(`${influx.url}/ping`)).status).toBe(204);
  expect(kernelMounts()).toEqual(mountsBefore);
  expect(existsSync(pinDir)).toBe(false);
}, 180_000);

// On a terminal (a real pseudo-terminal): readable lines, not JSON, and one status line redrawn in place; Ctrl-C
// typed there still stops everything. Its log file stays JSON.
const STATUS_DRAW = /\r\x1b\[K\[up \d\d:\d\d:\d\d\]/g; // eslint-disable-line no-control-regex -- the redraw sequence is the point

test('up on a terminal: readable lines, one status line redrawn in place, Ctrl-C leaves nothing behind', async () => {
  const { dataDir, pinDir, kafkaPort, influxPort } = await scratch('tty');
  const dashboardPort = await freePort();
  const env = { ...process.env };
  delete env.LOG_FORMAT;
  const up = spawnInTerminal(
    ['up', '--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--dashboard-listen', `127.0.0.1:${dashboardPort}`, '--status-interval', '300ms'],
    { env, columns: 100 },
  );
  cleanups.push(async () => {
    await up.kill();
    for (const p of processesMentioning([dataDir])) process.kill(Number(p.split(':')[0]), 'SIGKILL');
  });
  await waitReady(up);
  // Enough ticks to tell a line redrawn in place from one line per tick.
  const deadline = Date.now() + 60_000;
  while ((up.out.match(STATUS_DRAW) ?? []).length < 5 && Date.now() < deadline) await sleep(200);

  up.ctrlC();
  const code = await Promise.race([up.exited, sleep(90_000).then(() => 'timeout')]);
  const out = up.out;
  expect({ code, tail: code === 0 ? '' : out.slice(-3000) }).toEqual({ code: 0, tail: '' });
  expect(await waitGone(childPids(readFileSync(join(dataDir, 'logs', 'up.log'), 'utf8')), 60_000)).toEqual([]);
  expect(processesMentioning([dataDir])).toEqual([]);
  expect(existsSync(pinDir)).toBe(false);

  // Readable: no JSON line, a timestamped level and component, the ready line with the dashboard's URL.
  expect(out).not.toContain('{"level"');
  expect(out).toMatch(/\d\d:\d\d:\d\d INFO {2}producer: started producer child_pid=\d+/);
  expect(out).toMatch(new RegExp(`nettally up: ready — .* Dashboard: http://127\\.0\\.0\\.1:${dashboardPort}/`));
  // Nothing but line ends and the status line's own carriage-return + erase-line reaches the terminal as control.
  // eslint-disable-next-line no-control-regex -- asserting that none reach the terminal
  expect(out.replace(/\r\x1b\[K/g, '').replace(/\r\n/g, '').match(/[\x00-\x1f\x7f-\x9f]/g)).toBeNull();

  // In place: at least 5 draws, and some terminal row received several of them (one line per tick would give each
  // draw a row of its own).
  const draws = (out.match(STATUS_DRAW) ?? []).length;
  const rowsWithStatus = out.split('\n').filter((row) => /\[up \d\d:\d\d:\d\d\]/.test(row)).length;
  expect(draws).toBeGreaterThanOrEqual(5);
  expect(rowsWithStatus).toBeLessThan(draws);
  // Cut to the terminal's 100 columns (the full line is longer): a wrapped line could not be redrawn in place.
  const drawn = out.split('\r\x1b[K').filter((d) => d.startsWith('[up ')).map((d) => d.split(/[\r^]/)[0]);
  expect(drawn.filter((d) => d.length > 99)).toEqual([]);
  expect(drawn.some((d) => d.endsWith('…'))).toBe(true);
  // The last status stays as an ordinary line above the stop messages, and the screen ends with a whole line.
  expect(out).toMatch(/\[up \d\d:\d\d:\d\d\][^\r\n]*\r\nnettally up: stopping/);
  expect(out.slice(out.indexOf('nettally up: stopping'))).not.toContain('\x1b[K');
  expect(out.endsWith('nettally up: stopped\r\n')).toBe(true);

  // The log file stays JSON, the status lines included.
  const log = readFileSync(join(dataDir, 'logs', 'up.log'), 'utf8').trim().split('\n');
  expect(log.filter((l) => !l.startsWith('{"level":'))).toEqual([]);
  expect(log.some((l) => l.includes('"out":"[up '))).toBe(true);
}, 240_000);

test('LOG_FORMAT on a terminal: json keeps JSON lines, pretty is readable, anything else is a clear error', async () => {
  // A deprecated flag makes the dispatcher log a warning; the bad --pin-dir then ends up before it starts anything.
  const run = async (logFormat: string | undefined): Promise<{ code: number | null; out: string }> => {
    const env = { ...process.env };
    if (logFormat === undefined) delete env.LOG_FORMAT;
    else env.LOG_FORMAT = logFormat;
    const p = spawnInTerminal(['up', '--ring-buffer', '256KiB', '--pin-dir', '/tmp/not-bpffs'], { env });
    cleanups.push(() => p.kill());
    return { code: await p.exited, out: p.out };
  };
  const auto = await run(undefined);
  expect(auto.out).toMatch(/^\d\d:\d\d:\d\d WARN {2}.*--ring-buffer/m);
  expect(auto.out).not.toContain('{"level"');
  expect(auto.code).toBe(2);
  const json = await run('json');
  expect(json.out).toMatch(/^\{"level":40,.*--ring-buffer/m);
  expect((await run('pretty')).out).toMatch(/^\d\d:\d\d:\d\d WARN /m);
  const bad = await run('yaml');
  expect(bad.code).toBe(2);
  expect(bad.out).toContain('nettally up: invalid setting LOG_FORMAT: must be json or pretty');
}, 120_000);

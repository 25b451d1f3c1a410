/// <reference lib="dom" />
// Scenario: `nettally up` learns readiness and the status numbers from the typed status its children report over
// the IPC channel, not from their log text. The children here log nothing at all (a preload sets their LOG_LEVEL
// to silent, a stand-in for any rewording or level change): up must still say ready, and its status line and its
// JSON status (the dashboard's /api/health) must show the pipeline moving the bytes written here in a netns.
import { spawnSync } from 'child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { join, resolve } from 'path';
import { freePort } from '../bin/influxd';
import { Cleanups } from './helpers/cleanups';
import { createNetnsPair, nsSpawn } from './helpers/netns';
import { spawnUp, waitReady, type UpProcess } from './helpers/up';

const BIN = resolve(__dirname, '../dist/bin/nettally.js');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
const cleanups = new Cleanups();
afterAll(() => cleanups.run());

// One connection from netns a to b: the client sends SEND bytes, the server answers REPLY bytes after EOF.
const SERVER_PY = `
import socket, sys
s = socket.socket(); s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(1)
print('listening', flush=True)
c, _ = s.accept(); t = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    t += len(b)
c.sendall(b'r' * int(sys.argv[2])); c.close()
print(t, flush=True)
`;
const CLIENT_PY = `
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.sendall(b's' * int(sys.argv[3])); c.shutdown(socket.SHUT_WR); t = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    t += len(b)
c.close()
print(t, flush=True)
`;

interface Health {
  pipeline: { producer: { ready: boolean; kernel_drops?: number }; consumer: { ready: boolean; last_window?: string; lag?: number } } | null;
}

test('children that log nothing: up still gets ready, and its status line and JSON status show the traffic written here', async () => {
  const dataDir = cleanups.tempDir('up-status');
  const pinDir = `/sys/fs/bpf/nettally-up-status-${process.pid}`;
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }));
  const [kafkaPort, influxPort, dashPort] = [await freePort(), await freePort(), await freePort()];
  // Preloaded into every nettally process; only up itself keeps its log.
  const preload = join(dataDir, 'silent-children.js');
  writeFileSync(preload, `if (process.argv[2] !== 'up') process.env.LOG_LEVEL = 'silent';\n`);
  const pair = createNetnsPair('ups', { quiet: true });
  cleanups.push(() => pair.destroy());

  const up: UpProcess = spawnUp(
    ['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir,
      '--dashboard-listen', `127.0.0.1:${dashPort}`, '--flush-interval', '1s', '--status-interval', '500ms'],
    { env: { ...process.env, NODE_OPTIONS: `--require ${preload}` } },
  );
  cleanups.push(() => up.kill());
  await waitReady(up);

  // Ground truth: bytes written and read by our own processes in our own namespaces.
  const SEND = 3_000_017;
  const REPLY = 77_777;
  const port = 5301;
  const trafficAt = Date.now();
  const server = nsSpawn(pair.b.name, 'python3', ['-c', SERVER_PY, String(port), String(REPLY)]);
  cleanups.push(() => server.kill());
  await Promise.race([server.waitLine('listening'), server.done]);
  const client = nsSpawn(pair.a.name, 'python3', ['-c', CLIENT_PY, pair.b.addr4, String(port), String(SEND)]);
  expect(Number((await client.done).trim())).toBe(REPLY);
  expect(Number((await server.done).trim().split('\n').pop())).toBe(SEND);

  // The bytes reach InfluxDB through the silent children.
  const influxUrl = `http://127.0.0.1:${influxPort}`;
  let seen: unknown;
  for (const by = Date.now() + 90_000; Date.now() < by; await sleep(1000)) {
    const r = spawnSync(process.execPath, [BIN, 'usage', '--influx-url', influxUrl, '--from', '-2h', '--to', 'now', '--group-by', 'netns', '--format', 'json'], { encoding: 'utf8', timeout: 30_000 });
    const row = r.status === 0 ? (JSON.parse(r.stdout) as Array<{ netns?: string; tx_bytes: number; rx_bytes: number }>).find((x) => x.netns === String(pair.a.inode)) : undefined;
    seen = row && { tx: row.tx_bytes, rx: row.rx_bytes };
    if (JSON.stringify(seen) === JSON.stringify({ tx: SEND, rx: REPLY })) break;
  }
  expect(seen).toEqual({ tx: SEND, rx: REPLY });

  // up's status line, from the children's typed status only: records and events moving, no kernel drops, and the
  // last window written at or after the window of our traffic (and not in the future).
  const windowOfTraffic = Math.floor(trafficAt / 60_000) * 60_000;
  const lines = (): string[] => up.out.split('\n').filter((l) => l.startsWith('[up '));
  const lastWindows = (): number[] => lines().flatMap((l) => [.../last window (\S+Z)/.exec(l)?.slice(1) ?? []]).map((t) => Date.parse(t));
  for (const by = Date.now() + 30_000; Date.now() < by; await sleep(250)) {
    const l = lines();
    if (l.some((x) => /producer [1-9]\d*(\.\d)?k? rec\/s/.test(x)) && l.some((x) => /consumer [1-9]\d*(\.\d)?k? ev\/s/.test(x)) && lastWindows().some((t) => t >= windowOfTraffic)) break;
  }
  expect(lines().some((x) => /producer [1-9]\d*(\.\d)?k? rec\/s, kernel drops 0/.test(x))).toBe(true);
  expect(lines().some((x) => /consumer [1-9]\d*(\.\d)?k? ev\/s, lag \d+/.test(x))).toBe(true);
  const newest = Math.max(...lastWindows());
  expect(newest).toBeGreaterThanOrEqual(windowOfTraffic);
  expect(newest).toBeLessThanOrEqual(Date.now());

  // up's JSON status: both children ready, no drops, and the consumer's last window is one InfluxDB holds.
  const health = (await (await fetch(`http://127.0.0.1:${dashPort}/api/health`)).json()) as Health;
  expect(health.pipeline).toMatchObject({ producer: { ready: true, kernel_drops: 0 }, consumer: { ready: true } });
  const lastWindow = health.pipeline?.consumer.last_window as string;
  expect(Date.parse(lastWindow)).toBeGreaterThanOrEqual(windowOfTraffic);
  const q = await (await fetch(`${influxUrl}/query?db=nettally&q=${encodeURIComponent(`SELECT count("tx_bytes") FROM "nettally_traffic_1m" WHERE time = '${lastWindow}'`)}`)).json() as { results: Array<{ series?: Array<{ values: unknown[][] }> }> };
  expect(Number(q.results[0]?.series?.[0]?.values[0]?.[1] ?? 0)).toBeGreaterThan(0);

  // The children really said nothing up could have read: no JSON log line in their log files.
  for (const name of ['broker', 'producer', 'consumer']) {
    const file = join(dataDir, 'logs', `${name}.log`);
    const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
    expect({ name, jsonLines: text.split('\n').filter((l) => l.startsWith('{')) }).toEqual({ name, jsonLines: [] });
  }

  process.kill(-(up.child.pid as number), 'SIGINT');
  const code = await Promise.race([up.exited, sleep(90_000).then(() => 'timeout')]);
  expect({ code, tail: code === 0 ? '' : up.logs() }).toEqual({ code: 0, tail: '' });
  expect(existsSync(pinDir)).toBe(false);
}, 300_000);

test('a child that gives up: up names it, the reason it reported and its log, stops everything and exits 1', async () => {
  const dataDir = cleanups.tempDir('up-status-fail');
  const pinDir = `/sys/fs/bpf/nettally-up-status-fail-${process.pid}`;
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }));
  const [kafkaPort, influxPort] = [await freePort(), await freePort()];
  // up does not pass --window, so the consumer takes it from the environment: a window that does not divide an hour
  // makes it refuse to start (CONFIG_INVALID), after the broker and influxd are up.
  const up = spawnUp(['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--no-dashboard'], {
    env: { ...process.env, NETTALLY_WINDOW: '7s' },
  });
  cleanups.push(() => up.kill());
  const code = await Promise.race([up.exited, sleep(120_000).then(() => 'timeout')]);
  expect({ code, out: up.out }).toEqual({ code: 1, out: expect.not.stringContaining('nettally up: ready') });
  // The message itself gives the reason (not only the child's last lines attached to it).
  const line = up.err.split('\n').find((l) => l.includes('stopping everything'));
  expect({ line: line ?? up.logs() }).toEqual({ line: expect.stringContaining('"component":"consumer"') });
  const said = (JSON.parse(line as string) as { msg: string }).msg;
  expect(said).toMatch(/^consumer (failed|exited unexpectedly \(code 2\)): invalid setting --window .*must divide one hour evenly/);
  expect(said).toContain(join(dataDir, 'logs', 'consumer.log'));
  expect(existsSync(pinDir)).toBe(false);
  expect(existsSync(join(dataDir, 'up.run.json'))).toBe(false);
}, 180_000);

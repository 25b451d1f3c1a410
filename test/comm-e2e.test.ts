// Scenario (kernel capture → producer → bundled broker → consumer → influxd, all through `nettally up`): processes
// whose names any local user can pick — `ev"il=,x \` and one with non-UTF-8 bytes, set with prctl(PR_SET_NAME) —
// move traffic in network namespaces; `nettally usage` shows exact per-netns totals under their exact names, and the
// pipeline keeps counting afterwards (a later connection is counted too).
import { commText } from '../producer/records';
import { spawnSync } from 'child_process';
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { freePort } from '../bin/influxd';
import { createNetnsPair, nsSpawn, type NetnsPair } from './helpers/netns';
import { spawnUp, waitReady } from './helpers/up';

const BIN = join(resolve(__dirname, '..'), 'dist/bin/nettally.js');
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

const TRAFFIC = join(__dirname, 'helpers/traffic.py');

/** `conns` connections of `bytes` each from a client named `clientName` (netns a) to a server named `serverName` (netns b). */
async function exchange(pair: NetnsPair, port: number, clientName: Buffer, serverName: Buffer, conns: number, bytes: number, reply: number): Promise<{ sent: number; received: number }> {
  const common = ['--port', String(port), '--conns', String(conns)];
  const server = nsSpawn(pair.b.name, 'python3', [TRAFFIC, 'tcp-server', ...common, '--reply', String(reply), '--comm', serverName.toString('hex')]);
  cleanups.push(() => server.kill());
  await Promise.race([server.waitLine('READY'), server.done]);
  const client = nsSpawn(pair.a.name, 'python3', [TRAFFIC, 'tcp-client', ...common, '--host', pair.b.addr4, '--bytes', String(bytes), '--comm', clientName.toString('hex')]);
  const moved = (JSON.parse(await client.done) as { conns: { tx: number; rx: number }[] }).conns;
  const served = (JSON.parse((await server.done).trim().split('\n').pop() as string) as { conns: { rx: number }[] }).conns;
  expect(served.map((c) => c.rx)).toEqual(moved.map((c) => c.tx));
  return { sent: moved.reduce((s, c) => s + c.tx, 0), received: moved.reduce((s, c) => s + c.rx, 0) };
}

interface Row {
  netns: string;
  comm: string;
  tx_bytes: number;
  rx_bytes: number;
}

/** `nettally usage --group-by netns,process --format json`: bytes per (netns inode, comm). */
function usageByNetnsComm(influxUrl: string): Map<string, { tx: number; rx: number }> {
  const r = spawnSync(process.execPath, [BIN, 'usage', '--influx-url', influxUrl, '--from', '-2h', '--to', 'now', '--group-by', 'netns,process', '--format', 'json'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`nettally usage exited ${r.status}: ${r.stderr}`);
  const out = new Map<string, { tx: number; rx: number }>();
  for (const row of JSON.parse(r.stdout) as Row[]) {
    const k = `${row.netns}|${row.comm}`;
    const t = out.get(k) ?? { tx: 0, rx: 0 };
    t.tx += row.tx_bytes;
    t.rx += row.rx_bytes;
    out.set(k, t);
  }
  return out;
}

async function waitUsage(influxUrl: string, want: Record<string, { tx: number; rx: number }>, logs: () => string): Promise<void> {
  const deadline = Date.now() + 90_000;
  let seen: Record<string, unknown> = {};
  for (;;) {
    const u = usageByNetnsComm(influxUrl);
    seen = Object.fromEntries(Object.keys(want).map((k) => [k, u.get(k)]));
    if (JSON.stringify(seen) === JSON.stringify(want) || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  expect({ seen, logs: JSON.stringify(seen) === JSON.stringify(want) ? '' : logs() }).toEqual({ seen: want, logs: '' });
}

test('processes named `ev"il=,x \\` and with non-UTF-8 bytes: exact per-netns totals under their exact names; the pipeline keeps counting', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'nettally-comm-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  const pinDir = `/sys/fs/bpf/nettally-comm-test-${process.pid}`;
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }));
  const [kafkaPort, influxPort] = [await freePort(), await freePort()];
  const pair = createNetnsPair('cm');
  cleanups.push(() => pair.destroy());
  const up = spawnUp(['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--flush-interval', '1s']);
  cleanups.push(() => up.kill());
  await waitReady(up);
  const influxUrl = `http://127.0.0.1:${influxPort}`;

  const evil = Buffer.from('ev"il=,x \\', 'latin1');
  const nonUtf8 = Buffer.from([0x62, 0x61, 0x64, 0xff, 0xfe, 0x80, 0x0a, 0x5c]); // "bad", 3 invalid UTF-8 bytes, LF, backslash
  // The name as `nettally usage` shows it: the producer's reading of comm bytes (consumer/README.md).
  const shown = (b: Buffer): string => commText(b);
  const first = await exchange(pair, 5301, evil, nonUtf8, 3, 3_000_017, 4321);
  const a = String(pair.a.inode);
  const b = String(pair.b.inode);
  await waitUsage(influxUrl, {
    [`${a}|${shown(evil)}`]: { tx: first.sent, rx: first.received },
    [`${b}|${shown(nonUtf8)}`]: { tx: first.received, rx: first.sent },
  }, up.logs);

  // Still live: a later connection (names swapped) is counted on top, exactly.
  const second = await exchange(pair, 5302, nonUtf8, evil, 2, 12_345, 77);
  await waitUsage(influxUrl, {
    [`${a}|${shown(evil)}`]: { tx: first.sent, rx: first.received },
    [`${b}|${shown(nonUtf8)}`]: { tx: first.received, rx: first.sent },
    [`${a}|${shown(nonUtf8)}`]: { tx: second.sent, rx: second.received },
    [`${b}|${shown(evil)}`]: { tx: second.received, rx: second.sent },
  }, up.logs);
  expect(up.err).not.toMatch(/points dead-letter|InfluxDB refused/);

  process.kill(-(up.child.pid as number), 'SIGINT');
  expect(await up.exited).toBe(0);
}, 240_000);

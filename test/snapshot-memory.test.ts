// Scenario (issue 13): `nettally capture --snapshot` holds one chunk of the connection map at a
// time, not every tracked connection. A netns holds N loopback connection pairs (2N tracked sockets); the test runs
// the real CLI and compares its peak RSS (VmHWM) with a run where the netns holds only a few pairs. Ground truth: the
// connections and bytes the helper made (every client i wrote (i % 7) + 1 bytes; the servers read them all).
import { spawn, type ChildProcess } from 'child_process';
import { readFileSync, rmSync } from 'fs';
import path from 'path';
import readline from 'readline';
import { openCapture } from '../producer/capture';
import type { ConnRecord } from '../producer/records';
import { Cleanups } from './helpers/cleanups';
import { createNetnsPair, type NetnsPair } from './helpers/netns';

const N = 60_000;
// one holder (a server process and a client process) per 15k pairs: RLIMIT_NOFILE is 20k here and not raisable
const PER_HOLDER = 15_000;
const FEW = 10;
const MiB = 1 << 20;
// Old code: ~0.5 KB per tracked connection in one array, plus the whole JSON output at once: over 100 MiB at
// 2N = 120k. Chunked: a chunk of 1,024 records and the heap's slack; 
// Other tests on this machine add their own connections to every snapshot: the bound leaves room for that noise.
const MAX_GROWTH = 64 * MiB;
const CLI = path.join(__dirname, '..', 'dist', 'bin', 'nettally.js');

const cleanups = new Cleanups();
let pair: NetnsPair;
beforeAll(() => {
  pair = createNetnsPair('snapmem');
  cleanups.push(() => pair.destroy());
});
afterAll(() => cleanups.run());

function total(n: number): number {
  let t = 0;
  for (let i = 0; i < n; i++) t += (i % 7) + 1;
  return t;
}

/** Holds n pairs in netns a until the returned function is called. */
async function hold(n: number): Promise<{ port: number; bytes: number; release: () => Promise<void> }> {
  const child = spawn('ip', ['netns', 'exec', pair.a.name, process.execPath, path.join(__dirname, 'helpers', 'hold-conns.js'), String(n), pair.a.addr4], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const release = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.stdin?.end();
    const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(kill);
  };
  cleanups.push(release);
  const line = await new Promise<string>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`hold-conns exited ${code} before ready`)));
  });
  const [, port, bytes] = line.split(' ');
  return { port: Number(port), bytes: Number(bytes), release };
}

/** n pairs over as many holders as the descriptor limit needs: the listening ports, the bytes written. */
async function holdMany(n: number): Promise<{ ports: Set<number>; bytes: number; release: () => Promise<void> }> {
  const sizes: number[] = [];
  for (let left = n; left > 0; left -= PER_HOLDER) sizes.push(Math.min(left, PER_HOLDER));
  const hs = await Promise.all(sizes.map((k) => hold(k)));
  return {
    ports: new Set(hs.map((h) => h.port)),
    bytes: hs.reduce((t, h) => t + h.bytes, 0),
    release: async () => void (await Promise.all(hs.map((h) => h.release()))),
  };
}

/** The bytes the holders' clients wrote for n pairs (PER_HOLDER per holder, client i of each wrote (i % 7) + 1). */
function totalMany(n: number): number {
  let t = 0;
  for (let left = n; left > 0; left -= PER_HOLDER) t += total(Math.min(left, PER_HOLDER));
  return t;
}

function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmHWM for ${pid}`);
  return Number(m[1]) * 1024;
}

/**
 * Runs the CLI; `onLine` sees each stdout line and returns true once the run has shown what the test waits for. Then
 * the peak RSS is read and the CLI is stopped (SIGTERM, SIGKILL after 20 s).
 */
async function runCli(args: string[], onLine: (line: string) => boolean, whileRunning: () => Promise<unknown> = async () => undefined): Promise<number> {
  const child: ChildProcess = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  const exited = new Promise((r) => child.once('exit', r));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const rss = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nettally ${args.join(' ')}: not done within 180 s`)), 180_000);
    const rl = readline.createInterface({ input: child.stdout! });
    rl.on('line', (l) => {
      if (!onLine(l)) return;
      clearTimeout(timer);
      rl.close();
      resolve(peakRss(child.pid!));
    });
    child.once('exit', (code) => reject(new Error(`nettally ${args.join(' ')} exited ${code} early`)));
    whileRunning().catch(reject);
  });
  child.kill('SIGTERM');
  const kill = setTimeout(() => child.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(kill);
  return rss;
}

/**
 * capture --snapshot --json: every connection of the netns once, exact bytes; returns the peak RSS. The kernel counts
 * bytes only while its programs are attached: a capture in this process pins the maps while the pairs are made, the
 * CLI reuses the pins (counters continue, as after a producer restart).
 */
async function captureSnapshot(n: number): Promise<number> {
  const pinDir = `/sys/fs/bpf/nettally-test-snapmem-${process.pid}-${n}`;
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }));
  const cap = await openCapture({ pinDir, ifaceIntervalMs: 0 });
  let h: Awaited<ReturnType<typeof holdMany>>;
  try {
    h = await holdMany(n);
  } finally {
    await cap.close();
  }
  const cookies = new Set<number>();
  let clientTx = 0;
  let serverRx = 0;
  const rss = await runCli(// (no periodic flush: its per-connection samples queue in the capture's own bounded record queue, not the subject here)
  ['capture', '--snapshot', '--json', '--iface-interval', '0', '--flush-interval', '1h', '--duration', '10m', '--pin-dir', pinDir], (l) => {
    const r = JSON.parse(l) as ConnRecord;
    if (r.netns !== pair.a.inode || r.flush_reason !== 'snapshot' || (!h.ports.has(r.sport) && !h.ports.has(r.dport))) return false;
    if (cookies.has(r.cookie)) throw new Error(`cookie ${r.cookie} twice in one snapshot`);
    cookies.add(r.cookie);
    if (h.ports.has(r.dport)) clientTx += r.tx_bytes;
    else serverRx += r.rx_bytes;
    return cookies.size === 2 * n;
  });
  expect({ conns: cookies.size, clientTx, serverRx }).toEqual({ conns: 2 * n, clientTx: totalMany(n), serverRx: totalMany(n) });
  expect(h.bytes).toBe(totalMany(n));
  await h.release();
  return rss;
}

test(`capture --snapshot: peak RSS does not grow with ${2 * N} tracked connections`, async () => {
  const few = await captureSnapshot(FEW);
  const many = await captureSnapshot(N);
  process.stderr.write(`capture --snapshot peak RSS: ${2 * FEW} conns ${(few / MiB).toFixed(1)} MiB, ${2 * N} conns ${(many / MiB).toFixed(1)} MiB\n`);
  expect(many - few).toBeLessThan(MAX_GROWTH);
}, 600_000);

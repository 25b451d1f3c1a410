// `npm run bench:capture`: iperf3 over loopback at 64 B and 128 KiB writes, side by side in one run: no capture,
// hooks (nettally's programs attached, the per-syscall ones returning at once: what the tracepoints alone cost),
// nettally (defaults), naive (one record per syscall) and tcpdump -s 64; throughput ratios and ring-buffer records/s.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'child_process';
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'fs';
import { createServer } from 'net';
import { loadNative } from '../native/index';
import { openCapture, type Capture } from '../producer/capture';
import { holdFds, releaseFds } from './fds';
import { benchHelp } from './help';

benchHelp("bench:capture", "iperf3 over loopback at 64 B and 128 KiB writes with and without nettally's programs (and the naive and tcpdump modes), paired rounds; BPF time per program (kernel.bpf_stats_enabled); the refresh iterator's cost at 0/10k/100k open descriptors.", {
  BENCH_SECONDS: "seconds per iperf3 run (5)",
  BENCH_ROUNDS: "paired rounds per size and mode (3)",
  BENCH_SIZES: "write sizes in bytes (64,131072)",
  BENCH_MODES: "modes to run (all: none,hooks,nettally,naive,tcpdump)",
  BENCH_SAME_CPU: "1: client and server on CPU 0 (the CPU is the bottleneck)",
  BENCH_COST: "0: skip the BPF time table",
  BENCH_ONLY: "refresh: only the refresh-iterator table",
  BENCH_REFRESH: "extra descriptors held for the refresh table (0,10000,100000); empty: skip it",
  BENCH_REFRESH_KINDS: "kinds of descriptors held (files,tcp)",
});

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const ALL_MODES = ['none', 'hooks', 'nettally', 'naive', 'tcpdump'] as const;
type Mode = (typeof ALL_MODES)[number];
// BENCH_SIZES=64 / BENCH_MODES=none,nettally run a subset (for A/B work on one size); the default is the full matrix
const SIZES = (process.env.BENCH_SIZES ?? '64,131072').split(',').map(Number);
const MODES: readonly Mode[] = (process.env.BENCH_MODES ?? ALL_MODES.join(',')).split(',').map((m) => {
  if (!(ALL_MODES as readonly string[]).includes(m)) throw new Error(`BENCH_MODES: unknown mode '${m}' (modes: ${ALL_MODES.join(', ')})`);
  return m as Mode;
});
// iperf3 client and server each pinned to their own CPU: the scheduler moving them around is most of the noise here.
// BENCH_SAME_CPU=1 pins both to CPU 0: the CPU is then the bottleneck (no waiting on the other vCPU), so a throughput
// loss is the capture's CPU cost; that is how large writes are best measured on a VM.
const CPUS = Math.max(1, Number(execFileSync('nproc').toString().trim()));
const CLIENT_CPU = 0;
const SERVER_CPU = CPUS > 1 && process.env.BENCH_SAME_CPU !== '1' ? 1 : 0;

interface Run {
  gbps: number;
  /** CPU time (all CPUs, /proc/stat, every process and the kernel) per GB that iperf3 moved. */
  cpuPerGB: number;
  /** CPU ms of the transfer itself (iperf3 client + server + ksoftirqd of their CPUs) per GB moved. */
  dataCpuMsPerGB: number;
  recordsPerSec: number | null;
  drops: number | null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** CPU ms a task has run so far, precise (scheduler's sum_exec_runtime; includes softirqs it ran: no IRQ time accounting here). */
function taskCpuMs(pid: number): number {
  const m = /se\.sum_exec_runtime\s+:\s+([\d.]+)/.exec(readFileSync(`/proc/${pid}/sched`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** The iperf3 server and the ksoftirqd threads of the CPUs in use: their CPU time is part of every transfer. */
let dataPathPids: number[] = [];

/**
 * One iperf3 run: Gbit/s, and the CPU ms the transfer took in all (client, from `perf stat -e task-clock`; server
 * and ksoftirqd, from the scheduler). Unlike throughput, CPU per byte hardly moves when other processes compete for
 * the CPU, so it resolves small differences on a loaded machine.
 */
function iperf(port: number, size: number): Promise<{ gbps: number; cpuMs: number }> {
  const statFile = `/tmp/nettally-bench-perf-${process.pid}`;
  const before = dataPathPids.map(taskCpuMs);
  return new Promise((resolve, reject) => {
    const p = spawn('perf', ['stat', '-x,', '-e', 'task-clock', '-o', statFile, '--', 'iperf3', '-c', '127.0.0.1', '-p', String(port), '-t', String(SECONDS), '-l', String(size), '-A', String(CLIENT_CPU), '-J'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('close', (code) => {
      try {
        const j = JSON.parse(out) as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
        if (code !== 0 || !j.end?.sum_received?.bits_per_second) throw new Error(j.error ?? `iperf3 exited ${code}`);
        const client = Number(/^([\d.]+),msec,task-clock/m.exec(readFileSync(statFile, 'utf8'))?.[1]);
        const others = dataPathPids.map((pid, i) => taskCpuMs(pid) - before[i]).reduce((a, b) => a + b, 0);
        resolve({ gbps: j.end.sum_received.bits_per_second / 1e9, cpuMs: client + others });
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      } finally {
        rmSync(statFile, { force: true });
      }
    });
  });
}

async function runOnce(mode: Mode, port: number, size: number): Promise<Run> {
  let cap: Capture | undefined;
  let drain: Promise<void> | undefined;
  let dump: ChildProcess | undefined;
  let dumpErr = '';
  if (mode === 'nettally' || mode === 'naive' || mode === 'hooks') {
    cap = await openCapture({ naive: mode === 'naive', hooksOnly: mode === 'hooks', ifaceIntervalMs: 10_000 });
    const c = cap;
    drain = (async () => {
      for await (const batch of c.records()) {
        const closed = batch.filter((r) => r.kind === 3).map((r) => (r.kind === 3 ? r.cookie : 0));
        if (closed.length) c.forget(closed);
      }
    })();
  } else if (mode === 'tcpdump') {
    dump = spawn('tcpdump', ['-i', 'lo', '-s', '64', '-w', '/dev/null', '-n', 'tcp port ' + port], { stdio: ['ignore', 'ignore', 'pipe'] });
    dump.stderr?.on('data', (d: Buffer) => (dumpErr += d.toString()));
    await sleep(1000);
  }
  const before = cap?.stats().records ?? 0;
  const t0 = Date.now();
  const cpu0 = cpuBusySeconds();
  const { gbps, cpuMs } = await iperf(port, size);
  const cpuSecs = cpuBusySeconds() - cpu0;
  const secs = (Date.now() - t0) / 1000;
  const cpuPerGB = cpuSecs / ((gbps * SECONDS) / 8);
  const dataCpuMsPerGB = cpuMs / ((gbps * SECONDS) / 8);
  let recordsPerSec: number | null = null;
  let drops: number | null = null;
  if (cap) {
    const s = cap.stats();
    recordsPerSec = (s.records - before) / secs;
    drops = s.ringbuf_drops;
    await cap.close();
    await drain;
  }
  if (dump) {
    dump.kill('SIGINT');
    await new Promise((r) => dump?.once('close', r));
    const m = /(\d+) packets captured/.exec(dumpErr);
    recordsPerSec = m ? Number(m[1]) / secs : null;
  }
  return { gbps, cpuPerGB, dataCpuMsPerGB, recordsPerSec, drops };
}

/** Busy CPU seconds of the whole machine so far (/proc/stat: everything but idle and iowait, in USER_HZ ticks). */
function cpuBusySeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return (total - f[3] - (f[4] ?? 0)) / 100;
}

interface ProgCost {
  name: string;
  perSec: number;
  avgNs: number;
}

/**
 * CPU time spent in our BPF programs during one iperf3 run, from kernel.bpf_stats_enabled (run_cnt, run_time_ns).
 * Unlike throughput this hardly depends on what else the machine is doing. Stats add their own overhead, so this
 * runs separately from the throughput matrix.
 */
async function bpfCost(port: number, size: number, naive: boolean): Promise<{ progs: ProgCost[]; nsPerWrite: number; gbps: number }> {
  const cap = await openCapture({ naive, ifaceIntervalMs: 10_000 });
  const drain = (async () => {
    for await (const _b of cap.records()) {
      // counted by stats()
    }
  })();
  const statsFile = '/proc/sys/kernel/bpf_stats_enabled';
  const prev = readFileSync(statsFile, 'utf8').trim();
  const read = (): Map<string, { cnt: number; ns: number }> => {
    const m = new Map<string, { cnt: number; ns: number }>();
    for (const p of cap.programs?.() ?? []) {
      const j = JSON.parse(execFileSync('bpftool', ['prog', 'show', 'id', String(p.id), '-j']).toString()) as { run_cnt?: number; run_time_ns?: number };
      m.set(p.name, { cnt: j.run_cnt ?? 0, ns: j.run_time_ns ?? 0 });
    }
    return m;
  };
  try {
    writeFileSync(statsFile, '1');
    const before = read();
    const t0 = Date.now();
    const { gbps } = await iperf(port, size);
    const secs = (Date.now() - t0) / 1000;
    const after = read();
    const progs: ProgCost[] = [];
    let totalNs = 0;
    for (const [name, a] of after) {
      const b = before.get(name) ?? { cnt: 0, ns: 0 };
      const cnt = a.cnt - b.cnt;
      if (cnt === 0) continue;
      totalNs += a.ns - b.ns;
      progs.push({ name, perSec: cnt / secs, avgNs: (a.ns - b.ns) / cnt });
    }
    const writes = (gbps * 1e9 * SECONDS) / 8 / size;
    return { progs, nsPerWrite: totalNs / writes, gbps };
  } finally {
    writeFileSync(statsFile, prev);
    await cap.close();
    await drain;
  }
}

const sizeLabel = (n: number): string => (n >= 1024 && n % 1024 === 0 ? `${n / 1024} KiB` : `${n} B`);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main(): Promise<void> {
  if (process.env.BENCH_ONLY === 'refresh') {
    process.stdout.write(await refreshTable());
    return;
  }
  for (const tool of ['iperf3', 'tcpdump', 'perf']) {
    if (spawnSync('which', [tool]).status !== 0) throw new Error(`${tool} is not installed: run scripts/bootstrap.sh`);
  }
  const port = await freePort();
  const server = spawn('iperf3', ['-s', '-p', String(port), '-A', String(SERVER_CPU)], { stdio: 'ignore' });
  await sleep(500);
  const softirqs = [...new Set([CLIENT_CPU, SERVER_CPU])].map((c) => Number(execFileSync('pgrep', ['-x', `ksoftirqd/${c}`]).toString().trim()));
  dataPathPids = [server.pid ?? 0, ...softirqs];
  const results = new Map<string, Run[]>();
  const costs: ({ size: number; mode: string } & Awaited<ReturnType<typeof bpfCost>>)[] = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const size of SIZES) {
        // rotate the order each round so drift on a shared machine does not favour one mode
        const order = MODES.map((_, i) => MODES[(i + round - 1) % MODES.length]);
        for (const mode of order) {
          const r = await runOnce(mode, port, size);
          const key = `${size}/${mode}`;
          results.set(key, [...(results.get(key) ?? []), r]);
          process.stderr.write(`round ${round}/${ROUNDS} ${String(size).padStart(6)} B ${mode.padEnd(8)} ${r.gbps.toFixed(2)} Gbit/s ${r.dataCpuMsPerGB.toFixed(1)} CPU ms/GB` + (r.recordsPerSec === null ? '' : ` ${Math.round(r.recordsPerSec)} records/s`) + '\n');
        }
      }
    }
    for (const size of process.env.BENCH_COST === '0' ? [] : SIZES) {
      for (const naive of [false, true]) {
        if (!MODES.includes(naive ? 'naive' : 'nettally')) continue;
        const c = await bpfCost(port, size, naive);
        costs.push({ size, mode: naive ? 'naive' : 'nettally', ...c });
      }
    }
  } finally {
    server.kill();
  }
  const lines = [
    `iperf3 -c 127.0.0.1 -t ${SECONDS} -l <size>, median of ${ROUNDS} rounds (modes interleaved), ${new Date().toISOString()}`,
    '',
    `iperf3 client pinned to CPU ${CLIENT_CPU}, server to CPU ${SERVER_CPU}; "paired" = each round's run ÷ the same round's no-capture run`,
    '',
    '"transfer CPU" = CPU ms of iperf3 client + server + ksoftirqd per GB moved (scheduler run time: robust to a loaded machine), paired like throughput',
    '',
    '| write size | mode | throughput (Gbit/s) | vs no capture (medians) | paired per round: median (min–max) | transfer CPU ms/GB: median, paired vs no capture (min–max) | CPU s per GB moved (/proc/stat), paired vs no capture | ring-buffer records/s (tcpdump: packets/s) | kernel drops |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const size of SIZES) {
    const nones = results.get(`${size}/none`) ?? [];
    const base = median(nones.map((r) => r.gbps));
    for (const mode of MODES) {
      const rs = results.get(`${size}/${mode}`) ?? [];
      const paired = nones.length === rs.length ? rs.map((r, i) => r.gbps / nones[i].gbps) : [];
      const pairedCell = mode === 'none' || paired.length === 0 ? '–' : `${median(paired).toFixed(3)} (${Math.min(...paired).toFixed(3)}–${Math.max(...paired).toFixed(3)})`;
      const cpuPaired = nones.length === rs.length ? rs.map((r, i) => r.cpuPerGB / nones[i].cpuPerGB) : [];
      const cpuCell = `${median(rs.map((r) => r.cpuPerGB)).toFixed(3)}` + (mode === 'none' || cpuPaired.length === 0 ? '' : ` (×${median(cpuPaired).toFixed(3)})`);
      const dataPaired = nones.length === rs.length ? rs.map((r, i) => r.dataCpuMsPerGB / nones[i].dataCpuMsPerGB) : [];
      const dataCell = `${median(rs.map((r) => r.dataCpuMsPerGB)).toFixed(1)}` + (mode === 'none' || dataPaired.length === 0 ? '' : `, ×${median(dataPaired).toFixed(3)} (${Math.min(...dataPaired).toFixed(3)}–${Math.max(...dataPaired).toFixed(3)})`);
      const g = median(rs.map((r) => r.gbps));
      const rec = rs.every((r) => r.recordsPerSec === null) ? '–' : String(Math.round(median(rs.map((r) => r.recordsPerSec ?? 0))));
      const drops = rs.every((r) => r.drops === null) ? '–' : String(Math.max(...rs.map((r) => r.drops ?? 0)));
      const ratio = mode === 'none' ? '1.000' : `${(g / base).toFixed(3)} (${((g / base - 1) * 100).toFixed(1)}%)`;
      lines.push(`| ${sizeLabel(size)} | ${mode} | ${g.toFixed(2)} | ${ratio} | ${pairedCell} | ${dataCell} | ${cpuCell} | ${rec} | ${drops} |`);
    }
  }
  lines.push(
    '',
    'CPU time inside the BPF programs (kernel.bpf_stats_enabled, one extra run each; includes the stats overhead itself):',
    '',
    '| write size | mode | BPF ns per iperf3 write (both ends) | programs: calls/s × avg ns |',
    '|---|---|---|---|',
  );
  for (const c of costs) {
    const progs = c.progs.filter((p) => p.perSec > 100).map((p) => `${p.name} ${Math.round(p.perSec)}/s × ${Math.round(p.avgNs)} ns`).join(', ');
    lines.push(`| ${sizeLabel(c.size)} | ${c.mode} | ${c.nsPerWrite.toFixed(0)} | ${progs} |`);
  }
  process.stdout.write(lines.join('\n') + '\n');
  if (process.env.BENCH_REFRESH !== '') process.stdout.write('\n' + (await refreshTable()));
}

// ---- the refresh iterator at many open files ----

// BENCH_REFRESH=0,10000,100000: extra open descriptors held while the refresh runs; BENCH_REFRESH_KINDS=files,tcp
const REFRESH_FDS = (process.env.BENCH_REFRESH || '0,10000,100000').split(',').map(Number);
const REFRESH_KINDS = (process.env.BENCH_REFRESH_KINDS ?? 'files,tcp').split(',');

/** Open descriptors of every process on the machine: what the task_file iterator walks. */
function machineFds(): number {
  let n = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      n += readdirSync(`/proc/${pid}/fd`).length;
    } catch {
      // the process exited meanwhile
    }
  }
  return n;
}


interface RefreshRow {
  kind: string;
  extra: number;
  machine: number;
  /** refresh() on the JS thread: wall ms (median, max), and the longest the event loop was blocked. */
  sync: { ms: number; maxMs: number; blockedMs: number };
  /** refreshAsync(): ms on the worker thread (median, max), and the longest the event loop was blocked meanwhile. */
  async: { ms: number; maxMs: number; blockedMs: number };
}

/** Runs `once` `runs` times with a 1 ms timer ticking: its longest gap is how long the event loop was blocked. */
async function timed(runs: number, once: () => Promise<number>): Promise<{ ms: number; maxMs: number; blockedMs: number }> {
  const times: number[] = [];
  let blockedMs = 0;
  for (let i = 0; i < runs; i++) {
    let last = performance.now();
    let maxGap = 0;
    const ping = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 1);
    await sleep(20);
    times.push(await once());
    await sleep(20);
    clearInterval(ping);
    blockedMs = Math.max(blockedMs, maxGap);
  }
  return { ms: median(times), maxMs: Math.max(...times), blockedMs };
}

/** Times the refresh on a capture of its own, while `extra` descriptors of `kind` are held. */
async function refreshRun(kind: string, extra: number, runs: number): Promise<RefreshRow> {
  const procs = extra > 0 ? await holdFds(kind, extra) : [];
  let closed!: () => void;
  const done = new Promise<void>((r) => (closed = r));
  const { Capture: Native } = loadNative();
  const cap = new Native({
    flushIntervalNs: 5e9, flushThresholdBytes: 16 << 20, ringBufferBytes: 64 << 20, maxConnections: 1 << 20,
    naive: false, hooksOnly: false, onBatch: () => undefined, onClosed: () => closed(),
  });
  try {
    cap.refresh(); // the first one creates the entries of connections that predate the capture: not the steady state
    const machine = machineFds();
    const sync = await timed(runs, () => {
      const t0 = performance.now();
      cap.refresh();
      return Promise.resolve(performance.now() - t0);
    });
    const async = await timed(runs, () => cap.refreshAsync());
    return { kind, extra, machine, sync, async };
  } finally {
    cap.close();
    await done;
    releaseFds(procs);
  }
}

async function refreshTable(): Promise<string> {
  const rows: RefreshRow[] = [];
  for (const kind of REFRESH_KINDS) {
    for (const extra of REFRESH_FDS) {
      if (extra === 0 && kind !== REFRESH_KINDS[0]) continue;
      const r = await refreshRun(kind, extra, 10);
      process.stderr.write(`refresh ${kind} +${extra}: sync ${r.sync.ms.toFixed(2)} ms, blocked ${r.sync.blockedMs.toFixed(1)} ms; async ${r.async.ms.toFixed(2)} ms, blocked ${r.async.blockedMs.toFixed(1)} ms\n`);
      rows.push(r);
    }
  }
  const lines = [
    `refresh iterator (nt_refresh over every open file of every process), 10 runs each, ${new Date().toISOString()}`,
    '',
    'sync = `refresh()` on the JS thread (before); async = `refreshAsync()` on a libuv worker (the periodic refresh now).',
    'Event loop blocked = the longest gap of a 1 ms timer during the runs (includes the loaded machine\'s own jitter).',
    '',
    '| extra descriptors held | open descriptors on the machine | sync ms: median (max) | ns per descriptor | event loop blocked, sync (ms) | async ms: median (max) | event loop blocked, async (ms) |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const what = r.extra === 0 ? 'none' : `${r.extra} ${r.kind === 'tcp' ? `TCP sockets (${r.extra / 2} loopback connections)` : 'files (/dev/null)'}`;
    const { sync: s, async: a } = r;
    lines.push(`| ${what} | ${r.machine} | ${s.ms.toFixed(2)} (${s.maxMs.toFixed(2)}) | ${Math.round((s.ms * 1e6) / r.machine)} | ${s.blockedMs.toFixed(1)} | ${a.ms.toFixed(2)} (${a.maxMs.toFixed(2)}) | ${a.blockedMs.toFixed(1)} |`);
  }
  return lines.join('\n') + '\n';
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:capture: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});

// `npm run bench:producer`: (1) records/s the producer sustains into the bundled broker on one core (synthetic
// source, side by side: fsync always / never / gzip); (2) the producer's CPU and RSS with the real kernel capture
// while a C generator churns 10k TCP connections/s in a network namespace, next to the same producer idle, for each
// build/runtime variant side by side (BENCH_CHURN_VARIANTS); (3) BENCH_LIVE=0,10000,50000: RSS per live connection.
import { execFileSync, spawn, type ChildProcess } from 'child_process';
import { mkdtempSync, readFileSync, rmSync } from 'fs';
import { get } from 'http';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { createKafkaClient } from '../lib/kafka';
import { FAST_ENCODE_ENV, setFastEncode } from '../lib/kafkajs-encode';
import { silentLogger } from '../lib/log';
import { BatchSizer, KAFKA_DEFAULT_MAX_MESSAGE_BYTES } from '../producer/kafka-batch';
import { createProducer, type ProducerConfig } from '../producer/producer';
import { syntheticCapture } from '../producer/synthetic';
import { toWire, type WireContext } from '../producer/wire';
import { createCodec } from '../schemas/index';
import { createNetnsPair, type NetnsPair } from '../test/helpers/netns';
import { startProducerProcess, type ProducerProcess } from '../test/helpers/producer';
import { holdFds, releaseFds } from './fds';
import { benchHelp } from './help';

benchHelp("bench:producer", "(1) records/s of the producer vs bare kafkajs into the bundled broker (synthetic source); (2) the producer's CPU and RSS with the real kernel capture under TCP connection churn, per build/runtime variant side by side; (3) RSS per live connection.", {
  BENCH_SECONDS: "seconds per measurement (8)",
  BENCH_ROUNDS: "alternating rounds of part 1 (2)",
  BENCH_VARIANTS: "1: part 1 also with fsync=never and with gzip",
  BENCH_KJS_ENCODE: "1: part 1 also with kafkajs's own record encoding (enc=kafkajs rows)",
  BENCH_CHURN_RATE: "connections per second of the churn generator (10000)",
  BENCH_CHURN_VARIANTS: "variants of part 2 in order: baseline,untuned,tuned,kjsenc (kjsenc: this build with kafkajs's own record encoding)",
  BENCH_BASELINE_BIN: "another build's dist/bin/nettally.js (its schemas/ next to its dist/): the baseline variant",
  BENCH_FLUSH_INTERVAL: "the producer's --flush-interval (1s)",
  BENCH_LIVE: "live connection counts for part 3 (0,10000,50000)",
  BENCH_LIVE_BASELINE: "1: part 3 for the baseline too",
  BENCH_ONLY: "throughput | churn | live: one part only",
  BENCH_STATUS: "the producer's --status-interval (0), its last status printed",
});

const ROOT = resolve(__dirname, '../..');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const CHURN_RATE = Number(process.env.BENCH_CHURN_RATE ?? 10_000);
/** The churn part's --flush-interval: 1s (as in earlier results) unless BENCH_FLUSH_INTERVAL says (the daemon's default is 5s). */
const FLUSH_INTERVAL = process.env.BENCH_FLUSH_INTERVAL ?? '1s';
const HOST = { host_id: 'be0cbe0cbe0cbe0cbe0cbe0cbe0cbe0c', hostname: 'bench', boot_id: '00000000-0000-4000-8000-00000000b0b0' };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const cleanups: Array<() => unknown> = [];
let lastStderr = '';

interface BrokerProcess {
  address: string;
  stop(): Promise<void>;
}

/** The bundled broker as a child process (the other core), on a free port with a temp data dir. */
async function startBrokerProcess(): Promise<BrokerProcess> {
  const dataDir = mkdtempSync(join(tmpdir(), 'nettally-bench-broker-'));
  const child = spawn(process.execPath, [join(ROOT, 'dist/bin/nettally.js'), 'broker', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--fsync', 'always'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const port = await new Promise<number>((res, rej) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /broker listening on [^\s]+:(\d+)/.exec(out);
      if (m) res(Number(m[1]));
    });
    child.once('exit', (c) => rej(new Error(`broker exited ${c}`)));
  });
  return {
    address: `127.0.0.1:${port}`,
    async stop() {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

interface Throughput {
  label: string;
  rps: number;
  cpu: number;
  latencyMs: number;
  /** Heap used and external (Buffers) at the end of the window, MiB: the bench process's JS vs native memory. */
  heapMiB?: number;
  externalMiB?: number;
}

const memMiB = (): { heapMiB: number; externalMiB: number } => {
  const m = process.memoryUsage();
  return { heapMiB: m.heapUsed / 2 ** 20, externalMiB: m.external / 2 ** 20 };
};

/** Warm up 1.5 s, then measure records/s, CPU and batch latency over SECONDS. */
async function window(label: string, counts: { records: () => number; latency: { ms: number; n: number } }): Promise<Throughput> {
  await sleep(1500); // warm up, fill the pipeline
  const r0 = counts.records();
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  counts.latency.ms = 0;
  counts.latency.n = 0;
  await sleep(SECONDS * 1000);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(c0);
  const { ms, n } = counts.latency;
  return { label, rps: (counts.records() - r0) / wall, cpu: (cpu.user + cpu.system) / 1e6 / wall, latencyMs: n ? ms / n : 0, ...memMiB() };
}

/** The daemon's batching defaults (producer/cmd-producer.ts): 5000 records, 1 MiB, Kafka's 1048588-byte limit. */
const DAEMON_BATCH = { batchMaxRecords: 5000, batchMaxBytes: 1 << 20, maxMessageBytes: KAFKA_DEFAULT_MAX_MESSAGE_BYTES };

async function throughput(broker: BrokerProcess, label: string, over: Partial<ProducerConfig>): Promise<Throughput> {
  const stateDir = mkdtempSync(join(tmpdir(), 'nettally-bench-'));
  // Offer far more than the producer takes (its spool fills and pauses the source): at 50k connections/s the
  // source's 10 ms ticks under load were what limited the rate (measured: 32k records/s at 50k, 46k at 200k).
  const src = syntheticCapture({ connsPerSec: 200_000, samplesPerConn: 2, bytesPerSample: 1000 });
  const config: ProducerConfig = {
    stateDir, kafka: { clientId: 'nettally-bench', brokers: [broker.address] }, topic: `bench.${label.replace(/\W+/g, '-')}`,
    spoolMaxBytes: 32 << 20, fsync: 'always', ...DAEMON_BATCH, batchMaxMs: 200, flushIntervalMs: 5000,
    flushThresholdBytes: 1 << 24, ifaceIntervalMs: 0, compression: 'none', idempotent: false, shutdownTimeoutMs: 1000, statusIntervalMs: 0,
    host: HOST, openCapture: async () => src, ...over,
  };
  const p = createProducer({ config, logger: silentLogger });
  const latency = { ms: 0, n: 0 };
  p.on('sent', (e) => {
    latency.ms += e.latencyMs;
    latency.n++;
  });
  await p.start();
  const row = await window(label, { records: () => p.status().records_out, latency });
  await src.close();
  await p.stop();
  rmSync(stateDir, { recursive: true, force: true });
  return row;
}

/**
 * What kafkajs alone sends into the same broker: the same Avro messages (encoded once, before the clock starts), the
 * same batches (cut by the same size arithmetic at the daemon's defaults), one awaited sendBatch at a time with
 * acks=-1 — the ceiling the producer's own work (kernel record → Avro → spool → batch) is measured against.
 */
async function bareKafkajs(broker: BrokerProcess, label: string): Promise<Throughput> {
  const codec = createCodec();
  const key = Buffer.from(HOST.host_id);
  const src = syntheticCapture({ connsPerSec: 1_000_000, samplesPerConn: 2, bytesPerSample: 1000, totalConns: 5000 });
  const values: Buffer[] = [];
  let seq = 0;
  const ctx: WireContext = {
    host: HOST, epoch: 1, nextSeq: () => ++seq, toUnixNs: (ts) => BigInt(Date.now()) * 1_000_000n + BigInt(ts % 1e6),
    enrich: () => ({ cgroup_path: null, container_id: null }), workload: () => 'host',
  };
  for await (const batch of src.records()) {
    for (const r of batch) {
      const w = toWire(r, ctx);
      if (w) values.push(codec.encode(w.kind, w.record as never));
    }
    if (src.truth.conns >= 5000) break;
  }
  await src.close();
  const batches: Array<Array<{ key: Buffer; value: Buffer }>> = [];
  for (let i = 0; i < values.length; ) {
    const sizer = new BatchSizer(DAEMON_BATCH.maxMessageBytes, 'none');
    const b: Array<{ key: Buffer; value: Buffer }> = [];
    while (i < values.length && b.length < DAEMON_BATCH.batchMaxRecords && sizer.add(key.length, values[i].length)) b.push({ key, value: values[i++] });
    batches.push(b);
  }
  const kafka = createKafkaClient({ clientId: 'nettally-bench-bare', brokers: [broker.address] });
  const producer = kafka.producer({ allowAutoTopicCreation: true, maxInFlightRequests: 1 });
  await producer.connect();
  const topic = `bench.${label.replace(/\W+/g, '-')}`;
  let sent = 0;
  const latency = { ms: 0, n: 0 };
  let stop = false;
  const loop = (async () => {
    for (let i = 0; !stop; i = (i + 1) % batches.length) {
      const t = Date.now();
      await producer.sendBatch({ topicMessages: [{ topic, messages: batches[i] }], acks: -1, timeout: 30_000 });
      latency.ms += Date.now() - t;
      latency.n++;
      sent += batches[i].length;
    }
  })();
  const row = await window(label, { records: () => sent, latency });
  stop = true;
  await loop;
  await producer.disconnect();
  return row;
}

function procTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]); // utime + stime (fields 14, 15)
}

function procMem(pid: number): { rssMiB: number; hwmMiB: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0);
  return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
}

function metric(url: string, name: string): Promise<number> {
  return new Promise((res, rej) =>
    get(url, { agent: false }, (r) => {
      let b = '';
      r.on('data', (d: Buffer) => (b += d.toString()));
      r.on('end', () => res(Number(new RegExp(`^nettally_producer_${name.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(b)?.[1] ?? NaN)));
    }).on('error', rej),
  );
}

interface ChurnRow {
  label: string;
  connsPerSec: number;
  cpu: number;
  rssMiB: number;
  hwmMiB: number;
  recordsOutPerSec: number;
  drainS: number;
  /** Kernel ring-buffer reservations that failed during the window (records delayed, counters kept). */
  drops: number;
  /** Producer CPU-seconds per 1000 connections made (each is two sockets on this host: client and server). */
  cpuPer1k: number;
  /** Records the producer shipped (acknowledged, burst and drain) per connection made. */
  recordsPerConn: number;
  heapMiB: number;
  externalMiB: number;
  /** Resident memory at the end of the window by mapping (/proc/PID/smaps): see smapsMiB. */
  smaps: Smaps;
}

interface Smaps {
  /** Anonymous memory: V8's heap spaces, malloc's arenas (Buffers, the addon's batches, libbpf), thread stacks. */
  anon: number;
  /** BPF maps mmapped by the addon (the ring buffer's data pages, array maps). */
  bpf: number;
  /** File-backed: the node binary, shared libraries, the addon. */
  file: number;
}

/** Where the process's resident memory is, MiB, by kind of mapping. */
function smapsMiB(pid: number): Smaps {
  const out: Smaps = { anon: 0, bpf: 0, file: 0 };
  let kind: keyof Smaps = 'anon';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) kind = head[1].includes('bpf') ? 'bpf' : head[1].startsWith('/') ? 'file' : 'anon';
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) out[kind] += Number(rss[1]) / 1024;
  }
  return out;
}

/** A producer build and runtime to measure: this branch with its runtime settings, without them, another build. */
interface Variant {
  label: string;
  bin?: string;
  env: NodeJS.ProcessEnv;
}

/** Node's defaults: none of the settings producer/runtime.ts applies, and none inherited from this shell. */
const UNSET = { MALLOC_ARENA_MAX: undefined, MALLOC_MMAP_THRESHOLD_: undefined, MALLOC_TRIM_THRESHOLD_: undefined, NODE_OPTIONS: undefined };
const UNTUNED = { NETTALLY_NODE_TUNING: '0', ...UNSET };

/** BENCH_CHURN_VARIANTS=baseline,untuned,tuned,kjsenc (baseline: the build whose CLI BENCH_BASELINE_BIN names, e.g. main's). */
function variants(): Variant[] {
  const baseline = process.env.BENCH_BASELINE_BIN;
  const names = (process.env.BENCH_CHURN_VARIANTS ?? (baseline ? 'baseline,untuned,tuned' : 'untuned,tuned')).split(',');
  return names.map((n) => {
    if (n === 'baseline') {
      if (!baseline) throw new Error('BENCH_CHURN_VARIANTS has baseline: set BENCH_BASELINE_BIN to the other build\'s dist/bin/nettally.js');
      // the other build as it ships (its own runtime settings, if it has them), nothing inherited from this shell
      return { label: 'baseline', bin: resolve(baseline), env: { NETTALLY_NODE_TUNING: undefined, ...UNSET } };
    }
    if (n === 'untuned') return { label: 'untuned', env: UNTUNED };
    if (n === 'tuned') return { label: 'tuned', env: { NETTALLY_NODE_TUNING: undefined, ...UNSET } };
    // this build with kafkajs's own record encoding (lib/kafkajs-encode.ts switched off): that patch alone
    if (n === 'kjsenc') return { label: 'kjsenc', env: { NETTALLY_NODE_TUNING: undefined, ...UNSET, [FAST_ENCODE_ENV]: '0' } };
    throw new Error(`BENCH_CHURN_VARIANTS: unknown variant ${n} (baseline, untuned, tuned, kjsenc)`);
  });
}

interface RunningProducer {
  prod: ProducerProcess;
  pid: number;
  url: string;
}

let starts = 0;

/** `nettally producer` (this build or the variant's) with its own state and pin dirs, metrics on a free port. */
async function startVariant(broker: BrokerProcess, v: Variant): Promise<RunningProducer> {
  const stateDir = mkdtempSync(join(tmpdir(), 'nettally-bench-'));
  // one pin directory per start: a variant listed twice (alternating runs) must not inherit the first run's maps
  const pinDir = `/sys/fs/bpf/nettally-bench-${process.pid}-${v.label}-${++starts}`;
  cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }), () => rmSync(pinDir, { recursive: true, force: true }));
  const prod = startProducerProcess(['--brokers', broker.address, '--state-dir', stateDir, '--pin-dir', pinDir, '--metrics-listen', '0', '--status-interval', process.env.BENCH_STATUS ?? '0', '--flush-interval', FLUSH_INTERVAL], v.env, v.bin);
  cleanups.push(() => prod.child.kill('SIGKILL'));
  await prod.ready;
  while (!/"metrics":"/.test(prod.stderr())) await sleep(50);
  void prod.exited.then((c) => c !== 0 && c !== 'SIGKILL' && process.stderr.write(`producer ${v.label} exited (${c}):\n${prod.stderr().split('\n').slice(-15).join('\n')}\n`));
  return { prod, pid: prod.child.pid as number, url: /"metrics":"([^"]+)"/.exec(prod.stderr())?.[1] as string };
}

async function stopVariant(p: RunningProducer): Promise<void> {
  p.prod.child.kill('SIGTERM');
  await p.prod.exited;
  lastStderr = p.prod.stderr();
}

async function churn(broker: BrokerProcess): Promise<ChurnRow[]> {
  const bin = join(ROOT, 'build', 'churn');
  execFileSync('cc', ['-O2', '-Wall', '-o', bin, join(ROOT, 'bench', 'churn.c')]);
  const pair: NetnsPair = createNetnsPair('bench');
  cleanups.push(() => pair.destroy());
  const server: ChildProcess = spawn('ip', ['netns', 'exec', pair.b.name, bin, 'server', '7000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => server.kill('SIGKILL'));
  await new Promise<void>((r) => server.stdout?.on('data', (d: Buffer) => d.toString().includes('READY') && r()));
  const hz = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());
  const rows: ChurnRow[] = [];
  for (const v of variants()) {
    const { pid, url, ...p } = await startVariant(broker, v);
    for (const rate of [0, CHURN_RATE]) {
      const t0 = procTicks(pid);
      const o0 = await metric(url, 'records_out_total');
      const d0 = await metric(url, 'kernel_ringbuf_drops_total');
      const start = Date.now();
      let conns = 0;
      if (rate > 0) {
        const out = execFileSync('ip', ['netns', 'exec', pair.a.name, bin, 'client', pair.b.addr4, '7000', String(rate), String(SECONDS)]).toString();
        conns = (JSON.parse(out) as { conns: number }).conns;
      } else {
        await sleep(SECONDS * 1000);
      }
      const wall = (Date.now() - start) / 1000;
      const cpu = (procTicks(pid) - t0) / hz / wall;
      const o1 = await metric(url, 'records_out_total');
      const drops = (await metric(url, 'kernel_ringbuf_drops_total')) - d0;
      const mem = procMem(pid);
      const smaps = smapsMiB(pid);
      // How long until the producer has shipped everything the burst produced.
      const drainStart = Date.now();
      while ((await metric(url, 'spool_records')) > 0 && Date.now() - drainStart < 60_000) await sleep(100);
      const drainS = (Date.now() - drainStart) / 1000;
      // CPU per connection counts the drain too: what the burst cost until its records were all shipped.
      const cpuAll = (procTicks(pid) - t0) / hz;
      const o2 = await metric(url, 'records_out_total');
      rows.push({
        // The peak is read after the drain: shipping the burst's backlog can take more memory than the burst did.
        label: `${v.label} ${rate ? `churn ${rate}/s` : 'idle'}`, connsPerSec: conns / wall, cpu, ...mem, hwmMiB: procMem(pid).hwmMiB,
        recordsOutPerSec: (o1 - o0) / wall, drainS, drops,
        cpuPer1k: conns ? (cpuAll / conns) * 1000 : 0, recordsPerConn: conns ? (o2 - o0) / conns : 0,
        heapMiB: (await metric(url, 'memory_bytes{kind="heap_used"}')) / 2 ** 20, externalMiB: (await metric(url, 'memory_bytes{kind="external"}')) / 2 ** 20,
        smaps,
      });
    }
    await stopVariant({ pid, url, ...p });
  }
  return rows;
}

interface LiveRow {
  label: string;
  /** Sockets held open by bench/fds.py (loopback TCP pairs: each pair is two tracked connections). */
  held: number;
  tracked: number;
  rssMiB: number;
  heapMiB: number;
  smaps: Smaps;
}

/** RSS with N live connections held open (BENCH_LIVE=0,10000,50000 sockets), after two flush intervals each. */
async function live(broker: BrokerProcess): Promise<LiveRow[]> {
  const counts = (process.env.BENCH_LIVE ?? '0,10000,50000').split(',').map(Number);
  const flushMs = Number(/^(\d+)s$/.exec(FLUSH_INTERVAL)?.[1] ?? 5) * 1000;
  const rows: LiveRow[] = [];
  for (const v of variants().filter((x) => x.label !== 'baseline' || process.env.BENCH_LIVE_BASELINE)) {
    const p = await startVariant(broker, v);
    const held: ChildProcess[] = [];
    try {
      let have = 0;
      const base = await metric(p.url, 'kernel_tracked_conns'); // the machine's own connections
      for (const n of counts) {
        if (n > have) held.push(...(await holdFds('tcp', n - have)));
        have = Math.max(have, n);
        const until = Date.now() + 120_000;
        while ((await metric(p.url, 'kernel_tracked_conns')) < base + n && Date.now() < until) await sleep(200);
        await sleep(2 * flushMs + 1000); // a sweep and a periodic refresh with them all
        rows.push({ label: v.label, held: n, tracked: await metric(p.url, 'kernel_tracked_conns'), rssMiB: procMem(p.pid).rssMiB,
          heapMiB: (await metric(p.url, 'memory_bytes{kind="heap_used"}')) / 2 ** 20, smaps: smapsMiB(p.pid) });
      }
    } finally {
      releaseFds(held);
      await stopVariant(p);
    }
  }
  return rows;
}

function printLive(rows: LiveRow[]): void {
  process.stdout.write(`\nproducer RSS with live connections held open (loopback TCP pairs, --flush-interval ${FLUSH_INTERVAL})\n`);
  process.stdout.write(`${'variant'.padEnd(10)}${'held'.padStart(8)}${'tracked'.padStart(9)}${'RSS MiB'.padStart(9)}${'heap MiB'.padStart(10)}${'anon/bpf/file MiB'.padStart(19)}${'MiB per 1k held'.padStart(17)}\n`);
  for (const r of rows) {
    const zero = rows.find((z) => z.label === r.label && z.held === 0);
    const per1k = zero && r.held ? ((r.rssMiB - zero.rssMiB) / r.held) * 1000 : NaN;
    process.stdout.write(`${r.label.padEnd(10)}${String(r.held).padStart(8)}${String(r.tracked).padStart(9)}${r.rssMiB.toFixed(0).padStart(9)}${r.heapMiB.toFixed(0).padStart(10)}` +
      `${`${r.smaps.anon.toFixed(0)}/${r.smaps.bpf.toFixed(0)}/${r.smaps.file.toFixed(0)}`.padStart(19)}${(Number.isNaN(per1k) ? '' : per1k.toFixed(2)).padStart(17)}\n`);
  }
}

function printChurn(churnRows: ChurnRow[]): void {
  process.stdout.write(`\nproducer (child process, real kernel capture, --flush-interval ${FLUSH_INTERVAL}) while a generator churns TCP connections in a netns, ${SECONDS}s each\n`);
  process.stdout.write(
    `${'load'.padEnd(24)}${'conns/s'.padStart(10)}${'cpu (cores)'.padStart(13)}${'cpu-s/1k conn'.padStart(15)}${'rec/conn'.padStart(10)}${'RSS MiB'.padStart(9)}${'peak MiB'.padStart(10)}` +
      `${'heap MiB'.padStart(10)}${'ext MiB'.padStart(9)}${'anon/bpf/file'.padStart(15)}${'records out/s'.padStart(15)}${'drain s'.padStart(9)}${'rb drops'.padStart(10)}\n`,
  );
  for (const r of churnRows) {
    process.stdout.write(
      `${r.label.padEnd(24)}${Math.round(r.connsPerSec).toLocaleString('en').padStart(10)}${r.cpu.toFixed(3).padStart(13)}${r.cpuPer1k.toFixed(3).padStart(15)}${r.recordsPerConn.toFixed(2).padStart(10)}` +
        `${r.rssMiB.toFixed(0).padStart(9)}${r.hwmMiB.toFixed(0).padStart(10)}${r.heapMiB.toFixed(0).padStart(10)}${r.externalMiB.toFixed(0).padStart(9)}` +
        `${`${r.smaps.anon.toFixed(0)}/${r.smaps.bpf.toFixed(0)}/${r.smaps.file.toFixed(0)}`.padStart(15)}` +
        `${Math.round(r.recordsOutPerSec).toLocaleString('en').padStart(15)}${r.drainS.toFixed(1).padStart(9)}${String(r.drops).padStart(10)}\n`,
    );
  }
  process.stdout.write(`load average after: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}\n`);
}

async function main(): Promise<void> {
  const load0 = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const broker = await startBrokerProcess();
  cleanups.push(() => broker.stop());
  const rows: Throughput[] = [];
  if (process.env.BENCH_ONLY === 'churn' || process.env.BENCH_ONLY === 'live') {
    process.stdout.write(`load at start ${load0}\n`);
    if (process.env.BENCH_ONLY === 'churn') printChurn(await churn(broker));
    else printLive(await live(broker));
    if (process.env.BENCH_STATUS) process.stdout.write(lastStderr);
    return;
  }
  // Side by side, alternating so that the machine's load drifts over both alike: bare kafkajs, then the producer.
  const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
  // BENCH_KJS_ENCODE=1: each also with kafkajs's own record encoding (lib/kafkajs-encode.ts off), in the same round.
  const both = process.env.BENCH_KJS_ENCODE === '1';
  const withKafkajsEncode = async (run: () => Promise<Throughput>): Promise<Throughput> => {
    setFastEncode(false);
    try {
      return await run();
    } finally {
      setFastEncode(true);
    }
  };
  for (let i = 0; i < rounds; i++) {
    if (both) rows.push(await withKafkajsEncode(() => bareKafkajs(broker, `bare kafkajs ${i + 1} enc=kafkajs`)));
    rows.push(await bareKafkajs(broker, `bare kafkajs ${i + 1}`));
    if (both) rows.push(await withKafkajsEncode(() => throughput(broker, `producer ${i + 1} enc=kafkajs`, {})));
    rows.push(await throughput(broker, `producer ${i + 1}`, {}));
  }
  // BENCH_VARIANTS=1: the producer's durability / compression variants too.
  if (process.env.BENCH_VARIANTS) {
    rows.push(await throughput(broker, 'producer fsync=never', { fsync: 'never' }));
    rows.push(await throughput(broker, 'producer gzip', { compression: 'gzip' }));
  }
  const sum = (prefix: string): number => rows.filter((r) => r.label.startsWith(prefix) && !r.label.includes('=') && !r.label.includes('gzip')).reduce((n, r) => n + r.rps, 0);
  const base = sum('bare kafkajs') / rounds;
  process.stdout.write(`\nproducer → broker, synthetic source, ${SECONDS}s each (producer and bare kafkajs in this process, broker a child process; load ${load0})\n`);
  process.stdout.write(`${'config'.padEnd(24)}${'records/s'.padStart(12)}${'vs bare'.padStart(9)}${'cpu (cores)'.padStart(13)}${'cpu-s/1k rec'.padStart(14)}${'batch ack ms'.padStart(14)}${'heap MiB'.padStart(10)}${'ext MiB'.padStart(9)}\n`);
  for (const r of rows) {
    process.stdout.write(
      `${r.label.padEnd(24)}${Math.round(r.rps).toLocaleString('en').padStart(12)}${(r.rps / base).toFixed(2).padStart(9)}${r.cpu.toFixed(2).padStart(13)}${((r.cpu / r.rps) * 1000).toFixed(4).padStart(14)}` +
        `${r.latencyMs.toFixed(1).padStart(14)}${(r.heapMiB ?? 0).toFixed(0).padStart(10)}${(r.externalMiB ?? 0).toFixed(0).padStart(9)}\n`,
    );
  }
  process.stdout.write(`producer / bare kafkajs (records/s, sum over ${rounds} alternating rounds): ${(sum('producer') / sum('bare kafkajs')).toFixed(2)}\n`);
  if (both) {
    // CPU per record, summed over the rounds: in-place encoding / kafkajs's own, for the producer and bare kafkajs
    const cpuPerRec = (label: string, enc: boolean): number => {
      const rs = rows.filter((r) => r.label.startsWith(label) && r.label.includes('enc=kafkajs') === enc);
      return rs.reduce((n, r) => n + r.cpu, 0) / rs.reduce((n, r) => n + r.rps, 0);
    };
    const ratio = (label: string): string => (cpuPerRec(label, false) / cpuPerRec(label, true)).toFixed(2);
    process.stdout.write(`cpu-s per record, in-place encoding / kafkajs's: producer ${ratio('producer')}, bare kafkajs ${ratio('bare kafkajs')}\n`);
    const sumKjs = (prefix: string): number => rows.filter((r) => r.label.startsWith(prefix) && r.label.endsWith('enc=kafkajs')).reduce((n, r) => n + r.rps, 0);
    process.stdout.write(`producer / bare kafkajs with kafkajs's encoding (records/s): ${(sum('producer') / sumKjs('bare kafkajs')).toFixed(2)}\n`);
  }
  // BENCH_ONLY=throughput: part 1 only (the churn part loads both cores for a minute).
  if (process.env.BENCH_ONLY === 'throughput') return;
  printChurn(await churn(broker));
  if (process.env.BENCH_LIVE) printLive(await live(broker));
}

main()
  .catch((e: unknown) => {
    process.stderr.write(`bench:producer failed: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch {
        // best effort
      }
    }
  });

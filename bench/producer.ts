// `npm run bench:producer`: (1) records/s the producer sustains into the bundled broker on one core (synthetic
// source, side by side: fsync always / never / gzip); (2) the producer's CPU and RSS with the real kernel capture
// while a C generator churns 10k TCP connections/s in a network namespace, next to the same producer idle.
import { execFileSync, spawn, type ChildProcess } from 'child_process';
import { mkdtempSync, readFileSync, rmSync } from 'fs';
import { get } from 'http';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { createKafkaClient } from '../lib/kafka';
import { silentLogger } from '../lib/log';
import { BatchSizer, KAFKA_DEFAULT_MAX_MESSAGE_BYTES } from '../producer/kafka-batch';
import { createProducer, type ProducerConfig } from '../producer/producer';
import { syntheticCapture } from '../producer/synthetic';
import { toWire, type WireContext } from '../producer/wire';
import { createCodec } from '../schemas/index';
import { createNetnsPair, type NetnsPair } from '../test/helpers/netns';
import { startProducerProcess } from '../test/helpers/producer';

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
  /** Kernel records the producer took in per second: on a shared machine "idle" is other processes' traffic. */
  recordsInPerSec: number;
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
}

/** One `nettally producer` child of the churn part: this tree's, or (BENCH_BASE) another built tree's, side by side. */
interface Churner {
  name: string;
  pid: number;
  url: string;
  stop(): Promise<void>;
}

async function startChurner(name: string, root: string, broker: BrokerProcess, tag: string): Promise<Churner> {
  const stateDir = mkdtempSync(join(tmpdir(), 'nettally-bench-'));
  const pinDir = `/sys/fs/bpf/nettally-bench-${process.pid}-${tag}`;
  cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }), () => rmSync(pinDir, { recursive: true, force: true }));
  const args = ['--brokers', broker.address, '--state-dir', stateDir, '--pin-dir', pinDir, '--metrics-listen', '0', '--status-interval', process.env.BENCH_STATUS ?? '0', '--flush-interval', FLUSH_INTERVAL, '--topic', `bench.churn.${tag}`];
  const p = startProducerProcess(args, {}, root);
  cleanups.push(() => p.child.kill('SIGKILL'));
  await p.ready;
  while (!/"metrics":"/.test(p.stderr())) await sleep(50);
  void p.exited.then((c) => c !== 0 && process.stderr.write(`${name} producer exited (${c}):\n${p.stderr().split('\n').slice(-15).join('\n')}\n`));
  return {
    name, pid: p.child.pid as number, url: /"metrics":"([^"]+)"/.exec(p.stderr())?.[1] as string,
    async stop() {
      p.child.kill('SIGTERM');
      await p.exited;
      if (root === ROOT) lastStderr = p.stderr();
    },
  };
}

async function churn(broker: BrokerProcess): Promise<ChurnRow[]> {
  const bin = join(ROOT, 'build', 'churn');
  execFileSync('cc', ['-O2', '-Wall', '-o', bin, join(ROOT, 'bench', 'churn.c')]);
  const pair: NetnsPair = createNetnsPair('bench');
  cleanups.push(() => pair.destroy());
  // BENCH_BASE=<another built worktree>: its producer runs at the same time on the same kernel traffic (both
  // capture the whole host), so the two are compared on identical load, which a busy shared machine cannot give
  // two runs one after the other.
  const prods = [await startChurner('this', ROOT, broker, 'this')];
  if (process.env.BENCH_BASE) prods.push(await startChurner('base', resolve(process.env.BENCH_BASE), broker, 'base'));
  const hz = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

  const server: ChildProcess = spawn('ip', ['netns', 'exec', pair.b.name, bin, 'server', '7000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => server.kill('SIGKILL'));
  await new Promise<void>((r) => server.stdout?.on('data', (d: Buffer) => d.toString().includes('READY') && r()));

  const rows: ChurnRow[] = [];
  const rates = (process.env.BENCH_CHURN_RATES ?? `0,${CHURN_RATE}`).split(',').map(Number);
  for (const rate of rates) {
    const before = await Promise.all(prods.map(async (p) => ({ t: procTicks(p.pid), o: await metric(p.url, 'records_out_total'), i: await metric(p.url, 'records_in_total'), d: await metric(p.url, 'kernel_ringbuf_drops_total') })));
    const start = Date.now();
    let conns = 0;
    if (rate > 0) {
      const out = execFileSync('ip', ['netns', 'exec', pair.a.name, bin, 'client', pair.b.addr4, '7000', String(rate), String(SECONDS)]).toString();
      conns = (JSON.parse(out) as { conns: number }).conns;
    } else {
      await sleep(SECONDS * 1000);
    }
    const wall = (Date.now() - start) / 1000;
    const at = await Promise.all(prods.map(async (p) => ({ t: procTicks(p.pid), o: await metric(p.url, 'records_out_total'), i: await metric(p.url, 'records_in_total'), d: await metric(p.url, 'kernel_ringbuf_drops_total'), mem: procMem(p.pid) })));
    // How long until each producer has shipped everything the burst produced.
    const drainStart = Date.now();
    const drained = prods.map(() => 0);
    for (;;) {
      const left = await Promise.all(prods.map((p) => metric(p.url, 'spool_records')));
      left.forEach((n, k) => (drained[k] = n > 0 ? 0 : drained[k] || (Date.now() - drainStart) / 1000));
      if (left.every((n) => n === 0) || Date.now() - drainStart > 60_000) break;
      await sleep(100);
    }
    for (const [k, p] of prods.entries()) {
      const b = before[k];
      const a = at[k];
      // CPU per connection counts the drain too: what the burst cost until its records were all shipped.
      const cpuAll = (procTicks(p.pid) - b.t) / hz;
      const o2 = await metric(p.url, 'records_out_total');
      rows.push({
        label: `${prods.length > 1 ? `${p.name}: ` : ''}${rate ? `churn ${rate}/s` : 'idle'}`, connsPerSec: conns / wall, cpu: (a.t - b.t) / hz / wall, ...a.mem,
        recordsInPerSec: (a.i - b.i) / wall, recordsOutPerSec: (a.o - b.o) / wall, drainS: drained[k], drops: a.d - b.d,
        cpuPer1k: conns ? (cpuAll / conns) * 1000 : 0, recordsPerConn: conns ? (o2 - b.o) / conns : 0,
        heapMiB: (await metric(p.url, 'memory_bytes{kind="heap_used"}')) / 2 ** 20, externalMiB: (await metric(p.url, 'memory_bytes{kind="external"}')) / 2 ** 20,
      });
    }
  }
  for (const p of prods) await p.stop();
  return rows;
}

async function main(): Promise<void> {
  const load0 = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const broker = await startBrokerProcess();
  cleanups.push(() => broker.stop());
  const rows: Throughput[] = [];
  if (process.env.BENCH_ONLY === 'churn') {
    const churnRows = await churn(broker);
    process.stdout.write(JSON.stringify(churnRows, null, 1) + '\n');
    process.stdout.write(`load average before/after: ${load0} / ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}\n`);
    if (process.env.BENCH_STATUS) process.stdout.write(lastStderr);
    return;
  }
  // Side by side, alternating so that the machine's load drifts over both alike: bare kafkajs, then the producer.
  const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
  for (let i = 0; i < rounds; i++) {
    rows.push(await bareKafkajs(broker, `bare kafkajs ${i + 1}`));
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
  // BENCH_ONLY=throughput: part 1 only (the churn part loads both cores for a minute).
  if (process.env.BENCH_ONLY === 'throughput') return;
  const churnRows = await churn(broker);
  process.stdout.write(`\nproducer (child process, real kernel capture, --flush-interval ${FLUSH_INTERVAL}) while a generator churns TCP connections in a netns, ${SECONDS}s each\n`);
  process.stdout.write(
    `${'load'.padEnd(16)}${'conns/s'.padStart(10)}${'cpu (cores)'.padStart(13)}${'cpu-s/1k conn'.padStart(15)}${'rec/conn'.padStart(10)}${'RSS MiB'.padStart(9)}${'peak MiB'.padStart(10)}` +
      `${'heap MiB'.padStart(10)}${'ext MiB'.padStart(9)}${'records in/s'.padStart(14)}${'records out/s'.padStart(15)}${'drain s'.padStart(9)}${'rb drops'.padStart(10)}\n`,
  );
  for (const r of churnRows) {
    process.stdout.write(
      `${r.label.padEnd(16)}${Math.round(r.connsPerSec).toLocaleString('en').padStart(10)}${r.cpu.toFixed(3).padStart(13)}${r.cpuPer1k.toFixed(3).padStart(15)}${r.recordsPerConn.toFixed(2).padStart(10)}` +
        `${r.rssMiB.toFixed(0).padStart(9)}${r.hwmMiB.toFixed(0).padStart(10)}${r.heapMiB.toFixed(0).padStart(10)}${r.externalMiB.toFixed(0).padStart(9)}` +
        `${Math.round(r.recordsInPerSec).toLocaleString('en').padStart(14)}${Math.round(r.recordsOutPerSec).toLocaleString('en').padStart(15)}${r.drainS.toFixed(1).padStart(9)}${String(r.drops).padStart(10)}\n`,
    );
  }
  process.stdout.write(`load average after: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}\n`);
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

// `npm run bench:producer`: (1) records/s the producer sustains into the bundled broker on one core (synthetic
// source, side by side: fsync always / never / gzip); (2) the producer's CPU and RSS with the real kernel capture
// while a C generator churns 10k TCP connections/s in a network namespace, next to the same producer idle.
import { execFileSync, spawn, type ChildProcess } from 'child_process';
import { mkdtempSync, readFileSync, rmSync } from 'fs';
import { get } from 'http';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { silentLogger } from '../lib/log';
import { createProducer, type ProducerConfig } from '../producer/producer';
import { syntheticCapture } from '../producer/synthetic';
import { createNetnsPair, type NetnsPair } from '../test/helpers/netns';
import { startProducerProcess } from '../test/helpers/producer';

const ROOT = resolve(__dirname, '../..');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const CHURN_RATE = Number(process.env.BENCH_CHURN_RATE ?? 10_000);
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
}

async function throughput(broker: BrokerProcess, label: string, over: Partial<ProducerConfig>): Promise<Throughput> {
  const stateDir = mkdtempSync(join(tmpdir(), 'nettally-bench-'));
  const src = syntheticCapture({ connsPerSec: 50_000, samplesPerConn: 2, bytesPerSample: 1000 });
  const config: ProducerConfig = {
    stateDir, kafka: { clientId: 'nettally-bench', brokers: [broker.address] }, topic: `bench.${label.replace(/\W+/g, '-')}`,
    spoolMaxBytes: 32 << 20, fsync: 'always', batchMaxRecords: 2000, batchMaxBytes: 1 << 20, batchMaxMs: 50, flushIntervalMs: 5000,
    flushThresholdBytes: 1 << 24, ifaceIntervalMs: 0, compression: 'none', idempotent: false, shutdownTimeoutMs: 1000, statusIntervalMs: 0,
    host: HOST, openCapture: async () => src, ...over,
  };
  const p = createProducer({ config, logger: silentLogger });
  let lat = 0;
  let n = 0;
  p.on('sent', (e) => {
    lat += e.latencyMs;
    n++;
  });
  await p.start();
  await sleep(1500); // warm up, fill the pipeline
  const r0 = p.status().records_out;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  lat = 0;
  n = 0;
  await sleep(SECONDS * 1000);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(c0);
  const rps = (p.status().records_out - r0) / wall;
  await src.close();
  await p.stop();
  rmSync(stateDir, { recursive: true, force: true });
  return { label, rps, cpu: (cpu.user + cpu.system) / 1e6 / wall, latencyMs: n ? lat / n : 0 };
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
      r.on('end', () => res(Number(new RegExp(`^nettally_producer_${name} (\\S+)$`, 'm').exec(b)?.[1] ?? NaN)));
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
}

async function churn(broker: BrokerProcess): Promise<ChurnRow[]> {
  const bin = join(ROOT, 'build', 'churn');
  execFileSync('cc', ['-O2', '-Wall', '-o', bin, join(ROOT, 'bench', 'churn.c')]);
  const pair: NetnsPair = createNetnsPair('bench');
  cleanups.push(() => pair.destroy());
  const stateDir = mkdtempSync(join(tmpdir(), 'nettally-bench-'));
  const pinDir = `/sys/fs/bpf/nettally-bench-${process.pid}`;
  cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }), () => rmSync(pinDir, { recursive: true, force: true }));
  const prod = startProducerProcess(['--brokers', broker.address, '--state-dir', stateDir, '--pin-dir', pinDir, '--metrics-listen', '0', '--status-interval', process.env.BENCH_STATUS ?? '0', '--flush-interval', '1s']);
  cleanups.push(() => prod.child.kill('SIGKILL'));
  await prod.ready;
  while (!/"metrics":"/.test(prod.stderr())) await sleep(50);
  const url = /"metrics":"([^"]+)"/.exec(prod.stderr())?.[1] as string;
  const pid = prod.child.pid as number;
  const hz = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

  const server: ChildProcess = spawn('ip', ['netns', 'exec', pair.b.name, bin, 'server', '7000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => server.kill('SIGKILL'));
  await new Promise<void>((r) => server.stdout?.on('data', (d: Buffer) => d.toString().includes('READY') && r()));

  const rows: ChurnRow[] = [];
  void prod.exited.then((c) => process.stderr.write(`producer exited (${c}):\n${prod.stderr().split('\n').slice(-15).join('\n')}\n`));
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
    // How long until the producer has shipped everything the burst produced.
    const drainStart = Date.now();
    while ((await metric(url, 'spool_records')) > 0 && Date.now() - drainStart < 60_000) await sleep(100);
    rows.push({
      label: rate ? `churn ${rate}/s` : 'idle', connsPerSec: conns / wall, cpu, ...mem,
      recordsOutPerSec: (o1 - o0) / wall, drainS: (Date.now() - drainStart) / 1000, drops,
    });
  }
  prod.child.kill('SIGTERM');
  await prod.exited;
  lastStderr = prod.stderr();
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
    if (process.env.BENCH_STATUS) process.stdout.write(lastStderr);
    return;
  }
  rows.push(await throughput(broker, 'fsync=always', {}));
  rows.push(await throughput(broker, 'fsync=never', { fsync: 'never' }));
  rows.push(await throughput(broker, 'fsync=always gzip', { compression: 'gzip' }));
  // The daemon's batching defaults: 5000 records, cut by encoded size at Kafka's 1048588-byte message limit.
  rows.push(await throughput(broker, 'defaults 5000/1MiB', { batchMaxRecords: 5000, batchMaxBytes: 1 << 20, maxMessageBytes: 1048588 }));
  const base = rows[0].rps;
  process.stdout.write(`\nproducer → broker, synthetic source, ${SECONDS}s each (producer in this process, broker a child process; load ${load0})\n`);
  process.stdout.write(`${'config'.padEnd(22)}${'records/s'.padStart(12)}${'ratio'.padStart(8)}${'cpu (cores)'.padStart(13)}${'batch ack ms'.padStart(14)}\n`);
  for (const r of rows) {
    process.stdout.write(`${r.label.padEnd(22)}${Math.round(r.rps).toLocaleString('en').padStart(12)}${(r.rps / base).toFixed(2).padStart(8)}${r.cpu.toFixed(2).padStart(13)}${r.latencyMs.toFixed(1).padStart(14)}\n`);
  }
  // BENCH_ONLY=throughput: part 1 only (the churn part loads both cores for a minute).
  if (process.env.BENCH_ONLY === 'throughput') return;
  const churnRows = await churn(broker);
  process.stdout.write(`\nproducer (child process, real kernel capture) while a generator churns TCP connections in a netns, ${SECONDS}s each\n`);
  process.stdout.write(`${'load'.padEnd(16)}${'conns/s'.padStart(10)}${'cpu (cores)'.padStart(13)}${'RSS MiB'.padStart(9)}${'peak MiB'.padStart(10)}${'records out/s'.padStart(15)}${'drain s'.padStart(9)}${'rb drops'.padStart(10)}\n`);
  for (const r of churnRows) {
    process.stdout.write(
      `${r.label.padEnd(16)}${Math.round(r.connsPerSec).toLocaleString('en').padStart(10)}${r.cpu.toFixed(2).padStart(13)}${r.rssMiB.toFixed(0).padStart(9)}${r.hwmMiB.toFixed(0).padStart(10)}${Math.round(r.recordsOutPerSec).toLocaleString('en').padStart(15)}${r.drainS.toFixed(1).padStart(9)}${String(r.drops).padStart(10)}\n`,
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

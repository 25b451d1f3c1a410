// `npm run bench`: runs every stage's bench (bench/<name>.ts) and an end-to-end latency bench (traffic in a netns →
// point visible in InfluxDB through `nettally up`), then prints one summary.
import { spawn, type ChildProcess } from 'child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'fs';
import { createInterface } from 'readline';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { freePort } from '../bin/influxd';
import { configError } from '../lib/errors';
import { formatHelp, parseArgs, parseDuration, type CommandSpec } from '../lib/args';
import { createNetnsPair, type NetnsPair } from '../test/helpers/netns';

const ROOT = resolve(__dirname, '../..');
const BIN = join(ROOT, 'dist/bin/nettally.js');
const STAGE_BENCHES = ['capture', 'broker', 'producer', 'consumer', 'dashboard'];

const spec: CommandSpec = {
  name: 'bench',
  summary: 'Run every benchmark and print one summary, including end-to-end latency (traffic → point in InfluxDB).',
  description: 'Stage benches run one after another as child processes (node dist/bench/<name>.js); their own env knobs\n(BENCH_SECONDS, BENCH_ROUNDS, ...) pass through. Needs root (eBPF, network namespaces).',
  options: [
    { name: 'only', type: 'list', default: [...STAGE_BENCHES, 'e2e'], help: `which to run: ${[...STAGE_BENCHES, 'e2e'].join(', ')}` },
    { name: 'transfers', type: 'int', default: 30, min: 3, max: 10_000, help: 'e2e: TCP transfers measured per configuration' },
    { name: 'flush-intervals', type: 'list', default: ['250ms', '1s', '5s'], help: 'e2e: `nettally up --flush-interval` values compared side by side' },
  ],
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const load = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

interface StageResult {
  name: string;
  code: number | null;
  seconds: number;
  stdout: string;
}

/** Runs dist/bench/<name>.js; its stdout (the tables) is kept for the summary, stderr (progress) passes through. */
function runStage(name: string): Promise<StageResult> {
  const t0 = Date.now();
  process.stderr.write(`\n== bench ${name} (load ${load()}) ==\n`);
  const child = spawn(process.execPath, [join(ROOT, 'dist/bench', `${name}.js`)], { stdio: ['ignore', 'pipe', 'inherit'], cwd: ROOT });
  let stdout = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
    process.stderr.write(d);
  });
  return new Promise((res) => child.once('close', (code) => res({ name, code, seconds: (Date.now() - t0) / 1000, stdout })));
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** A Python client in netns a that makes one TCP transfer per stdin line and prints the Unix time (ms) after close(). */
const CLIENT_PY = `
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
for line in sys.stdin:
    n = int(line)
    c = socket.create_connection((host, port))
    c.sendall(b'x' * n)
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    c.close()
    print(time.time() * 1000, flush=True)
`;
const SERVER_PY = `
import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 5201))
s.listen(64)
print('listening', flush=True)
def serve(c):
    while c.recv(65536):
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

interface E2eResult {
  flushInterval: string;
  latencies: number[];
  failures: number;
  /** up's last status line: other load on the machine (records/s, kernel drops, consumer lag) shows there. */
  lastStatus: string;
}

/** Line reader over a child's stdout. */
function lines(child: ChildProcess): () => Promise<string> {
  const queue: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else queue.push(l);
  });
  return () => (queue.length ? Promise.resolve(queue.shift() as string) : new Promise((r) => waiters.push(r)));
}

async function influxSum(url: string, netns: number): Promise<number> {
  const q = `SELECT sum("tx_bytes") FROM "nettally_traffic_1m" WHERE "netns" = '${netns}' AND time > now() - 2h`;
  const res = await fetch(`${url}/query?${new URLSearchParams({ db: 'nettally', q })}`);
  const body = (await res.json()) as { results: { series?: { values: [string, number][] }[] }[] };
  return body.results[0]?.series?.[0]?.values[0]?.[1] ?? 0;
}

/** `nettally up` with one flush interval; N sequential transfers; latency = close() in the client → sum visible in InfluxDB. */
async function e2e(pair: NetnsPair, flushInterval: string, transfers: number): Promise<E2eResult> {
  const dataDir = mkdtempSync(join(tmpdir(), 'nettally-bench-e2e-'));
  const [kafkaPort, influxPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${influxPort}`;
  const up = spawn(
    process.execPath,
    [BIN, 'up', '--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', `/sys/fs/bpf/nettally-bench-${process.pid}`, '--flush-interval', flushInterval, '--status-interval', '5s'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } },
  );
  let out = '';
  let err = '';
  up.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  up.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => up.once('exit', (c) => r(c)));
  const client = spawn('ip', ['netns', 'exec', pair.a.name, 'python3', '-c', CLIENT_PY, pair.b.addr4, '5201'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const next = lines(client);
  const result: E2eResult = { flushInterval, latencies: [], failures: 0, lastStatus: '' };
  try {
    const by = Date.now() + 90_000;
    while (!out.includes('nettally up: ready')) {
      if (up.exitCode !== null || Date.now() > by) throw new Error(`nettally up did not become ready:\n${out}\n${err.slice(-2000)}`);
      await sleep(100);
    }
    let expected = await influxSum(url, pair.a.inode);
    const flushMs = parseDuration(flushInterval) ?? 0;
    for (let i = 0; i < transfers; i++) {
      // Start at a random phase of the consumer's flush cycle; back to back, every transfer would wait a whole interval.
      await sleep(Math.random() * flushMs);
      const size = 10_000 + i * 1_001;
      client.stdin?.write(`${size}\n`);
      const closedAt = Number(await next());
      expected += size;
      const deadline = Date.now() + 60_000;
      let seen = 0;
      while ((seen = await influxSum(url, pair.a.inode)) < expected && Date.now() < deadline) await sleep(10);
      const ok = seen >= expected;
      const ms = Math.round(Date.now() - closedAt);
      if (ok) result.latencies.push(ms);
      else result.failures++;
      expected = Math.max(expected, seen);
      process.stderr.write(`e2e flush ${flushInterval}: transfer ${i + 1}/${transfers}: ${ok ? `${ms} ms` : 'not visible within 60 s'}\n`);
    }
  } finally {
    result.lastStatus = out.split('\n').filter((l) => l.startsWith('[up ')).pop() ?? '';
    client.stdin?.end();
    client.kill();
    up.kill('SIGINT');
    const code = await Promise.race([exited, sleep(60_000).then(() => 'timeout')]);
    if (code !== 0) process.stderr.write(`warning: nettally up exited with ${code}\n${err.slice(-2000)}\n`);
    if (code === 'timeout') up.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  }
  return result;
}

async function main(): Promise<number> {
  const args = parseArgs(spec, process.argv.slice(2));
  if (args === 'help') {
    process.stdout.write(formatHelp(spec));
    return 0;
  }
  const only = args.list('only');
  for (const n of only) if (![...STAGE_BENCHES, 'e2e'].includes(n)) throw configError('--only', `unknown bench ${JSON.stringify(n)}; choose from ${[...STAGE_BENCHES, 'e2e'].join(', ')}`);
  for (const fi of args.list('flush-intervals')) {
    if ((parseDuration(fi) ?? 0) < 100) throw configError('--flush-intervals', `${JSON.stringify(fi)} is not a duration of at least 100ms`);
  }
  const started = new Date().toISOString();
  const load0 = load();
  const stages: StageResult[] = [];
  for (const name of STAGE_BENCHES.filter((n) => only.includes(n))) {
    if (!existsSync(join(ROOT, 'dist/bench', `${name}.js`))) {
      process.stderr.write(`bench ${name}: dist/bench/${name}.js not built; skipped\n`);
      continue;
    }
    stages.push(await runStage(name));
  }
  const e2eResults: E2eResult[] = [];
  if (only.includes('e2e')) {
    process.stderr.write(`\n== bench e2e (load ${load()}) ==\n`);
    const pair = createNetnsPair('e2e');
    const server = spawn('ip', ['netns', 'exec', pair.b.name, 'python3', '-c', SERVER_PY], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await lines(server)();
      for (const fi of args.list('flush-intervals')) e2eResults.push(await e2e(pair, fi, args.num('transfers')));
    } finally {
      server.kill();
      pair.destroy();
    }
  }

  const w = (s: string): boolean => process.stdout.write(s + '\n');
  w(`\n================ nettally bench summary ================`);
  w(`started ${started}; ${readFileSync('/proc/cpuinfo', 'utf8').split('\n').filter((l) => l.startsWith('processor')).length} cores; load at start ${load0}, at end ${load()}`);
  for (const s of stages) {
    w(`\n--- ${s.name}: ${s.code === 0 ? 'ok' : `FAILED (exit ${s.code})`} in ${s.seconds.toFixed(0)} s ---`);
    w(s.stdout.trimEnd());
  }
  if (e2eResults.length) {
    w(`\n--- e2e: traffic in a netns → point visible in InfluxDB, through \`nettally up\` (broker, influxd, producer, consumer) ---`);
    w('TCP transfer closed in the client → its bytes in sum(tx_bytes) of nettally_traffic_1m for the netns (polled every 10 ms);');
    w('transfers one at a time, each started at a random phase of the flush interval');
    w(`${'--flush-interval'.padEnd(18)}${'n'.padStart(5)}${'mean ms'.padStart(10)}${'p50 ms'.padStart(10)}${'p99 ms'.padStart(10)}${'max ms'.padStart(10)}${'min ms'.padStart(10)}${'not seen'.padStart(10)}`);
    for (const r of e2eResults) {
      const s = [...r.latencies].sort((a, b) => a - b);
      const f = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(0)).padStart(10);
      w(`${r.flushInterval.padEnd(18)}${String(s.length).padStart(5)}${f(s.length ? s.reduce((a, b) => a + b, 0) / s.length : undefined)}${f(pct(s, 50))}${f(pct(s, 99))}${f(s[s.length - 1])}${f(s[0])}${String(r.failures).padStart(10)}`);
    }
  }
  for (const r of e2eResults) if (r.lastStatus) w(`up status at the end of --flush-interval ${r.flushInterval}: ${r.lastStatus.replace(/ \| query:.*$/, '')}`);
  const failed = stages.filter((s) => s.code !== 0).map((s) => s.name);
  if (e2eResults.some((r) => r.failures > 0)) failed.push('e2e');
  w(failed.length ? `\nFAILED: ${failed.join(', ')}` : '\nall benches ok');
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);

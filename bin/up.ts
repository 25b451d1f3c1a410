// `nettally up`: the whole pipeline on one machine — bundled broker, local influxd, producer, consumer —
// with a live status line until Ctrl-C, which stops everything and leaves no process, pin or mount behind.
import { spawn, ChildProcess, execFileSync } from 'child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync } from 'fs';
import { connect } from 'net';
import { join, resolve } from 'path';
import { createInterface } from 'readline';
import type { CommandSpec } from '../lib/args';
import type { Command, CommandContext } from '../lib/command';
import { configError, NettallyError } from '../lib/errors';
import type { Logger } from '../lib/log';
import { startLocalInflux, LocalInflux } from './influxd';

const spec: CommandSpec = {
  name: 'up',
  summary: 'Run the whole pipeline on this machine until Ctrl-C: bundled Kafka broker, local InfluxDB, producer, consumer.',
  description: [
    'Set KAFKA_BROKERS to use an existing Kafka instead of the bundled broker, and INFLUX_URL to use an',
    'existing InfluxDB instead of a local influxd. Needs root (the producer loads BPF programs).',
    'Logs of every component go to <data-dir>/logs/.',
  ].join('\n'),
  options: [
    { name: 'data-dir', type: 'string', env: 'NETTALLY_DATA_DIR', default: '/var/lib/nettally', help: 'where broker, InfluxDB, spool and logs keep their files' },
    { name: 'kafka-listen', type: 'string', env: 'NETTALLY_BROKER_LISTEN', default: '127.0.0.1:9092', help: 'address of the bundled broker (ignored with KAFKA_BROKERS)' },
    { name: 'brokers', type: 'list', env: 'KAFKA_BROKERS', help: 'use this Kafka instead of starting the bundled broker' },
    { name: 'influx-url', type: 'string', env: 'INFLUX_URL', help: 'use this InfluxDB instead of starting a local influxd' },
    { name: 'influx-port', type: 'int', env: 'NETTALLY_INFLUX_PORT', default: 8086, min: 1, max: 65535, help: 'HTTP port of the local influxd (ignored with INFLUX_URL)' },
    { name: 'influx-db', type: 'string', env: 'INFLUX_DB', default: 'nettally', help: 'InfluxDB database for the rollups' },
    { name: 'flush-interval', type: 'duration', default: '5s', min: 100, help: 'kernel flush interval for connection counters' },
    { name: 'status-interval', type: 'duration', default: '2s', min: 200, help: 'how often the status line is printed' },
  ],
  examples: ['sudo ./nettally up', 'sudo KAFKA_BROKERS=kafka1:9092 INFLUX_URL=http://influx:8086 ./nettally up'],
};

const CLI = resolve(__dirname, 'nettally.js');
const PIN_DIR = '/sys/fs/bpf/nettally-up';
const KERNEL_FS = ['/sys/fs/bpf', '/sys/kernel/tracing'];

/** Latest status fields each child reported (pino lines with msg "status"). */
type Status = Record<string, unknown>;

interface Child {
  name: string;
  proc: ChildProcess;
  status: Status;
  lastLines: string[];
  exited: Promise<number | null>;
}

function isMounted(path: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === path);
}

function parseHostPort(setting: string, value: string): { host: string; port: number } {
  const m = /^([^:\s]+):(\d{1,5})$/.exec(value);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw configError(setting, `${JSON.stringify(value)} is not host:port`);
  return { host: m[1], port: Number(m[2]) };
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host, port });
    s.setTimeout(500);
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
    s.once('timeout', () => (s.destroy(), res(false)));
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, child: Child, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (child.proc.exitCode !== null) {
      throw new NettallyError('INTERNAL', `${child.name} exited with code ${child.proc.exitCode} before ${what}:\n${child.lastLines.join('\n')}`);
    }
    if (Date.now() > deadline) throw new NettallyError('INTERNAL', `${child.name}: ${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Starts `nettally <args>` as a child; its pino lines go to logs/<name>.log, its status lines into `status`. */
function startChild(name: string, args: string[], logDir: string, logger: Logger): Child {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  const log = createWriteStream(join(logDir, `${name}.log`), { flags: 'a' });
  const child: Child = {
    name,
    proc,
    status: {},
    lastLines: [],
    exited: new Promise((r) => proc.once('exit', (code, signal) => r(code ?? (signal ? 128 : null)))),
  };
  for (const stream of [proc.stdout, proc.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream }).on('line', (line) => {
      log.write(line + '\n');
      child.lastLines = [...child.lastLines.slice(-19), line];
      let rec: Record<string, unknown> | undefined;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (rec.msg === 'status') child.status = rec;
      else if (typeof rec.level === 'number' && rec.level >= 50) logger.error({ component: name, msg: rec.msg, err: rec.err }, `${name}: ${String(rec.msg)}`);
      else if (typeof rec.level === 'number' && rec.level >= 40) logger.warn({ component: name }, `${name}: ${String(rec.msg)}`);
    });
  }
  proc.once('exit', () => log.end());
  logger.info({ component: name, pid: proc.pid }, `started ${name}`);
  return child;
}

async function stopChild(child: Child, graceMs: number): Promise<void> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return;
  child.proc.kill('SIGTERM');
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), graceMs);
  await child.exited;
  clearTimeout(timer);
}

function num(s: Status, key: string): number | undefined {
  const v = s[key];
  return typeof v === 'number' ? v : undefined;
}

function fmt(v: number | undefined, unit = ''): string {
  if (v === undefined) return '-';
  if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(1)}M${unit}`;
  if (Math.abs(v) >= 1e4) return `${(v / 1e3).toFixed(1)}k${unit}`;
  return `${Math.round(v)}${unit}`;
}

function statusLine(startedAt: number, producer: Child, consumer: Child, influxUrl: string): string {
  const p = producer.status;
  const c = consumer.status;
  const up = Math.floor((Date.now() - startedAt) / 1000);
  const clock = `${String(Math.floor(up / 3600)).padStart(2, '0')}:${String(Math.floor(up / 60) % 60).padStart(2, '0')}:${String(up % 60).padStart(2, '0')}`;
  const lastWindow = typeof c.last_window === 'string' ? c.last_window : '-';
  return (
    `[up ${clock}] producer ${fmt(num(p, 'records_per_s'))} rec/s, kernel drops ${fmt(num(p, 'kernel_drops'))}, spool ${fmt(num(p, 'spool_bytes'), 'B')}` +
    ` | consumer ${fmt(num(c, 'events_per_s'))} ev/s, lag ${fmt(num(c, 'lag'))}, last window ${lastWindow}` +
    ` | query: nettally usage --influx-url ${influxUrl}\n`
  );
}

async function run(args: import('../lib/args').ParsedArgs, ctx: CommandContext): Promise<number> {
  const { logger } = ctx;
  if (process.getuid?.() !== 0) {
    throw new NettallyError('PRIVILEGES', 'nettally up needs root: the producer loads BPF programs and pins maps (run: sudo ./nettally up)');
  }
  const dataDir = resolve(args.str('data-dir'));
  const logDir = join(dataDir, 'logs');
  try {
    mkdirSync(logDir, { recursive: true });
  } catch (e) {
    throw configError('--data-dir (env NETTALLY_DATA_DIR)', `cannot create ${logDir}: ${(e as Error).message}`);
  }
  const mountedBefore = new Set(KERNEL_FS.filter(isMounted));
  const pinsBefore = existsSync(PIN_DIR);
  const children: Child[] = [];
  let influx: LocalInflux | undefined;
  let stopping = false;

  const external = args.list('brokers');
  const listen = parseHostPort('--kafka-listen (env NETTALLY_BROKER_LISTEN)', args.str('kafka-listen'));
  const brokers = external.length > 0 ? external : [`${listen.host}:${listen.port}`];

  const shutdown = async (): Promise<void> => {
    stopping = true;
    // Producer first (it flushes the kernel's counters to Kafka), then the consumer (it writes and commits), then servers.
    for (const name of ['producer', 'consumer', 'broker']) {
      const c = children.find((x) => x.name === name);
      if (c) {
        logger.info({ component: name }, `stopping ${name}`);
        await stopChild(c, name === 'broker' ? 10_000 : 30_000);
      }
    }
    if (influx) await influx.close();
    if (!pinsBefore && existsSync(PIN_DIR)) rmSync(PIN_DIR, { recursive: true, force: true });
    for (const fs of KERNEL_FS) {
      if (!mountedBefore.has(fs) && isMounted(fs)) {
        try {
          execFileSync('umount', [fs]);
        } catch (e) {
          logger.warn({ mount: fs, err: (e as Error).message }, 'could not unmount');
        }
      }
    }
  };

  try {
    if (external.length === 0) {
      if (await portOpen(listen.host, listen.port)) {
        throw configError('--kafka-listen (env NETTALLY_BROKER_LISTEN)', `${listen.host}:${listen.port} is already in use; pick another address, or set KAFKA_BROKERS to use the Kafka listening there`);
      }
      const broker = startChild('broker', ['broker', '--listen', `${listen.host}:${listen.port}`, '--data-dir', join(dataDir, 'broker')], logDir, logger);
      children.push(broker);
      await waitFor('the broker listens', () => portOpen(listen.host, listen.port), broker, 30_000);
    }

    let influxUrl = args.optStr('influx-url');
    if (!influxUrl) {
      const port = args.num('influx-port');
      if (await portOpen('127.0.0.1', port)) {
        throw configError('--influx-port (env NETTALLY_INFLUX_PORT)', `127.0.0.1:${port} is already in use; pick another port, or set INFLUX_URL to use the InfluxDB listening there`);
      }
      influx = await startLocalInflux({ dataDir: join(dataDir, 'influxdb'), httpPort: port, rpcPort: 0, database: args.str('influx-db'), logger });
      influxUrl = influx.url;
    }

    const kafkaArgs = ['--brokers', brokers.join(',')];
    const statusEvery = `${args.num('status-interval')}ms`;
    const consumer = startChild(
      'consumer',
      ['consumer', ...kafkaArgs, '--influx-url', influxUrl, '--influx-db', args.str('influx-db'), '--status-interval', statusEvery],
      logDir,
      logger,
    );
    children.push(consumer);
    const producer = startChild(
      'producer',
      ['producer', ...kafkaArgs, '--state-dir', join(dataDir, 'producer'), '--pin-dir', PIN_DIR, '--flush-interval', `${args.num('flush-interval')}ms`, '--status-interval', statusEvery],
      logDir,
      logger,
    );
    children.push(producer);

    ctx.stdout.write(
      `nettally up: Kafka ${brokers.join(',')}${external.length ? '' : ' (bundled broker)'}, InfluxDB ${influxUrl}${influx ? ' (local influxd)' : ''}, ` +
        `database ${args.str('influx-db')}; logs in ${logDir}. Ctrl-C stops everything.\n`,
    );

    const startedAt = Date.now();
    const died = Promise.race(children.map((c) => c.exited.then((code) => ({ c, code }))));
    const ticker = setInterval(() => ctx.stdout.write(statusLine(startedAt, producer, consumer, influxUrl as string)), args.num('status-interval'));
    const stopped = new Promise<'signal'>((r) => (ctx.signal.aborted ? r('signal') : ctx.signal.addEventListener('abort', () => r('signal'), { once: true })));
    const first = await Promise.race([stopped, died]);
    clearInterval(ticker);
    if (first !== 'signal' && !stopping) {
      logger.error({ component: first.c.name, code: first.code, last: first.c.lastLines.slice(-5) }, `${first.c.name} exited unexpectedly; stopping everything`);
      await shutdown();
      return 1;
    }
    await shutdown();
    ctx.stdout.write('nettally up: stopped\n');
    return 0;
  } catch (err) {
    await shutdown();
    throw err;
  }
}

export const command: Command = { spec, run };

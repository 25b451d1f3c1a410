// Test helper: a bundled broker on a free port with a temp data dir, in-process (fast) or as a child
// process `node dist/bin/nettally.js broker` (for SIGKILL tests); stop() cleans up everything it made.
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import { tmpdir } from 'os';
import { basename, dirname, join, resolve } from 'path';
import { startBroker, type BrokerOptions, type RunningBroker } from '../../broker/index';
import { createLogger } from '../../lib/log';

// The checkout, whether this runs from test/helpers (jest) or dist/test/helpers (benches).
const ROOT = ((r: string): string => (basename(r) === 'dist' ? dirname(r) : r))(resolve(__dirname, '../..'));

export interface TestBroker {
  /** "127.0.0.1:PORT" for kafkajs `brokers` / kcat `-b`. */
  address: string;
  port: number;
  dataDir: string;
  /** Stops the broker and removes its data dir. */
  stop(): Promise<void>;
}

export interface InProcessBroker extends TestBroker {
  broker: RunningBroker;
}

/** In-process broker (port 0, fresh temp dir unless dataDir is given; a given dir is not removed by stop()). */
export async function startTestBroker(opts: Partial<BrokerOptions> = {}): Promise<InProcessBroker> {
  const own = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? fs.mkdtempSync(join(tmpdir(), 'nettally-broker-'));
  // NETTALLY_TEST_BROKER_LOG=debug shows the broker's log on stderr while debugging a test.
  const logger = process.env.NETTALLY_TEST_BROKER_LOG ? createLogger({ level: process.env.NETTALLY_TEST_BROKER_LOG, name: 'test-broker' }) : undefined;
  const broker = await startBroker({ port: 0, logger, ...opts, dataDir });
  let stopped = false;
  return {
    address: broker.address,
    port: broker.port,
    dataDir,
    broker,
    async stop() {
      if (stopped) return;
      stopped = true;
      await broker.close();
      if (own) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface BrokerProcess extends TestBroker {
  child: ChildProcess;
  pid: number;
  /** SIGKILL, no cleanup of the data dir (for crash tests); resolves when the process is gone. */
  kill(): Promise<void>;
  /** Starts a new broker process on the same port and data dir. */
  restart(): Promise<BrokerProcess>;
  /** Everything the process wrote to stderr so far (pino JSON lines). */
  stderr(): string;
}

let built = false;

/** Makes sure dist/ holds a compiled broker at least as new as its sources (tsc emits despite others' type errors). */
export function ensureBuilt(): void {
  if (built) return;
  const newest = (dir: string): number =>
    fs.existsSync(dir) ? Math.max(0, ...fs.readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => fs.statSync(join(dir, f)).mtimeMs)) : 0;
  const js = join(ROOT, 'dist/broker/server.js');
  const bin = join(ROOT, 'dist/bin/nettally.js');
  const srcTime = Math.max(newest(join(ROOT, 'broker')), newest(join(ROOT, 'lib')), newest(join(ROOT, 'bin')));
  const fresh = fs.existsSync(js) && fs.existsSync(bin) && fs.statSync(js).mtimeMs >= srcTime && fs.statSync(bin).mtimeMs >= srcTime;
  if (!fresh) spawnSync(join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'ignore' });
  if (!fs.existsSync(js) || !fs.existsSync(bin)) throw new Error('dist/ has no compiled broker; run bash scripts/build.sh');
  built = true;
}

/**
 * Child-process broker: `node dist/bin/nettally.js broker --listen 127.0.0.1:<port> --data-dir <dir> ...extra`.
 * Resolves once it printed its "broker listening on" line.
 */
export async function startBrokerProcess(opts: { dataDir?: string; port?: number; args?: string[] } = {}): Promise<BrokerProcess> {
  ensureBuilt();
  const own = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? fs.mkdtempSync(join(tmpdir(), 'nettally-broker-'));
  const child = spawn(process.execPath, [join(ROOT, 'dist/bin/nettally.js'), 'broker', '--listen', `127.0.0.1:${opts.port ?? 0}`, '--data-dir', dataDir, ...(opts.args ?? [])], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'info' },
  });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const port = await new Promise<number>((res, rej) => {
    let out = '';
    const timer = setTimeout(() => rej(new Error(`broker did not start within 30s: ${err}`)), 30_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /broker listening on [^\s]+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        res(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`broker exited with ${code} before listening: ${err}`));
    });
  });
  const exited = new Promise<void>((res) => (child.exitCode !== null || child.signalCode !== null ? res() : child.once('exit', () => res())));
  let removed = false;
  const self: BrokerProcess = {
    address: `127.0.0.1:${port}`,
    port,
    dataDir,
    child,
    pid: child.pid as number,
    stderr: () => err,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
      if (own && !removed) {
        removed = true;
        fs.rmSync(dataDir, { recursive: true, force: true });
      }
    },
    async restart() {
      await self.kill();
      const next = await startBrokerProcess({ dataDir, port, args: opts.args });
      // The data dir stays owned by whoever created it first.
      const stopNext = next.stop.bind(next);
      next.stop = async () => {
        await stopNext();
        if (own) fs.rmSync(dataDir, { recursive: true, force: true });
      };
      return next;
    },
  };
  return self;
}

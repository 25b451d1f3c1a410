// Runs Debian's influxd (1.x) on a private data dir and loopback ports: the one launcher for `nettally up`, tests and benches.
import { spawn, type ChildProcess } from 'child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'fs';
import { createServer } from 'net';
import { join } from 'path';
import { NettallyError } from '../lib/errors';
import type { Logger } from '../lib/log';

export interface LocalInfluxOptions {
  /** Where meta, data, wal, the generated config and influxd.log live. */
  dataDir: string;
  /** HTTP port on 127.0.0.1 (0 picks a free one). */
  httpPort: number;
  /** RPC (backup) port on 127.0.0.1 (0 picks a free one). */
  rpcPort: number;
  /** Database to create once the server answers. */
  database?: string;
  binary?: string;
  startTimeoutMs?: number;
  /**
   * Own process group: a Ctrl-C in the terminal (SIGINT to the foreground group) then does not reach influxd, so
   * `nettally up` can stop it last, after the consumer's final write.
   */
  detached?: boolean;
  /** SIGTERM to influxd when its parent dies (setpriv --pdeathsig), so a killed `nettally up` leaves no orphan. */
  dieWithParent?: boolean;
  logger: Logger;
}

export interface LocalInflux {
  url: string;
  httpPort: number;
  rpcPort: number;
  pid: number;
  /** SIGTERM, then SIGKILL after a grace period; resolves once the process is gone. */
  close(): Promise<void>;
  /** SIGKILL without waiting for a clean shutdown (failure tests). */
  kill(): Promise<void>;
  /** Synchronous SIGKILL for process-exit handlers (no waiting possible there). */
  killSync(): void;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

async function ping(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/ping`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status === 204;
  } catch {
    return false;
  }
}

function tail(path: string): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-8).join('\n');
  } catch {
    return '';
  }
}

/** Starts influxd, waits for /ping, creates the database; fails with the tail of influxd.log if it does not come up. */
export async function startLocalInflux(opts: LocalInfluxOptions): Promise<LocalInflux> {
  const httpPort = opts.httpPort || (await freePort());
  const rpcPort = opts.rpcPort || (await freePort());
  const dir = opts.dataDir;
  for (const sub of ['meta', 'data', 'wal']) mkdirSync(join(dir, sub), { recursive: true });
  const configPath = join(dir, 'influxdb.conf');
  writeFileSync(
    configPath,
    [
      'reporting-disabled = true',
      `bind-address = "127.0.0.1:${rpcPort}"`,
      '[meta]',
      `  dir = "${join(dir, 'meta')}"`,
      '[data]',
      `  dir = "${join(dir, 'data')}"`,
      `  wal-dir = "${join(dir, 'wal')}"`,
      '  wal-fsync-delay = "0s"',
      '  query-log-enabled = false',
      '[http]',
      '  enabled = true',
      `  bind-address = "127.0.0.1:${httpPort}"`,
      '  log-enabled = false',
      '[logging]',
      '  level = "warn"',
      '[monitor]',
      '  store-enabled = false',
      '[continuous_queries]',
      '  enabled = false',
      '[subscriber]',
      '  enabled = false',
      '',
    ].join('\n'),
  );
  const logPath = join(dir, 'influxd.log');
  const logFd = openSync(logPath, 'a');
  const binary = opts.binary ?? 'influxd';
  const argv = [binary, 'run', '-config', configPath];
  if (opts.dieWithParent) argv.unshift('setpriv', '--pdeathsig', 'SIGTERM', '--');
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', logFd, logFd], detached: opts.detached ?? false });
  closeSync(logFd);
  const url = `http://127.0.0.1:${httpPort}`;
  const killSync = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const kill = async (): Promise<void> => {
    killSync();
    await exited(child);
  };
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const timeoutMs = opts.startTimeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      const failed = await Promise.race([spawnError, new Promise<undefined>((r) => setTimeout(r, 100, undefined))]);
      if (failed) {
        throw new NettallyError('INFLUX_UNAVAILABLE', `cannot run influxd: ${failed.message}; install Debian's influxdb package (scripts/bootstrap.sh does)`);
      }
      if (child.exitCode === 127 && opts.dieWithParent) {
        // setpriv could not exec it
        throw new NettallyError('INFLUX_UNAVAILABLE', `cannot run ${binary}: ${tail(logPath).trim()}; install Debian's influxdb package (scripts/bootstrap.sh does)`);
      }
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new NettallyError('INFLUX_UNAVAILABLE', `influxd exited with ${child.exitCode ?? child.signalCode} (log ${logPath}):\n${tail(logPath)}`);
      }
      if (await ping(url)) break;
      if (Date.now() > deadline) {
        throw new NettallyError('INFLUX_UNAVAILABLE', `influxd did not answer on ${url} within ${timeoutMs} ms (log ${logPath}):\n${tail(logPath)}`);
      }
    }
    if (opts.database) {
      const res = await fetch(`${url}/query`, { method: 'POST', body: new URLSearchParams({ q: `CREATE DATABASE "${opts.database.replace(/"/g, '\\"')}"` }) });
      const body = await res.text();
      if (!res.ok) throw new NettallyError('INFLUX_UNAVAILABLE', `CREATE DATABASE ${opts.database} failed: HTTP ${res.status} ${body}`);
    }
  } catch (e) {
    await kill();
    throw e;
  }
  opts.logger.info({ url, dataDir: dir, influxd_pid: child.pid }, 'influxd ready');
  return {
    url,
    httpPort,
    rpcPort,
    pid: child.pid ?? -1,
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited(child);
      clearTimeout(timer);
    },
    kill,
    killSync,
  };
}

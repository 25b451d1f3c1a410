// The child processes of `nettally up` (broker, consumer, producer): started in their own process groups with an IPC
// channel for their typed status reports (lib/status.ts), their output kept in logs/<name>.log, stopped in order.
import { spawn, type ChildProcess } from 'child_process';
import { createWriteStream } from 'fs';
import { join, resolve } from 'path';
import { createInterface } from 'readline';
import { runtimePlan } from '../producer/runtime';
import { consumerRuntimePlan } from '../consumer/runtime';
import { NettallyError } from '../lib/errors';
import type { Logger } from '../lib/log';
import { parseStatusMessage, STATUS_CHANNEL_ENV, type DaemonName } from '../lib/status';
import { ChildStatus } from './up-status';

const CLI = resolve(__dirname, 'nettally.js');
/** setpriv (util-linux) arguments: the exec'd child gets SIGTERM when `up` dies, however it dies. */
const DIE_WITH_UP = ['--pdeathsig', 'SIGTERM', '--'];

/** The newest lines of a child's output, for the error that says why it ended: a ring, so a chatty child costs no copies. */
export class RecentLines {
  private readonly lines: string[] = [];
  private next = 0;

  constructor(private readonly capacity: number) {}

  get size(): number {
    return this.lines.length;
  }

  push(line: string): void {
    if (this.lines.length < this.capacity) this.lines.push(line);
    else this.lines[this.next] = line;
    this.next = (this.next + 1) % this.capacity;
  }

  /** The newest `n` lines (fewer if fewer came), oldest first. */
  last(n: number): string[] {
    const k = Math.min(n, this.lines.length);
    const out: string[] = [];
    for (let i = k; i > 0; i--) out.push(this.lines[(this.next - i + this.capacity) % this.capacity]);
    return out;
  }
}

export interface Child<D extends DaemonName = DaemonName> {
  name: D;
  proc: ChildProcess;
  /** What it reported; `ready` once it said it does its job (broker listening, producer attached, consumer loaded). */
  status: ChildStatus<D>;
  lastLines: RecentLines;
  exited: Promise<number | null>;
  /** Resolves with the error of a failure report: the child gives up (and exits next). */
  failed: Promise<string>;
}

/** A child of any daemon (Child<DaemonName> would not take a Child<'broker'>: a report type depends on its daemon). */
export type AnyChild = { [D in DaemonName]: Child<D> }[DaemonName];

function gone(child: AnyChild): boolean {
  return child.proc.exitCode !== null || child.proc.signalCode !== null;
}

/** The error for a child that failed or exited: its reported error if any, its log file, its last log lines. */
function childFailed(child: AnyChild, what: string, logDir: string): NettallyError {
  const how = gone(child) ? `exited with code ${child.proc.exitCode ?? child.proc.signalCode}` : 'failed';
  const why = child.status.failure !== undefined ? ` (${child.status.failure})` : '';
  const lines = child.lastLines.size ? `; its last log lines:\n${child.lastLines.last(8).join('\n')}` : '';
  return new NettallyError('INTERNAL', `${child.name} ${how} ${what}${why} — see ${join(logDir, `${child.name}.log`)}${lines}`);
}

/** Waits until `check()` holds; throws if the child fails or exits first, or after timeoutMs. False when aborted. */
export async function waitFor(what: string, check: () => boolean, child: AnyChild, timeoutMs: number, signal: AbortSignal, logDir: string): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (signal.aborted) return false;
    if (gone(child) || child.status.failure !== undefined) {
      if (child.status.failure === undefined) await child.exited; // its failure report may still be on the way
      throw childFailed(child, `before ${what}`, logDir);
    }
    if (Date.now() > deadline) throw new NettallyError('INTERNAL', `${child.name}: ${what} did not happen within ${timeoutMs / 1000} s (log: ${join(logDir, `${child.name}.log`)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/**
 * Starts `nettally <args>` in its own process group: a terminal's Ctrl-C reaches only `up`, which then stops the
 * children in order (producer before broker). Its status reports arrive on the IPC channel (fd 3, kept by setpriv's
 * exec), its lines go to logs/<name>.log, and its warnings and errors are repeated in up's log.
 * Through `setpriv --pdeathsig`: if `up` itself is killed (SIGKILL, OOM) the child gets SIGTERM and stops cleanly
 * instead of living on as an orphan that holds the ports.
 */
export function startChild<D extends DaemonName>(name: D, args: string[], env: NodeJS.ProcessEnv, logDir: string, logger: Logger): Child<D> {
  // The producer's and the consumer's memory settings (producer/runtime.ts, consumer/runtime.ts) given here: they
  // cannot re-execute themselves without losing the IPC channel.
  const plan = name === 'producer' ? runtimePlan([], env) : name === 'consumer' ? consumerRuntimePlan([], env) : null;
  const proc = spawn('setpriv', [...DIE_WITH_UP, process.execPath, ...(plan?.execArgv ?? []), CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: { ...env, ...plan?.env, [STATUS_CHANNEL_ENV]: 'ipc' },
    detached: true,
  });
  const log = createWriteStream(join(logDir, `${name}.log`), { flags: 'a' });
  let onFailed: (error: string) => void = () => undefined;
  const child: Child<D> = {
    name,
    proc,
    status: new ChildStatus(name),
    lastLines: new RecentLines(20),
    exited: new Promise((r) =>
      proc.once('exit', (code, signal) => {
        // Its last report and log lines may still be in the channel and pipes: read them (bounded: a grandchild
        // could hold a pipe open) before anyone tells why it ended.
        const done = (): void => r(code ?? (signal ? 128 : null));
        const timer = setTimeout(done, 1000);
        proc.once('close', () => (clearTimeout(timer), done()));
      }),
    ),
    failed: new Promise((r) => (onFailed = r)),
  };
  proc.once('error', (e) => logger.error({ component: name, err: e.message }, `cannot start ${name}`));
  proc.on('message', (msg) => {
    const report = parseStatusMessage(msg);
    if (!report) return;
    child.status.update(report);
    if (child.status.failure !== undefined) onFailed(child.status.failure);
  });
  for (const stream of [proc.stdout, proc.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream }).on('line', (line) => {
      log.write(line + '\n');
      child.lastLines.push(line);
      // Only relayed, never interpreted: a warning or error of the child is shown in up's log too.
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch {
        return;
      }
      if (typeof rec !== 'object' || rec === null) return;
      const { level, msg, err } = rec as { level?: unknown; msg?: unknown; err?: unknown };
      if (typeof level === 'number' && level >= 40) logger[level >= 50 ? 'error' : 'warn']({ component: name, err }, `${name}: ${String(msg)}`);
    });
  }
  proc.once('exit', () => log.end());
  logger.info({ component: name, child_pid: proc.pid, log: join(logDir, `${name}.log`) }, `started ${name}`);
  return child;
}

export async function stopChild(child: AnyChild, graceMs: number, logger: Logger): Promise<void> {
  if (gone(child)) return;
  child.proc.kill('SIGTERM');
  const timer = setTimeout(() => {
    logger.warn({ component: child.name }, `${child.name} did not stop within ${graceMs / 1000} s; killing it`);
    child.proc.kill('SIGKILL');
  }, graceMs);
  await child.exited;
  clearTimeout(timer);
}

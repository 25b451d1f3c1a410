// Test helper: `nettally up` started the way a terminal starts it (its own process group, which gets the
// Ctrl-C), with its output collected and a kill() for cleanup when a test fails.
import { execFileSync, spawn, type ChildProcess } from 'child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join, resolve } from 'path';

const BIN = resolve(__dirname, '../../dist/bin/nettally.js');

export interface UpProcess {
  child: ChildProcess;
  readonly out: string;
  readonly err: string;
  exited: Promise<number | null>;
  /** The tail of stdout and stderr, for failure messages. */
  logs(): string;
  /** SIGKILL to the whole group if it is still running; resolves when it is gone. */
  kill(): Promise<void>;
}

/** Spawns `nettally up <args>`, optionally behind a wrapper command such as `nsenter --mount=…`. */
export function spawnUp(args: string[], opts: { env?: NodeJS.ProcessEnv; wrapper?: string[] } = {}): UpProcess {
  const argv = [...(opts.wrapper ?? []), process.execPath, BIN, 'up', ...args];
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: opts.env ?? process.env });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return upProcess(child, () => out, () => err);
}

/**
 * `nettally up <args> 2>&1 | cat`: up's stdout and stderr go into one real pipe (a FIFO, so pipe(7) semantics,
 * not the socketpair Node uses for 'pipe') read by a separate `cat`, whose output is `out`. Kill `reader` to break
 * the pipe under a running up, the way Ctrl-C kills `tee` in `nettally up | tee up.log`.
 */
export async function spawnUpIntoPipe(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<UpProcess & { reader: ChildProcess }> {
  const dir = mkdtempSync(join(tmpdir(), 'nettally-up-pipe-'));
  const fifo = join(dir, 'out');
  execFileSync('mkfifo', [fifo]);
  const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
  let out = '';
  reader.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  // Opening the write end without a reader fails (ENXIO) instead of blocking: wait for cat to open its end.
  let fd = -1;
  const deadline = Date.now() + 30_000;
  try {
    while (fd < 0) {
      try {
        fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENXIO' || reader.exitCode !== null || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const child = spawn(process.execPath, [BIN, 'up', ...args], { stdio: ['ignore', fd, fd], detached: true, env: opts.env ?? process.env });
    // Object.assign, not a spread: `out` is a getter over the growing output.
    return Object.assign(upProcess(child, () => out, () => ''), { reader });
  } finally {
    // Only up holds the write end from here on, and only cat the read end: cat dying leaves the pipe without readers.
    if (fd >= 0) closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
}

function upProcess(child: ChildProcess, out: () => string, err: () => string): UpProcess {
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    get out() {
      return out();
    },
    get err() {
      return err();
    },
    exited,
    logs: () => `stdout:\n${out().slice(-3000)}\nstderr:\n${err().slice(-3000)}`,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        process.kill(-(child.pid as number), 'SIGKILL');
        await exited;
      }
    },
  };
}

/** Resolves once up printed its ready line; throws with its logs if it exits or takes longer than timeoutMs. */
export async function waitReady(up: UpProcess, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!up.out.includes('nettally up: ready')) {
    if (up.child.exitCode !== null) throw new Error(`up exited ${up.child.exitCode} before ready\n${up.logs()}`);
    if (Date.now() > deadline) throw new Error(`up not ready within ${timeoutMs} ms\n${up.logs()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** One shell word: `script -c` takes a command line. */
function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * `nettally <args>` on a real pseudo-terminal (util-linux `script`): stdout and stderr are the terminal, `out` is
 * what the terminal received (\n arrives as \r\n), and ctrlC() types Ctrl-C, which the terminal turns into SIGINT
 * for its foreground process group, as when a user presses it.
 */
export function spawnInTerminal(args: string[], opts: { env?: NodeJS.ProcessEnv; columns?: number } = {}): UpProcess & { ctrlC(): void } {
  // exec: the command itself, not a shell, is the terminal's foreground process.
  const command = `${opts.columns ? `stty cols ${opts.columns}; ` : ''}exec ${[process.execPath, BIN, ...args].map(shellQuote).join(' ')}`;
  const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: opts.env ?? process.env });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return Object.assign(upProcess(child, () => out, () => ''), { ctrlC: () => void child.stdin?.write('\x03') });
}

// Test helper: `nettally up` started the way a terminal starts it (its own process group, which gets the
// Ctrl-C), with its output collected and a kill() for cleanup when a test fails.
import { spawn, type ChildProcess } from 'child_process';
import { resolve } from 'path';

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
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    get out() {
      return out;
    },
    get err() {
      return err;
    },
    exited,
    logs: () => `stdout:\n${out.slice(-3000)}\nstderr:\n${err.slice(-3000)}`,
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

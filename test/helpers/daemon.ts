// Test helper: a nettally daemon started as a user (or `up`) starts it, seen as the kernel sees it — for the tests of
// the runtime settings a daemon applies to its own process (test/producer-runtime, test/consumer-runtime).
import { spawn, type ChildProcess } from 'child_process';
import { readFileSync } from 'fs';
import { join } from 'path';

const BIN = join(__dirname, '..', '..', 'dist/bin/nettally.js');

/** The process's argv and environment as the kernel has them (/proc/<pid>/cmdline and environ). */
export function procView(pid: number): { argv: string[]; env: Map<string, string> } {
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  return { argv, env: new Map(environ.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])) };
}

/**
 * Spawns `nettally <args>` (with an IPC channel if `ipc`) and waits up to 60 s until its stderr contains `marker`;
 * `cleanups` gets a SIGKILL + wait for its exit, so it never outlives the test.
 */
export async function spawnUntil(args: string[], env: NodeJS.ProcessEnv, marker: string, cleanups: Array<() => unknown>, ipc = false): Promise<{ child: ChildProcess; stderr: () => string }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe', ...(ipc ? (['ipc'] as const) : [])], env });
  const exited = new Promise((r) => child.once('exit', r));
  cleanups.push(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const until = Date.now() + 60_000;
  while (!err.includes(marker) && child.exitCode === null && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  expect(err).toContain(marker);
  return { child, stderr: () => err };
}

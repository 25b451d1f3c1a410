// Scenario: `nettally producer` runs with its memory settings (producer/runtime.ts) however it is started: it
// re-executes itself once, in place (the pid its starter knows stays the daemon's), keeps its stdio, and leaves
// settings the user gave alone. Ground truth: the kernel's view of the running process (/proc/<pid>/cmdline, environ).
import { procView, spawnUntil } from './helpers/daemon';
import { mkdtempSync, readFileSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { startProducerProcess } from './helpers/producer';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Seen {
  argv: string[];
  env: Map<string, string>;
  stderr: string;
}

/** Starts a producer (no Kafka reachable: it spools) with `env`, waits until it streams, reads /proc, stops it. */
async function runProducer(env: NodeJS.ProcessEnv): Promise<Seen> {
  const dir = mkdtempSync(join(tmpdir(), 'nettally-prt-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const p = startProducerProcess(['--brokers', '127.0.0.1:1', '--state-dir', join(dir, 'state'), '--pin-dir', 'none', '--shutdown-timeout', '1s'], env);
  cleanups.push(async () => {
    p.child.kill('SIGKILL');
    await p.exited;
  });
  // Its log lines arrive on the pipe its starter gave it: stdio survived the re-execution.
  await p.ready;
  const seen = { ...procView(p.child.pid as number), stderr: p.stderr() };
  p.child.kill('SIGTERM');
  expect(await p.exited).toBe(0);
  return seen;
}

test('the daemon runs with its V8 and malloc settings, in the process its starter started', async () => {
  const env: NodeJS.ProcessEnv = { MALLOC_ARENA_MAX: undefined, NODE_OPTIONS: undefined, NETTALLY_NODE_TUNING: undefined, NETTALLY_NODE_TUNED: undefined };
  const seen = await runProducer(env);
  expect(seen.argv).toEqual(expect.arrayContaining(['--max-semi-space-size=2', '--max-old-space-size=256', '--single-threaded-gc']));
  // Its own arguments follow, unchanged.
  expect(seen.argv.slice(seen.argv.indexOf('producer'))).toEqual(['producer', '--brokers', '127.0.0.1:1', '--state-dir', expect.any(String), '--pin-dir', 'none', '--shutdown-timeout', '1s']);
  expect(seen.env.get('MALLOC_ARENA_MAX')).toBe('2');
  expect(seen.env.get('MALLOC_MMAP_THRESHOLD_')).toBe('131072');
  expect(seen.env.get('MALLOC_TRIM_THRESHOLD_')).toBe('262144');
  expect(seen.stderr).not.toMatch(/warning: could not restart/);
}, 120_000);

test('settings the user gave are kept; NETTALLY_NODE_TUNING=0 runs on Node defaults', async () => {
  const given = await runProducer({ MALLOC_ARENA_MAX: '4', NODE_OPTIONS: '--max_old_space_size=512', NETTALLY_NODE_TUNED: undefined, NETTALLY_NODE_TUNING: undefined });
  expect(given.env.get('MALLOC_ARENA_MAX')).toBe('4');
  expect(given.argv).toContain('--max-semi-space-size=2');
  expect(given.argv.some((a) => a.startsWith('--max-old-space-size'))).toBe(false);

  const off = await runProducer({ MALLOC_ARENA_MAX: undefined, NODE_OPTIONS: undefined, NETTALLY_NODE_TUNING: '0', NETTALLY_NODE_TUNED: undefined });
  expect(off.argv.some((a) => a.startsWith('--max-'))).toBe(false);
  expect(off.env.has('MALLOC_ARENA_MAX')).toBe(false);
}, 120_000);

test('over a Node IPC channel (as `up` starts it) it does not re-execute, which would lose the channel, and says so', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nettally-prt-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const env: NodeJS.ProcessEnv = { ...process.env, MALLOC_ARENA_MAX: undefined, NODE_OPTIONS: undefined, NETTALLY_NODE_TUNING: undefined, NETTALLY_NODE_TUNED: undefined };
  const { child, stderr } = await spawnUntil(['producer', '--brokers', '127.0.0.1:1', '--state-dir', join(dir, 'state'), '--pin-dir', 'none'], env, 'streaming live records', cleanups, true);
  const err = stderr();
  expect(err).toMatch(/IPC channel: not restarting .*--max-semi-space-size=2/);
  expect(child.connected).toBe(true); // the channel is still there
  expect(readFileSync(`/proc/${child.pid}/cmdline`, 'utf8')).not.toContain('--max-semi-space-size');
}, 120_000);

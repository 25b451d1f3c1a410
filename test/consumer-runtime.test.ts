// Scenario: `nettally consumer` runs with its memory settings (consumer/runtime.ts, applied by lib/runtime.ts) however
// it is started: re-executed once in place (same pid), user-given settings kept, NETTALLY_NODE_TUNING=0 honoured.
// Ground truth: the kernel's view of the running process (/proc/<pid>/cmdline, environ). No Kafka is needed: the
// settings apply before the consumer connects (it is pointed at a closed port and killed once it logs).
import { procView, spawnUntil } from './helpers/daemon';
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Starts a consumer with `env`, waits for its first log line (from the re-executed consumer itself), reads /proc. */
async function runConsumer(env: NodeJS.ProcessEnv): Promise<{ argv: string[]; env: Map<string, string>; stderr: string }> {
  const { child, stderr } = await spawnUntil(['consumer', '--brokers', '127.0.0.1:1', '--influx-url', 'http://127.0.0.1:1', '--status-interval', '0'],
    { ...process.env, MALLOC_ARENA_MAX: undefined, NODE_OPTIONS: undefined, NETTALLY_NODE_TUNING: undefined, NETTALLY_NODE_TUNED: undefined, LOG_LEVEL: 'info', ...env }, '"level"', cleanups);
  return { ...procView(child.pid as number), stderr: stderr() };
}

test('the consumer runs with its V8 and malloc settings, in the process its starter started', async () => {
  const seen = await runConsumer({});
  expect(seen.argv).toContain('--max-semi-space-size=4');
  expect(seen.argv.slice(seen.argv.indexOf('consumer'))).toEqual(['consumer', '--brokers', '127.0.0.1:1', '--influx-url', 'http://127.0.0.1:1', '--status-interval', '0']);
  expect(seen.env.get('MALLOC_ARENA_MAX')).toBe('2');
  expect(seen.stderr).not.toMatch(/warning: could not restart/);
}, 120_000);

test('consumer: settings the user gave are kept; NETTALLY_NODE_TUNING=0 runs on Node defaults', async () => {
  const given = await runConsumer({ MALLOC_ARENA_MAX: '4', NODE_OPTIONS: '--max_semi_space_size=8' });
  expect(given.env.get('MALLOC_ARENA_MAX')).toBe('4');
  expect(given.argv.some((a) => a.startsWith('--max-semi-space-size'))).toBe(false);
  const off = await runConsumer({ NETTALLY_NODE_TUNING: '0' });
  expect(off.argv.some((a) => a.startsWith('--max-'))).toBe(false);
  expect(off.env.has('MALLOC_ARENA_MAX')).toBe(false);
}, 120_000);

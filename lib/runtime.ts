// Runtime settings a nettally daemon applies to its own process (producer/runtime.ts, consumer/runtime.ts): Node's
// defaults are sized for a server with memory to spare. The daemon re-executes itself once (execve: same pid, no
// parent left behind) so `up`, systemd units and hand starts all get them; a setting the user gave (NODE_OPTIONS,
// node flags, MALLOC_* variables) is left alone.

/** Set to `0` to run on Node's defaults (benchmarks compare both; an operator debugging memory may want it). */
export const TUNING_ENV = 'NETTALLY_NODE_TUNING';
/** Set on the re-executed process: never re-execute twice, whatever the checks below say. */
const REEXEC_ENV = 'NETTALLY_NODE_TUNED';

/** One daemon's settings (each one's README and bench/RESULTS.md say why these values). */
export interface RuntimeSettings {
  daemon: string;
  /** Node/V8 flags; a null value is a boolean flag, added bare (the user's `--no-…` spelling wins). */
  v8Flags: ReadonlyArray<readonly [flag: string, value: string | null]>;
  /** glibc malloc settings (environment: MALLOC_ARENA_MAX and the like), each added unless the user set it. */
  mallocEnv: Readonly<Record<string, string>>;
}

export interface RuntimePlan {
  /** Node flags to add (those the user did not give). */
  execArgv: string[];
  /** Environment variables to add. */
  env: Record<string, string>;
}

/** What the process must add to its own start, or null when nothing (already applied, given, or off). */
export function runtimePlanFor(s: RuntimeSettings, execArgv: readonly string[], env: NodeJS.ProcessEnv): RuntimePlan | null {
  if (env[REEXEC_ENV] !== undefined || env[TUNING_ENV] === '0') return null;
  const given = [...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)];
  // V8 accepts both spellings (--max-semi-space-size and --max_semi_space_size), and --no-X for a boolean X.
  const has = (flag: string): boolean => given.some((a) => [flag, `--no-${flag.slice(2)}`].includes(a.replace(/_/g, '-').split('=')[0]));
  const plan: RuntimePlan = { execArgv: s.v8Flags.filter(([f]) => !has(f)).map(([f, v]) => (v === null ? f : `${f}=${v}`)), env: {} };
  for (const [k, v] of Object.entries(s.mallocEnv)) if (env[k] === undefined) plan.env[k] = v;
  return plan.execArgv.length || Object.keys(plan.env).length ? plan : null;
}

/**
 * Re-executes this process with the plan applied, or returns (nothing to do, or exec failed: then `warn` says why
 * and the daemon runs on Node's defaults — more memory, same results). Call before anything else starts.
 */
export function applyRuntimePlanFor(s: RuntimeSettings, load: () => { exec(path: string, argv: string[], env: string[]): never }, warn: (msg: string) => void): void {
  const plan = runtimePlanFor(s, process.execArgv, process.env);
  if (!plan) return;
  if (process.channel !== undefined) {
    // Started with an IPC channel (`nettally up` reports status over one): Node marks it close-on-exec, so a
    // re-executed daemon would lose it. `up` passes the settings itself (bin/up-children.ts); anyone else is told.
    warn(`started with an IPC channel: not restarting with the ${s.daemon}'s memory settings; pass ${plan.execArgv.join(' ')} to node and set ${Object.keys(plan.env).map((k) => `${k}=${plan.env[k]}`).join(' ')} yourself`);
    return;
  }
  const env = { ...process.env, ...plan.env, [REEXEC_ENV]: '1' };
  try {
    load().exec(process.execPath, [process.execPath, ...process.execArgv, ...plan.execArgv, ...process.argv.slice(1)],
      Object.entries(env).map(([k, v]) => `${k}=${v ?? ''}`));
  } catch (e) {
    warn(`could not restart with the ${s.daemon}'s memory settings (${(e as Error).message}); running on Node's defaults (set ${TUNING_ENV}=0 to silence this)`);
  }
}

/**
 * Where the process's memory is, MiB (one decimal): resident in all, V8's heap (used and reserved), memory outside
 * the heap that V8 objects hold (`external`, of which `array_buffers` are Buffers). rss minus heap_total minus
 * external is native: code, thread stacks, malloc arenas (zlib, libuv), the rest.
 */
export function memoryMiB(): { rss: number; heap_used: number; heap_total: number; external: number; array_buffers: number } {
  const m = process.memoryUsage();
  const mib = (b: number): number => Math.round(b / 104857.6) / 10;
  return { rss: mib(m.rss), heap_used: mib(m.heapUsed), heap_total: mib(m.heapTotal), external: mib(m.external), array_buffers: mib(m.arrayBuffers) };
}

// The runtime settings the producer daemon runs with (Node's own defaults are sized for a server with memory to
// spare; the producer runs on every host, so its footprint is multiplied by the fleet). `nettally producer` applies
// them itself — by re-executing itself once (execve: same pid, no parent left behind) — so `up`, systemd units and
// hand starts all get them; a setting the user gave (NODE_OPTIONS, node flags, MALLOC_* variables) is left alone.
import type { NativeAddon } from '../native/index';

/** Set to `0` to run on Node's defaults (benchmarks compare both; an operator debugging memory may want it). */
export const TUNING_ENV = 'NETTALLY_NODE_TUNING';
/** Set on the re-executed process: never re-execute twice, whatever the checks below say. */
const REEXEC_ENV = 'NETTALLY_NODE_TUNED';

/**
 * Each knob, and why (measured in bench/RESULTS.md, "Issue 13, producer memory"):
 * - `--max-semi-space-size=2` (MiB): V8's young generation grows to 3 × 16 MiB under allocation pressure (the
 *   producer allocates a record object per kernel record) and keeps it; 2 MiB semi-spaces cost a few more
 *   scavenges (cheap: the survivors are few) and keep ~40 MiB less resident.
 * - `--max-old-space-size=256` (MiB): a safety bound, not a working size (the old space holds ~10–40 MiB under
 *   churn): a leak ends in an out-of-memory exit that the supervisor restarts from the spool (nothing is lost:
 *   records are spooled before they are sent, kernel counters are cumulative), instead of growing on every host.
 * - `--single-threaded-gc`: V8 runs its scavenges and marking on its worker threads too; on a host whose cores are
 *   busy with its own work that parallelism costs more CPU than it saves (measured under connection churn: the four
 *   V8 workers took ~40% of the producer's CPU, ~5% with this flag; CPU per connection ~0.07–0.09 → ~0.06 CPU-ms).
 *   The producer is one thread of work: GC pauses on it only delay records, the kernel keeps counting meanwhile.
 * - `MALLOC_ARENA_MAX=2`: glibc gives each thread that mallocs (the drain thread, libuv's pool, V8's workers) an
 *   arena of its own, up to 8 × cores, each keeping freed memory; two arenas keep it to what the process uses.
 * - `MALLOC_MMAP_THRESHOLD_=131072`, `MALLOC_TRIM_THRESHOLD_=262144`: glibc raises its mmap threshold to the size
 *   of every large block freed, so after the first drain batch (256 KiB) and Kafka request (~1 MiB) those went to
 *   the brk heap, which fragments and never shrinks (~30–45 MiB of it under churn); a fixed threshold keeps large
 *   blocks mmapped and returned on free (brk ~12–17 MiB; peak RSS ~10 MiB lower, bench/RESULTS.md).
 */
export const V8_FLAGS: ReadonlyArray<readonly [flag: string, value: string | null]> = [
  ['--max-semi-space-size', '2'],
  ['--max-old-space-size', '256'],
  ['--single-threaded-gc', null], // a boolean flag: added bare; the user's --no-single-threaded-gc wins
];
export const MALLOC_ARENA_MAX = '2';
/** glibc malloc settings (environment), each added unless the user set it. */
export const MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX,
  MALLOC_MMAP_THRESHOLD_: '131072',
  MALLOC_TRIM_THRESHOLD_: '262144',
};

export interface RuntimePlan {
  /** Node flags to add (those the user did not give). */
  execArgv: string[];
  /** Environment variables to add. */
  env: Record<string, string>;
}

/** What the producer process must add to its own start, or null when nothing (already applied, given, or off). */
export function runtimePlan(execArgv: readonly string[], env: NodeJS.ProcessEnv): RuntimePlan | null {
  if (env[REEXEC_ENV] !== undefined || env[TUNING_ENV] === '0') return null;
  const given = [...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)];
  // V8 accepts both spellings (--max-semi-space-size and --max_semi_space_size), and --no-X for a boolean X.
  const has = (flag: string): boolean => given.some((a) => [flag, `--no-${flag.slice(2)}`].includes(a.replace(/_/g, '-').split('=')[0]));
  const plan: RuntimePlan = { execArgv: V8_FLAGS.filter(([f]) => !has(f)).map(([f, v]) => (v === null ? f : `${f}=${v}`)), env: {} };
  for (const [k, v] of Object.entries(MALLOC_ENV)) if (env[k] === undefined) plan.env[k] = v;
  return plan.execArgv.length || Object.keys(plan.env).length ? plan : null;
}

/**
 * Re-executes this process with the plan applied, or returns (nothing to do, or exec failed: then `warn` says why
 * and the producer runs on Node's defaults — more memory, same records). Call before anything else starts.
 */
export function applyRuntimePlan(load: () => Pick<NativeAddon, 'exec'>, warn: (msg: string) => void): void {
  const plan = runtimePlan(process.execArgv, process.env);
  if (!plan) return;
  if (process.channel !== undefined) {
    // Started with an IPC channel (`nettally up` reports status over one): Node marks it close-on-exec, so a
    // re-executed producer would lose it. `up` passes the settings itself (bin/up-children.ts); anyone else is told.
    warn(`started with an IPC channel: not restarting with the producer's memory settings; pass ${plan.execArgv.join(' ')} to node and set ${Object.keys(plan.env).map((k) => `${k}=${plan.env[k]}`).join(' ')} yourself`);
    return;
  }
  const env = { ...process.env, ...plan.env, [REEXEC_ENV]: '1' };
  try {
    load().exec(process.execPath, [process.execPath, ...process.execArgv, ...plan.execArgv, ...process.argv.slice(1)],
      Object.entries(env).map(([k, v]) => `${k}=${v ?? ''}`));
  } catch (e) {
    warn(`could not restart with the producer's memory settings (${(e as Error).message}); running on Node's defaults (set ${TUNING_ENV}=0 to silence this)`);
  }
}

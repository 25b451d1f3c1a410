// The runtime settings the producer daemon runs with (Node's own defaults are sized for a server with memory to
// spare; the producer runs on every host, so its footprint is multiplied by the fleet). `nettally producer` applies
// them itself — by re-executing itself once (execve: same pid, no parent left behind) — so `up`, systemd units and
// hand starts all get them; a setting the user gave (NODE_OPTIONS, node flags, MALLOC_* variables) is left alone.
import type { NativeAddon } from '../native/index';
import { TUNING_ENV, applyRuntimePlanFor, runtimePlanFor, type RuntimePlan, type RuntimeSettings } from '../lib/runtime';

export { TUNING_ENV, type RuntimePlan };

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

const SETTINGS: RuntimeSettings = { daemon: 'producer', v8Flags: V8_FLAGS, mallocEnv: MALLOC_ENV };

/** What the producer process must add to its own start, or null when nothing (already applied, given, or off). */
export function runtimePlan(execArgv: readonly string[], env: NodeJS.ProcessEnv): RuntimePlan | null {
  return runtimePlanFor(SETTINGS, execArgv, env);
}

/** Re-executes the producer with its settings (lib/runtime.ts applyRuntimePlanFor). */
export function applyRuntimePlan(load: () => Pick<NativeAddon, 'exec'>, warn: (msg: string) => void): void {
  applyRuntimePlanFor(SETTINGS, load, warn);
}

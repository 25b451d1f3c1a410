// The runtime settings the producer daemon runs with (Node's own defaults are sized for a server with memory to
// spare; the producer runs on every host, so its footprint is multiplied by the fleet). `nettally producer` applies
// them itself — by re-executing itself once (execve: same pid, no parent left behind) — so `up`, systemd units and
// hand starts all get them; a setting the user gave (NODE_OPTIONS, node flags, MALLOC_ARENA_MAX) is left alone.
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
 * - `MALLOC_ARENA_MAX=2`: glibc gives each thread that mallocs (the drain thread, libuv's pool, V8's workers) an
 *   arena of its own, up to 8 × cores, each keeping freed memory; two arenas keep it to what the process uses.
 */
export const V8_FLAGS: ReadonlyArray<readonly [flag: string, value: string]> = [
  ['--max-semi-space-size', '2'],
  ['--max-old-space-size', '256'],
];
export const MALLOC_ARENA_MAX = '2';

const SETTINGS: RuntimeSettings = { daemon: 'producer', v8Flags: V8_FLAGS, mallocArenaMax: MALLOC_ARENA_MAX };

/** What the producer process must add to its own start, or null when nothing (already applied, given, or off). */
export function runtimePlan(execArgv: readonly string[], env: NodeJS.ProcessEnv): RuntimePlan | null {
  return runtimePlanFor(SETTINGS, execArgv, env);
}

/** Re-executes the producer with its settings (lib/runtime.ts applyRuntimePlanFor). */
export function applyRuntimePlan(load: () => Pick<NativeAddon, 'exec'>, warn: (msg: string) => void): void {
  applyRuntimePlanFor(SETTINGS, load, warn);
}

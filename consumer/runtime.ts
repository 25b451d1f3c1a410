// The runtime settings the consumer daemon runs with (lib/runtime.ts applies them: `nettally consumer` re-executes
// itself once unless they are in force, given by the user, or NETTALLY_NODE_TUNING=0).
import type { NativeAddon } from '../native/index';
import { applyRuntimePlanFor, runtimePlanFor, type RuntimePlan, type RuntimeSettings } from '../lib/runtime';

/**
 * Each knob, and why (measured in bench/RESULTS.md, "Issue 12, consumer memory"):
 * - `--max-semi-space-size=4` (MiB): the consumer allocates a decoded record per event; V8 grows the young generation
 *   to 3 × 16 MiB under that pressure and keeps it resident. 4 MiB semi-spaces keep most of that memory free at a
 *   small cost in scavenges (the survivors are few: records die within their batch).
 * - `MALLOC_ARENA_MAX=2`: glibc gives each thread that mallocs (libuv's pool gzips the snapshots, V8's workers) an
 *   arena of its own, up to 8 × cores, each keeping freed memory; two arenas keep it to what the process uses.
 * No old-space bound: a consumer's state grows with the live connections of its partitions (bench/RESULTS.md has
 *   the size per 100k), a bound would turn a large fleet into a crash loop; size the machine with the README table.
 */
export const CONSUMER_RUNTIME: RuntimeSettings = { daemon: 'consumer', v8Flags: [['--max-semi-space-size', '4']], mallocEnv: { MALLOC_ARENA_MAX: '2' } };

/** What the consumer process must add to its own start, or null when nothing (already applied, given, or off). */
export function consumerRuntimePlan(execArgv: readonly string[], env: NodeJS.ProcessEnv): RuntimePlan | null {
  return runtimePlanFor(CONSUMER_RUNTIME, execArgv, env);
}

/** Re-executes the consumer with its settings (see lib/runtime.ts). */
export function applyConsumerRuntime(load: () => Pick<NativeAddon, 'exec'>, warn: (msg: string) => void): void {
  applyRuntimePlanFor(CONSUMER_RUNTIME, load, warn);
}

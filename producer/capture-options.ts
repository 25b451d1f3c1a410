// The kernel capture's settings: one table of defaults and limits, and the one set of command-line options
// (flags, env vars) that `capture`, `top`, `producer`, `up` and every `--check` take for them. producer/capture.ts
// validates against the same table, and native/addon.cc receives every value explicitly (it has no defaults).
import type { OptionSpec, ParsedArgs } from '../lib/args';
import { execFileSync } from 'child_process';
import { existsSync } from 'fs';
import { join } from 'path';
import { configError } from '../lib/errors';

/** Defaults of producer/capture.ts's CaptureOptions, and of the flags below. */
export const CAPTURE_DEFAULTS = {
  flushIntervalMs: 5000,
  flushThresholdBytes: 16 * 1024 * 1024,
  ringBufferBytes: 4 * 1024 * 1024,
  ifaceIntervalMs: 10_000,
  maxConnections: 1 << 20,
} as const;

/** Inclusive ranges, checked by the flags and again by openCapture (API callers). */
export const CAPTURE_LIMITS = {
  // Twice per interval the refresh walks every open socket; below 100ms that is a busy loop on a loaded host.
  flushIntervalMs: { min: 100, max: 86_400_000 },
  flushThresholdBytes: { min: 1, max: Number.MAX_SAFE_INTEGER },
  // BPF ring buffers are a power of two and at least a page; above 1 GiB the kernel refuses.
  ringBufferBytes: { min: 4096, max: 2 ** 30 },
  ifaceIntervalMs: { min: 0, max: 86_400_000 },
  maxConnections: { min: 1024, max: 1 << 24 },
} as const;

/**
 * The flags of the capture settings, spread into a CommandSpec's options (with pinDirOption where pins apply).
 * Names follow the README's suffix rules: sizes end in -bytes, durations name what they time (-interval).
 */
export const CAPTURE_OPTIONS: readonly OptionSpec[] = [
  {
    name: 'flush-interval', type: 'duration', env: 'NETTALLY_FLUSH_INTERVAL', default: CAPTURE_DEFAULTS.flushIntervalMs,
    min: CAPTURE_LIMITS.flushIntervalMs.min, max: CAPTURE_LIMITS.flushIntervalMs.max,
    help: 'the kernel flushes a connection whose bytes are unflushed this long',
  },
  {
    name: 'flush-threshold-bytes', type: 'bytes', env: 'NETTALLY_FLUSH_THRESHOLD_BYTES', default: CAPTURE_DEFAULTS.flushThresholdBytes,
    min: CAPTURE_LIMITS.flushThresholdBytes.min, deprecated: { flags: ['flush-threshold'], env: ['NETTALLY_FLUSH_THRESHOLD'] },
    help: 'the kernel flushes a connection with more unflushed bytes than this',
  },
  {
    name: 'ring-buffer-bytes', type: 'bytes', env: 'NETTALLY_RING_BUFFER_BYTES', default: CAPTURE_DEFAULTS.ringBufferBytes,
    min: CAPTURE_LIMITS.ringBufferBytes.min, max: CAPTURE_LIMITS.ringBufferBytes.max, deprecated: { flags: ['ring-buffer'], env: ['NETTALLY_RING_BUFFER'] },
    help: 'kernel ring buffer size, a power of two (when full, records are dropped and counted; counters are not: the next flush carries them)',
  },
  {
    name: 'max-connections', type: 'int', env: 'NETTALLY_MAX_CONNECTIONS', default: CAPTURE_DEFAULTS.maxConnections,
    min: CAPTURE_LIMITS.maxConnections.min, max: CAPTURE_LIMITS.maxConnections.max,
    help: 'kernel connection map size: open connections plus closed ones not yet shipped (a full map leaves new connections uncounted)',
  },
  {
    name: 'iface-interval', type: 'duration', env: 'NETTALLY_IFACE_INTERVAL', default: CAPTURE_DEFAULTS.ifaceIntervalMs,
    min: CAPTURE_LIMITS.ifaceIntervalMs.min, max: CAPTURE_LIMITS.ifaceIntervalMs.max,
    help: 'per-interface wire counters are sampled this often (0 = off)',
  },
];

/** A subset by name, for a command to which only some settings apply (top reads the maps, not the records). */
export function captureOptions(...names: string[]): OptionSpec[] {
  return names.map((n) => {
    const o = CAPTURE_OPTIONS.find((c) => c.name === n);
    if (!o) throw new Error(`no capture option ${n}`);
    return o;
  });
}

/** `--pin-dir` with the given default: `none` (or unset) means no pinning. */
export function pinDirOption(defaultDir: string | undefined, help: string): OptionSpec {
  return { name: 'pin-dir', type: 'string', env: 'NETTALLY_PIN_DIR', ...(defaultDir ? { default: defaultDir } : {}), help };
}

/** The settings the capture options carry, in producer/capture.ts's CaptureOptions terms. */
export interface CaptureSettings {
  flushIntervalMs: number;
  flushThresholdBytes: number;
  ringBufferBytes: number;
  maxConnections: number;
  ifaceIntervalMs: number;
  /** undefined: no pinning. */
  pinDir?: string;
}

/** Throws CONFIG_INVALID naming the setting unless `bytes` is a power of two (the kernel's rule for ring buffers). */
export function checkRingBufferBytes(setting: string, bytes: number): void {
  if ((bytes & (bytes - 1)) !== 0 || bytes <= 0) throw configError(setting, `must be a power of two (e.g. 4MiB = 4194304), got ${bytes}`);
}

/** --ring-buffer-bytes, checked to be a power of two (the flag's type checks only the range). */
export function ringBufferBytesFrom(args: ParsedArgs): number {
  const bytes = args.num('ring-buffer-bytes');
  checkRingBufferBytes('--ring-buffer-bytes (env NETTALLY_RING_BUFFER_BYTES)', bytes);
  return bytes;
}

/**
 * Capture settings from parsed options, validated as the capture will (so a bad value fails before anything is
 * loaded, naming the flag). Commands without pin-dir get no pinning.
 */
export function captureSettingsFrom(args: ParsedArgs): CaptureSettings {
  const ringBufferBytes = ringBufferBytesFrom(args);
  const pin = 'pin-dir' in args.values ? args.optStr('pin-dir') : undefined;
  if (pin !== undefined && pin !== 'none' && !pin.startsWith('/')) {
    throw configError('--pin-dir (env NETTALLY_PIN_DIR)', `expected an absolute bpffs path or "none", got ${JSON.stringify(pin)}`);
  }
  return {
    flushIntervalMs: args.num('flush-interval'),
    flushThresholdBytes: args.num('flush-threshold-bytes'),
    ringBufferBytes,
    maxConnections: args.num('max-connections'),
    ifaceIntervalMs: args.num('iface-interval'),
    ...(pin !== undefined && pin !== 'none' ? { pinDir: pin } : {}),
  };
}

/**
 * The same settings as flags for a child `nettally producer` (up): every value explicit, so the child runs with
 * exactly what the parent parsed, whatever its own environment holds.
 */
export function captureSettingsAsFlags(s: CaptureSettings): string[] {
  return [
    '--flush-interval', `${s.flushIntervalMs}ms`,
    '--flush-threshold-bytes', String(s.flushThresholdBytes),
    '--ring-buffer-bytes', String(s.ringBufferBytes),
    '--max-connections', String(s.maxConnections),
    '--iface-interval', `${s.ifaceIntervalMs}ms`,
    ...(s.pinDir ? ['--pin-dir', s.pinDir] : []),
  ];
}

/** What a check can learn about a pin directory without attaching to it. */
export interface PinnedMaps {
  /** The connection map is pinned there (a producer ran, and may still run, with this pin directory). */
  pinned: boolean;
  /** Its size, when bpftool could tell. */
  maxConnections?: number;
}

/** Looks at `<dir>/conns` without loading anything: bpftool, when installed, tells the pinned map's size. */
function inspectPins(dir: string): PinnedMaps {
  const conns = join(dir, 'conns');
  if (!existsSync(conns)) return { pinned: false };
  try {
    const info = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show', 'pinned', conns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 })) as { max_entries?: unknown };
    return { pinned: true, ...(typeof info.max_entries === 'number' ? { maxConnections: info.max_entries } : {}) };
  } catch {
    return { pinned: true }; // no bpftool: the size is not compared
  }
}

/**
 * The settings a `--check` loads with: those of the real run, except that it never pins. It must not attach to maps
 * already pinned (a running producer may be counting into them, and a second attached set of programs would add UDP
 * and interface bytes twice while the check runs), nor leave pins behind. So it loads unpinned maps of the same
 * sizes, and compares what is pinned with what the run would need: a pinned connection map of another size is one
 * the run could not reuse, and fails the check naming --max-connections.
 */
export function checkSettings(s: CaptureSettings, inspect: (dir: string) => PinnedMaps = inspectPins): { settings: CaptureSettings; note?: string } {
  if (s.pinDir === undefined) return { settings: s };
  const { pinDir, ...unpinned } = s;
  const pins = inspect(pinDir);
  if (!pins.pinned) return { settings: unpinned, note: `no maps pinned in ${pinDir} yet: the run creates them` };
  if (pins.maxConnections !== undefined && pins.maxConnections !== s.maxConnections) {
    throw configError(
      '--max-connections (env NETTALLY_MAX_CONNECTIONS)',
      `is ${s.maxConnections}, but the connection map pinned in ${pinDir} has ${pins.maxConnections} entries, so the run could not reuse it: ` +
        `set --max-connections ${pins.maxConnections}, or stop the producer and remove ${pinDir} to start with fresh maps (the consumer starts a new baseline)`,
    );
  }
  const size = pins.maxConnections !== undefined ? `, of the size --max-connections asks for` : ' (bpftool not found: sizes not compared)';
  return { settings: unpinned, note: `maps pinned in ${pinDir} were left alone (a running producer may use them)${size}` };
}

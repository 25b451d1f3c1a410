// Typed surface of the native addon (native/addon.cc), loaded from native/build/Release/nettally.node.
import { existsSync } from 'fs';
import path from 'path';
import { NettallyError } from '../lib/errors';

export interface NativeCaptureOptions {
  flushIntervalNs: number;
  flushThresholdBytes: number;
  ringBufferBytes: number;
  maxConnections: number;
  /** bpffs directory: maps pinned there are reused (counters continue across restarts). */
  pinDir?: string;
  naive: boolean;
  hooksOnly: boolean;
  /** Called on the JS thread with packed ring-buffer records (bpf/nettally.h); must not throw. */
  onBatch(buf: ArrayBuffer): void;
  /** Called once after close(): the drain thread is joined, links and maps are released. */
  onClosed(): void;
}

/** Throws Error with `code` 'PRIVILEGES' | 'KERNEL_UNSUPPORTED' | 'CONFIG_INVALID' when it cannot load/attach. */
export interface NativeCapture {
  /** Summed per-CPU stats, indexed by NT_STAT_* (0 ringbuf_drops, 1 conn_map_full, 2 iface_map_full). */
  stats(): number[];
  /**
   * Runs the kernel's refresh iterator: every open TCP connection's counters brought up to TCP's sequence numbers
   * (the hot path leaves them there) and due flushes emitted. Call before connsChunk() when the counters must be current.
   */
  refresh(): void;
  /**
   * The same on a worker thread (the walk takes ~0.3 µs per open file and ~1.7 µs per TCP socket on the machine, so
   * at 100k sockets a quarter of a second): resolves to the milliseconds it took, rejects like refresh() throws.
   */
  refreshAsync(): Promise<number>;
  /**
   * One chunk of the walk over every tracked connection (TCP counters as of the last refresh or event) into `dst` (packed struct nt_conn, up to dst.byteLength / its size), one batch syscall:
   * returns how many. `cursor` = [bucket token, state]: set state 0 to start; 1 = more to come; 2 = done.
   */
  connsChunk(dst: ArrayBuffer, cursor: Float64Array): number;
  /** Packed struct nt_iface_entry per (netns, ifindex), per-CPU values summed. */
  ifaces(): ArrayBuffer;
  /** Deletes the given connections (cookies of close records only: there is no CLOSED check); returns how many were deleted. */
  forget(cookies: Float64Array): number;
  /** The loaded programs' names and kernel ids (for bpftool and run-time statistics). */
  programs(): { name: string; id: number }[];
  /** Backpressure: while paused the drain thread leaves records in the kernel's ring buffer. */
  pause(paused: boolean): void;
  /** Asks the drain thread to stop; onClosed follows once everything is released. */
  close(): void;
  readonly warnings: string[];
}

export interface NativeLayout {
  conn_record: number;
  listen_record: number;
  naive_record: number;
  conn: number;
  iface_entry: number;
  stat_max: number;
}

export interface NativeAddon {
  Capture: new (options: NativeCaptureOptions) => NativeCapture;
  /** [CLOCK_BOOTTIME ns, CLOCK_REALTIME ns], read back to back. */
  clocks(): [bigint, bigint];
  layout(): NativeLayout;
  /** execve(2): replaces the process image (same pid); returns only by throwing the errno text. */
  exec(path: string, argv: string[], env: string[]): never;
}

let cached: NativeAddon | undefined;

/** Loads the addon (once); works from the sources (ts-jest) and from dist/. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const candidates = [
    path.join(__dirname, 'build', 'Release', 'nettally.node'),
    path.join(__dirname, '..', '..', 'native', 'build', 'Release', 'nettally.node'),
  ];
  const file = candidates.find((f) => existsSync(f));
  if (!file) {
    throw new NettallyError('INTERNAL', 'the native addon is not built (native/build/Release/nettally.node): run `bash scripts/build.sh`');
  }
  const mod: { exports: unknown } = { exports: {} };
  process.dlopen(mod, file);
  cached = mod.exports as NativeAddon;
  return cached;
}

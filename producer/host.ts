// Who and when a record comes from: host identity (machine-id, boot id, hostname), process → cgroup/container
// enrichment, and the boot-clock → Unix-time conversion for time_ns.
import { readFileSync } from 'fs';
import { hostname as osHostname } from 'os';
import { NettallyError } from '../lib/errors';

export interface HostIdentity {
  host_id: string;
  hostname: string;
  boot_id: string;
}

export interface HostPaths {
  machineId?: string;
  bootId?: string;
  hostname?: string;
}

/** Reads /etc/machine-id (falling back to /var/lib/dbus/machine-id), the boot id and the host name. */
export function readHostIdentity(paths: HostPaths = {}): HostIdentity {
  const candidates = paths.machineId ? [paths.machineId] : ['/etc/machine-id', '/var/lib/dbus/machine-id'];
  let host_id = '';
  for (const p of candidates) {
    try {
      host_id = readFileSync(p, 'utf8').trim();
      if (host_id) break;
    } catch {
      // try the next location
    }
  }
  if (!/^[0-9a-f]{32}$/i.test(host_id)) {
    throw new NettallyError('CONFIG_INVALID', `no usable machine id in ${candidates.join(' or ')} (expected 32 hex digits; run systemd-machine-id-setup)`, {
      context: { setting: 'machine-id' },
    });
  }
  const bootPath = paths.bootId ?? '/proc/sys/kernel/random/boot_id';
  let boot_id: string;
  try {
    boot_id = readFileSync(bootPath, 'utf8').trim();
  } catch (e) {
    throw new NettallyError('KERNEL_UNSUPPORTED', `cannot read the boot id from ${bootPath}: ${(e as Error).message}`, { cause: e });
  }
  return { host_id: host_id.toLowerCase(), hostname: paths.hostname ?? osHostname(), boot_id };
}

const CONTAINER_ID = /(?:^|[/\-:])([0-9a-f]{64})(?:\.scope)?(?:\/|$)/;

/** The container id (64 hex digits) in a cgroup path (docker, containerd, cri-o, podman, kubepods), or null. */
export function containerIdFromCgroup(path: string | null): string | null {
  if (!path) return null;
  const parts = path.split('/');
  for (let i = parts.length - 1; i >= 0; i--) {
    const m = CONTAINER_ID.exec(`/${parts[i]}/`);
    if (m) return m[1];
  }
  return null;
}

/** The cgroup v2 path from the text of /proc/<pid>/cgroup ("0::/path"); on a v1-only host, the first controller's path. */
export function parseProcCgroup(text: string): string | null {
  let first: string | null = null;
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === '0' && m[2] === '') return m[3];
    first ??= m[3];
  }
  return first;
}

export interface ProcessInfo {
  cgroup_path: string | null;
  container_id: string | null;
}

const UNKNOWN: ProcessInfo = Object.freeze({ cgroup_path: null, container_id: null });

/**
 * pid → cgroup path and container id, cached for `ttlMs` (pids are reused, containers are not renamed)
 * and bounded to `maxEntries`. A process that is gone gives nulls: enrichment is best effort.
 */
export class ProcessEnricher {
  private readonly cache = new Map<number, { info: ProcessInfo; at: number }>();
  constructor(
    private readonly procRoot = '/proc',
    private readonly ttlMs = 30_000,
    private readonly maxEntries = 8192,
  ) {}

  lookup(pid: number, now = Date.now()): ProcessInfo {
    if (!(pid > 0)) return UNKNOWN;
    const hit = this.cache.get(pid);
    if (hit && now - hit.at < this.ttlMs) return hit.info;
    let info = UNKNOWN;
    try {
      const cgroup_path = parseProcCgroup(readFileSync(`${this.procRoot}/${pid}/cgroup`, 'utf8'));
      info = { cgroup_path, container_id: containerIdFromCgroup(cgroup_path) };
    } catch {
      // the process exited before we looked: leave the fields null
    }
    if (this.cache.size >= this.maxEntries) this.cache.clear();
    this.cache.set(pid, { info, at: now });
    return info;
  }
}

/** CLOCK_BOOTTIME now in ns, read from /proc/uptime at the moment its 10 ms tick changes (so to well under 1 ms). */
function boottimeAtTick(readUptime: () => string, hrNow: () => bigint): { boot_ns: bigint; hr_ns: bigint } {
  const first = readUptime();
  const deadline = hrNow() + 50_000_000n;
  for (;;) {
    const text = readUptime();
    const hr = hrNow();
    if (text !== first || hr > deadline) {
      const secs = text.split(/\s+/)[0];
      const [whole, frac = '0'] = secs.split('.');
      const boot_ns = BigInt(whole) * 1_000_000_000n + BigInt(frac.padEnd(9, '0').slice(0, 9));
      return { boot_ns, hr_ns: hr };
    }
  }
}

/**
 * Converts kernel CLOCK_BOOTTIME ns (ts_ns) to Unix epoch ns (time_ns). The offset realtime − boottime is
 * measured at start and re-measured every `refreshMs` (it moves on suspend/resume and clock steps).
 * Precision: about a millisecond (Date.now()).
 */
export class BootClock {
  private offsetNs = 0n;
  private measuredAt = 0;
  constructor(
    private readonly refreshMs = 60_000,
    private readonly readUptime: () => string = () => readFileSync('/proc/uptime', 'utf8'),
  ) {
    this.measure();
  }

  measure(): void {
    const { boot_ns, hr_ns } = boottimeAtTick(this.readUptime, () => process.hrtime.bigint());
    // Date.now() at the tick, interpolated with the monotonic clock for sub-ms alignment.
    const wallNs = BigInt(Date.now()) * 1_000_000n - (process.hrtime.bigint() - hr_ns);
    this.offsetNs = wallNs - boot_ns;
    this.measuredAt = Date.now();
  }

  /** Unix epoch ns of a CLOCK_BOOTTIME ns value. */
  toUnixNs(ts_ns: number | bigint): bigint {
    if (Date.now() - this.measuredAt > this.refreshMs) this.measure();
    return BigInt(ts_ns) + this.offsetNs;
  }

  /** CLOCK_BOOTTIME ns now (estimate, for records the producer makes itself). */
  nowBootNs(): bigint {
    return BigInt(Date.now()) * 1_000_000n - this.offsetNs;
  }
}

// Who and when a record comes from: host identity (machine-id, boot id, hostname), process → cgroup/container
// enrichment, and the boot-clock → Unix-time conversion for time_ns.
import { readdirSync, readFileSync, statSync } from 'fs';
import { join } from 'path';
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

/** The cgroup2 (unified) mount point from /proc/self/mounts, or null on a v1-only host. */
export function cgroup2Mount(mounts = '/proc/self/mounts'): string | null {
  try {
    for (const line of readFileSync(mounts, 'utf8').split('\n')) {
      const f = line.split(' ');
      if (f[2] === 'cgroup2') return f[1].replace(/\\040/g, ' ');
    }
  } catch {
    // no /proc: no cgroup2 index
  }
  return null;
}

/**
 * Kernel cgroup id → cgroup path, from the directory inodes of the cgroup2 mount (a cgroup's id is its kernfs inode
 * number): the cgroup of a record's socket owner as the kernel saw it, also when that process has exited or its pid
 * was reused. Rebuilt on a miss, at most every `minRescanMs` (a walk costs one stat per cgroup).
 */
export class CgroupIndex {
  private byId = new Map<number, string>();
  private scannedAt = -Infinity;
  constructor(
    private readonly mount: string,
    private readonly minRescanMs = 2000,
    private readonly maxCgroups = 100_000,
  ) {}

  path(id: number, now = Date.now()): string | null {
    const hit = this.byId.get(id);
    if (hit !== undefined) return hit;
    if (now - this.scannedAt < this.minRescanMs) return null;
    this.scannedAt = now;
    this.scan();
    return this.byId.get(id) ?? null;
  }

  private scan(): void {
    const byId = new Map<number, string>();
    const walk = (dir: string, rel: string): void => {
      if (byId.size >= this.maxCgroups) return;
      try {
        byId.set(statSync(dir).ino, rel === '' ? '/' : rel);
        for (const d of readdirSync(dir, { withFileTypes: true })) if (d.isDirectory()) walk(join(dir, d.name), `${rel}/${d.name}`);
      } catch {
        // removed while we walked
      }
    };
    walk(this.mount, '');
    this.byId = byId;
  }
}

/**
 * A record's process → cgroup path and container id. The kernel's cgroup id, when given and found in the cgroup2
 * index, is exact; otherwise /proc/<pid>/cgroup, cached for `ttlMs` (pids are reused, containers are not renamed)
 * and bounded to `maxEntries`. A process that is gone gives nulls: enrichment is best effort.
 */
export class ProcessEnricher {
  private readonly cache = new Map<number, { info: ProcessInfo; at: number }>();
  private readonly byPath = new Map<string, ProcessInfo>();
  private readonly cgroups: CgroupIndex | null;
  constructor(
    private readonly procRoot = '/proc',
    private readonly ttlMs = 30_000,
    private readonly maxEntries = 8192,
    cgroupMount: string | null = procRoot === '/proc' ? cgroup2Mount() : null,
  ) {
    this.cgroups = cgroupMount !== null ? new CgroupIndex(cgroupMount) : null;
  }

  lookup(pid: number, now = Date.now(), cgroupId = 0): ProcessInfo {
    if (cgroupId > 0 && this.cgroups !== null) {
      const path = this.cgroups.path(cgroupId, now);
      if (path !== null) return this.infoOf(path);
    }
    if (!(pid > 0)) return UNKNOWN;
    const hit = this.cache.get(pid);
    if (hit && now - hit.at < this.ttlMs) return hit.info;
    let info = UNKNOWN;
    try {
      info = this.infoOf(parseProcCgroup(readFileSync(`${this.procRoot}/${pid}/cgroup`, 'utf8')));
    } catch {
      // the process exited before we looked: leave the fields null
    }
    if (this.cache.size >= this.maxEntries) this.cache.clear();
    this.cache.set(pid, { info, at: now });
    return info;
  }

  /** One ProcessInfo per cgroup path (so the workload resolver's per-path cache sees the same path strings). */
  private infoOf(cgroup_path: string | null): ProcessInfo {
    if (cgroup_path === null) return UNKNOWN;
    let info = this.byPath.get(cgroup_path);
    if (info === undefined) {
      if (this.byPath.size >= this.maxEntries) this.byPath.clear();
      info = Object.freeze({ cgroup_path, container_id: containerIdFromCgroup(cgroup_path) });
      this.byPath.set(cgroup_path, info);
    }
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

// Workload attribution on the host: the name a record is billed to, from its process's cgroup path and its network
// namespace. Order: the user's rule file (first matching line), Kubernetes pod, container, `ip netns` name, systemd
// unit, else "host". Everything is cached per cgroup path and per netns inode, so a record costs two map lookups
// and a set lookup; the state on disk is re-read only when it changed (see producer/README.md, "Workloads").
import { readdirSync, readFileSync, statSync, type Stats } from 'fs';
import { join } from 'path';
import type { OptionSpec, ParsedArgs } from '../lib/args';
import type { Logger } from '../lib/log';
import type { ProcessInfo } from './host';
import { firstMatch, loadRules, workloadName, type WorkloadRule } from './workload-rules';

export { WORKLOAD_MAX_BYTES, workloadName, parseRules, globToRegExp } from './workload-rules';

export const WORKLOAD_HOST = 'host';
export const WORKLOAD_OTHER = 'other';

export const WORKLOAD_DEFAULTS = {
  /** Distinct workload names per producer run; more become "other". */
  maxNames: 1000,
  /** How often /run/netns and the rule file are checked for changes (each a stat). */
  refreshMs: 2000,
  /** How long a name that fell back to an id (pod/<uid>, container/<id12>) waits before the runtime's state is read again. */
  retryMs: 30_000,
} as const;

/** The workload flags of `producer` and `top` (`up` passes them on to its producer through the environment). */
export const WORKLOAD_OPTIONS: readonly OptionSpec[] = [
  {
    name: 'workload-rules', type: 'string', env: 'NETTALLY_WORKLOAD_RULES',
    help: 'rule file naming workloads: lines "cgroup <glob> <name>" / "netns <glob> <name>", first match wins (re-read when it changes, or on SIGHUP)',
  },
  {
    name: 'max-workloads', type: 'int', env: 'NETTALLY_MAX_WORKLOADS', default: WORKLOAD_DEFAULTS.maxNames, min: 1, max: 1_000_000,
    help: 'distinct workload names per run; further ones are billed to "other" (counted: workloads_overflow)',
  },
  {
    name: 'workload-state-root', type: 'string', env: 'NETTALLY_WORKLOAD_STATE_ROOT', default: '/',
    help: "where /run/netns, /var/lib/kubelet, /run/containerd, /var/lib/docker are read (e.g. /host when the host's root is mounted there)",
  },
];

/** The resolver's settings from parsed WORKLOAD_OPTIONS. */
export function workloadOptionsFrom(args: ParsedArgs): Pick<WorkloadOptions, 'rulesFile' | 'maxNames' | 'stateRoot'> {
  return { rulesFile: args.optStr('workload-rules'), maxNames: args.num('max-workloads'), stateRoot: args.str('workload-state-root') };
}

/** Cached cgroup paths (and netns inodes) before the cache starts over (a host has far fewer live ones). */
const MAX_CGROUP_ENTRIES = 16_384;
/** Runtime state files larger than this are not read (an OCI config.json is a few KiB). */
const MAX_STATE_FILE_BYTES = 4 << 20;

export interface WorkloadOptions {
  /** The rule file (--workload-rules); none: no user rules. */
  rulesFile?: string;
  maxNames?: number;
  /** Where /run/netns, /var/lib/kubelet, /run/containerd, /var/lib/docker, … are found ("/" unless the host's root is mounted elsewhere). */
  stateRoot?: string;
  refreshMs?: number;
  retryMs?: number;
  logger?: Logger;
  now?: () => number;
  /** Whether a file in /run/netns is a mounted network namespace (an nsfs inode), not a file `ip netns add` has not mounted yet. */
  isNetnsMount?: (st: Stats) => boolean;
}

export interface WorkloadStats {
  /** Distinct workload names given out (host and other not counted). */
  workloads: number;
  /** Records billed to "other" because the cap on distinct names was reached. */
  workloads_overflow: number;
  /** Rules in force. */
  workload_rules: number;
  /** Times the rule file was re-read (changed on disk, or SIGHUP). */
  workload_rules_reloads: number;
  /** Re-reads that failed (the previous rules stay in force; logged). */
  workload_rules_errors: number;
}

interface CgroupEntry {
  rule: WorkloadRule | null;
  /** Pod or container name. */
  owner: string | null;
  /** systemd unit (system.slice/NAME.service). */
  unit: string | null;
  /** When to look again (a fallback name); Infinity for names read from the runtime's state. */
  until: number;
}

interface NetnsEntry {
  rule: WorkloadRule | null;
  name: string | null;
}

const UUID = /^([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})$/;

/** The pod UID in a kubepods cgroup path (systemd driver `kubepods-…-pod<uid_>.slice`, cgroupfs `pod<uid>`), or null. */
export function podUidFromCgroup(path: string): string | null {
  const parts = path.split('/');
  const kube = parts.findIndex((p) => p.startsWith('kubepods'));
  if (kube < 0) return null;
  for (const p of parts.slice(kube)) {
    const m = /^(?:kubepods-(?:[a-z]+-)?)?pod([0-9a-f_-]+?)(?:\.slice)?$/.exec(p);
    if (m && UUID.test(m[1])) return m[1].replace(/_/g, '-');
  }
  return null;
}

/** `NAME.service` for a path under system.slice (also in nested slices), or null. */
export function systemdUnitFromCgroup(path: string): string | null {
  const parts = path.split('/');
  if (parts[1] !== 'system.slice') return null;
  return parts.slice(2).find((p) => p.endsWith('.service') && p.length > '.service'.length) ?? null;
}

function str(v: unknown): string | null {
  return typeof v === 'string' && v !== '' ? v : null;
}

/** Resolves workloads; see the file comment. One per producer (or `top`). */
export class WorkloadResolver {
  private rules: WorkloadRule[] = [];
  private rulesSig = '';
  private readonly cgroups = new Map<string, CgroupEntry>();
  private readonly netns = new Map<number, NetnsEntry>();
  private netnsNames = new Map<number, string>();
  private netnsSig = '';
  /** A file in /run/netns was not a mounted namespace yet (`ip netns add` between its create and its mount). */
  private netnsPending = false;
  private readonly names = new Set<string>();
  private overflow = 0;
  private overflowLoggedAt = -Infinity;
  private reloads = 0;
  private reloadErrors = 0;
  private readonly root: string;
  private readonly now: () => number;
  private readonly isNetnsMount: (st: Stats) => boolean;
  private readonly maxNames: number;
  private readonly retryMs: number;

  /** Throws CONFIG_INVALID naming file:line when the rule file is bad: a producer must not start with rules it cannot apply. */
  constructor(private readonly opts: WorkloadOptions = {}) {
    this.root = opts.stateRoot ?? '/';
    this.now = opts.now ?? Date.now;
    this.maxNames = opts.maxNames ?? WORKLOAD_DEFAULTS.maxNames;
    this.retryMs = opts.retryMs ?? WORKLOAD_DEFAULTS.retryMs;
    if (opts.isNetnsMount) this.isNetnsMount = opts.isNetnsMount;
    else {
      const nsfs = statSync('/proc/self/ns/net').dev;
      this.isNetnsMount = (st) => st.dev === nsfs;
    }
    if (opts.rulesFile) {
      this.rulesSig = this.fileSig(opts.rulesFile);
      this.rules = loadRules(opts.rulesFile);
    }
    this.scanNetns();
  }

  /** The workload of a record: `info` null for interface records (no process). */
  resolve(info: ProcessInfo | null, netns: number): string {
    const path = info?.cgroup_path ?? null;
    let cg: CgroupEntry | undefined;
    if (path !== null) {
      cg = this.cgroups.get(path);
      if (cg === undefined || (cg.until !== Infinity && this.now() >= cg.until)) cg = this.cgroupEntry(path, info?.container_id ?? null);
    }
    const ns = this.netns.get(netns) ?? this.netnsEntry(netns);
    const r1 = cg?.rule ?? null;
    const r2 = ns.rule;
    let name: string;
    if (r1 !== null || r2 !== null) name = r1 !== null && (r2 === null || r1.line < r2.line) ? r1.name : (r2 as WorkloadRule).name;
    else name = cg?.owner ?? ns.name ?? cg?.unit ?? WORKLOAD_HOST;
    return this.capped(name);
  }

  /** Looks for changes on disk (netns names, the rule file); call every refreshMs (producer and top do, on a timer). */
  refresh(): void {
    if (this.netnsPending || this.dirSig(this.netnsDir()) !== this.netnsSig) {
      this.scanNetns();
      this.netns.clear();
    }
    if (this.opts.rulesFile && this.fileSig(this.opts.rulesFile) !== this.rulesSig) this.reloadRules();
  }

  /** Re-reads the rule file (SIGHUP, or it changed). A bad file is logged and the rules in force stay. */
  reloadRules(): boolean {
    const file = this.opts.rulesFile;
    if (!file) return false;
    this.rulesSig = this.fileSig(file);
    try {
      this.rules = loadRules(file);
    } catch (e) {
      this.reloadErrors++;
      this.opts.logger?.error({ err: e, file }, `workload rules not reloaded (the previous ${this.rules.length} rules stay in force): ${(e as Error).message}`);
      return false;
    }
    this.reloads++;
    this.cgroups.clear();
    this.netns.clear();
    this.opts.logger?.info({ file, rules: this.rules.length }, 'workload rules reloaded');
    return true;
  }

  stats(): WorkloadStats {
    return {
      workloads: this.names.size,
      workloads_overflow: this.overflow,
      workload_rules: this.rules.length,
      workload_rules_reloads: this.reloads,
      workload_rules_errors: this.reloadErrors,
    };
  }

  private capped(name: string): string {
    if (this.names.has(name) || name === WORKLOAD_HOST || name === WORKLOAD_OTHER) return name;
    if (this.names.size < this.maxNames) {
      this.names.add(name);
      return name;
    }
    this.overflow++;
    const t = this.now();
    if (t - this.overflowLoggedAt > 60_000) {
      this.overflowLoggedAt = t;
      this.opts.logger?.warn(
        { workloads: this.names.size, workloads_overflow: this.overflow, example: name },
        `more than --max-workloads ${this.maxNames} distinct workload names: new ones are billed to "${WORKLOAD_OTHER}"; raise --max-workloads, or group workloads with --workload-rules`,
      );
    }
    return WORKLOAD_OTHER;
  }

  private cgroupEntry(path: string, containerId: string | null): CgroupEntry {
    if (this.cgroups.size >= MAX_CGROUP_ENTRIES) this.cgroups.clear();
    const owner = this.ownerOf(path, containerId);
    const e: CgroupEntry = {
      rule: firstMatch(this.rules, 'cgroup', [path]),
      owner: owner?.name ?? null,
      unit: systemdUnitFromCgroup(path),
      until: owner && !owner.known ? this.now() + this.retryMs : Infinity,
    };
    this.cgroups.set(path, e);
    return e;
  }

  private netnsEntry(inode: number): NetnsEntry {
    // A namespace created since the last scan: look now, not at the next refresh (its first records would be "host").
    if (!this.netnsNames.has(inode) && (this.netnsPending || this.dirSig(this.netnsDir()) !== this.netnsSig)) this.scanNetns();
    const name = this.netnsNames.get(inode) ?? null;
    if (this.netns.size >= MAX_CGROUP_ENTRIES) this.netns.clear();
    const e: NetnsEntry = { rule: firstMatch(this.rules, 'netns', name !== null ? [name, String(inode)] : [String(inode)]), name };
    this.netns.set(inode, e);
    return e;
  }

  private netnsDir(): string {
    return join(this.root, 'run/netns');
  }

  /** /run/netns: each file is a bind mount of a namespace, named as `ip netns` shows it; its inode is the namespace's. */
  private scanNetns(): void {
    const dir = this.netnsDir();
    this.netnsSig = this.dirSig(dir);
    const names = new Map<number, string>();
    let pending = false;
    // As bytes: a name that is not UTF-8 (any bytes but / and NUL are allowed) must still be stat-ed by its real name.
    let files: Buffer[] = [];
    try {
      files = readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
    } catch {
      // no named namespaces on this host
    }
    const dirBytes = Buffer.from(`${dir}/`);
    for (const f of files) {
      try {
        const st = statSync(Buffer.concat([dirBytes, f]));
        if (!this.isNetnsMount(st)) pending = true;
        else if (!names.has(st.ino)) names.set(st.ino, workloadName(f.toString('utf8')));
      } catch {
        // deleted while we looked
      }
    }
    this.netnsNames = names;
    this.netnsPending = pending;
  }

  private dirSig(path: string): string {
    try {
      const st = statSync(path);
      return `${st.ino}:${st.mtimeMs}`;
    } catch {
      return '';
    }
  }

  private fileSig(path: string): string {
    try {
      const st = statSync(path);
      return `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch {
      return 'missing';
    }
  }

  /** Pod (namespace/pod) or container of a cgroup; `known` false when only an id was found (looked up again later). */
  private ownerOf(path: string, containerId: string | null): { name: string; known: boolean } | null {
    const uid = podUidFromCgroup(path);
    if (uid !== null) {
      const pod = (containerId !== null ? this.podOfContainer(containerId) : null) ?? this.podFromKubelet(uid);
      return pod !== null ? { name: workloadName(pod), known: true } : { name: `pod/${uid}`, known: false };
    }
    if (containerId === null) return null;
    const name = this.containerName(containerId);
    return name !== null ? { name: workloadName(`container/${name}`), known: true } : { name: `container/${containerId.slice(0, 12)}`, known: false };
  }

  private readJson(...parts: string[]): Record<string, unknown> | null {
    const file = join(this.root, ...parts);
    try {
      if (statSync(file).size > MAX_STATE_FILE_BYTES) return null;
      const v: unknown = JSON.parse(readFileSync(file, 'utf8'));
      return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : null;
    } catch {
      return null;
    }
  }

  /** The OCI specs containerd keeps per task, in every containerd namespace (k8s.io for Kubernetes, default, moby…). */
  private containerdSpec(id: string): Record<string, unknown> | null {
    const tasks = 'run/containerd/io.containerd.runtime.v2.task';
    let namespaces: string[] = [];
    try {
      namespaces = readdirSync(join(this.root, tasks));
    } catch {
      return null;
    }
    for (const ns of namespaces) {
      const spec = this.readJson(tasks, ns, id, 'config.json');
      if (spec) return spec;
    }
    return null;
  }

  /** "namespace/pod" from the container's runtime state: containerd and CRI-O annotations, docker (cri-dockerd) labels. */
  private podOfContainer(id: string): string | null {
    const pick = (o: unknown, nsKey: string, nameKey: string): string | null => {
      const m = typeof o === 'object' && o !== null ? (o as Record<string, unknown>) : {};
      const ns = str(m[nsKey]);
      const name = str(m[nameKey]);
      return ns !== null && name !== null ? `${ns}/${name}` : null;
    };
    const containerd = this.containerdSpec(id);
    const crio = this.readJson('run/containers/storage/overlay-containers', id, 'userdata/config.json');
    const docker = this.readJson('var/lib/docker/containers', id, 'config.v2.json');
    const dockerConfig = docker?.Config as Record<string, unknown> | undefined;
    return (
      pick(containerd?.annotations, 'io.kubernetes.cri.sandbox-namespace', 'io.kubernetes.cri.sandbox-name') ??
      pick(crio?.annotations, 'io.kubernetes.pod.namespace', 'io.kubernetes.pod.name') ??
      pick(dockerConfig?.Labels, 'io.kubernetes.pod.namespace', 'io.kubernetes.pod.name')
    );
  }

  /**
   * "namespace/pod" from the kubelet's pod directory: the pod's name is the host name on the last line of the
   * etc-hosts it writes for the pod, its namespace is in the projected service-account volume.
   */
  private podFromKubelet(uid: string): string | null {
    const dir = join(this.root, 'var/lib/kubelet/pods', uid);
    try {
      const hosts = readFileSync(join(dir, 'etc-hosts'), 'utf8');
      // A host-network pod's file is the host's /etc/hosts under another header: its last line names no pod.
      const header = hosts.slice(0, hosts.indexOf('\n'));
      if (!header.startsWith('# Kubernetes-managed hosts file') || header.includes('host network')) return null;
      const entries = hosts.split('\n').filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'));
      const fields = (entries[entries.length - 1] ?? '').trim().split(/\s+/);
      const pod = fields.length >= 2 ? fields[fields.length - 1] : '';
      const projected = join(dir, 'volumes/kubernetes.io~projected');
      for (const vol of readdirSync(projected)) {
        try {
          const ns = readFileSync(join(projected, vol, 'namespace'), 'utf8').trim();
          if (ns !== '' && pod !== '') return `${ns}/${pod}`;
        } catch {
          // a projected volume without the namespace file
        }
      }
    } catch {
      // not readable (not a kubelet host, or no permission): the uid is the name
    }
    return null;
  }

  /** A container's own name: docker, podman, nerdctl (containerd). */
  private containerName(id: string): string | null {
    const docker = str(this.readJson('var/lib/docker/containers', id, 'config.v2.json')?.Name);
    if (docker !== null) return docker.replace(/^\//, '') || null;
    const podman = this.readJson('var/lib/containers/storage/overlay-containers', 'containers.json');
    if (Array.isArray(podman)) {
      const c = (podman as Array<Record<string, unknown>>).find((x) => x?.id === id);
      const names = c?.names;
      if (Array.isArray(names) && str(names[0]) !== null) return names[0] as string;
    }
    const annotations = this.containerdSpec(id)?.annotations as Record<string, unknown> | undefined;
    return str(annotations?.['nerdctl/name']);
  }
}

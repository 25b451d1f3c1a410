// Test helper: network namespaces joined by a veth pair (IPv4 + IPv6), commands run inside them, always cleaned up.
import { execFileSync, spawn } from 'child_process';
import { statSync } from 'fs';

export interface NetnsSide {
  /** netns name (under /var/run/netns). */
  name: string;
  /** veth interface inside this namespace. */
  dev: string;
  addr4: string;
  addr6: string;
  /** netns inode (ground truth: stat -Lc %i /var/run/netns/<name>). */
  inode: number;
}

export interface NetnsPair {
  a: NetnsSide;
  b: NetnsSide;
  destroy(): void;
}

const created = new Set<string>();
let counter = 0;

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Deletes every namespace this process created (also registered for process exit). */
export function destroyAllNetns(): void {
  for (const ns of created) {
    try {
      ip(['netns', 'del', ns]);
    } catch {
      // already gone
    }
    created.delete(ns);
  }
}
process.once('exit', destroyAllNetns);

/**
 * Two namespaces `<tag>a`/`<tag>b` (names include the pid) joined by veth: a=10.77.0.1/fd77::1, b=10.77.0.2/fd77::2.
 * `quiet`: IPv4 only, IPv6 disabled and static ARP entries, so the only packets on the link are the test's own.
 */
export function createNetnsPair(tag = 't', opts: { quiet?: boolean } = {}): NetnsPair {
  const id = `${process.pid.toString(36)}${(counter++).toString(36)}`;
  const na = `nt-${tag}-${id}-a`;
  const nb = `nt-${tag}-${id}-b`;
  const da = `nv${id}a`.slice(0, 15);
  const db = `nv${id}b`.slice(0, 15);
  const pair: NetnsPair = {
    a: { name: na, dev: da, addr4: '10.77.0.1', addr6: 'fd77::1', inode: 0 },
    b: { name: nb, dev: db, addr4: '10.77.0.2', addr6: 'fd77::2', inode: 0 },
    destroy: () => {
      for (const ns of [na, nb]) {
        try {
          ip(['netns', 'del', ns]);
        } catch {
          // already gone
        }
        created.delete(ns);
      }
    },
  };
  try {
    for (const side of [pair.a, pair.b]) {
      ip(['netns', 'add', side.name]);
      created.add(side.name);
      side.inode = statSync(`/var/run/netns/${side.name}`).ino;
      if (opts.quiet) {
        for (const k of ['all', 'default']) {
          execFileSync('ip', ['netns', 'exec', side.name, 'sysctl', '-qw', `net.ipv6.conf.${k}.disable_ipv6=1`], { stdio: 'ignore' });
        }
      }
    }
    ip(['link', 'add', da, 'netns', na, 'type', 'veth', 'peer', 'name', db, 'netns', nb]);
    for (const side of [pair.a, pair.b]) {
      ip(['-n', side.name, 'link', 'set', 'lo', 'up']);
      ip(['-n', side.name, 'addr', 'add', `${side.addr4}/24`, 'dev', side.dev]);
      if (!opts.quiet) ip(['-n', side.name, 'addr', 'add', `${side.addr6}/64`, 'dev', side.dev, 'nodad']);
    }
    if (opts.quiet) {
      for (const [self, peer] of [[pair.a, pair.b], [pair.b, pair.a]]) {
        ip(['-n', self.name, 'neigh', 'add', peer.addr4, 'lladdr', macOf(peer), 'dev', self.dev, 'nud', 'permanent']);
      }
    }
    for (const side of [pair.a, pair.b]) ip(['-n', side.name, 'link', 'set', side.dev, 'up']);
  } catch (e) {
    pair.destroy();
    throw e;
  }
  return pair;
}

function macOf(side: NetnsSide): string {
  const out = execFileSync('ip', ['-n', side.name, '-j', 'link', 'show', side.dev]).toString();
  return (JSON.parse(out) as { address: string }[])[0].address;
}

/** ifindex of a device inside a namespace. */
export function ifindexOf(ns: string, dev: string): number {
  const out = execFileSync('ip', ['-n', ns, '-j', 'link', 'show', dev]).toString();
  return (JSON.parse(out) as { ifindex: number }[])[0].ifindex;
}

export interface Spawned {
  /** Resolves with stdout when the process exits 0; rejects with stderr otherwise. */
  done: Promise<string>;
  /** Resolves when a stdout line equal to `line` appears. */
  waitLine(line: string): Promise<void>;
  kill(): void;
  pid: number;
}

/** Runs a command inside a namespace (`ip netns exec`). */
export function nsSpawn(ns: string, cmd: string, args: readonly string[], timeoutMs = 60000): Spawned {
  const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: { line: string; resolve: () => void }[] = [];
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const lines = out.split('\n');
    for (const w of [...waiters]) {
      if (lines.includes(w.line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<string>((resolve, reject) => {
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      for (const w of waiters) w.resolve();
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} in ${ns} exited ${code ?? sig}: ${err}`));
    });
  });
  done.catch(() => undefined);
  return {
    done,
    pid: child.pid ?? 0,
    kill: () => child.kill('SIGKILL'),
    waitLine: (line) =>
      out.split('\n').includes(line) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ line, resolve })),
  };
}

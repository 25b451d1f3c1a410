// Unit tests of host identity, cgroup/container enrichment, boot-clock conversion and epoch claiming.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { BootClock, containerIdFromCgroup, parseProcCgroup, ProcessEnricher, readHostIdentity } from './host';
import { claimEpoch, Sequencer } from './sequence';

const tmp = mkdtempSync(join(tmpdir(), 'nettally-host-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const ID = 'a'.repeat(64);

describe('host identity', () => {
  it('reads this machine', () => {
    const h = readHostIdentity();
    expect(h.host_id).toBe(readFileSync('/etc/machine-id', 'utf8').trim());
    expect(h.boot_id).toBe(readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
    expect(h.hostname.length).toBeGreaterThan(0);
  });

  it('refuses a missing or malformed machine id, naming the file', () => {
    const p = join(tmp, 'machine-id');
    writeFileSync(p, 'not-an-id\n');
    expect(() => readHostIdentity({ machineId: p })).toThrow(/machine-id/);
  });
});

describe('cgroup enrichment', () => {
  it.each([
    [`/system.slice/docker-${ID}.scope`, ID],
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-${ID}.scope`, ID],
    [`/machine.slice/libpod-${ID}.scope/container`, ID],
    [`/kubepods/besteffort/pod123/${ID}`, ID],
    [`/docker/${ID}`, ID],
    ['/user.slice/user-1000.slice/session-2.scope', null],
    ['/', null],
  ])('finds the container id in %s', (path, id) => {
    expect(containerIdFromCgroup(path)).toBe(id);
  });

  it('parses v2 and v1 /proc/<pid>/cgroup', () => {
    expect(parseProcCgroup('0::/system.slice/ssh.service\n')).toBe('/system.slice/ssh.service');
    expect(parseProcCgroup(`12:pids:/docker/${ID}\n11:memory:/docker/${ID}\n`)).toBe(`/docker/${ID}`);
  });

  it('looks up a live process and caches, and gives nulls for a gone one', () => {
    const root = join(tmp, 'proc');
    mkdirSync(join(root, '42'), { recursive: true });
    writeFileSync(join(root, '42', 'cgroup'), `0::/system.slice/docker-${ID}.scope\n`);
    const e = new ProcessEnricher(root, 1000);
    expect(e.lookup(42, 0)).toEqual({ cgroup_path: `/system.slice/docker-${ID}.scope`, container_id: ID });
    writeFileSync(join(root, '42', 'cgroup'), '0::/other\n');
    expect(e.lookup(42, 500).container_id).toBe(ID);
    expect(e.lookup(42, 1500)).toEqual({ cgroup_path: '/other', container_id: null });
    expect(e.lookup(43, 0)).toEqual({ cgroup_path: null, container_id: null });
    expect(new ProcessEnricher().lookup(process.pid).cgroup_path).toBe(parseProcCgroup(readFileSync('/proc/self/cgroup', 'utf8')));
  });
});

describe('BootClock', () => {
  it('maps boot time to Unix time within a few ms', () => {
    const c = new BootClock();
    const uptimeNs = BigInt(Math.round(Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1e9));
    const unix = c.toUnixNs(uptimeNs);
    const diffMs = Number(unix - BigInt(Date.now()) * 1_000_000n) / 1e6;
    expect(Math.abs(diffMs)).toBeLessThan(30);
    expect(Number(c.nowBootNs() - uptimeNs) / 1e6).toBeLessThan(30);
  });
});

describe('epoch and seq', () => {
  it('claims strictly increasing, durable epochs, never below the clock', () => {
    const dir = join(tmp, 'state');
    const now = 1_700_000_000_000;
    const a = claimEpoch(dir, now);
    expect(a).toBe(1_700_000_000);
    expect(claimEpoch(dir, now)).toBe(a + 1);
    expect(claimEpoch(dir, now - 10_000)).toBe(a + 2);
    expect(readFileSync(join(dir, 'epoch'), 'utf8').trim()).toBe(String(a + 2));
    rmSync(dir, { recursive: true });
    expect(claimEpoch(dir, now + 5000)).toBe(a + 5);
    writeFileSync(join(dir, 'epoch'), 'garbage');
    expect(() => claimEpoch(dir, now)).toThrow(/corrupt/);
  });

  it('numbers records from 1 without gaps', () => {
    const s = new Sequencer(9);
    expect([s.next(), s.next(), s.next()]).toEqual([1, 2, 3]);
    expect(s.current).toBe(3);
  });
});

describe('cgroup id index', () => {
  it('finds a cgroup by the kernel id (its directory inode) when the process is gone, and rescans for new cgroups', () => {
    const mount = join(tmp, 'cgroup2');
    const path = `system.slice/docker-${ID}.scope`;
    mkdirSync(join(mount, path), { recursive: true });
    const e = new ProcessEnricher(join(tmp, 'noproc'), 1000, 8192, mount);
    const id = statSync(join(mount, path)).ino;
    // pid 999999 has no /proc entry here: only the cgroup id can tell
    expect(e.lookup(999999, 0, id)).toEqual({ cgroup_path: `/${path}`, container_id: ID });
    expect(e.lookup(999999, 0, statSync(mount).ino).cgroup_path).toBe('/');
    mkdirSync(join(mount, 'late.slice'));
    const late = statSync(join(mount, 'late.slice')).ino;
    expect(e.lookup(999999, 100, late).cgroup_path).toBeNull(); // rescans are rate-limited
    expect(e.lookup(999999, 5000, late).cgroup_path).toBe('/late.slice');
  });
});

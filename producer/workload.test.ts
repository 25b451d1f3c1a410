// Unit tests of workload resolution on a fake state root: rule precedence, pods, containers, `ip netns` names,
// systemd units, the cap on distinct names, hostile names, bad rule files and refresh on change.
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import type { ProcessInfo } from './host';
import { containerIdFromCgroup } from './host';
import { globToRegExp, parseRules, podUidFromCgroup, systemdUnitFromCgroup, WORKLOAD_MAX_BYTES, WorkloadResolver, workloadName, type WorkloadOptions } from './workload';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'nettally-workload-'));
  mkdirSync(join(root, 'run/netns'), { recursive: true });
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const K = 'a'.repeat(64);
const D = 'd'.repeat(64);
const UID = '0d3c1a5e-2b4f-4c6d-8e9f-a0b1c2d3e4f5';
const POD_PATH = `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID.replace(/-/g, '_')}.slice/cri-containerd-${K}.scope`;
const DOCKER_PATH = `/system.slice/docker-${D}.scope`;

const proc = (cgroup_path: string): ProcessInfo => ({ cgroup_path, container_id: containerIdFromCgroup(cgroup_path) });

/** A fake `ip netns add NAME`: a file in run/netns whose inode stands for the namespace's. */
function netns(name: string): number {
  const f = join(root, 'run/netns', name);
  writeFileSync(f, '');
  return statSync(f).ino;
}

function write(rel: string, content: string): string {
  const f = join(root, rel);
  mkdirSync(join(f, '..'), { recursive: true });
  writeFileSync(f, content);
  return f;
}

function resolver(over: WorkloadOptions = {}): WorkloadResolver {
  return new WorkloadResolver({ stateRoot: root, isNetnsMount: () => true, ...over });
}

describe('resolution order', () => {
  it('rules (first line wins, cgroup or netns) > pod > container > ip netns name > systemd unit > host', () => {
    const blue = netns('blue');
    const rules = write('rules', ['# comment', '', `netns blue tenant-blue`, `cgroup /system.slice/*.service units`, `cgroup /kubepods.slice/** k8s-all`].join('\n'));
    const r = resolver({ rulesFile: rules });
    // a netns rule on an earlier line beats a cgroup rule on a later one, and any rule beats the pod
    expect(r.resolve(proc(POD_PATH), blue)).toBe('tenant-blue');
    expect(r.resolve(proc(POD_PATH), 1)).toBe('k8s-all');
    expect(r.resolve(proc('/system.slice/ssh.service'), 1)).toBe('units');
    expect(r.resolve(null, blue)).toBe('tenant-blue');

    const plain = resolver();
    write(`run/containerd/io.containerd.runtime.v2.task/k8s.io/${K}/config.json`, JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-namespace': 'payments', 'io.kubernetes.cri.sandbox-name': 'api-1' } }));
    write(`var/lib/docker/containers/${D}/config.v2.json`, JSON.stringify({ Name: '/web' }));
    expect(plain.resolve(proc(POD_PATH), blue)).toBe('payments/api-1');
    expect(plain.resolve(proc(DOCKER_PATH), blue)).toBe('container/web');
    expect(plain.resolve(proc('/system.slice/ssh.service'), blue)).toBe('blue');
    expect(plain.resolve(proc('/system.slice/ssh.service'), 1)).toBe('ssh.service');
    expect(plain.resolve(proc('/user.slice/user-1000.slice/session-2.scope'), 1)).toBe('host');
    expect(plain.resolve({ cgroup_path: null, container_id: null }, 1)).toBe('host');
    expect(plain.resolve(null, blue)).toBe('blue');
    expect(plain.resolve(null, 1)).toBe('host');
  });

  it('a later cgroup rule loses to an earlier netns rule, and the other way round', () => {
    const blue = netns('blue');
    expect(resolver({ rulesFile: write('r1', 'cgroup /** by-cgroup\nnetns * by-netns\n') }).resolve(proc('/x'), blue)).toBe('by-cgroup');
    expect(resolver({ rulesFile: write('r2', 'netns * by-netns\ncgroup /** by-cgroup\n') }).resolve(proc('/x'), blue)).toBe('by-netns');
    // a netns glob matches the inode number too, also of a namespace without an ip netns name
    expect(resolver({ rulesFile: write('r3', 'netns 4026532* by-inode\n') }).resolve(null, 4026532177)).toBe('by-inode');
  });

  it('pods: kubelet pod dir, uid fallback (looked up again later), cgroupfs driver; containers: podman, nerdctl, id fallback', () => {
    let t = 0;
    const r = resolver({ now: () => t, retryMs: 1000 });
    expect(r.resolve(proc(POD_PATH), 1)).toBe(`pod/${UID}`);
    // the kubelet's files appear: after retryMs the name is read
    write(`var/lib/kubelet/pods/${UID}/etc-hosts`, '# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n10.244.1.7\tcheckout-5d9\n');
    write(`var/lib/kubelet/pods/${UID}/volumes/kubernetes.io~projected/kube-api-access-x/namespace`, 'shop\n');
    expect(r.resolve(proc(POD_PATH), 1)).toBe(`pod/${UID}`);
    t = 1500;
    expect(r.resolve(proc(POD_PATH), 1)).toBe('shop/checkout-5d9');
    expect(r.resolve(proc(`/kubepods/burstable/pod${UID}/${K}`), 1)).toBe('shop/checkout-5d9');
    // a host-network pod's etc-hosts is the host's file: its last line is no pod name
    const HN = '11111111-2222-4333-8444-555555555555';
    write(`var/lib/kubelet/pods/${HN}/etc-hosts`, '# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n10.0.0.5 node-7\n');
    write(`var/lib/kubelet/pods/${HN}/volumes/kubernetes.io~projected/kube-api-access-y/namespace`, 'kube-system\n');
    expect(r.resolve(proc(`/kubepods/pod${HN}/${K}`), 1)).toBe(`pod/${HN}`);

    expect(r.resolve(proc(`/machine.slice/libpod-${D}.scope/container`), 1)).toBe(`container/${D.slice(0, 12)}`);
    const p = resolver();
    write('var/lib/containers/storage/overlay-containers/containers.json', JSON.stringify([{ id: D, names: ['db'] }]));
    expect(p.resolve(proc(`/machine.slice/libpod-${D}.scope/container`), 1)).toBe('container/db');
    write(`run/containerd/io.containerd.runtime.v2.task/default/${K}/config.json`, JSON.stringify({ annotations: { 'nerdctl/name': 'cache' } }));
    expect(p.resolve(proc(`/system.slice/nerdctl-${K}.scope`), 1)).toBe('container/cache');
  });

  it('parses cgroup paths', () => {
    expect(podUidFromCgroup(POD_PATH)).toBe(UID);
    expect(podUidFromCgroup(`/kubepods.slice/kubepods-pod${UID.replace(/-/g, '_')}.slice`)).toBe(UID);
    expect(podUidFromCgroup(`/kubepods/besteffort/pod${UID}/${K}`)).toBe(UID);
    expect(podUidFromCgroup(`/system.slice/pod${UID}.slice`)).toBeNull();
    expect(systemdUnitFromCgroup('/system.slice/nginx.service')).toBe('nginx.service');
    expect(systemdUnitFromCgroup('/system.slice/app.slice/worker.service/sub')).toBe('worker.service');
    expect(systemdUnitFromCgroup('/user.slice/user@1000.service')).toBeNull();
    expect(globToRegExp('/a/*/c').test('/a/b/c')).toBe(true);
    expect(globToRegExp('/a/*/c').test('/a/b/x/c')).toBe(false);
    expect(globToRegExp('/a/**/c').test('/a/b/x/c')).toBe(true);
    expect(globToRegExp('a.b?').test('a.bc')).toBe(true);
    expect(globToRegExp('a.b?').test('axbc')).toBe(false);
  });
});

describe('bounded cardinality', () => {
  it('past --max-workloads distinct names new ones are "other", counted per record; known names, host and other stay', () => {
    const r = resolver({ maxNames: 3 });
    const ns = ['n1', 'n2', 'n3', 'n4', 'n5'].map(netns);
    expect(ns.slice(0, 3).map((n) => r.resolve(null, n))).toEqual(['n1', 'n2', 'n3']);
    expect(r.resolve(null, ns[3])).toBe('other');
    expect(r.resolve(null, ns[4])).toBe('other');
    expect(r.resolve(null, ns[3])).toBe('other');
    expect(r.resolve(null, ns[0])).toBe('n1');
    expect(r.resolve(null, 1)).toBe('host');
    expect(r.stats()).toMatchObject({ workloads: 3, workloads_overflow: 3 });
  });
});

describe('hostile names', () => {
  const valid = (s: string): boolean => Buffer.from(s, 'utf8').toString('utf8') === s && !/[\x00-\x1f\x7f-\x9f]/.test(s); // eslint-disable-line no-control-regex

  it('netns and container names: no control characters, valid UTF-8, bounded, long names stay distinct', () => {
    const esc = netns('evil\x1b[31m\nname\t');
    // a file name is any bytes but / and NUL: not UTF-8 here
    const rawName = Buffer.concat([Buffer.from(join(root, 'run/netns/raw')), Buffer.from([0xff, 0xfe, 0x80])]);
    writeFileSync(rawName, '');
    const raw = statSync(rawName).ino;
    // container names from JSON are unbounded: two long ones that differ only at the end
    const E = 'e'.repeat(64);
    const F = 'f'.repeat(64);
    write(`var/lib/docker/containers/${E}/config.v2.json`, JSON.stringify({ Name: '/' + 'x'.repeat(400) + 'é'.repeat(40) + '1' }));
    write(`var/lib/docker/containers/${F}/config.v2.json`, JSON.stringify({ Name: '/' + 'x'.repeat(400) + 'é'.repeat(40) + '2' }));
    write(`var/lib/docker/containers/${D}/config.v2.json`, JSON.stringify({ Name: '/\ud800bad\u0007' }));
    const r = resolver();
    const names = [r.resolve(null, esc), r.resolve(proc(`/system.slice/docker-${E}.scope`), 1), r.resolve(proc(`/system.slice/docker-${F}.scope`), 1), r.resolve(proc(DOCKER_PATH), 1), r.resolve(null, raw)];
    expect(names[0]).toBe('evil\\x1b[31m\\x0aname\\x09');
    expect(names[3]).toBe('container/\ufffdbad\\x07');
    expect(names[4]).toBe('raw\ufffd\ufffd\ufffd');
    for (const n of names) {
      expect(valid(n)).toBe(true);
      expect(Buffer.byteLength(n)).toBeLessThanOrEqual(WORKLOAD_MAX_BYTES);
    }
    expect(names[1]).not.toBe(names[2]);
    expect(workloadName('')).not.toBe('');
  });
});

describe('rule file', () => {
  it.each([
    ['bogus blue x\n', 2, /rules.*:2: unknown rule kind "bogus"/],
    ['netns blue\n', 2, /:2: expected "<cgroup\|netns> <glob> <name>"/],
    ['cgroup system.slice/* x\n', 2, /:2: a cgroup glob .* starts with "\/"/],
    ['netns blue a\x1bb\n', 2, /:2: the workload name has a control character/],
    [`netns blue ${'n'.repeat(WORKLOAD_MAX_BYTES + 1)}\n`, 2, /:2: the workload name is longer than/],
  ])('refuses %j naming file:line', (body, _line, re) => {
    const f = write('rules', `# ok\n${body}`);
    expect(() => resolver({ rulesFile: f })).toThrow(re);
    expect(() => resolver({ rulesFile: f })).toThrow(f);
  });

  it('refuses a missing file and one that is not UTF-8, naming it', () => {
    expect(() => resolver({ rulesFile: join(root, 'nope') })).toThrow(/workload rules .*nope: cannot read it/);
    const f = join(root, 'latin1');
    writeFileSync(f, Buffer.concat([Buffer.from('netns a x\nnetns b caf'), Buffer.from([0xe9]), Buffer.from('\n')]));
    expect(() => parseRules(Buffer.from('netns a b c d\n'), 'f')).not.toThrow();
    expect(() => resolver({ rulesFile: f })).toThrow(`${f}:2: not valid UTF-8`);
  });

  it('is re-read when it changes; a bad edit keeps the rules in force and is counted', () => {
    const blue = netns('blue');
    const f = write('rules', 'netns blue one\n');
    const r = resolver({ rulesFile: f });
    expect(r.resolve(null, blue)).toBe('one');
    writeFileSync(f, 'netns blue two-two\n');
    r.refresh();
    expect(r.resolve(null, blue)).toBe('two-two');
    writeFileSync(f, 'netns blue\n');
    r.refresh();
    expect(r.resolve(null, blue)).toBe('two-two');
    expect(r.stats()).toMatchObject({ workload_rules: 1, workload_rules_reloads: 1, workload_rules_errors: 1 });
    // SIGHUP: re-read whether or not the file looks changed
    writeFileSync(f, 'netns blue three\n');
    expect(r.reloadRules()).toBe(true);
    expect(r.resolve(null, blue)).toBe('three');
  });
});

describe('ip netns names', () => {
  it('a namespace added after start is named on its first record; one not mounted yet is looked at again', () => {
    let mounted = false;
    const r = resolver({ isNetnsMount: (st) => mounted || st.size > 0 });
    const early = netns('early');
    writeFileSync(join(root, 'run/netns', 'early'), 'x'); // "mounted"
    r.refresh();
    expect(r.resolve(null, early)).toBe('early');
    const late = netns('late'); // created, not mounted yet
    expect(r.resolve(null, late)).toBe('host');
    mounted = true;
    r.refresh();
    expect(r.resolve(null, late)).toBe('late');
  });
});

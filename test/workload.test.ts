// Scenario: workload attribution on the host. Real kernel capture → producer → bundled broker → decoding reader:
// traffic between two `ip netns add` namespaces carries their names (a rule file renames one, also when the file
// changes under a running producer), and processes moved into cgroups shaped like a Kubernetes pod and a docker
// container are billed to that pod / container — with every connection's bytes exact.
import { execFile } from 'child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'fs';
import { join } from 'path';
import { silentLogger } from '../lib/log';
import { createProducer, type NettallyProducer, type ProducerConfig } from '../producer/producer';
import type { Decoded } from '../schemas/index';
import { startTestBroker, type InProcessBroker } from './helpers/broker';
import { movedOf, randomPort, startServer, transfer, TRAFFIC_PY, type Moved } from './helpers/capture';
import { Cleanups } from './helpers/cleanups';
import { createNetnsPair, type NetnsPair } from './helpers/netns';
import { readTopic, startProducerProcess } from './helpers/producer';

const TCP = 6;
const cleanups = new Cleanups();
let pair: NetnsPair;
let broker: InProcessBroker;
let pins = 0;

beforeAll(async () => {
  pair = createNetnsPair('wl');
  cleanups.push(() => pair.destroy());
  broker = await startTestBroker({ logger: silentLogger });
  cleanups.push(() => broker.stop());
});
afterAll(() => cleanups.run());

function config(topic: string, over: Partial<ProducerConfig> = {}): ProducerConfig {
  const pinDir = `/sys/fs/bpf/nettally-wltest-${process.pid}-${pins++}`;
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }));
  return {
    stateDir: cleanups.tempDir('wlstate'), kafka: { clientId: 'nettally-test', brokers: [broker.address] }, topic, pinDir,
    spoolMaxBytes: 64 << 20, fsync: 'never', batchMaxRecords: 1000, batchMaxBytes: 1 << 20, batchMaxMs: 50,
    flushIntervalMs: 500, flushThresholdBytes: 1 << 20, ifaceIntervalMs: 0, compression: 'none', idempotent: false,
    shutdownTimeoutMs: 10_000, statusIntervalMs: 0, ...over,
  };
}

async function started(c: ProducerConfig): Promise<NettallyProducer> {
  const p = createProducer({ config: c, logger: silentLogger });
  cleanups.push(() => p.stop());
  await p.start();
  return p;
}

type ConnDecoded = Extract<Decoded, { kind: 'conn_sample' | 'conn_event' }>;

/** The records of one socket (its netns and ports), as the topic holds them. */
function recordsOf(recs: Decoded[], netns: number, m: Moved): ConnDecoded['record'][] {
  return recs
    .filter((d): d is ConnDecoded => d.kind === 'conn_sample' || d.kind === 'conn_event')
    .map((d) => d.record)
    .filter((r) => r.netns === netns && r.protocol === TCP && r.sport === m.sport && r.dport === m.dport);
}

const closed = (rs: ConnDecoded['record'][]): boolean => rs.some((r) => 'event' in r && r.event === 'closed');

/** Every wanted socket: its workload on every record, and its final counters equal to what it moved. */
async function expectWorkloads(topic: string, want: Array<{ netns: number; m: Moved; workload: string }>): Promise<Decoded[]> {
  const recs = await readTopic(broker.address, topic, { until: (all) => want.every((w) => closed(recordsOf(all, w.netns, w.m))), timeoutMs: 90_000 });
  for (const w of want) {
    const rs = recordsOf(recs, w.netns, w.m);
    const got = { sport: w.m.sport, workloads: [...new Set(rs.map((r) => r.workload))], tx: Math.max(...rs.map((r) => r.tx_bytes)), rx: Math.max(...rs.map((r) => r.rx_bytes)) };
    expect(got).toEqual({ sport: w.m.sport, workloads: [w.workload], tx: w.m.tx, rx: w.m.rx });
  }
  return recs;
}

async function until(what: string, cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('two named namespaces are their workloads; a rule file renames one, and an edited file renames the other live', async () => {
  const rules = join(cleanups.tempDir('wlrules'), 'workloads.rules');
  writeFileSync(rules, `# tenants by namespace\nnetns ${pair.a.name} tenant-a\n`);
  const producer = await started(config('wl.names', { workloadRules: rules, ifaceIntervalMs: 500 }));

  const first = await transfer(pair, 'tcp', 4, ['--conns', '3', '--reply', '4567'], ['--conns', '3', '--bytes', '123457']);
  const recs = await expectWorkloads('wl.names', [
    ...first.client.map((m) => ({ netns: pair.a.inode, m, workload: 'tenant-a' })),
    ...first.server.map((m) => ({ netns: pair.b.inode, m, workload: pair.b.name })),
  ]);
  const listen = recs.find((d) => d.kind === 'listen' && d.record.netns === pair.b.inode && d.record.port === first.port);
  expect(listen?.record.workload).toBe(pair.b.name);
  // Interface records have no process: the namespace's rule or name.
  const ifaces = await readTopic(broker.address, 'wl.names', { until: (all) => [pair.a.inode, pair.b.inode].every((ns) => all.some((d) => d.kind === 'iface' && d.record.netns === ns)) });
  const ifaceWorkloads = (ns: number): string[] => [...new Set(ifaces.filter((d) => d.kind === 'iface' && d.record.netns === ns).map((d) => d.record.workload))];
  expect([ifaceWorkloads(pair.a.inode), ifaceWorkloads(pair.b.inode)]).toEqual([['tenant-a'], [pair.b.name]]);

  // The file changes under the running producer (by inode number this time): it is re-read, no restart.
  const reloads = producer.status().workload_rules_reloads;
  writeFileSync(rules, `netns ${pair.a.name} tenant-a\n# by inode\nnetns ${pair.b.inode} tenant-b\n`);
  await until('the rule file to be re-read', () => producer.status().workload_rules_reloads > reloads);
  const second = await transfer(pair, 'tcp', 6, ['--conns', '2', '--reply', '999'], ['--conns', '2', '--bytes', '31337']);
  await expectWorkloads('wl.names', [
    ...second.client.map((m) => ({ netns: pair.a.inode, m, workload: 'tenant-a' })),
    ...second.server.map((m) => ({ netns: pair.b.inode, m, workload: 'tenant-b' })),
  ]);
  expect(producer.status()).toMatchObject({ workloads_overflow: 0, workload_rules_errors: 0 });
  await producer.stop();
}, 180_000);

/** Runs a command to its end; resolves with its stdout, rejects with its stderr (exit code other than 0). */
function spawnChecked(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd} ${args.join(' ')}: ${err.message} ${stderr}`)) : resolve(stdout)));
  });
}

/** The cgroup2 mount the kernel's default hierarchy lives on (the one /proc/<pid>/cgroup's "0::" line is relative to). */
function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[2] === 'cgroup2') return f[1];
  }
  throw new Error('no cgroup2 mount on this machine: the cgroup scenario needs the unified hierarchy');
}

/** Creates each missing directory of `rel` under the cgroup2 mount; removed (deepest first) by the cleanups. */
function makeCgroup(rel: string): string {
  const root = cgroup2Mount();
  let at = root;
  for (const part of rel.split('/').filter(Boolean)) {
    at = join(at, part);
    if (existsSync(at)) continue;
    mkdirSync(at);
    const dir = at;
    cleanups.push(() => rmdirSync(dir));
  }
  return at;
}

test('processes in a simulated pod and docker container cgroup are billed to the pod / container', async () => {
  const hex = (c: string): string => c.repeat(64);
  const uid1 = '0d3c1a5e-2b4f-4c6d-8e9f-a0b1c2d3e4f5';
  const uid2 = '7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9';
  const [k1, k2, d1, d2] = [hex('a'), hex('b'), hex('c'), hex('d')];
  const us = (u: string): string => u.replace(/-/g, '_'); // the systemd cgroup driver writes the uid with underscores
  const cgroups = {
    pod1: makeCgroup(`kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${us(uid1)}.slice/cri-containerd-${k1}.scope`),
    pod2: makeCgroup(`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us(uid2)}.slice/cri-containerd-${k2}.scope`),
    web: makeCgroup(`system.slice/docker-${d1}.scope`),
    anon: makeCgroup(`system.slice/docker-${d2}.scope`),
  };
  // The runtimes' state, where a host keeps it, under a root of the test's own (--workload-state-root): containerd's
  // OCI spec of pod 1's container (CRI annotations) and docker's config of the container named "web". Pod 2 and the
  // other container have no readable state: they fall back to their uid / short id.
  const state = cleanups.tempDir('wlstate-root');
  const task = join(state, 'run/containerd/io.containerd.runtime.v2.task/k8s.io', k1);
  mkdirSync(task, { recursive: true });
  writeFileSync(join(task, 'config.json'), JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-namespace': 'payments', 'io.kubernetes.cri.sandbox-name': 'api-7f9c', 'io.kubernetes.cri.sandbox-uid': uid1 } }));
  mkdirSync(join(state, 'var/lib/docker/containers', d1), { recursive: true });
  writeFileSync(join(state, 'var/lib/docker/containers', d1, 'config.v2.json'), JSON.stringify({ ID: d1, Name: '/web' }));
  // /run/netns is read under the same root: this one is the host's, so namespace b keeps its `ip netns` name.
  symlinkSync('/run/netns', join(state, 'run/netns'));
  const producer = await started(config('wl.cgroups', { workloadStateRoot: state }));

  const port = randomPort();
  const sizes = { pod1: 100_001, pod2: 100_002, web: 100_003, anon: 100_004 };
  const srv = await startServer(pair, 'tcp', 4, port, ['--conns', '4', '--reply', '777']);
  const client: Record<string, Moved> = {};
  for (const [name, cg] of Object.entries(cgroups)) {
    // The shell moves itself into the cgroup, then becomes the traffic generator in namespace a (which stays in the
    // cgroup): a process that exits right after its connection closes, as short-lived container processes do. It
    // joins the cgroup before `ip netns exec`, which mounts a fresh /sys without the cgroup2 mount.
    const script = 'cg=$0; ns=$1; shift; echo $$ > "$cg/cgroup.procs" && exec ip netns exec "$ns" python3 "$@"';
    const c = spawnChecked('sh', ['-c', script, cg, pair.a.name, TRAFFIC_PY, 'tcp-client', '--family', '4', '--host', pair.b.addr4, '--port', String(port), '--bytes', String(sizes[name as keyof typeof sizes])]);
    client[name] = movedOf(await c)[0];
  }
  const server = movedOf(await srv.done);
  const recs = await expectWorkloads('wl.cgroups', [
    { netns: pair.a.inode, m: client.pod1, workload: 'payments/api-7f9c' },
    { netns: pair.a.inode, m: client.pod2, workload: `pod/${uid2}` },
    { netns: pair.a.inode, m: client.web, workload: 'container/web' },
    { netns: pair.a.inode, m: client.anon, workload: `container/${d2.slice(0, 12)}` },
    ...server.map((m) => ({ netns: pair.b.inode, m, workload: pair.b.name })),
  ]);
  // The kernel's cgroup id of a record is its cgroup directory's inode: what the producer looks a cgroup up by when
  // the process has exited before its records were shipped (producer/host.ts CgroupIndex).
  for (const [name, cg] of Object.entries(cgroups)) {
    expect({ name, ids: [...new Set(recordsOf(recs, pair.a.inode, client[name]).map((r) => r.cgroup_id))] }).toEqual({ name, ids: [statSync(cg).ino] });
  }
  await producer.stop();
}, 180_000);

test('nettally producer refuses a bad rule file at start naming file:line, before it loads anything; SIGHUP re-reads a good one', async () => {
  const dir = cleanups.tempDir('wlbad');
  const bad = join(dir, 'workloads.rules');
  writeFileSync(bad, '# tenants\nnetns blue tenant-blue\nnetns green\n');
  const p = startProducerProcess(['--workload-rules', bad, '--brokers', broker.address, '--state-dir', join(dir, 'state'), '--pin-dir', 'none']);
  cleanups.push(() => p.child.kill('SIGKILL'));
  expect(await p.exited).toBe(2);
  expect(p.stderr()).toContain(`workload rules ${bad}:3: expected "<cgroup|netns> <glob> <name>"`);
  expect(existsSync(join(dir, 'state'))).toBe(false);

  // A good file, and SIGHUP re-reads it (and does not stop the producer, as it would stop a node process by default).
  writeFileSync(bad, '# tenants\nnetns blue tenant-blue\n');
  const ok = startProducerProcess(['--workload-rules', bad, '--brokers', broker.address, '--state-dir', join(dir, 'state'), '--pin-dir', 'none', '--iface-interval', '0']);
  cleanups.push(() => ok.child.kill('SIGKILL'));
  await ok.ready;
  ok.child.kill('SIGHUP');
  await until('the reload after SIGHUP', () => ok.stderr().includes('workload rules reloaded')).catch((e: Error) => { throw new Error(`${e.message}: ${ok.stderr().slice(-3000)}`); });
  ok.child.kill('SIGTERM');
  expect(await ok.exited).toBe(0);
}, 120_000);

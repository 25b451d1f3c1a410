// Scenario: per-interface wire counters are exact where the transmit path is not a plain veth: a stacked device
// (bridge over veth: the lower device transmits inside the bridge's own driver call), transmits the driver refuses,
// and more interfaces than the per-CPU slots hold (the hash map behind them).
import { execFileSync } from 'child_process';
import { statSync } from 'fs';
import { openCapture } from '../producer/capture';
import { Collector } from './helpers/capture';
import { ifaceBaseline, ifaceCountedSince, sendUdp, ZERO, type Counts } from './helpers/iface';
import { createNetnsPair, ifindexOf } from './helpers/netns';

const IP = 20;
const UDP = 8;

let col: Collector;
const namespaces: string[] = [];

beforeAll(async () => {
  col = new Collector(await openCapture({ ifaceIntervalMs: 100 }));
});

afterAll(async () => {
  await col?.end();
  for (const ns of namespaces) deleteNetns(ns);
});

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function deleteNetns(ns: string): void {
  try {
    ip(['netns', 'del', ns]);
  } catch {
    // already gone
  }
}

/** A namespace with IPv6 off, so that no packet but the test's own (no DAD, MLD, router solicitation) is sent. */
function quietNetns(tag: string): { name: string; inode: number } {
  const name = `nt-${tag}-${process.pid.toString(36)}-${namespaces.length}`;
  ip(['netns', 'add', name]);
  namespaces.push(name);
  for (const k of ['all', 'default']) {
    execFileSync('ip', ['netns', 'exec', name, 'sysctl', '-qw', `net.ipv6.conf.${k}.disable_ipv6=1`], { stdio: 'ignore' });
  }
  ip(['-n', name, 'link', 'set', 'lo', 'up']);
  return { name, inode: statSync(`/var/run/netns/${name}`).ino };
}

const baseline = (ns: string, netns: number, ifindexes: number[]): Promise<Map<number, Counts>> => ifaceBaseline(col, ns, netns, ifindexes);
const countedSince = (base: Map<number, Counts>, netns: number, ifindex: number, ready: (c: Counts) => boolean): Promise<Counts> =>
  ifaceCountedSince(col, base, netns, ifindex, ready);

test('a bridge over veth: the bridge, its port and the peer each count every packet once', async () => {
  const a = quietNetns('ifbr');
  const b = quietNetns('ifbrp');
  // no multicast snooping: it makes the bridge join the all-snoopers group (IGMP reports of its own)
  ip(['-n', a.name, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
  ip(['-n', a.name, 'link', 'add', 'vA', 'type', 'veth', 'peer', 'name', 'vB', 'netns', b.name]);
  ip(['-n', a.name, 'link', 'set', 'vA', 'master', 'br0']);
  ip(['-n', a.name, 'addr', 'add', '10.78.0.1/24', 'dev', 'br0']);
  // a static neighbour (no ARP); vB has no address, so its namespace drops what it receives without answering
  ip(['-n', a.name, 'neigh', 'add', '10.78.0.2', 'lladdr', '02:00:00:00:78:02', 'dev', 'br0', 'nud', 'permanent']);
  for (const dev of ['vA', 'br0']) ip(['-n', a.name, 'link', 'set', dev, 'up']);
  ip(['-n', b.name, 'link', 'set', 'vB', 'up']);

  const [br, port, peer] = [ifindexOf(a.name, 'br0'), ifindexOf(a.name, 'vA'), ifindexOf(b.name, 'vB')];
  const baseA = await baseline(a.name, a.inode, [br, port]);
  const baseB = await baseline(b.name, b.inode, [peer]);

  await sendUdp(a.name, [['10.78.0.2', 1000, 50]]);
  const sent = { rx_bytes: 0, rx_packets: 0, tx_bytes: 50 * (1000 + UDP + IP), tx_packets: 50 };
  expect(await countedSince(baseA, a.inode, br, (c) => c.tx_packets >= 50)).toEqual(sent);
  expect(await countedSince(baseA, a.inode, port, (c) => c.tx_packets >= 50)).toEqual(sent);
  expect(await countedSince(baseB, b.inode, peer, (c) => c.rx_packets >= 50)).toEqual({ rx_bytes: sent.tx_bytes, rx_packets: 50, tx_bytes: 0, tx_packets: 0 });
});

test('a transmit the driver refuses is not counted, and the ones around it are', async () => {
  const pair = createNetnsPair('ifdrop', { quiet: true });
  try {
    // veth hands a packet longer than the peer's MTU back as NET_XMIT_DROP (rc != 0 at net_dev_xmit)
    ip(['-n', pair.b.name, 'link', 'set', pair.b.dev, 'mtu', '1000']);
    const dev = ifindexOf(pair.a.name, pair.a.dev);
    const base = await baseline(pair.a.name, pair.a.inode, [dev]);
    await sendUdp(pair.a.name, [
      [pair.b.addr4, 500, 10],
      [pair.b.addr4, 1200, 20],
      [pair.b.addr4, 500, 20],
    ]);
    // the receiver answers datagrams with ICMP port unreachable (rate limited): only transmits are asserted. The
    // refused packets were sent before the last 20 good ones: once those are counted, a wrong count would be too.
    const c = await countedSince(base, pair.a.inode, dev, (x) => x.tx_packets >= 30);
    expect({ tx_bytes: c.tx_bytes, tx_packets: c.tx_packets }).toEqual({ tx_bytes: 30 * (500 + UDP + IP), tx_packets: 30 });
  } finally {
    pair.destroy();
  }
});

/** The kernel's slot for (netns, ifindex): bpf/hooks/iface.h, iface_add. */
function slotOf(netns: number, ifindex: number): number {
  return Math.imul((netns ^ (ifindex << 16)) >>> 0, 2654435761) >>> (32 - 6);
}

test('more interfaces than slots: the ones whose slot is taken count exactly in the hash map', async () => {
  const a = quietNetns('ifmany');
  const n = 80;
  const batch: string[] = [];
  for (let i = 0; i < n; i++) {
    batch.push(`link add m${i}a address 02:00:00:79:${i.toString(16).padStart(2, '0')}:01 type veth peer name m${i}b`);
    batch.push(`addr add 10.79.${i}.1/30 dev m${i}a`);
    batch.push(`link set m${i}a up`, `link set m${i}b up`);
    batch.push(`neigh add 10.79.${i}.2 lladdr 02:00:00:79:${i.toString(16).padStart(2, '0')}:02 dev m${i}a nud permanent`);
  }
  execFileSync('ip', ['-n', a.name, '-batch', '-'], { input: batch.join('\n') + '\n', stdio: ['pipe', 'ignore', 'pipe'] });
  const devs = Array.from({ length: n }, (_, i) => ({ i, tx: ifindexOf(a.name, `m${i}a`), rx: ifindexOf(a.name, `m${i}b`) }));
  // ground truth of the setup: 160 keys over 64 slots, so most interfaces go to the hash map on every CPU
  expect(new Set(devs.flatMap((d) => [slotOf(a.inode, d.tx), slotOf(a.inode, d.rx)])).size).toBeLessThanOrEqual(64);

  const base = await baseline(a.name, a.inode, devs.flatMap((d) => [d.tx, d.rx]));

  // interface i sends i + 1 datagrams: a count in the wrong key or a lost first packet shows
  await sendUdp(a.name, devs.map((d): [string, number, number] => [`10.79.${d.i}.2`, 100, d.i + 1]));
  for (const d of devs) {
    const bytes = (d.i + 1) * (100 + UDP + IP);
    const tx = await countedSince(base, a.inode, d.tx, (c) => c.tx_packets >= d.i + 1);
    // m<i>b has no address: its namespace drops what it receives (no answer)
    const rx = await countedSince(base, a.inode, d.rx, (c) => c.rx_packets >= d.i + 1);
    expect({ i: d.i, tx, rx }).toEqual({ i: d.i, tx: { ...ZERO, tx_bytes: bytes, tx_packets: d.i + 1 }, rx: { ...ZERO, rx_bytes: bytes, rx_packets: d.i + 1 } });
  }
  expect(col.cap.stats().iface_map_full).toBe(0);
});

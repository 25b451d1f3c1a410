// Test helper for per-interface counters: counts since a baseline, because (netns inode, ifindex) keys get reused.
import type { IfaceRecord } from '../../producer/capture';
import type { Collector } from './capture';
import { nsSpawn } from './netns';

export type Counts = Pick<IfaceRecord, 'rx_bytes' | 'rx_packets' | 'tx_bytes' | 'tx_packets'>;
export const ZERO: Counts = { rx_bytes: 0, rx_packets: 0, tx_bytes: 0, tx_packets: 0 };

/** Sends UDP datagrams from inside `ns`: `plan` is a list of [destination address, payload bytes, count]. */
export async function sendUdp(ns: string, plan: [string, number, number][]): Promise<void> {
  const script = `
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for addr, size, count in json.loads(sys.argv[1]):
    for _ in range(count):
        s.sendto(b'n' * size, (addr, 9))
`;
  await nsSpawn(ns, 'python3', ['-c', script, JSON.stringify(plan)]).done;
}

/** The counters of the latest IFACE record of (netns, ifindex), zero without one. */
export function latestIface(col: Collector, netns: number, ifindex: number): Counts {
  const r = col.records.filter((x): x is IfaceRecord => x.kind === 5 && x.netns === netns && x.ifindex === ifindex).pop();
  return r ? { rx_bytes: r.rx_bytes, rx_packets: r.rx_packets, tx_bytes: r.tx_bytes, tx_packets: r.tx_packets } : { ...ZERO };
}

/**
 * Counters of these interfaces before a test's traffic. Netns inodes are reused once a namespace is deleted (by this
 * test or anyone else on the machine while the capture runs), and counters are kept per (netns inode, ifindex): a
 * fresh interface can start from a deleted one's totals. A datagram over the namespace's lo (which must be up) marks
 * a point in time: once its IFACE record arrived, every counter read in the same pass is in the records (records
 * carry changes only, so an unchanged counter's latest record is current).
 */
export async function ifaceBaseline(col: Collector, ns: string, netns: number, ifindexes: number[]): Promise<Map<number, Counts>> {
  const mark = col.records.length;
  await sendUdp(ns, [['127.0.0.1', 1, 1]]);
  await col.waitFor(() => col.records.slice(mark).some((r) => r.kind === 5 && r.netns === netns && r.ifindex === 1), 30000);
  return new Map(ifindexes.map((i) => [i, latestIface(col, netns, i)]));
}

/** What (netns, ifindex) counted since `base`, once `ready` holds for it. */
export async function ifaceCountedSince(col: Collector, base: Map<number, Counts>, netns: number, ifindex: number, ready: (c: Counts) => boolean): Promise<Counts> {
  const b = base.get(ifindex) ?? ZERO;
  const delta = (): Counts => {
    const c = latestIface(col, netns, ifindex);
    return { rx_bytes: c.rx_bytes - b.rx_bytes, rx_packets: c.rx_packets - b.rx_packets, tx_bytes: c.tx_bytes - b.tx_bytes, tx_packets: c.tx_packets - b.tx_packets };
  };
  await col.waitFor(() => ready(delta()), 30000);
  return delta();
}

// Test/bench helper: rollup points with known totals, shaped exactly as the consumer writes them (consumer/
// aggregator.ts: window start, the traffic tags plus `partition`, integer fields and `final`), 1-minute windows and
// the 1-hour windows summed from them. Written with consumer/influx.ts's InfluxClient, as the consumer writes.
import type { OutPoint } from '../../consumer/windows';

const MINUTE = 60_000;
const HOUR = 3_600_000;

export interface RollupSpec {
  hosts: number;
  /** Services per host: (protocol, port, comm, direction). */
  services?: { protocol: string; port: string; comm: string; direction: string }[];
  /** First and last (inclusive) minute window start, Unix ms (whole minutes). */
  fromMs: number;
  toMs: number;
  /** Windows ending at or before this are final (the consumer's watermark). */
  watermarkMs: number;
  /** Host indexes whose points are split over two Kafka partitions (readers must sum over `partition`). */
  splitHosts?: number[];
}

export const DEFAULT_SERVICES = [
  { protocol: 'tcp', port: '443', comm: 'nginx', direction: 'inbound' },
  { protocol: 'tcp', port: '5432', comm: 'postgres', direction: 'outbound' },
  // Process names are chosen by any user (15 bytes): markup, a backslash (stored as \x5c: consumer/influx.ts
  // encodeTagText), a tab and CSV/line-protocol specials must come back as the same text everywhere.
  { protocol: 'udp', port: '53', comm: '<i>\\x</i>\t"a,b', direction: 'outbound' },
];

export function hostId(h: number): string {
  return `${(h + 1).toString(16).padStart(8, '0')}c0ffee${'0'.repeat(18)}`;
}

export function hostName(h: number): string {
  return `web-${String(h + 1).padStart(3, '0')}`;
}

/** Bytes of one (host, service, minute): deterministic, different per host and service, varying over time. */
export function bytesAt(h: number, s: number, minuteMs: number): { tx: number; rx: number } {
  const m = Math.floor(minuteMs / MINUTE);
  const wave = 1 + ((m * 7 + h * 13 + s * 5) % 17);
  return { tx: (h + 1) * 1000 * (s + 1) * wave + (m % 7), rx: (h + 2) * 700 * (s + 2) * wave + (m % 5) };
}

function tagsOf(h: number, svc: { protocol: string; port: string; comm: string; direction: string }, partition: number): Record<string, string> {
  return {
    partition: String(partition), host_id: hostId(h), hostname: hostName(h), netns: String(4026531840 + (h % 3)), protocol: svc.protocol, direction: svc.direction, service_port: svc.port, comm: svc.comm,
    // two workloads spread over hosts and services; the remote class follows the direction
    workload: `team-${(h + Number(svc.port)) % 2 === 0 ? 'a' : 'b'}`, remote_class: svc.direction === 'inbound' ? 'internet' : 'internal',
  };
}

/** Calls `emit` with batches of points (1-minute then 1-hour windows), so 24 h × 300 hosts never sits in memory at once. */
export function* rollupBatches(spec: RollupSpec, batch = 20_000): Generator<OutPoint[]> {
  const services = spec.services ?? DEFAULT_SERVICES;
  const split = new Set(spec.splitHosts ?? []);
  let out: OutPoint[] = [];
  const hourly = new Map<string, OutPoint>();
  for (let h = 0; h < spec.hosts; h++) {
    for (let s = 0; s < services.length; s++) {
      for (let t = spec.fromMs; t <= spec.toMs; t += MINUTE) {
        const { tx, rx } = bytesAt(h, s, t);
        // A split host's window is half in partition 0, half in 1 (a host moved partitions mid-window).
        const parts = split.has(h) ? [{ p: 0, tx: Math.floor(tx / 2), rx: Math.floor(rx / 2) }, { p: 1, tx: tx - Math.floor(tx / 2), rx: rx - Math.floor(rx / 2) }] : [{ p: h % 4, tx, rx }];
        for (const part of parts) {
          const tags = tagsOf(h, services[s], part.p);
          // open connections at the window's end: a count per window (the hour keeps its first minute's, never a sum)
          const fields = { final: t + MINUTE <= spec.watermarkMs, tx_bytes: part.tx, rx_bytes: part.rx, connections_opened: 1, connections_closed: 1, retransmits: 0, active_connections: 1 + ((h + s) % 3), peak_connections: 2 + ((h + s) % 3) };
          out.push({ measurement: 'nettally_traffic_1m', tags, fields, time_ms: t });
          const hour = Math.floor(t / HOUR) * HOUR;
          const key = `${hour}/${h}/${s}/${part.p}`;
          const hp = hourly.get(key);
          if (!hp) hourly.set(key, { measurement: 'nettally_traffic_1h', tags, fields: { ...fields, final: hour + HOUR <= spec.watermarkMs }, time_ms: hour });
          else for (const f of ['tx_bytes', 'rx_bytes', 'connections_opened', 'connections_closed', 'retransmits']) (hp.fields[f] as number) += fields[f as keyof typeof fields] as number;
          if (out.length >= batch) {
            yield out;
            out = [];
          }
        }
      }
    }
    for (const p of hourly.values()) out.push(p);
    hourly.clear();
  }
  if (out.length > 0) yield out;
}

/** Interface points as the consumer writes them: per (host, netns, ifindex) and partition, 1-minute windows. */
export function ifacePoints(s: RollupSpec): OutPoint[] {
  const out: OutPoint[] = [];
  for (let h = 0; h < s.hosts; h++) {
    for (const ifindex of ['1', '2']) {
      for (let t = s.fromMs; t <= s.toMs; t += MINUTE) {
        const m = t / MINUTE;
        const tags = { partition: String(h % 2), host_id: hostId(h), hostname: hostName(h), netns: '4026531840', ifindex };
        out.push({ measurement: 'nettally_iface_1m', tags, fields: { final: t + MINUTE <= s.watermarkMs, rx_bytes: 1500 * (h + 1) + (m % 11) * Number(ifindex), tx_bytes: 900 * (h + 1) + (m % 13), rx_packets: 10, tx_packets: 7 }, time_ms: t });
      }
    }
  }
  return out;
}

/** Ground truth: tx/rx per host over minute windows with start in [fromMs, toMs). */
export function truthPerHost(spec: RollupSpec, fromMs: number, toMs: number): Map<number, { tx: number; rx: number }> {
  const services = spec.services ?? DEFAULT_SERVICES;
  const out = new Map<number, { tx: number; rx: number }>();
  for (let h = 0; h < spec.hosts; h++) {
    const sum = { tx: 0, rx: 0 };
    for (let s = 0; s < services.length; s++) {
      for (let t = spec.fromMs; t <= spec.toMs; t += MINUTE) {
        if (t < fromMs || t >= toMs) continue;
        const b = bytesAt(h, s, t);
        sum.tx += b.tx;
        sum.rx += b.rx;
      }
    }
    out.set(h, sum);
  }
  return out;
}

// Kernel record → Avro record of the wire contract: adds host identity, (epoch, seq), time_ns and enrichment.
import type { RecordByKind, RecordKind as WireKind } from '../schemas/index';
import type { ConnRecord, KernelRecord } from './capture';
import type { HostIdentity, ProcessInfo } from './host';

/** Kernel kinds (bpf/nettally.h NT_KIND_*). */
export const KIND_CONN_OPEN = 1;
export const KIND_CONN_SAMPLE = 2;
export const KIND_CONN_CLOSE = 3;
export const KIND_LISTEN = 4;
export const KIND_IFACE = 5;

export interface WireContext {
  host: HostIdentity;
  epoch: number;
  nextSeq(): number;
  toUnixNs(ts_ns: number): bigint;
  enrich(pid: number): ProcessInfo;
}

export type WireRecord = { [K in WireKind]: { kind: K; record: RecordByKind[K] } }[WireKind];

function common(ctx: WireContext, ts_ns: number) {
  return {
    host_id: ctx.host.host_id,
    hostname: ctx.host.hostname,
    boot_id: ctx.host.boot_id,
    epoch: ctx.epoch,
    seq: ctx.nextSeq(),
    time_ns: ctx.toUnixNs(ts_ns),
    ts_ns,
  };
}

// Built as one literal (no spread): spreading the common fields into a 28-field object costs ~10x in V8.
function connFields(r: ConnRecord, ctx: WireContext) {
  const info = ctx.enrich(r.pid);
  return {
    host_id: ctx.host.host_id,
    hostname: ctx.host.hostname,
    boot_id: ctx.host.boot_id,
    epoch: ctx.epoch,
    seq: ctx.nextSeq(),
    time_ns: ctx.toUnixNs(r.ts_ns),
    ts_ns: r.ts_ns,
    cookie: r.cookie,
    start_ns: r.start_ns,
    tx_bytes: r.tx_bytes,
    rx_bytes: r.rx_bytes,
    retransmits: r.retransmits,
    cgroup_id: r.cgroup_id,
    netns: r.netns,
    netns_cookie: r.netns_cookie,
    pid: r.pid,
    uid: r.uid,
    comm: r.comm,
    family: r.family,
    protocol: r.protocol,
    direction: r.direction,
    saddr: r.saddr,
    daddr: r.daddr,
    sport: r.sport,
    dport: r.dport,
    flush_reason: r.flush_reason as string,
    cgroup_path: info.cgroup_path,
    container_id: info.container_id,
  };
}

/** The wire record for one kernel record, or undefined for kinds that are not shipped (benchmark-only naive records). */
export function toWire(r: KernelRecord, ctx: WireContext): WireRecord | undefined {
  switch (r.kind) {
    case KIND_CONN_SAMPLE:
      return { kind: 'conn_sample', record: connFields(r as ConnRecord, ctx) };
    case KIND_CONN_OPEN:
    case KIND_CONN_CLOSE: {
      const c = r as ConnRecord;
      const closed = r.kind === KIND_CONN_CLOSE;
      const record = connFields(c, ctx) as RecordByKind['conn_event'];
      record.event = closed ? 'closed' : 'established';
      record.duration_ns = closed ? c.duration_ns || Math.max(0, c.ts_ns - c.start_ns) : 0;
      return { kind: 'conn_event', record };
    }
    case KIND_LISTEN: {
      const l = r as Extract<KernelRecord, { kind: typeof KIND_LISTEN }>;
      const info = ctx.enrich(l.pid);
      return {
        kind: 'listen',
        record: {
          ...common(ctx, l.ts_ns),
          cookie: l.cookie,
          netns: l.netns,
          netns_cookie: l.netns_cookie,
          pid: l.pid,
          uid: l.uid,
          comm: l.comm,
          family: l.family,
          addr: l.addr,
          port: l.port,
          backlog: l.backlog,
          protocol: l.protocol,
          cgroup_path: info.cgroup_path,
          container_id: info.container_id,
        },
      };
    }
    case KIND_IFACE: {
      const i = r as Extract<KernelRecord, { kind: typeof KIND_IFACE }>;
      return {
        kind: 'iface',
        record: {
          ...common(ctx, i.ts_ns),
          netns: i.netns,
          ifindex: i.ifindex,
          rx_bytes: i.rx_bytes,
          rx_packets: i.rx_packets,
          tx_bytes: i.tx_bytes,
          tx_packets: i.tx_packets,
        },
      };
    }
    default:
      return undefined;
  }
}

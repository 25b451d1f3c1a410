// Kernel record → Avro record of the wire contract: adds host identity, (epoch, seq), time_ns and enrichment.
// The one hand-written mapping between the two generated sides: kernel records (producer/layout.generated.ts via
// producer/records.ts) and wire records (schemas/types.generated.ts). Every builder is annotated with its wire type,
// so a field missing or unknown on either side is a type error.
import type { RecordByKind, RecordKind as WireKind } from '../schemas/index';
import { KernelKind, type ConnRecord, type IfaceRecord, type KernelRecord, type ListenRecord } from './records';
import type { HostIdentity, ProcessInfo } from './host';

export interface WireContext {
  host: HostIdentity;
  epoch: number;
  nextSeq(): number;
  toUnixNs(ts_ns: number): bigint;
  /** The process's cgroup and container; `cgroupId` (the kernel's, when the record has one) wins over the pid. */
  enrich(pid: number, cgroupId?: number): ProcessInfo;
  /** The workload a record is billed to, from its process's cgroup (null for interfaces) and its network namespace. */
  workload(info: ProcessInfo | null, netns: number): string;
}

export type WireRecord = { [K in WireKind]: { kind: K; record: RecordByKind[K] } }[WireKind];

/** The fields the producer adds to every record. */
type Common = Pick<RecordByKind['iface'], 'host_id' | 'hostname' | 'boot_id' | 'epoch' | 'seq' | 'time_ns' | 'ts_ns'>;

function common(ctx: WireContext, ts_ns: number): Common {
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

type Enrichment = Pick<RecordByKind['listen'], 'cgroup_path' | 'container_id' | 'workload'>;

function enrichment(ctx: WireContext, pid: number, netns: number): Enrichment {
  const info = ctx.enrich(pid);
  return { cgroup_path: info.cgroup_path, container_id: info.container_id, workload: ctx.workload(info, netns) };
}

type KernelOf<W extends WireKind> = W extends 'listen' ? ListenRecord : W extends 'iface' ? IfaceRecord : never;
type Own<R> = Omit<R, 'kind' | 'ts_ns'>;
type SameKeys<A, B> = [Exclude<keyof A, keyof B>, Exclude<keyof B, keyof A>] extends [never, never] ? true : false;

/**
 * The kernel record's own fields (all but kind and ts_ns), copied by name: for kinds whose kernel and wire fields are
 * the same. `same` is `true` only while the kernel record has exactly the wire record's fields less those the producer
 * adds, so a field added on one side only does not compile (the spread into the typed wire record checks the types).
 * Not for the connection records: they are built as one literal (connFields) for speed.
 */
function sameFields<W extends 'listen' | 'iface'>(r: KernelOf<W>, same: SameKeys<Own<KernelOf<W>>, Omit<RecordByKind[W], keyof Common | keyof Enrichment>>): Own<KernelOf<W>> {
  void same;
  const { kind: _kind, ts_ns: _ts, ...own } = r;
  return own;
}

// Built as one literal (no spread): spreading the common fields into a 28-field object costs ~10x in V8.
function connFields(r: ConnRecord, ctx: WireContext): RecordByKind['conn_sample'] {
  const info = ctx.enrich(r.pid, r.cgroup_id);
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
    flush_reason: r.flush_reason,
    cgroup_path: info.cgroup_path,
    container_id: info.container_id,
    workload: ctx.workload(info, r.netns),
  };
}

/** The wire record for one kernel record, or undefined for kinds that are not shipped (benchmark-only naive records). */
export function toWire(r: KernelRecord, ctx: WireContext): WireRecord | undefined {
  switch (r.kind) {
    case KernelKind.CONN_SAMPLE:
      return { kind: 'conn_sample', record: connFields(r, ctx) };
    case KernelKind.CONN_OPEN:
    case KernelKind.CONN_CLOSE: {
      const closed = r.kind === KernelKind.CONN_CLOSE;
      // The conn_event-only fields, typed so a new one in conn_event.avsc must be supplied here; set on the
      // conn_sample literal in place (Object.assign or a spread measured 2.5x to 500x slower on this hot path).
      const extra: Omit<RecordByKind['conn_event'], keyof RecordByKind['conn_sample']> = {
        event: closed ? 'closed' : 'established',
        duration_ns: closed ? r.duration_ns || Math.max(0, r.ts_ns - r.start_ns) : 0,
      };
      const record = connFields(r, ctx) as RecordByKind['conn_event'];
      record.event = extra.event;
      record.duration_ns = extra.duration_ns;
      return { kind: 'conn_event', record };
    }
    case KernelKind.LISTEN: {
      const record: RecordByKind['listen'] = { ...common(ctx, r.ts_ns), ...sameFields<'listen'>(r, true), ...enrichment(ctx, r.pid, r.netns) };
      return { kind: 'listen', record };
    }
    case KernelKind.IFACE: {
      const record: RecordByKind['iface'] = { ...common(ctx, r.ts_ns), ...sameFields<'iface'>(r, true), workload: ctx.workload(null, r.netns) };
      return { kind: 'iface', record };
    }
    default:
      return undefined;
  }
}

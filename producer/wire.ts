// Kernel record → Avro record of the wire contract: adds host identity, (epoch, seq), time_ns and enrichment.
// The one hand-written mapping between the two generated sides: kernel records (producer/records.ts, decoded from
// bpf/nettally.h) and wire records (schemas/types.generated.ts). A wire field the kernel record has by the same name is
// copied by the generated builders (producer/wire.generated.ts); everything else is supplied here, typed by the wire
// record, so a field missing on either side is a type error in this file.
import type { RecordByKind, RecordKind as WireKind } from '../schemas/index';
import { KernelKind, type ConnRecord, type KernelRecord } from './records';
import type { HostIdentity, ProcessInfo } from './host';
import * as build from './wire.generated';

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

/** The fields the producer adds to every record (host identity, epoch, next seq, event time, workload). */
function head(ctx: WireContext, ts_ns: number, info: ProcessInfo | null, netns: number): build.Head {
  return {
    host_id: ctx.host.host_id,
    hostname: ctx.host.hostname,
    boot_id: ctx.host.boot_id,
    epoch: ctx.epoch,
    seq: ctx.nextSeq(),
    time_ns: ctx.toUnixNs(ts_ns),
    workload: ctx.workload(info, netns),
  };
}

/** The wire record for one kernel record, or undefined for kinds that are not shipped (benchmark-only naive records). */
export function toWire(r: KernelRecord, ctx: WireContext): WireRecord | undefined {
  switch (r.kind) {
    case KernelKind.CONN_SAMPLE:
      return { kind: 'conn_sample', record: connSample(r, ctx) };
    case KernelKind.CONN_OPEN:
    case KernelKind.CONN_CLOSE:
      return { kind: 'conn_event', record: connEvent(r, ctx) };
    case KernelKind.LISTEN: {
      const info = ctx.enrich(r.pid);
      return { kind: 'listen', record: build.listen(head(ctx, r.ts_ns, info, r.netns), r, info) };
    }
    case KernelKind.IFACE:
      return { kind: 'iface', record: build.iface(head(ctx, r.ts_ns, null, r.netns), r, {}) };
    default:
      return undefined;
  }
}

// The rest (x) of conn_sample and listen is the process enrichment itself (cgroup_path, container_id). The connection
// kinds, by far the most records, each have a function of their own: toWire measured 1.3x faster than with the
// builders called inline in the switch (bench/records.ts).
function connSample(r: ConnRecord, ctx: WireContext): RecordByKind['conn_sample'] {
  const info = ctx.enrich(r.pid, r.cgroup_id);
  return build.conn_sample(head(ctx, r.ts_ns, info, r.netns), r, info);
}

function connEvent(r: ConnRecord, ctx: WireContext): RecordByKind['conn_event'] {
  const info = ctx.enrich(r.pid, r.cgroup_id);
  const closed = r.kind === KernelKind.CONN_CLOSE;
  const x = {
    cgroup_path: info.cgroup_path,
    container_id: info.container_id,
    event: closed ? ('closed' as const) : ('established' as const),
    duration_ns: r.duration_ns, // set on CONN_CLOSE by every source (producer/records.ts decodeConn, synthetic), else 0
  };
  // The cast narrows `event` (a string in the .avsc) to the two values x gives it.
  return build.conn_event(head(ctx, r.ts_ns, info, r.netns), r, x) as RecordByKind['conn_event'];
}

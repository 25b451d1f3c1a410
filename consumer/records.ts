// The aggregator's input types, and the conversion of a record decoded by the schemas/ codec into them (field names
// unchanged, longs made exact).
import type { Decoded, RecordByKind } from '../schemas';

// The input types are derived from the wire record types (schemas/types.generated.ts, generated from the .avsc):
// a field keeps its name and type from the contract; only what consumer/records.ts converts is declared here.
type Wire<K extends keyof RecordByKind, F extends keyof RecordByKind[K]> = Pick<RecordByKind[K], F>;

/** What every record carries from the producer: identity for dedupe and connection keys, and event time. */
export interface RecordHeader extends Wire<'iface', 'host_id' | 'hostname' | 'boot_id' | 'epoch' | 'seq'> {
  /** Event time, Unix epoch milliseconds (time_ns / 1e6, floored). */
  time_ms: number;
  /**
   * Reference time, Unix epoch ms: the Kafka message timestamp (set by the producer at send, or by the broker with
   * LogAppendTime). Data in the log, so a replay sees the same value; absent or negative = no reference.
   */
  ref_ms?: number;
}

/** A connection record (wire kinds conn_sample and conn_event), normalised by consumer/records.ts. */
export interface ConnInput
  extends RecordHeader,
    Wire<'conn_sample', 'tx_bytes' | 'rx_bytes' | 'retransmits' | 'netns' | 'comm' | 'protocol' | 'direction' | 'sport' | 'dport' | 'flush_reason'>,
    Partial<Wire<'conn_sample', 'workload' | 'daddr'>> {
  kind: 'conn';
  event: 'open' | 'sample' | 'close';
  /**
   * The wire's u64 cookie: the number itself while it is a safe integer (every cookie a kernel hands out in practice:
   * they count up from 1), else its decimal text (exact beyond 2^53). Either way `${cookie}` is its decimal text.
   */
  cookie: string | number;
  /**
   * CLOCK_BOOTTIME ns at which the kernel started this counting of the connection (bpf conn_create, or the
   * established transition). The counters are cumulative since then: the same start_ns under a new producer epoch
   * means the counters continue (pinned maps); a different one means they restarted from zero (fresh maps).
   * Absent (older inputs) = unknown.
   */
  start_ns?: RecordByKind['conn_sample']['start_ns'];
}

export interface ListenInput extends RecordHeader, Wire<'listen', 'netns' | 'port' | 'protocol'> {
  kind: 'listen';
}

// workload (schema r2) and daddr: absent in inputs built by hand (tests, bench) = "" (tag `unknown`).
export interface IfaceInput extends RecordHeader, Wire<'iface', 'netns' | 'ifindex' | 'rx_bytes' | 'rx_packets' | 'tx_bytes' | 'tx_packets'>,
    Partial<Wire<'iface', 'workload'>> {
  kind: 'iface';
}

export type AggInput = ConnInput | ListenInput | IfaceInput;

/** Longs arrive as numbers when safe and as bigints beyond 2^53 (schemas/ ExactLong). */
function num(v: number | bigint): number {
  return typeof v === 'bigint' ? Number(v) : v;
}

/** Unix ns → ms, floored; exact for any real date. */
export function nsToMs(v: bigint | number): number {
  if (typeof v === 'bigint') {
    const q = v / 1_000_000n;
    return Number(v < 0n && q * 1_000_000n !== v ? q - 1n : q);
  }
  return Math.floor(v / 1e6);
}

/**
 * `refMs`: the Kafka message timestamp (ms; kafkajs gives it as a string). It bounds how far ahead of it a record's
 * time_ns may place the record (see PartitionAggregator); it is part of the log, so replays see the same value.
 */
export function toAggInput(d: Decoded, refMs?: number): AggInput {
  // Every input of one kind is built by one object literal with the same fields in the same order (ref_ms present,
  // undefined when there is none): the aggregator's property reads then see one shape per kind, not several.
  const r = d.record;
  const ref_ms = refMs !== undefined && Number.isFinite(refMs) && refMs >= 0 ? refMs : undefined;
  switch (d.kind) {
    case 'conn_sample':
    case 'conn_event': {
      const c = d.record;
      return {
        kind: 'conn',
        event: d.kind === 'conn_sample' ? 'sample' : d.record.event === 'closed' ? 'close' : 'open',
        host_id: c.host_id,
        hostname: c.hostname,
        boot_id: c.boot_id,
        epoch: num(c.epoch),
        seq: num(c.seq),
        time_ms: nsToMs(c.time_ns),
        ref_ms,
        cookie: typeof c.cookie === 'number' ? c.cookie : String(c.cookie),
        tx_bytes: num(c.tx_bytes),
        rx_bytes: num(c.rx_bytes),
        retransmits: num(c.retransmits),
        netns: num(c.netns),
        comm: c.comm,
        protocol: c.protocol,
        direction: c.direction,
        sport: c.sport,
        dport: c.dport,
        flush_reason: c.flush_reason,
        workload: c.workload,
        daddr: c.daddr,
        start_ns: num(c.start_ns),
      };
    }
    case 'listen':
      return {
        kind: 'listen',
        host_id: r.host_id,
        hostname: r.hostname,
        boot_id: r.boot_id,
        epoch: num(r.epoch),
        seq: num(r.seq),
        time_ms: nsToMs(r.time_ns),
        ref_ms,
        netns: num(d.record.netns),
        port: d.record.port,
        protocol: d.record.protocol,
      };
    case 'iface': {
      const f = d.record;
      return {
        kind: 'iface',
        host_id: f.host_id,
        hostname: f.hostname,
        boot_id: f.boot_id,
        epoch: num(f.epoch),
        seq: num(f.seq),
        time_ms: nsToMs(f.time_ns),
        ref_ms,
        netns: num(f.netns),
        ifindex: f.ifindex,
        rx_bytes: num(f.rx_bytes),
        rx_packets: num(f.rx_packets),
        tx_bytes: num(f.tx_bytes),
        tx_packets: num(f.tx_packets),
        workload: f.workload,
      };
    }
  }
}

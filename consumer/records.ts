// Turns a record decoded by the schemas/ codec into the aggregator's input (field names unchanged, longs made exact).
import type { Decoded } from '../schemas';
import type { AggInput } from './aggregator';

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
  const r = d.record;
  const base = {
    host_id: r.host_id,
    hostname: r.hostname,
    boot_id: r.boot_id,
    epoch: num(r.epoch),
    seq: num(r.seq),
    time_ms: nsToMs(r.time_ns),
    ...(refMs !== undefined && Number.isFinite(refMs) && refMs >= 0 ? { ref_ms: refMs } : {}),
  };
  switch (d.kind) {
    case 'conn_sample':
    case 'conn_event': {
      const c = d.record;
      const event = d.kind === 'conn_sample' ? 'sample' : d.record.event === 'closed' ? 'close' : 'open';
      return {
        kind: 'conn',
        event,
        ...base,
        cookie: String(c.cookie),
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
        start_ns: num(c.start_ns),
      };
    }
    case 'listen':
      return { kind: 'listen', ...base, netns: num(d.record.netns), port: d.record.port, protocol: d.record.protocol };
    case 'iface': {
      const f = d.record;
      return {
        kind: 'iface',
        ...base,
        netns: num(f.netns),
        ifindex: f.ifindex,
        rx_bytes: num(f.rx_bytes),
        rx_packets: num(f.rx_packets),
        tx_bytes: num(f.tx_bytes),
        tx_packets: num(f.tx_packets),
      };
    }
  }
}

// Synthetic nettally records with known ground truth (tests and bench): hosts, connections with cumulative samples
// over several minutes, interfaces and listeners, plus the exact per-window totals they must produce.
import type { RecordByKind, RecordKind } from '../schemas';
import { AVSC_DEFAULTS } from '../schemas/types.generated';

export interface SynthOptions {
  hosts: number;
  connsPerHost: number;
  /** Event time of the first record, Unix ms (a whole minute keeps windows easy to reason about). */
  startMs: number;
  /** Length of the event-time span, minutes. */
  minutes: number;
  seed: number;
  /** Seconds between samples of one connection (jittered). */
  sampleEverySec?: number;
  /** First seq per host (a later "producer run" continues with a new epoch). */
  epoch?: number;
}

export interface SynthMessage<K extends RecordKind = RecordKind> {
  kind: K;
  record: RecordByKind[K];
}

/** Totals one row of the rollups must hold. */
export interface TruthRow {
  window_ms: number;
  tags: Record<string, string>;
  fields: Record<string, number>;
}

export interface SynthData {
  /** Per host, in seq order (what one producer sends, in order). */
  byHost: Map<string, SynthMessage[]>;
  /** traffic truth per 1-minute window and full tag set. */
  traffic: TruthRow[];
  iface: TruthRow[];
}

/** A small seeded PRNG: the same seed gives the same data (also the schemas/ reader tests). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const COMMS = ['curl', 'nginx', 'postgres', 'ssh'];

export function hostIdOf(seed: number, h: number): string {
  return (seed.toString(16).padStart(8, '0') + h.toString(16).padStart(8, '0')).repeat(2);
}

/** Generates per-host record streams and the exact rollup truth they imply. */
export function synthesize(o: SynthOptions): SynthData {
  const rnd = mulberry32(o.seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
  const every = (o.sampleEverySec ?? 20) * 1000;
  const endMs = o.startMs + o.minutes * 60_000;
  const epoch = o.epoch ?? 1;
  const traffic = new Map<string, TruthRow>();
  const iface = new Map<string, TruthRow>();
  const byHost = new Map<string, SynthMessage[]>();
  const add = (m: Map<string, TruthRow>, timeMs: number, tags: Record<string, string>, fields: Record<string, number>): void => {
    const w = Math.floor(timeMs / 60_000) * 60_000;
    const key = `${w}|${JSON.stringify(tags)}`;
    let row = m.get(key);
    if (!row) {
      row = { window_ms: w, tags, fields: Object.fromEntries(Object.keys(fields).map((k) => [k, 0])) };
      m.set(key, row);
    }
    for (const [k, v] of Object.entries(fields)) row.fields[k] += v;
  };

  for (let h = 0; h < o.hosts; h++) {
    const host_id = hostIdOf(o.seed, h);
    const hostname = `host-${o.seed}-${h}`;
    const boot_id = `00000000-0000-4000-8000-${(o.seed * 1000 + h).toString(16).padStart(12, '0')}`;
    const netnsList = [4026531840, 4026532000 + h];
    const events: { t: number; order: number; msg: SynthMessage }[] = [];
    let order = 0;
    const base = { host_id, hostname, boot_id, epoch, seq: 0, time_ns: 0n, ts_ns: 0, workload: 'host' };
    const push = (t: number, msg: SynthMessage): void => {
      events.push({ t, order: order++, msg });
    };
    // Listeners first: UDP 53 (direction-unknown traffic folds into it) and TCP 8080.
    for (const netns of netnsList) {
      for (const [port, protocol] of [[53, 17], [8080, 6]] as const) {
        push(o.startMs, {
          kind: 'listen',
          record: { ...AVSC_DEFAULTS.listen, ...base, cookie: int(1, 1e9), netns, netns_cookie: netns + 1, pid: 100, uid: 0, comm: protocol === 17 ? 'dnsd' : 'nginx', family: 2, addr: '0.0.0.0', port, backlog: 128, protocol, cgroup_path: null, container_id: null },
        });
      }
    }
    for (let c = 0; c < o.connsPerHost; c++) {
      const cookie = h * 1_000_000 + c + 1;
      const kindPick = int(0, 9);
      const direction = kindPick < 5 ? 1 : kindPick < 9 ? 2 : 0;
      const protocol = direction === 0 ? 17 : 6;
      const netns = netnsList[int(0, 1)];
      const comm = direction === 0 ? 'dnsd' : COMMS[int(0, COMMS.length - 1)];
      const servicePort = direction === 1 ? [443, 80, 5432][int(0, 2)] : direction === 2 ? 8080 : 53;
      const ephemeral = int(32768, 60999);
      const sport = direction === 1 ? ephemeral : servicePort;
      const dport = direction === 1 ? servicePort : ephemeral;
      const tags = {
        host_id, hostname, netns: String(netns), protocol: protocol === 6 ? 'tcp' : 'udp',
        direction: ['unknown', 'outbound', 'inbound'][direction], service_port: String(servicePort), comm,
      };
      const open = o.startMs + int(0, Math.max(0, o.minutes * 60_000 - 40_000));
      const close = Math.min(endMs - 1, open + int(10_000, 200_000));
      // From the .avsc defaults, so a field added with a default needs no edit here.
      const conn = {
        ...AVSC_DEFAULTS.conn_sample, ...AVSC_DEFAULTS.conn_event, ...base, cookie, start_ns: open * 1e3, cgroup_id: 1, netns, netns_cookie: netns + 1, pid: 1000 + c, uid: 0, comm,
        family: 2, protocol, direction, saddr: '10.0.0.1', daddr: '10.0.0.2', sport, dport, cgroup_path: null, container_id: null,
      };
      let tx = 0;
      let rx = 0;
      let retr = 0;
      const step = (t: number, big: boolean): void => {
        const dtx = big ? int(0, 2_000_000) : int(0, 3);
        const drx = big ? int(0, 2_000_000) : 0;
        const dre = big && protocol === 6 && rnd() < 0.3 ? int(1, 5) : 0;
        tx += dtx;
        rx += drx;
        retr += dre;
        add(traffic, t, tags, { tx_bytes: dtx, rx_bytes: drx, connections_opened: 0, connections_closed: 0, retransmits: dre });
      };
      step(open, false);
      add(traffic, open, tags, { tx_bytes: 0, rx_bytes: 0, connections_opened: 1, connections_closed: 0, retransmits: 0 });
      push(open, { kind: 'conn_event', record: { ...conn, tx_bytes: tx, rx_bytes: rx, retransmits: retr, event: 'established', duration_ns: 0, flush_reason: 'open' } });
      for (let t = open + int(1000, every); t < close; t += int(every / 2, every)) {
        step(t, true);
        push(t, { kind: 'conn_sample', record: { ...conn, tx_bytes: tx, rx_bytes: rx, retransmits: retr, flush_reason: rnd() < 0.8 ? 'interval' : 'threshold' } });
      }
      step(close, true);
      add(traffic, close, tags, { tx_bytes: 0, rx_bytes: 0, connections_opened: 0, connections_closed: 1, retransmits: 0 });
      push(close, { kind: 'conn_event', record: { ...conn, tx_bytes: tx, rx_bytes: rx, retransmits: retr, event: 'closed', duration_ns: (close - open) * 1e6, flush_reason: 'close' } });
    }
    for (const netns of netnsList) {
      for (const ifindex of [1, 2]) {
        const tags = { host_id, hostname, netns: String(netns), ifindex: String(ifindex) };
        const v = [0, 0, 0, 0];
        for (let t = o.startMs + int(0, 5000); t < endMs; t += int(10_000, 30_000)) {
          const d = [int(0, 5_000_000), int(0, 4000), int(0, 5_000_000), int(0, 4000)];
          for (let i = 0; i < 4; i++) v[i] += d[i];
          add(iface, t, tags, { rx_bytes: d[0], rx_packets: d[1], tx_bytes: d[2], tx_packets: d[3] });
          push(t, { kind: 'iface', record: { ...AVSC_DEFAULTS.iface, ...base, netns, ifindex, rx_bytes: v[0], rx_packets: v[1], tx_bytes: v[2], tx_packets: v[3] } });
        }
      }
    }
    events.sort((a, b) => a.t - b.t || a.order - b.order);
    const out: SynthMessage[] = [];
    let seq = 0;
    for (const e of events) {
      seq += 1;
      const r = e.msg.record as { seq: number; time_ns: bigint; ts_ns: number };
      r.seq = seq;
      r.time_ns = BigInt(e.t) * 1_000_000n + BigInt(int(0, 999_999));
      r.ts_ns = e.t * 1000;
      out.push({ kind: e.msg.kind, record: { ...e.msg.record } } as SynthMessage);
    }
    byHost.set(host_id, out);
  }
  return { byHost, traffic: [...traffic.values()], iface: [...iface.values()] };
}

/** Sums truth rows by window size and tag set: key `${window_ms}|${tag values joined by |}` → fields. */
export function sumTruth(rows: readonly TruthRow[], windowMs: number, tagNames: readonly string[]): Map<string, Record<string, number>> {
  const out = new Map<string, Record<string, number>>();
  for (const r of rows) {
    const w = Math.floor(r.window_ms / windowMs) * windowMs;
    const key = [String(w), ...tagNames.map((t) => r.tags[t])].join('|');
    let f = out.get(key);
    if (!f) {
      f = {};
      out.set(key, f);
    }
    for (const [k, v] of Object.entries(r.fields)) f[k] = (f[k] ?? 0) + v;
  }
  return out;
}

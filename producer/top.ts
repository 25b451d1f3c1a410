// `nettally top`'s model: per-connection / per-process / per-netns / per-workload totals and rates from successive
// kernel snapshots.
import { KernelKind, type ConnRecord } from './records';

export interface TopConn {
  cookie: number;
  pid: number;
  comm: string;
  netns: number;
  protocol: number;
  family: number;
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  direction: number;
  /** The workload the connection is billed to (producer/workload.ts), as the producer would ship it. */
  workload: string;
  closed: boolean;
  tx_bytes: number;
  rx_bytes: number;
  tx_bytes_per_s: number;
  rx_bytes_per_s: number;
}

export interface TopGroup {
  tx_bytes: number;
  rx_bytes: number;
  tx_bytes_per_s: number;
  rx_bytes_per_s: number;
  conns: number;
}

export interface TopFrame {
  /** Unix ms of this frame. */
  time_ms: number;
  interval_ms: number;
  processes: (TopGroup & { pid: number; comm: string })[];
  connections: TopConn[];
  netns: (TopGroup & { netns: number })[];
  workloads: (TopGroup & { workload: string })[];
}

export interface TopFilter {
  pid?: number;
  netns?: number;
}

function group(): TopGroup {
  return { tx_bytes: 0, rx_bytes: 0, tx_bytes_per_s: 0, rx_bytes_per_s: 0, conns: 0 };
}

const byRate = (a: TopGroup | TopConn, b: TopGroup | TopConn): number =>
  b.tx_bytes_per_s + b.rx_bytes_per_s - (a.tx_bytes_per_s + a.rx_bytes_per_s) || b.tx_bytes + b.rx_bytes - (a.tx_bytes + a.rx_bytes);

/**
 * Turns cumulative per-connection counters into rates. Totals are since the capture started; closed connections
 * keep counting in their process's and netns's totals after they leave the connection list. A frame is built from a
 * snapshot read chunk by chunk: each record goes straight into its process/netns/workload rows, and only the busiest
 * `connLimit` connections are kept as rows, so a frame costs memory per process/netns/workload, not per connection
 * (the rates need two numbers per open connection from the previous frame).
 */
export class TopModel {
  private prev = new Map<number, { tx: number; rx: number }>();
  private readonly closedByPid = new Map<number, { comm: string; tx: number; rx: number }>();
  private readonly closedByNetns = new Map<number, { tx: number; rx: number }>();
  private readonly closedByWorkload = new Map<string, { tx: number; rx: number }>();

  constructor(
    private readonly filter: TopFilter = {},
    private readonly workloadOf: (r: ConnRecord) => string = () => 'host',
    /** Connection rows per frame (the busiest); every connection still counts in the group rows. */
    private readonly connLimit = Infinity,
  ) {}

  /** One frame from a snapshot taken `elapsedMs` after the previous one; returns the cookies of closed connections (to forget). */
  update(snapshot: readonly ConnRecord[], elapsedMs: number, nowMs = Date.now()): { frame: TopFrame; closed: number[] } {
    return this.updateChunks([snapshot], elapsedMs, nowMs);
  }

  /** update() from a snapshot read in chunks (Capture.snapshotChunks()): no chunk is kept past its turn. */
  updateChunks(chunks: Iterable<readonly ConnRecord[]>, elapsedMs: number, nowMs = Date.now()): { frame: TopFrame; closed: number[] } {
    const secs = Math.max(elapsedMs, 1) / 1000;
    const next = new Map<number, { tx: number; rx: number }>();
    let conns: TopConn[] = [];
    const closed: number[] = [];
    const procs = new Map<number, TopGroup & { pid: number; comm: string }>();
    const nets = new Map<number, TopGroup & { netns: number }>();
    const works = new Map<string, TopGroup & { workload: string }>();
    for (const [pid, c] of this.closedByPid) procs.set(pid, { ...group(), pid, comm: c.comm, tx_bytes: c.tx, rx_bytes: c.rx });
    for (const [netns, c] of this.closedByNetns) nets.set(netns, { ...group(), netns, tx_bytes: c.tx, rx_bytes: c.rx });
    for (const [workload, c] of this.closedByWorkload) works.set(workload, { ...group(), workload, tx_bytes: c.tx, rx_bytes: c.rx });
    for (const chunk of chunks) {
      for (const r of chunk) {
        const isClosed = r.kind === KernelKind.CONN_CLOSE;
        if (isClosed) closed.push(r.cookie);
        if (this.filter.pid !== undefined && r.pid !== this.filter.pid) continue;
        if (this.filter.netns !== undefined && r.netns !== this.filter.netns) continue;
        const p = this.prev.get(r.cookie) ?? { tx: 0, rx: 0 };
        if (!isClosed) next.set(r.cookie, { tx: r.tx_bytes, rx: r.rx_bytes });
        const c = topConn(r, this.workloadOf(r), isClosed, p, secs);
        this.count(c, procs, nets, works);
        conns.push(c);
        // keep the busiest connLimit rows: sort and cut whenever twice that many have gathered
        if (conns.length >= 2 * this.connLimit) conns = conns.sort(byRate).slice(0, this.connLimit);
      }
    }
    this.prev = next;
    return {
      frame: {
        time_ms: nowMs,
        interval_ms: elapsedMs,
        processes: [...procs.values()].sort(byRate),
        connections: conns.sort(byRate).slice(0, this.connLimit),
        netns: [...nets.values()].sort(byRate),
        workloads: [...works.values()].sort(byRate),
      },
      closed,
    };
  }

  /** Adds one connection to its process, netns and workload rows; a closed one also to the totals kept after it. */
  private count(
    c: TopConn,
    procs: Map<number, TopGroup & { pid: number; comm: string }>,
    nets: Map<number, TopGroup & { netns: number }>,
    works: Map<string, TopGroup & { workload: string }>,
  ): void {
    const p = procs.get(c.pid) ?? { ...group(), pid: c.pid, comm: c.comm };
    const n = nets.get(c.netns) ?? { ...group(), netns: c.netns };
    const w = works.get(c.workload) ?? { ...group(), workload: c.workload };
    for (const g of [p, n, w]) {
      g.tx_bytes += c.tx_bytes;
      g.rx_bytes += c.rx_bytes;
      g.tx_bytes_per_s += c.tx_bytes_per_s;
      g.rx_bytes_per_s += c.rx_bytes_per_s;
      if (!c.closed) g.conns += 1;
    }
    procs.set(c.pid, p);
    nets.set(c.netns, n);
    works.set(c.workload, w);
    if (c.closed) {
      addClosed(this.closedByWorkload, c.workload, c);
      const cp = this.closedByPid.get(c.pid) ?? { comm: c.comm, tx: 0, rx: 0 };
      cp.tx += c.tx_bytes;
      cp.rx += c.rx_bytes;
      this.closedByPid.set(c.pid, cp);
      addClosed(this.closedByNetns, c.netns, c);
    }
  }
}

function topConn(r: ConnRecord, workload: string, closed: boolean, prev: { tx: number; rx: number }, secs: number): TopConn {
  return {
    cookie: r.cookie,
    pid: r.pid,
    comm: r.comm,
    netns: r.netns,
    protocol: r.protocol,
    family: r.family,
    saddr: r.saddr,
    sport: r.sport,
    daddr: r.daddr,
    dport: r.dport,
    direction: r.direction,
    workload,
    closed,
    tx_bytes: r.tx_bytes,
    rx_bytes: r.rx_bytes,
    tx_bytes_per_s: Math.max(0, r.tx_bytes - prev.tx) / secs,
    rx_bytes_per_s: Math.max(0, r.rx_bytes - prev.rx) / secs,
  };
}

function addClosed<K>(m: Map<K, { tx: number; rx: number }>, key: K, c: TopConn): void {
  const t = m.get(key) ?? { tx: 0, rx: 0 };
  t.tx += c.tx_bytes;
  t.rx += c.rx_bytes;
  m.set(key, t);
}

function human(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n.toFixed(0) : n.toFixed(1)}${units[i]}`;
}

function ep(addr: string, port: number, family: number): string {
  return family === 10 ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** The text view: four tables, busiest first, `limit` rows each. */
export function renderFrame(f: TopFrame, limit: number): string {
  const rate = (g: { tx_bytes_per_s: number; rx_bytes_per_s: number }): string =>
    `${(human(g.rx_bytes_per_s) + '/s').padStart(11)} ${(human(g.tx_bytes_per_s) + '/s').padStart(11)}`;
  const tot = (g: { tx_bytes: number; rx_bytes: number }): string => `${human(g.rx_bytes).padStart(9)} ${human(g.tx_bytes).padStart(9)}`;
  const lines = [`nettally top — ${new Date(f.time_ms).toISOString()} — every ${f.interval_ms} ms`, ''];
  lines.push(`${'PID'.padStart(8)} ${'COMM'.padEnd(16)} ${'RX/s'.padStart(11)} ${'TX/s'.padStart(11)} ${'RX'.padStart(9)} ${'TX'.padStart(9)} CONNS`);
  for (const p of f.processes.slice(0, limit)) lines.push(`${String(p.pid).padStart(8)} ${p.comm.padEnd(16)} ${rate(p)} ${tot(p)} ${p.conns}`);
  lines.push('', `${'PID'.padStart(8)} ${'PROTO'.padEnd(5)} ${'LOCAL'.padEnd(28)} ${'REMOTE'.padEnd(28)} ${'RX/s'.padStart(11)} ${'TX/s'.padStart(11)} ${'RX'.padStart(9)} ${'TX'.padStart(9)} WORKLOAD`);
  for (const c of f.connections.slice(0, limit)) {
    const proto = (c.protocol === 6 ? 'tcp' : 'udp') + (c.closed ? '*' : '');
    lines.push(`${String(c.pid).padStart(8)} ${proto.padEnd(5)} ${ep(c.saddr, c.sport, c.family).padEnd(28)} ${ep(c.daddr, c.dport, c.family).padEnd(28)} ${rate(c)} ${tot(c)} ${c.workload}`);
  }
  lines.push('', `${'WORKLOAD'.padEnd(32)} ${'RX/s'.padStart(11)} ${'TX/s'.padStart(11)} ${'RX'.padStart(9)} ${'TX'.padStart(9)} CONNS`);
  for (const w of f.workloads.slice(0, limit)) lines.push(`${w.workload.padEnd(32)} ${rate(w)} ${tot(w)} ${w.conns}`);
  lines.push('', `${'NETNS'.padStart(12)} ${'RX/s'.padStart(11)} ${'TX/s'.padStart(11)} ${'RX'.padStart(9)} ${'TX'.padStart(9)} CONNS`);
  for (const n of f.netns.slice(0, limit)) lines.push(`${String(n.netns).padStart(12)} ${rate(n)} ${tot(n)} ${n.conns}`);
  return lines.join('\n') + '\n';
}

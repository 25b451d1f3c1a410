// A synthetic capture source (no kernel): connections with known cumulative counters, for the producer benchmark
// and for exercising the producer's Kafka/spool paths at rates the kernel path cannot be driven to on demand.
import type { Capture, ConnRecord, KernelRecord, KernelStats } from './capture';
import { KernelKind, blankConn, type ConnKind, type FlushReason } from './records';

export interface SyntheticOptions {
  /** Connections opened (and closed) per second. */
  connsPerSec: number;
  /** Samples per connection between open and close. */
  samplesPerConn?: number;
  /** Bytes each sample adds to tx_bytes and rx_bytes. */
  bytesPerSample?: number;
  /** Stop after this many connections (undefined = until close()). */
  totalConns?: number;
  /** Batch period in ms. */
  tickMs?: number;
}

/** Ground truth of what a synthetic source emitted, for assertions. */
export interface SyntheticTruth {
  conns: number;
  tx_bytes: number;
  rx_bytes: number;
  /** Kernel records the source yielded (open, samples, close per connection). */
  records: number;
  /**
   * Records a producer ships for them: all but the `established` ones, which the producer folds into the later
   * records of their connection in the same batch (producer/ingest.ts, one record per short connection).
   */
  shipped: number;
}

export function syntheticCapture(opts: SyntheticOptions): Capture & { truth: SyntheticTruth; done: Promise<void> } {
  const samples = opts.samplesPerConn ?? 2;
  const per = opts.bytesPerSample ?? 1000;
  const tick = opts.tickMs ?? 10;
  const truth: SyntheticTruth = { conns: 0, tx_bytes: 0, rx_bytes: 0, records: 0, shipped: 0 };
  let closed = false;
  let nextCookie = 1;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  const forgotten = new Set<number>();
  const t0 = process.hrtime.bigint();
  const boot = (): number => Number(process.hrtime.bigint() - t0) + 1_000_000_000;

  // duration_ns on close as producer/records.ts decodes it from the kernel (ts_ns - start_ns): toWire ships the record's
  // own. Fields not set here (a field new in the header) keep the kernel's zero.
  const conn = (cookie: number, kind: ConnKind, n: number, reason: FlushReason): ConnRecord => {
    const r = blankConn(kind);
    r.ts_ns = boot();
    r.cookie = cookie;
    r.start_ns = 1_000_000_000;
    r.tx_bytes = r.rx_bytes = n * per;
    r.cgroup_id = r.netns_cookie = 1;
    r.netns = 4026531840;
    r.pid = process.pid;
    r.comm = 'synthetic';
    r.family = 2;
    r.protocol = 6;
    r.direction = 1;
    r.saddr = '10.0.0.1';
    r.daddr = '10.0.0.2';
    r.sport = 40000 + (cookie % 20000);
    r.dport = 443;
    r.flush_reason = reason;
    if (kind === KernelKind.CONN_CLOSE) r.duration_ns = r.ts_ns - r.start_ns;
    return r;
  };

  async function* gen(): AsyncGenerator<KernelRecord[]> {
    const start = Date.now();
    while (!closed && (opts.totalConns === undefined || truth.conns < opts.totalConns)) {
      const target = Math.floor(((Date.now() - start) / 1000) * opts.connsPerSec);
      // After a pause (consumer not pulling: full spool) catch up gradually, not in one huge batch.
      const burst = Math.max(1, Math.ceil((opts.connsPerSec * tick) / 1000) * 4);
      const due = Math.min(target - truth.conns, burst, opts.totalConns === undefined ? Infinity : opts.totalConns - truth.conns);
      const batch: KernelRecord[] = [];
      for (let i = 0; i < due; i++) {
        const cookie = nextCookie++;
        batch.push(conn(cookie, KernelKind.CONN_OPEN, 0, 'open'));
        for (let s = 1; s <= samples; s++) batch.push(conn(cookie, KernelKind.CONN_SAMPLE, s, 'interval'));
        batch.push(conn(cookie, KernelKind.CONN_CLOSE, samples, 'close'));
        truth.conns += 1;
        truth.tx_bytes += samples * per;
        truth.rx_bytes += samples * per;
      }
      truth.records += batch.length;
      truth.shipped += batch.length - due;
      if (batch.length) yield batch;
      await new Promise((r) => setTimeout(r, tick));
    }
    resolveDone();
    // Like the kernel, the source stays open (idle) until close().
    while (!closed) await new Promise((r) => setTimeout(r, tick * 5));
  }

  const stats = (): KernelStats => ({
    ringbuf_drops: 0, conn_map_full: 0, iface_map_full: 0, records: truth.records, batches: 0, sweep_records: 0,
    tracked_conns: truth.conns - forgotten.size,
  });
  return {
    truth,
    done,
    records: () => gen(),
    stats,
    snapshot: () => [],
    snapshotChunks: () => [],
    forget: (cookies) => {
      for (const c of cookies) forgotten.add(c);
    },
    close: async () => {
      closed = true;
    },
  };
}

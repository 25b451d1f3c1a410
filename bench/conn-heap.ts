// `npm run bench:conn-heap` (alone: `node --expose-gc dist/bench/conn-heap.js`; issue 12): V8 heap per live connection held by one partition's
// aggregator — N connections of N/50 hosts (4 service tag sets per host, open + one sample each, strings made fresh
// per record as the decoder makes them), heap used after global.gc() before and after. With BENCH_BASELINE_DIST
// (another build's dist/) the same run on its aggregator, side by side, and the ratio.
import * as path from 'path';
import { benchHelp } from './help';
import type { PartitionAggregator } from '../consumer/aggregator';
import type { ConnInput } from '../consumer/records';

benchHelp('bench:conn-heap', '(node --expose-gc dist/bench/conn-heap.js) heap bytes per live connection in one partition aggregator, this build vs BENCH_BASELINE_DIST.', {
  BENCH_CONNECTIONS: 'live connections (100000)',
  BENCH_BASELINE_DIST: "another build's dist/ directory, measured side by side (none)",
});

const N = Number(process.env.BENCH_CONNECTIONS ?? 100000);
const T0 = Date.UTC(2027, 0, 1);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  process.stderr.write('conn-heap: run with node --expose-gc (it measures the heap after collections)\n');
  process.exit(2);
}

/** A new string with the same text (a decoder makes one per record; literals would be shared). */
const fresh = (s: string): string => Buffer.from(s).toString();

function rec(h: number, c: number, event: 'open' | 'sample', t: number, tx: number): ConnInput {
  return {
    kind: 'conn', event, host_id: fresh(`${String(h).padStart(8, '0')}-1111-2222-3333-444455556666`), hostname: fresh(`host-${h}.example.internal`),
    boot_id: fresh(`b0000000-1111-2222-3333-${String(h).padStart(12, '0')}`), epoch: 1, seq: c * 2 + (event === 'open' ? 0 : 1), time_ms: t, ref_ms: t,
    tx_bytes: tx, rx_bytes: tx, retransmits: 0, netns: 4026531840, comm: fresh(['nginx', 'curl', 'postgres', 'java'][c % 4]), protocol: 6, direction: 2,
    sport: [80, 443, 5432, 8080][c % 4], dport: 30000 + c, flush_reason: fresh('interval'), workload: fresh(`svc/${c % 4}`), daddr: fresh(`10.0.${c % 250}.${h % 250}`),
    cookie: 1e6 * h + c + 2 ** 32, start_ns: 5,
  };
}

function heap(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}

/** Heap bytes per connection held by an aggregator of the given dist/. */
function measure(dist: string): number {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { PartitionAggregator: Agg } = require(path.join(dist, 'consumer/aggregator.js')) as { PartitionAggregator: new (o: { partition: number }) => PartitionAggregator };
  const agg = new Agg({ partition: 0 });
  agg.add(rec(1e6, 0, 'open', T0, 0)); // windows exist before the measurement
  const before = heap();
  for (const [event, tx] of [['open', 0], ['sample', 100]] as const) for (let i = 0; i < N; i++) agg.add(rec(Math.floor(i / 50), i % 50, event, T0 + 1, tx));
  const per = (heap() - before) / N;
  if (agg.sizes.connections !== N + 1) throw new Error(`conn-heap: expected ${N + 1} connections, the aggregator holds ${agg.sizes.connections}`);
  return per;
}

const mine = measure(path.join(__dirname, '..'));
const base = process.env.BENCH_BASELINE_DIST ? measure(path.resolve(process.env.BENCH_BASELINE_DIST)) : undefined;
process.stdout.write(`heap per live connection, ${N} connections of ${N / 50} hosts (4 tag sets per host)\n`);
process.stdout.write(`this build   ${mine.toFixed(0).padStart(6)} bytes\n`);
if (base !== undefined) process.stdout.write(`baseline     ${base.toFixed(0).padStart(6)} bytes   (baseline / this = ${(base / mine).toFixed(2)}x)\n`);

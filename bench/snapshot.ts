// `npm run bench:consumer` (second part; alone: `node dist/bench/snapshot.js`): one partition's state snapshot at
// 10k and 100k live connections — wall time, the longest event-loop block while it is encoded, gzip'd size and the
// chunk count the state store writes (median of BENCH_ROUNDS=3 rounds) — for the previous encoding (one gzipSync(JSON.stringify())) and the sliced,
// async one the consumer uses (consumer/state-store.ts encodeSnapshot); then incremental snapshots at 1% change per
// flush (bytes, save CPU, restore) and what the member keeps in memory to diff against (heap per 100k connections).
import { gunzipSync, gzipSync } from 'zlib';
import { monitorEventLoopDelay } from 'perf_hooks';
import { PartitionAggregator } from '../consumer/aggregator';
import type { ConnInput } from '../consumer/records';
import { DEFAULT_CHUNK_BYTES, DEFAULT_FULL_EVERY, decodeSnapshot, encodeSnapshot } from '../consumer/state-store';
import { type Delta, type SavedRows, StringSink, applyDeltas, writeDelta, writeFull } from '../consumer/snapshot-chain';
import { benchHelp } from './help';

// (also imported by bench/consumer.ts, whose own arguments are not this one's)
if (require.main === module) benchHelp("bench:consumer", "(its second part, alone: node dist/bench/snapshot.js) one partition's state snapshot at 10k and 100k live connections: save time, event-loop block, size, chunks; then incremental snapshots at 1% change.", {
  BENCH_CONNECTIONS: "live connection counts (10000,100000)",
  BENCH_ROUNDS: "rounds, median taken (3)",
  BENCH_CHANGING: "share of connections changing per flush (0.01)",
});

const SIZES = (process.env.BENCH_CONNECTIONS ?? '10000,100000').split(',').map(Number);
const START = Date.UTC(2026, 0, 1);
const COMMS = ['curl', 'nginx', 'postgres', 'ssh', 'java', 'python3'];

const HOSTS = 100;

/** The open record of connection `i` of `n` (100 hosts, 3 minutes of event time). */
function openOf(n: number, i: number): ConnInput {
  const h = i % HOSTS;
  const hosts = HOSTS;
  return {
      kind: 'conn', event: 'open', host_id: `${h.toString(16).padStart(32, '0')}`, hostname: `host-${h}`, boot_id: `00000000-0000-4000-8000-${h.toString(16).padStart(12, '0')}`,
      epoch: 1, seq: 2 * Math.floor(i / hosts) + 1, time_ms: START + Math.floor((i / n) * 150_000), cookie: String(1_000_000 + i), tx_bytes: 0, rx_bytes: 0,
      retransmits: 0, netns: 4026531840 + (i % 3), comm: COMMS[i % COMMS.length], protocol: 6, direction: 1 + (i % 2), sport: 32768 + (i % 20000), dport: [443, 80, 5432, 8080][i % 4], flush_reason: 'open',
  };
}

/** An aggregator holding `n` live connections of 100 hosts (open + one sample each, 3 minutes of event time). */
function liveState(n: number): PartitionAggregator {
  const agg = new PartitionAggregator({ partition: 0 });
  for (let i = 0; i < n; i++) {
    const base = openOf(n, i);
    agg.add(base);
    agg.add({ ...base, event: 'sample', seq: base.seq + 1, time_ms: base.time_ms + 20_000, tx_bytes: 1000 + i, rx_bytes: 5000 + i * 3, flush_reason: 'interval' });
  }
  const p = agg.pending();
  p.commit();
  return agg;
}

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

interface Measured {
  label: string;
  wallMs: number;
  maxBlockMs: number;
  bytes: number;
}

/** Median wall time and median longest block over the rounds. */
function median(rounds: Measured[]): Measured {
  const mid = <T>(xs: T[], key: (x: T) => number): number => xs.map(key).sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  return { label: rounds[0].label, wallMs: mid(rounds, (r) => r.wallMs), maxBlockMs: mid(rounds, (r) => r.maxBlockMs), bytes: rounds[0].bytes };
}

async function measure(label: string, fn: () => Promise<number>): Promise<Measured> {
  // Longest gap between two runs of a 1 ms timer: what other partitions and heartbeats would wait.
  let last = performance.now();
  let maxGap = 0;
  const probe = setInterval(() => {
    const now = performance.now();
    if (now - last > maxGap) maxGap = now - last;
    last = now;
  }, 1);
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  await new Promise((r) => setTimeout(r, 20));
  last = performance.now();
  maxGap = 0;
  h.reset();
  const t0 = performance.now();
  const bytes = await fn();
  const wallMs = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 5));
  h.disable();
  clearInterval(probe);
  return { label, wallMs, maxBlockMs: Math.max(maxGap, h.max / 1e6), bytes };
}

export async function snapshotBench(): Promise<void> {
  process.stdout.write(`\nstate snapshot of one partition (one Node thread), median of ${ROUNDS} rounds\n`);
  process.stdout.write('live conns  encoding                                   wall ms  longest event-loop block ms  gzip KiB  chunks of 512 KiB\n');
  for (const n of SIZES) {
    process.stderr.write(`bench:snapshot: building ${n} live connections...\n`);
    const agg = liveState(n);
    const offset = String(n * 2);
    // Rounds alternate the two encodings; each row is the median round (the machine is shared: single runs are noisy).
    const before: Measured[] = [];
    const after: Measured[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      before.push(await measure('before: gzipSync(JSON.stringify(snapshot()))', async () => gzipSync(JSON.stringify({ offset, state: agg.snapshot() })).length));
      after.push(await measure('after: lazy snapshot, sliced JSON, async gzip', async () => (await encodeSnapshot({ offset, state: agg.snapshotLazy() })).length));
    }
    const rows = [median(before), median(after)];
    // the two encodings must carry the same state
    const back = await decodeSnapshot(await encodeSnapshot({ offset, state: agg.snapshotLazy() }));
    if (JSON.stringify(back) !== JSON.stringify({ offset, state: agg.snapshot() })) throw new Error('encodeSnapshot does not round-trip');
    const t = performance.now();
    agg.snapshot();
    const snapMs = performance.now() - t;
    for (const r of rows) {
      process.stdout.write(
        `${String(agg.sizes.connections).padStart(10)}  ${r.label.padEnd(43)}${r.wallMs.toFixed(0).padStart(7)}  ${r.maxBlockMs.toFixed(0).padStart(27)}  ${(r.bytes / 1024).toFixed(0).padStart(8)}  ${String(Math.ceil(r.bytes / DEFAULT_CHUNK_BYTES)).padStart(17)}\n`,
      );
    }
    process.stdout.write(`${''.padStart(10)}  (aggregator snapshot() alone, synchronous: ${snapMs.toFixed(0)} ms)\n`);
  }
  await incrementalBench();
}

const CHANGING = Number(process.env.BENCH_CHANGING ?? 0.01);

/** A full link of the state, committed (the rows' marks cleared, as after a stored save): its text and what it keeps. */
async function fullLink(state: Record<string, unknown>): Promise<{ text: string; saved: SavedRows }> {
  const sink = new StringSink();
  const link = await writeFull(state, sink);
  link.commit();
  return { text: sink.text(), saved: link.saved };
}

/** The delta since `prev`, committed. */
async function deltaLink(prev: SavedRows, state: Record<string, unknown>): Promise<{ text: string; saved: SavedRows; rows: number }> {
  const sink = new StringSink();
  const link = await writeDelta(prev, state, sink);
  if (!link) throw new Error('no delta possible');
  link.commit();
  return { text: sink.text(), saved: link.saved, rows: link.rows };
}

/** CPU time (user + system) of `fn`, ms: the save's own cost, whatever else the machine runs. */
async function cpuMs(fn: () => Promise<unknown>): Promise<number> {
  const c = process.cpuUsage();
  await fn();
  const d = process.cpuUsage(c);
  return (d.user + d.system) / 1000;
}

/** Used heap after full GCs (node --expose-gc; NaN without it), bytes. */
async function heapNow(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return NaN;
  // a few rounds with the loop turning in between: weak callbacks and finalizers of earlier work run too
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  return process.memoryUsage().heapUsed;
}

/** What the member kept before this change to diff against: every row's JSON text, by collection and key. */
function textRows(state: Record<string, unknown>): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  for (const f of ['conns', 'ifaces', 'marks', 'hosts']) out.set(f, new Map([...(state[f] as Iterable<unknown[]>)].map((r) => [String(r[0]), JSON.stringify(r)])));
  (state.windows as [number, Iterable<unknown[]>][][]).forEach((set, i) => {
    for (const [start, cells] of set) out.set(`w${i}@${start}`, new Map([...cells].map((c) => [(c[0] as string[]).join('\u0000'), JSON.stringify(c)])));
  });
  return out;
}

/**
 * Incremental snapshots (consumer/state-store.ts save): per flush in which CHANGING (1%) of the live connections
 * sent a new sample, the gzip'd bytes of a full snapshot vs a delta, the save's CPU (text + gzip), and a restore
 * (gunzip + parse + rebuild + aggregator restore) of a full snapshot alone vs a chain's full snapshot plus
 * DEFAULT_FULL_EVERY - 1 deltas (the longest chain a restore reads). And the heap the member keeps per partition to
 * diff the next save against (node --expose-gc for that column).
 */
async function incrementalBench(): Promise<void> {
  process.stdout.write(`\nincremental snapshots: ${CHANGING * 100}% of the connections change per flush; chain of 1 full + ${DEFAULT_FULL_EVERY - 1} deltas\n`);
  process.stdout.write('live conns  full KiB  delta KiB  delta/full  full save CPU ms  delta save CPU ms (was: text diff)  rows per delta  restore full ms  restore chain ms  chain/full  kept to diff MB (was: text)\n');
  for (const n of SIZES) {
    process.stderr.write(`bench:snapshot: incremental, ${n} live connections...\n`);
    const agg = liveState(n);
    const seqs = new Array<number>(HOSTS).fill(2 * Math.ceil(n / HOSTS) + 10);
    // what the member keeps to diff against, now (hashes and flags) and before this change (the rows' text): the
    // heap each structure holds, built alone (the text goes to a sink that keeps nothing)
    let h0 = await heapNow();
    const kept = (await writeFull(agg.snapshotLazy(), { write: () => undefined })).saved;
    const keptMB = ((await heapNow()) - h0) / 1e6;
    h0 = await heapNow();
    let text = textRows(agg.snapshotLazy());
    const textMB = ((await heapNow()) - h0) / 1e6;
    if (kept.hashes.size + text.size < 0) throw new Error('unreachable: keeps both alive until measured');
    const first = await fullLink(agg.snapshotLazy());
    let saved = first.saved;
    const fullGz = gzipSync(first.text);
    const deltas: Buffer[] = [];
    const fullMs: number[] = [];
    const deltaMs: number[] = [];
    const textDiffMs: number[] = [];
    const rows: number[] = [];
    for (let round = 0; round < DEFAULT_FULL_EVERY - 1; round++) {
      // CHANGING of the connections send a sample (spread over the hosts), inside the current window
      const step = Math.round(1 / CHANGING);
      for (let i = round % step; i < n; i += step) {
        const o = openOf(n, i);
        const h = i % HOSTS;
        agg.add({ ...o, event: 'sample', seq: seqs[h]++, time_ms: START + 170_000 + round * 100, tx_bytes: 10_000 + round * 1000 + i, rx_bytes: 50_000 + round * 999 + i, flush_reason: 'interval' });
      }
      // a full save of the same state first (written, not committed: the marks stay for the delta)
      fullMs.push(await cpuMs(async () => gzipSync((await (async () => {
        const sink = new StringSink();
        await writeFull(agg.snapshotLazy(), sink);
        return sink.text();
      })()))));
      // the diff before this change, side by side: every row serialized and compared with the kept text
      textDiffMs.push(await cpuMs(async () => {
        const next = textRows(agg.snapshotLazy());
        const changed: string[] = [];
        for (const [coll, m] of next) for (const [k, t] of m) if (text.get(coll)?.get(k) !== t) changed.push(`[${JSON.stringify(k)},${t}]`);
        gzipSync(changed.join(','));
        text = next;
      }));
      let d: Awaited<ReturnType<typeof deltaLink>> | undefined;
      deltaMs.push(await cpuMs(async () => {
        d = await deltaLink(saved, agg.snapshotLazy());
        deltas.push(gzipSync(d.text));
      }));
      saved = d!.saved;
      rows.push(d!.rows);
    }
    const mid = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const deltaKiB = mid(deltas.map((d) => d.length)) / 1024;
    const lastFullGz = gzipSync(JSON.stringify(agg.snapshot()));
    const restoreFull = (): number => {
      const t = performance.now();
      new PartitionAggregator({ partition: 0 }).restore(JSON.parse(gunzipSync(lastFullGz).toString()) as Record<string, unknown>);
      return performance.now() - t;
    };
    const restoreChain = (): { ms: number; state: Record<string, unknown> } => {
      const t = performance.now();
      const state = applyDeltas(JSON.parse(gunzipSync(fullGz).toString()) as Record<string, unknown>, deltas.map((d) => JSON.parse(gunzipSync(d).toString()) as Delta));
      new PartitionAggregator({ partition: 0 }).restore(state);
      return { ms: performance.now() - t, state };
    };
    const rf: number[] = [];
    const rc: number[] = [];
    let state: Record<string, unknown> = {};
    for (let r = 0; r < ROUNDS; r++) {
      rf.push(restoreFull());
      const c = restoreChain();
      rc.push(c.ms);
      state = c.state;
    }
    // the chain must hold the live state (row order aside: compare as sets of rows)
    const rowsOf = (s: Record<string, unknown>): string => JSON.stringify((s.conns as unknown[]).map((x) => JSON.stringify(x)).sort());
    if (rowsOf(state) !== rowsOf(agg.snapshot())) throw new Error('incremental chain does not rebuild the live state');
    process.stdout.write(
      `${String(n).padStart(10)}  ${(fullGz.length / 1024).toFixed(0).padStart(8)}  ${deltaKiB.toFixed(1).padStart(9)}  ${(deltaKiB * 1024 / fullGz.length).toFixed(3).padStart(10)}  ` +
        `${mid(fullMs).toFixed(0).padStart(16)}  ${`${mid(deltaMs).toFixed(0)} (${mid(textDiffMs).toFixed(0)})`.padStart(33)}  ${String(mid(rows)).padStart(14)}  ${mid(rf).toFixed(0).padStart(15)}  ${mid(rc).toFixed(0).padStart(16)}  ${(mid(rc) / mid(rf)).toFixed(2).padStart(10)}  ${`${keptMB.toFixed(1)} (${textMB.toFixed(1)})`.padStart(27)}\n`,
    );
  }
}

if (require.main === module) {
  snapshotBench().catch((e: unknown) => {
    process.stderr.write(`bench:snapshot failed: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}

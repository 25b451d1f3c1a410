// `npm run bench:consumer`: consumer throughput on one core — events/s decoded (avsc alone, and the generated reader
// of schemas/reader.ts, on the same buffers in alternating rounds), + aggregated, + written to a real influxd (with
// state snapshots), measured side by side in one run — and InfluxDB points written per 1k events; then
// bench/snapshot.ts: snapshot save time, event-loop block and size at 10k/100k live connections.
// BENCH_BASELINE_DIST=<another build's dist/> adds a row of decode + aggregate with that build's aggregator and
// toAggInput (same decoder, same buffers, rounds alternating with this build's): a before/after of the aggregation.
import { resolve } from 'path';
import { PartitionAggregator } from '../consumer/aggregator';
import { InfluxClient } from '../consumer/influx';
import { encodeSnapshot } from '../consumer/state-store';
import { toAggInput } from '../consumer/records';
import { synthesize } from '../consumer/synthetic';
import { createCodec, encode, type Codec } from '../schemas';
import { startInflux } from '../test/helpers/influx';
import { snapshotBench } from './snapshot';
import { benchHelp } from './help';

benchHelp("bench:consumer", "consumer throughput on one core: records decoded (avsc and the generated reader), + aggregated, + written to a real influxd with snapshots, side by side; then bench/snapshot.ts.", {
  BENCH_FLUSH_EVERY: "records per flush (5000)",
  BENCH_ROUNDS: "alternating rounds (5)",
  BENCH_BASELINE_DIST: "another build's dist/: a decode + aggregate row with its aggregator",
});

const FLUSH_EVERY = Number(process.env.BENCH_FLUSH_EVERY ?? 5000);
/** Rounds of each in-memory stage; the two decoders alternate, and each row is the median round. */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const BASELINE_DIST = process.env.BENCH_BASELINE_DIST ?? '';

type Aggregation = { Aggregator: typeof PartitionAggregator; toInput: typeof toAggInput };

/** Another build's aggregator and input conversion (BENCH_BASELINE_DIST), or none. */
async function baselineAggregation(): Promise<Aggregation | undefined> {
  if (BASELINE_DIST === '') return undefined;
  const dir = resolve(BASELINE_DIST);
  const agg = (await import(`${dir}/consumer/aggregator`)) as { PartitionAggregator: typeof PartitionAggregator };
  const rec = (await import(`${dir}/consumer/records`)) as { toAggInput: typeof toAggInput };
  return { Aggregator: agg.PartitionAggregator, toInput: rec.toAggInput };
}

function encodeAll(): Buffer[] {
  const data = synthesize({ hosts: 20, connsPerHost: 400, startMs: Date.UTC(2026, 0, 1), minutes: 10, seed: 42, sampleEverySec: 6 });
  const out: Buffer[] = [];
  // interleave hosts round-robin, as a partition carrying many hosts sees them
  const streams = [...data.byHost.values()];
  for (let i = 0; streams.some((s) => i < s.length); i++) for (const s of streams) if (i < s.length) out.push(encode(s[i].kind, s[i].record as never));
  return out;
}

function rate(n: number, ms: number): string {
  return `${Math.round((n * 1000) / ms).toLocaleString('en-US')}/s`;
}

/** Wall and CPU (user + system of this process) milliseconds of one round. */
interface Round {
  wallMs: number;
  cpuMs: number;
}

function timed(fn: () => void): Round {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  fn();
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wallMs, cpuMs: (c.user + c.system) / 1000 };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Each stage of `stages` run ROUNDS times, interleaved (a, b, a, b, ...) so load changes hit both alike. */
function interleaved(stages: Record<string, () => void>): Record<string, Round> {
  const rounds: Record<string, Round[]> = {};
  for (let r = 0; r < ROUNDS; r++) for (const [name, fn] of Object.entries(stages)) (rounds[name] ??= []).push(timed(fn));
  return Object.fromEntries(Object.entries(rounds).map(([name, rs]) => [name, { wallMs: median(rs.map((x) => x.wallMs)), cpuMs: median(rs.map((x) => x.cpuMs)) }]));
}

async function main(): Promise<void> {
  process.stderr.write('bench:consumer: generating records...\n');
  const msgs = encodeAll();
  const n = msgs.length;
  const bytes = msgs.reduce((s, m) => s + m.length, 0);
  process.stdout.write(`events: ${n} (${(bytes / n).toFixed(0)} B avg Avro single-object), flush every ${FLUSH_EVERY} events, median of ${ROUNDS} rounds\n`);

  // 1. decode only, 2. decode + aggregate (+ point generation at each flush, no I/O): avsc vs the generated reader
  const codecs: Record<string, Codec> = { avsc: createCodec({ fastReader: false }), generated: createCodec() };
  let points = 0;
  const decodeOnly = (c: Codec) => (): void => {
    for (const m of msgs) toAggInput(c.decode(m));
  };
  const decodeAggregate = (c: Codec, a: Aggregation = { Aggregator: PartitionAggregator, toInput: toAggInput }) => (): void => {
    const agg = new a.Aggregator({ partition: 0 });
    points = 0;
    for (let i = 0; i < n; i++) {
      agg.add(a.toInput(c.decode(msgs[i])));
      if ((i + 1) % FLUSH_EVERY === 0 || i === n - 1) {
        const p = agg.pending();
        points += p.points.length;
        p.commit();
      }
    }
  };
  const baseline = await baselineAggregation();
  const mem = interleaved({
    'decode, avsc': decodeOnly(codecs.avsc),
    'decode, generated reader': decodeOnly(codecs.generated),
    'decode + aggregate, avsc': decodeAggregate(codecs.avsc),
    'decode + aggregate, generated reader': decodeAggregate(codecs.generated),
    ...(baseline ? { 'decode + aggregate, generated, baseline agg.': decodeAggregate(codecs.generated, baseline) } : {}),
  });
  if (codecs.generated.decodedBy.avsc !== 0) throw new Error(`the generated reader left ${codecs.generated.decodedBy.avsc} well-formed records to avsc`);
  const decode = codecs.generated;
  const decodeMs = mem['decode, generated reader'].wallMs;

  // 3. decode (generated reader) + aggregate + write to influxd + state snapshot (JSON + gzip) at each flush, at two flush cadences
  const influx = await startInflux();
  const e2e: { every: number; ms: number; cpuMs: number; points: number; writeMs: number; snapMs: number; snapBytes: number; conns: number }[] = [];
  try {
    const client = new InfluxClient({ url: influx.url, api: 'v1', db: 'bench', batchSize: 5000, timeoutMs: 30_000 });
    await client.ensureDatabase();
    for (const every of [FLUSH_EVERY, FLUSH_EVERY * 10]) {
      const a = new PartitionAggregator({ partition: 0 });
      const r = { every, ms: 0, cpuMs: 0, points: 0, writeMs: 0, snapMs: 0, snapBytes: 0, conns: 0 };
      const t = performance.now();
      const c0 = process.cpuUsage();
      for (let i = 0; i < n; i++) {
        a.add(toAggInput(decode.decode(msgs[i])));
        if ((i + 1) % every === 0 || i === n - 1) {
          const p = a.pending();
          const w0 = performance.now();
          await client.write(p.points);
          r.writeMs += performance.now() - w0;
          r.points += p.points.length;
          p.commit();
          const s0 = performance.now();
          r.snapBytes = (await encodeSnapshot({ offset: String(i + 1), state: a.snapshotLazy() })).length;
          r.snapMs += performance.now() - s0;
        }
      }
      r.ms = performance.now() - t;
      const c = process.cpuUsage(c0);
      r.cpuMs = (c.user + c.system) / 1000; // this process only: influxd's CPU is not in it
      r.conns = a.sizes.connections;
      e2e.push(r);
    }
  } finally {
    await influx.destroy();
  }

  const rows: [string, string, string, string][] = [
    ...Object.entries(mem).map(([name, r]): [string, string, string, string] => [name, rate(n, r.wallMs), rate(n, r.cpuMs), (decodeMs / r.wallMs).toFixed(2)]),
    ...e2e.map((r): [string, string, string, string] => [`+ write InfluxDB + snapshot (flush every ${r.every})`, rate(n, r.ms), rate(n, r.cpuMs), (decodeMs / r.ms).toFixed(2)]),
  ];
  process.stdout.write('\nstage (one Node thread; influxd on the other core)   events/s wall   per CPU-second   relative to decode (generated)\n');
  for (const [a, b, c, d] of rows) process.stdout.write(`${a.padEnd(50)}${b.padStart(14)}${c.padStart(17)}   ${d}\n`);
  const ratio = (name: string): string => (mem[`${name}, avsc`].cpuMs / mem[`${name}, generated reader`].cpuMs).toFixed(2);
  process.stdout.write(`\ngenerated reader vs avsc, events per CPU-second: decode x${ratio('decode')}, decode + aggregate x${ratio('decode + aggregate')}\n`);
  if (baseline) {
    // aggregation alone = decode + aggregate minus decode (same decoder, same rounds)
    const aggCpu = (name: string): number => mem[name].cpuMs - mem['decode, generated reader'].cpuMs;
    const base = 'decode + aggregate, generated, baseline agg.';
    const mine = 'decode + aggregate, generated reader';
    process.stdout.write(
      `this build vs ${BASELINE_DIST} (generated reader both), events per CPU-second: decode + aggregate x${(mem[base].cpuMs / mem[mine].cpuMs).toFixed(2)}; ` +
        `aggregation alone ${((aggCpu(base) * 1000) / n).toFixed(2)} -> ${((aggCpu(mine) * 1000) / n).toFixed(2)} us of CPU per event\n`,
    );
  }
  process.stdout.write(`\naggregation alone produced ${points} points (${((points * 1000) / n).toFixed(1)} per 1k events) at flush every ${FLUSH_EVERY}\n`);
  for (const r of e2e) {
    process.stdout.write(
      `flush every ${r.every}: InfluxDB points written per 1k events: ${((r.points * 1000) / n).toFixed(1)}; ` +
        `time in writes ${((r.writeMs / r.ms) * 100).toFixed(0)}%, in snapshots ${((r.snapMs / r.ms) * 100).toFixed(0)}% ` +
        `(snapshot ${(r.snapBytes / 1024).toFixed(0)} KiB gzip'd, ${r.conns} live connections)\n`,
    );
  }
  await snapshotBench();
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:consumer failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});

// `npm run bench:consumer`: consumer throughput on one core — events/s decoded, + aggregated, + written to a real
// influxd (with state snapshots), measured side by side in one run — and InfluxDB points written per 1k events;
// then bench/snapshot.ts: snapshot save time, event-loop block and size at 10k/100k live connections.
import { PartitionAggregator } from '../consumer/aggregator';
import { InfluxClient } from '../consumer/influx';
import { encodeSnapshot } from '../consumer/state-store';
import { toAggInput } from '../consumer/records';
import { synthesize } from '../consumer/synthetic';
import { decode, encode } from '../schemas';
import { startInflux } from '../test/helpers/influx';
import { snapshotBench } from './snapshot';

const FLUSH_EVERY = Number(process.env.BENCH_FLUSH_EVERY ?? 5000);

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

async function main(): Promise<void> {
  process.stderr.write('bench:consumer: generating records...\n');
  const msgs = encodeAll();
  const n = msgs.length;
  const bytes = msgs.reduce((s, m) => s + m.length, 0);
  process.stdout.write(`events: ${n} (${(bytes / n).toFixed(0)} B avg Avro single-object), flush every ${FLUSH_EVERY} events\n`);

  // 1. decode only
  let t = performance.now();
  for (const m of msgs) toAggInput(decode(m));
  const decodeMs = performance.now() - t;

  // 2. decode + aggregate (+ point generation at each flush, no I/O)
  const agg = new PartitionAggregator({ partition: 0 });
  let points = 0;
  t = performance.now();
  for (let i = 0; i < n; i++) {
    agg.add(toAggInput(decode(msgs[i])));
    if ((i + 1) % FLUSH_EVERY === 0 || i === n - 1) {
      const p = agg.pending();
      points += p.points.length;
      p.commit();
    }
  }
  const aggMs = performance.now() - t;

  // 3. decode + aggregate + write to influxd + state snapshot (JSON + gzip) at each flush, at two flush cadences
  const influx = await startInflux();
  const e2e: { every: number; ms: number; points: number; writeMs: number; snapMs: number; snapBytes: number; conns: number }[] = [];
  try {
    const client = new InfluxClient({ url: influx.url, api: 'v1', db: 'bench', batchSize: 5000, timeoutMs: 30_000 });
    await client.ensureDatabase();
    for (const every of [FLUSH_EVERY, FLUSH_EVERY * 10]) {
      const a = new PartitionAggregator({ partition: 0 });
      const r = { every, ms: 0, points: 0, writeMs: 0, snapMs: 0, snapBytes: 0, conns: 0 };
      t = performance.now();
      for (let i = 0; i < n; i++) {
        a.add(toAggInput(decode(msgs[i])));
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
      r.conns = a.sizes.connections;
      e2e.push(r);
    }
  } finally {
    await influx.destroy();
  }

  const rows: [string, string, string][] = [
    ['decode (Avro single-object -> record)', rate(n, decodeMs), '1.00'],
    [`decode + aggregate (flush every ${FLUSH_EVERY})`, rate(n, aggMs), (decodeMs / aggMs).toFixed(2)],
    ...e2e.map((r): [string, string, string] => [`+ write InfluxDB + snapshot (flush every ${r.every})`, rate(n, r.ms), (decodeMs / r.ms).toFixed(2)]),
  ];
  process.stdout.write('\nstage (one Node thread; influxd on the other core)            events/s   relative to decode\n');
  for (const [a, b, c] of rows) process.stdout.write(`${a.padEnd(58)}${b.padStart(12)}   ${c}\n`);
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

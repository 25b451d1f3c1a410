// `npm run bench:fleet`: a simulated fleet's backlog (N hosts' real Avro records, keyed by host, P partitions) in the
// bundled broker, drained by 1 and 2 `nettally consumer` processes into a real influxd, side by side with a raw read
// of the same topic (kcat, kafkajs): events/s, events per CPU-second, ratio to the raw read, InfluxDB points/s and
// write amplification, peak RSS, lag over time, and an exactness check against the generator's ground truth.
// --baseline-bin drains the same backlog with another build first (before/after in one run); --live S follows a
// second fleet whose records are produced as their event time comes (write amplification while following traffic).
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import { join, resolve } from 'path';
import type { Admin, Kafka } from 'kafkajs';
import { formatHelp, parseArgs, type CommandSpec } from '../lib/args';
import { createKafkaClient } from '../lib/kafka';
import { synthesize } from '../consumer/synthetic';
import { encode } from '../schemas';
import { startBrokerProcess } from '../test/helpers/broker';
import { startInflux, type TestInflux } from '../test/helpers/influx';
import { cpuSeconds, peakRss } from './proc';
import { holdReport, holdRun, type HoldResult } from './hold';

const spec: CommandSpec = {
  name: 'bench:fleet',
  summary: 'Consumer-group drain of a simulated fleet backlog vs a raw Kafka read of the same topic.',
  options: [
    { name: 'hosts', type: 'int', default: 300, min: 1, help: 'simulated hosts (one producer key each)' },
    { name: 'conns-per-host', type: 'int', default: 60, min: 1, help: 'connections per host over the simulated span' },
    { name: 'minutes', type: 'int', default: 10, min: 1, help: 'event-time span of the simulated traffic' },
    { name: 'sample-every', type: 'int', default: 6, min: 1, help: 'seconds between samples of one connection (the producer flush interval)' },
    { name: 'partitions', type: 'int', default: 4, min: 1, help: 'partitions of the records topic' },
    { name: 'consumers', type: 'list', default: ['1', '2'], help: 'consumer process counts to compare' },
    { name: 'consumer-args', type: 'list', default: [], help: 'extra `nettally consumer` flags (comma separated)' },
    { name: 'baseline-bin', type: 'string', default: '', help: 'another build\'s dist/bin/nettally.js, drained side by side (before/after a change)' },
    { name: 'live', type: 'int', default: 0, min: 0, help: 'also follow live traffic for this many seconds (records produced as their event time comes; 0 = off)' },
    { name: 'live-hosts', type: 'int', default: 100, min: 1, help: 'simulated hosts of the live run' },
    { name: 'profile', type: 'string', default: '', help: 'write a V8 CPU profile of each consumer process (both builds) into <dir>/<build>-<consumers>/ (node --cpu-prof); their self time by stage is printed at the end' },
    { name: 'hold', type: 'list', default: [], help: 'instead: live connection counts one consumer holds (e.g. 15000,100000): its memory split and state bytes per flush at 1% change (bench/hold.ts)' },
    { name: 'hold-rounds', type: 'int', default: 6, min: 1, help: 'flush intervals of 1% change after the hold backlog' },
    { name: 'hold-variants', type: 'list', default: ['this', 'untuned', 'fetch', 'baseline'], help: 'which --hold variants to run: this, untuned (NETTALLY_NODE_TUNING=0), fetch (kafkajs default fetch sizes), baseline (--baseline-bin)' },
  ],
};

const ROOT = resolve(__dirname, '../..');
const BIN = join(ROOT, 'dist/bin/nettally.js');
const TOPIC = 'nettally.records';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** Produces the fleet's records in event-time order across hosts (each host's own stream stays in seq order, as its
 * producer sends it), keyed by host; each request stays under a default Kafka's 1 MiB. */
async function produceFleet(kafka: Kafka, streams: { t: number; v: Buffer }[][], keys: string[], topic = TOPIC, paced = false): Promise<number> {
  const producer = kafka.producer({ allowAutoTopicCreation: false, maxInFlightRequests: 1 });
  await producer.connect();
  const order: [number, number, number][] = [];
  streams.forEach((s, h) => s.forEach((m, i) => order.push([m.t, h, i])));
  order.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
  let n = 0;
  let batch: { key: string; value: Buffer }[] = [];
  let bytes = 0;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    await producer.send({ topic, acks: -1, messages: batch });
    n += batch.length;
    batch = [];
    bytes = 0;
  };
  for (const [t, h, i] of order) {
    // paced: a record leaves when the wall clock reaches its event time (what a live fleet's producers do)
    while (paced && t > Date.now()) {
      await flush();
      await sleep(Math.min(200, t - Date.now()));
    }
    const v = streams[h][i].v;
    batch.push({ key: keys[h], value: v });
    bytes += v.length + keys[h].length + 16;
    if (bytes >= 512 * 1024) await flush();
  }
  await flush();
  await producer.disconnect();
  return n;
}

async function highWatermarks(admin: Admin, topic = TOPIC): Promise<Map<number, bigint>> {
  const o = await admin.fetchTopicOffsets(topic);
  return new Map(o.map((p) => [p.partition, BigInt(p.high)]));
}

/** kcat reading the whole topic once (librdkafka, the raw ceiling): messages/s. */
function kcatRead(address: string, expected: number): { rate: number; n: number } {
  const t0 = performance.now();
  const r = spawnSync('kcat', ['-C', '-b', address, '-t', TOPIC, '-o', 'beginning', '-e', '-q', '-f', '.'], { maxBuffer: 1 << 30 });
  const ms = performance.now() - t0;
  const n = r.stdout.length;
  if (n !== expected) throw new Error(`kcat read ${n} messages, expected ${expected}: ${r.stderr.toString().slice(0, 500)}`);
  return { rate: (n * 1000) / ms, n };
}

/** A bare kafkajs consumer-group member reading the topic (what the consumer's client library alone can do). */
async function kafkajsRead(kafka: Kafka, expected: number): Promise<number> {
  const c = kafka.consumer({ groupId: `bench-raw-${process.pid}-${Date.now()}`, maxWaitTimeInMs: 100 });
  await c.connect();
  await c.subscribe({ topics: [TOPIC], fromBeginning: true });
  let n = 0;
  let t0 = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  await c.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      if (t0 === 0) t0 = performance.now();
      n += batch.messages.length;
      if (n >= expected) done();
    },
  });
  await finished;
  const ms = performance.now() - t0;
  await c.disconnect();
  return (n * 1000) / ms;
}

async function influxScalar(influx: TestInflux, q: string, db: string): Promise<number> {
  const r = (await influx.query(q, db)) as { results?: { series?: { values?: unknown[][] }[] }[] };
  let sum = 0;
  for (const s of r.results?.[0]?.series ?? []) for (const v of s.values ?? []) sum += Number(v[1] ?? 0);
  return sum;
}

/** Points influxd received for writing (its own `write` statistics: pointReq). */
async function pointsReceived(influx: TestInflux): Promise<number> {
  const r = (await influx.query('SHOW STATS FOR \'write\'', '_internal')) as { results?: { series?: { columns: string[]; values: unknown[][] }[] }[] };
  const s = r.results?.[0]?.series?.[0];
  if (!s) return 0;
  const i = s.columns.indexOf('pointReq');
  return Number(s.values[0][i] ?? 0);
}

/** Self time of a V8 CPU profile (node --cpu-prof) grouped by the consumer's stages, and its top functions. */
function summarizeProfile(file: string): string {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as {
    nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(prof.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<number, number>();
  prof.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)));
  const group = (f: { functionName: string; url: string }): string => {
    const u = f.url;
    if (f.functionName === '(idle)') return 'idle';
    if (f.functionName === '(garbage collector)') return 'GC';
    if (u.includes('/kafkajs/') || u.includes('/lib/kafkajs-')) return 'kafkajs';
    if (u.includes('/schemas/') || u.includes('/avsc/')) return 'decode';
    if (/consumer\/(aggregator|agg-state|windows|records|active|classes)\.js/.test(u)) return 'aggregate';
    if (/consumer\/influx\.js|lib\/text\.js/.test(u)) return 'line protocol';
    if (/consumer\/(state-store|snapshot-chain)\.js/.test(u) || u === 'node:zlib') return 'snapshot';
    if (/consumer\/consumer\.js/.test(u)) return 'consumer loop';
    if (u === '') return `native ${f.functionName}`;
    return 'other';
  };
  const groups = new Map<string, number>();
  const fns = new Map<string, number>();
  let total = 0;
  for (const [id, us] of self) {
    const f = byId.get(id);
    if (!f) continue;
    total += us;
    const g = group(f);
    groups.set(g, (groups.get(g) ?? 0) + us);
    const name = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(node_modules|dist)\//, '')}:${f.lineNumber + 1}`;
    fns.set(name, (fns.get(name) ?? 0) + us);
  }
  const pct = (us: number): string => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
  const lines = [`profile ${file}: ${(total / 1e6).toFixed(1)} s sampled`, 'self time by group (>= 0.2%):'];
  for (const [g, us] of [...groups].sort((a, b) => b[1] - a[1])) if (us >= total / 500) lines.push(`  ${pct(us)}  ${g}`);
  lines.push('top functions (self):');
  for (const [n, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, 15)) lines.push(`  ${pct(us)}  ${n}`);
  return lines.join('\n');
}

interface RunResult {
  label: string;
  consumers: number;
  seconds: number;
  cpu: number;
  rssMiB: number[];
  pointsReceived: number;
  pointsStored: number;
  lag: string;
  exact: boolean;
  detail: string;
}

async function drain(address: string, admin: Admin, members: number, total: number, truth: { tx: number; rx: number }, extra: string[], live?: { topic: string; feed: () => Promise<void> }, bin = BIN, nodeArgs: string[] = []): Promise<RunResult> {
  const topic = live?.topic ?? TOPIC;
  const influx = await startInflux();
  const group = `bench-fleet-${members}-${Date.now()}`;
  const db = 'bench';
  const children: ChildProcess[] = [];
  const lagSeries: string[] = [];
  try {
    let high = await highWatermarks(admin, topic);
    const received0 = await pointsReceived(influx);
    const t0 = performance.now();
    for (let i = 0; i < members; i++) {
      const child = spawn(process.execPath, [...nodeArgs, bin, 'consumer', '--brokers', address, '--topic', topic, '--group', group, '--influx-url', influx.url, '--influx-db', db, '--status-interval', '0', ...extra], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, LOG_LEVEL: 'warn' },
      });
      child.stderr?.on('data', (d: Buffer) => process.stderr.write(`[consumer ${i}] ${d.toString()}`));
      children.push(child);
    }
    const cpu = new Map<number, number>();
    const rss = new Map<number, number>();
    let lastSample = 0;
    // Live: records reach the topic as their event time comes; the drain ends once the consumers caught up after that.
    let fed = live === undefined;
    const feeding = live?.feed().then(async () => {
      high = await highWatermarks(admin, topic);
      fed = true;
    });
    feeding?.catch(() => undefined);
    for (;;) {
      for (const c of children) {
        if (c.exitCode !== null) throw new Error(`a consumer exited (${c.exitCode}) during the drain`);
        cpu.set(c.pid as number, cpuSeconds(c.pid as number));
        rss.set(c.pid as number, peakRss(c.pid as number) / 2 ** 20);
      }
      const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] });
      let lag = 0n;
      for (const [p, h] of high) {
        const off = BigInt(committed[0]?.partitions.find((x) => x.partition === p)?.offset ?? '-1');
        lag += off < 0n ? h : h - off;
      }
      const s = (performance.now() - t0) / 1000;
      if (s - lastSample >= 2) {
        lagSeries.push(`${s.toFixed(0)}s:${fmt(Number(lag))}`);
        lastSample = s;
      }
      if (lag === 0n && fed) break;
      if (feeding && !fed) await Promise.race([feeding, sleep(0)]);
      if (s > 1800) throw new Error('drain did not finish within 30 minutes');
      await sleep(200);
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpuTotal = [...cpu.values()].reduce((a, b) => a + b, 0);
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    const pointsRec = (await pointsReceived(influx)) - received0;
    let stored = 0;
    for (const m of ['nettally_traffic_1m', 'nettally_traffic_1h']) stored += await influxScalar(influx, `SELECT count(tx_bytes) FROM ${m}`, db);
    for (const m of ['nettally_iface_1m', 'nettally_iface_1h']) stored += await influxScalar(influx, `SELECT count(rx_bytes) FROM ${m}`, db);
    const tx = await influxScalar(influx, 'SELECT sum(tx_bytes) FROM nettally_traffic_1m', db);
    const rx = await influxScalar(influx, 'SELECT sum(rx_bytes) FROM nettally_traffic_1m', db);
    const exact = tx === truth.tx && rx === truth.rx;
    return {
      label: bin === BIN ? 'this' : 'baseline',
      consumers: members,
      seconds,
      cpu: cpuTotal,
      rssMiB: [...rss.values()],
      pointsReceived: pointsRec,
      pointsStored: stored,
      lag: lagSeries.join(' '),
      exact,
      detail: `tx ${fmt(tx)} (truth ${fmt(truth.tx)}), rx ${fmt(rx)} (truth ${fmt(truth.rx)}), ${fmt(total)} events`,
    };
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await influx.destroy();
  }
}

async function main(): Promise<void> {
  const args = parseArgs(spec, process.argv.slice(2));
  if (args === 'help') {
    process.stdout.write(formatHelp(spec));
    return;
  }
  if (!fs.existsSync(BIN)) throw new Error('dist/ is not built; run npm run build');
  if (args.list('hold').length > 0) return holdMain(args.list('hold').map(Number), args.num('partitions'), args.num('hold-rounds'), args.str('baseline-bin'), args.list('consumer-args'), args.list('hold-variants'));
  const hosts = args.num('hosts');
  process.stderr.write(`bench:fleet: generating ${hosts} hosts' records...\n`);
  const data = synthesize({ hosts, connsPerHost: args.num('conns-per-host'), startMs: Date.UTC(2026, 0, 1), minutes: args.num('minutes'), seed: 7, sampleEverySec: args.num('sample-every') });
  const keys = [...data.byHost.keys()];
  const streams = [...data.byHost.values()].map((s) => s.map((m) => ({ t: Number((m.record as { time_ns: bigint }).time_ns / 1_000_000n), v: encode(m.kind, m.record as never) })));
  const total = streams.reduce((a, s) => a + s.length, 0);
  const avg = streams.reduce((a, s) => a + s.reduce((b, m) => b + m.v.length, 0), 0) / total;
  const truth = { tx: 0, rx: 0 };
  for (const r of data.traffic) {
    truth.tx += r.fields.tx_bytes;
    truth.rx += r.fields.rx_bytes;
  }

  const broker = await startBrokerProcess({ args: ['--fsync', 'never'] });
  const kafka = createKafkaClient({ clientId: 'bench-fleet', brokers: [broker.address] });
  const admin = kafka.admin();
  try {
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: TOPIC, numPartitions: args.num('partitions') }], waitForLeaders: true });
    let t = performance.now();
    const produced = await produceFleet(kafka, streams, keys);
    const produceRate = (produced * 1000) / (performance.now() - t);
    process.stderr.write(`bench:fleet: ${fmt(produced)} records in the topic (${fmt(produceRate)}/s produced)\n`);
    const kcat = kcatRead(broker.address, produced);
    t = performance.now();
    const kjs = await kafkajsRead(kafka, produced);
    const results: RunResult[] = [];
    const baseline = args.str('baseline-bin');
    // A profile is written when a consumer exits after SIGTERM (its normal shutdown), one file per process.
    const profileDir = args.str('profile') ? resolve(args.str('profile')) : '';
    for (const m of args.list('consumers').map(Number).filter((x) => x > 0)) {
      for (const bin of baseline ? [resolve(baseline), BIN] : [BIN]) {
        process.stderr.write(`bench:fleet: draining with ${m} consumer process(es) of ${bin}...\n`);
        const label = bin === BIN ? 'this' : 'baseline';
        const prof = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, `${label}-${m}`)}`] : [];
        results.push(await drain(broker.address, admin, m, produced, truth, bin === BIN ? args.list('consumer-args') : [], undefined, bin, prof));
      }
    }

    let liveRun: { r: RunResult; events: number; hosts: number; seconds: number } | undefined;
    const liveS = args.num('live');
    if (liveS > 0) {
      const liveTopic = `${TOPIC}.live`;
      await admin.createTopics({ topics: [{ topic: liveTopic, numPartitions: args.num('partitions') }], waitForLeaders: true });
      const liveHosts = args.num('live-hosts');
      // event time = wall time: the records go out when their time comes (the consumer needs a few s to join first)
      const startMs = Math.ceil((Date.now() + 8000) / 1000) * 1000;
      const live = synthesize({ hosts: liveHosts, connsPerHost: args.num('conns-per-host'), startMs, minutes: Math.ceil(liveS / 60), seed: 8, sampleEverySec: args.num('sample-every') });
      const liveKeys = [...live.byHost.keys()];
      const liveStreams = [...live.byHost.values()].map((st) => st.map((m) => ({ t: Number((m.record as { time_ns: bigint }).time_ns / 1_000_000n), v: encode(m.kind, m.record as never) })));
      const events = liveStreams.reduce((a, st) => a + st.length, 0);
      const liveTruth = { tx: 0, rx: 0 };
      for (const r of live.traffic) {
        liveTruth.tx += r.fields.tx_bytes;
        liveTruth.rx += r.fields.rx_bytes;
      }
      process.stderr.write(`bench:fleet: following ${liveHosts} hosts' live traffic for ${Math.ceil(liveS / 60)} min with 1 consumer...\n`);
      const feed = (): Promise<number> => produceFleet(kafka, liveStreams, liveKeys, liveTopic, true);
      const r = await drain(broker.address, admin, 1, events, liveTruth, args.list('consumer-args'), { topic: liveTopic, feed: async () => void (await feed()) });
      liveRun = { r, events, hosts: liveHosts, seconds: Math.ceil(liveS / 60) * 60 };
    }

    const out = process.stdout;
    out.write(`\nfleet: ${hosts} hosts, ${fmt(total)} events (${avg.toFixed(0)} B avg), ${args.num('partitions')} partitions, ${args.num('minutes')} min of event time\n`);
    out.write(`raw read of the same topic: kcat ${fmt(kcat.rate)} msg/s, kafkajs ${fmt(kjs)} msg/s\n\n`);
    out.write('build     consumers  drain s  events/s   ratio to kcat  events/CPU-s  points/s  write amp  peak RSS MiB  exact\n');
    for (const r of results) {
      const rate = total / r.seconds;
      out.write(
        `${r.label.padEnd(8)}  ${String(r.consumers).padStart(9)}  ${r.seconds.toFixed(1).padStart(7)}  ${fmt(rate).padStart(8)}   ${(rate / kcat.rate).toFixed(3).padStart(13)}  ` +
          `${fmt(total / r.cpu).padStart(12)}  ${fmt(r.pointsReceived / r.seconds).padStart(8)}  ${(r.pointsReceived / Math.max(1, r.pointsStored)).toFixed(2).padStart(9)}  ` +
          `${r.rssMiB.map((x) => x.toFixed(0)).join('+').padStart(12)}  ${r.exact ? 'yes' : 'NO'}\n`,
      );
    }
    out.write('\n');
    for (const r of results) out.write(`${r.label}, ${r.consumers} consumer(s): ${r.detail}; points received ${fmt(r.pointsReceived)}, stored ${fmt(r.pointsStored)}\n  lag: ${r.lag}\n`);
    out.write('(drain time ends at the commit that reaches the end: it includes up to one consumer flush interval)\n');
    if (profileDir) {
      for (const d of fs.readdirSync(profileDir)) {
        for (const f of fs.readdirSync(join(profileDir, d)).filter((x) => x.endsWith('.cpuprofile'))) out.write(`\n${d}: ${summarizeProfile(join(profileDir, d, f))}\n`);
      }
    }
    if (liveRun) {
      const { r, events, hosts: lh, seconds } = liveRun;
      out.write(
        `\nlive: ${lh} hosts, ${fmt(events)} events produced as their event time came over ${seconds} s, 1 consumer: ` +
          `CPU ${r.cpu.toFixed(1)} s (${fmt(events / r.cpu)} events/CPU-s), points received ${fmt(r.pointsReceived)}, stored ${fmt(r.pointsStored)}, ` +
          `write amp ${(r.pointsReceived / Math.max(1, r.pointsStored)).toFixed(2)}, peak RSS ${r.rssMiB.map((x) => x.toFixed(0)).join('+')} MiB, exact ${r.exact ? 'yes' : 'NO'}\n  ${r.detail}\n`,
      );
    }
    if (results.some((r) => !r.exact) || (liveRun && !liveRun.r.exact)) process.exitCode = 1;
  } finally {
    await admin.disconnect().catch(() => undefined);
    await broker.stop();
  }
}

/** --hold: the variants side by side for each connection count (bench/hold.ts). */
async function holdMain(counts: number[], partitions: number, rounds: number, baseline: string, extra: string[], which: string[]): Promise<void> {
  const variants = [
    { key: 'this', label: 'this build', bin: BIN, args: extra, env: {} },
    { key: 'untuned', label: 'this, NETTALLY_NODE_TUNING=0', bin: BIN, args: extra, env: { NETTALLY_NODE_TUNING: '0' } },
    { key: 'fetch', label: 'this, kafkajs default fetch', bin: BIN, args: ['--fetch-max-bytes', String(10 * 1024 * 1024), ...extra], env: {} },
    ...(baseline ? [{ key: 'baseline', label: 'baseline', bin: resolve(baseline), args: [], env: {} }] : []),
  ].filter((v) => which.includes(v.key));
  const broker = await startBrokerProcess({ args: ['--fsync', 'never'] });
  const kafka = createKafkaClient({ clientId: 'bench-hold', brokers: [broker.address] });
  const admin = kafka.admin();
  const results: HoldResult[] = [];
  try {
    await admin.connect();
    for (const n of counts) {
      for (const v of variants) {
        process.stderr.write(`bench:fleet --hold: ${n} live connections, ${v.label}...\n`);
        results.push(await holdRun(kafka, admin, broker.address, n, partitions, rounds, v));
        process.stderr.write(holdReport(results.slice(-1))); // each result as it comes (a long run may be cut short)
      }
    }
  } finally {
    await admin.disconnect().catch(() => undefined);
    await broker.stop();
  }
  process.stdout.write(holdReport(results));
  if (results.some((r) => !r.exact)) process.exitCode = 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:fleet failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});

// `npm run bench:fleet -- --hold 15000,100000`: one `nettally consumer` process holding N live connections (N/50 hosts
// of 50 open connections each, 4 partitions), then following traffic in which 1% of them send a sample per flush
// interval. Reports the consumer's peak RSS (VmHWM) and, from its own status lines (memory_mib), the V8 heap used /
// reserved, external (Buffers) and the native rest at its largest RSS sample; the state it saved per flush (bytes
// per delta link); and the exactness of the totals. Variants run side by side in one run: this build with its
// runtime settings, this build on Node's defaults (NETTALLY_NODE_TUNING=0), kafkajs's default fetch sizes, and
// optionally another build (--baseline-bin).
import { spawn } from 'child_process';
import { createInterface } from 'readline';
import type { Admin, Kafka } from 'kafkajs';
import { encode } from '../schemas';
import { AVSC_DEFAULTS } from '../schemas/types.generated';
import { startInflux, type TestInflux } from '../test/helpers/influx';
import { cpuSeconds, peakRss } from './proc';

const HOSTS_CONNS = 50;
const SERVICE_PORTS = [443, 80, 5432, 8080];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface HoldVariant {
  label: string;
  bin: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

interface Memory {
  rss: number;
  heap_used: number;
  heap_total: number;
  external: number;
  array_buffers: number;
}

interface Status {
  lag: number;
  state_saves?: number;
  state_deltas?: number;
  state_bytes?: number;
  memory_mib?: Memory;
}

/** Cumulative counters of connection `i` after `samples` samples (exact: the bench sums them as the truth). */
const txOf = (i: number, samples: number): number => samples * (1000 + (i % 977));
const rxOf = (i: number, samples: number): number => samples * (3000 + (i % 541));

function connRecord(i: number, kind: 'conn_event' | 'conn_sample', samples: number, timeMs: number, seq: number): Buffer {
  const h = Math.floor(i / HOSTS_CONNS);
  const base = {
    host_id: h.toString(16).padStart(32, '0'), hostname: `hold-${h}`, boot_id: `00000000-0000-4000-8000-${h.toString(16).padStart(12, '0')}`, epoch: 1, seq,
    time_ns: BigInt(timeMs) * 1_000_000n, ts_ns: timeMs * 1000, workload: 'host', cookie: 1_000_000 + i, start_ns: 1, cgroup_id: 1, netns: 4026531840,
    netns_cookie: 1, pid: 1000 + (i % HOSTS_CONNS), uid: 0, comm: ['curl', 'nginx', 'postgres', 'java'][i % 4], family: 2, protocol: 6, direction: 1 + (i % 2),
    saddr: '10.0.0.1', daddr: `10.1.${(i >> 8) & 255}.${i & 255}`, cgroup_path: null, container_id: null,
    // outbound to a service port, or inbound on one (from an ephemeral port): tag sets per host stay few, as in a fleet
    sport: i % 2 === 0 ? 32768 + (i % 20000) : SERVICE_PORTS[i % 4], dport: i % 2 === 0 ? SERVICE_PORTS[i % 4] : 32768 + (i % 20000),
    tx_bytes: txOf(i, samples), rx_bytes: rxOf(i, samples), retransmits: 0,
  };
  if (kind === 'conn_event') return encode('conn_event', { ...AVSC_DEFAULTS.conn_event, ...base, event: 'established', duration_ns: 0, flush_reason: 'open' });
  return encode('conn_sample', { ...AVSC_DEFAULTS.conn_sample, ...base, flush_reason: 'interval' });
}

async function send(kafka: Kafka, topic: string, msgs: { key: string; value: Buffer }[]): Promise<void> {
  const producer = kafka.producer({ allowAutoTopicCreation: false, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    for (let i = 0; i < msgs.length; i += 2000) await producer.send({ topic, acks: -1, messages: msgs.slice(i, i + 2000) });
  } finally {
    await producer.disconnect();
  }
}

async function influxSum(influx: TestInflux, field: string, db: string): Promise<number> {
  const r = (await influx.query(`SELECT sum(${field}) FROM nettally_traffic_1m`, db)) as { results?: { series?: { values?: unknown[][] }[] }[] };
  let sum = 0;
  for (const s of r.results?.[0]?.series ?? []) for (const v of s.values ?? []) sum += Number(v[1] ?? 0);
  return sum;
}

export interface HoldResult {
  label: string;
  conns: number;
  peakRssMiB: number;
  atPeak: Memory | undefined;
  deltaBytes: number[];
  cpuS: number;
  drainS: number;
  exact: boolean;
}

/**
 * One variant: N connections opened and sampled once (the backlog, drained), then `rounds` flush intervals in each of
 * which 1% of them send a new sample (event time = now), then a wait until every delta after them is saved.
 */
export async function holdRun(kafka: Kafka, admin: Admin, address: string, n: number, partitions: number, rounds: number, v: HoldVariant): Promise<HoldResult> {
  const topic = `nettally.hold.${n}.${Date.now()}`;
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true });
  const keyOf = (i: number): string => Math.floor(i / HOSTS_CONNS).toString(16).padStart(32, '0');
  const seqs = new Map<number, number>();
  const nextSeq = (i: number): number => {
    const h = Math.floor(i / HOSTS_CONNS);
    const s = (seqs.get(h) ?? 0) + 1;
    seqs.set(h, s);
    return s;
  };
  const samples = new Array<number>(n).fill(0);
  const t0 = Date.now() - 90_000;
  const backlog: { key: string; value: Buffer }[] = [];
  for (let i = 0; i < n; i++) backlog.push({ key: keyOf(i), value: connRecord(i, 'conn_event', 0, t0 + (i % 1000), nextSeq(i)) });
  for (let i = 0; i < n; i++) {
    samples[i] = 1;
    backlog.push({ key: keyOf(i), value: connRecord(i, 'conn_sample', 1, t0 + 30_000 + (i % 1000), nextSeq(i)) });
  }
  await send(kafka, topic, backlog);
  backlog.length = 0;
  const influx = await startInflux();
  const db = 'hold';
  const groupId = `hold-${n}-${Date.now()}`;
  const child = spawn(process.execPath, [v.bin, 'consumer', '--brokers', address, '--topic', topic, '--group', groupId, '--influx-url', influx.url, '--influx-db', db,
    '--status-interval', '1s', '--flush-interval', '5s', ...v.args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LOG_LEVEL: 'info', ...v.env } });
  let last: Status | undefined;
  let atPeak: Memory | undefined;
  // its log lines (pino: stderr) carry the status; anything else is shown
  createInterface({ input: child.stderr! }).on('line', (line) => {
    let rec: ({ msg?: string } & Status) | undefined;
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      rec = undefined;
    }
    if (rec?.msg !== 'status') {
      if (!/"level":30/.test(line)) process.stderr.write(`[consumer ${v.label}] ${line}\n`);
      return;
    }
    last = rec;
    if (rec.memory_mib && (!atPeak || rec.memory_mib.rss > atPeak.rss)) atPeak = rec.memory_mib;
  });
  let peak = 0;
  // VmHWM (a read while the process re-executes itself can miss it: NaN, skipped)
  const readPeak = (): void => {
    const v = child.exitCode === null && child.pid ? peakRss(child.pid) : NaN;
    if (Number.isFinite(v)) peak = Math.max(peak, v);
  };
  const watch = setInterval(readPeak, 200);
  try {
    const started = performance.now();
    // drained: the status line says no lag, and a state save happened after the backlog
    const waitFor = async (what: string, ok: () => boolean): Promise<void> => {
      for (let waited = 0; !ok(); waited += 200) {
        if (child.exitCode !== null) throw new Error(`the consumer (${v.label}) exited (${child.exitCode}) while waiting for ${what}`);
        if (waited > 900_000) throw new Error(`${what} did not happen within 15 minutes (${v.label})`);
        await sleep(200);
      }
    };
    const endOffset = async (): Promise<number> => (await admin.fetchTopicOffsets(topic)).reduce((a, p) => a + Number(p.high), 0);
    const group = async (): Promise<number> => {
      const o = await admin.fetchOffsets({ groupId, topics: [topic] });
      return o[0].partitions.reduce((a, p) => a + Math.max(0, Number(p.offset)), 0);
    };
    let committed = 0;
    const caughtUp = async (): Promise<void> => {
      const end = await endOffset();
      await waitFor('the commit of every record', () => {
        void group().then((c) => (committed = c)).catch(() => undefined);
        return committed >= end;
      });
    };
    await caughtUp();
    const drainS = (performance.now() - started) / 1000;
    const perFlush: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const msgs: { key: string; value: Buffer }[] = [];
      for (let i = r % 100; i < n; i += 100) {
        samples[i]++;
        msgs.push({ key: keyOf(i), value: connRecord(i, 'conn_sample', samples[i], Date.now(), nextSeq(i)) });
      }
      const before = { bytes: last?.state_bytes ?? 0, saves: last?.state_saves ?? 0 };
      await send(kafka, topic, msgs);
      await caughtUp();
      // the saves after the commit: what that 1% cost in state bytes per link (a partition whose state did not change
      // may not save: at most 30 s; a build without these counters in its status line: two flush intervals)
      const deadline = Date.now() + 30_000;
      if (last?.state_saves === undefined) await sleep(10_000);
      else {
        await waitFor('the next state saves', () => (last?.state_saves ?? 0) >= before.saves + partitions || Date.now() > deadline);
        const saves = (last?.state_saves ?? 0) - before.saves;
        if (saves > 0) perFlush.push(((last?.state_bytes ?? 0) - before.bytes) / saves);
      }
    }
    const cpuS = cpuSeconds(child.pid!);
    readPeak();
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    let tx = 0;
    let rx = 0;
    for (let i = 0; i < n; i++) {
      tx += txOf(i, samples[i]);
      rx += rxOf(i, samples[i]);
    }
    const exact = (await influxSum(influx, 'tx_bytes', db)) === tx && (await influxSum(influx, 'rx_bytes', db)) === rx;
    return { label: v.label, conns: n, peakRssMiB: peak / 2 ** 20, atPeak, deltaBytes: perFlush, cpuS, drainS, exact };
  } finally {
    clearInterval(watch);
    if (child.exitCode === null) child.kill('SIGKILL');
    await influx.destroy();
    await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  }
}

export function holdReport(results: HoldResult[]): string {
  const f = (x: number | undefined): string => (x === undefined ? '-' : x.toFixed(0)).padStart(6);
  const lines = [
    '',
    'consumer holding N live connections (1 process, 4 partitions), then 1% of them sampled per 5 s flush',
    'variant                        conns  peak RSS MiB  at peak: rss  heap used  heap total  external  native*  drain s  CPU s  bytes/delta (median)  exact',
  ];
  for (const r of results) {
    const m = r.atPeak;
    const mid = [...r.deltaBytes].sort((a, b) => a - b)[Math.floor(r.deltaBytes.length / 2)] ?? NaN;
    lines.push(
      `${r.label.padEnd(29)}${String(r.conns).padStart(7)}  ${r.peakRssMiB.toFixed(0).padStart(12)}  ${f(m?.rss).padStart(12)}  ${f(m?.heap_used).padStart(9)}  ${f(m?.heap_total).padStart(10)}  ` +
        `${f(m?.external).padStart(8)}  ${f(m ? m.rss - m.heap_total - m.external : undefined).padStart(7)}  ${r.drainS.toFixed(1).padStart(7)}  ${r.cpuS.toFixed(1).padStart(5)}  ${Number.isFinite(mid) ? (mid / 1024).toFixed(1).padStart(16) + ' KiB' : '               -'}  ${r.exact ? 'yes' : 'NO'}`,
    );
  }
  lines.push('(* native = rss − heap total − external, at the status sample with the largest rss: code, stacks, malloc arenas)');
  return lines.join('\n') + '\n';
}

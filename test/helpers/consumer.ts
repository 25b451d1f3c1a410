// Test helper for consumer scenarios: produce synthetic records with known truth, wait for the group to catch up,
// run `nettally usage` in-process and compare with the truth, run the consumer as a child process.
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import { join, resolve } from 'path';
import { Writable } from 'stream';
import { Kafka, logLevel, type Admin } from 'kafkajs';
import { parseArgs } from '../../lib/args';
import { silentLogger, type Logger } from '../../lib/log';
import { command as usageCommand } from '../../consumer/cmd-usage';
import { encode } from '../../schemas';
import { sumTruth, type SynthData, type SynthMessage, type TruthRow } from '../../consumer/synthetic';
import { GROUP_BY_TAGS, type GroupKey } from '../../consumer/usage';
import { consumerConfigFrom, command as consumerCommand } from '../../consumer/cmd-consumer';
import { createRollupConsumer, type RollupConsumer, type RollupConsumerConfig } from '../../consumer/consumer';
import type { BrokerOptions } from '../../broker/index';
import { startTestBroker, type InProcessBroker } from './broker';
import { startInflux, type TestInflux } from './influx';

const ROOT = resolve(__dirname, '../..');

export function kafkaClient(address: string, clientId = 'nettally-test'): Kafka {
  return new Kafka({ clientId, brokers: [address], logLevel: logLevel.NOTHING, retry: { retries: 10, initialRetryTime: 100 } });
}

export async function createTopic(admin: Admin, topic: string, partitions: number): Promise<void> {
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true });
}

/** Encoded messages in send order: every host's records in seq order, hosts interleaved, some batches re-sent. */
export function messagesOf(data: SynthData, opts: { dupEvery?: number; seed?: number } = {}): { key: string; value: Buffer }[] {
  let s = opts.seed ?? 1;
  const rnd = (): number => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const streams = [...data.byHost.entries()].map(([host, msgs]) => ({ host, msgs, i: 0 }));
  const out: { key: string; value: Buffer }[] = [];
  const enc = (m: SynthMessage): Buffer => encode(m.kind, m.record as never);
  for (;;) {
    const live = streams.filter((st) => st.i < st.msgs.length);
    if (live.length === 0) break;
    const st = live[Math.floor(rnd() * live.length)];
    const n = 1 + Math.floor(rnd() * 5);
    for (let k = 0; k < n && st.i < st.msgs.length; k++, st.i++) out.push({ key: st.host, value: enc(st.msgs[st.i]) });
    if (opts.dupEvery && rnd() < 1 / opts.dupEvery) {
      for (let j = Math.max(0, st.i - n); j < st.i; j++) out.push({ key: st.host, value: enc(st.msgs[j]) });
    }
  }
  return out;
}

export async function produce(kafka: Kafka, topic: string, messages: readonly { key: string; value: Buffer; headers?: Record<string, string> }[], chunk = 500): Promise<void> {
  const p = kafka.producer({ allowAutoTopicCreation: false });
  await p.connect();
  try {
    for (let i = 0; i < messages.length; i += chunk) await p.send({ topic, acks: -1, messages: messages.slice(i, i + chunk) });
  } finally {
    await p.disconnect();
  }
}

/** Resolves once the group's committed offsets reached the topic's end on every partition. */
export async function waitCaughtUp(admin: Admin, group: string, topic: string, timeoutMs = 90_000, extra?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const ends = await admin.fetchTopicOffsets(topic);
    const committed = (await admin.fetchOffsets({ groupId: group, topics: [topic] }))[0]?.partitions ?? [];
    last = JSON.stringify({ ends: ends.map((e) => [e.partition, e.high]), committed: committed.map((c) => [c.partition, c.offset]) });
    if (ends.every((e) => e.high === '0' || committed.find((c) => c.partition === e.partition)?.offset === e.high)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`group ${group} did not catch up on ${topic} in ${timeoutMs} ms: ${last} ${extra ? extra() : ''}`);
}

/** Runs `nettally usage <argv>` in-process; returns stdout. */
export async function usage(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  let out = '';
  const stdout = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out += chunk.toString();
      cb();
    },
  });
  const args = parseArgs(usageCommand.spec, argv, env);
  if (args === 'help') throw new Error('help');
  const code = await usageCommand.run(args, { logger: silentLogger, signal: new AbortController().signal, stdout });
  if (code !== 0) throw new Error(`usage exited ${code}`);
  return out;
}

const TRAFFIC_FIELDS = ['tx_bytes', 'rx_bytes', 'connections_opened', 'connections_closed', 'retransmits'];

/** `nettally usage --format json` rows keyed like sumTruth: `${window_ms}|tag|tag…` → fields (all-zero rows dropped). */
export async function usageByGroup(influxArgs: string[], fromMs: number, toMs: number, groupBy: GroupKey, window: '1m' | '1h', measurement: 'traffic' | 'iface' = 'traffic'): Promise<Map<string, Record<string, number>>> {
  const out = await usage([...influxArgs, '--from', new Date(fromMs).toISOString(), '--to', new Date(toMs).toISOString(), '--group-by', groupBy, '--window', window, '--format', 'json', '--measurement', measurement]);
  const rows = JSON.parse(out) as Record<string, string | number | boolean>[];
  const tags = GROUP_BY_TAGS[groupBy];
  const fields = measurement === 'traffic' ? TRAFFIC_FIELDS : ['rx_bytes', 'rx_packets', 'tx_bytes', 'tx_packets'];
  const m = new Map<string, Record<string, number>>();
  for (const r of rows) {
    const f = Object.fromEntries(fields.map((k) => [k, r[k] as number]));
    if (Object.values(f).every((v) => v === 0)) continue;
    m.set([String(Date.parse(r.window as string)), ...tags.map((t) => String(r[t]))].join('|'), f);
  }
  return sorted(m);
}

export function truthByGroup(rows: readonly TruthRow[], groupBy: GroupKey, window: '1m' | '1h'): Map<string, Record<string, number>> {
  const m = sumTruth(rows, window === '1m' ? 60_000 : 3_600_000, GROUP_BY_TAGS[groupBy]);
  return sorted(new Map([...m].filter(([, f]) => Object.values(f).some((v) => v !== 0))));
}

function sorted(m: Map<string, Record<string, number>>): Map<string, Record<string, number>> {
  return new Map([...m].sort(([a], [b]) => a.localeCompare(b)));
}

/** Compiles dist/ when the consumer sources are newer (tsc emits even if other stages have type errors). */
export function ensureConsumerBuilt(): void {
  const js = join(ROOT, 'dist/consumer/consumer.js');
  const newest = Math.max(...['consumer', 'lib', 'schemas', 'bin'].flatMap((d) => fs.readdirSync(join(ROOT, d)).filter((f) => f.endsWith('.ts')).map((f) => fs.statSync(join(ROOT, d, f)).mtimeMs)));
  if (!fs.existsSync(js) || fs.statSync(js).mtimeMs < newest) {
    spawnSync(join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'ignore' });
  }
  if (!fs.existsSync(js)) throw new Error('dist/ has no compiled consumer; run bash scripts/build.sh');
}

export interface ConsumerProcess {
  child: ChildProcess;
  stderr(): string;
  /** SIGKILL; resolves when gone. */
  kill(): Promise<void>;
  /** SIGTERM (graceful: flush, commit); resolves with the exit code. */
  stop(): Promise<number | null>;
}

export function startConsumerProcess(args: string[], env: NodeJS.ProcessEnv = {}): ConsumerProcess {
  ensureConsumerBuilt();
  const child = spawn(process.execPath, [join(ROOT, 'dist/bin/nettally.js'), 'consumer', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
  });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-200_000);
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return {
    child,
    stderr: () => err,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

export interface ConsumerScenario {
  readonly broker: InProcessBroker;
  readonly influx: TestInflux;
  readonly kafka: Kafka;
  readonly admin: Admin;
  /** `nettally consumer <argv>` in this process (not started); stopped after all tests. */
  /** A consumer built like `nettally consumer <argv>` (optionally with its own logger, or config fields replaced), stopped after all. */
  inProcess(argv: string[], opts?: { logger?: Logger; tweak?: Partial<RollupConsumerConfig> }): RollupConsumer;
  /** `nettally consumer <argv>` as a child process; killed after all tests. */
  child(argv: string[], env?: NodeJS.ProcessEnv): ConsumerProcess;
  /** The rollups in InfluxDB database `db` equal the truth, per `groups` (1m, 1h) and per interface (1m). */
  expectExact(db: string, truth: Pick<SynthData, 'traffic' | 'iface'>, fromMs: number, toMs: number, groups?: GroupKey[]): Promise<void>;
}

/** Registers beforeAll/afterAll for a bundled broker + real influxd + the consumers a test starts; cleans up on failure. */
export function consumerScenario(brokerOpts: Partial<BrokerOptions> = {}): ConsumerScenario {
  let broker: InProcessBroker | undefined;
  let influx: TestInflux | undefined;
  let kafka: Kafka | undefined;
  let admin: Admin | undefined;
  const inProcess: RollupConsumer[] = [];
  const children: ConsumerProcess[] = [];
  const ready = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error('consumerScenario used outside a test');
    return v;
  };
  beforeAll(async () => {
    [broker, influx] = await Promise.all([startTestBroker(brokerOpts), startInflux()]);
    kafka = kafkaClient(broker.address);
    admin = kafka.admin();
    await admin.connect();
  });
  afterAll(async () => {
    for (const c of children) await c.kill();
    for (const c of inProcess) await c.stop().catch(() => undefined);
    await admin?.disconnect().catch(() => undefined);
    await broker?.stop();
    await influx?.destroy();
  });
  return {
    get broker() {
      return ready(broker);
    },
    get influx() {
      return ready(influx);
    },
    get kafka() {
      return ready(kafka);
    },
    get admin() {
      return ready(admin);
    },
    inProcess(argv, opts = {}) {
      const args = parseArgs(consumerCommand.spec, argv, {});
      if (args === 'help') throw new Error('help');
      const c = createRollupConsumer({ config: { ...consumerConfigFrom(args), ...opts.tweak }, logger: opts.logger ?? silentLogger });
      inProcess.push(c);
      return c;
    },
    child(argv, env = {}) {
      const c = startConsumerProcess(argv, env);
      children.push(c);
      return c;
    },
    async expectExact(db, truth, fromMs, toMs, groups = ['host', 'port']) {
      const influxArgs = ['--influx-url', ready(influx).url, '--influx-db', db];
      for (const window of ['1m', '1h'] as const) {
        for (const g of groups) {
          const got = await usageByGroup(influxArgs, fromMs, toMs, g, window);
          expect(got.size).toBeGreaterThan(0);
          expect({ g, window, rows: got }).toEqual({ g, window, rows: truthByGroup(truth.traffic, g, window) });
        }
      }
      expect(await usageByGroup(influxArgs, fromMs, toMs, 'iface', '1m', 'iface')).toEqual(truthByGroup(truth.iface, 'iface', '1m'));
    },
  };
}

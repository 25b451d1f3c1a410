// Test helpers for the producer: a kafkajs reader that decodes every record on the topic, per-connection and
// per-netns totals with dedupe by (host, epoch, seq), and a child-process producer (`nettally producer`).
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import { existsSync, readFileSync, statSync, readdirSync } from 'fs';
import { join, resolve } from 'path';
import { Kafka, logLevel } from 'kafkajs';
import { decode, type Decoded } from '../../schemas/index';

// From source (test/helpers) or compiled (dist/test/helpers, when a bench imports this).
const ROOT = resolve(__dirname, __dirname.includes('/dist/') ? '../../..' : '../..');

/** Reads the topic from the beginning, decoding every message (throws on anything undecodable). */
export async function readTopic(address: string, topic: string, opts: { until?: (all: Decoded[]) => boolean; timeoutMs?: number } = {}): Promise<Decoded[]> {
  const kafka = new Kafka({ clientId: 'nettally-test-reader', brokers: [address], logLevel: logLevel.NOTHING, retry: { retries: 10 } });
  const admin = kafka.admin();
  await admin.connect();
  const out: Decoded[] = [];
  try {
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    const consumer = kafka.consumer({ groupId: `reader-${process.pid}-${Date.now()}-${Math.random()}`, maxWaitTimeInMs: 200 });
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      let ends = new Map<number, string>();
      const seen = new Map<number, string>();
      const refreshEnds = async (): Promise<void> => {
        ends = new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, p.high]));
      };
      await refreshEnds();
      await consumer.run({
        eachMessage: async ({ partition, message }) => {
          out.push(decode(message.value as Buffer));
          seen.set(partition, (BigInt(message.offset) + 1n).toString());
        },
      });
      for (;;) {
        await refreshEnds();
        const caughtUp = [...ends].every(([p, high]) => high === '0' || seen.get(p) === high);
        if (caughtUp && (!opts.until || opts.until(out))) break;
        if (Date.now() > deadline) throw new Error(`readTopic: timed out with ${out.length} records (ends ${JSON.stringify([...ends])})`);
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await consumer.disconnect();
    }
  } finally {
    await admin.disconnect();
  }
  return out;
}

export interface Totals {
  /** Unique records after dedupe by (host_id, epoch, seq). */
  unique: number;
  duplicates: number;
  /** Max cumulative tx/rx per connection (host_id, boot_id, cookie). */
  conns: Map<string, { tx: number; rx: number; netns: number; closed: boolean; sport: number; dport: number; saddr: string; daddr: string; protocol: number }>;
  /** Sum over connections per netns. */
  netns: Map<number, { tx: number; rx: number }>;
}

export function totals(records: Decoded[]): Totals {
  const seen = new Set<string>();
  let duplicates = 0;
  const conns: Totals['conns'] = new Map();
  for (const d of records) {
    const r = d.record;
    const id = `${r.host_id}/${r.epoch}/${r.seq}`;
    if (seen.has(id)) {
      duplicates++;
      continue;
    }
    seen.add(id);
    if (d.kind !== 'conn_sample' && d.kind !== 'conn_event') continue;
    const c = d.record;
    const key = `${c.host_id}/${c.boot_id}/${c.cookie}`;
    const prev = conns.get(key);
    conns.set(key, {
      tx: Math.max(prev?.tx ?? 0, c.tx_bytes),
      rx: Math.max(prev?.rx ?? 0, c.rx_bytes),
      netns: c.netns,
      closed: (prev?.closed ?? false) || (d.kind === 'conn_event' && d.record.event === 'closed'),
      sport: c.sport,
      dport: c.dport,
      saddr: c.saddr,
      daddr: c.daddr,
      protocol: c.protocol,
    });
  }
  const netns: Totals['netns'] = new Map();
  for (const c of conns.values()) {
    const t = netns.get(c.netns) ?? { tx: 0, rx: 0 };
    t.tx += c.tx;
    t.rx += c.rx;
    netns.set(c.netns, t);
  }
  return { unique: seen.size, duplicates, conns, netns };
}

/** Sequence numbers per (host, epoch) must be 1..n without gaps or reordering within what Kafka holds. */
export function seqGaps(records: Decoded[]): string[] {
  const last = new Map<string, number>();
  const problems: string[] = [];
  for (const d of records) {
    const k = `${d.record.host_id}/${d.record.epoch}`;
    const prev = last.get(k) ?? 0;
    if (d.record.seq > prev + 1) problems.push(`${k}: gap ${prev} → ${d.record.seq}`);
    if (d.record.seq > prev) last.set(k, d.record.seq);
  }
  return problems;
}

/** Makes sure dist/ has a producer build at least as new as the sources it needs. */
export function ensureProducerBuilt(): void {
  const newest = (dir: string): number =>
    existsSync(dir) ? Math.max(0, ...readdirSync(dir).filter((f) => f.endsWith('.ts') || f.endsWith('.avsc')).map((f) => statSync(join(dir, f)).mtimeMs)) : 0;
  const js = join(ROOT, 'dist/producer/cmd-producer.js');
  const src = Math.max(...['producer', 'schemas', 'lib', 'bin', 'native'].map((d) => newest(join(ROOT, d))));
  if (!existsSync(js) || statSync(js).mtimeMs < src) {
    // tsc emits despite type errors elsewhere in the tree; the native addon must already be built.
    spawnSync(join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'ignore' });
  }
  if (!existsSync(js)) throw new Error(`no compiled producer at ${js}: run bash scripts/build.sh`);
}

export interface ProducerProcess {
  child: ChildProcess;
  stderr(): string;
  /** Resolves with the exit code (or signal). */
  exited: Promise<number | string>;
  /** Resolves once the producer logged that it streams live records. */
  ready: Promise<void>;
}

/**
 * `node dist/bin/nettally.js producer …args` as a child process (the kill tests need a real process); `bin`: another
 * build's CLI (a benchmark's baseline).
 */
export function startProducerProcess(args: string[], env: NodeJS.ProcessEnv = {}, bin?: string): ProducerProcess {
  if (!bin) ensureProducerBuilt();
  const child = spawn(process.execPath, [bin ?? join(ROOT, 'dist/bin/nettally.js'), 'producer', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
  });
  let err = '';
  const exited = new Promise<number | string>((res) => child.once('exit', (code, sig) => res(code ?? sig ?? -1)));
  const ready = new Promise<void>((res, rej) => {
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('streaming live records')) res();
    });
    void exited.then((c) => rej(new Error(`producer exited (${c}) before it was ready:\n${err}`)));
  });
  ready.catch(() => undefined);
  return { child, stderr: () => err, exited, ready };
}

/**
 * Sizes (bytes, log overhead included: what Kafka compares with message.max.bytes) of every record batch the broker
 * stored for `topic`, read from its log segment files: ground truth of what the producer sent, whatever the broker
 * enforces.
 */
export function batchSizesOnDisk(dataDir: string, topic: string): number[] {
  const sizes: number[] = [];
  // The bundled broker's layout: <data-dir>/topics/<topic>/<partition>/<base offset>.log
  const topicDir = join(dataDir, 'topics', topic);
  for (const part of readdirSync(topicDir).filter((d) => /^\d+$/.test(d)).sort((a, b) => Number(a) - Number(b))) {
    for (const f of readdirSync(join(topicDir, part)).filter((x) => x.endsWith('.log')).sort()) {
      const buf = readFileSync(join(topicDir, part, f));
      for (let at = 0; at + 12 <= buf.length; ) {
        const size = 12 + buf.readInt32BE(at + 8);
        sizes.push(size);
        at += size;
      }
    }
  }
  return sizes;
}

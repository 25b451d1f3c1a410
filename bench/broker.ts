// `npm run bench:broker`: kafkajs produce/consume throughput of 200-byte messages against the bundled broker
// (a child process) per fsync policy, side by side in one run, plus the broker's peak RSS (VmHWM).
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { formatHelp, parseArgs, type CommandSpec } from '../lib/args';
import { createKafkaClient } from '../lib/kafka';
import { cpuSeconds, peakRss } from './proc';

const spec: CommandSpec = {
  name: 'bench:broker',
  summary: 'Produce/consume throughput of the bundled broker via kafkajs, and its peak RSS.',
  options: [
    { name: 'messages', type: 'int', default: 200_000, min: 1000, help: 'messages per run' },
    { name: 'size', type: 'int', default: 200, min: 1, help: 'message value size in bytes' },
    { name: 'batch', type: 'int', default: 1000, min: 1, help: 'messages per producer.send' },
    { name: 'in-flight', type: 'int', default: 4, min: 1, help: 'concurrent sends' },
    { name: 'partitions', type: 'int', default: 3, min: 1, help: 'topic partitions' },
    { name: 'fsync', type: 'list', default: ['always', 'interval', 'never'], help: 'fsync policies to compare' },
  ],
};

const ROOT = resolve(__dirname, '../..');

async function startBroker(dataDir: string, fsync: string): Promise<{ child: ChildProcess; address: string }> {
  const child = spawn(process.execPath, [join(ROOT, 'dist/bin/nettally.js'), 'broker', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--fsync', fsync], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, LOG_LEVEL: 'warn' },
  });
  const address = await new Promise<string>((res, rej) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /broker listening on ([^\s]+)/.exec(out);
      if (m) res(m[1]);
    });
    child.once('exit', (code) => rej(new Error(`broker exited ${code}`)));
  });
  return { child, address };
}

interface Result {
  fsync: string;
  produceMsgs: number;
  produceMB: number;
  consumeMsgs: number;
  consumeMB: number;
  rssMB: number;
  diskMB: number;
  /** Broker CPU share of the produce and consume phases (1.0 = one core busy the whole time). */
  produceCpu: number;
  consumeCpu: number;
}

async function runOne(fsync: string, o: { messages: number; size: number; batch: number; inFlight: number; partitions: number }): Promise<Result> {
  const dataDir = fs.mkdtempSync(join(tmpdir(), 'nettally-bench-broker-'));
  const { child, address } = await startBroker(dataDir, fsync);
  try {
    const kafka = createKafkaClient({ brokers: [address], clientId: 'bench' });
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: 'bench', numPartitions: o.partitions }] });
    await admin.disconnect();
    const producer = kafka.producer();
    await producer.connect();
    const value = Buffer.alloc(o.size, 'x');
    const sends = Math.ceil(o.messages / o.batch);
    let next = 0;
    let lastReport = Date.now();
    const cpu0 = cpuSeconds(child.pid as number);
    const t0 = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: o.inFlight }, async () => {
        while (next < sends) {
          const i = next++;
          const n = Math.min(o.batch, o.messages - i * o.batch);
          await producer.send({ topic: 'bench', acks: -1, messages: Array.from({ length: n }, (_, j) => ({ key: String((i * o.batch + j) % 64), value })) });
          if (Date.now() - lastReport > 2000) {
            lastReport = Date.now();
            process.stderr.write(`  [${fsync}] produced ${Math.min(next * o.batch, o.messages)}/${o.messages}\n`);
          }
        }
      }),
    );
    const produceSec = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu1 = cpuSeconds(child.pid as number);
    await producer.disconnect();

    const consumer = kafka.consumer({ groupId: 'bench', maxBytes: 10 << 20, maxBytesPerPartition: 4 << 20 });
    await consumer.connect();
    await consumer.subscribe({ topic: 'bench', fromBeginning: true });
    let got = 0;
    const t1 = process.hrtime.bigint();
    await new Promise<void>((res) => {
      void consumer.run({
        eachBatchAutoResolve: true,
        eachBatch: async ({ batch }) => {
          got += batch.messages.length;
          if (got >= o.messages) res();
        },
      });
    });
    const consumeSec = Number(process.hrtime.bigint() - t1) / 1e9;
    const cpu2 = cpuSeconds(child.pid as number);
    await consumer.disconnect();
    const rss = peakRss(child.pid as number);
    let disk = 0;
    const walk = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(d, e.name));
        else disk += fs.statSync(join(d, e.name)).size;
      }
    };
    walk(dataDir);
    const mb = (o.messages * o.size) / 1e6;
    return {
      fsync,
      produceMsgs: o.messages / produceSec,
      produceMB: mb / produceSec,
      consumeMsgs: o.messages / consumeSec,
      consumeMB: mb / consumeSec,
      rssMB: rss / 1e6,
      diskMB: disk / 1e6,
      produceCpu: (cpu1 - cpu0) / produceSec,
      consumeCpu: (cpu2 - cpu1) / consumeSec,
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = parseArgs(spec, process.argv.slice(2));
  if (args === 'help') {
    process.stdout.write(formatHelp(spec));
    return;
  }
  const o = { messages: args.num('messages'), size: args.num('size'), batch: args.num('batch'), inFlight: args.num('in-flight'), partitions: args.num('partitions') };
  process.stdout.write(`bench:broker — ${o.messages} messages of ${o.size} B, sends of ${o.batch}, ${o.inFlight} in flight, ${o.partitions} partitions, acks=-1, kafkajs 2.2.4\n`);
  const results: Result[] = [];
  for (const f of args.list('fsync')) results.push(await runOne(f, o));
  const base = results[0];
  process.stdout.write('fsync      produce msg/s  produce MB/s  consume msg/s  consume MB/s  broker peak RSS  disk    broker CPU (produce/consume)\n');
  for (const r of results) {
    process.stdout.write(
      `${r.fsync.padEnd(10)} ${r.produceMsgs.toFixed(0).padStart(13)}  ${r.produceMB.toFixed(1).padStart(12)}  ${r.consumeMsgs.toFixed(0).padStart(13)}  ${r.consumeMB.toFixed(1).padStart(12)}  ${r.rssMB.toFixed(0).padStart(12)} MB  ${r.diskMB.toFixed(0).padStart(3)} MB  ${r.produceCpu.toFixed(2)}/${r.consumeCpu.toFixed(2)} cores` +
        (r === base ? '' : `   (produce ${(r.produceMsgs / base.produceMsgs).toFixed(2)}x of ${base.fsync})`) +
        '\n',
    );
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:broker failed: ${String(err)}\n`);
  process.exitCode = 1;
});

// Scenario: interoperability with an independent client, Debian's kcat (librdkafka 2.0.2): kcat produces and
// consumes (also as a group member), reads what kafkajs wrote, and kafkajs reads what kcat wrote; and kcat
// sees the broker refuse an oversize message as Apache Kafka does.
import { spawn } from 'child_process';
import { Kafka, logLevel } from 'kafkajs';
import { startTestBroker, type InProcessBroker } from './helpers/broker';

let b: InProcessBroker;
let kafka: Kafka;

beforeAll(async () => {
  b = await startTestBroker();
  kafka = new Kafka({ brokers: [b.address], clientId: 'kcat-test', logLevel: logLevel.NOTHING });
});
afterAll(async () => {
  await b?.stop();
});

/** kcat's exit code and output, whatever the exit code. */
function kcatRun(args: string[], input?: string, timeoutMs = 30_000): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn('kcat', ['-b', b.address, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`kcat ${args.join(' ')} timed out; stderr: ${err}`));
    }, timeoutMs);
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
    p.stdin.end(input ?? '');
  });
}

async function kcat(args: string[], input?: string, timeoutMs = 30_000): Promise<string> {
  const r = await kcatRun(args, input, timeoutMs);
  if (r.code !== 0) throw new Error(`kcat ${args.join(' ')} exited ${r.code}: ${r.err}`);
  return r.out;
}

test('kcat reads what kafkajs wrote (keys, values, offsets, partitions)', async () => {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'from-kafkajs', numPartitions: 2 }] });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  const sent: string[] = [];
  for (let i = 0; i < 5; i++) {
    const messages = Array.from({ length: 20 }, (_, j) => ({ key: `key${j % 4}`, value: `kafkajs-${i}-${j}`, partition: j % 2 }));
    await producer.send({ topic: 'from-kafkajs', acks: -1, messages });
    sent.push(...messages.map((m) => `${m.partition} ${m.key}=${m.value}`));
  }
  await producer.disconnect();
  const out = await kcat(['-C', '-t', 'from-kafkajs', '-o', 'beginning', '-e', '-q', '-f', '%p %o %k=%s\\n']);
  const lines = out.trim().split('\n');
  expect(lines.map((l) => l.replace(/^(\d+) \d+ /, '$1 ')).sort()).toEqual([...sent].sort());
  for (const p of [0, 1]) {
    expect(lines.filter((l) => l.startsWith(`${p} `)).map((l) => Number(l.split(' ')[1]))).toEqual(Array.from({ length: 50 }, (_, i) => i));
  }
});

test('kafkajs reads what kcat wrote, plain and gzip; kcat reads it back too', async () => {
  const plain = Array.from({ length: 30 }, (_, i) => `k${i % 3}:plain-${i}`);
  const gz = Array.from({ length: 30 }, (_, i) => `g${i % 5}:gzip-${i}-${'z'.repeat(i)}`);
  await kcat(['-P', '-t', 'from-kcat', '-K:'], plain.join('\n') + '\n');
  await kcat(['-P', '-t', 'from-kcat', '-K:', '-z', 'gzip'], gz.join('\n') + '\n');
  const expected = [...plain, ...gz].map((l) => l.replace(':', '='));

  const consumer = kafka.consumer({ groupId: 'reads-kcat', maxWaitTimeInMs: 200 });
  await consumer.connect();
  const got: string[] = [];
  try {
    await consumer.subscribe({ topic: 'from-kcat', fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${expected.length}`)), 30_000);
      void consumer.run({
        eachMessage: async ({ message }) => {
          got.push(`${message.key?.toString()}=${message.value?.toString()}`);
          if (got.length === expected.length) {
            clearTimeout(timer);
            resolve();
          }
        },
      });
    });
  } finally {
    await consumer.disconnect();
  }
  expect(got).toEqual(expected);
  const back = await kcat(['-C', '-t', 'from-kcat', '-o', 'beginning', '-e', '-q', '-f', '%k=%s\\n']);
  expect(back.trim().split('\n')).toEqual(expected);
});

test('kcat as a balanced consumer-group member (librdkafka join/sync/commit) reads everything once', async () => {
  const values = Array.from({ length: 40 }, (_, i) => `grp-${i}`);
  await kcat(['-P', '-t', 'kcat-group'], values.join('\n') + '\n');
  const out = await kcat(['-G', 'kcat-g', '-o', 'beginning', '-e', '-q', '-f', '%s\\n', '-X', 'enable.auto.commit=true', '-X', 'auto.commit.interval.ms=100', 'kcat-group']);
  expect(out.trim().split('\n')).toEqual(values);
});

test('kcat producing a 1.2 MB message is refused with "Message size too large" and nothing is stored', async () => {
  // librdkafka's own limit (message.max.bytes 1000000) is raised so that the broker is what refuses.
  const big = 'b'.repeat(1_200_000);
  const res = await kcatRun(['-P', '-t', 'too-big', '-X', 'message.max.bytes=2000000'], big + '\n', 60_000);
  expect(res.code).not.toBe(0);
  expect(res.err).toMatch(/Message size too large/);
  // Nothing stored: earliest and latest offsets are both 0, and a consumer reads nothing.
  const earliest = await kcat(['-Q', '-t', 'too-big:0:-2']);
  const latest = await kcat(['-Q', '-t', 'too-big:0:-1']);
  expect(earliest.trim()).toBe('too-big [0] offset 0');
  expect(latest.trim()).toBe('too-big [0] offset 0');
  expect(await kcat(['-C', '-t', 'too-big', '-o', 'beginning', '-e', '-q'])).toBe('');
  // A message under the limit on the same topic goes through (the broker refused the size, not the topic).
  await kcat(['-P', '-t', 'too-big', '-X', 'message.max.bytes=2000000'], 's'.repeat(900_000) + '\n', 60_000);
  expect((await kcat(['-Q', '-t', 'too-big:0:-1'])).trim()).toBe('too-big [0] offset 1');
}, 120_000);

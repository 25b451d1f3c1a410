// Producer ↔ bundled broker without the kernel: a synthetic record source with known totals drives the real
// spool, batching and Kafka paths (broker outage, full spool, restart with a non-empty spool).
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'fs';
import { Kafka, logLevel } from 'kafkajs';
import pino from 'pino';
import { tmpdir } from 'os';
import { join } from 'path';
import { createLogger, silentLogger, type Logger } from '../lib/log';
import { ChildStatus, statusLine } from '../bin/up-status';
import { producerReport } from '../producer/cmd-producer';
import { parseArgs } from '../lib/args';
import { command as producerCommand } from '../producer/cmd-producer';
import { decode } from '../schemas/index';
import { DEAD_LETTER_FILE, type DeadLetterLine } from '../producer/dead-letter';
import { KAFKA_DEFAULT_MAX_MESSAGE_BYTES } from '../producer/kafka-batch';
import { classifyKafkaError, hintFor } from '../producer/kafka-errors';
import { renderMetrics } from '../producer/metrics';
import { createProducer, type ProducerConfig, type NettallyProducer } from '../producer/producer';
import { syntheticCapture } from '../producer/synthetic';
import { startBrokerProcess, startTestBroker, type InProcessBroker } from './helpers/broker';
import { batchSizesOnDisk, readTopic, seqGaps, totals } from './helpers/producer';

const HOST = { host_id: 'feedfacefeedfacefeedfacefeedface', hostname: 'synthetic', boot_id: '00000000-0000-4000-8000-000000000001' };
// NT_DEBUG=1 shows the producer's log.
const LOG = process.env.NT_DEBUG ? createLogger({ level: 'debug' }) : silentLogger;
const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function baseConfig(address: string, stateDir: string, over: Partial<ProducerConfig> = {}): ProducerConfig {
  return {
    stateDir, kafka: { clientId: 'nettally-test', brokers: [address] }, topic: 'nettally.records', spoolMaxBytes: 64 * 1024 * 1024,
    fsync: 'always', batchMaxRecords: 500, batchMaxBytes: 512 * 1024, batchMaxMs: 50, flushIntervalMs: 1000, flushThresholdBytes: 1 << 20,
    ifaceIntervalMs: 0, compression: 'none', idempotent: false, shutdownTimeoutMs: 10_000, statusIntervalMs: 0, host: HOST, ...over,
  };
}

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'nettally-prod-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

async function broker(opts: Partial<Parameters<typeof startTestBroker>[0]> = {}): Promise<InProcessBroker> {
  const b = await startTestBroker({ ...opts, logger: LOG });
  cleanups.push(() => b.stop());
  return b;
}

async function run(p: NettallyProducer): Promise<NettallyProducer> {
  cleanups.push(() => p.stop());
  await p.start();
  return p;
}

describe('producer → broker (synthetic source)', () => {
  it('delivers every record with contiguous seq; totals equal the source', async () => {
    const b = await broker();
    const src = syntheticCapture({ connsPerSec: 3000, totalConns: 3000, samplesPerConn: 3, bytesPerSample: 1234 });
    const p = await run(createProducer({ config: baseConfig(b.address, tempDir(), { openCapture: async () => src, compression: 'gzip' }), logger: LOG }));
    await src.done;
    expect(await p.drained(30_000)).toBe(true);
    const recs = await readTopic(b.address, 'nettally.records');
    const t = totals(recs);
    expect(t.unique).toBe(src.truth.records);
    expect(seqGaps(recs)).toEqual([]);
    const sum = [...t.conns.values()].reduce((a, c) => ({ tx: a.tx + c.tx, rx: a.rx + c.rx }), { tx: 0, rx: 0 });
    expect(sum).toEqual({ tx: src.truth.tx_bytes, rx: src.truth.rx_bytes });
    expect([...t.conns.values()].every((c) => c.closed)).toBe(true);
    const s = p.status();
    expect(s.records_out).toBe(src.truth.records);
    expect(s.spool_records).toBe(0);
    await p.stop();
  });

  it('works with the idempotent Kafka producer', async () => {
    const b = await broker();
    const src = syntheticCapture({ connsPerSec: 2000, totalConns: 1000 });
    const p = await run(createProducer({ config: baseConfig(b.address, tempDir(), { openCapture: async () => src, idempotent: true }), logger: LOG }));
    await src.done;
    expect(await p.drained(30_000)).toBe(true);
    const recs = await readTopic(b.address, 'nettally.records');
    expect(totals(recs)).toMatchObject({ unique: src.truth.records, duplicates: 0 });
    await p.stop();
  });

  it('spools through a broker outage and a full spool, then drains exactly', async () => {
    let b = await startBrokerProcess();
    cleanups.push(() => b.stop());
    const src = syntheticCapture({ connsPerSec: 2000, totalConns: 6000, samplesPerConn: 2, bytesPerSample: 777 });
    const p = await run(createProducer({ config: baseConfig(b.address, tempDir(), { openCapture: async () => src, spoolMaxBytes: 256 * 1024, batchMaxBytes: 64 * 1024 }), logger: LOG }));
    await new Promise((r) => setTimeout(r, 300));
    await b.kill(); // a broker crash: connections drop, nothing acknowledged is lost
    // The spool fills while Kafka is down: the source is no longer drained.
    while (!p.status().spool_full || p.status().kafka_ok) await new Promise((r) => setTimeout(r, 50));
    const during = p.status();
    expect(during.kafka_ok).toBe(false);
    expect(during.spool_full).toBe(true);
    expect(during.spool_bytes).toBeLessThanOrEqual(256 * 1024);
    b = await b.restart();
    cleanups.push(() => b.stop());
    await src.done;
    expect(await p.drained(60_000)).toBe(true);
    const recs = await readTopic(b.address, 'nettally.records');
    const t = totals(recs);
    expect(t.unique).toBe(src.truth.records);
    const sum = [...t.conns.values()].reduce((a, c) => a + c.tx, 0);
    expect(sum).toBe(src.truth.tx_bytes);
    expect(p.status().spool_bytes).toBe(0);
    await p.stop();
  });

  it('keeps unsent records across a restart and sends them first, under the old epoch', async () => {
    const dataDir = tempDir();
    const b = await broker({ dataDir });
    const stateDir = tempDir();
    // First run: Kafka unreachable (wrong port), short shutdown: everything stays in the spool.
    const src1 = syntheticCapture({ connsPerSec: 5000, totalConns: 500 });
    const p1 = createProducer({ config: baseConfig('127.0.0.1:1', stateDir, { openCapture: async () => src1, shutdownTimeoutMs: 200 }), logger: LOG });
    await p1.start();
    await src1.done;
    await new Promise((r) => setTimeout(r, 300));
    const epoch1 = p1.status().epoch;
    await p1.stop();
    expect(p1.status().spool_records).toBe(src1.truth.records);
    // Second run: the old records go first, then the new epoch's.
    const src2 = syntheticCapture({ connsPerSec: 5000, totalConns: 100 });
    const p2 = await run(createProducer({ config: baseConfig(b.address, stateDir, { openCapture: async () => src2 }), logger: LOG }));
    await src2.done;
    expect(await p2.drained(30_000)).toBe(true);
    expect(p2.status().epoch).toBeGreaterThan(epoch1);
    const recs = await readTopic(b.address, 'nettally.records');
    expect(recs.length).toBe(src1.truth.records + src2.truth.records);
    expect(recs.slice(0, src1.truth.records).every((d) => d.record.epoch === epoch1)).toBe(true);
    expect(recs.slice(src1.truth.records).every((d) => d.record.epoch === p2.status().epoch)).toBe(true);
    expect(seqGaps(recs)).toEqual([]);
    await p2.stop();
  });

  it('a backlog of 24k records made while the broker is down drains exactly, in order, in batches Kafka accepts (default batching)', async () => {
    const dataDir = tempDir();
    let b = await broker({ dataDir });
    const port = b.port;
    await b.stop(); // down before the first record
    const src = syntheticCapture({ connsPerSec: 4000, totalConns: 6000, samplesPerConn: 2, bytesPerSample: 1111 });
    // The daemon's own defaults (batch records/bytes, --max-message-bytes), as `nettally producer` parses them.
    const defaults = parseArgs(producerCommand.spec, [], {});
    if (defaults === 'help') throw new Error('unexpected help');
    const batching = { batchMaxRecords: defaults.num('batch-max-records'), batchMaxBytes: defaults.num('batch-max-bytes'), maxMessageBytes: defaults.values['max-message-bytes'] as number | undefined };
    const p = await run(createProducer({ config: baseConfig(`127.0.0.1:${port}`, tempDir(), { openCapture: async () => src, ...batching }), logger: LOG }));
    await src.done;
    while (p.status().spool_records < src.truth.records) await new Promise((r) => setTimeout(r, 50));
    expect(src.truth.records).toBeGreaterThanOrEqual(24_000);
    expect(p.status()).toMatchObject({ records_out: 0, kafka_ok: false, kafka_state: 'retrying' });
    b = await broker({ dataDir, port });
    expect(await p.drained(120_000)).toBe(true);
    const recs = await readTopic(b.address, 'nettally.records');
    // Every record once, in seq order (one host, one partition), totals exact.
    expect(recs.length).toBe(src.truth.records);
    expect(totals(recs)).toMatchObject({ unique: src.truth.records, duplicates: 0 });
    expect(recs.every((d, i) => d.record.seq === i + 1)).toBe(true);
    expect([...totals(recs).conns.values()].reduce((a, c) => a + c.tx, 0)).toBe(src.truth.tx_bytes);
    // What the broker stored: no record batch over Kafka's default limit, and the batches use the room.
    const sizes = batchSizesOnDisk(dataDir, 'nettally.records');
    expect(Math.max(...sizes)).toBeLessThanOrEqual(KAFKA_DEFAULT_MAX_MESSAGE_BYTES);
    expect(Math.max(...sizes)).toBeGreaterThan(KAFKA_DEFAULT_MAX_MESSAGE_BYTES - 1000);
    expect(p.status()).toMatchObject({ batches_split: 0, records_dead_lettered: 0, kafka_state: 'ok', kafka_error_code: null });
    await p.stop();
  });

  it('an unknown topic with auto-create off is an error state (status, metrics, a log line per attempt), keeps everything, and recovers', async () => {
    const b = await broker({ autoCreateTopics: false });
    const lines: Array<{ level: number; msg: string; kafka_error_code?: string }> = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l)) }) as unknown as Logger;
    const src = syntheticCapture({ connsPerSec: 3000, totalConns: 1500 });
    const p = await run(createProducer({ config: baseConfig(b.address, tempDir(), { openCapture: async () => src }), logger }));
    const refusals = (): number => lines.filter((l) => l.level === 50 && /Kafka refuses the records \(UNKNOWN_TOPIC_OR_PARTITION\)/.test(l.msg)).length;
    const until = Date.now() + 60_000;
    while (refusals() < 3) {
      if (Date.now() > until) throw new Error(`no repeated error lines: ${JSON.stringify(lines.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await src.done;
    while (p.status().spool_records < src.truth.records) await new Promise((r) => setTimeout(r, 50));
    const s = p.status();
    expect(s).toMatchObject({ kafka_ok: false, kafka_state: 'error', kafka_error_code: 'UNKNOWN_TOPIC_OR_PARTITION', records_out: 0, spool_records: src.truth.records });
    expect(Date.parse(s.kafka_error_since as string)).toBeLessThanOrEqual(Date.now());
    expect(lines.find((l) => l.level === 50)?.msg).toMatch(/create it .*auto\.create\.topics\.enable/);
    // `nettally up` shows it on its status line (built from the report the producer sends it over IPC).
    const seen = new ChildStatus('producer');
    seen.update(JSON.parse(JSON.stringify(producerReport(s))));
    expect(statusLine(1000, seen, new ChildStatus('consumer'), 'q')).toContain(', Kafka ERROR UNKNOWN_TOPIC_OR_PARTITION |');
    const metrics = renderMetrics(s);
    expect(metrics).toMatch(/^nettally_producer_kafka_state\{state="error"\} 1$/m);
    expect(metrics).toMatch(/^nettally_producer_kafka_state\{state="ok"\} 0$/m);
    expect(metrics).toMatch(/^nettally_producer_kafka_error\{code="UNKNOWN_TOPIC_OR_PARTITION"\} \d{10}$/m);
    // The operator creates the topic: the spool drains, nothing was lost or doubled.
    const admin = new Kafka({ clientId: 'nettally-test-admin', brokers: [b.address], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: 'nettally.records', numPartitions: 1 }] });
    await admin.disconnect();
    expect(await p.drained(60_000)).toBe(true);
    expect(p.status()).toMatchObject({ kafka_state: 'ok', kafka_error_code: null, kafka_error_since: null });
    const recs = await readTopic(b.address, 'nettally.records');
    expect(totals(recs)).toMatchObject({ unique: src.truth.records, duplicates: 0 });
    expect(seqGaps(recs)).toEqual([]);
    await p.stop();
  });

  it('a host clock beyond the broker\'s timestamp bound (INVALID_TIMESTAMP) needs an operator, and the hint says what to fix', async () => {
    const b = await broker();
    const kafka = new Kafka({ clientId: 'nettally-test-clock', brokers: [b.address], logLevel: logLevel.NOTHING });
    const producer = kafka.producer({ retry: { retries: 0 } });
    await producer.connect();
    try {
      // what kafkajs sends from a host whose clock is two days ahead (Kafka 4.0's default bound: 1 h)
      const ahead = String(Date.now() + 2 * 86_400_000);
      const err = await producer.send({ topic: 'nettally.records', acks: -1, messages: [{ key: 'h', value: 'x', timestamp: ahead }] }).then(() => undefined, (e: unknown) => e);
      expect(err).toBeDefined();
      const f = classifyKafkaError(err);
      expect(f).toMatchObject({ code: 'INVALID_TIMESTAMP', kind: 'needs-operator' });
      expect(hintFor(f.code, 'nettally.records')).toMatch(/clock .*NTP.*LogAppendTime.*spool/);
    } finally {
      await producer.disconnect();
    }
  });

  it('a record too large for any batch is dead-lettered with its reason, at ingest and from a spool written under a larger limit', async () => {
    const b = await broker();
    const stateDir = tempDir();
    // First run: Kafka unreachable, default limit: the records are spooled.
    const src1 = syntheticCapture({ connsPerSec: 5000, totalConns: 50 });
    const p1 = createProducer({ config: baseConfig('127.0.0.1:1', stateDir, { openCapture: async () => src1, shutdownTimeoutMs: 200 }), logger: LOG });
    await p1.start();
    await src1.done;
    while (p1.status().spool_records < src1.truth.records) await new Promise((r) => setTimeout(r, 50));
    await p1.stop();
    // Second run: a limit below one record (~250 bytes): the spooled ones and the new ones are all set aside, nothing blocks.
    const src2 = syntheticCapture({ connsPerSec: 5000, totalConns: 25 });
    const p2 = await run(createProducer({ config: baseConfig(b.address, stateDir, { openCapture: async () => src2, maxMessageBytes: 120 }), logger: LOG }));
    await src2.done;
    expect(await p2.drained(30_000)).toBe(true);
    const all = src1.truth.records + src2.truth.records;
    expect(p2.status()).toMatchObject({ records_dead_lettered: all, records_out: 0, spool_records: 0 });
    const path = join(stateDir, DEAD_LETTER_FILE);
    // Connection metadata: only the service user may read the state dir's files.
    for (const f of [path, join(stateDir, 'epoch')]) expect([f, statSync(f).mode & 0o777]).toEqual([f, 0o600]);
    const dead = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as DeadLetterLine);
    expect(dead).toHaveLength(all);
    expect(dead.every((d) => /does not fit|over the 120-byte limit/.test(d.reason) && d.limit_bytes === 120)).toBe(true);
    // Nothing lost: every record decodes from the file, each (epoch, seq) once.
    const ids = new Set(dead.map((d) => decode(Buffer.from(d.value_b64, 'base64')).record).map((r) => `${r.epoch}/${r.seq}`));
    expect(ids.size).toBe(all);
    expect(existsSync(join(stateDir, 'spool'))).toBe(true);
    await p2.stop();
  });

  it.each([['plain', false], ['idempotent', true]])('MESSAGE_TOO_LARGE from a broker with a smaller limit splits the batch (%s producer): every record once, in order, never a batch retried whole', async (_name, idempotent) => {
    const dataDir = tempDir();
    const limit = 48 * 1024; // the broker's message.max.bytes; the producer still assumes Kafka's default
    const b = await broker({ dataDir, maxMessageBytes: limit });
    const lines: Array<{ level: number; msg: string; batch_bytes?: number; max_batch_bytes?: number }> = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l)) }) as unknown as Logger;
    const stateDir = tempDir();
    // A backlog first (Kafka unreachable), so the first batches are as large as the producer makes them.
    const src = syntheticCapture({ connsPerSec: 5000, totalConns: 2500, samplesPerConn: 2 });
    const p1 = createProducer({ config: baseConfig('127.0.0.1:1', stateDir, { openCapture: async () => src, shutdownTimeoutMs: 200 }), logger: LOG });
    await p1.start();
    await src.done;
    while (p1.status().spool_records < src.truth.records) await new Promise((r) => setTimeout(r, 50));
    await p1.stop();
    const p = await run(
      createProducer({
        config: baseConfig(b.address, stateDir, { openCapture: async () => syntheticCapture({ connsPerSec: 1, totalConns: 0 }), batchMaxRecords: 5000, batchMaxBytes: 1 << 20, idempotent }),
        logger,
      }),
    );
    expect(await p.drained(60_000)).toBe(true);
    const s = p.status();
    expect(s.batches_split).toBeGreaterThanOrEqual(1);
    expect(s.max_batch_bytes).toBeLessThanOrEqual(limit);
    expect(s).toMatchObject({ records_dead_lettered: 0, kafka_state: 'ok', records_out: src.truth.records });
    // Each refusal halved the batch: no refused size was tried twice.
    const refused = lines.filter((l) => /refused a batch of \d+ bytes as too large/.test(l.msg)).map((l) => l.batch_bytes as number);
    expect(refused.length).toBe(s.batches_split);
    expect(new Set(refused).size).toBe(refused.length);
    for (let i = 1; i < refused.length; i++) expect(refused[i]).toBeLessThanOrEqual(refused[i - 1] / 2 + 1000);
    const recs = await readTopic(b.address, 'nettally.records');
    expect(recs.length).toBe(src.truth.records);
    expect(totals(recs)).toMatchObject({ unique: src.truth.records, duplicates: 0 });
    expect(recs.every((d, i) => d.record.seq === i + 1)).toBe(true);
    expect(Math.max(...batchSizesOnDisk(dataDir, 'nettally.records'))).toBeLessThanOrEqual(limit);
    await p.stop();
  });
});

// Producer ↔ bundled broker without the kernel: a synthetic record source with known totals drives the real
// spool, batching and Kafka paths (broker outage, full spool, restart with a non-empty spool).
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { createLogger, silentLogger } from '../lib/log';
import { createProducer, type ProducerConfig, type NettallyProducer } from '../producer/producer';
import { syntheticCapture } from '../producer/synthetic';
import { startBrokerProcess, startTestBroker, type InProcessBroker } from './helpers/broker';
import { readTopic, seqGaps, totals } from './helpers/producer';

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

async function broker(opts: { dataDir?: string; port?: number } = {}): Promise<InProcessBroker> {
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
});

// Scenario: consumer state at scale and retention gaps, against the bundled broker and a real influxd.
// - A partition with 100k live connections: every state-topic record batch stays under Apache Kafka's default
//   message.max.bytes (1048588), the state is saved and restored across SIGKILL, and the totals are exact.
// - Retention deletes records the group has not read: the gap is reported with its offsets, the consumer moves on
//   (no OFFSET_OUT_OF_RANGE loop), records after the gap are counted exactly, affected windows carry gap=true.
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import { join } from 'path';
import { Writable } from 'stream';
import { gzipSync } from 'zlib';
import type { ProducerRecord } from 'kafkajs';
import pino from 'pino';
import { parseArgs } from '../lib/args';
import { silentLogger } from '../lib/log';
import { command as consumerCommand } from '../consumer/cmd-consumer';
import { PartitionAggregator } from '../consumer/aggregator';
import { InfluxClient } from '../consumer/influx';
import { toAggInput } from '../consumer/records';
import { StateStore, parseCommitMetadata, type StateHint } from '../consumer/state-store';
import { runUsage } from '../consumer/usage';
import { synthesize } from '../consumer/synthetic';
import { decode } from '../schemas';
import { consumerScenario, createTopic, messagesOf, produce, waitCaughtUp } from './helpers/consumer';

/** Apache Kafka's default message.max.bytes: the largest record batch a default broker accepts. */
const KAFKA_MAX_BATCH = 1048588;
const START = Date.UTC(2026, 0, 7, 8, 0, 0);
const FROM = START - 3_600_000;
const TO = START + 3 * 3_600_000;

const env = consumerScenario({ retentionCheckMs: 3_600_000 });

function names(name: string): { topic: string; group: string; stateTopic: string; db: string; args: string[] } {
  const topic = `records-${name}-${process.pid}`;
  const group = `g-${name}-${process.pid}`;
  const db = `nt_${name}_${process.pid}`;
  const args = [
    '--brokers', env.broker.address, '--topic', topic, '--group', group, '--state-topic', `${topic}.state`, '--dlq-topic', `${topic}.dlq`,
    '--influx-url', env.influx.url, '--influx-db', db, '--session-timeout', '6s',
  ];
  return { topic, group, stateTopic: `${topic}.state`, db, args };
}

/** Sizes of the record batches the broker stored for a topic (its segment files: baseOffset int64, length int32, ...). */
function storedBatchSizes(topic: string): number[] {
  const out: number[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.log')) {
        const buf = fs.readFileSync(p);
        for (let at = 0; at + 12 <= buf.length; ) {
          const size = 12 + buf.readInt32BE(at + 8);
          out.push(size);
          at += size;
        }
      }
    }
  };
  walk(join(env.broker.dataDir, 'topics', topic));
  return out;
}

async function runCheck(argv: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const stdout = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out += chunk.toString();
      cb();
    },
  });
  const args = parseArgs(consumerCommand.spec, [...argv, '--check'], {});
  if (args === 'help') throw new Error('help');
  const code = await consumerCommand.run(args, { logger: silentLogger, signal: new AbortController().signal, stdout });
  return { code, out };
}

test('a partition with 100k live connections: snapshots fit 1 MiB batches, restored after SIGKILL, exact totals', async () => {
  const n = names('big');
  await createTopic(env.admin, n.topic, 1);
  // 100 hosts × 1000 connections, all inside 4 minutes of event time: none is forgotten before the end.
  const data = synthesize({ hosts: 100, connsPerHost: 1000, startMs: START, minutes: 4, seed: 1010, sampleEverySec: 120 });
  const msgs = messagesOf(data, { dupEvery: 200, seed: 3 });
  const cut = Math.floor(msgs.length * 0.9);
  await produce(env.kafka, n.topic, msgs.slice(0, cut), 2000);

  let c = env.child([...n.args, '--flush-interval', '2s']);
    await waitCaughtUp(env.admin, n.group, n.topic, 600_000, () => c.stderr().slice(-3000));
  // the snapshot of ~90k connections takes several chunks, each its own batch under the limit
  const sizes = storedBatchSizes(n.stateTopic);
  expect(sizes.reduce((a, b) => a + b, 0)).toBeGreaterThan(KAFKA_MAX_BATCH);
  expect(Math.max(...sizes)).toBeLessThanOrEqual(KAFKA_MAX_BATCH);
  await c.kill();

  await produce(env.kafka, n.topic, msgs.slice(cut), 2000);
  c = env.child([...n.args, '--flush-interval', '2s']);
    await waitCaughtUp(env.admin, n.group, n.topic, 600_000, () => c.stderr().slice(-3000));
  expect(c.stderr()).toMatch(/"snapshots":1.*"msg":"partition state loaded"/);
  expect(await c.stop()).toBe(0);
  const after = storedBatchSizes(n.stateTopic);
  expect(Math.max(...after)).toBeLessThanOrEqual(KAFKA_MAX_BATCH);
  await env.expectExact(n.db, data, FROM, TO);
}, 1_200_000);

test('retention deletes unread records: the gap is reported once, the consumer moves on, the rest is exact', async () => {
  const n = names('gap');
  const retentionMs = 60_000;
  // Small segments so retention can delete part of the log (each produce below stays under the segment size).
  await env.admin.createTopics({
    topics: [{ topic: n.topic, numPartitions: 1, configEntries: [{ name: 'retention.ms', value: String(retentionMs) }, { name: 'segment.bytes', value: '16384' }] }],
    waitForLeaders: true,
  });
  // A is read before the consumer stops; B is deleted by retention unread; C arrives after. Different hosts and
  // event times, so the truth of A + C is exactly what must be stored.
  const a = synthesize({ hosts: 2, connsPerHost: 15, startMs: START, minutes: 6, seed: 2101 });
  const b = synthesize({ hosts: 2, connsPerHost: 15, startMs: START + 10 * 60_000, minutes: 6, seed: 2102 });
  const cData = synthesize({ hosts: 2, connsPerHost: 15, startMs: START + 20 * 60_000, minutes: 6, seed: 2103 });
  const ma = messagesOf(a, { seed: 1 });
  const mb = messagesOf(b, { seed: 2 });
  const mc = messagesOf(cData, { seed: 3 });

  let c = env.inProcess([...n.args, '--flush-interval', '300ms']);
  await c.start();
  await produce(env.kafka, n.topic, ma, 50);
  await waitCaughtUp(env.admin, n.group, n.topic);
  await c.stop();

  await produce(env.kafka, n.topic, mb, 50);
  // Retention as if the consumer had been down for longer than retention.ms: every segment goes (the active one is
  // rolled first), so the log starts at the end of B.
  const endA = BigInt(ma.length);
  const endB = endA + BigInt(mb.length);
  expect(env.broker.broker.applyRetention(Date.now() + 2 * retentionMs)).toBeGreaterThan(0);
  const offs = await env.admin.fetchTopicOffsets(n.topic);
  expect(offs[0]).toMatchObject({ low: String(endB), high: String(endB) });
  await produce(env.kafka, n.topic, mc, 50);

  // `nettally consumer --check` sees the pending gap
  const check = await runCheck(n.args);
  expect(check.code).toBe(1);
  expect(check.out).toContain(`partition 0: committed offset ${endA} is below the earliest available offset ${endB}`);

  c = env.inProcess([...n.args, '--flush-interval', '300ms']);
  await c.start();
  await waitCaughtUp(env.admin, n.group, n.topic);
  const s = c.stats();
  expect({ gaps: s.retention_gaps, lost: s.retention_gap_records }).toEqual({ gaps: 1, lost: Number(endB - endA) });
  expect(s.records).toBe(mc.length);
  await c.stop();
  expect((await runCheck(n.args)).code).toBe(0);

  // exact for A and C (B's hosts never appear)
  await env.expectExact(n.db, { traffic: [...a.traffic, ...cData.traffic], iface: [...a.iface, ...cData.iface] }, FROM, TO);
  // Marked: windows from the oldest one open at the gap (A's watermark) to C's first record + allowed lateness.
  const lateness = 120_000;
  const maxA = Math.max(...ma.map((m) => toAggInput(decode(m.value)).time_ms));
  const fromMs = Math.floor((maxA - lateness) / 60_000) * 60_000;
  const toMs = Math.max(maxA, toAggInput(decode(mc[0].value)).time_ms) + lateness;
  const [res] = await new InfluxClient({ url: env.influx.url, api: 'v1', db: n.db, batchSize: 5000, timeoutMs: 30_000 }).query('SELECT tx_bytes, gap FROM nettally_traffic_1m');
  const points = (res.series?.[0]?.values ?? []).map((v) => ({ t: typeof v[0] === 'number' ? v[0] : Date.parse(String(v[0])), gap: v[2] === true }));
  expect(points.length).toBeGreaterThan(0);
  const wrong = points.filter((pt) => pt.gap !== (pt.t + 60_000 > fromMs && pt.t <= toMs));
  expect(wrong).toEqual([]);
  // and `nettally usage` / the billing export show it per row
  const rows = await runUsage(new InfluxClient({ url: env.influx.url, api: 'v1', db: n.db, batchSize: 5000, timeoutMs: 30_000 }), { measurement: 'traffic', fromMs: FROM, toMs: TO, windowMs: 60_000, groupBy: [] });
  expect(rows.filter((r) => r.gap).map((r) => r.time_ms)).toEqual(rows.map((r) => r.time_ms).filter((t) => t + 60_000 > fromMs && t <= toMs));
  expect(rows.some((r) => !r.gap)).toBe(true);
  expect(points.some((pt) => pt.gap)).toBe(true);
  expect(points.some((pt) => !pt.gap && pt.t > toMs)).toBe(true);
  expect(points.some((pt) => !pt.gap && pt.t < fromMs)).toBe(true);
}, 600_000);

test('state store: a save cut off between chunks leaves the previous snapshot; slots keep compaction keys apart', async () => {
  const stateTopic = `state-unit-${process.pid}`;
  const producer = env.kafka.producer({ allowAutoTopicCreation: false, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    // Fault injection on the real producer: the broker stores what was sent before the "crash", nothing after.
    let failAfter = Infinity;
    let sends = 0;
    const crashing = Object.create(producer) as typeof producer;
    crashing.send = async (rec) => {
      if (sends++ >= failAfter) throw new Error('crashed between chunks');
      return producer.send(rec);
    };
    const store = new StateStore({ kafka: env.kafka, admin: env.admin, producer: crashing, logger: silentLogger, group: 'g-unit', topic: 'records-unit', stateTopic, chunkBytes: 1024 });
    await store.init(1);
    // incompressible state: several 1 KiB chunks per snapshot
    const state = (tag: string): Record<string, unknown> => ({ tag, blob: randomBytes(3000).toString('base64') });
    const keysOf = async (): Promise<{ key: string; id: string }[]> => {
      const out: { key: string; id: string }[] = [];
      const reader = env.kafka.consumer({ groupId: `unit-reader-${process.pid}-${Math.random()}`, maxWaitTimeInMs: 100 });
      await reader.connect();
      await reader.subscribe({ topics: [stateTopic], fromBeginning: true });
      const end = Number((await env.admin.fetchTopicOffsets(stateTopic))[0].high);
      await new Promise<void>((resolve) => {
        void reader.run({
          eachMessage: async ({ message }) => {
            out.push({ key: String(message.key), id: String(message.headers?.['nettally-snapshot']) });
            if (Number(message.offset) >= end - 1) resolve();
          },
        });
      });
      await reader.disconnect();
      return out;
    };

    const meta1 = await store.save(0, { offset: '100', state: state('one') });
    const hint = new Map([[0, parseCommitMetadata(meta1)]]);
    failAfter = sends + 2; // the next save stores 2 of its chunks, then "crashes"
    await expect(store.save(0, { offset: '200', state: state('two') })).rejects.toThrow('crashed between chunks');
    const loaded = await store.load([0], hint);
    expect(loaded.get(0)).toMatchObject({ offset: '100', state: { tag: 'one' } });

    // A snapshot completed after the crash but named by no commit (the member died before committing, or anyone who
    // can write to the state topic planted it) is not taken over the committed one; without a commit, the newest is.
    failAfter = Infinity;
    await store.save(0, { offset: '300', state: state('three') });
    expect((await store.load([0], hint)).get(0)).toMatchObject({ offset: '100', state: { tag: 'one' } });
    expect((await store.load([0], new Map())).get(0)).toMatchObject({ offset: '300', state: { tag: 'three' } });
    const keys = await keysOf();
    const slotOf = (first: number): Set<string> => new Set(keys.filter((k) => k.id === keys[first].id).map((k) => k.key.replace(/\d+$/, '')));
    const firstOfEach = [...new Set(keys.map((k) => k.id))].map((id) => keys.findIndex((k) => k.id === id));
    expect(firstOfEach).toHaveLength(3);
    const [s1, s2, s3] = firstOfEach.map(slotOf);
    expect([...s1]).toEqual(['g-unit/records-unit/0#a']);
    // the interrupted save and the one after it both wrote slot b: a compacted topic keeps slot a = snapshot one intact
    expect([...s2]).toEqual(['g-unit/records-unit/0#b']);
    expect([...s3]).toEqual(['g-unit/records-unit/0#b']);
    // next complete snapshot flips back to a
    await store.save(0, { offset: '400', state: state('four') });
    const after = await keysOf();
    expect(after[after.length - 1].key).toMatch(/#a\d+$/);
    expect(Math.max(...storedBatchSizes(stateTopic))).toBeLessThan(2048);
    // a forger's store (same group, topic and key, as any client of the broker can write) plants a newer snapshot
    const forger = new StateStore({ kafka: env.kafka, admin: env.admin, producer, logger: silentLogger, group: 'g-unit', topic: 'records-unit', stateTopic, chunkBytes: 1024 });
    await forger.init(1);
    await forger.save(0, { offset: '999999', state: state('planted') });
    expect((await store.load([0], hint)).get(0)).toMatchObject({ offset: '100', state: { tag: 'one' } });

    // snapshots written before slots existed (keys `<key>#<chunk>`, one request) still load, with an aggregator v1 state
    const agg = new PartitionAggregator({ partition: 1 });
    const gz = gzipSync(JSON.stringify({ offset: '42', state: agg.snapshot() }));
    await producer.send({
      topic: stateTopic,
      acks: -1,
      messages: [{ key: 'g-unit/records-unit/1#0', value: gz, partition: 0, headers: { 'nettally-snapshot': 'old', 'nettally-chunk': '0/1', 'nettally-offset': '42' } }],
    });
    const old = (await store.load([1], new Map())).get(1);
    expect(old?.offset).toBe('42');
    expect(() => new PartitionAggregator({ partition: 1 }).restore(old!.state)).not.toThrow();
  } finally {
    await producer.disconnect();
  }
}, 300_000);

test('state store: a full snapshot saved in sliced, streamed gzip pieces loads as exactly the JSON of snapshot(), and it restores', async () => {
  const data = synthesize({ hosts: 3, connsPerHost: 200, startMs: START, minutes: 5, seed: 3030 });
  const agg = new PartitionAggregator({ partition: 0 });
  for (const m of messagesOf(data, { dupEvery: 20, seed: 9 })) agg.add(toAggInput(decode(m.value)));
  const expected = JSON.stringify({ offset: '7', gaps: [], state: agg.snapshot() });
  const stateTopic = `state-roundtrip-${process.pid}`;
  const producer = env.kafka.producer({ allowAutoTopicCreation: false, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    // small chunks: the snapshot spans several produce requests
    const store = new StateStore({ kafka: env.kafka, admin: env.admin, producer, logger: silentLogger, group: 'g-rt', topic: 'records-rt', stateTopic, chunkBytes: 16 * 1024 });
    await store.init(1);
    const meta = await store.save(0, { offset: '7', state: agg.snapshotLazy(), gaps: [] });
    const back = (await store.load([0], new Map([[0, parseCommitMetadata(meta)]]))).get(0);
    expect(JSON.stringify(back)).toBe(expected);
    const restored = new PartitionAggregator({ partition: 0 });
    restored.restore(back!.state);
    expect(JSON.stringify(restored.snapshot())).toBe(JSON.stringify(agg.snapshot()));
  } finally {
    await producer.disconnect();
  }
});

test('state store: a hand-made state topic with a lower max.message.bytes gets smaller chunks, not endless retries', async () => {
  const stateTopic = `state-small-${process.pid}`;
  await env.admin.createTopics({ topics: [{ topic: stateTopic, numPartitions: 1, configEntries: [{ name: 'max.message.bytes', value: '100000' }] }], waitForLeaders: true });
  const producer = env.kafka.producer({ allowAutoTopicCreation: false, maxInFlightRequests: 1, retry: { retries: 0 } });
  await producer.connect();
  try {
    const store = new StateStore({ kafka: env.kafka, admin: env.admin, producer, logger: silentLogger, group: 'g-small', topic: 'records-small', stateTopic });
    await store.init(1);
    const state = { blob: randomBytes(300_000).toString('base64') };
    // what the consumer's retry loop does: each refusal halves the chunk size (512 → 256 → 128 → 64 KiB)
    const errors: string[] = [];
    let meta: string | undefined;
    for (let attempt = 0; attempt < 6 && meta === undefined; attempt++) {
      meta = await store.save(0, { offset: '9', state }).catch((e: unknown) => {
        errors.push((e as Error).message);
        return undefined;
      });
    }
    expect(meta).toBeDefined();
    expect(errors).toHaveLength(3);
    expect(errors[0]).toContain('MESSAGE_TOO_LARGE');
    expect(Math.max(...storedBatchSizes(stateTopic))).toBeLessThanOrEqual(100_000);
    const loaded = await store.load([0], new Map([[0, parseCommitMetadata(meta)]]));
    expect(loaded.get(0)).toEqual({ offset: '9', state });
  } finally {
    await producer.disconnect();
  }
});

test('state store: delta chains — the committed delta restores; a crash before its commit, planted, duplicated and altered links change nothing; a missing link is refused', async () => {
  const producer = env.kafka.producer({ allowAutoTopicCreation: false, maxInFlightRequests: 1 });
  await producer.connect();
  const logLines: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (l: string) => logLines.push(l) });
  // canonical JSON of a state (a delta-rebuilt collection may keep a changed row in its old place)
  const canon = (state: Record<string, unknown>): string => {
    const agg = new PartitionAggregator({ partition: 0 });
    agg.restore(state);
    const s = agg.snapshot();
    const byKey = (rows: unknown[]): unknown[] => [...rows].sort((a, b) => (JSON.stringify((a as unknown[])[0]) < JSON.stringify((b as unknown[])[0]) ? -1 : 1));
    for (const f of ['conns', 'ifaces', 'marks', 'hosts']) s[f] = byKey(s[f] as unknown[]);
    s.windows = (s.windows as [number, unknown[]][][]).map((set) => set.map(([start, cells]) => [start, byKey(cells)]));
    return JSON.stringify(s);
  };
  try {
    const data = synthesize({ hosts: 5, connsPerHost: 300, startMs: START, minutes: 6, seed: 5150 });
    const inputs = messagesOf(data, { dupEvery: 0, seed: 1 }).map((m) => toAggInput(decode(m.value)));
    const step = Math.ceil(inputs.length / 6);
    /** Writes one chain through `send` (the real producer, or a fault-injecting one): states after each sixth of the records. */
    const writeChain = async (stateTopic: string, send: typeof producer.send): Promise<{ metas: string[]; states: string[]; store: StateStore }> => {
      const faulty = Object.create(producer) as typeof producer;
      faulty.send = send;
      // every save of this test is a delta after the first (the size rule would end a chain of such large changes)
      const store = new StateStore({ kafka: env.kafka, admin: env.admin, producer: faulty, logger, group: 'g-chain', topic: 'records-chain', stateTopic, fullFraction: 100 });
      await store.init(1);
      const agg = new PartitionAggregator({ partition: 0 });
      const metas: string[] = [];
      const states: string[] = [];
      for (let i = 0; i < inputs.length; i += step) {
        for (const r of inputs.slice(i, i + step)) agg.add(r);
        agg.pending().commit();
        metas.push(await store.save(0, { offset: String(i + step), state: agg.snapshotLazy(), gaps: [] }));
        states.push(canon(agg.snapshot()));
      }
      return { metas, states, store };
    };
    const hintOf = (meta: string): Map<number, StateHint | undefined> => new Map([[0, parseCommitMetadata(meta)]]);
    const linkOf = (rec: ProducerRecord): string => String(rec.messages[0].headers?.['nettally-link']);

    // 1. A chain: one full snapshot, then deltas; every commit names a delta and its full snapshot; each far smaller.
    const t1 = `state-chain-${process.pid}`;
    const sizes: { link: string; bytes: number }[] = [];
    const dupTopic = `state-chain-dup-${process.pid}`;
    const c1 = await writeChain(t1, async (rec) => {
      sizes.push({ link: linkOf(rec), bytes: (rec.messages[0].value as Buffer).length });
      return producer.send(rec);
    });
    expect(c1.metas).toHaveLength(6);
    expect(parseCommitMetadata(c1.metas[0])?.base).toBeUndefined();
    for (const m of c1.metas.slice(1)) expect(parseCommitMetadata(m)?.base).toBe(parseCommitMetadata(c1.metas[0])?.offset);
    expect(sizes.map((s) => s.link)).toEqual(['full/0', 'delta/1', 'delta/2', 'delta/3', 'delta/4', 'delta/5']);
    const fresh = new StateStore({ kafka: env.kafka, admin: env.admin, producer, logger, group: 'g-chain', topic: 'records-chain', stateTopic: t1 });
    for (let k = 0; k < 6; k++) {
      const got = (await fresh.load([0], hintOf(c1.metas[k]))).get(0);
      expect(got?.offset).toBe(String((k + 1) * step));
      expect(canon(got!.state)).toBe(c1.states[k]);
    }

    // 2. A crash between a delta's write and its commit: the commit still names the one before; the newer delta
    //    (or one planted by anyone who can write the topic, naming the committed one as its predecessor) is ignored.
    const agg = new PartitionAggregator({ partition: 0 });
    agg.restore((await fresh.load([0], hintOf(c1.metas[5]))).get(0)!.state);
    await c1.store.save(0, { offset: '999999', state: agg.snapshotLazy(), gaps: [] });
    const afterCrash = (await fresh.load([0], hintOf(c1.metas[5]))).get(0);
    expect(afterCrash?.offset).toBe(String(6 * step));
    expect(canon(afterCrash!.state)).toBe(c1.states[5]);

    // 3. Duplicated and planted copies of a middle delta (same id; one with the same bytes, one with other bytes and
    //    the genuine checksum header) do not disturb the chain: links are found by id and verified checksum.
    const c2 = await writeChain(dupTopic, async (rec) => {
      const res = await producer.send(rec);
      if (linkOf(rec) === 'delta/2') {
        await producer.send(rec);
        const forged = Buffer.from(rec.messages[0].value as Buffer);
        forged[forged.length - 5] ^= 0xff;
        await producer.send({ ...rec, messages: [{ ...rec.messages[0], value: forged }] });
      }
      return res;
    });
    const dupStore = new StateStore({ kafka: env.kafka, admin: env.admin, producer, logger, group: 'g-chain', topic: 'records-chain', stateTopic: dupTopic });
    const dup = (await dupStore.load([0], hintOf(c2.metas[5]))).get(0);
    expect(canon(dup!.state)).toBe(c2.states[5]);
    expect(logLines.filter((l) => l.includes('chain'))).toEqual([]);

    // 4. A chain with a delta missing (lost to retention or compaction, never stored) or altered: refused with an
    //    error naming it, never applied in part; the state comes from the chain's full snapshot (an earlier offset:
    //    the consumer replays from there into the same totals).
    for (const fault of ['missing', 'altered'] as const) {
      const topic = `state-chain-${fault}-${process.pid}`;
      const c3 = await writeChain(topic, async (rec) => {
        if (linkOf(rec) !== 'delta/3') return producer.send(rec);
        if (fault === 'missing') return [{ topicName: topic, partition: 0, errorCode: 0, baseOffset: '0', logAppendTime: '-1', logStartOffset: '0' }];
        const v = Buffer.from(rec.messages[0].value as Buffer);
        v[v.length - 5] ^= 0xff;
        return producer.send({ ...rec, messages: [{ ...rec.messages[0], value: v }] });
      });
      logLines.length = 0;
      const s3 = new StateStore({ kafka: env.kafka, admin: env.admin, producer, logger, group: 'g-chain', topic: 'records-chain', stateTopic: topic });
      // the links before the fault still restore
      expect(canon((await s3.load([0], hintOf(c3.metas[2]))).get(0)!.state)).toBe(c3.states[2]);
      const got = (await s3.load([0], hintOf(c3.metas[5]))).get(0);
      expect(got?.offset).toBe(String(step));
      expect(canon(got!.state)).toBe(c3.states[0]);
      const errs = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.level === 50);
      expect(errs).toHaveLength(1);
      expect(String(errs[0].msg)).toContain('snapshot chain the committed offset names is broken');
      expect(String(errs[0].err)).toMatch(/number 3 of the chain/);
    }
  } finally {
    await producer.disconnect();
  }
}, 300_000);

test('a consumer killed (SIGKILL) after writing delta snapshots restores the chain and stays exact', async () => {
  const n = names('chain');
  await createTopic(env.admin, n.topic, 1);
  const data = synthesize({ hosts: 6, connsPerHost: 80, startMs: START, minutes: 8, seed: 2020 });
  const msgs = messagesOf(data, { dupEvery: 50, seed: 5 });
  // a third of the records, then two small stretches: few rows change, so those flushes write deltas
  const a = Math.floor(msgs.length * 0.3);
  const parts = [a, a + 20, a + 40];
  let c = env.child([...n.args, '--flush-interval', '1s']);
  // three caught-up stretches, each committed before the next records arrive
  for (let i = 0; i < 3; i++) {
    await produce(env.kafka, n.topic, msgs.slice(i === 0 ? 0 : parts[i - 1], parts[i]), 2000);
    await waitCaughtUp(env.admin, n.group, n.topic, 300_000, () => c.stderr().slice(-3000));
  }
  const offsets = await env.admin.fetchOffsets({ groupId: n.group, topics: [n.topic] });
  expect(parseCommitMetadata(offsets[0].partitions[0].metadata)?.base).toBeDefined();
  await c.kill();
  await produce(env.kafka, n.topic, msgs.slice(parts[2]), 2000);
  c = env.child([...n.args, '--flush-interval', '1s']);
  await waitCaughtUp(env.admin, n.group, n.topic, 300_000, () => c.stderr().slice(-3000));
  expect(c.stderr()).toMatch(/"msg":"restored a snapshot chain"/);
  expect(c.stderr()).not.toMatch(/chain the committed offset names is broken/);
  expect(await c.stop()).toBe(0);
  await env.expectExact(n.db, data, FROM, TO);
}, 900_000);

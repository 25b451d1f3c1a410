// Scenario: the bundled broker refuses what Apache Kafka refuses with its default limits (message.max.bytes,
// fetch.max.bytes, session timeouts, offset commits outside the group) and does not trust local users (loopback
// only, caps on topics, partitions and connections, idle connections closed). Raw requests for exact error codes,
// kafkajs for what the pipeline's clients see.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { ConfigResourceTypes, Kafka } from 'kafkajs';
import { BATCH } from '../broker/batch';
import { startBroker } from '../broker/index';
import { ErrorCode } from '../broker/protocol';
import { makeBatch } from './helpers/broker-batches';
import { Conn, createTopic, fetchParts, metadata, produce } from './helpers/broker-wire';
import { ensureBuilt, startBrokerProcess, startTestBroker, type BrokerProcess } from './helpers/broker';
import { broker, cleanups, conn, kafkaFor, protocolError, rejection } from './helpers/broker-scenario';

const ROOT = resolve(__dirname, '..');
const KAFKA_MESSAGE_MAX_BYTES = 1_048_588;

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A batch of exactly `size` bytes on the wire (header + opaque payload). */
function batchOfSize(size: number): Buffer {
  return makeBatch({ count: 1, payload: Buffer.alloc(size - BATCH.HEADER_SIZE, 0x61) });
}

async function highWatermarks(k: Kafka, topic: string): Promise<number[]> {
  const admin = k.admin();
  await admin.connect();
  try {
    return (await admin.fetchTopicOffsets(topic)).sort((a, b) => a.partition - b.partition).map((o) => Number(o.high));
  } finally {
    await admin.disconnect();
  }
}

describe('message.max.bytes', () => {
  test('a batch over the limit (whole batch incl. log overhead) is refused with MESSAGE_TOO_LARGE and nothing is stored', async () => {
    const b = await broker();
    const c = await conn(b.port);
    expect((await createTopic(c, 'mmb', 2)).error).toBe(0);
    expect(await produce(c, 'mmb', batchOfSize(KAFKA_MESSAGE_MAX_BYTES + 1))).toEqual({ error: ErrorCode.MESSAGE_TOO_LARGE, baseOffset: -1 });
    expect(await produce(c, 'mmb', batchOfSize(KAFKA_MESSAGE_MAX_BYTES))).toEqual({ error: 0, baseOffset: 0 });
    // A small batch followed by an oversize one in the same partition: the whole partition's set is refused.
    expect((await produce(c, 'mmb', Buffer.concat([makeBatch({ count: 2 }), batchOfSize(KAFKA_MESSAGE_MAX_BYTES + 100)]))).error).toBe(ErrorCode.MESSAGE_TOO_LARGE);
    // One request, two partitions: only the oversize partition is refused.
    const r = await c.call(0, 7, (w) =>
      w.string(null).int16(-1).int32(5000).array([0], (w2) =>
        w2.string('mmb').array([0, 1], (w3, p) => w3.int32(p).bytes(p === 0 ? batchOfSize(KAFKA_MESSAGE_MAX_BYTES + 1) : makeBatch({ count: 3 }))),
      ),
    );
    r.int32();
    r.string();
    const parts = r.array((x) => {
      const index = x.int32();
      const error = x.int16();
      x.int64();
      x.int64();
      x.int64();
      return [index, error];
    });
    expect(parts).toEqual([[0, ErrorCode.MESSAGE_TOO_LARGE], [1, 0]]);
    // Ground truth: partition 0 holds only the batch at the limit (1 record), partition 1 the 3 records.
    const [p0, p1] = await fetchParts(c, 'mmb', [{ index: 0, offset: 0, maxBytes: 2 << 20 }, { index: 1, offset: 0, maxBytes: 2 << 20 }], { maxBytes: 4 << 20 });
    expect([p0.hw, p1.hw]).toEqual([1, 3]);
    expect(p0.records.length).toBe(KAFKA_MESSAGE_MAX_BYTES);
    expect(b.broker.broker.stats().tooLargeBatches).toBe(3);
  });

  test('per topic max.message.bytes at creation overrides the broker limit; a bad value is INVALID_CONFIG', async () => {
    const b = await broker({ maxMessageBytes: 4096 });
    const c = await conn(b.port);
    expect((await createTopic(c, 'small', 1, [['max.message.bytes', '2000']])).error).toBe(0);
    expect((await createTopic(c, 'large', 1, [['max.message.bytes', '100000']])).error).toBe(0);
    expect((await createTopic(c, 'bad', 1, [['max.message.bytes', 'lots']])).error).toBe(ErrorCode.INVALID_CONFIG);
    expect((await produce(c, 'small', batchOfSize(2001))).error).toBe(ErrorCode.MESSAGE_TOO_LARGE);
    expect((await produce(c, 'small', batchOfSize(2000))).error).toBe(0);
    expect((await produce(c, 'large', batchOfSize(50_000))).error).toBe(0);
    // Topics without an override get the broker's --max-message-bytes.
    expect((await createTopic(c, 'plain')).error).toBe(0);
    expect((await produce(c, 'plain', batchOfSize(4097))).error).toBe(ErrorCode.MESSAGE_TOO_LARGE);
    // The override is durable: after a restart on the same data dir it still applies.
    const dataDir = fs.mkdtempSync(join(tmpdir(), 'nettally-limits-'));
    cleanups.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
    const first = await startTestBroker({ dataDir });
    const c1 = await Conn.open(first.port);
    expect((await createTopic(c1, 'small', 1, [['max.message.bytes', '2000']])).error).toBe(0);
    c1.close();
    await first.stop();
    const second = await broker({ dataDir });
    expect((await produce(await conn(second.port), 'small', batchOfSize(2001))).error).toBe(ErrorCode.MESSAGE_TOO_LARGE);
  });

  test('kafkajs gets MESSAGE_TOO_LARGE as a non-retriable KafkaJSProtocolError, and nothing is stored', async () => {
    const b = await broker();
    const k = kafkaFor(b, 'limits-test');
    const admin = k.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: 'kjs-big' }, { topic: 'kjs-small', configEntries: [{ name: 'max.message.bytes', value: '10000' }] }] });
    await admin.disconnect();
    const producer = k.producer();
    await producer.connect();
    cleanups.push(() => producer.disconnect());
    const err = await rejection(producer.send({ topic: 'kjs-big', acks: -1, messages: [{ value: Buffer.alloc(1_200_000, 0x62) }] }));
    expect(protocolError(err)).toMatchObject({ name: 'KafkaJSProtocolError', type: 'MESSAGE_TOO_LARGE', retriable: false });
    // Many small records that kafkajs puts in one batch over the limit: the same error (what the producer splits on).
    const many = Array.from({ length: 40 }, (_, i) => ({ key: 'h', value: `${i}:${'r'.repeat(300)}` }));
    expect(protocolError(await rejection(producer.send({ topic: 'kjs-small', acks: -1, messages: many })))).toMatchObject({ type: 'MESSAGE_TOO_LARGE', retriable: false });
    expect(await highWatermarks(k, 'kjs-big')).toEqual([0]);
    expect(await highWatermarks(k, 'kjs-small')).toEqual([0]);
    // Split the way a producer would: each half fits, and both land.
    await producer.send({ topic: 'kjs-small', acks: -1, messages: many.slice(0, 20) });
    await producer.send({ topic: 'kjs-small', acks: -1, messages: many.slice(20) });
    expect(await highWatermarks(k, 'kjs-small')).toEqual([40]);
  });
});

test('DescribeConfigs reports max.message.bytes per topic (override or broker value) and the broker limits', async () => {
  const b = await broker({ maxMessageBytes: 500_000 });
  const admin = kafkaFor(b, 'limits-test').admin();
  await admin.connect();
  cleanups.push(() => admin.disconnect());
  await admin.createTopics({ topics: [{ topic: 'own', configEntries: [{ name: 'max.message.bytes', value: '2000' }] }, { topic: 'inherits' }] });
  const res = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [
      { type: ConfigResourceTypes.TOPIC, name: 'own', configNames: ['max.message.bytes'] },
      { type: ConfigResourceTypes.TOPIC, name: 'inherits', configNames: ['max.message.bytes'] },
      { type: ConfigResourceTypes.BROKER, name: '0', configNames: ['message.max.bytes', 'socket.request.max.bytes', 'fetch.max.bytes'] },
    ],
  });
  const byName = new Map(res.resources.map((r) => [r.resourceName, r.configEntries.map((e) => [e.configName, e.configValue, e.isDefault])]));
  expect(byName.get('own')).toEqual([['max.message.bytes', '2000', false]]);
  expect(byName.get('inherits')).toEqual([['max.message.bytes', '500000', false]]);
  expect(byName.get('0')).toEqual([
    ['fetch.max.bytes', String(55 * 1024 * 1024), false],
    ['message.max.bytes', '500000', false],
    ['socket.request.max.bytes', String(100 * 1024 * 1024), false],
  ]);
  await expect(admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: 'missing' }] })).rejects.toThrow();
});

test('socket.request.max.bytes: a frame announcing more than 104857600 bytes closes the connection before any of it is sent', async () => {
  const b = await broker();
  const outcome = (size: number): Promise<'closed' | 'open'> =>
    new Promise((resolve) => {
      const s = net.connect(b.port, '127.0.0.1', () => {
        const head = Buffer.alloc(4);
        head.writeInt32BE(size, 0);
        s.write(head);
      });
      s.on('error', () => undefined);
      // Only the 4-byte size is sent: a refusal can only come from the announced size.
      const timer = setTimeout(() => {
        s.destroy();
        resolve('open');
      }, 5000);
      s.on('close', () => {
        clearTimeout(timer);
        resolve('closed');
      });
    });
  expect(await outcome(104_857_601)).toBe('closed');
  expect(await outcome(104_857_600)).toBe('open');
});

describe('fetch.max.bytes', () => {
  test('the response is capped by fetch.max.bytes and per-partition max bytes; only a first batch may exceed them', async () => {
    const b = await broker({ fetchMaxBytes: 4096 });
    const c = await conn(b.port);
    expect((await createTopic(c, 'fcap', 2)).error).toBe(0);
    for (let i = 0; i < 3; i++) expect((await produce(c, 'fcap', batchOfSize(1500), 0)).error).toBe(0);
    expect((await produce(c, 'fcap', batchOfSize(6000), 1)).error).toBe(0);
    const whole = { maxBytes: 1 << 20 };
    // Request asks for 1 MiB; the broker caps at 4096: two 1500-byte batches of p0, and p1's 6000-byte batch
    // does not fit in what is left, so it is left out rather than sent over the cap.
    let [p0, p1] = await fetchParts(c, 'fcap', [{ index: 0, offset: 0, ...whole }, { index: 1, offset: 0, ...whole }], { maxBytes: 1 << 20 });
    expect([p0.records.length, p1.records.length]).toEqual([3000, 0]);
    // p1 first: its batch is larger than the cap and is still returned (a consumer never stalls); p0 gets nothing.
    [p1, p0] = await fetchParts(c, 'fcap', [{ index: 1, offset: 0, ...whole }, { index: 0, offset: 0, ...whole }], { maxBytes: 1 << 20 });
    expect([p1.records.length, p0.records.length]).toEqual([6000, 0]);
    // The request's own max bytes and the partition max bytes are honoured below the cap.
    [p0] = await fetchParts(c, 'fcap', [{ index: 0, offset: 0, maxBytes: 3200 }], { maxBytes: 1 << 20 });
    expect(p0.records.length).toBe(3000);
    [p0] = await fetchParts(c, 'fcap', [{ index: 0, offset: 0, maxBytes: 1 << 20 }], { maxBytes: 1600 });
    expect(p0.records.length).toBe(1500);
    [p0] = await fetchParts(c, 'fcap', [{ index: 0, offset: 0, maxBytes: 100 }], { maxBytes: 1 << 20 });
    expect(p0.records.length).toBe(1500);
  });
});

describe('group coordinator', () => {
  const TOPIC = 'commits';

  async function join(c: Conn, group: string, sessionTimeoutMs: number): Promise<{ error: number; generation: number; memberId: string }> {
    const r = await c.call(11, 0, (w) =>
      w.string(group).int32(sessionTimeoutMs).string('').string('consumer').array(['range'], (w2, p) => w2.string(p).bytes(Buffer.from('meta'))),
    );
    const error = r.int16();
    const generation = r.int32();
    r.string();
    r.string();
    return { error, generation, memberId: r.string() };
  }

  async function commit(c: Conn, group: string, generation: number, memberId: string, offset: number): Promise<number> {
    const r = await c.call(8, 2, (w) =>
      w.string(group).int32(generation).string(memberId).int64(-1).array([TOPIC], (w2, t) => w2.string(t).array([0], (w3, p) => w3.int32(p).int64(offset).string(''))),
    );
    r.int32();
    r.string();
    r.int32();
    r.int32();
    return r.int16();
  }

  async function committed(c: Conn, group: string): Promise<number> {
    const r = await c.call(9, 1, (w) => w.string(group).array([TOPIC], (w2, t) => w2.string(t).array([0], (w3, p) => w3.int32(p))));
    r.int32();
    r.string();
    r.int32();
    r.int32();
    return r.int64();
  }

  test('commits: generation -1 only while the group is empty; otherwise only a current member in its generation', async () => {
    const b = await broker();
    const c = await conn(b.port);
    expect((await createTopic(c, TOPIC)).error).toBe(0);
    // A group the coordinator never saw: a simple-consumer commit is accepted, a "generation" of it is stale.
    expect(await commit(c, 'simple', -1, '', 5)).toBe(0);
    expect(await committed(c, 'simple')).toBe(5);
    expect(await commit(c, 'never-seen', 3, 'someone', 5)).toBe(ErrorCode.ILLEGAL_GENERATION);
    expect(await committed(c, 'never-seen')).toBe(-1);

    const member = await join(c, 'live', 30_000);
    expect(member.error).toBe(0);
    const sync = await c.call(14, 0, (w) => w.string('live').int32(member.generation).string(member.memberId).array([member.memberId], (w2, m) => w2.string(m).bytes(Buffer.from('a'))));
    expect(sync.int16()).toBe(0);
    expect(await commit(c, 'live', member.generation, member.memberId, 7)).toBe(0);
    // Forged commits while the member is active: all refused, the member's offset stays.
    const other = await conn(b.port);
    expect(await commit(other, 'live', -1, '', 1000)).toBe(ErrorCode.UNKNOWN_MEMBER_ID);
    expect(await commit(other, 'live', member.generation, 'not-a-member', 1000)).toBe(ErrorCode.UNKNOWN_MEMBER_ID);
    expect(await commit(other, 'live', member.generation + 1, member.memberId, 1000)).toBe(ErrorCode.ILLEGAL_GENERATION);
    expect(await commit(other, 'live', -1, member.memberId, 1000)).toBe(ErrorCode.ILLEGAL_GENERATION);
    expect(await committed(other, 'live')).toBe(7);
    // Once the member left, the group is empty and offsets may be set from outside (kcat, admin resets).
    const leave = await c.call(13, 0, (w) => w.string('live').string(member.memberId));
    expect(leave.int16()).toBe(0);
    expect(await commit(other, 'live', -1, '', 9)).toBe(0);
    expect(await committed(other, 'live')).toBe(9);
  });

  test('a session timeout outside group.min/max.session.timeout.ms is INVALID_SESSION_TIMEOUT', async () => {
    const b = await broker();
    const c = await conn(b.port);
    expect((await join(c, 'short', 5999)).error).toBe(ErrorCode.INVALID_SESSION_TIMEOUT);
    expect((await join(c, 'long', 1_800_001)).error).toBe(ErrorCode.INVALID_SESSION_TIMEOUT);
    expect((await join(c, 'ok', 6000)).error).toBe(0);
  });
});

describe('caps against local users', () => {
  test('topic and partition caps refuse with POLICY_VIOLATION / INVALID_PARTITIONS, naming the flag', async () => {
    const b = await broker({ maxPartitions: 12, maxPartitionsPerTopic: 5, maxAutoCreatedTopics: 2, defaultPartitions: 2 });
    const c = await conn(b.port);
    const names = Array.from({ length: 6 }, (_, i) => `auto-${i}`);
    const md = await metadata(c, names);
    expect(md.map((t) => [t.error, t.partitions])).toEqual([[0, 2], [0, 2], ...Array.from({ length: 4 }, () => [ErrorCode.POLICY_VIOLATION, 0])]);
    const wide = await createTopic(c, 'wide', 6);
    expect(wide.error).toBe(ErrorCode.INVALID_PARTITIONS);
    expect(wide.message).toMatch(/--max-partitions-per-topic/);
    expect((await createTopic(c, 't5a', 5)).error).toBe(0);
    const over = await createTopic(c, 't5b', 5);
    expect(over.error).toBe(ErrorCode.POLICY_VIOLATION);
    expect(over.message).toMatch(/--max-partitions 12/);
    expect((await createTopic(c, 't3', 3)).error).toBe(0);
    expect(b.broker.broker.listTopics().map((t) => t.name).sort()).toEqual(['auto-0', 'auto-1', 't3', 't5a']);
    // What kafkajs clients see: a non-retriable error, at once.
    const k = kafkaFor(b, 'limits-test');
    const producer = k.producer();
    await producer.connect();
    cleanups.push(() => producer.disconnect());
    expect(protocolError(await rejection(producer.send({ topic: 'auto-9', messages: [{ value: 'x' }] })))).toMatchObject({ type: 'POLICY_VIOLATION', retriable: false });
    // Existing topics keep working (a fresh producer: kafkajs keeps refreshing the refused topic in the old one).
    const fresh = k.producer();
    await fresh.connect();
    cleanups.push(() => fresh.disconnect());
    await fresh.send({ topic: 't3', acks: -1, messages: [{ value: 'still fine' }] });
  });

  test('a flood of topic creations stops at the caps: descriptors stay bounded, nothing half-made, the broker serves', async () => {
    const maxPartitions = 40;
    const p: BrokerProcess = await startBrokerProcess({ args: ['--max-partitions', String(maxPartitions), '--max-auto-created-topics', '5', '--fsync', 'never'] });
    cleanups.push(() => p.stop());
    const fds = (): number => fs.readdirSync(`/proc/${p.pid}/fd`).length;
    const before = fds();
    const c = await conn(p.port);
    let created = 0;
    for (let i = 0; i < 10; i++) {
      const md = await metadata(c, Array.from({ length: 50 }, (_, j) => `flood-${i}-${j}`));
      created += md.filter((t) => t.error === 0).length;
      expect(md.filter((t) => t.error !== 0).every((t) => t.error === ErrorCode.POLICY_VIOLATION)).toBe(true);
    }
    expect(created).toBe(5);
    for (let i = 0; i < 20; i++) expect((await createTopic(c, `huge-${i}`, 1000)).error).toBe(ErrorCode.POLICY_VIOLATION);
    for (let i = 0; i < 20; i++) expect((await createTopic(c, `huger-${i}`, 100_000)).error).toBe(ErrorCode.INVALID_PARTITIONS);
    const results = [];
    for (let i = 0; i < 20; i++) results.push((await createTopic(c, `eight-${i}`, 8)).error);
    // 5 auto-created topics hold 5 partitions; 35 are left: 4 topics of 8, then POLICY_VIOLATION.
    expect(results).toEqual([0, 0, 0, 0, ...Array.from({ length: 16 }, () => ErrorCode.POLICY_VIOLATION)]);
    // Each partition holds 2 descriptors (segment + index); the caps bound them.
    expect(fds() - before).toBeLessThanOrEqual(2 * maxPartitions + 8);
    const dirs = fs.readdirSync(join(p.dataDir, 'topics'));
    expect(dirs.length).toBe(9);
    for (const d of dirs) expect(fs.existsSync(join(p.dataDir, 'topics', d, 'topic.json'))).toBe(true);
    expect(p.stderr()).toMatch(/refused to auto-create topic/);
    // Still serving: a kafkajs round trip on a topic that exists.
    const producer = kafkaFor(p, 'limits-test').producer();
    await producer.connect();
    cleanups.push(() => producer.disconnect());
    await producer.send({ topic: 'eight-0', acks: -1, messages: [{ value: 'ok', partition: 0 }] });
    expect(await highWatermarks(kafkaFor(p, 'limits-test'), 'eight-0')).toEqual([1, 0, 0, 0, 0, 0, 0, 0]);
  }, 120_000);

  test('connections over --max-connections are closed at once and counted; an existing client keeps working', async () => {
    const b = await broker({ maxConnections: 3 });
    const existing = await conn(b.port);
    expect((await metadata(existing, [])).length).toBe(0);
    const extra: { socket: net.Socket; closed: boolean; got: number }[] = [];
    for (let i = 0; i < 8; i++) {
      const s = net.connect(b.port, '127.0.0.1');
      const e = { socket: s, closed: false, got: 0 };
      s.on('data', (d) => (e.got += d.length));
      s.on('close', () => (e.closed = true));
      s.on('error', () => undefined);
      extra.push(e);
    }
    cleanups.push(() => extra.forEach((e) => e.socket.destroy()));
    // 1 existing + 2 more fit; the other 6 are closed by the broker without a byte sent.
    await until('6 refused connections closed', () => extra.filter((e) => e.closed).length === 6);
    expect(extra.every((e) => e.got === 0)).toBe(true);
    expect(b.broker.broker.stats()).toMatchObject({ refusedConnections: 6, connections: 3 });
    // The existing client is served while the broker is full.
    expect((await createTopic(existing, 'while-full')).error).toBe(0);
    expect((await produce(existing, 'while-full', makeBatch({ count: 2 }))).error).toBe(0);
    // Room again once connections go away.
    extra.forEach((e) => e.socket.destroy());
    await until('connections released', () => b.broker.broker.stats().connections === 1);
    const again = await conn(b.port);
    expect((await metadata(again, ['while-full']))[0]).toEqual({ name: 'while-full', error: 0, partitions: 1 });
  });

  test('idle connections are closed after --connections-max-idle (not during a long poll); kafkajs reconnects', async () => {
    const b = await broker({ connectionsMaxIdleMs: 1000 });
    const c = await conn(b.port);
    expect((await createTopic(c, 'idle')).error).toBe(0);
    // A fetch waiting 2.5 s (longer than the idle limit) is answered, not cut off.
    const t = Date.now();
    const [p] = await fetchParts(c, 'idle', [{ index: 0, offset: 0, maxBytes: 1 << 20 }], { maxWaitMs: 2500, minBytes: 1 });
    expect(p.error).toBe(0);
    expect(Date.now() - t).toBeGreaterThanOrEqual(2400);
    await c.closed;
    expect(b.broker.broker.stats().idleClosed).toBeGreaterThanOrEqual(1);
    const producer = kafkaFor(b, 'limits-test').producer();
    await producer.connect();
    cleanups.push(() => producer.disconnect());
    await producer.send({ topic: 'idle', acks: -1, messages: [{ value: 'a' }] });
    const closedBefore = b.broker.broker.stats().idleClosed;
    await until('the producer connection closed as idle', () => b.broker.broker.stats().idleClosed > closedBefore);
    await producer.send({ topic: 'idle', acks: -1, messages: [{ value: 'b' }] });
    expect(await highWatermarks(kafkaFor(b, 'limits-test'), 'idle')).toEqual([2]);
  });
});

describe('listening address', () => {
  test('a non-loopback address is refused unless allowRemote, with an error naming --allow-remote', async () => {
    const dataDir = fs.mkdtempSync(join(tmpdir(), 'nettally-limits-'));
    cleanups.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
    for (const host of ['0.0.0.0', '::']) {
      // Closed by the cleanup should it start after all (a failing run must not leave a listener behind).
      const attempt = startBroker({ dataDir, host, port: 0 }).then((started) => {
        cleanups.push(() => started.close());
        return started;
      });
      await expect(attempt).rejects.toThrow(/NO authentication.*--allow-remote/s);
    }
    // Loopback, by address or by name, is fine.
    for (const host of ['127.0.0.1', '127.0.0.5', 'localhost']) {
      const ok = await startBroker({ dataDir, host, port: 0 });
      await ok.close();
    }
    // Explicitly allowed: it listens (and is reached over loopback here).
    const open = await startBroker({ dataDir, host: '0.0.0.0', port: 0, allowRemote: true });
    cleanups.push(() => open.close());
    expect((await metadata(await conn(open.port), [])).length).toBe(0);
  });

  test('the CLI refuses --listen 0.0.0.0 naming --allow-remote, and --help says there is no authentication', () => {
    ensureBuilt();
    const dataDir = fs.mkdtempSync(join(tmpdir(), 'nettally-limits-'));
    cleanups.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
    const bin = join(ROOT, 'dist/bin/nettally.js');
    const refused = spawnSync(process.execPath, [bin, 'broker', '--listen', '0.0.0.0:0', '--data-dir', dataDir], { encoding: 'utf8', timeout: 30_000 });
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/--allow-remote/);
    expect(refused.stderr).toMatch(/NO authentication/);
    const help = spawnSync(process.execPath, [bin, 'broker', '--help'], { encoding: 'utf8', timeout: 30_000 });
    expect(help.stdout).toMatch(/NO authentication/);
    expect(help.stdout).toMatch(/--allow-remote/);
    expect(help.stdout).toMatch(/--max-message-bytes/);
  });
});

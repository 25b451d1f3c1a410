// Scenario: the bundled broker's record timestamps behave like Apache Kafka's, so a record forged on it (it has no
// authentication) cannot choose its own Kafka timestamp where the topic says so:
// - message.timestamp.type=LogAppendTime: every appended batch is stamped with the broker's clock (timestamp-type
//   bit, MaxTimestamp, CRC recomputed); fetch, kafkajs and kcat see the append time.
// - CreateTime (default): a record more than message.timestamp.after.max.ms (1 h) ahead of the broker's clock, or
//   more than message.timestamp.before.max.ms behind it, is refused with INVALID_TIMESTAMP and nothing is stored.
// Raw requests for exact bytes and error codes, kafkajs and kcat for what real clients see.
import { spawn } from 'child_process';
import * as fs from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { ConfigResourceTypes } from 'kafkajs';
import { BATCH, checkBatch, readBatchHeader } from '../broker/batch';
import { ErrorCode } from '../broker/protocol';
import { makeRecordBatch } from './helpers/broker-batches';
import { Conn, createTopic, fetch, produce } from './helpers/broker-wire';
import { startTestBroker } from './helpers/broker';
import { broker, cleanups, conn, kafkaFor, protocolError, rejection } from './helpers/broker-scenario';

const HOUR = 3_600_000;
const MONTH = 30 * 24 * HOUR;
const INVALID_TIMESTAMP = 32;
const LOG_APPEND_TIME_BIT = 0x08;

/** A kafkajs admin, producer or consumer, connected and disconnected after the test. */
async function connected<T extends { connect(): Promise<void>; disconnect(): Promise<void> }>(client: T): Promise<T> {
  await client.connect();
  cleanups.push(() => client.disconnect());
  return client;
}

/** All batches in a fetched record set, each checked (length, magic, CRC-32C) as a consumer would. */
function batchesOf(records: Buffer): ReturnType<typeof readBatchHeader>[] {
  const out = [];
  for (let pos = 0; pos < records.length; ) {
    const b = checkBatch(records, pos, records.length);
    if (typeof b === 'string') throw new Error(`fetched batch at ${pos} is ${b}`);
    out.push(b);
    pos += b.size;
  }
  return out;
}

describe('message.timestamp.type=LogAppendTime', () => {
  test('each appended batch is stamped with the broker clock (type bit, MaxTimestamp, valid CRC), also after a restart', async () => {
    const dataDir = fs.mkdtempSync(join(tmpdir(), 'nettally-ts-'));
    cleanups.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
    const first = await startTestBroker({ dataDir });
    let c = await Conn.open(first.port);
    expect(await createTopic(c, 'lat', 1, [['message.timestamp.type', 'LogAppendTime']])).toEqual({ error: 0, message: null });
    const forged = Date.now() + MONTH;
    const before = Date.now();
    // A month ahead is accepted (Kafka does not judge CreateTime values on a LogAppendTime topic) but replaced.
    expect(await produce(c, 'lat', makeRecordBatch({ firstTimestamp: forged, deltas: [0, 7, 3] }))).toEqual({ error: 0, baseOffset: 0 });
    const after = Date.now();
    const check = async (conn: Conn): Promise<void> => {
      const f = await fetch(conn, 'lat', 0, 0, 0);
      expect(f.error).toBe(0);
      expect(f.hw).toBe(3);
      const [b] = batchesOf(f.records);
      expect(b.recordCount).toBe(3);
      expect(b.attributes & LOG_APPEND_TIME_BIT).toBe(LOG_APPEND_TIME_BIT);
      expect(b.maxTimestamp).toBeGreaterThanOrEqual(before);
      expect(b.maxTimestamp).toBeLessThanOrEqual(after);
      // As Kafka: the first timestamp stays as sent; readers take MaxTimestamp for every record.
      expect(Number(f.records.readBigInt64BE(BATCH.FIRST_TIMESTAMP))).toBe(forged);
    };
    await check(c);
    c.close();
    // Stamped bytes are what is stored: restart recovery CRC-scans the active segment and keeps the batch.
    await first.stop();
    const second = await broker({ dataDir });
    c = await conn(second.port);
    await check(c);
    // The topic's setting is durable.
    const at = Date.now();
    expect((await produce(c, 'lat', makeRecordBatch({ firstTimestamp: forged }))).error).toBe(0);
    const [, b2] = batchesOf((await fetch(c, 'lat', 0, 0, 0)).records);
    expect(b2.attributes & LOG_APPEND_TIME_BIT).toBe(LOG_APPEND_TIME_BIT);
    expect(Math.abs(b2.maxTimestamp - at)).toBeLessThan(60_000);
  });

  test('kafkajs and kcat read the append time, not the time the producer chose', async () => {
    const b = await broker();
    const k = kafkaFor(b, 'timestamps-test');
    const admin = await connected(k.admin());
    await admin.createTopics({ topics: [{ topic: 'kjs-lat', configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] }] });
    const producer = await connected(k.producer());
    const forged = Date.now() + MONTH;
    const before = Date.now();
    await producer.send({ topic: 'kjs-lat', acks: -1, messages: [{ value: 'forged', timestamp: String(forged) }, { value: 'old', timestamp: String(before - MONTH) }] });
    const after = Date.now();

    const consumer = await connected(k.consumer({ groupId: 'lat-reader', maxWaitTimeInMs: 200 }));
    await consumer.subscribe({ topic: 'kjs-lat', fromBeginning: true });
    const seen: { value: string; timestamp: number }[] = [];
    const done = new Promise<void>((resolve) => {
      void consumer.run({
        eachMessage: async ({ message }) => {
          seen.push({ value: String(message.value), timestamp: Number(message.timestamp) });
          if (seen.length === 2) resolve();
        },
      });
    });
    await done;
    expect(seen.map((s) => s.value)).toEqual(['forged', 'old']);
    for (const s of seen) {
      expect(s.timestamp).toBeGreaterThanOrEqual(before);
      expect(s.timestamp).toBeLessThanOrEqual(after);
    }

    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('kcat', ['-b', b.address, '-C', '-t', 'kjs-lat', '-o', 'beginning', '-e', '-q', '-J'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let o = '';
      let e = '';
      const timer = setTimeout(() => {
        p.kill('SIGKILL');
        reject(new Error(`kcat timed out: ${e}`));
      }, 30_000);
      p.stdout.on('data', (d: Buffer) => (o += d.toString()));
      p.stderr.on('data', (d: Buffer) => (e += d.toString()));
      p.on('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(o);
        else reject(new Error(`kcat exited ${code}: ${e}`));
      });
    });
    const msgs = out.trim().split('\n').map((l) => JSON.parse(l) as { tstype: string; ts: number; payload: string });
    expect(msgs.map((m) => m.payload)).toEqual(['forged', 'old']);
    for (const m of msgs) {
      expect(m.tstype).toBe('logappend');
      expect(m.ts).toBeGreaterThanOrEqual(before);
      expect(m.ts).toBeLessThanOrEqual(after);
    }
  });

  test('--message-timestamp-type LogAppendTime (log.message.timestamp.type) applies to topics without their own setting', async () => {
    const b = await broker({ messageTimestampType: 'LogAppendTime' });
    const c = await conn(b.port);
    expect((await createTopic(c, 'inherits')).error).toBe(0);
    expect((await createTopic(c, 'own', 1, [['message.timestamp.type', 'CreateTime']])).error).toBe(0);
    const forged = Date.now() + MONTH;
    expect((await produce(c, 'inherits', makeRecordBatch({ firstTimestamp: forged }))).error).toBe(0);
    const [stamped] = batchesOf((await fetch(c, 'inherits', 0, 0, 0)).records);
    expect(stamped.attributes & LOG_APPEND_TIME_BIT).toBe(LOG_APPEND_TIME_BIT);
    expect(Math.abs(stamped.maxTimestamp - Date.now())).toBeLessThan(60_000);
    // The topic's own CreateTime wins, and with it the 1 h bound.
    expect((await produce(c, 'own', makeRecordBatch({ firstTimestamp: forged }))).error).toBe(INVALID_TIMESTAMP);
  });
});

describe('CreateTime: message.timestamp.after.max.ms / before.max.ms', () => {
  test('a record more than 1 h ahead of the broker clock is INVALID_TIMESTAMP, checked per record; nothing is stored', async () => {
    const b = await broker();
    const c = await conn(b.port);
    expect((await createTopic(c, 'ct')).error).toBe(0);
    const now = Date.now();
    expect((await produce(c, 'ct', makeRecordBatch({ firstTimestamp: now + 2 * HOUR }))).error).toBe(INVALID_TIMESTAMP);
    expect((await produce(c, 'ct', makeRecordBatch({ firstTimestamp: now + MONTH, deltas: [0, 1] }))).error).toBe(INVALID_TIMESTAMP);
    // An honest-looking header does not hide a record ahead: each record's timestampDelta is checked.
    expect((await produce(c, 'ct', makeRecordBatch({ firstTimestamp: now, deltas: [0, 2 * HOUR, 0], maxTimestamp: now }))).error).toBe(INVALID_TIMESTAMP);
    // ... also inside a gzip batch (the broker decompresses gzip to check).
    expect((await produce(c, 'ct', makeRecordBatch({ firstTimestamp: now, deltas: [0, 2 * HOUR], maxTimestamp: now, compress: true }))).error).toBe(INVALID_TIMESTAMP);
    // Other codecs are judged by the header: MaxTimestamp ahead is refused.
    expect((await produce(c, 'ct', makeRecordBatch({ firstTimestamp: now, maxTimestamp: now + 2 * HOUR, attributes: 2 }))).error).toBe(INVALID_TIMESTAMP);
    // A header claiming LogAppendTime on a CreateTime topic cannot smuggle a MaxTimestamp past the check.
    expect((await produce(c, 'ct', makeRecordBatch({ firstTimestamp: now, maxTimestamp: now + MONTH, attributes: 2 | LOG_APPEND_TIME_BIT }))).error).toBe(INVALID_TIMESTAMP);
    expect((await fetch(c, 'ct', 0, 0, 0)).hw).toBe(0);

    // Within the bound, and any age (before.max.ms is unlimited by default): accepted.
    expect((await produce(c, 'ct', makeRecordBatch({ firstTimestamp: now + HOUR / 2, deltas: [0, 1] }))).error).toBe(0);
    expect((await produce(c, 'ct', makeRecordBatch({ firstTimestamp: now - MONTH, compress: true }))).error).toBe(0);
    expect((await produce(c, 'ct', makeRecordBatch({ firstTimestamp: now - 12 * MONTH, attributes: 2 }))).error).toBe(0);
    // Uncompressed records are all read, so a header misstating them is corrected as Kafka does (setMaxTimestamp):
    // CreateTime, MaxTimestamp = the newest record's.
    expect((await produce(c, 'ct', makeRecordBatch({ firstTimestamp: now, deltas: [0, 5], maxTimestamp: now + MONTH, attributes: LOG_APPEND_TIME_BIT }))).error).toBe(0);
    const f = await fetch(c, 'ct', 0, 0, 0);
    expect(f.hw).toBe(6);
    const stored = batchesOf(f.records);
    for (const bi of stored) expect(bi.attributes & LOG_APPEND_TIME_BIT).toBe(0);
    expect(stored.map((bi) => bi.maxTimestamp)).toEqual([now + HOUR / 2 + 1, now - MONTH, now - 12 * MONTH, now + 5]);
  });

  test('a malformed uncompressed record set (records do not match the header) is CORRUPT_MESSAGE', async () => {
    const b = await broker();
    const c = await conn(b.port);
    const batch = makeRecordBatch({ firstTimestamp: Date.now(), deltas: [0, 0] });
    // Claim 3 records (lastOffsetDelta 2) where there are 2, CRC fixed up so only the records are wrong.
    batch.writeInt32BE(2, BATCH.LAST_OFFSET_DELTA);
    batch.writeInt32BE(3, BATCH.RECORD_COUNT);
    const { crc32c } = await import('../broker/batch');
    batch.writeUInt32BE(crc32c(batch, BATCH.ATTRIBUTES), BATCH.CRC);
    expect((await createTopic(c, 'bad')).error).toBe(0);
    expect((await produce(c, 'bad', batch)).error).toBe(ErrorCode.CORRUPT_MESSAGE);
    expect((await fetch(c, 'bad', 0, 0, 0)).hw).toBe(0);
  });

  test('per topic after/before.max.ms at creation; broker options give the defaults; bad values are INVALID_CONFIG', async () => {
    const b = await broker({ messageTimestampAfterMaxMs: 10_000, messageTimestampBeforeMaxMs: HOUR });
    const c = await conn(b.port);
    expect((await createTopic(c, 'tight', 1, [['message.timestamp.after.max.ms', '1000'], ['message.timestamp.before.max.ms', '60000']])).error).toBe(0);
    expect((await createTopic(c, 'loose', 1, [['message.timestamp.after.max.ms', '9223372036854775807']])).error).toBe(0);
    expect((await createTopic(c, 'plain')).error).toBe(0);
    for (const [name, value] of [
      ['message.timestamp.type', 'logappendtime'],
      ['message.timestamp.type', 'BrokerTime'],
      ['message.timestamp.after.max.ms', '-1'],
      ['message.timestamp.before.max.ms', 'soon'],
    ]) {
      const res = await createTopic(c, 'bad', 1, [[name, value]]);
      expect(res.error).toBe(ErrorCode.INVALID_CONFIG);
      expect(res.message).toContain(name);
    }
    const now = Date.now();
    expect((await produce(c, 'tight', makeRecordBatch({ firstTimestamp: now + 30_000 }))).error).toBe(INVALID_TIMESTAMP);
    expect((await produce(c, 'tight', makeRecordBatch({ firstTimestamp: now - 120_000 }))).error).toBe(INVALID_TIMESTAMP);
    expect((await produce(c, 'tight', makeRecordBatch({ firstTimestamp: Date.now() }))).error).toBe(0);
    expect((await produce(c, 'loose', makeRecordBatch({ firstTimestamp: now + MONTH }))).error).toBe(0);
    expect((await produce(c, 'plain', makeRecordBatch({ firstTimestamp: now + 60_000 }))).error).toBe(INVALID_TIMESTAMP);
    expect((await produce(c, 'plain', makeRecordBatch({ firstTimestamp: now - 2 * HOUR }))).error).toBe(INVALID_TIMESTAMP);
    expect((await produce(c, 'plain', makeRecordBatch({ firstTimestamp: now - 60_000 }))).error).toBe(0);
  });

  test('kafkajs gets INVALID_TIMESTAMP as a non-retriable KafkaJSProtocolError; DescribeConfigs reports the settings', async () => {
    const b = await broker();
    const k = kafkaFor(b, 'timestamps-test');
    const admin = await connected(k.admin());
    await admin.createTopics({ topics: [{ topic: 'kjs-ct' }, { topic: 'kjs-lat', configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] }] });
    const producer = await connected(k.producer());
    const err = await rejection(producer.send({ topic: 'kjs-ct', acks: -1, messages: [{ value: 'x', timestamp: String(Date.now() + MONTH) }] }));
    expect(protocolError(err)).toMatchObject({ name: 'KafkaJSProtocolError', type: 'INVALID_TIMESTAMP', retriable: false });
    expect((await admin.fetchTopicOffsets('kjs-ct')).map((o) => o.high)).toEqual(['0']);
    await producer.send({ topic: 'kjs-ct', acks: -1, messages: [{ value: 'ok' }] });
    expect((await admin.fetchTopicOffsets('kjs-ct')).map((o) => o.high)).toEqual(['1']);

    const names = ['message.timestamp.after.max.ms', 'message.timestamp.before.max.ms', 'message.timestamp.type'];
    const res = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [
        { type: ConfigResourceTypes.TOPIC, name: 'kjs-ct', configNames: names },
        { type: ConfigResourceTypes.TOPIC, name: 'kjs-lat', configNames: names },
        { type: ConfigResourceTypes.BROKER, name: '0', configNames: names.map((n) => `log.${n}`) },
      ],
    });
    const byName = new Map(res.resources.map((r) => [r.resourceName, r.configEntries.map((e) => [e.configName, e.configValue])]));
    expect(byName.get('kjs-ct')).toEqual([
      ['message.timestamp.after.max.ms', '3600000'],
      ['message.timestamp.before.max.ms', '9223372036854775807'],
      ['message.timestamp.type', 'CreateTime'],
    ]);
    expect(byName.get('kjs-lat')).toEqual([
      ['message.timestamp.after.max.ms', '3600000'],
      ['message.timestamp.before.max.ms', '9223372036854775807'],
      ['message.timestamp.type', 'LogAppendTime'],
    ]);
    expect(byName.get('0')).toEqual([
      ['log.message.timestamp.after.max.ms', '3600000'],
      ['log.message.timestamp.before.max.ms', '9223372036854775807'],
      ['log.message.timestamp.type', 'CreateTime'],
    ]);
  });
});

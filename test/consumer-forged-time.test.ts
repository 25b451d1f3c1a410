// Scenario (issue 11 items 2/5): a local user forges records on the bundled broker (it has no authentication) with
// time_ns AND Kafka CreateTime one month in the future. On the records topic `nettally up` creates
// (message.timestamp.type=LogAppendTime) the broker stamps the append time, the consumer places the forged record
// there (--max-clock-ahead), and an honest host sharing the partition keeps exact totals in exact windows.
// Real parts: up's topic creation, the bundled broker, kafkajs, the consumer, a real influxd, `nettally usage`.
import { ConfigResourceTypes } from 'kafkajs';
import { parseArgs } from '../lib/args';
import pino from 'pino';
import { silentLogger } from '../lib/log';
import { command as upCommand, ensureTopic } from '../bin/up';
import { hostIdOf, synthesize } from '../consumer/synthetic';
import { encode } from '../schemas';
import { consumerScenario, messagesOf, produce, truthByGroup, usageByGroup, waitCaughtUp } from './helpers/consumer';

const MINUTE = 60_000;
const MONTH = 30 * 24 * 3_600_000;

const env = consumerScenario();

test('a record forged a month ahead (time_ns and CreateTime) on the topic up created is placed at the append time; the honest host stays exact', async () => {
  const topic = `records-forged-${process.pid}`;
  const db = `nt_forged_${process.pid}`;
  // The records topic exactly as `nettally up` creates it (one partition: forger and honest host share it).
  const upArgs = parseArgs(upCommand.spec, ['--brokers', env.broker.address, '--topic', topic], {});
  if (upArgs === 'help') throw new Error('help');
  await ensureTopic(upArgs, [env.broker.address], topic, 1, silentLogger, new AbortController().signal);
  const described = await env.admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['message.timestamp.type'] }] });
  expect(described.resources[0].configEntries.map((e) => [e.configName, e.configValue])).toEqual([['message.timestamp.type', 'LogAppendTime']]);

  // The honest host's clock is right: its records span a few minutes around now (none more than --max-clock-ahead
  // ahead of the append time, none old enough for --allowed-lateness 10m to matter).
  const now = Date.now();
  const start = Math.floor(now / MINUTE) * MINUTE - 3 * MINUTE;
  const honest = synthesize({ hosts: 1, connsPerHost: 4, startMs: start, minutes: 5, seed: 41 });
  const honestMsgs = messagesOf(honest, { seed: 5 });
  // The forger: another host's records, time_ns a month ahead, sent with a CreateTime a month ahead too.
  const forgedAt = now + MONTH;
  const forgedData = synthesize({ hosts: 1, connsPerHost: 1, startMs: Math.floor(forgedAt / MINUTE) * MINUTE, minutes: 1, seed: 42 });
  const forgedHost = hostIdOf(42, 0);
  expect(forgedHost).not.toBe(hostIdOf(41, 0));
  const forged = [...forgedData.byHost.values()].flat().map((m) => ({ key: forgedHost, value: encode(m.kind, m.record as never), timestamp: String(forgedAt) }));

  const group = `g-forged-${process.pid}`;
  const logLines: string[] = [];
  const consumer = env.inProcess(
    ['--brokers', env.broker.address, '--topic', topic, '--group', group, '--influx-url', env.influx.url, '--influx-db', db, '--state-topic', `${topic}.state`, '--dlq-topic', `${topic}.dlq`, '--flush-interval', '300ms', '--session-timeout', '6s', '--allowed-lateness', '10m'],
    // The consumer's own warnings, to see it clamp the forged records (and say so).
    { logger: pino({ level: 'warn' }, { write: (l: string) => logLines.push(l) }) },
  );
  await consumer.start();

  // Honest records before and after the forged ones: the later ones must not be judged "too late".
  const half = Math.floor(honestMsgs.length / 2);
  const beforeAppend = Date.now();
  await produce(env.kafka, topic, honestMsgs.slice(0, half));
  const p = env.kafka.producer({ allowAutoTopicCreation: false });
  await p.connect();
  try {
    await p.send({ topic, acks: -1, messages: forged });
  } finally {
    await p.disconnect();
  }
  await produce(env.kafka, topic, honestMsgs.slice(half));
  const afterAppend = Date.now();
  await waitCaughtUp(env.admin, group, topic);

  const influxArgs = ['--influx-url', env.influx.url, '--influx-db', db];
  const from = start - 60 * MINUTE;
  const to = forgedAt + 60 * MINUTE;
  // The honest host: exactly its truth in every 1-minute and 1-hour window (the open hour is previewed only when one
  // of its minutes is final — 10 minutes of allowed lateness here — so it is read after the graceful stop writes it).
  for (const window of ['1m', '1h'] as const) {
    if (window === '1h') await consumer.stop();
    const got = await usageByGroup(influxArgs, from, to, 'host', window);
    const honestRows = new Map([...got].filter(([k]) => !k.includes(forgedHost)));
    expect({ window, rows: honestRows }).toEqual({ window, rows: truthByGroup(honest.traffic, 'host', window) });
    // The forged bytes are where the append time puts them, not a month ahead.
    const forgedWindows = [...got.keys()].filter((k) => k.includes(forgedHost)).map((k) => Number(k.split('|')[0]));
    expect(forgedWindows.length).toBeGreaterThan(0);
    const size = window === '1m' ? MINUTE : 60 * MINUTE;
    for (const w of forgedWindows) {
      expect(w).toBeGreaterThanOrEqual(Math.floor(beforeAppend / size) * size);
      expect(w).toBeLessThanOrEqual(afterAppend);
    }
  }
  expect(logLines.join('')).toContain('far ahead of their Kafka timestamp');
}, 240_000);

test("up leaves an existing records topic as it is and warns when it is not LogAppendTime", async () => {
  const topic = `records-existing-${process.pid}`;
  await env.admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  const upArgs = parseArgs(upCommand.spec, ['--brokers', env.broker.address, '--topic', topic], {});
  if (upArgs === 'help') throw new Error('help');
  const lines: string[] = [];
  await ensureTopic(upArgs, [env.broker.address], topic, 4, pino({ level: 'info' }, { write: (l: string) => lines.push(l) }), new AbortController().signal);
  const described = await env.admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['message.timestamp.type'] }] });
  expect(described.resources[0].configEntries.map((e) => e.configValue)).toEqual(['CreateTime']);
  expect((await env.admin.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length).toBe(2);
  const warning = lines.map((l) => JSON.parse(l) as { level: number; msg: string; timestampType?: string }).find((l) => l.level === 40);
  expect(warning).toMatchObject({ timestampType: 'CreateTime' });
  expect(warning?.msg).toContain('message.timestamp.type=LogAppendTime');
});

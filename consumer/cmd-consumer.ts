// `nettally consumer`: runs one member of the rollup consumer group until SIGINT/SIGTERM, with a status line.
import { type CommandSpec, type ParsedArgs } from '../lib/args';
import type { Command, CommandContext } from '../lib/command';
import { configError } from '../lib/errors';
import { processStatusReporter, type ConsumerReport } from '../lib/status';
import { createKafkaClient, DEFAULT_DLQ_TOPIC, KAFKA_OPTIONS, kafkaConfigFrom } from '../lib/kafka';
import { DEFAULT_AGG_OPTIONS } from './agg-options';
import { createRollupConsumer, type ConsumerStats, type RollupConsumerConfig } from './consumer';
import { INFLUX_OPTIONS, InfluxClient, influxConfigFrom } from './influx';
import { loadRemoteClasses, REMOTE_CLASSES_OPTION } from './classes';
import { DEFAULT_STATE_TOPIC } from './state-store';
import { memoryMiB } from '../lib/runtime';

const DEFAULT_POINTS_DLQ_TOPIC = 'nettally.points.dlq';

const spec: CommandSpec = {
  name: 'consumer',
  summary: 'Aggregate nettally records from Kafka into exact per-window totals in InfluxDB.',
  description: [
    'Decodes records by schema fingerprint, drops duplicates by (host_id, epoch, seq), turns cumulative counters into',
    'deltas per connection and writes event-time window totals (1 minute and 1 hour) as whole values, with the Kafka',
    'partition as a tag. Per partition: points are written, then a state snapshot, then the offset is committed, so a',
    'crash or rebalance replays into identical points. Undecodable records go to the dead-letter topic, points',
    'InfluxDB refuses (e.g. a field type conflict) to the points dead-letter topic; neither stops a partition.',
  ].join('\n'),
  options: [
    ...KAFKA_OPTIONS,
    { name: 'group', type: 'string', env: 'NETTALLY_CONSUMER_GROUP', default: 'nettally-consumer', help: 'Kafka consumer group id' },
    { name: 'state-topic', type: 'string', env: 'NETTALLY_STATE_TOPIC', default: DEFAULT_STATE_TOPIC, help: 'topic holding per-partition aggregation snapshots' },
    { name: 'dlq-topic', type: 'string', env: 'NETTALLY_DLQ_TOPIC', default: DEFAULT_DLQ_TOPIC, help: 'dead-letter topic for undecodable records' },
    { name: 'points-dlq-topic', type: 'string', env: 'NETTALLY_POINTS_DLQ_TOPIC', default: DEFAULT_POINTS_DLQ_TOPIC, help: 'dead-letter topic for points InfluxDB refuses (line protocol + reason)' },
    { name: 'window', type: 'duration', env: 'NETTALLY_WINDOW', default: 60_000, min: 1000, help: 'tumbling window size (the rollup is 1h)' },
    { name: 'allowed-lateness', type: 'duration', env: 'NETTALLY_ALLOWED_LATENESS', default: 120_000, min: 0, help: 'event-time lateness a window waits for before it is final' },
    { name: 'idle-timeout', type: 'duration', env: 'NETTALLY_IDLE_TIMEOUT', default: 86_400_000, min: 60_000, help: 'host event time after which a silent connection keeps only its counters (dormant) and a dedupe mark is dropped' },
    { name: 'max-clock-ahead', type: 'duration', env: 'NETTALLY_MAX_CLOCK_AHEAD', default: 300_000, min: 1000, help: 'a record whose time is further ahead of its Kafka timestamp is placed at that timestamp (logged)' },
    { name: 'forget-host-after', type: 'duration', env: 'NETTALLY_FORGET_HOST_AFTER', default: 30 * 86_400_000, min: 3_600_000, help: 'partition event time after which a silent host\'s state (connection baselines) is forgotten' },
    REMOTE_CLASSES_OPTION,
    { name: 'flush-interval', type: 'duration', env: 'NETTALLY_FLUSH_INTERVAL', default: 5000, min: 100, help: 'how often final windows are written, the state snapshotted and offsets committed' },
    {
      name: 'preview-interval',
      type: 'duration',
      env: 'NETTALLY_PREVIEW_INTERVAL',
      min: 0,
      help: 'while following live traffic, how often windows still open are written as previews (final=false; default: the --flush-interval); a final window is written once',
    },
    {
      name: 'partitions-concurrently',
      type: 'int',
      env: 'NETTALLY_PARTITIONS_CONCURRENTLY',
      default: 4,
      min: 1,
      max: 64,
      help: 'assigned partitions processed at the same time (one waits on InfluxDB or a snapshot while another decodes)',
    },
    {
      name: 'fetch-max-bytes',
      type: 'int',
      env: 'NETTALLY_FETCH_MAX_BYTES',
      default: 1024 * 1024,
      min: 64 * 1024,
      help: 'largest Kafka fetch response, split evenly over --partitions-concurrently (each at least 64 KiB): bounds the records buffered in memory',
    },
    { name: 'session-timeout', type: 'duration', env: 'NETTALLY_SESSION_TIMEOUT', default: 30_000, min: 6000, help: 'group session timeout (a dead member is replaced after this); Kafka brokers accept 6s..30m (group.min/max.session.timeout.ms)' },
    { name: 'status-interval', type: 'duration', env: 'NETTALLY_STATUS_INTERVAL', default: 10_000, min: 0, help: 'status line period (0 = off)' },
    {
      name: 'shutdown-timeout',
      type: 'duration',
      env: 'NETTALLY_SHUTDOWN_TIMEOUT',
      default: 10_000,
      min: 0,
      help: 'on SIGTERM, how long the final write and commit may take (past it, the next start replays from the last commit)',
    },
    { name: 'check', type: 'bool', default: false, help: 'check the configuration and that Kafka and InfluxDB answer, then exit (0 = ok)' },
    { name: 'create-db', type: 'bool', env: 'NETTALLY_CREATE_DB', default: true, help: 'create the InfluxDB database at start (v1 API)' },
    ...INFLUX_OPTIONS,
  ],
  examples: [
    'nettally consumer --brokers kafka1:9092 --influx-url http://influx:8086 --influx-db nettally',
    'INFLUX_TOKEN_FILE=/run/secrets/influx nettally consumer --influx-api v2 --influx-org acme --influx-bucket nettally',
  ],
};

export function consumerConfigFrom(args: ParsedArgs): RollupConsumerConfig {
  const windowMs = args.num('window');
  if (3_600_000 % windowMs !== 0) throw configError('--window (env NETTALLY_WINDOW)', 'must divide one hour evenly (e.g. 10s, 1m, 5m, 15m)');
  for (const name of ['group', 'topic', 'state-topic', 'dlq-topic', 'points-dlq-topic']) {
    if (args.str(name) === '') throw configError(`--${name}`, 'must not be empty');
  }
  if (['state-topic', 'dlq-topic', 'points-dlq-topic'].some((t) => args.str(t) === args.str('topic'))) {
    throw configError('--state-topic/--dlq-topic/--points-dlq-topic', 'must differ from --topic');
  }
  return {
    kafka: kafkaConfigFrom(args),
    topic: args.str('topic'),
    group: args.str('group'),
    stateTopic: args.str('state-topic'),
    dlqTopic: args.str('dlq-topic'),
    pointsDlqTopic: args.str('points-dlq-topic'),
    aggregation: {
      ...DEFAULT_AGG_OPTIONS,
      windowMs,
      rollupMs: 3_600_000,
      allowedLatenessMs: args.num('allowed-lateness'),
      idleTimeoutMs: args.num('idle-timeout'),
      maxAheadMs: args.num('max-clock-ahead'),
      forgetHostMs: args.num('forget-host-after'),
      closeGraceMs: Math.max(60_000, args.num('allowed-lateness') * 2),
      // read and checked at start: a bad line stops the consumer with file:line, before it reads any record
      remoteClasses: loadRemoteClasses(args.str('remote-classes')),
    },
    influx: influxConfigFrom(args),
    flushIntervalMs: args.num('flush-interval'),
    previewIntervalMs: args.optNum('preview-interval') ?? args.num('flush-interval'),
    partitionsConcurrently: args.num('partitions-concurrently'),
    fetchMaxBytes: args.num('fetch-max-bytes'),
    retryInitialMs: 500,
    retryMaxMs: 30_000,
    sessionTimeoutMs: args.num('session-timeout'),
    createDatabase: args.bool('create-db'),
  };
}

/**
 * What `nettally up` is told (the numbers of the status log line): starting until the assigned partitions' state
 * is restored, degraded while InfluxDB is down.
 */
export function consumerReport(s: ConsumerStats, eventsPerS: number, loaded: boolean): ConsumerReport {
  return {
    daemon: 'consumer',
    phase: !loaded ? 'starting' : s.influx_down_since === undefined ? 'ready' : 'degraded',
    ...(loaded && s.influx_down_since !== undefined ? { error: 'InfluxDB unreachable or refusing writes' } : {}),
    events_per_s: eventsPerS,
    lag: s.lag,
    partitions: s.partitions,
    last_window: s.last_window_ms === undefined ? null : new Date(s.last_window_ms).toISOString(),
    influx_down_since_ms: s.influx_down_since ?? null,
  };
}

/** A URL without user:password, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = '';
      u.password = '';
    }
    return u.toString().replace(/\/$/, '');
  } catch {
    return '[unparseable url]';
  }
}

/** --check: Kafka metadata and an InfluxQL round trip, one line each on stdout. */
async function check(config: RollupConsumerConfig, ctx: CommandContext): Promise<number> {
  let ok = true;
  const brokers = Array.isArray(config.kafka.brokers) ? config.kafka.brokers.join(',') : 'brokers';
  const admin = createKafkaClient(config.kafka, { retry: { retries: 2 } }).admin();
  try {
    await admin.connect();
    const topics = await admin.listTopics();
    ctx.stdout.write(`kafka ok: ${brokers} (topic ${config.topic} ${topics.includes(config.topic) ? 'exists' : 'does not exist yet'})\n`);
    if (topics.includes(config.topic)) {
      // Retention past the group's position: records deleted before they were read (the consumer reports and
      // skips this gap when it runs; until then an operator should know).
      const ends = await admin.fetchTopicOffsets(config.topic);
      const committed = (await admin.fetchOffsets({ groupId: config.group, topics: [config.topic] }))[0]?.partitions ?? [];
      for (const c of committed) {
        const low = ends.find((e) => e.partition === c.partition)?.low;
        if (low === undefined || BigInt(c.offset) < 0n || BigInt(c.offset) >= BigInt(low)) continue;
        ok = false;
        ctx.stdout.write(
          `kafka GAP: ${config.topic} partition ${c.partition}: committed offset ${c.offset} is below the earliest available offset ${low}; ` +
            `${BigInt(low) - BigInt(c.offset)} records were deleted by retention before group ${config.group} read them ` +
            '(the consumer continues after the gap and writes the affected windows with gap=true; raise retention.ms above the longest consumer downtime)\n',
        );
      }
    }
  } catch (e) {
    ok = false;
    ctx.stdout.write(`kafka FAILED: ${brokers}: ${(e as Error).message}\n`);
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
  try {
    await new InfluxClient(config.influx).query('SHOW DATABASES');
    ctx.stdout.write(`influxdb ok: ${redactUrl(config.influx.url)}\n`);
  } catch (e) {
    ok = false;
    ctx.stdout.write(`influxdb FAILED: ${redactUrl(config.influx.url)}: ${(e as Error).message}\n`);
  }
  return ok ? 0 : 1;
}

async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const config = consumerConfigFrom(args);
  if (args.bool('check')) return check(config, ctx);
  const log = ctx.logger;
  const c = createRollupConsumer({ config, logger: log });
  log.info(
    { brokers: config.kafka.brokers, topic: config.topic, group: config.group, influx: redactUrl(config.influx.url), influx_api: config.influx.api, db: config.influx.db, window_ms: config.aggregation.windowMs, allowed_lateness_ms: config.aggregation.allowedLatenessMs, remote_classes: config.aggregation.remoteClasses.source || 'built-in', classes: [...config.aggregation.remoteClasses.classes] },
    'consumer starting',
  );
  let status: NodeJS.Timeout | undefined;
  const stopped = new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
  const reporter = processStatusReporter();
  let loaded = false;
  c.onStateLoaded = () => {
    // Consuming from here: up counts this consumer as ready.
    loaded = true;
    if (reporter.enabled) void reporter.report(consumerReport(c.stats(), 0, true));
  };
  try {
    await Promise.race([c.start(), stopped]);
    const every = args.num('status-interval');
    let prev = c.stats();
    let prevT = Date.now();
    if (every > 0) {
      status = setInterval(() => {
        const s = c.stats();
        const now = Date.now();
        const rate = ((s.records + s.duplicates - prev.records - prev.duplicates) * 1000) / Math.max(1, now - prevT);
        prev = s;
        prevT = now;
        const report = consumerReport(s, Math.round(rate), loaded);
        if (reporter.enabled) void reporter.report(report);
        log.info(
          {
            events_per_s: report.events_per_s,
            lag: s.lag,
            partitions: s.partitions,
            last_window: report.last_window,
            dlq: s.dlq,
            points_dlq: s.points_dlq,
            duplicates: s.duplicates,
            too_late: s.too_late,
            retention_gaps: s.retention_gaps,
            points_written: s.points_written,
            influx: s.influx_down_since === undefined ? 'ok' : `down ${Math.round((now - s.influx_down_since) / 1000)}s`,
            state_saves: s.state_saves,
            state_deltas: s.state_deltas,
            state_bytes: s.state_bytes,
            memory_mib: memoryMiB(),
          },
          'status',
        );
      }, every);
    }
    await Promise.race([stopped, c.done]);
    return 0;
  } catch (e) {
    log.error({ err: e }, 'consumer failed');
    throw e;
  } finally {
    if (status) clearInterval(status);
    // Bounded: with InfluxDB or Kafka gone the final write would retry forever. Nothing is lost by giving up: the
    // offsets of unwritten windows are not committed, so the next member replays them into identical points.
    const timeoutMs = args.num('shutdown-timeout');
    let timer: NodeJS.Timeout | undefined;
    const stoppedInTime = await Promise.race([c.stop().then(() => true), new Promise<boolean>((r) => (timer = setTimeout(r, timeoutMs, false)))]);
    clearTimeout(timer);
    if (stoppedInTime) log.info(c.stats(), 'consumer stopped');
    else log.warn({ ...c.stats(), shutdown_timeout_ms: timeoutMs }, 'final write/commit did not finish in time; the next start replays from the last committed offsets');
  }
}

export const command: Command = { spec, run };

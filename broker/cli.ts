// `nettally broker`: runs the bundled single-node Kafka-protocol broker until SIGINT/SIGTERM.
import { resolve } from 'path';
import { formatHostPort, parseBytes, parseDuration, parseHostPort, type CommandSpec, type ParsedArgs } from '../lib/args';
import type { Command, CommandContext } from '../lib/command';
import { configError } from '../lib/errors';
import { processStatusReporter } from '../lib/status';
import { BROKER_DEFAULTS, startBroker, type FsyncPolicy, type TimestampType } from './index';

const spec: CommandSpec = {
  name: 'broker',
  summary: 'Run the bundled single-node Kafka-protocol broker (for one machine and CI; fleets run Apache Kafka).',
  description:
    'Speaks enough of the Kafka protocol for kafkajs and librdkafka (kcat): produce (acks, idempotence), fetch,\n' +
    'consumer groups, offsets, topic creation. Data is an append-only segment log per partition under --data-dir.\n' +
    'Enforces Apache Kafka\'s default limits (message.max.bytes, socket.request.max.bytes, fetch.max.bytes, ...).\n' +
    '\n' +
    'SECURITY: this broker has NO authentication, authorization or TLS. Every local user can produce, consume,\n' +
    'create topics and commit offsets for any group. It listens on loopback only unless --allow-remote is given.',
  options: [
    { name: 'listen', type: 'string', env: 'NETTALLY_BROKER_LISTEN', default: '127.0.0.1:9092', help: 'host:port to listen on (port 0 picks a free port)' },
    { name: 'data-dir', type: 'string', env: 'NETTALLY_BROKER_DATA', default: '/var/lib/nettally/broker', help: 'directory for topic logs and committed offsets' },
    { name: 'advertised-host', type: 'string', env: 'NETTALLY_BROKER_ADVERTISED_HOST', help: 'host clients are told to connect to (default: the listen host)' },
    { name: 'partitions', type: 'int', env: 'NETTALLY_BROKER_PARTITIONS', default: 1, min: 1, max: 1000, help: 'partitions of auto-created topics' },
    { name: 'auto-create-topics', type: 'bool', env: 'NETTALLY_BROKER_AUTO_CREATE', default: true, help: 'create unknown topics on metadata requests (--no-auto-create-topics to refuse)' },
    { name: 'retention', type: 'string', env: 'NETTALLY_BROKER_RETENTION', default: '-1', help: 'delete segments older than this duration (7d, 12h, ...); -1 keeps forever' },
    { name: 'retention-bytes', type: 'string', env: 'NETTALLY_BROKER_RETENTION_BYTES', default: '-1', help: 'per-partition size limit (10GiB, ...); -1 is unlimited' },
    { name: 'retention-check-interval', type: 'duration', env: 'NETTALLY_BROKER_RETENTION_CHECK', default: 30_000, min: 10, help: 'how often retention runs' },
    { name: 'segment-bytes', type: 'bytes', env: 'NETTALLY_BROKER_SEGMENT_BYTES', default: 64 * 1024 * 1024, min: 1024, max: 2 ** 31 - 1, help: 'segment file size before a new one is started' },
    { name: 'fsync', type: 'enum', env: 'NETTALLY_BROKER_FSYNC', choices: ['always', 'interval', 'never'], default: 'always', help: 'always: fsync before each produce/commit ack; interval: every --fsync-interval; never: leave it to the OS' },
    { name: 'fsync-interval', type: 'duration', env: 'NETTALLY_BROKER_FSYNC_INTERVAL', default: 1000, min: 1, help: 'fsync period with --fsync interval' },
    { name: 'max-request-bytes', type: 'bytes', env: 'NETTALLY_BROKER_MAX_REQUEST_BYTES', default: BROKER_DEFAULTS.maxRequestBytes, min: 1024, max: 2 ** 31 - 1, help: "larger request frames close the connection (Kafka's socket.request.max.bytes)" },
    { name: 'max-message-bytes', type: 'bytes', env: 'NETTALLY_BROKER_MAX_MESSAGE_BYTES', default: BROKER_DEFAULTS.maxMessageBytes, min: 1, max: 2 ** 31 - 1, help: "largest record batch a produce may append, else MESSAGE_TOO_LARGE (Kafka's message.max.bytes; per topic: max.message.bytes)" },
    { name: 'fetch-max-bytes', type: 'bytes', env: 'NETTALLY_BROKER_FETCH_MAX_BYTES', default: BROKER_DEFAULTS.fetchMaxBytes, min: 1024, max: 2 ** 31 - 1, help: "cap on one fetch response; a first batch larger is still returned (Kafka's fetch.max.bytes)" },
    { name: 'max-connections', type: 'int', env: 'NETTALLY_BROKER_MAX_CONNECTIONS', default: BROKER_DEFAULTS.maxConnections, min: 1, help: "concurrent client connections; more are closed at once and logged (Kafka's max.connections)" },
    { name: 'connections-max-idle', type: 'duration', env: 'NETTALLY_BROKER_CONNECTIONS_MAX_IDLE', default: BROKER_DEFAULTS.connectionsMaxIdleMs, min: 1000, help: "close connections idle this long (Kafka's connections.max.idle.ms)" },
    { name: 'group-min-session-timeout', type: 'duration', env: 'NETTALLY_BROKER_GROUP_MIN_SESSION_TIMEOUT', default: BROKER_DEFAULTS.groupMinSessionTimeoutMs, min: 1, help: "smallest session timeout a group member may ask for (Kafka's group.min.session.timeout.ms)" },
    { name: 'group-max-session-timeout', type: 'duration', env: 'NETTALLY_BROKER_GROUP_MAX_SESSION_TIMEOUT', default: BROKER_DEFAULTS.groupMaxSessionTimeoutMs, min: 1, help: "largest session timeout a group member may ask for (Kafka's group.max.session.timeout.ms)" },
    { name: 'max-partitions', type: 'int', env: 'NETTALLY_BROKER_MAX_PARTITIONS', default: BROKER_DEFAULTS.maxPartitions, min: 1, help: 'partitions across all topics (2 open files each); more are refused with POLICY_VIOLATION' },
    { name: 'max-partitions-per-topic', type: 'int', env: 'NETTALLY_BROKER_MAX_PARTITIONS_PER_TOPIC', default: BROKER_DEFAULTS.maxPartitionsPerTopic, min: 1, help: 'partitions of one topic; more are refused with INVALID_PARTITIONS' },
    { name: 'max-auto-created-topics', type: 'int', env: 'NETTALLY_BROKER_MAX_AUTO_CREATED_TOPICS', default: BROKER_DEFAULTS.maxAutoCreatedTopics, min: 0, help: 'topics that metadata requests may auto-create; more are refused with POLICY_VIOLATION' },
    { name: 'message-timestamp-type', type: 'enum', env: 'NETTALLY_BROKER_MESSAGE_TIMESTAMP_TYPE', choices: ['CreateTime', 'LogAppendTime'], default: BROKER_DEFAULTS.messageTimestampType, help: "timestamps of topics without their own message.timestamp.type: the client's (CreateTime) or the broker clock at append (LogAppendTime) (Kafka's log.message.timestamp.type)" },
    { name: 'message-timestamp-after-max', type: 'string', env: 'NETTALLY_BROKER_MESSAGE_TIMESTAMP_AFTER_MAX', default: '1h', help: "CreateTime: a record more than this ahead of the broker clock is refused with INVALID_TIMESTAMP; -1 unlimited (Kafka's log.message.timestamp.after.max.ms)" },
    { name: 'message-timestamp-before-max', type: 'string', env: 'NETTALLY_BROKER_MESSAGE_TIMESTAMP_BEFORE_MAX', default: '-1', help: "CreateTime: a record more than this behind the broker clock is refused with INVALID_TIMESTAMP; -1 unlimited (Kafka's log.message.timestamp.before.max.ms)" },
    { name: 'allow-remote', type: 'bool', env: 'NETTALLY_BROKER_ALLOW_REMOTE', default: false, help: 'allow --listen on a non-loopback address (the broker has NO authentication: anyone who reaches it can read and write)' },
  ],
  examples: [
    'nettally broker --data-dir /var/lib/nettally/broker',
    'nettally broker --listen 127.0.0.1:0 --data-dir /tmp/b --partitions 6 --retention 1d --fsync interval',
  ],
};

/** "-1" or a duration/size in the lib/args syntax. */
function limit(args: ParsedArgs, name: string, env: string, parse: (s: string) => number | undefined, example: string): number {
  const raw = args.str(name).trim();
  if (raw === '-1') return -1;
  const v = parse(raw);
  if (v === undefined || v < 0) throw configError(`--${name} (env ${env})`, `expected -1 or ${example}, got ${JSON.stringify(raw)}`);
  return v;
}

async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const listenSetting = '--listen (env NETTALLY_BROKER_LISTEN)';
  const { host, port } = parseHostPort(listenSetting, args.str('listen'), { example: '127.0.0.1:9092' });
  const dataDir = resolve(args.str('data-dir'));
  const retentionMs = limit(args, 'retention', 'NETTALLY_BROKER_RETENTION', parseDuration, 'a duration such as 7d or 12h');
  const retentionBytes = limit(args, 'retention-bytes', 'NETTALLY_BROKER_RETENTION_BYTES', parseBytes, 'a size such as 10GiB');
  const timestampAfterMaxMs = limit(args, 'message-timestamp-after-max', 'NETTALLY_BROKER_MESSAGE_TIMESTAMP_AFTER_MAX', parseDuration, 'a duration such as 1h or 10m');
  const timestampBeforeMaxMs = limit(args, 'message-timestamp-before-max', 'NETTALLY_BROKER_MESSAGE_TIMESTAMP_BEFORE_MAX', parseDuration, 'a duration such as 7d');
  const logger = ctx.logger.child({ component: 'broker' });
  let broker;
  try {
    broker = await startBroker({
      host,
      port,
      dataDir,
      advertisedHost: args.optStr('advertised-host'),
      defaultPartitions: args.num('partitions'),
      autoCreateTopics: args.bool('auto-create-topics'),
      retentionMs,
      retentionBytes,
      retentionCheckMs: args.num('retention-check-interval'),
      segmentBytes: args.num('segment-bytes'),
      fsync: args.str('fsync') as FsyncPolicy,
      fsyncIntervalMs: args.num('fsync-interval'),
      maxRequestBytes: args.num('max-request-bytes'),
      maxMessageBytes: args.num('max-message-bytes'),
      fetchMaxBytes: args.num('fetch-max-bytes'),
      maxConnections: args.num('max-connections'),
      connectionsMaxIdleMs: args.num('connections-max-idle'),
      groupMinSessionTimeoutMs: args.num('group-min-session-timeout'),
      groupMaxSessionTimeoutMs: args.num('group-max-session-timeout'),
      maxPartitions: args.num('max-partitions'),
      maxPartitionsPerTopic: args.num('max-partitions-per-topic'),
      maxAutoCreatedTopics: args.num('max-auto-created-topics'),
      messageTimestampType: args.str('message-timestamp-type') as TimestampType,
      messageTimestampAfterMaxMs: timestampAfterMaxMs,
      messageTimestampBeforeMaxMs: timestampBeforeMaxMs,
      allowRemote: args.bool('allow-remote'),
      logger,
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE') throw configError(listenSetting, `${formatHostPort({ host, port })} is already in use; stop what listens there or pick another port`);
    if (e.syscall === 'listen' || e.syscall === 'bind' || e.code === 'EADDRNOTAVAIL') throw configError(listenSetting, `cannot listen on ${formatHostPort({ host, port })}: ${e.message}`);
    if (['EACCES', 'EPERM', 'EROFS', 'ENOENT', 'ENOTDIR', 'EEXIST', 'ENOSPC', 'EBUSY'].includes(e.code ?? '')) {
      throw configError('--data-dir (env NETTALLY_BROKER_DATA)', `cannot use ${dataDir}: ${e.message}`);
    }
    throw err;
  }
  logger.info({ address: broker.address, dataDir, fsync: args.str('fsync'), topics: broker.broker.listTopics().length }, 'broker ready');
  void processStatusReporter().report({ daemon: 'broker', phase: 'ready', address: broker.address });
  ctx.stdout.write(`broker listening on ${formatHostPort({ host, port: broker.port })} (advertised ${broker.address}), data dir ${dataDir}\n`);
  await new Promise<void>((res) => {
    if (ctx.signal.aborted) res();
    else ctx.signal.addEventListener('abort', () => res(), { once: true });
  });
  await broker.close();
  logger.info('broker stopped');
  return 0;
}

export const command: Command = { spec, run };

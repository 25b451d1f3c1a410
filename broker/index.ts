// Programmatic entry to the bundled broker: `startBroker(options)` for the CLI and for tests.
import { promises as dns } from 'dns';
import * as fs from 'fs';
import * as net from 'net';
import { configError } from '../lib/errors';
import { silentLogger, type Logger } from '../lib/log';
import { isLoopbackIp } from '../lib/net';
import { GROUP_SESSION_DEFAULTS } from './groups';
import type { FsyncPolicy } from './log';
import { Broker, type BrokerConfig, type TimestampType } from './server';

export type { FsyncPolicy } from './log';
export type { TimestampType } from './server';

export interface BrokerOptions {
  /** Data directory (created if missing). Required: the broker is durable by design. */
  dataDir: string;
  /** Listen host, default 127.0.0.1. */
  host?: string;
  /** Listen port, default 9092; 0 picks a free port (see the returned `port`). */
  port?: number;
  advertisedHost?: string;
  /** Partitions of auto-created topics (default 1). */
  defaultPartitions?: number;
  /** Time retention in ms per partition; -1 (default) keeps forever. */
  retentionMs?: number;
  /** Size retention in bytes per partition; -1 (default) unlimited. */
  retentionBytes?: number;
  /** Segment file size before rolling (default 64 MiB). */
  segmentBytes?: number;
  /** When appended data is fsynced: before each produce ack (default), on an interval, or never. */
  fsync?: FsyncPolicy;
  fsyncIntervalMs?: number;
  /** Largest request frame accepted; bigger ones close the connection (default 100 MiB, socket.request.max.bytes). */
  maxRequestBytes?: number;
  /** Largest record batch a produce may append (default 1048588, Kafka's message.max.bytes). */
  maxMessageBytes?: number;
  /** Cap on one fetch response (default 55 MiB, Kafka's broker-side fetch.max.bytes). */
  fetchMaxBytes?: number;
  /** Concurrent connections; more are closed at once (default 1000). */
  maxConnections?: number;
  /** Connections idle this long are closed (default 10 min, Kafka's connections.max.idle.ms). */
  connectionsMaxIdleMs?: number;
  groupMinSessionTimeoutMs?: number;
  groupMaxSessionTimeoutMs?: number;
  /** Partitions across all topics (default 5000). */
  maxPartitions?: number;
  /** Partitions of one topic (default 1000). */
  maxPartitionsPerTopic?: number;
  /** Topics created by Metadata requests (default 100). */
  maxAutoCreatedTopics?: number;
  /** Listen on a non-loopback address. The broker has no authentication: off by default. */
  allowRemote?: boolean;
  /** log.message.timestamp.type for topics without their own (default CreateTime, as Kafka). */
  messageTimestampType?: TimestampType;
  /** log.message.timestamp.after.max.ms (default 1 h, Kafka 4.0) / before.max.ms (default -1 = unlimited). */
  messageTimestampAfterMaxMs?: number;
  messageTimestampBeforeMaxMs?: number;
  autoCreateTopics?: boolean;
  /** How often retention runs (default 30 s). */
  retentionCheckMs?: number;
  logger?: Logger;
}

export interface RunningBroker {
  port: number;
  host: string;
  /** "host:port", ready for kafkajs `brokers`. */
  address: string;
  /** Runs retention now (tests); returns the number of segments deleted. */
  applyRetention(now?: number): number;
  /** Stops listening, drops connections, fsyncs (unless fsync=never) and closes files. */
  close(): Promise<void>;
  broker: Broker;
}

export const BROKER_DEFAULTS = {
  host: '127.0.0.1',
  port: 9092,
  defaultPartitions: 1,
  retentionMs: -1,
  retentionBytes: -1,
  segmentBytes: 64 * 1024 * 1024,
  fsync: 'always' as FsyncPolicy,
  fsyncIntervalMs: 1000,
  maxRequestBytes: 100 * 1024 * 1024,
  maxMessageBytes: 1_048_588,
  fetchMaxBytes: 55 * 1024 * 1024,
  maxConnections: 1000,
  connectionsMaxIdleMs: 600_000,
  groupMinSessionTimeoutMs: GROUP_SESSION_DEFAULTS.minSessionTimeoutMs,
  groupMaxSessionTimeoutMs: GROUP_SESSION_DEFAULTS.maxSessionTimeoutMs,
  maxPartitions: 5000,
  maxPartitionsPerTopic: 1000,
  maxAutoCreatedTopics: 100,
  messageTimestampType: 'CreateTime' as TimestampType,
  messageTimestampAfterMaxMs: 3_600_000,
  messageTimestampBeforeMaxMs: -1,
  retentionCheckMs: 30_000,
};

/**
 * The broker has no authentication: anyone who reaches it can produce, consume and commit. So it listens
 * only on loopback unless told otherwise; a host name counts as loopback only if every address it resolves
 * to is one (0.0.0.0 and :: are not).
 */
async function checkLoopback(host: string): Promise<void> {
  let addrs: string[];
  if (net.isIP(host)) addrs = [host];
  else {
    try {
      addrs = (await dns.lookup(host, { all: true })).map((a) => a.address);
    } catch {
      addrs = [];
    }
  }
  if (addrs.length === 0) throw configError('--listen (env NETTALLY_BROKER_LISTEN)', `cannot resolve ${host}; give an IP address such as 127.0.0.1`);
  const remote = addrs.filter((a) => !isLoopbackIp(a));
  if (remote.length === 0) return;
  throw configError(
    '--listen (env NETTALLY_BROKER_LISTEN)',
    `${host} is not a loopback address${net.isIP(host) ? '' : ` (it resolves to ${remote.join(', ')})`}; the bundled broker has NO authentication, so anyone who can reach it ` +
      'can produce, consume and commit offsets. Listen on 127.0.0.1, or pass --allow-remote (env NETTALLY_BROKER_ALLOW_REMOTE=true) ' +
      'if the network in front of it is trusted',
    { host },
  );
}

/** The soft RLIMIT_NOFILE of this process (Infinity when unknown or unlimited). */
function openFilesLimit(): number {
  try {
    const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    return soft && /^\d+$/.test(soft) ? Number(soft) : Infinity;
  } catch {
    return Infinity;
  }
}

/** Recovers the data directory and starts listening; resolves once clients can connect. */
export async function startBroker(options: BrokerOptions): Promise<RunningBroker> {
  const cfg: BrokerConfig = {
    host: options.host ?? BROKER_DEFAULTS.host,
    port: options.port ?? BROKER_DEFAULTS.port,
    dataDir: options.dataDir,
    advertisedHost: options.advertisedHost,
    defaultPartitions: options.defaultPartitions ?? BROKER_DEFAULTS.defaultPartitions,
    retentionMs: options.retentionMs ?? BROKER_DEFAULTS.retentionMs,
    retentionBytes: options.retentionBytes ?? BROKER_DEFAULTS.retentionBytes,
    segmentBytes: options.segmentBytes ?? BROKER_DEFAULTS.segmentBytes,
    fsync: options.fsync ?? BROKER_DEFAULTS.fsync,
    fsyncIntervalMs: options.fsyncIntervalMs ?? BROKER_DEFAULTS.fsyncIntervalMs,
    maxRequestBytes: options.maxRequestBytes ?? BROKER_DEFAULTS.maxRequestBytes,
    maxMessageBytes: options.maxMessageBytes ?? BROKER_DEFAULTS.maxMessageBytes,
    fetchMaxBytes: options.fetchMaxBytes ?? BROKER_DEFAULTS.fetchMaxBytes,
    maxConnections: options.maxConnections ?? BROKER_DEFAULTS.maxConnections,
    connectionsMaxIdleMs: options.connectionsMaxIdleMs ?? BROKER_DEFAULTS.connectionsMaxIdleMs,
    groupMinSessionTimeoutMs: options.groupMinSessionTimeoutMs ?? BROKER_DEFAULTS.groupMinSessionTimeoutMs,
    groupMaxSessionTimeoutMs: options.groupMaxSessionTimeoutMs ?? BROKER_DEFAULTS.groupMaxSessionTimeoutMs,
    maxPartitions: options.maxPartitions ?? BROKER_DEFAULTS.maxPartitions,
    maxPartitionsPerTopic: options.maxPartitionsPerTopic ?? BROKER_DEFAULTS.maxPartitionsPerTopic,
    maxAutoCreatedTopics: options.maxAutoCreatedTopics ?? BROKER_DEFAULTS.maxAutoCreatedTopics,
    messageTimestampType: options.messageTimestampType ?? BROKER_DEFAULTS.messageTimestampType,
    messageTimestampAfterMaxMs: options.messageTimestampAfterMaxMs ?? BROKER_DEFAULTS.messageTimestampAfterMaxMs,
    messageTimestampBeforeMaxMs: options.messageTimestampBeforeMaxMs ?? BROKER_DEFAULTS.messageTimestampBeforeMaxMs,
    autoCreateTopics: options.autoCreateTopics ?? true,
    retentionCheckMs: options.retentionCheckMs ?? BROKER_DEFAULTS.retentionCheckMs,
    logger: options.logger ?? silentLogger,
  };
  if (!options.allowRemote) await checkLoopback(cfg.host);
  if (cfg.defaultPartitions > cfg.maxPartitionsPerTopic) {
    throw configError('--partitions (env NETTALLY_BROKER_PARTITIONS)', `${cfg.defaultPartitions} exceeds --max-partitions-per-topic ${cfg.maxPartitionsPerTopic}`);
  }
  if (cfg.groupMinSessionTimeoutMs > cfg.groupMaxSessionTimeoutMs) {
    throw configError('--group-min-session-timeout', `${cfg.groupMinSessionTimeoutMs} ms is above --group-max-session-timeout ${cfg.groupMaxSessionTimeoutMs} ms`);
  }
  // Each partition keeps 2 descriptors open (active segment + index), each connection 1: warn when the caps
  // allow more than the process may open, since running out would fail appends and accepts broker-wide.
  const fdNeed = 2 * cfg.maxPartitions + cfg.maxConnections + 64;
  const fdLimit = openFilesLimit();
  if (fdNeed > fdLimit) {
    cfg.logger.warn({ fdNeed, fdLimit, maxPartitions: cfg.maxPartitions, maxConnections: cfg.maxConnections }, 'the open-files limit is below what --max-partitions and --max-connections allow; lower them or raise ulimit -n');
  }
  const broker = new Broker(cfg);
  try {
    await broker.start();
  } catch (err) {
    await broker.close().catch(() => undefined);
    throw err;
  }
  const host = cfg.advertisedHost ?? (cfg.host === '0.0.0.0' || cfg.host === '::' ? '127.0.0.1' : cfg.host);
  return {
    port: broker.listenPort,
    host,
    address: `${host.includes(':') ? `[${host}]` : host}:${broker.listenPort}`,
    applyRetention: (now?: number) => broker.applyRetention(now),
    close: () => broker.close(),
    broker,
  };
}

// Programmatic entry to the bundled broker: `startBroker(options)` for the CLI and for tests.
import { silentLogger, type Logger } from '../lib/log';
import type { FsyncPolicy } from './log';
import { Broker, type BrokerConfig } from './server';

export type { FsyncPolicy } from './log';

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
  /** Largest request frame accepted; bigger ones close the connection (default 100 MiB). */
  maxRequestBytes?: number;
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
  retentionCheckMs: 30_000,
};

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
    autoCreateTopics: options.autoCreateTopics ?? true,
    retentionCheckMs: options.retentionCheckMs ?? BROKER_DEFAULTS.retentionCheckMs,
    logger: options.logger ?? silentLogger,
  };
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

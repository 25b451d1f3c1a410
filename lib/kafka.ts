// Kafka connection settings shared by producer and consumer: brokers, TLS, SASL (secrets from env or files), and
// the factory that builds every kafkajs client from them.
import { readFileSync } from 'fs';
// First, before kafkajs loads: its per-send grouping of messages by partition in linear time (see the file).
import './kafkajs-grouping';
// No 1 ms timer per idle broker connection (see the file).
import './kafkajs-idle';
// Fetched record batches decoded in place, without two BigInt parses and a Decoder per record (see the file).
import './kafkajs-fetch';
// Produced records written straight into one Buffer per batch, without an Encoder and Buffers per record (see the file).
import './kafkajs-encode';
import { Kafka, logLevel, type KafkaConfig, type RetryOptions, type SASLOptions } from 'kafkajs';
import { parseHostPort, type OptionSpec, type ParsedArgs } from './args';
import { configError } from './errors';
import type { Logger } from './log';

const DEFAULT_TOPIC = 'nettally.records';
export const DEFAULT_DLQ_TOPIC = 'nettally.records.dlq';

/** Options every Kafka-speaking command accepts; spread into a CommandSpec's options. */
export const KAFKA_OPTIONS: readonly OptionSpec[] = [
  { name: 'brokers', type: 'list', env: 'KAFKA_BROKERS', default: ['127.0.0.1:9092'], help: 'Kafka bootstrap brokers, host:port[,host:port]' },
  { name: 'topic', type: 'string', env: 'KAFKA_TOPIC', default: DEFAULT_TOPIC, help: 'topic carrying nettally records' },
  { name: 'client-id', type: 'string', env: 'KAFKA_CLIENT_ID', default: 'nettally', help: 'Kafka client id' },
  { name: 'tls', type: 'bool', env: 'KAFKA_TLS', default: false, help: 'connect to Kafka with TLS' },
  { name: 'tls-ca', type: 'string', env: 'KAFKA_TLS_CA', help: 'PEM file of CA certificates to trust (implies --tls)' },
  { name: 'tls-cert', type: 'string', env: 'KAFKA_TLS_CERT', help: 'PEM client certificate for mutual TLS (implies --tls)' },
  { name: 'tls-key', type: 'string', env: 'KAFKA_TLS_KEY', help: 'PEM client private key for mutual TLS' },
  { name: 'tls-insecure', type: 'bool', env: 'KAFKA_TLS_INSECURE', default: false, help: 'do not verify the broker certificate (testing only)' },
  { name: 'sasl-mechanism', type: 'enum', env: 'KAFKA_SASL_MECHANISM', choices: ['none', 'plain', 'scram-sha-256', 'scram-sha-512'], default: 'none', help: 'SASL mechanism' },
  { name: 'sasl-username', type: 'string', env: 'KAFKA_SASL_USERNAME', help: 'SASL user name' },
  { name: 'sasl-password', type: 'string', env: 'KAFKA_SASL_PASSWORD', secret: true, help: 'SASL password' },
];

function readPem(setting: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw configError(setting, `cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Validated kafkajs client config from parsed options; never contains secrets in a loggable field name. */
export function kafkaConfigFrom(args: ParsedArgs): KafkaConfig {
  const brokers = args.list('brokers');
  if (brokers.length === 0) throw configError('--brokers (env KAFKA_BROKERS)', 'needs at least one host:port');
  // each one as every other address option is read (lib/args.ts); a client connects to it, so port 0 is refused
  for (const b of brokers) parseHostPort('--brokers (env KAFKA_BROKERS)', b, { example: '127.0.0.1:9092', minPort: 1 });
  const ca = args.optStr('tls-ca');
  const cert = args.optStr('tls-cert');
  const key = args.optStr('tls-key');
  if ((cert === undefined) !== (key === undefined)) {
    throw configError('--tls-cert/--tls-key (env KAFKA_TLS_CERT/KAFKA_TLS_KEY)', 'give both or neither');
  }
  const tlsOn = args.bool('tls') || ca !== undefined || cert !== undefined;
  const ssl = tlsOn
    ? {
        rejectUnauthorized: !args.bool('tls-insecure'),
        ...(ca ? { ca: [readPem('--tls-ca', ca)] } : {}),
        ...(cert && key ? { cert: readPem('--tls-cert', cert), key: readPem('--tls-key', key) } : {}),
      }
    : undefined;

  const mechanism = args.str('sasl-mechanism');
  let sasl: SASLOptions | undefined;
  if (mechanism !== 'none') {
    const username = args.optStr('sasl-username');
    const password = args.optStr('sasl-password');
    if (!username) throw configError('--sasl-username (env KAFKA_SASL_USERNAME)', `is required with --sasl-mechanism ${mechanism}`);
    if (password === undefined) {
      throw configError('--sasl-password (env KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE)', `is required with --sasl-mechanism ${mechanism}`);
    }
    sasl = { mechanism: mechanism as 'plain' | 'scram-sha-256' | 'scram-sha-512', username, password } as SASLOptions;
  }
  return { clientId: args.str('client-id'), brokers, ...(ssl ? { ssl } : {}), ...(sasl ? { sasl } : {}) };
}

/** How a client's kafkajs log lines reach our logger. */
export interface KafkaClientOptions {
  /** Where kafkajs logs (a child with component kafkajs lines); without one kafkajs logs nothing. */
  logger?: Logger;
  /**
   * 'debug': every kafkajs line at debug, for clients whose owner reports Kafka state itself (kafkajs repeats every
   * connection failure). 'level' (default): kafkajs errors as errors, warnings as warnings, the rest at debug.
   */
  levels?: 'debug' | 'level';
  /** kafkajs lines that are expected here (a refusal we handle) and go to debug whatever their level. */
  expected?: (message: string) => boolean;
  /** kafkajs's own retry of each request (below our retry loops). */
  retry?: RetryOptions;
  connectionTimeout?: number;
}

/**
 * The one place a kafkajs client is built: the configured --client-id for every role (quotas and ACLs keyed by
 * client id apply to all of a host's clients alike) and one mapping of kafkajs log levels onto pino.
 */
export function createKafkaClient(config: KafkaConfig, opts: KafkaClientOptions = {}): Kafka {
  const { logger, expected } = opts;
  return new Kafka({
    ...config,
    clientId: config.clientId ?? 'nettally',
    logLevel: logger ? logLevel.WARN : logLevel.NOTHING,
    ...(logger
      ? {
          logCreator: () => ({ namespace, level, log }) => {
            const { message, ...rest } = log;
            const text = String(message);
            const l = opts.levels === 'debug' || expected?.(text) ? 'debug' : level <= logLevel.ERROR ? 'error' : level === logLevel.WARN ? 'warn' : 'debug';
            // (not `level`: that key would overwrite pino's own level in the JSON line)
            logger[l]({ kafkajs: namespace, kafkajs_level: level, ...rest }, text);
          },
        }
      : {}),
    ...(opts.retry ? { retry: opts.retry } : {}),
    ...(opts.connectionTimeout !== undefined ? { connectionTimeout: opts.connectionTimeout } : {}),
  });
}

// Metadata and administration: ApiVersions, Metadata, CreateTopics, DescribeConfigs, InitProducerId.
// Each handler is a function of the Broker (broker/server.ts), which dispatches requests to it.
import { ErrorCode, Reader, SUPPORTED_VERSIONS, Writer, validTopicName } from '../protocol';
import type { Broker } from '../server';
import {
  CLUSTER_ID,
  NODE_ID,
  NO_AUTHORIZED_OPS,
  TOPIC_CONFIG_NAMES,
  type Topic,
  type TopicConfig,
  endOfRequest,
  showBound,
  timestampBound,
} from './common';

export function apiVersionsBody(v: number, error: number): Buffer {
  const w = new Writer(256).int16(error);
  w.array([...SUPPORTED_VERSIONS], (w2, [key, [min, max]]) => w2.int16(key).int16(min).int16(max));
  if (v >= 1) w.int32(0);
  return w.toBuffer();
}

export function metadata(broker: Broker, v: number, r: Reader): Buffer {
  const requested = v === 0 ? r.array((x) => x.string()) : r.nullableArray((x) => x.string());
  const allowAuto = v >= 4 ? r.bool() : true;
  if (v >= 8) {
    r.bool();
    r.bool();
  }
  endOfRequest(r);
  const all = requested === null || (v === 0 && requested.length === 0);
  const names = all ? [...broker.topics.keys()] : (requested as string[]);
  const w = new Writer(512);
  if (v >= 3) w.int32(0);
  w.array([0], (w2) => {
    w2.int32(NODE_ID).string(broker.advertisedHost).int32(broker.port);
    if (v >= 1) w2.string(null);
  });
  if (v >= 2) w.string(CLUSTER_ID);
  if (v >= 1) w.int32(NODE_ID);
  w.array(names, (w2, name) => {
    let t = broker.topics.get(name);
    let error: number = ErrorCode.NONE;
    if (!t) {
      if (!validTopicName(name)) error = ErrorCode.INVALID_TOPIC_EXCEPTION;
      else if (allowAuto && broker.cfg.autoCreateTopics) {
        const refusal = broker.topicRefusal(broker.cfg.defaultPartitions, true);
        if (refusal) {
          // Metadata has no error message: the log says why (kafkajs/librdkafka show "policy violation").
          broker.counters.refusedTopics++;
          broker.log.warn({ topic: name, reason: refusal.message }, 'refused to auto-create topic');
          error = refusal.error;
        } else {
          try {
            t = broker.createTopic(name, broker.cfg.defaultPartitions, { autoCreated: true });
          } catch (err) {
            broker.log.error({ err, topic: name }, 'auto-create failed');
            error = ErrorCode.UNKNOWN_SERVER_ERROR;
          }
        }
      }
      else error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
    }
    w2.int16(error).string(name);
    if (v >= 1) w2.bool(false);
    w2.array(t ? t.partitions.map((_, i) => i) : [], (w3, p) => {
      w3.int16(ErrorCode.NONE).int32(p).int32(NODE_ID);
      if (v >= 7) w3.int32(0);
      w3.array([NODE_ID], (w4, n) => w4.int32(n));
      w3.array([NODE_ID], (w4, n) => w4.int32(n));
      if (v >= 5) w3.array([], () => undefined);
    });
    if (v >= 8) w2.int32(NO_AUTHORIZED_OPS);
  });
  if (v >= 8) w.int32(NO_AUTHORIZED_OPS);
  return w.toBuffer();
}

export function createTopics(broker: Broker, v: number, r: Reader): Buffer {
  const topics = r.array((x) => ({
    name: x.string(),
    partitions: x.int32(),
    replication: x.int16(),
    assignments: x.array((y) => ({ index: y.int32(), brokers: y.array((z) => z.int32()) })),
    configs: x.array((y) => ({ name: y.string(), value: y.nullableString() })),
  }));
  r.int32(); // timeout_ms
  const validateOnly = v >= 1 ? r.bool() : false;
  endOfRequest(r);
  const w = new Writer(128);
  if (v >= 2) w.int32(0);
  w.array(topics, (w2, t) => {
    let error: number = ErrorCode.NONE;
    let message: string | null = null;
    let refusal: { error: number; message: string } | null;
    const partitions = t.partitions === -1 ? (t.assignments.length || broker.cfg.defaultPartitions) : t.partitions;
    const config: Partial<TopicConfig> = {};
    for (const c of t.configs) {
      const n = c.value === null ? NaN : Number(c.value);
      if (c.name === 'retention.ms' && Number.isInteger(n)) config.retentionMs = n;
      else if (c.name === 'retention.bytes' && Number.isInteger(n)) config.retentionBytes = n;
      else if (c.name === 'segment.bytes' && Number.isInteger(n) && n >= 1024) config.segmentBytes = n;
      else if (c.name === 'max.message.bytes' && Number.isInteger(n) && n >= 0 && n <= 2 ** 31 - 1) config.maxMessageBytes = n;
      else if (c.name === 'cleanup.policy' && c.value === 'delete') continue;
      else if (c.name === 'message.timestamp.type' && (c.value === 'CreateTime' || c.value === 'LogAppendTime')) config.timestampType = c.value;
      else if (c.name === 'message.timestamp.after.max.ms' && c.value !== null && /^\d{1,19}$/.test(c.value)) config.timestampAfterMaxMs = timestampBound(c.value);
      else if (c.name === 'message.timestamp.before.max.ms' && c.value !== null && /^\d{1,19}$/.test(c.value)) config.timestampBeforeMaxMs = timestampBound(c.value);
      else if (TOPIC_CONFIG_NAMES.includes(c.name)) {
        error = ErrorCode.INVALID_CONFIG;
        message = `unsupported value ${JSON.stringify(c.value)} for ${c.name}${c.name === 'message.timestamp.type' ? ' (CreateTime or LogAppendTime)' : c.name.startsWith('message.timestamp.') ? ' (milliseconds, 0..9223372036854775807)' : ''}`;
      }
      // Other topic configs (min.insync.replicas, compression.type, ...) do not apply to one node: ignored.
    }
    if (error !== ErrorCode.NONE) {
      // keep the config error
    } else if (!validTopicName(t.name)) {
      error = ErrorCode.INVALID_TOPIC_EXCEPTION;
      message = 'topic names are 1-249 characters of [a-zA-Z0-9._-]';
    } else if (broker.topics.has(t.name)) {
      error = ErrorCode.TOPIC_ALREADY_EXISTS;
      message = `topic ${t.name} already exists`;
    } else if (t.replication !== -1 && t.replication !== 1) {
      error = ErrorCode.INVALID_REPLICATION_FACTOR;
      message = `this single-node broker only supports replication factor 1, got ${t.replication}`;
    } else if ((refusal = broker.topicRefusal(partitions, false))) {
      ({ error, message } = refusal);
      broker.counters.refusedTopics++;
      broker.log.warn({ topic: t.name, partitions, reason: message }, 'refused to create topic');
    } else if (!validateOnly) {
      try {
        broker.createTopic(t.name, partitions, config);
      } catch (err) {
        broker.log.error({ err, topic: t.name }, 'create topic failed');
        error = ErrorCode.UNKNOWN_SERVER_ERROR;
        message = `cannot create ${t.name}: ${(err as Error).message}`;
      }
    }
    w2.string(t.name).int16(error);
    if (v >= 1) w2.string(message);
  });
  return w.toBuffer();
}

/** The topic-level settings of a topic: value, and whether the topic overrides the broker's. */
function topicConfigs(broker: Broker, t: Topic): [string, string, boolean][] {
  const c = t.config;
  const entry = (name: string, own: number | string | null | undefined, broker: number | string, show: (v: number | string) => string = String): [string, string, boolean] => [
    name,
    show(own ?? broker),
    own !== null && own !== undefined,
  ];
  return [
    ['cleanup.policy', 'delete', false],
    entry('max.message.bytes', c.maxMessageBytes, broker.cfg.maxMessageBytes),
    entry('message.timestamp.after.max.ms', c.timestampAfterMaxMs, broker.cfg.messageTimestampAfterMaxMs, showBound),
    entry('message.timestamp.before.max.ms', c.timestampBeforeMaxMs, broker.cfg.messageTimestampBeforeMaxMs, showBound),
    entry('message.timestamp.type', c.timestampType, broker.cfg.messageTimestampType),
    entry('retention.bytes', c.retentionBytes, broker.cfg.retentionBytes),
    entry('retention.ms', c.retentionMs, broker.cfg.retentionMs),
    entry('segment.bytes', c.segmentBytes, broker.cfg.segmentBytes),
  ];
}

/** The broker's settings under their Kafka names (what the flags set). */
function brokerConfigs(broker: Broker): [string, string, boolean][] {
  const c = broker.cfg;
  return (
    [
      ['auto.create.topics.enable', c.autoCreateTopics],
      ['connections.max.idle.ms', c.connectionsMaxIdleMs],
      ['fetch.max.bytes', c.fetchMaxBytes],
      ['group.max.session.timeout.ms', c.groupMaxSessionTimeoutMs],
      ['group.min.session.timeout.ms', c.groupMinSessionTimeoutMs],
      ['log.message.timestamp.after.max.ms', showBound(c.messageTimestampAfterMaxMs)],
      ['log.message.timestamp.before.max.ms', showBound(c.messageTimestampBeforeMaxMs)],
      ['log.message.timestamp.type', c.messageTimestampType],
      ['log.retention.bytes', c.retentionBytes],
      ['log.retention.ms', c.retentionMs],
      ['log.segment.bytes', c.segmentBytes],
      ['max.connections', c.maxConnections],
      ['message.max.bytes', c.maxMessageBytes],
      ['num.partitions', c.defaultPartitions],
      ['socket.request.max.bytes', c.maxRequestBytes],
    ] as [string, number | boolean | string][]
  ).map(([k, val]) => [k, String(val), false]);
}

/**
 * DescribeConfigs v0–2 for topics (their max.message.bytes, retention, segment size; "dynamic topic config"
 * when set at creation) and for this broker (id 0: the enforced limits under Kafka's names). Read only.
 */
export function describeConfigs(broker: Broker, v: number, r: Reader): Buffer {
  const TOPIC = 2;
  const BROKER = 4;
  const SOURCE_TOPIC = 1;
  const SOURCE_STATIC_BROKER = 4;
  const resources = r.array((x) => ({ type: x.int8(), name: x.string(), names: x.nullableArray((y) => y.string()) }));
  if (v >= 1) r.bool(); // include_synonyms: there are none to report
  endOfRequest(r);
  const w = new Writer(512).int32(0);
  w.array(resources, (w2, res) => {
    let error: number = ErrorCode.NONE;
    let message: string | null = null;
    let entries: [string, string, boolean][] = [];
    if (res.type === TOPIC) {
      const t = broker.topics.get(res.name);
      if (t) entries = topicConfigs(broker, t);
      else [error, message] = [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, `topic ${res.name} does not exist`];
    } else if (res.type === BROKER && (res.name === String(NODE_ID) || res.name === '')) {
      entries = brokerConfigs(broker);
    } else {
      [error, message] = [ErrorCode.INVALID_REQUEST, `resource type ${res.type} ${JSON.stringify(res.name)} is not described by this broker (topics, and broker ${NODE_ID})`];
    }
    if (res.names !== null) entries = entries.filter(([name]) => (res.names as string[]).includes(name));
    w2.int16(error).string(message).int8(res.type).string(res.name);
    w2.array(entries, (w3, [name, value, own]) => {
      w3.string(name).string(value).bool(true);
      if (v === 0) w3.bool(!own);
      else w3.int8(own ? SOURCE_TOPIC : SOURCE_STATIC_BROKER);
      w3.bool(false);
      if (v >= 1) w3.array([], () => undefined);
    });
  });
  return w.toBuffer();
}

export function initProducerId(broker: Broker, _v: number, r: Reader): Buffer {
  const transactionalId = r.nullableString();
  r.int32();
  endOfRequest(r);
  const w = new Writer(32).int32(0);
  // Transactions are out of scope; idempotence (a producer id and sequence numbers) is supported.
  if (transactionalId !== null) return w.int16(ErrorCode.INVALID_REQUEST).int64(-1).int16(-1).toBuffer();
  return w.int16(ErrorCode.NONE).int64(broker.nextProducerId++).int16(0).toBuffer();
}

// What a failed kafkajs send means for the producer: a batch too large (split it), a condition only an operator can
// fix (authorization, missing topic, bad config: error state, loud), or a transient one (broker down: retry).

/** The producer's view of Kafka: not tried yet, acknowledging, failing transiently, or refusing until someone acts. */
export type KafkaState = 'connecting' | 'ok' | 'retrying' | 'error';

/**
 * Kafka error types (kafkajs KafkaJSProtocolError.type) that do not go away by retrying: an operator must grant an
 * ACL, create the topic, or fix a setting. UNKNOWN_TOPIC_OR_PARTITION is retriable in Kafka's table (a topic being
 * created), but a topic that stays unknown through kafkajs' own retries is missing and auto-creation is off.
 */
const NEEDS_OPERATOR = new Set([
  'TOPIC_AUTHORIZATION_FAILED', 'CLUSTER_AUTHORIZATION_FAILED', 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED', 'GROUP_AUTHORIZATION_FAILED',
  'UNKNOWN_TOPIC_OR_PARTITION', 'INVALID_TOPIC_EXCEPTION', 'INVALID_CONFIG', 'INVALID_REQUIRED_ACKS', 'POLICY_VIOLATION',
  'SASL_AUTHENTICATION_FAILED', 'ILLEGAL_SASL_STATE', 'UNSUPPORTED_SASL_MECHANISM', 'UNSUPPORTED_VERSION',
  'UNSUPPORTED_FOR_MESSAGE_FORMAT', 'INVALID_RECORD', 'RECORD_LIST_TOO_LARGE', 'UNSUPPORTED_COMPRESSION_TYPE',
]);

export interface KafkaFailure {
  /** Kafka's error type (e.g. TOPIC_AUTHORIZATION_FAILED), a kafkajs error name, or a socket/TLS error code. */
  code: string;
  kind: 'too-large' | 'needs-operator' | 'transient';
  message: string;
}

interface ErrorLike {
  name?: unknown;
  type?: unknown;
  code?: unknown;
  retriable?: unknown;
  message?: unknown;
  cause?: unknown;
  originalError?: unknown;
  errors?: unknown;
}

/** Every error in a kafkajs error's chain (cause, originalError, aggregated errors), outermost first. */
function chain(err: unknown): ErrorLike[] {
  const out: ErrorLike[] = [];
  const todo: unknown[] = [err];
  while (todo.length > 0 && out.length < 32) {
    const e = todo.shift();
    if (typeof e !== 'object' || e === null || out.includes(e as ErrorLike)) continue;
    const x = e as ErrorLike;
    out.push(x);
    todo.push(x.cause, x.originalError, ...(Array.isArray(x.errors) ? x.errors : []));
  }
  return out;
}

/** Classifies a failed send (see KafkaFailure). */
export function classifyKafkaError(err: unknown): KafkaFailure {
  const all = chain(err);
  const message = all.map((e) => (typeof e.message === 'string' ? e.message : '')).find((m) => m !== '') ?? String(err);
  const typed = all.find((e) => typeof e.type === 'string' && e.name === 'KafkaJSProtocolError');
  if (typed) {
    const code = typed.type as string;
    if (code === 'MESSAGE_TOO_LARGE') return { code, kind: 'too-large', message };
    if (NEEDS_OPERATOR.has(code) || typed.retriable === false) return { code, kind: 'needs-operator', message };
    return { code, kind: 'transient', message };
  }
  if (all.some((e) => e.name === 'KafkaJSSASLAuthenticationError')) return { code: 'SASL_AUTHENTICATION_FAILED', kind: 'needs-operator', message };
  // The broker lacks a request kafkajs needs: SASL asked of a broker without SASL, or a Kafka older than 0.11.
  if (all.some((e) => e.name === 'KafkaJSServerDoesNotSupportApiKey')) return { code: 'UNSUPPORTED_API', kind: 'needs-operator', message };
  // TLS: a certificate the client does not trust (or a key that does not match) fails the same way every time.
  const tls = all.find((e) => typeof e.code === 'string' && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_SSL|ERR_TLS/.test(e.code));
  if (tls) return { code: `TLS_${tls.code as string}`, kind: 'needs-operator', message };
  const named = all.find((e) => typeof e.code === 'string') ?? all.find((e) => typeof e.name === 'string');
  const code = named ? String(named.code ?? named.name) : 'UNKNOWN';
  return { code, kind: 'transient', message };
}

/** What an operator does about a Kafka error that does not go away by itself. */
export function hintFor(code: string, topic: string): string {
  if (code === 'TOPIC_AUTHORIZATION_FAILED') return `grant this client's principal Write (and Describe) on topic ${topic}`;
  if (code === 'CLUSTER_AUTHORIZATION_FAILED') return "grant this client's principal IdempotentWrite on the cluster, or run without --idempotent";
  if (code === 'UNKNOWN_TOPIC_OR_PARTITION') return `topic ${topic} does not exist and the broker does not create it: create it (kafka-topics.sh --create --topic ${topic}) or enable auto.create.topics.enable`;
  if (code.startsWith('SASL') || code === 'ILLEGAL_SASL_STATE') return 'check --sasl-mechanism, --sasl-username and the password (KAFKA_SASL_PASSWORD_FILE)';
  if (code.startsWith('TLS_')) return 'check --tls-ca / --tls-cert / --tls-key against the broker certificate';
  if (code === 'INVALID_TIMESTAMP') {
    return `the broker refuses this host's record timestamps: its clock is off by more than topic ${topic}'s message.timestamp.after.max.ms / before.max.ms (Kafka 4.0: 1 h ahead); fix the clock (NTP), or set message.timestamp.type=LogAppendTime on the topic; records wait in the spool meanwhile`;
  }
  if (code === 'UNSUPPORTED_API') return 'the broker does not support a request this client needs: --sasl-mechanism against a listener without SASL, or a Kafka older than 0.11';
  return 'check the broker log and the topic/broker configuration';
}

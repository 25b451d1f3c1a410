// What the consumer sends to its dead-letter topics: poison records (as read, with why) and points InfluxDB refused
// (the line protocol as sent, with why), cut into produce requests the broker takes.
import type { IHeaders, KafkaMessage, Message } from 'kafkajs';
import type { RejectedPoint } from './influx';

/** Bytes of dead letters per produce request: well below Kafka's default message.max.bytes (1 MiB). */
const DEAD_LETTER_REQUEST_BYTES = 256 * 1024;
/** A dead point's value is cut to this many characters (the header says from how many). */
const MAX_DEAD_POINT_CHARS = 64 * 1024;

/** Consecutive runs of `messages` of at most DEAD_LETTER_REQUEST_BYTES each (about; a larger one alone). */
export function deadLetterRequests(messages: readonly Message[]): Message[][] {
  const size = (m: Message): number => 100 + (m.key?.length ?? 0) + (m.value?.length ?? 0) + Object.entries(m.headers ?? {}).reduce((n, [k, v]) => n + k.length + String(v ?? '').length, 0);
  const requests: Message[][] = [];
  for (let i = 0; i < messages.length;) {
    let bytes = size(messages[i]);
    let j = i + 1;
    while (j < messages.length && bytes + size(messages[j]) <= DEAD_LETTER_REQUEST_BYTES) bytes += size(messages[j++]);
    requests.push(messages.slice(i, j));
    i = j;
  }
  return requests;
}

/** A record that cannot be decoded or aggregated, as read from `topic`/`partition`, with why. */
export function recordDeadLetter(d: { message: KafkaMessage; reason: string; error: string }, topic: string, partition: number): Message {
  return {
    key: d.message.key,
    value: d.message.value,
    headers: {
      ...(d.message.headers as IHeaders | undefined),
      'nettally-dlq-reason': d.reason,
      'nettally-dlq-error': d.error.slice(0, 500),
      'nettally-source-topic': topic,
      'nettally-source-partition': String(partition),
      'nettally-source-offset': d.message.offset,
    },
  };
}

/** A point InfluxDB refused, from records of `topic`/`partition`. */
export function pointDeadLetter(r: RejectedPoint, topic: string, partition: number): Message {
  // the line as sent (replayable with curl once the cause is fixed); the point itself as JSON when unencodable
  const value = r.line !== '' ? r.line : JSON.stringify(r.point);
  // a refused line can be huge (a 1 MB host name); the broker must still take it
  const truncated = value.length > MAX_DEAD_POINT_CHARS;
  return {
    key: r.point.tags.host_id ?? null,
    value: truncated ? value.slice(0, MAX_DEAD_POINT_CHARS) : value,
    headers: {
      'nettally-dlq-reason': r.reason,
      'nettally-dlq-error': r.error.slice(0, 500),
      'nettally-influx-status': String(r.status ?? ''),
      'nettally-measurement': r.point.measurement,
      'nettally-window': new Date(r.point.time_ms).toISOString(),
      'nettally-source-topic': topic,
      'nettally-source-partition': String(partition),
      ...(truncated ? { 'nettally-dlq-truncated-from': String(value.length) } : {}),
    },
  };
}

// What the broker's handlers and the broker itself share: topic records, limits and small parsing helpers.
import { PartitionLog } from '../log';
import { ProtocolError, Reader } from '../protocol';
import type { TimestampType } from '../server';

/** How Kafka writes "unlimited" for the timestamp bounds (Long.MAX_VALUE). */
const KAFKA_UNLIMITED = '9223372036854775807';

/** Largest decompressed gzip record set the timestamp check inflates; larger ones are judged by their header. */
export const MAX_INFLATED_BYTES = 64 << 20;

export interface TopicConfig {
  partitions: number;
  retentionMs: number | null;
  retentionBytes: number | null;
  segmentBytes: number | null;
  /** Topic-level max.message.bytes (null: the broker's --max-message-bytes). Absent in older topic.json. */
  maxMessageBytes?: number | null;
  /** Created by a Metadata request (counts against --max-auto-created-topics). Absent in older topic.json. */
  autoCreated?: boolean;
  /** Topic-level message.timestamp.type / .after.max.ms / .before.max.ms (null or absent: the broker's; -1 unlimited). */
  timestampType?: TimestampType | null;
  timestampAfterMaxMs?: number | null;
  timestampBeforeMaxMs?: number | null;
}

export interface Topic {
  name: string;
  config: TopicConfig;
  partitions: PartitionLog[];
}

export const NODE_ID = 0;

export const CLUSTER_ID = 'nettally-bundled-broker';

export const NO_AUTHORIZED_OPS = -2147483648;

/** Topic configs CreateTopics understands: a bad value for one is INVALID_CONFIG (others are ignored). */
export const TOPIC_CONFIG_NAMES = [
  'retention.ms',
  'retention.bytes',
  'segment.bytes',
  'max.message.bytes',
  'cleanup.policy',
  'message.timestamp.type',
  'message.timestamp.after.max.ms',
  'message.timestamp.before.max.ms',
];

/** A timestamp bound as Kafka writes it (decimal ms, Long.MAX_VALUE = unlimited) to ours (-1 = unlimited). */
export function timestampBound(text: string): number {
  const n = Number(text);
  return n > Number.MAX_SAFE_INTEGER ? -1 : n;
}

/** Ours back to Kafka's spelling, for DescribeConfigs. */
export function showBound(ms: number | string): string {
  return ms === -1 ? KAFKA_UNLIMITED : String(ms);
}

/** Every handler calls this once its request is parsed, before acting on it: leftovers mean a garbled request. */
export function endOfRequest(r: Reader): void {
  if (r.remaining !== 0) throw new ProtocolError(`${r.remaining} unexpected trailing bytes`);
}

export interface Waiter {
  keys: Set<PartitionLog>;
  wake: () => void;
}

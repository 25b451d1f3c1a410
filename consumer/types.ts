// The consumer's public contract: its settings and the counters it reports.
import type { KafkaConfig } from 'kafkajs';
import type { AggregatorOptions } from './agg-options';
import type { InfluxConfig } from './influx';

export interface RollupConsumerConfig {
  kafka: KafkaConfig;
  topic: string;
  group: string;
  stateTopic: string;
  dlqTopic: string;
  /** Dead-letter topic for points InfluxDB refuses (field type conflict, too large, …). */
  pointsDlqTopic: string;
  aggregation: Omit<AggregatorOptions, 'partition'>;
  influx: InfluxConfig;
  /** How often dirty windows are written and the state snapshotted + committed. */
  flushIntervalMs: number;
  /**
   * Changed open windows are written as previews (final=false) at most this often, and only while the partition is
   * caught up; final windows are written once, when final, whatever this says (consumer/README.md).
   */
  previewIntervalMs: number;
  /** kafkajs partitionsConsumedConcurrently: partitions whose batches are processed at the same time. */
  partitionsConcurrently: number;
  /**
   * Largest fetch response kafkajs asks the broker for (all partitions), and its share per partition (at least
   * 64 KiB): what the member buffers of records not processed yet (kafkajs's defaults, 10 MiB / 1 MiB per
   * partition, keep several MiB of decoded messages alive per fetch at 4 partitions).
   */
  fetchMaxBytes: number;
  retryInitialMs: number;
  retryMaxMs: number;
  sessionTimeoutMs: number;
  /** Create the InfluxDB database at start (1.x CREATE DATABASE). */
  createDatabase: boolean;
}

export interface ConsumerStats {
  records: number;
  duplicates: number;
  too_late: number;
  dlq: number;
  /** Points InfluxDB refused, sent to the points dead-letter topic. */
  points_dlq: number;
  points_written: number;
  flushes: number;
  /** Sum over assigned partitions of high watermark − next offset, as of each partition's last batch. */
  lag: number;
  partitions: number[];
  last_window_ms: number | undefined;
  influx_down_since: number | undefined;
  /** Retention gaps found by this process: records deleted before they were read (see consumer/README.md). */
  retention_gaps: number;
  /** Offsets lost in those gaps. */
  retention_gap_records: number;
  /** State snapshot links this process stored (full and delta), the deltas among them, and their gzip'd bytes. */
  state_saves: number;
  state_deltas: number;
  state_bytes: number;
}

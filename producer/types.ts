// The producer's public contract: its settings, the status it reports, its events and its interface.
import type { KafkaConfig } from 'kafkajs';
import type { Logger } from '../lib/log';
import type { Capture, CaptureOptions, KernelStats } from './capture';
import type { HostIdentity } from './host';
import type { KafkaState } from './kafka-errors';
import type { FsyncPolicy } from './spool';

export interface ProducerConfig {
  /** Holds the epoch file and the spool (spool/ under it). */
  stateDir: string;
  kafka: KafkaConfig;
  topic: string;
  /** bpffs directory for pinned maps; undefined = no pins (counters restart with the process). */
  pinDir?: string;
  spoolMaxBytes: number;
  fsync: FsyncPolicy;
  batchMaxRecords: number;
  /** Spool bytes per batch (about); at most maxMessageBytes. */
  batchMaxBytes: number;
  /**
   * The broker's limit on one record batch (Kafka's message.max.bytes / the topic's max.message.bytes, default
   * 1048588): every batch is cut so that the record batch kafkajs builds from it, header included, stays within it.
   */
  maxMessageBytes?: number;
  /** Longest a record waits for a fuller batch (kafkajs has no linger). */
  batchMaxMs: number;
  flushIntervalMs: number;
  flushThresholdBytes: number;
  ifaceIntervalMs: number;
  ringBufferBytes?: number;
  /** Kernel connection map size (capture default when absent). */
  maxConnections?: number;
  compression: 'gzip' | 'none';
  /** Kafka idempotent producer (one awaited batch at a time either way). */
  idempotent: boolean;
  /** How long stop() keeps sending before leaving the rest in the spool. */
  shutdownTimeoutMs: number;
  /** Emit a 'status' event (and log line) this often; 0 = never. */
  statusIntervalMs: number;
  /** Opens the kernel capture; defaults to producer/capture's openCapture (tests and benches may supply another source). */
  openCapture?: (options: CaptureOptions, logger: Logger) => Promise<Capture>;
  /** Workload rule file (cgroup/netns globs → names); see producer/README.md "Workloads". */
  workloadRules?: string;
  /** Distinct workload names before new ones become "other" (default 1000). */
  maxWorkloads?: number;
  /** Where the runtimes' state (/run/netns, /var/lib/kubelet, /run/containerd, /var/lib/docker, …) is read; default "/". */
  workloadStateRoot?: string;
  /** Host identity override (defaults to /etc/machine-id, boot id, hostname). */
  host?: HostIdentity;
}

export interface ProducerStatus {
  host_id: string;
  epoch: number;
  /** Last seq assigned in this epoch. */
  seq: number;
  /** Kernel records received from the capture (snapshot included). */
  records_in: number;
  /** Records appended to the spool. */
  records_spooled: number;
  /** Kernel records skipped because they did not fit their schema (a bug; logged). */
  records_invalid: number;
  /** Records Kafka acknowledged. */
  records_out: number;
  batches_out: number;
  spool_records: number;
  spool_bytes: number;
  spool_max_bytes: number;
  /** The spool is full: the capture is not drained (the kernel keeps counting; bytes are delayed, not lost). */
  spool_full: boolean;
  spool_full_events: number;
  kafka_ok: boolean;
  /**
   * connecting: nothing sent yet; ok: the last send was acknowledged; retrying: a transient failure (broker down,
   * leader moving), retried with backoff; error: Kafka refuses until an operator acts (authorization, missing topic,
   * invalid config, SASL/TLS): retried with backoff and logged on every attempt. The spool keeps everything meanwhile.
   */
  kafka_state: KafkaState;
  kafka_errors: number;
  kafka_last_error: string | null;
  /** Kafka error type of the current retrying/error state (e.g. TOPIC_AUTHORIZATION_FAILED), null when ok. */
  kafka_error_code: string | null;
  /** ISO time the current retrying/error state began, null when ok. */
  kafka_error_since: string | null;
  /** Batches the broker refused as too large (MESSAGE_TOO_LARGE) and that were split and resent. */
  batches_split: number;
  /** Largest record batch (bytes, header included) the sender builds now: maxMessageBytes, lower once a broker refused one. */
  max_batch_bytes: number;
  /** Records Kafka can never take (too large alone): kept in <state-dir>/dead-letter.jsonl, never sent. */
  records_dead_lettered: number;
  /** Send latency (sendBatch → ack) of the last batch and the max since the previous status, ms. */
  send_latency_ms_last: number;
  send_latency_ms_max: number;
  send_latency_ms_avg: number;
  /** Distinct workload names given out since start (host and other not counted). */
  workloads: number;
  /** Records billed to "other" because more than maxWorkloads distinct names were seen. */
  workloads_overflow: number;
  /** Times the workload rule file was re-read (changed, or SIGHUP); failures in workload_rules_errors (old rules stay). */
  workload_rules_reloads: number;
  workload_rules_errors: number;
  kernel: KernelStats | null;
}

export interface ProducerEvents {
  status: [ProducerStatus];
  sent: [{ records: number; bytes: number; latencyMs: number }];
  'spool-full': [{ spool_bytes: number }];
  'spool-resumed': [{ spool_bytes: number }];
  'kafka-error': [Error];
  'kafka-ok': [];
  /** The pipeline cannot go on (spool I/O error, capture gone): call stop() and exit non-zero. */
  fatal: [Error];
}

export interface NettallyProducer {
  on<E extends keyof ProducerEvents>(event: E, listener: (...args: ProducerEvents[E]) => void): this;
  off<E extends keyof ProducerEvents>(event: E, listener: (...args: ProducerEvents[E]) => void): this;
  /** Opens state, spool and capture; replays the spool, snapshots the kernel, then streams live records. */
  start(): Promise<void>;
  /** Final snapshot, releases the capture (pins stay), sends what it can within shutdownTimeoutMs, closes. */
  stop(): Promise<void>;
  status(): ProducerStatus;
  /** Re-reads the workload rule file (SIGHUP); a bad file is logged and the rules in force stay. */
  reloadWorkloadRules(): void;
  /** Resolves once the spool is empty (everything so far acknowledged by Kafka). */
  drained(timeoutMs?: number): Promise<boolean>;
}

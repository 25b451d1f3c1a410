// The producer daemon's core: capture → wire record (host, epoch, seq, enrichment) → Avro → durable spool →
// Kafka (sendBatch, acks=-1, batched by size and time). Nothing leaves the spool before Kafka acknowledged it.
// This file is the lifecycle (start, stop, status); producer/ingest.ts turns kernel records into spooled ones,
// producer/sender.ts sends the spool to Kafka; producer/types.ts is the public contract.
import { join } from 'path';
import { createKafkaClient } from '../lib/kafka';
import { samePartitionPerKey } from './kafka-batch';
import { NettallyError } from '../lib/errors';
import { ensurePrivateDir } from '../lib/private-files';
import type { Logger } from '../lib/log';
import type { Capture, CaptureOptions, KernelStats } from './capture';
import { BootClock, ProcessEnricher, readHostIdentity } from './host';
import { CAPTURE_QUEUE_RECORDS, IngestStage } from './ingest';
import { claimEpoch, Sequencer } from './sequence';
import { KAFKA_DEFAULT_MAX_MESSAGE_BYTES } from './kafka-batch';
import { Spool } from './spool';
import { WORKLOAD_DEFAULTS, WorkloadResolver } from './workload';
import type { NettallyProducer, ProducerConfig, ProducerStatus } from './types';

export type { NettallyProducer, ProducerConfig, ProducerEvents, ProducerStatus } from './types';

class Producer extends IngestStage implements NettallyProducer {
  private epoch = 0;
  private seq!: Sequencer;
  private clock!: BootClock;
  /** The capture's own CLOCK_BOOTTIME → Unix conversion (exact, from the addon) when the kernel capture is used. */
  private kernelClock?: (ts: number) => bigint;
  private readonly enricher = new ProcessEnricher();
  private captureLoop?: Promise<void>;
  private senderLoop?: Promise<void>;
  private statusTimer?: NodeJS.Timeout;
  private workloadTimer?: NodeJS.Timeout;
  /** Built by createProducer, so a bad rule file fails before anything starts. */
  workloads!: WorkloadResolver;
  /** conn_map_full as of the last status line, so each increase is reported once. */
  private mapFullReported = 0;

  async start(): Promise<void> {
    const c = this.config;
    this.host = c.host ?? readHostIdentity();
    // The state dir holds the spool and dead letters: connection metadata of every process on the host.
    ensurePrivateDir(c.stateDir, this.log);
    this.epoch = claimEpoch(c.stateDir);
    this.seq = new Sequencer(this.epoch);
    this.clock = new BootClock();
    this.spool = Spool.open({ dir: join(c.stateDir, 'spool'), maxBytes: c.spoolMaxBytes, fsync: c.fsync, logger: this.log });
    this.wire = {
      host: this.host,
      epoch: this.epoch,
      nextSeq: () => this.seq.next(),
      toUnixNs: (ts) => (this.kernelClock ? this.kernelClock(ts) : this.clock.toUnixNs(ts)),
      enrich: (pid, cgroupId) => this.enricher.lookup(pid, Date.now(), cgroupId),
      workload: (info, netns) => this.workloads.resolve(info, netns),
    };
    // New `ip netns` names and an edited rule file are picked up without a restart (a stat each per refresh).
    this.workloadTimer = setInterval(() => this.workloads.refresh(), WORKLOAD_DEFAULTS.refreshMs);
    this.workloadTimer.unref();
    this.log.info(
      { host_id: this.host.host_id, boot_id: this.host.boot_id, epoch: this.epoch, topic: c.topic, spool_records: this.spool.records, spool_bytes: this.spool.bytes },
      'producer starting',
    );

    // kafkajs repeats every connection failure; our send loop reports Kafka state changes once.
    const kafka = createKafkaClient(c.kafka, { logger: this.log, levels: 'debug', retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1000 } });
    this.kafka = kafka.producer({
      createPartitioner: samePartitionPerKey,
      idempotent: c.idempotent,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: true,
      ...(c.idempotent ? {} : { retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1000 } }),
    });
    // Replaying the spool starts now; new records go behind the old ones, so Kafka sees them in order.
    this.senderLoop = this.runSender();

    const open =
      c.openCapture ??
      (async (o: CaptureOptions, l: Logger) => {
        const mod = await import('./capture');
        this.kernelClock = mod.unixNsFromBootNs;
        return mod.openCapture(o, l);
      });
    let snap = 0;
    let cap: Capture;
    try {
      cap = await open(
        {
          pinDir: c.pinDir,
          flushIntervalMs: c.flushIntervalMs,
          flushThresholdBytes: c.flushThresholdBytes,
          ifaceIntervalMs: c.ifaceIntervalMs,
          maxQueuedRecords: CAPTURE_QUEUE_RECORDS,
          ...(c.ringBufferBytes ? { ringBufferBytes: c.ringBufferBytes } : {}),
          ...(c.maxConnections ? { maxConnections: c.maxConnections } : {}),
        },
        this.log,
      );
      this.capture = cap;
      // The kernel's counters may predate us (pinned maps): ship every tracked connection's current totals first,
      // chunk by chunk (a pinned map can hold --max-connections entries).
      for (const chunk of cap.snapshotChunks()) {
        snap += chunk.length;
        await this.ingest(chunk);
      }
    } catch (e) {
      // Leave nothing running: the spool keeps its records for the next start.
      this.senderStop = true;
      this.wake(this.dataWaiters);
      this.senderStopCtl.abort();
      await Promise.race([this.senderLoop, new Promise((r) => setTimeout(r, 2000).unref())]);
      this.spoolClosed = true;
      this.spool.close();
      await this.capture?.close().catch(() => undefined);
      if (this.kafkaConnected) await this.kafka.disconnect().catch(() => undefined);
      throw e;
    }
    this.log.info({ snapshot_records: snap }, 'capture attached; streaming live records');
    this.captureLoop = this.runCapture(cap);
    if (c.statusIntervalMs > 0) {
      this.statusTimer = setInterval(() => this.reportStatus(), c.statusIntervalMs);
      this.statusTimer.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const deadline = Date.now() + this.config.shutdownTimeoutMs;
    this.stopDeadline = deadline;
    if (this.statusTimer) clearInterval(this.statusTimer);
    if (this.workloadTimer) clearInterval(this.workloadTimer);
    this.wake(this.spaceWaiters);
    this.cancelHeldRelease();
    const cap = this.capture;
    if (cap) {
      // Ship what the kernel counted up to now (open connections' unflushed bytes) before letting go.
      try {
        for (const chunk of cap.snapshotChunks()) await this.ingest(chunk, deadline);
      } catch (e) {
        this.log.warn({ err: e }, 'final snapshot failed; the next start ships these counters from the pinned maps');
      }
      await Promise.all([...this.pendingForgets]);
      await cap.close();
      await this.captureLoop?.catch((e: unknown) => this.log.error({ err: e }, 'capture loop failed'));
      // `established` records still held back: ship them, or their connections would count as opened nowhere.
      await this.ingest([], deadline, true).catch((e: unknown) => this.log.warn({ err: e }, 'could not spool the held-back established records'));
    }
    await this.ingestChain;
    this.wake(this.dataWaiters);
    const drained = await this.drained(Math.max(0, deadline - Date.now()));
    this.senderStop = true;
    this.wake(this.dataWaiters);
    this.senderStopCtl.abort();
    // A send still in flight (a hung broker) must not hold shutdown: its records stay spooled and are re-sent.
    await Promise.race([this.senderLoop, new Promise((r) => setTimeout(r, 2000).unref())]);
    const left = { spool_records: this.spool.records, spool_bytes: this.spool.bytes };
    this.spoolClosed = true;
    this.spool.close();
    if (this.kafkaConnected) await Promise.race([this.kafka.disconnect().catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    if (drained) this.log.info({ ...this.statusCounters() }, 'producer stopped; everything acknowledged by Kafka');
    else this.log.warn({ ...left }, 'producer stopped with records left in the spool; they are sent first on the next start');
    this.emit('status', this.status());
  }

  status(): ProducerStatus {
    const s = this.statusCounters();
    let kernel: KernelStats | null = null;
    try {
      kernel = this.capture && !this.stopping ? this.capture.stats() : null;
    } catch {
      kernel = null;
    }
    return { ...s, kernel };
  }

  reloadWorkloadRules(): void {
    this.workloads.reloadRules();
  }

  async drained(timeoutMs = Infinity): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (this.spool.records > 0) {
      if (Date.now() >= end) return false;
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(100, Math.max(1, end - Date.now())));
        t.unref();
      });
    }
    return true;
  }

  private statusCounters(): Omit<ProducerStatus, 'kernel'> {
    const k = this.counters;
    return {
      host_id: this.host?.host_id ?? '',
      epoch: this.epoch,
      seq: this.seq?.current ?? 0,
      records_in: k.records_in,
      records_spooled: k.records_spooled,
      records_invalid: k.records_invalid,
      records_out: k.records_out,
      batches_out: k.batches_out,
      spool_records: this.spool?.records ?? 0,
      spool_bytes: this.spool?.bytes ?? 0,
      spool_max_bytes: this.config.spoolMaxBytes,
      spool_full: k.spool_full,
      spool_full_events: k.spool_full_events,
      kafka_ok: k.kafka_ok,
      kafka_state: k.kafka_state,
      kafka_errors: k.kafka_errors,
      kafka_last_error: k.kafka_last_error,
      kafka_error_code: k.kafka_error_code,
      kafka_error_since: k.kafka_error_since,
      batches_split: k.batches_split,
      max_batch_bytes: this.maxBatchBytes,
      records_dead_lettered: k.records_dead_lettered,
      records_folded: k.records_folded,
      send_latency_ms_last: k.lat_last,
      send_latency_ms_max: k.lat_max,
      send_latency_ms_avg: k.lat_n ? Math.round((k.lat_sum / k.lat_n) * 10) / 10 : 0,
      ...this.workloadCounters(),
    };
  }

  private workloadCounters(): Pick<ProducerStatus, 'workloads' | 'workloads_overflow' | 'workload_rules_reloads' | 'workload_rules_errors'> {
    const w = this.workloads.stats();
    return { workloads: w.workloads, workloads_overflow: w.workloads_overflow, workload_rules_reloads: w.workload_rules_reloads, workload_rules_errors: w.workload_rules_errors };
  }

  private reportStatus(): void {
    const s = this.status();
    this.log.info({ status: s }, 'status');
    // A full connection map is the one way bytes go uncounted: say so loudly, not only in the counters.
    const full = s.kernel?.conn_map_full ?? 0;
    if (full > this.mapFullReported) {
      this.log.error(
        { conn_map_full: full, new_since_last_status: full - this.mapFullReported },
        'kernel connection map full: connections opened meanwhile are not tracked and their bytes are not counted; the producer is falling behind (check Kafka and the spool) or the host opens more concurrent connections than the map holds',
      );
      this.mapFullReported = full;
    }
    this.emit('status', s);
    this.counters.lat_max = 0;
    this.counters.lat_sum = 0;
    this.counters.lat_n = 0;
  }
}

/** The producer factory: `{ config, logger }` like the consumer's; nothing runs until start(). */
export function createProducer({ config, logger }: { config: ProducerConfig; logger: Logger }): NettallyProducer {
  for (const [name, v] of Object.entries({ batchMaxRecords: config.batchMaxRecords, batchMaxBytes: config.batchMaxBytes, spoolMaxBytes: config.spoolMaxBytes, maxMessageBytes: config.maxMessageBytes ?? 1 })) {
    if (!(v > 0)) throw new NettallyError('CONFIG_INVALID', `producer setting ${name} must be positive, got ${v}`, { context: { setting: name } });
  }
  const p = new Producer(Object.freeze({ ...config, maxMessageBytes: config.maxMessageBytes ?? KAFKA_DEFAULT_MAX_MESSAGE_BYTES }), logger);
  p.workloads = new WorkloadResolver({
    rulesFile: config.workloadRules,
    maxNames: config.maxWorkloads,
    stateRoot: config.workloadStateRoot,
    logger: logger.child({ component: 'workloads' }),
  });
  return p;
}


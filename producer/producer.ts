// The producer daemon's core: capture → wire record (host, epoch, seq, enrichment) → Avro → durable spool →
// Kafka (sendBatch, acks=-1, batched by size and time). Nothing leaves the spool before Kafka acknowledged it.
import { EventEmitter } from 'events';
import { join } from 'path';
import { CompressionTypes, Kafka, logLevel, type KafkaConfig, type Producer as KafkaProducer } from 'kafkajs';
import { NettallyError } from '../lib/errors';
import { ensurePrivateDir } from '../lib/private-files';
import type { Logger } from '../lib/log';
import { createCodec, type Codec } from '../schemas/index';
import type { Capture, CaptureOptions, KernelRecord, KernelStats } from './capture';
import { BootClock, ProcessEnricher, readHostIdentity, type HostIdentity } from './host';
import { claimEpoch, Sequencer } from './sequence';
import { deadLetter } from './dead-letter';
import { BatchSizer, fitsAlone, KAFKA_DEFAULT_MAX_MESSAGE_BYTES, kafkaRecordSize, RECORD_BATCH_OVERHEAD } from './kafka-batch';
import { classifyKafkaError, type KafkaFailure, type KafkaState } from './kafka-errors';
import { Spool, type FsyncPolicy, type SpoolBatch, type SpoolEntry } from './spool';
import { KernelKind } from './records';
import { toWire, type WireContext } from './wire';

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
  /** Resolves once the spool is empty (everything so far acknowledged by Kafka). */
  drained(timeoutMs?: number): Promise<boolean>;
}

type Waiter = () => void;

/** Most kernel records ingested (encoded, spooled) in one round. */
const COALESCE_RECORDS = 20_000;

class Producer extends EventEmitter implements NettallyProducer {
  private readonly log: Logger;
  private readonly codec: Codec = createCodec();
  private host!: HostIdentity;
  private epoch = 0;
  private seq!: Sequencer;
  private spool!: Spool;
  private clock!: BootClock;
  /** The capture's own CLOCK_BOOTTIME → Unix conversion (exact, from the addon) when the kernel capture is used. */
  private kernelClock?: (ts: number) => bigint;
  private readonly enricher = new ProcessEnricher();
  private capture?: Capture;
  private kafka!: KafkaProducer;
  private kafkaConnected = false;
  private wire!: WireContext;

  private stopping = false;
  private senderStop = false;
  private captureLoop?: Promise<void>;
  private senderLoop?: Promise<void>;
  private ingestChain: Promise<void> = Promise.resolve();
  private dataWaiters: Waiter[] = [];
  private spaceWaiters: Waiter[] = [];
  private stopWaiters: Waiter[] = [];
  private spoolClosed = false;
  /** When stopping: the time after which ingests waiting for spool room give up. */
  private stopDeadline = Infinity;
  private lastFullLog = 0;
  private readonly pendingForgets = new Set<Promise<void>>();
  private oldestPendingAt = 0;
  private statusTimer?: NodeJS.Timeout;
  /** The record-batch size the sender cuts at: config.maxMessageBytes, halved each time a broker refuses a batch as too large. */
  private maxBatchBytes: number;
  private lastRetryLog = 0;

  /** conn_map_full as of the last status line, so each increase is reported once. */
  private mapFullReported = 0;
  private counters = {
    records_in: 0, records_spooled: 0, records_invalid: 0, records_out: 0, batches_out: 0, spool_full_events: 0, kafka_errors: 0,
    kafka_last_error: null as string | null, kafka_ok: false, spool_full: false,
    kafka_state: 'connecting' as KafkaState, kafka_error_code: null as string | null, kafka_error_since: null as string | null,
    batches_split: 0, records_dead_lettered: 0,
    lat_last: 0, lat_max: 0, lat_sum: 0, lat_n: 0,
  };

  constructor(private readonly config: ProducerConfig & { maxMessageBytes: number }, logger: Logger) {
    super();
    this.log = logger.child({ component: 'producer' });
    this.maxBatchBytes = config.maxMessageBytes;
  }

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
      enrich: (pid) => this.enricher.lookup(pid),
    };
    this.log.info(
      { host_id: this.host.host_id, boot_id: this.host.boot_id, epoch: this.epoch, topic: c.topic, spool_records: this.spool.records, spool_bytes: this.spool.bytes },
      'producer starting',
    );

    const kafka = new Kafka({
      ...c.kafka,
      logLevel: logLevel.WARN,
      logCreator: () => ({ namespace, level, log }) => {
        // kafkajs repeats every connection failure; our send loop reports Kafka state changes once.
        const { message, ...rest } = log;
        this.log.debug({ kafkajs: namespace, level, ...rest }, String(message));
      },
      retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1000 },
    });
    this.kafka = kafka.producer({
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
    let snap: KernelRecord[];
    let cap: Capture;
    try {
      cap = await open(
        {
          pinDir: c.pinDir,
          flushIntervalMs: c.flushIntervalMs,
          flushThresholdBytes: c.flushThresholdBytes,
          ifaceIntervalMs: c.ifaceIntervalMs,
          ...(c.ringBufferBytes ? { ringBufferBytes: c.ringBufferBytes } : {}),
          ...(c.maxConnections ? { maxConnections: c.maxConnections } : {}),
        },
        this.log,
      );
      this.capture = cap;
      // The kernel's counters may predate us (pinned maps): ship every tracked connection's current totals first.
      snap = cap.snapshot();
      await this.ingest(snap);
    } catch (e) {
      // Leave nothing running: the spool keeps its records for the next start.
      this.senderStop = true;
      this.wake(this.dataWaiters);
      this.wake(this.stopWaiters);
      await Promise.race([this.senderLoop, new Promise((r) => setTimeout(r, 2000).unref())]);
      this.spoolClosed = true;
      this.spool.close();
      await this.capture?.close().catch(() => undefined);
      if (this.kafkaConnected) await this.kafka.disconnect().catch(() => undefined);
      throw e;
    }
    this.log.info({ snapshot_records: snap.length }, 'capture attached; streaming live records');
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
    this.wake(this.spaceWaiters);
    const cap = this.capture;
    if (cap) {
      // Ship what the kernel counted up to now (open connections' unflushed bytes) before letting go.
      try {
        const snap = cap.snapshot();
        await this.ingest(snap, deadline);
      } catch (e) {
        this.log.warn({ err: e }, 'final snapshot failed; the next start ships these counters from the pinned maps');
      }
      await Promise.all([...this.pendingForgets]);
      await cap.close();
      await this.captureLoop?.catch((e: unknown) => this.log.error({ err: e }, 'capture loop failed'));
    }
    await this.ingestChain;
    this.wake(this.dataWaiters);
    const drained = await this.drained(Math.max(0, deadline - Date.now()));
    this.senderStop = true;
    this.wake(this.dataWaiters);
    this.wake(this.stopWaiters);
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
      send_latency_ms_last: k.lat_last,
      send_latency_ms_max: k.lat_max,
      send_latency_ms_avg: k.lat_n ? Math.round((k.lat_sum / k.lat_n) * 10) / 10 : 0,
    };
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

  private async runCapture(cap: Capture): Promise<void> {
    try {
      // The drain thread hands over small batches (one per ring-buffer poll); under churn that is thousands per
      // second. Coalesce whatever is already queued into one ingest: one spool write and one fsync per round.
      const it = cap.records()[Symbol.asyncIterator]();
      const NOT_YET = Symbol('not yet');
      let next: Promise<IteratorResult<KernelRecord[]>> | undefined;
      let done = false;
      while (!done) {
        const first = await (next ?? it.next());
        next = undefined;
        if (first.done) break;
        let batch = first.value;
        while (batch.length < COALESCE_RECORDS) {
          const pending = it.next();
          const more = await Promise.race([pending, new Promise<typeof NOT_YET>((r) => setImmediate(() => r(NOT_YET)))]);
          if (more === NOT_YET) {
            next = pending;
            break;
          }
          if (more.done) {
            done = true;
            break;
          }
          batch = batch.length === 0 ? more.value : batch.concat(more.value);
        }
        await this.ingest(batch);
      }
      if (!this.stopping) throw new NettallyError('INTERNAL', 'the kernel capture ended unexpectedly');
    } catch (e) {
      if (this.stopping) throw e;
      // Spool I/O errors or a dead capture: nothing sensible to do but stop; the kernel keeps counting (pinned maps).
      this.log.fatal({ err: e }, 'producer pipeline failed');
      this.emit('fatal', e as Error);
    }
  }

  /** Encodes and spools one batch (serialised with other ingests), then forgets closed connections once durable. */
  private ingest(records: readonly KernelRecord[], deadline = Infinity): Promise<void> {
    const run = this.ingestChain.then(() => this.ingestNow(records, deadline));
    this.ingestChain = run.catch(() => undefined);
    return run;
  }

  private async ingestNow(records: readonly KernelRecord[], deadline: number): Promise<void> {
    if (records.length === 0) return;
    this.counters.records_in += records.length;
    const key = Buffer.from(this.host.host_id);
    // Chunks small enough to fit a partly full spool; closed cookies are forgotten per chunk once it is durable.
    const chunkBytes = Math.max(1, Math.floor(this.spool.maxBytes / 4));
    let chunk: SpoolEntry[] = [];
    let chunkClosed: number[] = [];
    let size = 0;
    for (const r of records) {
      const w = toWire(r, this.wire);
      if (!w) continue;
      let value: Buffer;
      try {
        value = this.codec.encode(w.kind, w.record as never);
      } catch (e) {
        // A kernel record that does not fit the schema is a bug to report, not a reason to stop counting the rest.
        this.counters.records_invalid += 1;
        this.log.error({ err: e, kind: w.kind }, 'record does not fit its schema; skipped');
        continue;
      }
      const entry = { key, value };
      if (!fitsAlone(key.length, value.length, this.config.maxMessageBytes, this.config.compression)) {
        // Cannot happen with today's schemas (producer/kafka-batch.test.ts); never let one record block the spool.
        this.deadLetter([entry], `a ${w.kind} record of ${value.length} bytes does not fit a Kafka record batch of --max-message-bytes ${this.config.maxMessageBytes} on its own`);
        continue;
      }
      const entryBytes = Spool.sizeOf([entry]);
      if (size + entryBytes > chunkBytes && chunk.length > 0) {
        if (!(await this.spoolChunk(chunk, chunkClosed, deadline))) return;
        // Let Kafka acks and sends run between chunks: a burst from the kernel must not starve the sender.
        await new Promise((r) => setImmediate(r));
        chunk = [];
        chunkClosed = [];
        size = 0;
      }
      chunk.push(entry);
      size += entryBytes;
      if (r.kind === KernelKind.CONN_CLOSE) chunkClosed.push((r as { cookie: number }).cookie);
    }
    await this.spoolChunk(chunk, chunkClosed, deadline);
    await new Promise((r) => setImmediate(r));
  }

  /** Appends one chunk, waiting while the spool is full; false if stopping made us give up (the kernel keeps those counters). */
  private async spoolChunk(entries: SpoolEntry[], closed: number[], deadline: number): Promise<boolean> {
    if (entries.length === 0) return true;
    while (!this.spool.append(entries)) {
      if (!this.counters.spool_full) {
        this.counters.spool_full = true;
        this.counters.spool_full_events += 1;
        // At equilibrium (Kafka slower than the kernel) this flips many times a second: log it every 10 s at most.
        if (Date.now() - this.lastFullLog > 10_000) {
          this.lastFullLog = Date.now();
          this.log.warn(
            { spool_bytes: this.spool.bytes, spool_max_bytes: this.spool.maxBytes, spool_full_events: this.counters.spool_full_events },
            'spool full: pausing the kernel drain until Kafka takes records (the kernel keeps counting; bytes are delayed, not lost)',
          );
        }
        this.emit('spool-full', { spool_bytes: this.spool.bytes });
      }
      if (Date.now() >= Math.min(deadline, this.stopDeadline) || this.senderStop) {
        this.log.warn({ records: entries.length }, 'stopping with a full spool: these records stay with the kernel (pinned counters) for the next start');
        return false;
      }
      await this.waitFor(this.spaceWaiters, Math.min(1000, Math.max(1, Math.min(deadline, this.stopDeadline) - Date.now())));
    }
    if (this.counters.spool_full) {
      this.counters.spool_full = false;
      this.log.debug({ spool_bytes: this.spool.bytes }, 'spool has room again: draining the kernel');
      this.emit('spool-resumed', { spool_bytes: this.spool.bytes });
    }
    this.counters.records_spooled += entries.length;
    if (this.oldestPendingAt === 0) this.oldestPendingAt = Date.now();
    this.wake(this.dataWaiters);
    if (closed.length > 0 && this.capture) {
      // Off the ingest path: waiting for each fsync here would throttle the kernel drain to the disk's fsync rate.
      const cap = this.capture;
      const p = this.spool.whenDurable().then(() => {
        try {
          cap.forget(closed);
        } catch (e) {
          // Harmless: the entries stay in the kernel map and the next snapshot re-sends their (unchanged) final counters.
          this.log.debug({ err: e, cookies: closed.length }, 'forget failed');
        }
      });
      this.pendingForgets.add(p);
      void p.finally(() => this.pendingForgets.delete(p));
    }
    return true;
  }

  /** The oldest spooled records that make one record batch within the current size limit (at least one record). */
  private nextBatch(): { batch: SpoolBatch; batchBytes: number; fits: boolean } {
    const c = this.config;
    const sizer = new BatchSizer(this.maxBatchBytes, c.compression);
    const batch = this.spool.peek(c.batchMaxRecords, c.batchMaxBytes, (e) => sizer.add(e.key.length, e.value.length));
    if (batch.entries.length !== 1 || sizer.batchBytes > RECORD_BATCH_OVERHEAD) return { batch, batchBytes: sizer.batchBytes, fits: true };
    // peek() hands out a first record even when the sizer refused it: it does not fit any batch on its own.
    const e = batch.entries[0];
    return { batch, batchBytes: RECORD_BATCH_OVERHEAD + kafkaRecordSize(e.key.length, e.value.length, 0), fits: false };
  }

  private async runSender(): Promise<void> {
    const c = this.config;
    let backoff = 100;
    const compression = c.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None;
    while (!this.senderStop) {
      const { batch, batchBytes, fits } = this.nextBatch();
      if (batch.entries.length === 0) {
        this.oldestPendingAt = 0;
        await this.waitFor(this.dataWaiters, 1000);
        continue;
      }
      if (!fits) {
        // Spooled under a larger limit (an earlier run's flag, or a broker that refused it alone): set it aside.
        this.deadLetterAndAck(batch, `a record batch of this record alone is ${batchBytes} bytes, over the ${this.maxBatchBytes}-byte limit`, batchBytes);
        continue;
      }
      const lingerLeft = this.oldestPendingAt + c.batchMaxMs - Date.now();
      // A batch that leaves records behind in the spool was cut by a limit: it is as full as it gets.
      const full = batch.entries.length >= c.batchMaxRecords || batch.bytes >= c.batchMaxBytes || this.spool.records > batch.entries.length;
      if (!full && lingerLeft > 0 && !this.stopping) {
        await this.waitFor(this.dataWaiters, lingerLeft);
        continue;
      }
      const t0 = Date.now();
      try {
        if (!this.kafkaConnected) {
          await this.kafka.connect();
          this.kafkaConnected = true;
        }
        await this.kafka.sendBatch({
          topicMessages: [{ topic: c.topic, messages: batch.entries.map((e) => ({ key: e.key, value: e.value })) }],
          acks: -1,
          timeout: 30_000,
          compression,
        });
      } catch (e) {
        const failure = classifyKafkaError(e);
        if (failure.kind === 'too-large') {
          this.onTooLarge(batch, batchBytes, failure);
          continue;
        }
        this.onKafkaError(e as Error, failure, backoff);
        await this.waitFor(this.stopWaiters, backoff);
        // An operator has to act: keep trying (the spool keeps everything) but without hammering the cluster.
        backoff = Math.min(backoff * 2, failure.kind === 'needs-operator' ? 30_000 : 5000);
        continue;
      }
      const latency = Date.now() - t0;
      if (this.spoolClosed) return;
      this.spool.ack(batch);
      this.wake(this.spaceWaiters);
      backoff = 100;
      const k = this.counters;
      k.records_out += batch.entries.length;
      k.batches_out += 1;
      k.lat_last = latency;
      k.lat_max = Math.max(k.lat_max, latency);
      k.lat_sum += latency;
      k.lat_n += 1;
      // Whatever is still spooled has waited long enough: send it without lingering.
      this.oldestPendingAt = this.spool.records > 0 ? 1 : 0;
      if (!k.kafka_ok) {
        k.kafka_ok = true;
        this.log.info(
          { spool_records: this.spool.records, spool_bytes: this.spool.bytes, was: k.kafka_state, since: k.kafka_error_since },
          k.kafka_errors ? 'Kafka accepts records again: draining the spool' : 'Kafka connected',
        );
        k.kafka_state = 'ok';
        k.kafka_error_code = null;
        k.kafka_error_since = null;
        this.emit('kafka-ok');
      }
      this.emit('sent', { records: batch.entries.length, bytes: batch.bytes, latencyMs: latency });
    }
  }

  /**
   * The broker refused a batch as larger than its limit (its max.message.bytes is below --max-message-bytes): halve
   * the batch size for the rest of this run and resend from the same spool position, so order is kept and nothing is
   * sent twice; a single record it refuses is dead-lettered (it could never be sent).
   */
  private onTooLarge(batch: SpoolBatch, batchBytes: number, failure: KafkaFailure): void {
    if (batch.entries.length === 1) {
      this.deadLetterAndAck(batch, `the broker refused a record batch of this record alone (${batchBytes} bytes) with MESSAGE_TOO_LARGE: its max.message.bytes is lower`, batchBytes);
      return;
    }
    this.counters.batches_split += 1;
    const was = this.maxBatchBytes;
    this.maxBatchBytes = Math.max(RECORD_BATCH_OVERHEAD + 1, Math.floor(Math.min(was, batchBytes) / 2));
    this.log.warn(
      { records: batch.entries.length, batch_bytes: batchBytes, max_message_bytes: this.config.maxMessageBytes, max_batch_bytes: this.maxBatchBytes, err: failure.message },
      `Kafka refused a batch of ${batchBytes} bytes as too large (MESSAGE_TOO_LARGE): splitting it and sending batches of at most ${this.maxBatchBytes} bytes from now on; ` +
        `set --max-message-bytes to the topic's max.message.bytes (and the broker's message.max.bytes)`,
    );
  }

  private deadLetter(entries: SpoolEntry[], reason: string, batchBytes = 0): void {
    const path = deadLetter(this.config.stateDir, entries, { reason, batchBytes, limitBytes: this.maxBatchBytes });
    this.counters.records_dead_lettered += entries.length;
    this.log.error(
      { records: entries.length, dead_letter_file: path, records_dead_lettered: this.counters.records_dead_lettered },
      `record set aside, not sent to Kafka: ${reason}; it is kept (Avro, base64) in ${path}`,
    );
  }

  private deadLetterAndAck(batch: SpoolBatch, reason: string, batchBytes: number): void {
    // Durable in the dead-letter file before the spool lets go of it: nothing is lost.
    this.deadLetter(batch.entries, reason, batchBytes);
    if (this.spoolClosed) return;
    this.spool.ack(batch);
    this.wake(this.spaceWaiters);
  }

  private onKafkaError(err: Error, failure: KafkaFailure, backoffMs: number): void {
    const k = this.counters;
    k.kafka_errors += 1;
    k.kafka_last_error = err.message;
    const state: KafkaState = failure.kind === 'needs-operator' ? 'error' : 'retrying';
    const changed = k.kafka_state !== state || k.kafka_error_code !== failure.code;
    if (changed) k.kafka_error_since = new Date().toISOString();
    k.kafka_state = state;
    k.kafka_error_code = failure.code;
    k.kafka_ok = false;
    const fields = {
      err: { message: failure.message, name: err.name }, kafka_error_code: failure.code, since: k.kafka_error_since, attempts: k.kafka_errors,
      retry_in_ms: backoffMs, spool_records: this.spool.records, spool_bytes: this.spool.bytes,
    };
    if (state === 'error') {
      // Only an operator can fix this: say so on every attempt (the backoff caps the rate).
      this.log.error(fields, `Kafka refuses the records (${failure.code}): ${hintFor(failure.code, this.config.topic)}; keeping everything in the spool and retrying`);
    } else if (changed || Date.now() - this.lastRetryLog > 60_000) {
      this.lastRetryLog = Date.now();
      this.log.warn(fields, 'Kafka unavailable: keeping records in the spool and retrying with backoff');
    }
    // Reconnect from scratch next time: kafkajs may hold a half-dead connection after a broker restart.
    if (this.kafkaConnected) {
      this.kafkaConnected = false;
      this.kafka.disconnect().catch(() => undefined);
    }
    this.emit('kafka-error', err);
  }

  private waitFor(list: Waiter[], ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(() => {
        const i = list.indexOf(done);
        if (i >= 0) list.splice(i, 1);
        resolve();
      }, Math.min(Math.max(1, ms), 60_000));
      list.push(done);
    });
  }

  private wake(list: Waiter[]): void {
    for (const w of list.splice(0)) w();
  }
}

/** What an operator does about a Kafka error that does not go away by itself. */
export function hintFor(code: string, topic: string): string {
  if (code === 'TOPIC_AUTHORIZATION_FAILED') return `grant this client's principal Write (and Describe) on topic ${topic}`;
  if (code === 'CLUSTER_AUTHORIZATION_FAILED') return "grant this client's principal IdempotentWrite on the cluster, or run without --idempotent";
  if (code === 'UNKNOWN_TOPIC_OR_PARTITION') return `topic ${topic} does not exist and the broker does not create it: create it (kafka-topics.sh --create --topic ${topic}) or enable auto.create.topics.enable`;
  if (code.startsWith('SASL') || code === 'ILLEGAL_SASL_STATE') return 'check --sasl-mechanism, --sasl-username and the password (KAFKA_SASL_PASSWORD_FILE)';
  if (code.startsWith('TLS_')) return 'check --tls-ca / --tls-cert / --tls-key against the broker certificate';
  if (code === 'UNSUPPORTED_API') return 'the broker does not support a request this client needs: --sasl-mechanism against a listener without SASL, or a Kafka older than 0.11';
  return 'check the broker log and the topic/broker configuration';
}

/** The producer factory: `{ config, logger }` like the consumer's; nothing runs until start(). */
export function createProducer({ config, logger }: { config: ProducerConfig; logger: Logger }): NettallyProducer {
  for (const [name, v] of Object.entries({ batchMaxRecords: config.batchMaxRecords, batchMaxBytes: config.batchMaxBytes, spoolMaxBytes: config.spoolMaxBytes, maxMessageBytes: config.maxMessageBytes ?? 1 })) {
    if (!(v > 0)) throw new NettallyError('CONFIG_INVALID', `producer setting ${name} must be positive, got ${v}`, { context: { setting: name } });
  }
  return new Producer(Object.freeze({ ...config, maxMessageBytes: config.maxMessageBytes ?? KAFKA_DEFAULT_MAX_MESSAGE_BYTES }), logger);
}

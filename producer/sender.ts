// The producer's sender: the oldest spooled records → one Kafka record batch (sendBatch, acks=-1), retried with
// backoff while Kafka is down or refuses (lib/retry.ts), split when the broker says it is too large, acknowledged
// in the spool only once Kafka has them. Holds the state the pipeline stages share (spool, counters, waiters).
import { EventEmitter } from 'events';
import { CompressionTypes, type Producer as KafkaProducer } from 'kafkajs';
import type { Logger } from '../lib/log';
import { retry } from '../lib/retry';
import { deadLetter } from './dead-letter';
import { BatchSizer, kafkaRecordSize, RECORD_BATCH_OVERHEAD } from './kafka-batch';
import { classifyKafkaError, hintFor, type KafkaFailure, type KafkaState } from './kafka-errors';
import { Spool, type SpoolBatch, type SpoolEntry } from './spool';
import type { ProducerConfig } from './types';

export type Waiter = () => void;

/** The producer's settings with the defaults filled in (createProducer). */
export type ResolvedProducerConfig = ProducerConfig & { maxMessageBytes: number };

export abstract class SenderStage extends EventEmitter {
  protected readonly log: Logger;
  protected spool!: Spool;
  protected kafka!: KafkaProducer;
  protected kafkaConnected = false;
  protected stopping = false;
  protected senderStop = false;
  protected dataWaiters: Waiter[] = [];
  protected spaceWaiters: Waiter[] = [];
  /** Aborted with senderStop: ends the sender's backoff wait at once. */
  protected readonly senderStopCtl = new AbortController();
  protected spoolClosed = false;
  protected oldestPendingAt = 0;
  /** The record-batch size the sender cuts at: config.maxMessageBytes, halved each time a broker refuses a batch as too large. */
  protected maxBatchBytes: number;
  protected lastRetryLog = 0;
  protected counters = {
    records_in: 0, records_spooled: 0, records_invalid: 0, records_out: 0, batches_out: 0, spool_full_events: 0, kafka_errors: 0,
    kafka_last_error: null as string | null, kafka_ok: false, spool_full: false,
    kafka_state: 'connecting' as KafkaState, kafka_error_code: null as string | null, kafka_error_since: null as string | null,
    batches_split: 0, records_dead_lettered: 0, records_folded: 0,
    lat_last: 0, lat_max: 0, lat_sum: 0, lat_n: 0,
  };

  constructor(protected readonly config: ResolvedProducerConfig, logger: Logger) {
    super();
    this.log = logger.child({ component: 'producer' });
    this.maxBatchBytes = config.maxMessageBytes;
  }

  /** The oldest spooled records that make one record batch within the current size limit (at least one record). */
  protected nextBatch(): { batch: SpoolBatch; batchBytes: number; fits: boolean } {
    const c = this.config;
    const sizer = new BatchSizer(this.maxBatchBytes, c.compression);
    const batch = this.spool.peek(c.batchMaxRecords, c.batchMaxBytes, (e) => sizer.add(e.key.length, e.value.length));
    if (batch.entries.length !== 1 || sizer.batchBytes > RECORD_BATCH_OVERHEAD) return { batch, batchBytes: sizer.batchBytes, fits: true };
    // peek() hands out a first record even when the sizer refused it: it does not fit any batch on its own.
    const e = batch.entries[0];
    return { batch, batchBytes: RECORD_BATCH_OVERHEAD + kafkaRecordSize(e.key.length, e.value.length, 0), fits: false };
  }

  protected async runSender(): Promise<void> {
    const c = this.config;
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
      let sent: { batch: SpoolBatch; batchBytes: number; t0: number; tooLarge?: KafkaFailure };
      try {
        sent = await retry(
          async (attempt) => {
            // Nothing leaves the spool head while retrying (only this loop acks): a retry sends the same first
            // records, plus whatever arrived meanwhile, within the same limits.
            const cur = attempt === 1 ? { batch, batchBytes } : this.nextBatch();
            const t0 = Date.now();
            try {
              if (!this.kafkaConnected) {
                await this.kafka.connect();
                this.kafkaConnected = true;
              }
              await this.kafka.sendBatch({
                topicMessages: [{ topic: c.topic, messages: cur.batch.entries }],
                acks: -1,
                timeout: 30_000,
                compression,
              });
            } catch (e) {
              const failure = classifyKafkaError(e);
              // not a failure to back off from: the batch is split (or dead-lettered) and sent again at once
              if (failure.kind === 'too-large') return { ...cur, t0, tooLarge: failure };
              throw e;
            }
            return { ...cur, t0 };
          },
          {
            initialMs: 100,
            maxMs: 5000,
            // An operator has to act: keep trying (the spool keeps everything) but without hammering the cluster.
            permanentMaxMs: 30_000,
            retryPermanent: true,
            retriable: (e) => classifyKafkaError(e).kind !== 'needs-operator',
            signal: this.senderStopCtl.signal,
            onAttempt: ({ error, delayMs }) => this.onKafkaError(error as Error, classifyKafkaError(error), delayMs),
          },
        );
      } catch (e) {
        if (this.senderStop) return;
        throw e;
      }
      if (sent.tooLarge) {
        this.onTooLarge(sent.batch, sent.batchBytes, sent.tooLarge);
        continue;
      }
      this.onSent(sent.batch, Date.now() - sent.t0);
    }
  }

  protected onSent(batch: SpoolBatch, latency: number): void {
    if (this.spoolClosed) return;
    this.spool.ack(batch);
    this.wake(this.spaceWaiters);
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

  /**
   * The broker refused a batch as larger than its limit (its max.message.bytes is below --max-message-bytes): halve
   * the batch size for the rest of this run and resend from the same spool position, so order is kept and nothing is
   * sent twice; a single record it refuses is dead-lettered (it could never be sent).
   */
  protected onTooLarge(batch: SpoolBatch, batchBytes: number, failure: KafkaFailure): void {
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

  protected deadLetter(entries: SpoolEntry[], reason: string, batchBytes = 0): void {
    const path = deadLetter(this.config.stateDir, entries, { reason, batchBytes, limitBytes: this.maxBatchBytes });
    this.counters.records_dead_lettered += entries.length;
    this.log.error(
      { records: entries.length, dead_letter_file: path, records_dead_lettered: this.counters.records_dead_lettered },
      `record set aside, not sent to Kafka: ${reason}; it is kept (Avro, base64) in ${path}`,
    );
  }

  protected deadLetterAndAck(batch: SpoolBatch, reason: string, batchBytes: number): void {
    // Durable in the dead-letter file before the spool lets go of it: nothing is lost.
    this.deadLetter(batch.entries, reason, batchBytes);
    if (this.spoolClosed) return;
    this.spool.ack(batch);
    this.wake(this.spaceWaiters);
  }

  protected onKafkaError(err: Error, failure: KafkaFailure, backoffMs: number): void {
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

  protected waitFor(list: Waiter[], ms: number): Promise<void> {
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

  protected wake(list: Waiter[]): void {
    for (const w of list.splice(0)) w();
  }
}

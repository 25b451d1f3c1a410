// The producer's ingest: kernel records from the capture, coalesced per round, → wire records (host, epoch, seq,
// enrichment) → Avro → the durable spool, pausing the kernel drain while the spool is full (back-pressure).
import { NettallyError } from '../lib/errors';
import { createCodec, type Codec } from '../schemas/index';
import type { Capture, KernelRecord } from './capture';
import type { HostIdentity } from './host';
import { fitsAlone } from './kafka-batch';
import { SenderStage } from './sender';
import { Spool, type SpoolEntry } from './spool';
import { KernelKind } from './records';
import { toWire, type WireContext } from './wire';

/** Most kernel records ingested (encoded, spooled) in one round. */
const COALESCE_RECORDS = 20_000;

export abstract class IngestStage extends SenderStage {
  protected readonly codec: Codec = createCodec();
  protected host!: HostIdentity;
  protected capture?: Capture;
  protected wire!: WireContext;
  protected ingestChain: Promise<void> = Promise.resolve();
  /** When stopping: the time after which ingests waiting for spool room give up. */
  protected stopDeadline = Infinity;
  protected lastFullLog = 0;
  protected readonly pendingForgets = new Set<Promise<void>>();

  protected async runCapture(cap: Capture): Promise<void> {
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
  protected ingest(records: readonly KernelRecord[], deadline = Infinity): Promise<void> {
    const run = this.ingestChain.then(() => this.ingestNow(records, deadline));
    this.ingestChain = run.catch(() => undefined);
    return run;
  }

  protected async ingestNow(records: readonly KernelRecord[], deadline: number): Promise<void> {
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
  protected async spoolChunk(entries: SpoolEntry[], closed: number[], deadline: number): Promise<boolean> {
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
}

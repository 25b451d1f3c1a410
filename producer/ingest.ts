// The producer's ingest: kernel records from the capture, coalesced per round, → wire records (host, epoch, seq,
// enrichment) → Avro → the durable spool, pausing the kernel drain while the spool is full (back-pressure).
import { NettallyError } from '../lib/errors';
import { createCodec, type Codec } from '../schemas/index';
import type { Capture, ConnRecord, KernelRecord } from './capture';
import type { HostIdentity } from './host';
import { fitsAlone } from './kafka-batch';
import { SenderStage } from './sender';
import { Spool, type SpoolEntry } from './spool';
import { KernelKind } from './records';
import { toWire, type WireContext } from './wire';

/**
 * Most kernel records ingested (encoded, spooled) in one round: one Kafka batch's worth. A round's records, wire
 * records and Avro values are alive together, so this bounds the ingest's memory (~5000 × ~1 KB).
 */
const COALESCE_RECORDS = 5_000;
/**
 * Records the capture may queue for us before it pauses the kernel drain (the ring buffer then holds, and drops,
 * records; counters are kept). A kernel record is a fixed-size object (~0.4 KB: numbers and strings bounded by the
 * kernel struct), so this bounds the queue at ~8 MiB; the capture's own default (100k) allowed ~150 MiB.
 */
export const CAPTURE_QUEUE_RECORDS = 20_000;

/**
 * How long an `established` record is held back waiting for a later record of its connection, which makes it
 * redundant: consumers count a connection opened on the first record they see of it (schemas/README.md), and every
 * connection record carries the full identity and start_ns. Most connections on a busy host live shorter than this,
 * so they are shipped once, as `closed`, instead of twice. The hold delays only the opened count of longer ones.
 */
export const OPEN_HOLD_MS = 1000;
/**
 * Most `established` records held at once (~0.5 KB each: fixed-size fields and strings bounded by the kernel record,
 * so ~8 MiB at most); beyond it the oldest are shipped at once. 10k connections/s on both ends of each fit.
 */
export const OPEN_HOLD_MAX = 16_384;

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
  /** `established` records held back (OPEN_HOLD_MS), by cookie, oldest first, with when they were held. */
  private readonly heldOpens = new Map<number, { r: ConnRecord; at: number }>();
  private holdTimer?: NodeJS.Timeout;

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
          if (batch.length === 0) batch = more.value;
          else for (const r of more.value) batch.push(r); // in place: concat would copy the whole round per drain batch
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

  /**
   * Encodes and spools one batch (serialised with other ingests), then forgets closed connections once durable.
   * `releaseHeld`: ship every held-back `established` record too (stopping: nobody would ship them later).
   */
  protected ingest(records: readonly KernelRecord[], deadline = Infinity, releaseHeld = false): Promise<void> {
    const run = this.ingestChain.then(() => this.ingestNow(this.foldOpens(records, releaseHeld), deadline));
    this.ingestChain = run.catch(() => undefined);
    return run;
  }

  /**
   * One record per short connection: an `established` record is held back up to OPEN_HOLD_MS, and dropped if a later
   * record of its connection comes meanwhile (that record makes consumers count the opening). Per connection the
   * order stays: a held record is shipped before any later record of its connection, or not at all. A `snapshot`
   * sample is the exception that ships the held record first: consumers do not count a snapshot as an opening (the
   * producer found that connection already open). Records of other connections may overtake a held one.
   */
  private foldOpens(records: readonly KernelRecord[], releaseAll: boolean): KernelRecord[] {
    this.counters.records_in += records.length;
    const now = Date.now();
    const out: KernelRecord[] = [];
    for (const r of records) {
      if (r.kind === KernelKind.CONN_OPEN) {
        this.heldOpens.set(r.cookie, { r, at: now });
        continue;
      }
      if ((r.kind === KernelKind.CONN_SAMPLE || r.kind === KernelKind.CONN_CLOSE) && this.heldOpens.size > 0) {
        const held = this.heldOpens.get(r.cookie);
        if (held) {
          this.heldOpens.delete(r.cookie);
          if (r.kind === KernelKind.CONN_SAMPLE && r.flush_reason === 'snapshot') out.push(held.r);
          else this.counters.records_folded += 1;
        }
      }
      out.push(r);
    }
    // Map order is insertion order: the oldest held records come first.
    for (const [cookie, h] of this.heldOpens) {
      if (!releaseAll && now - h.at < OPEN_HOLD_MS && this.heldOpens.size <= OPEN_HOLD_MAX) break;
      this.heldOpens.delete(cookie);
      out.push(h.r);
    }
    this.scheduleHeldRelease();
    return out;
  }

  /** Without further kernel records (a quiet host), a timer ships held records once their hold is over. */
  private scheduleHeldRelease(): void {
    if (this.holdTimer || this.heldOpens.size === 0 || this.stopping) return;
    const oldest = this.heldOpens.values().next().value as { at: number };
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      if (!this.stopping) void this.ingest([]).catch((e: unknown) => this.log.error({ err: e }, 'shipping held-back established records failed'));
    }, Math.max(1, oldest.at + OPEN_HOLD_MS - Date.now()));
    this.holdTimer.unref();
  }

  /** Stopping: no timer ships held records any more (stop() ships them with its last ingest). */
  protected cancelHeldRelease(): void {
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
  }

  protected async ingestNow(records: readonly KernelRecord[], deadline: number): Promise<void> {
    if (records.length === 0) return;
    const key = Buffer.from(this.host.host_id);
    // One spool write (fsyncs are group-committed) per chunk of a quarter of a Kafka batch (~20 ms of encoding), then
    // the event loop turns: Kafka acks and the next send are not held up behind a whole round (measured: records/s
    // vs bare kafkajs 0.57 with whole-batch chunks, 0.69 with quarters, 0.52 with eighths; bench/RESULTS.md). Also
    // small enough to fit a partly full spool; closed cookies are forgotten per chunk once it is durable.
    const chunkBytes = Math.max(1, Math.min(Math.floor(this.spool.maxBytes / 4), Math.floor(this.config.batchMaxBytes / 4)));
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
      const entryBytes = Spool.entrySize(entry);
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

// The rollup consumer: a kafkajs group member that decodes records, aggregates them exactly per partition and
// writes window totals to InfluxDB; per partition it writes points, then a state snapshot, then commits.
import { Partitioners, type Kafka, type Consumer, type EachBatchPayload, type Producer, type Admin, type KafkaMessage, type Message } from 'kafkajs';
import { configError, NettallyError } from '../lib/errors';
import { createKafkaClient } from '../lib/kafka';
import type { Logger } from '../lib/log';
import { retry, sleep } from '../lib/retry';
import { createCodec, malformedReason, type Codec } from '../schemas';
import { PartitionAggregator } from './aggregator';
import { sizeName, type OutPoint } from './windows';
import { InfluxClient, type RejectedPoint } from './influx';
import { toAggInput } from './records';
import { nextOffset, offsetBefore } from './offsets';
import { deadLetterRequests, pointDeadLetter, recordDeadLetter } from './dead-letters';
import { lookUpFinal } from './finality';
import { BoundedSet, lagOf, previewable, Revoked, windowKey, type PartitionState } from './partition-state';
import { linkedSignal, withHeartbeat } from './signals';
import { StateStore, parseCommitMetadata, type GapMark, type StateHint } from './state-store';
import type { ConsumerStats, RollupConsumerConfig } from './types';

export type { ConsumerStats, RollupConsumerConfig } from './types';

export class RollupConsumer {
  private readonly log: Logger;
  private readonly kafka: Kafka;
  private readonly consumer: Consumer;
  private readonly producer: Producer;
  private readonly admin: Admin;
  private readonly influx: InfluxClient;
  private readonly store: StateStore;
  private readonly codec: Codec;
  private readonly parts = new Map<number, PartitionState>();
  private loading: Promise<Map<number, PartitionState>> | undefined;
  private assigned: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly stopCtl = new AbortController();
  private stopped = false;
  private readonly totals = { dlq: 0, points_dlq: 0, points: 0, flushes: 0, records: 0, duplicates: 0, too_late: 0, gaps: 0, gap_records: 0 };
  /** When the group last confirmed this member (join or heartbeat); ownership is a lease from here (see owns()). */
  private confirmedAt = 0;
  /** Counts assignments and revocations; a partition state of an older generation never writes again. */
  private generation = 0;
  private lastWindowMs: number | undefined;
  private influxDownSince: number | undefined;
  private fatal: ((e: unknown) => void) | undefined;
  /** Resolves when the consumer stops on its own (a fatal error); rejects with that error. */
  readonly done: Promise<void>;
  /** Called each time partitions' state is restored and they are consumed (`nettally consumer` reports it to up). */
  onStateLoaded: ((partitions: number[]) => void) | undefined;

  constructor(readonly config: RollupConsumerConfig, logger: Logger) {
    this.log = logger.child({ component: 'consumer' });
    this.kafka = createKafkaClient(config.kafka, {
      logger: this.log,
      // kafkajs logs refused requests at error level; the state-topic creation with compaction is allowed to fail.
      expected: (message) => message.startsWith('Response CreateTopics'),
    });
    this.consumer = this.kafka.consumer({
      groupId: config.group,
      sessionTimeout: config.sessionTimeoutMs,
      heartbeatInterval: Math.max(500, Math.floor(config.sessionTimeoutMs / 10)),
      maxWaitTimeInMs: 500,
      retry: { retries: 10 },
      // bounded fetches, each partition's share at least 64 KiB (RollupConsumerConfig.fetchMaxBytes); a first batch
      maxBytes: config.fetchMaxBytes, // larger than that share is still returned whole
      maxBytesPerPartition: Math.max(64 * 1024, Math.floor(config.fetchMaxBytes / config.partitionsConcurrently)),
    });
    this.producer = this.kafka.producer({ allowAutoTopicCreation: false, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner });
    this.admin = this.kafka.admin();
    this.influx = new InfluxClient(config.influx);
    this.store = new StateStore({ kafka: this.kafka, admin: this.admin, producer: this.producer, logger: this.log, group: config.group, topic: config.topic, stateTopic: config.stateTopic });
    this.codec = createCodec();
    this.done = new Promise<void>((_, reject) => (this.fatal = reject));
    this.done.catch(() => undefined);
  }

  /** Counters of this process (replays after a rebalance count again); lag and partitions as of now. */
  stats(): ConsumerStats {
    const t = this.totals;
    return {
      records: t.records,
      duplicates: t.duplicates,
      too_late: t.too_late,
      dlq: t.dlq,
      points_dlq: t.points_dlq,
      points_written: t.points,
      flushes: t.flushes,
      lag: lagOf(this.parts.values()),
      partitions: [...this.assigned],
      last_window_ms: this.lastWindowMs,
      influx_down_since: this.influxDownSince,
      retention_gaps: this.totals.gaps,
      retention_gap_records: this.totals.gap_records,
      ...this.store.written,
    };
  }

  async start(): Promise<void> {
    const c = this.config;
    await this.admin.connect();
    await this.producer.connect();
    if (c.createDatabase && c.influx.api === 'v1') {
      await this.retry('create InfluxDB database', async () => {
        try {
          await this.influx.ensureDatabase();
        } catch (e) {
          // e.g. a user without admin rights on an existing database: writes will tell if it is really missing
          if (e instanceof NettallyError && !e.retriable) this.log.warn({ err: e.message, db: c.influx.db }, 'could not create the InfluxDB database; assuming it exists');
          else throw e;
        }
      });
    }
    let dataPartitions = 0;
    for (;;) {
      const topics = await this.admin.listTopics();
      if (topics.includes(c.topic)) {
        const md = await this.admin.fetchTopicMetadata({ topics: [c.topic] });
        dataPartitions = md.topics[0]?.partitions.length ?? 0;
        if (dataPartitions > 0) break;
      }
      this.log.info({ topic: c.topic }, 'waiting for the records topic to exist (a producer creates it)');
      await sleep(2000, this.stopCtl.signal);
      if (this.stopCtl.signal.aborted) return;
    }
    const existing = await this.admin.listTopics();
    for (const topic of [c.dlqTopic, c.pointsDlqTopic]) {
      if (existing.includes(topic)) continue;
      await this.admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true }).catch((e: unknown) => this.log.debug({ err: e, topic }, 'create DLQ topic'));
    }
    await this.store.init(dataPartitions);

    this.consumer.on(this.consumer.events.GROUP_JOIN, (e) => {
      const mine = (e.payload.memberAssignment[c.topic] ?? []).slice().sort((a, b) => a - b);
      this.log.info({ partitions: mine, generation_member: e.payload.memberId }, 'partitions assigned');
      this.assigned = mine;
      this.confirmedAt = Date.now();
      // Another member may have moved these partitions on: every assignment starts from the stored snapshots, and
      // whatever the old states were still writing (a flush retrying through an InfluxDB outage) stops now.
      this.revokeAll('new assignment');
      this.parts.clear();
      this.loading = this.loadPartitions(mine);
      this.loading.catch(() => undefined);
    });
    // A rebalance revokes every partition of this member until the new assignment (eager protocol): stop writing.
    this.consumer.on(this.consumer.events.REBALANCING, () => this.revokeAll('group rebalancing'));
    this.consumer.on(this.consumer.events.HEARTBEAT, () => {
      this.confirmedAt = Date.now();
    });
    this.consumer.on(this.consumer.events.CRASH, (e) => {
      const err = e.payload.error;
      if (!e.payload.restart) {
        this.log.error({ err }, 'consumer crashed and will not restart');
        this.fatal?.(err);
      } else this.log.warn({ err: err.message }, 'consumer error; kafkajs restarts it');
    });
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: [c.topic], fromBeginning: true });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      // Each partition has its own lock and state; while one waits on InfluxDB or its snapshot, another decodes.
      // Memory: fetched batches are bounded by the fetch sizes above (--fetch-max-bytes) whatever this says.
      partitionsConsumedConcurrently: c.partitionsConcurrently,
      eachBatch: (p) => this.onBatch(p),
    });
    this.timer = setInterval(() => void this.flushIdle(), Math.max(100, Math.min(1000, c.flushIntervalMs)));
  }

  /** Flushes everything, leaves the group, disconnects. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.stopCtl.abort();
    if (this.timer) clearInterval(this.timer);
    // Flush while still a member (batches stop at once: `stopped`), so the next owner starts from our latest state.
    for (const ps of this.parts.values()) {
      await this.locked(ps, () => this.flush(ps, undefined, true)).catch((e: unknown) => this.log.warn({ err: e, partition: ps.partition }, 'final flush failed; the next member replays from the last snapshot'));
    }
    await this.consumer.stop().catch((e: unknown) => this.log.warn({ err: e }, 'stopping consumer'));
    await this.consumer.disconnect().catch(() => undefined);
    await this.producer.disconnect().catch(() => undefined);
    await this.admin.disconnect().catch(() => undefined);
  }

  private newState(partition: number): PartitionState {
    return {
      partition,
      agg: new PartitionAggregator({ partition, ...this.config.aggregation }),
      next: undefined,
      snapshotted: undefined,
      dlq: [],
      lastFlush: Date.now(),
      lastPreview: Date.now(),
      high: undefined,
      late: { n: 0 },
      lock: Promise.resolve(),
      generation: this.generation,
      fence: new AbortController(),
      finalWindows: new BoundedSet(),
      checkedWindows: new BoundedSet(),
      gaps: [],
    };
  }

  /** Ends the ownership of every partition state (those still loading too): a new assignment starts anew. */
  private revokeAll(why: string): void {
    this.generation++;
    this.loading = undefined;
    for (const ps of this.parts.values()) {
      if (!ps.fence.signal.aborted) this.log.info({ partition: ps.partition, why }, 'partition revoked');
      ps.fence.abort(new Revoked(ps.partition, why));
    }
  }

  /**
   * Ownership fence, checked before every InfluxDB write, dead-letter write, snapshot and commit of a partition:
   * the state must be the current one for the partition (not revoked by a rebalance) and the group must have
   * confirmed this member recently. The group drops a member `--session-timeout` after its last heartbeat and only
   * then gives its partitions to another one; a member that cannot reach the broker therefore stops writing after
   * 2/3 of the session timeout, before anyone else can own its partitions. Returns how long the lease still runs.
   */
  private owns(ps: PartitionState): number {
    if (ps.fence.signal.aborted) throw ps.fence.signal.reason as Revoked;
    if (this.parts.get(ps.partition) !== ps || ps.generation !== this.generation) throw new Revoked(ps.partition, 'state replaced');
    const left = this.confirmedAt + (this.config.sessionTimeoutMs * 2) / 3 - Date.now();
    // not revoked: the group may still confirm us (a heartbeat is due); the retry loop tries again
    if (left <= 0) throw new NettallyError('KAFKA_UNAVAILABLE', `partition ${ps.partition}: no heartbeat confirmed for ${Date.now() - this.confirmedAt} ms; not writing until the group confirms this member`, { retriable: true });
    return left;
  }

  private async loadPartitions(partitions: number[]): Promise<Map<number, PartitionState>> {
    const c = this.config;
    const hints = new Map<number, StateHint | undefined>();
    const committed = new Map<number, string>();
    const t0 = Date.now();
    const offsets = await this.retry('read committed offsets', () => this.admin.fetchOffsets({ groupId: c.group, topics: [c.topic] }));
    for (const p of offsets[0]?.partitions ?? []) {
      hints.set(p.partition, parseCommitMetadata(p.metadata));
      if (Number(p.offset) >= 0) committed.set(p.partition, p.offset);
    }
    const snaps = await this.retry('load state snapshots', () => this.store.load(partitions, hints));
    const out = new Map<number, PartitionState>();
    for (const p of partitions) {
      const ps = this.newState(p);
      const snap = snaps.get(p);
      if (snap) {
        try {
          ps.agg.restore(snap.state);
        } catch (e) {
          // Retrying cannot help (e.g. --window changed under an existing group): stop with a clear message.
          const err = configError('--window/--group', `the stored state of partition ${p} does not fit this consumer (${(e as Error).message}); use the same --window as before or a new --group`);
          this.fatal?.(err);
          throw err;
        }
        ps.next = snap.offset;
        ps.snapshotted = snap.offset;
        ps.gaps = snap.gaps ?? [];
      } else if (committed.has(p)) {
        // Offsets were committed but no snapshot survives (state topic lost or retention): exactness for windows
        // still open at that point cannot be recovered; continue from the commit and say so.
        this.log.warn({ partition: p, offset: committed.get(p) }, 'no state snapshot for a committed partition; open windows restart from zero');
        // Still the position this group reached: if retention deleted past it, the gap is found and reported.
        ps.next = committed.get(p);
        ps.snapshotted = ps.next;
      }
      out.set(p, ps);
    }
    this.log.info({ partitions, snapshots: snaps.size, ms: Date.now() - t0 }, 'partition state loaded');
    this.onStateLoaded?.(partitions);
    return out;
  }

  private async partitionState(partition: number, heartbeat: () => Promise<void>): Promise<PartitionState> {
    let ps = this.parts.get(partition);
    if (ps) return ps;
    const loading = this.loading ?? this.loadPartitions([partition]);
    const loaded = await withHeartbeat(loading, heartbeat, 3000);
    for (const [p, s] of loaded) if (!this.parts.has(p)) this.parts.set(p, s);
    ps = this.parts.get(partition);
    if (!ps) {
      const single = await withHeartbeat(this.loadPartitions([partition]), heartbeat, 3000);
      ps = single.get(partition) as PartitionState;
      this.parts.set(partition, ps);
    }
    return ps;
  }

  private async locked<T>(ps: PartitionState, fn: () => Promise<T>, heartbeat?: () => Promise<void>): Promise<T> {
    const prev = ps.lock;
    let release!: () => void;
    ps.lock = new Promise<void>((r) => (release = r));
    try {
      await withHeartbeat(prev, heartbeat, 3000);
      return await fn();
    } finally {
      release();
    }
  }

  private async onBatch(p: EachBatchPayload): Promise<void> {
    const { batch, resolveOffset, isRunning, isStale } = p;
    // A heartbeat answered "rebalance" means our partitions are being taken away: stop writing them right away (the
    // REBALANCING event comes only after this batch has returned).
    const heartbeat = async (): Promise<void> => {
      try {
        await p.heartbeat();
      } catch (e) {
        const type = (e as { type?: string }).type;
        if (type === 'REBALANCE_IN_PROGRESS' || type === 'ILLEGAL_GENERATION' || type === 'UNKNOWN_MEMBER_ID') this.revokeAll(`heartbeat: ${type}`);
        throw e;
      }
    };
    const ps = await this.partitionState(batch.partition, heartbeat);
    if (this.parts.get(batch.partition) !== ps) return; // reassigned while loading
    await this.locked(ps, async () => {
      ps.high = batch.highWatermark;
      const first = batch.messages[0]?.offset;
      if (first !== undefined && ps.next !== undefined && BigInt(first) > BigInt(ps.next)) {
        // Either retention deleted records we have not read (kafkajs then answered OFFSET_OUT_OF_RANGE and reset to
        // the earliest offset), or the fetch position is past the snapshot (its commit was newer than our state).
        const low = await this.retry('read earliest offset', () => this.admin.fetchTopicOffsets(batch.topic), heartbeat);
        const earliest = low.find((o) => o.partition === batch.partition)?.low;
        if (earliest !== undefined && BigInt(earliest) > BigInt(ps.next)) this.retentionGap(ps, ps.next, earliest);
        if (BigInt(first) > BigInt(ps.next)) {
          this.log.info({ partition: ps.partition, from: first, to: ps.next }, 'seeking to the snapshot offset');
          this.consumer.seek({ topic: batch.topic, partition: batch.partition, offset: ps.next });
          return;
        }
      }
      // kafkajs keeps only the last resolved offset (BigInt parses per call): resolved before awaits and at the end; isStale (a seek since the fetch, done only above) every 64
      let n = 0, handled: string | undefined;
      try {
        for (const m of batch.messages) {
          if (!isRunning() || this.stopped || ((n & 63) === 0 && isStale())) break;
          handled = m.offset;
          if (ps.next !== undefined && offsetBefore(m.offset, ps.next)) continue;
          this.apply(ps, m);
          ps.next = nextOffset(m.offset);
          const open = ps.gaps.at(-1);
          if (open && open.to_ms === null && Number.isFinite(ps.agg.maxEventTimeMs)) open.to_ms = ps.agg.maxEventTimeMs + this.config.aggregation.allowedLatenessMs;
          const beat = ++n % 2000 === 0;
          const flushDue = Date.now() - ps.lastFlush >= this.config.flushIntervalMs;
          if (beat || flushDue) resolveOffset(m.offset);
          if (beat) await heartbeat();
          if (flushDue) await this.flush(ps, heartbeat);
        }
      } finally {
        if (handled !== undefined) resolveOffset(handled);
      }
      if (Date.now() - ps.lastFlush >= this.config.flushIntervalMs) await this.flush(ps, heartbeat);
    }, heartbeat).catch((e: unknown) => {
      // lost the partition mid-batch: the new owner replays from the last snapshot; kafkajs is rejoining anyway
      if (!(e instanceof Revoked)) throw e;
      this.log.info({ partition: ps.partition, err: e.message }, 'batch abandoned');
    });
  }

  private apply(ps: PartitionState, m: KafkaMessage): void {
    if (!m.value) {
      ps.dlq.push({ message: m, reason: 'empty', error: 'message has no value' });
      return;
    }
    let decoded;
    try {
      decoded = this.codec.decode(m.value);
    } catch (e) {
      const reason = malformedReason(e);
      if (!reason) throw e;
      ps.dlq.push({ message: m, reason, error: (e as Error).message });
      return;
    }
    const input = toAggInput(decoded, Number(m.timestamp));
    const outcome = ps.agg.add(input);
    if (outcome === 'duplicate') this.totals.duplicates++;
    else {
      this.totals.records++;
      if (outcome === 'too_late') {
        this.totals.too_late++;
        if (ps.late.n++ === 0) ps.late = { n: 1, host_id: input.host_id, time_ms: input.time_ms };
      }
    }
  }

  /**
   * Records [from, to) of this partition were deleted by retention before this group read them: report it, continue
   * at `to`, and remember which windows miss records (their points get `gap=true` until they are final).
   */
  private retentionGap(ps: PartitionState, from: string, to: string): void {
    const wm = ps.agg.watermarkMs;
    const windowMs = this.config.aggregation.windowMs;
    const mark: GapMark = { from_offset: from, to_offset: to, from_ms: Number.isFinite(wm) ? Math.floor(wm / windowMs) * windowMs : null, to_ms: null, found_ms: Date.now() };
    ps.gaps.push(mark);
    const lost = Number(BigInt(to) - BigInt(from));
    this.totals.gaps++;
    this.totals.gap_records += lost;
    this.log.error(
      { partition: ps.partition, from_offset: from, to_offset: to, records_lost: lost, windows_from: mark.from_ms === null ? null : new Date(mark.from_ms).toISOString() },
      'retention deleted records before this consumer group read them; continuing after the gap, the affected windows are written with gap=true (not exact)',
    );
    ps.next = to;
  }

  /** Sets `gap=true` on points whose window overlaps a retention gap; forgets gaps whose windows are all final. */
  private markGaps(ps: PartitionState, points: readonly OutPoint[]): void {
    if (ps.gaps.length === 0) return;
    const { windowMs, rollupMs } = this.config.aggregation;
    const rollupSuffix = `_${sizeName(rollupMs)}`;
    for (const pt of points) {
      const size = pt.measurement.endsWith(rollupSuffix) ? rollupMs : windowMs;
      const hit = ps.gaps.some((g) => (g.from_ms === null || pt.time_ms + size > g.from_ms) && (g.to_ms === null || pt.time_ms <= g.to_ms));
      if (hit) pt.fields.gap = true;
    }
    // Once the rollup window holding a gap's end is final, every window it touches was written final (above).
    const wm = ps.agg.watermarkMs;
    ps.gaps = ps.gaps.filter((g) => g.to_ms === null || Math.floor(g.to_ms / rollupMs) * rollupMs + rollupMs > wm);
  }

  /** Partitions with unflushed work and no batch arriving still get written on time. */
  private async flushIdle(): Promise<void> {
    for (const ps of [...this.parts.values()]) {
      if (this.stopped) return;
      if (Date.now() - ps.lastFlush < this.config.flushIntervalMs) continue;
      await this.locked(ps, async () => {
        if (this.parts.get(ps.partition) !== ps || ps.fence.signal.aborted || this.stopped) return;
        if (Date.now() - ps.lastFlush >= this.config.flushIntervalMs) await this.flush(ps, undefined);
      }).catch((e: unknown) => {
        if (e instanceof Revoked) this.log.info({ partition: ps.partition, err: e.message }, 'flush abandoned');
        else this.log.warn({ err: e, partition: ps.partition }, 'flush failed');
      });
    }
  }

  /**
   * Retries `fn` with exponential backoff until it succeeds or the consumer stops; with a partition state `ps`, also
   * until that state is revoked (Revoked is thrown at once, even from the backoff sleep, and never retried).
   */
  private async retry<T>(what: string, fn: () => Promise<T>, heartbeat?: () => Promise<void>, onFail?: (e: unknown, attempt: number) => void, ps?: PartitionState): Promise<T> {
    return retry(() => withHeartbeat(fn(), heartbeat, 3000), {
      initialMs: this.config.retryInitialMs,
      maxMs: this.config.retryMaxMs,
      // Non-retriable failures that get here (InfluxDB refusing the request itself: HTTP 401/403/404; refused
      // points do not, they are dead-lettered) still block rather than drop data, but loudly: fix the cause.
      retryPermanent: true,
      // (errors of other libraries, kafkajs's included, count as transient here: logged as warnings)
      retriable: (e) => !(e instanceof NettallyError && !e.retriable),
      // a revoked state stops at once, even from the backoff wait, with the fence's Revoked
      ...(ps ? { signal: ps.fence.signal } : {}),
      onAttempt: ({ error: e, attempt, retriable, delayMs }) => {
        if (e instanceof Revoked) throw e;
        // stopping: the wait below ends at once; one more attempt (the final flush's), then give up
        if (this.stopCtl.signal.aborted && attempt > 1) throw e;
        onFail?.(e, attempt);
        this.log[retriable ? 'warn' : 'error']({ err: e instanceof Error ? e.message : String(e), attempt, retry_in_ms: delayMs }, `${what} failed; retrying`);
      },
      wait: async (ms) => {
        const wake = linkedSignal(ps ? [this.stopCtl.signal, ps.fence.signal] : [this.stopCtl.signal]);
        try {
          await withHeartbeat(sleep(ms, wake.signal), heartbeat, 3000);
        } finally {
          wake.dispose();
        }
      },
    });
  }

  /**
   * Writes this partition's newly final windows (and, when due, previews of changed open ones), its dead letters, then
   * its snapshot, then commits the offset. The commit rests on the snapshot, which holds every open window: a crash
   * after it loses no window that was not written, the next owner restores and finishes it.
   * Called with the partition lock held. While InfluxDB is down the partition is paused and nothing is committed.
   * Every step is fenced by ownership (owns()): a revoked state throws Revoked and writes nothing more.
   */
  private async flush(ps: PartitionState, heartbeat: (() => Promise<void>) | undefined, final = false): Promise<void> {
    const c = this.config;
    const now = Date.now();
    const preview = final || (now - ps.lastPreview >= c.previewIntervalMs && previewable(ps, c.aggregation, now));
    const pending = ps.agg.pending(final ? 'all' : preview ? 'previews' : 'finals');
    this.markGaps(ps, pending.points);
    ps.lastFlush = now;
    if (ps.late.n > 0) {
      this.log.warn(
        { partition: ps.partition, too_late: ps.late.n, example_host_id: ps.late.host_id, example_time: new Date(ps.late.time_ms ?? 0).toISOString(), watermark: new Date(ps.agg.watermarkMs).toISOString() },
        'records arrived after their window was final; their bytes were added to the oldest open window',
      );
      ps.late = { n: 0 };
    }
    for (const { kind, ...n } of ps.agg.takeNotices()) {
      this.log.warn({ partition: ps.partition, ...n }, kind === 'clamped' ? 'records far ahead of their Kafka timestamp were placed at that timestamp' : 'connection or interface counters restarted from zero (new baseline)');
    }
    if (pending.points.length === 0 && ps.dlq.length === 0 && ps.next === ps.snapshotted) return;
    let paused = false;
    const tp = [{ topic: c.topic, partitions: [ps.partition] }];
    try {
      if (pending.points.length > 0) {
        const { written, rejected } = await this.retry('InfluxDB write', () => this.writePoints(ps, pending.points), heartbeat, (e) => {
          // (a lapsed ownership lease also lands here: it pauses the partition but is not an InfluxDB outage)
          if (e instanceof NettallyError && e.code === 'INFLUX_UNAVAILABLE') this.influxDownSince ??= Date.now();
          if (!paused && !final) {
            paused = true;
            this.consumer.pause(tp);
          }
        }, ps);
        this.totals.points += written;
        for (const pt of pending.points) if (this.lastWindowMs === undefined || pt.time_ms > this.lastWindowMs) this.lastWindowMs = pt.time_ms;
        if (this.influxDownSince !== undefined) {
          this.log.info({ down_ms: Date.now() - this.influxDownSince }, 'InfluxDB writes succeed again');
          this.influxDownSince = undefined;
        }
        if (rejected.length > 0) await this.deadLetterPoints(ps, rejected, heartbeat);
      }
      if (ps.dlq.length > 0) {
        const dead = ps.dlq;
        await this.sendDeadLetters(ps, 'dead-letter write', c.dlqTopic, dead.map((d) => recordDeadLetter(d, c.topic, ps.partition)), heartbeat);
        for (const d of dead) this.log.warn({ partition: ps.partition, offset: d.message.offset, reason: d.reason }, 'poison record sent to the dead-letter topic');
        this.totals.dlq += dead.length;
        ps.dlq = [];
      }
      pending.commit();
      if (preview) ps.lastPreview = now;
      if (ps.next === undefined) return;
      const next = ps.next;
      const meta = await this.retry('state snapshot write', () => {
        this.owns(ps);
        return this.store.save(ps.partition, { offset: next, state: ps.agg.snapshotLazy(), gaps: ps.gaps });
      }, heartbeat, undefined, ps);
      ps.snapshotted = next;
      this.totals.flushes++;
      // The commit only mirrors the snapshot (for lag tools and as a pointer to it); losing it loses nothing. A
      // revoked state never commits (Revoked goes up); with the lease run out the commit is skipped, not retried.
      await (async () => {
        this.owns(ps);
        await this.consumer.commitOffsets([{ topic: c.topic, partition: ps.partition, offset: next, metadata: meta }]);
      })().catch((e: unknown) => {
        if (e instanceof Revoked) throw e;
        this.log.warn({ err: e instanceof Error ? e.message : String(e), partition: ps.partition }, 'offset commit failed (snapshot is stored; continuing)');
      });
    } finally {
      if (paused) this.consumer.resume(tp);
    }
  }

  /**
   * One fenced write attempt. The rule that keeps billing rows final: a window known to be final in InfluxDB is never
   * written with final=false again. A stale non-final point can only come from state older than the last write of
   * that window: an old owner still retrying after a rebalance (stopped by the fence: owns() before the attempt,
   * the request aborted on revocation or when the lease runs out) or a new owner replaying from a snapshot taken
   * before the previous owner's last (final) write. So before a window is first written non-final by this state,
   * InfluxDB is asked whether this partition already has it final; windows found final, and those this state wrote
   * final, only ever get final points (the replay reaches the same final totals, deterministically).
   */
  private async writePoints(ps: PartitionState, points: readonly OutPoint[]): Promise<{ written: number; rejected: RejectedPoint[] }> {
    // the request is aborted when the state is revoked or the ownership lease runs out while it is in flight
    const attempt = linkedSignal([ps.fence.signal], this.owns(ps));
    let rejected: RejectedPoint[];
    let send: OutPoint[];
    try {
      await lookUpFinal({ influx: this.influx, aggregation: this.config.aggregation, log: this.log }, ps, points, attempt.signal);
      send = points.filter((p) => p.fields.final === true || !ps.finalWindows.has(windowKey(p)));
      if (send.length < points.length) {
        this.log.info({ partition: ps.partition, skipped: points.length - send.length }, 'not rewriting windows that are already final as non-final');
      }
      rejected = await this.influx.write(send, attempt.signal);
    } finally {
      attempt.dispose();
    }
    const refused = new Set(rejected.map((r) => r.point));
    for (const p of send) if (p.fields.final === true && !refused.has(p)) ps.finalWindows.add(windowKey(p));
    return { written: send.length - rejected.length, rejected };
  }

  /**
   * Sends dead letters in requests of at most DEAD_LETTER_REQUEST_BYTES (one send of them all can exceed the
   * broker's message.max.bytes and would then be refused forever), each retried and fenced.
   */
  private async sendDeadLetters(ps: PartitionState, what: string, topic: string, messages: readonly Message[], heartbeat: (() => Promise<void>) | undefined): Promise<void> {
    for (const chunk of deadLetterRequests(messages)) {
      await this.retry(what, () => {
        this.owns(ps);
        return this.producer.send({ topic, acks: -1, messages: chunk });
      }, heartbeat, undefined, ps);
    }
  }

  /** Sends points InfluxDB refused to the points dead-letter topic (line protocol + reason), so the partition goes on. */
  private async deadLetterPoints(ps: PartitionState, rejected: readonly RejectedPoint[], heartbeat: (() => Promise<void>) | undefined): Promise<void> {
    const c = this.config;
    await this.sendDeadLetters(ps, 'points dead-letter write', c.pointsDlqTopic, rejected.map((r) => pointDeadLetter(r, c.topic, ps.partition)), heartbeat);
    for (const r of rejected) {
      this.log.error({ partition: ps.partition, reason: r.reason, status: r.status, error: r.error.slice(0, 300), line: r.line.slice(0, 500) }, 'InfluxDB refused a point; sent to the points dead-letter topic');
    }
    this.totals.points_dlq += rejected.length;
  }
}

export function createRollupConsumer(opts: { config: RollupConsumerConfig; logger: Logger }): RollupConsumer {
  if (opts.config.aggregation.rollupMs % opts.config.aggregation.windowMs !== 0) {
    throw new NettallyError('CONFIG_INVALID', 'the 1-hour rollup must be a whole number of windows');
  }
  return new RollupConsumer(opts.config, opts.logger);
}

// The bundled broker itself: TCP framing, per-connection ordered request handling, topic/partition
// storage, retention, and the dispatch of each Kafka API to its handler in broker/handlers/ (see
// SUPPORTED_VERSIONS in protocol.ts for the versions).
import * as fs from 'fs';
import * as net from 'net';
import { join, resolve } from 'path';
import type { Logger } from '../lib/log';
import { GroupCoordinator, OffsetStore } from './groups';
import { PartitionLog, type FsyncPolicy, type LogConfig } from './log';
import {
  ApiKey,
  ErrorCode,
  ProtocolError,
  Reader,
  Writer,
  frameResponse,
  frameResponseChunks,
  isSupported,
  readRequestHeader,
  type RequestHeader,
} from './protocol';
import type { Topic, TopicConfig, Waiter } from './handlers/common';
import { produce, fetch, listOffsets } from './handlers/produce-fetch';
import {
  findCoordinator,
  joinGroup,
  syncGroup,
  heartbeat,
  leaveGroup,
  describeGroups,
  listGroups,
  offsetCommit,
  offsetFetch,
} from './handlers/groups';
import { apiVersionsBody, metadata, createTopics, describeConfigs, initProducerId } from './handlers/admin';

export interface BrokerConfig {
  host: string;
  port: number;
  dataDir: string;
  /** Host put in Metadata/FindCoordinator answers; defaults to the listen host (127.0.0.1 for a wildcard). */
  advertisedHost?: string;
  defaultPartitions: number;
  /** -1: keep forever. */
  retentionMs: number;
  /** -1: no size limit. Per partition, as in Kafka. */
  retentionBytes: number;
  segmentBytes: number;
  fsync: FsyncPolicy;
  fsyncIntervalMs: number;
  /** Kafka's socket.request.max.bytes: larger request frames close the connection before they are buffered. */
  maxRequestBytes: number;
  /** Kafka's message.max.bytes: largest record batch (whole, incl. log overhead) a produce may append. */
  maxMessageBytes: number;
  /** Kafka's broker-side fetch.max.bytes: cap on the bytes of one fetch response (first batch excepted). */
  fetchMaxBytes: number;
  /** Kafka's max.connections: connections beyond it are closed at once (existing ones keep working). */
  maxConnections: number;
  /** Kafka's connections.max.idle.ms: a connection with no request for this long is closed. */
  connectionsMaxIdleMs: number;
  /** Kafka's group.min/max.session.timeout.ms: JoinGroup outside them gets INVALID_SESSION_TIMEOUT. */
  groupMinSessionTimeoutMs: number;
  groupMaxSessionTimeoutMs: number;
  /** Caps against a local user exhausting file descriptors (each partition holds 2 open): see README. */
  maxPartitions: number;
  maxPartitionsPerTopic: number;
  maxAutoCreatedTopics: number;
  /** Kafka's log.message.timestamp.type: CreateTime keeps the client's timestamps, LogAppendTime stamps the broker clock. */
  messageTimestampType: TimestampType;
  /** Kafka's log.message.timestamp.after.max.ms / before.max.ms (CreateTime only); -1: unlimited. */
  messageTimestampAfterMaxMs: number;
  messageTimestampBeforeMaxMs: number;
  autoCreateTopics: boolean;
  retentionCheckMs: number;
  logger: Logger;
}

export type TimestampType = 'CreateTime' | 'LogAppendTime';

/** Counters of refused work (tests and logs). */
export interface BrokerStats {
  connections: number;
  refusedConnections: number;
  idleClosed: number;
  tooLargeBatches: number;
  refusedTopics: number;
  /** Produced record sets refused with INVALID_TIMESTAMP. */
  invalidTimestamps: number;
}

/** Requests queued per connection before reading from it pauses (clients pipeline). */
const MAX_QUEUED_BYTES = 64 << 20;

/**
 * mkdir -p one level at a time: Node's recursive mkdirSync spins forever under /proc (ENOENT loop), and the
 * data dir comes from the user.
 */
function mkdirs(dir: string): void {
  const parts = resolve(dir).split('/').filter((x) => x !== '');
  let cur = '';
  for (const part of parts) {
    cur += `/${part}`;
    try {
      fs.mkdirSync(cur);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  if (!fs.statSync(dir).isDirectory()) throw Object.assign(new Error(`${dir} is not a directory`), { code: 'ENOTDIR' });
}

/** Data-dir locks held by brokers in this process (their pid file names our own pid). */
const HELD_LOCKS = new Set<string>();

/**
 * Members without `private` are read by the request handlers in broker/handlers/ (part of the broker, functions
 * of it), not meant for other callers.
 */
export class Broker {
  readonly topics = new Map<string, Topic>();
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  readonly waiters = new Set<Waiter>();
  readonly groups: GroupCoordinator;
  offsets!: OffsetStore;
  private timers: NodeJS.Timeout[] = [];
  nextProducerId = Date.now() * 1000;
  closed = false;
  private lockPath: string | null = null;
  port = 0;
  readonly log: Logger;
  readonly counters: BrokerStats = { connections: 0, refusedConnections: 0, idleClosed: 0, tooLargeBatches: 0, refusedTopics: 0, invalidTimestamps: 0 };
  /** Refused connections not yet logged: one warning per burst, not one per connection (a flood must not flood the log). */
  private refusedUnlogged = 0;
  private refusedLogTimer: NodeJS.Timeout | null = null;

  constructor(readonly cfg: BrokerConfig) {
    this.log = cfg.logger;
    this.groups = new GroupCoordinator(this.log.child({ component: 'groups' }), {
      minSessionTimeoutMs: cfg.groupMinSessionTimeoutMs,
      maxSessionTimeoutMs: cfg.groupMaxSessionTimeoutMs,
    });
  }

  stats(): BrokerStats {
    return { ...this.counters, connections: this.sockets.size };
  }

  get listenPort(): number {
    return this.port;
  }

  get advertisedHost(): string {
    if (this.cfg.advertisedHost) return this.cfg.advertisedHost;
    return this.cfg.host === '0.0.0.0' || this.cfg.host === '::' ? '127.0.0.1' : this.cfg.host;
  }

  private logConfig(t: TopicConfig): LogConfig {
    return { segmentBytes: t.segmentBytes ?? this.cfg.segmentBytes, indexIntervalBytes: 4096, fsync: this.cfg.fsync };
  }

  /** Recovers every topic from disk, then listens. */
  async start(): Promise<void> {
    mkdirs(this.cfg.dataDir);
    this.lock();
    const topicsDir = join(this.cfg.dataDir, 'topics');
    fs.mkdirSync(topicsDir, { recursive: true });
    this.offsets = new OffsetStore(join(this.cfg.dataDir, 'groups'), this.cfg.fsync, this.log);
    for (const name of fs.readdirSync(topicsDir).sort()) {
      const metaPath = join(topicsDir, name, 'topic.json');
      if (!fs.existsSync(metaPath)) continue;
      const config = JSON.parse(fs.readFileSync(metaPath, 'utf8')) as TopicConfig;
      const partitions: PartitionLog[] = [];
      for (let p = 0; p < config.partitions; p++) {
        partitions.push(
          PartitionLog.open(join(topicsDir, name, String(p)), this.logConfig(config), (file, from, to) =>
            this.log.warn({ file, from, to }, 'truncated torn tail of segment (unacknowledged data from a crash)'),
          ),
        );
      }
      this.topics.set(name, { name, config, partitions });
    }
    if (this.cfg.fsync === 'interval') {
      const t = setInterval(() => void this.syncAll().catch((err: unknown) => this.log.error({ err }, 'fsync failed')), this.cfg.fsyncIntervalMs);
      t.unref();
      this.timers.push(t);
    }
    const r = setInterval(() => this.applyRetention(), this.cfg.retentionCheckMs);
    r.unref();
    this.timers.push(r);

    const server = net.createServer((s) => this.onConnection(s));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.cfg.port, this.cfg.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error({ err }, 'listener error'));
    this.port = (server.address() as net.AddressInfo).port;
  }

  /** One broker per data dir: a pid file, taken over when its owner is gone (e.g. after SIGKILL). */
  private lock(): void {
    const path = join(this.cfg.dataDir, 'broker.lock');
    if (HELD_LOCKS.has(path)) throw Object.assign(new Error(`data dir ${this.cfg.dataDir} is in use by another broker in this process`), { code: 'EBUSY' });
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(path, `${process.pid}\n`, { flag: 'wx' });
        this.lockPath = path;
        HELD_LOCKS.add(path);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = Number(fs.readFileSync(path, 'utf8').trim());
      let alive = false;
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid) {
        try {
          process.kill(owner, 0);
          // A killed owner not yet reaped by its parent is a zombie: dead for our purposes.
          const stat = fs.readFileSync(`/proc/${owner}/stat`, 'utf8');
          alive = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
        } catch (e) {
          alive = (e as NodeJS.ErrnoException).code === 'EPERM';
        }
      }
      if (alive) throw Object.assign(new Error(`data dir ${this.cfg.dataDir} is in use by another broker (pid ${owner}, ${path})`), { code: 'EBUSY' });
      fs.rmSync(path, { force: true });
    }
    throw Object.assign(new Error(`cannot take ${path}`), { code: 'EBUSY' });
  }

  private async syncAll(): Promise<void> {
    // offsets is unset when start() failed before opening it.
    const work: Promise<void>[] = [this.offsets?.sync() ?? Promise.resolve()];
    for (const t of this.topics.values()) for (const p of t.partitions) work.push(p.sync());
    await Promise.all(work);
  }

  /** Deletes expired segments of every partition (also run on a timer). Returns segments deleted. */
  applyRetention(now = Date.now()): number {
    let deleted = 0;
    for (const t of this.topics.values()) {
      const ms = t.config.retentionMs ?? this.cfg.retentionMs;
      const bytes = t.config.retentionBytes ?? this.cfg.retentionBytes;
      if (ms < 0 && bytes < 0) continue;
      t.partitions.forEach((p, i) => {
        try {
          const n = p.applyRetention(now, ms, bytes);
          if (n > 0) this.log.info({ topic: t.name, partition: i, segments: n, startOffset: p.startOffset }, 'retention deleted old segments');
          deleted += n;
        } catch (err) {
          this.log.error({ err, topic: t.name, partition: i }, 'retention failed');
        }
      });
    }
    return deleted;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    if (this.refusedLogTimer) clearTimeout(this.refusedLogTimer);
    this.groups.close();
    for (const w of this.waiters) w.wake();
    const server = this.server;
    // server.close() only calls back once every connection is gone, so drop them right after it.
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const s of this.sockets) s.destroy();
    await closed;
    if (this.cfg.fsync !== 'never') await this.syncAll().catch((err: unknown) => this.log.error({ err }, 'final fsync failed'));
    for (const t of this.topics.values()) for (const p of t.partitions) p.close();
    this.offsets?.close();
    if (this.lockPath) {
      fs.rmSync(this.lockPath, { force: true });
      HELD_LOCKS.delete(this.lockPath);
    }
  }

  // ---- connections ------------------------------------------------------------------------------

  /** Over --max-connections: closed before anything is read, counted, and logged once per burst. */
  private refuseConnection(sock: net.Socket): void {
    sock.destroy();
    this.counters.refusedConnections++;
    this.refusedUnlogged++;
    if (this.refusedLogTimer) return;
    const flush = (): void => {
      this.refusedLogTimer = null;
      if (this.refusedUnlogged === 0) return;
      this.log.warn(
        { refused: this.refusedUnlogged, refusedTotal: this.counters.refusedConnections, maxConnections: this.cfg.maxConnections },
        `refused ${this.refusedUnlogged} connection(s): --max-connections ${this.cfg.maxConnections} reached`,
      );
      this.refusedUnlogged = 0;
      this.refusedLogTimer = setTimeout(flush, 10_000);
      this.refusedLogTimer.unref();
    };
    flush();
  }

  private onConnection(sock: net.Socket): void {
    if (this.closed) {
      sock.destroy();
      return;
    }
    if (this.sockets.size >= this.cfg.maxConnections) {
      this.refuseConnection(sock);
      return;
    }
    this.sockets.add(sock);
    this.counters.connections++;
    sock.setNoDelay(true);
    const peer = `${sock.remoteAddress}:${sock.remotePort}`;
    const chunks: Buffer[] = [];
    let buffered = 0;
    const queue: Buffer[] = [];
    let queuedBytes = 0;
    let busy = false;
    let dead = false;

    const drop = (reason: string, err?: unknown): void => {
      if (dead) return;
      dead = true;
      this.log.warn({ peer, reason, err: err instanceof ProtocolError ? undefined : err }, `closing connection: ${reason}`);
      sock.destroy();
    };

    const pump = (): void => {
      if (busy || dead) return;
      const frame = queue.shift();
      if (!frame) return;
      queuedBytes -= frame.length;
      if (sock.isPaused() && queuedBytes < MAX_QUEUED_BYTES) sock.resume();
      busy = true;
      this.handle(frame, peer).then(
        (out) => {
          busy = false;
          if (dead) return;
          // A client that does not read its responses stops getting requests served (bounded memory).
          let flowing = true;
          if (out) {
            sock.cork();
            for (const b of out) flowing = sock.write(b);
            sock.uncork();
          }
          if (!flowing) sock.once('drain', pump);
          else pump();
        },
        (err: unknown) => {
          busy = false;
          drop(err instanceof ProtocolError ? `malformed request: ${err.message}` : 'request failed', err);
        },
      );
    };

    sock.on('data', (chunk: Buffer) => {
      if (dead) return;
      chunks.push(chunk);
      buffered += chunk.length;
      while (buffered >= 4) {
        const head = chunks[0].length >= 4 ? chunks[0] : Buffer.concat(chunks);
        const size = head.readInt32BE(0);
        if (size < 8) return drop(`malformed frame: size ${size}`);
        if (size > this.cfg.maxRequestBytes) return drop(`request of ${size} bytes exceeds --max-request-bytes ${this.cfg.maxRequestBytes}`);
        if (buffered < 4 + size) break;
        const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, buffered);
        queue.push(all.subarray(4, 4 + size));
        queuedBytes += size;
        const rest = all.subarray(4 + size);
        chunks.length = 0;
        buffered = rest.length;
        if (rest.length > 0) chunks.push(rest);
      }
      if (queuedBytes >= MAX_QUEUED_BYTES) sock.pause();
      pump();
    });
    // Like Kafka's connections.max.idle.ms: a connection that neither sends nor receives for that long is
    // closed (clients reconnect on demand). One with a request in progress (a long poll) is not idle.
    // (setTimeout's own callback argument is a once-listener: a long poll would disarm it for good.)
    sock.setTimeout(this.cfg.connectionsMaxIdleMs);
    sock.on('timeout', () => {
      if (dead || busy || queue.length > 0) return;
      dead = true;
      this.counters.idleClosed++;
      this.log.info({ peer, idleMs: this.cfg.connectionsMaxIdleMs }, 'closing idle connection (--connections-max-idle)');
      sock.destroy();
    });
    sock.on('error', (err) => {
      if (!dead) this.log.info({ peer, err: err.message }, 'connection error');
      dead = true;
    });
    sock.on('close', () => {
      dead = true;
      this.sockets.delete(sock);
      if (buffered > 0) this.log.info({ peer, bytes: buffered }, 'client vanished mid-request');
    });
  }

  /** Decodes one request frame and returns the framed response (null: no response, e.g. acks=0). */
  private async handle(frame: Buffer, peer: string): Promise<Buffer[] | null> {
    const r = new Reader(frame);
    const h = readRequestHeader(r);
    if (!isSupported(h.apiKey, h.apiVersion)) {
      if (h.apiKey === ApiKey.ApiVersions) {
        // KIP-511: an unknown ApiVersions version is answered in v0 with our ranges; the client retries.
        return [frameResponse(h.correlationId, apiVersionsBody(0, ErrorCode.UNSUPPORTED_VERSION))];
      }
      this.log.warn({ peer, apiKey: h.apiKey, apiVersion: h.apiVersion, client: h.clientId }, 'unsupported API or version');
      return [frameResponse(h.correlationId, new Writer(8).int16(ErrorCode.UNSUPPORTED_VERSION).toBuffer())];
    }
    const body = await this.dispatch(h, r, peer);
    if (body === null) return null;
    return Array.isArray(body) ? frameResponseChunks(h.correlationId, body) : [frameResponse(h.correlationId, body)];
  }

  private dispatch(h: RequestHeader, r: Reader, peer: string): Promise<Buffer | Buffer[] | null> | Buffer | null {
    const v = h.apiVersion;
    switch (h.apiKey) {
      case ApiKey.ApiVersions:
        return apiVersionsBody(v, ErrorCode.NONE);
      case ApiKey.Metadata:
        return metadata(this, v, r);
      case ApiKey.Produce:
        return produce(this, v, r, peer);
      case ApiKey.Fetch:
        return fetch(this, v, r);
      case ApiKey.ListOffsets:
        return listOffsets(this, v, r);
      case ApiKey.CreateTopics:
        return createTopics(this, v, r);
      case ApiKey.InitProducerId:
        return initProducerId(this, v, r);
      case ApiKey.FindCoordinator:
        return findCoordinator(this, v, r);
      case ApiKey.JoinGroup:
        return joinGroup(this, v, r, h, peer);
      case ApiKey.SyncGroup:
        return syncGroup(this, v, r);
      case ApiKey.Heartbeat:
        return heartbeat(this, v, r);
      case ApiKey.LeaveGroup:
        return leaveGroup(this, v, r);
      case ApiKey.OffsetCommit:
        return offsetCommit(this, v, r);
      case ApiKey.DescribeGroups:
        return describeGroups(this, v, r);
      case ApiKey.ListGroups:
        return listGroups(this, v);
      case ApiKey.OffsetFetch:
        return offsetFetch(this, v, r);
      case ApiKey.DescribeConfigs:
        return describeConfigs(this, v, r);
      default:
        throw new ProtocolError(`no handler for api ${h.apiKey}`);
    }
  }

  // ---- topics -----------------------------------------------------------------------------------

  private get partitionCount(): number {
    let n = 0;
    for (const t of this.topics.values()) n += t.partitions.length;
    return n;
  }

  /**
   * Whether a new topic of `partitions` stays within the caps (null) or why not: the error Kafka would send
   * (INVALID_PARTITIONS for the per-topic count, POLICY_VIOLATION — what a CreateTopicPolicy answers — for the
   * broker-wide ones) and a message naming the flag. The caps keep any local user from exhausting descriptors.
   */
  topicRefusal(partitions: number, autoCreate: boolean): { error: number; message: string } | null {
    if (partitions < 1 || partitions > this.cfg.maxPartitionsPerTopic) {
      return { error: ErrorCode.INVALID_PARTITIONS, message: `number of partitions must be 1..${this.cfg.maxPartitionsPerTopic} (--max-partitions-per-topic), got ${partitions}` };
    }
    const total = this.partitionCount;
    if (total + partitions > this.cfg.maxPartitions) {
      return { error: ErrorCode.POLICY_VIOLATION, message: `the broker holds ${total} partitions; ${partitions} more would exceed --max-partitions ${this.cfg.maxPartitions}` };
    }
    if (autoCreate) {
      let auto = 0;
      for (const t of this.topics.values()) if (t.config.autoCreated) auto++;
      if (auto >= this.cfg.maxAutoCreatedTopics) {
        return { error: ErrorCode.POLICY_VIOLATION, message: `${auto} topics were auto-created already (--max-auto-created-topics ${this.cfg.maxAutoCreatedTopics}); create topics explicitly` };
      }
    }
    return null;
  }

  createTopic(name: string, partitions: number, config: Partial<TopicConfig> = {}): Topic {
    const dir = join(this.cfg.dataDir, 'topics', name);
    fs.mkdirSync(dir, { recursive: true });
    const tc: TopicConfig = {
      partitions,
      retentionMs: config.retentionMs ?? null,
      retentionBytes: config.retentionBytes ?? null,
      segmentBytes: config.segmentBytes ?? null,
      maxMessageBytes: config.maxMessageBytes ?? null,
      autoCreated: config.autoCreated ?? false,
      timestampType: config.timestampType ?? null,
      timestampAfterMaxMs: config.timestampAfterMaxMs ?? null,
      timestampBeforeMaxMs: config.timestampBeforeMaxMs ?? null,
    };
    const logs: PartitionLog[] = [];
    try {
      for (let p = 0; p < partitions; p++) logs.push(PartitionLog.open(join(dir, String(p)), this.logConfig(tc)));
    } catch (err) {
      // E.g. out of file descriptors: leave no half-created topic behind.
      for (const l of logs) l.close();
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    // topic.json last: a topic directory without it is an unfinished creation and is ignored at startup.
    const tmp = join(dir, 'topic.json.tmp');
    fs.writeFileSync(tmp, JSON.stringify(tc));
    if (this.cfg.fsync !== 'never') {
      const fd = fs.openSync(tmp, 'r');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, join(dir, 'topic.json'));
    const t = { name, config: tc, partitions: logs };
    this.topics.set(name, t);
    this.log.info({ topic: name, partitions, timestampType: tc.timestampType ?? this.cfg.messageTimestampType }, 'created topic');
    return t;
  }

  /** Test/CLI helper: topic names and partition counts. */
  listTopics(): { name: string; partitions: number }[] {
    return [...this.topics.values()].map((t) => ({ name: t.name, partitions: t.partitions.length }));
  }

  /** Segment files per partition of a topic (tests of retention). */
  segmentCounts(topic: string): number[] {
    return this.topics.get(topic)?.partitions.map((p) => p.segmentCount) ?? [];
  }

  partition(topic: string, index: number): PartitionLog | undefined {
    return this.topics.get(topic)?.partitions[index];
  }

  wakeFetchers(logs: Set<PartitionLog>): void {
    for (const w of this.waiters) {
      for (const l of logs) {
        if (w.keys.has(l)) {
          w.wake();
          break;
        }
      }
    }
  }

}

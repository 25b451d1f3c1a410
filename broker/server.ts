// The bundled broker itself: TCP framing, per-connection ordered request handling, topic/partition
// storage, and one handler per Kafka API (see SUPPORTED_VERSIONS in protocol.ts for the versions).
import * as fs from 'fs';
import * as net from 'net';
import { join, resolve } from 'path';
import type { Logger } from '../lib/log';
import { gunzipSync } from 'zlib';
import { ATTR, BATCH, recordTimestampRange, setMaxTimestamp, splitBatches, type BatchInfo } from './batch';
import { GroupCoordinator, OffsetStore } from './groups';
import { PartitionLog, type FsyncPolicy, type LogConfig } from './log';
import {
  ApiKey,
  ErrorCode,
  ProtocolError,
  Reader,
  SUPPORTED_VERSIONS,
  Writer,
  frameResponse,
  frameResponseChunks,
  isSupported,
  readRequestHeader,
  validTopicName,
  type RequestHeader,
} from './protocol';

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
/** How Kafka writes "unlimited" for the timestamp bounds (Long.MAX_VALUE). */
const KAFKA_UNLIMITED = '9223372036854775807';
/** Largest decompressed gzip record set the timestamp check inflates; larger ones are judged by their header. */
const MAX_INFLATED_BYTES = 64 << 20;

interface TopicConfig {
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

interface Topic {
  name: string;
  config: TopicConfig;
  partitions: PartitionLog[];
}

const NODE_ID = 0;
const CLUSTER_ID = 'nettally-bundled-broker';
const NO_AUTHORIZED_OPS = -2147483648;
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

/** Topic configs CreateTopics understands: a bad value for one is INVALID_CONFIG (others are ignored). */
const TOPIC_CONFIG_NAMES = [
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
function timestampBound(text: string): number {
  const n = Number(text);
  return n > Number.MAX_SAFE_INTEGER ? -1 : n;
}

/** Ours back to Kafka's spelling, for DescribeConfigs. */
function showBound(ms: number | string): string {
  return ms === -1 ? KAFKA_UNLIMITED : String(ms);
}

/** Every handler calls this once its request is parsed, before acting on it: leftovers mean a garbled request. */
function endOfRequest(r: Reader): void {
  if (r.remaining !== 0) throw new ProtocolError(`${r.remaining} unexpected trailing bytes`);
}

/** Data-dir locks held by brokers in this process (their pid file names our own pid). */
const HELD_LOCKS = new Set<string>();

interface Waiter {
  keys: Set<PartitionLog>;
  wake: () => void;
}

export class Broker {
  private readonly topics = new Map<string, Topic>();
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  private readonly waiters = new Set<Waiter>();
  private readonly groups: GroupCoordinator;
  private offsets!: OffsetStore;
  private timers: NodeJS.Timeout[] = [];
  private nextProducerId = Date.now() * 1000;
  private closed = false;
  private lockPath: string | null = null;
  private port = 0;
  private readonly log: Logger;
  private readonly counters: BrokerStats = { connections: 0, refusedConnections: 0, idleClosed: 0, tooLargeBatches: 0, refusedTopics: 0, invalidTimestamps: 0 };
  /** Refused connections not yet logged: one warning per burst, not one per connection (a flood must not flood the log). */
  private refusedUnlogged = 0;
  private refusedLogTimer: NodeJS.Timeout | null = null;

  constructor(private readonly cfg: BrokerConfig) {
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

  private get advertisedHost(): string {
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
        return [frameResponse(h.correlationId, this.apiVersionsBody(0, ErrorCode.UNSUPPORTED_VERSION))];
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
        return this.apiVersionsBody(v, ErrorCode.NONE);
      case ApiKey.Metadata:
        return this.metadata(v, r);
      case ApiKey.Produce:
        return this.produce(v, r, peer);
      case ApiKey.Fetch:
        return this.fetch(v, r);
      case ApiKey.ListOffsets:
        return this.listOffsets(v, r);
      case ApiKey.CreateTopics:
        return this.createTopics(v, r);
      case ApiKey.InitProducerId:
        return this.initProducerId(v, r);
      case ApiKey.FindCoordinator:
        return this.findCoordinator(v, r);
      case ApiKey.JoinGroup:
        return this.joinGroup(v, r, h, peer);
      case ApiKey.SyncGroup:
        return this.syncGroup(v, r);
      case ApiKey.Heartbeat:
        return this.heartbeat(v, r);
      case ApiKey.LeaveGroup:
        return this.leaveGroup(v, r);
      case ApiKey.OffsetCommit:
        return this.offsetCommit(v, r);
      case ApiKey.DescribeGroups:
        return this.describeGroups(v, r);
      case ApiKey.ListGroups:
        return this.listGroups(v);
      case ApiKey.OffsetFetch:
        return this.offsetFetch(v, r);
      case ApiKey.DescribeConfigs:
        return this.describeConfigs(v, r);
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
  private topicRefusal(partitions: number, autoCreate: boolean): { error: number; message: string } | null {
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

  private createTopic(name: string, partitions: number, config: Partial<TopicConfig> = {}): Topic {
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

  private partition(topic: string, index: number): PartitionLog | undefined {
    return this.topics.get(topic)?.partitions[index];
  }

  // ---- handlers ---------------------------------------------------------------------------------

  private apiVersionsBody(v: number, error: number): Buffer {
    const w = new Writer(256).int16(error);
    w.array([...SUPPORTED_VERSIONS], (w2, [key, [min, max]]) => w2.int16(key).int16(min).int16(max));
    if (v >= 1) w.int32(0);
    return w.toBuffer();
  }

  private metadata(v: number, r: Reader): Buffer {
    const requested = v === 0 ? r.array((x) => x.string()) : r.nullableArray((x) => x.string());
    const allowAuto = v >= 4 ? r.bool() : true;
    if (v >= 8) {
      r.bool();
      r.bool();
    }
    endOfRequest(r);
    const all = requested === null || (v === 0 && requested.length === 0);
    const names = all ? [...this.topics.keys()] : (requested as string[]);
    const w = new Writer(512);
    if (v >= 3) w.int32(0);
    w.array([0], (w2) => {
      w2.int32(NODE_ID).string(this.advertisedHost).int32(this.port);
      if (v >= 1) w2.string(null);
    });
    if (v >= 2) w.string(CLUSTER_ID);
    if (v >= 1) w.int32(NODE_ID);
    w.array(names, (w2, name) => {
      let t = this.topics.get(name);
      let error: number = ErrorCode.NONE;
      if (!t) {
        if (!validTopicName(name)) error = ErrorCode.INVALID_TOPIC_EXCEPTION;
        else if (allowAuto && this.cfg.autoCreateTopics) {
          const refusal = this.topicRefusal(this.cfg.defaultPartitions, true);
          if (refusal) {
            // Metadata has no error message: the log says why (kafkajs/librdkafka show "policy violation").
            this.counters.refusedTopics++;
            this.log.warn({ topic: name, reason: refusal.message }, 'refused to auto-create topic');
            error = refusal.error;
          } else {
            try {
              t = this.createTopic(name, this.cfg.defaultPartitions, { autoCreated: true });
            } catch (err) {
              this.log.error({ err, topic: name }, 'auto-create failed');
              error = ErrorCode.UNKNOWN_SERVER_ERROR;
            }
          }
        }
        else error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
      }
      w2.int16(error).string(name);
      if (v >= 1) w2.bool(false);
      w2.array(t ? t.partitions.map((_, i) => i) : [], (w3, p) => {
        w3.int16(ErrorCode.NONE).int32(p).int32(NODE_ID);
        if (v >= 7) w3.int32(0);
        w3.array([NODE_ID], (w4, n) => w4.int32(n));
        w3.array([NODE_ID], (w4, n) => w4.int32(n));
        if (v >= 5) w3.array([], () => undefined);
      });
      if (v >= 8) w2.int32(NO_AUTHORIZED_OPS);
    });
    if (v >= 8) w.int32(NO_AUTHORIZED_OPS);
    return w.toBuffer();
  }

  private async produce(v: number, r: Reader, peer: string): Promise<Buffer | null> {
    r.nullableString(); // transactional_id: transactions are not supported (InitProducerId refuses them)
    const acks = r.int16();
    r.int32(); // timeout_ms: one replica, nothing to wait for but the fsync
    const topics = r.array((x) => ({
      name: x.string(),
      partitions: x.array((y) => ({ index: y.int32(), records: y.nullableBytes() })),
    }));
    endOfRequest(r);
    const results = new Map<string, { index: number; error: number; baseOffset: number; logStart: number }[]>();
    const toSync = new Set<PartitionLog>();
    const appended = new Set<PartitionLog>();
    for (const t of topics) {
      const out: { index: number; error: number; baseOffset: number; logStart: number }[] = [];
      results.set(t.name, out);
      for (const p of t.partitions) {
        const res = { index: p.index, error: ErrorCode.NONE as number, baseOffset: -1, logStart: -1 };
        out.push(res);
        if (acks !== 0 && acks !== 1 && acks !== -1) {
          res.error = ErrorCode.INVALID_REQUIRED_ACKS;
          continue;
        }
        const log = this.partition(t.name, p.index);
        if (!log) {
          res.error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
          continue;
        }
        res.logStart = log.startOffset;
        if (!p.records || p.records.length === 0) {
          res.error = ErrorCode.CORRUPT_MESSAGE;
          continue;
        }
        const topic = this.topics.get(t.name) as Topic;
        const maxMessageBytes = topic.config.maxMessageBytes ?? this.cfg.maxMessageBytes;
        const batches = splitBatches(p.records, maxMessageBytes);
        if (batches === 'too-large') {
          // As Kafka: the partition's whole record set is refused, nothing of it stored; the client must split.
          res.error = ErrorCode.MESSAGE_TOO_LARGE;
          this.counters.tooLargeBatches++;
          this.log.warn({ peer, topic: t.name, partition: p.index, bytes: p.records.length, maxMessageBytes }, 'refused produce: record batch larger than max.message.bytes');
          continue;
        }
        if (typeof batches === 'string') {
          res.error = batches === 'bad-magic' ? ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT : ErrorCode.CORRUPT_MESSAGE;
          this.log.warn({ peer, topic: t.name, partition: p.index, problem: batches }, 'rejected produced records');
          continue;
        }
        if (p.records.length > (topic.config.segmentBytes ?? this.cfg.segmentBytes)) {
          // Kafka refuses a record set that cannot fit in one segment with RECORD_LIST_TOO_LARGE.
          res.error = ErrorCode.RECORD_LIST_TOO_LARGE;
          continue;
        }
        const logAppendTime = (topic.config.timestampType ?? this.cfg.messageTimestampType) === 'LogAppendTime';
        const now = Date.now();
        const ts = this.checkTimestamps(p.records, batches, topic, logAppendTime, now);
        if (ts.error !== ErrorCode.NONE) {
          res.error = ts.error;
          if (ts.error === ErrorCode.INVALID_TIMESTAMP) this.counters.invalidTimestamps++;
          this.log.warn({ peer, topic: t.name, partition: p.index, reason: ts.reason }, 'refused produce: ' + ts.reason);
          continue;
        }
        const seq = this.checkSequences(log, batches);
        if (seq.error !== ErrorCode.NONE || seq.duplicateOffset >= 0) {
          res.error = seq.error;
          res.baseOffset = seq.duplicateOffset;
          continue;
        }
        // As Kafka's LogValidator: LogAppendTime stamps every batch with the broker clock; CreateTime batches whose
        // header misstates their records' newest timestamp (or claims LogAppendTime) are corrected.
        for (const b of batches) {
          const fix = logAppendTime ? now : ts.fixes.get(b);
          if (fix === undefined) continue;
          setMaxTimestamp(p.records, b.position, logAppendTime, fix);
          b.maxTimestamp = fix;
          b.attributes = p.records.readInt16BE(b.position + BATCH.ATTRIBUTES);
        }
        try {
          res.baseOffset = log.append(p.records, batches);
          appended.add(log);
          if (this.cfg.fsync === 'always' && acks !== 0) toSync.add(log);
        } catch (err) {
          this.log.error({ err, topic: t.name, partition: p.index }, 'append failed');
          res.error = ErrorCode.KAFKA_STORAGE_ERROR;
        }
      }
    }
    if (appended.size > 0) this.wakeFetchers(appended);
    if (toSync.size > 0) {
      try {
        await Promise.all([...toSync].map((l) => l.sync()));
      } catch (err) {
        this.log.error({ err }, 'fsync failed; answering produce with KAFKA_STORAGE_ERROR');
        for (const out of results.values()) for (const res of out) if (res.error === ErrorCode.NONE) res.error = ErrorCode.KAFKA_STORAGE_ERROR;
      }
    }
    if (acks === 0) return null;
    const w = new Writer(128);
    w.array([...results], (w2, [name, parts]) => {
      w2.string(name);
      w2.array(parts, (w3, res) => {
        w3.int32(res.index).int16(res.error).int64(res.baseOffset).int64(-1);
        if (v >= 5) w3.int64(res.logStart);
      });
    });
    w.int32(0);
    return w.toBuffer();
  }

  /**
   * Kafka's timestamp validation of a produced record set (LogValidator): with CreateTime every record's timestamp
   * (firstTimestamp + timestampDelta; -1 = none) must lie within [now − before.max.ms, now + after.max.ms], else the
   * whole set is INVALID_TIMESTAMP. Records are read for uncompressed and gzip batches (gzip inflated with zlib, at
   * most MAX_INFLATED_BYTES); other codecs (snappy, lz4, zstd), which the broker does not decompress, are judged by
   * their header's first and max timestamps. Records that do not parse are CORRUPT_MESSAGE. `fixes`: CreateTime
   * batches whose MaxTimestamp or type bit must be rewritten to the records' newest timestamp.
   */
  private checkTimestamps(
    set: Buffer,
    batches: BatchInfo[],
    topic: Topic,
    logAppendTime: boolean,
    now: number,
  ): { error: number; reason: string; fixes: Map<BatchInfo, number> } {
    const fixes = new Map<BatchInfo, number>();
    const ok = { error: ErrorCode.NONE as number, reason: '', fixes };
    const after = topic.config.timestampAfterMaxMs ?? this.cfg.messageTimestampAfterMaxMs;
    const before = topic.config.timestampBeforeMaxMs ?? this.cfg.messageTimestampBeforeMaxMs;
    const outOfRange = (ts: number): boolean => ts !== -1 && ((after >= 0 && ts - now > after) || (before >= 0 && now - ts > before));
    const invalid = (ts: number): { error: number; reason: string; fixes: Map<BatchInfo, number> } => ({
      error: ErrorCode.INVALID_TIMESTAMP,
      reason: `record timestamp ${ts} is outside [now - message.timestamp.before.max.ms, now + message.timestamp.after.max.ms] = [${before < 0 ? '-inf' : now - before}, ${after < 0 ? 'inf' : now + after}]`,
      fixes,
    });
    for (const b of batches) {
      const codec = b.attributes & ATTR.CODEC_MASK;
      // A LogAppendTime topic replaces every timestamp: only uncompressed records are still checked for framing.
      if (logAppendTime && codec !== 0) continue;
      const first = Number(set.readBigInt64BE(b.position + BATCH.FIRST_TIMESTAMP));
      let region: Buffer | null = null;
      if (codec === 0) region = set.subarray(b.position + BATCH.HEADER_SIZE, b.position + b.size);
      else if (codec === ATTR.CODEC_GZIP) {
        try {
          region = gunzipSync(set.subarray(b.position + BATCH.HEADER_SIZE, b.position + b.size), { maxOutputLength: MAX_INFLATED_BYTES });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ERR_BUFFER_TOO_LARGE') return { error: ErrorCode.CORRUPT_MESSAGE, reason: `gzip records do not inflate: ${(err as Error).message}`, fixes };
          this.log.warn({ topic: topic.name, bytes: b.size }, `gzip batch inflates beyond ${MAX_INFLATED_BYTES} bytes; timestamps judged by its header`);
        }
      }
      if (region === null) {
        // Not decompressed: the header's timestamps are all there is (readers of such a batch use them too).
        for (const ts of [first, b.maxTimestamp]) if (outOfRange(ts)) return invalid(ts);
        continue;
      }
      const range = recordTimestampRange(region, 0, region.length, b.recordCount, first);
      if (range === 'corrupt') return { error: ErrorCode.CORRUPT_MESSAGE, reason: 'records do not match the batch header (Record v2 framing)', fixes };
      if (logAppendTime) continue;
      for (const ts of [range.min, range.max]) if (outOfRange(ts)) return invalid(ts);
      if (b.maxTimestamp !== range.max || (b.attributes & ATTR.LOG_APPEND_TIME) !== 0) fixes.set(b, range.max);
    }
    return ok;
  }

  private checkSequences(log: PartitionLog, batches: BatchInfo[]): { error: number; duplicateOffset: number } {
    let duplicates = 0;
    let duplicateOffset = -1;
    for (const b of batches) {
      const c = log.checkSequence(b);
      if (c.kind === 'fenced') return { error: ErrorCode.INVALID_PRODUCER_EPOCH, duplicateOffset: -1 };
      if (c.kind === 'out-of-order') return { error: ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, duplicateOffset: -1 };
      if (c.kind === 'duplicate') {
        if (duplicates === 0) duplicateOffset = c.baseOffset;
        duplicates++;
      }
    }
    // A retried request is answered with the offset the original got, and not appended again.
    if (duplicates === batches.length) return { error: ErrorCode.NONE, duplicateOffset };
    if (duplicates > 0) return { error: ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, duplicateOffset: -1 };
    return { error: ErrorCode.NONE, duplicateOffset: -1 };
  }

  private wakeFetchers(logs: Set<PartitionLog>): void {
    for (const w of this.waiters) {
      for (const l of logs) {
        if (w.keys.has(l)) {
          w.wake();
          break;
        }
      }
    }
  }

  private async fetch(v: number, r: Reader): Promise<Buffer[]> {
    r.int32(); // replica_id
    const maxWaitMs = Math.max(0, r.int32());
    const minBytes = r.int32();
    const maxBytes = r.int32();
    r.int8(); // isolation_level: no transactions, so read_committed == read_uncommitted
    if (v >= 7) {
      r.int32(); // session_id: no incremental fetch sessions; always answer with session 0 (full)
      r.int32();
    }
    const topics = r.array((x) => ({
      name: x.string(),
      partitions: x.array((y) => {
        const index = y.int32();
        if (v >= 9) y.int32();
        const offset = y.int64();
        if (v >= 5) y.int64();
        return { index, offset, maxBytes: y.int32() };
      }),
    }));
    if (v >= 7) r.array((x) => ({ name: x.string(), partitions: x.array((y) => y.int32()) }));
    if (v >= 11) r.string();
    endOfRequest(r);

    const deadline = Date.now() + maxWaitMs;
    const logs = new Set<PartitionLog>();
    for (const t of topics) for (const p of t.partitions) {
      const l = this.partition(t.name, p.index);
      if (l) logs.add(l);
    }
    type PartResult = { index: number; error: number; hw: number; start: number; records: Buffer | null };
    let results: { name: string; parts: PartResult[] }[] = [];
    // As Kafka (KIP-74): the response is capped by the request's max bytes and the broker's fetch.max.bytes,
    // each partition by its own max bytes; only the first batch of the first partition with data may exceed
    // them (so one large batch cannot stall a consumer); after that a batch that does not fit is left out.
    const cap = Math.max(0, Math.min(maxBytes, this.cfg.fetchMaxBytes));
    const wantBytes = Math.min(minBytes, cap);
    for (;;) {
      let budget = cap;
      let total = 0;
      let anyError = false;
      results = topics.map((t) => ({
        name: t.name,
        parts: t.partitions.map((p) => {
          const log = this.partition(t.name, p.index);
          if (!log) {
            anyError = true;
            return { index: p.index, error: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, hw: -1, start: -1, records: null };
          }
          const limit = Math.max(0, Math.min(p.maxBytes, budget));
          const data = log.read(p.offset, limit, total === 0);
          if (data === null) {
            anyError = true;
            return { index: p.index, error: ErrorCode.OFFSET_OUT_OF_RANGE, hw: log.nextOffset, start: log.startOffset, records: null };
          }
          total += data.length;
          budget = Math.max(0, budget - data.length);
          return { index: p.index, error: ErrorCode.NONE, hw: log.nextOffset, start: log.startOffset, records: data };
        }),
      }));
      const left = deadline - Date.now();
      if (total >= wantBytes || anyError || left <= 0 || this.closed || logs.size === 0) break;
      await new Promise<void>((resolve) => {
        const waiter: Waiter = {
          keys: logs,
          wake: () => {
            clearTimeout(timer);
            this.waiters.delete(waiter);
            resolve();
          },
        };
        const timer = setTimeout(waiter.wake, left);
        this.waiters.add(waiter);
      });
    }
    const w = new Writer(1024);
    w.int32(0);
    if (v >= 7) w.int16(ErrorCode.NONE).int32(0);
    w.array(results, (w2, t) => {
      w2.string(t.name);
      w2.array(t.parts, (w3, p) => {
        w3.int32(p.index).int16(p.error).int64(p.hw).int64(p.hw);
        if (v >= 5) w3.int64(p.start);
        w3.array([], () => undefined);
        if (v >= 11) w3.int32(-1);
        w3.bytesRef(p.records);
      });
    });
    return w.toChunks();
  }

  private listOffsets(v: number, r: Reader): Buffer {
    r.int32(); // replica_id
    if (v >= 2) r.int8();
    const topics = r.array((x) => ({
      name: x.string(),
      partitions: x.array((y) => {
        const index = y.int32();
        if (v >= 4) y.int32();
        return { index, timestamp: y.int64() };
      }),
    }));
    endOfRequest(r);
    const w = new Writer(256);
    if (v >= 2) w.int32(0);
    w.array(topics, (w2, t) => {
      w2.string(t.name);
      w2.array(t.partitions, (w3, p) => {
        const log = this.partition(t.name, p.index);
        let offset = -1;
        let error: number = ErrorCode.NONE;
        if (!log) error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
        else if (p.timestamp === -1) offset = log.nextOffset;
        else if (p.timestamp === -2) offset = log.startOffset;
        else offset = log.offsetForTimestamp(p.timestamp);
        w3.int32(p.index).int16(error).int64(-1).int64(offset);
        if (v >= 4) w3.int32(0);
      });
    });
    return w.toBuffer();
  }

  private createTopics(v: number, r: Reader): Buffer {
    const topics = r.array((x) => ({
      name: x.string(),
      partitions: x.int32(),
      replication: x.int16(),
      assignments: x.array((y) => ({ index: y.int32(), brokers: y.array((z) => z.int32()) })),
      configs: x.array((y) => ({ name: y.string(), value: y.nullableString() })),
    }));
    r.int32(); // timeout_ms
    const validateOnly = v >= 1 ? r.bool() : false;
    endOfRequest(r);
    const w = new Writer(128);
    if (v >= 2) w.int32(0);
    w.array(topics, (w2, t) => {
      let error: number = ErrorCode.NONE;
      let message: string | null = null;
      let refusal: { error: number; message: string } | null;
      const partitions = t.partitions === -1 ? (t.assignments.length || this.cfg.defaultPartitions) : t.partitions;
      const config: Partial<TopicConfig> = {};
      for (const c of t.configs) {
        const n = c.value === null ? NaN : Number(c.value);
        if (c.name === 'retention.ms' && Number.isInteger(n)) config.retentionMs = n;
        else if (c.name === 'retention.bytes' && Number.isInteger(n)) config.retentionBytes = n;
        else if (c.name === 'segment.bytes' && Number.isInteger(n) && n >= 1024) config.segmentBytes = n;
        else if (c.name === 'max.message.bytes' && Number.isInteger(n) && n >= 0 && n <= 2 ** 31 - 1) config.maxMessageBytes = n;
        else if (c.name === 'cleanup.policy' && c.value === 'delete') continue;
        else if (c.name === 'message.timestamp.type' && (c.value === 'CreateTime' || c.value === 'LogAppendTime')) config.timestampType = c.value;
        else if (c.name === 'message.timestamp.after.max.ms' && c.value !== null && /^\d{1,19}$/.test(c.value)) config.timestampAfterMaxMs = timestampBound(c.value);
        else if (c.name === 'message.timestamp.before.max.ms' && c.value !== null && /^\d{1,19}$/.test(c.value)) config.timestampBeforeMaxMs = timestampBound(c.value);
        else if (TOPIC_CONFIG_NAMES.includes(c.name)) {
          error = ErrorCode.INVALID_CONFIG;
          message = `unsupported value ${JSON.stringify(c.value)} for ${c.name}${c.name === 'message.timestamp.type' ? ' (CreateTime or LogAppendTime)' : c.name.startsWith('message.timestamp.') ? ' (milliseconds, 0..9223372036854775807)' : ''}`;
        }
        // Other topic configs (min.insync.replicas, compression.type, ...) do not apply to one node: ignored.
      }
      if (error !== ErrorCode.NONE) {
        // keep the config error
      } else if (!validTopicName(t.name)) {
        error = ErrorCode.INVALID_TOPIC_EXCEPTION;
        message = 'topic names are 1-249 characters of [a-zA-Z0-9._-]';
      } else if (this.topics.has(t.name)) {
        error = ErrorCode.TOPIC_ALREADY_EXISTS;
        message = `topic ${t.name} already exists`;
      } else if (t.replication !== -1 && t.replication !== 1) {
        error = ErrorCode.INVALID_REPLICATION_FACTOR;
        message = `this single-node broker only supports replication factor 1, got ${t.replication}`;
      } else if ((refusal = this.topicRefusal(partitions, false))) {
        ({ error, message } = refusal);
        this.counters.refusedTopics++;
        this.log.warn({ topic: t.name, partitions, reason: message }, 'refused to create topic');
      } else if (!validateOnly) {
        try {
          this.createTopic(t.name, partitions, config);
        } catch (err) {
          this.log.error({ err, topic: t.name }, 'create topic failed');
          error = ErrorCode.UNKNOWN_SERVER_ERROR;
          message = `cannot create ${t.name}: ${(err as Error).message}`;
        }
      }
      w2.string(t.name).int16(error);
      if (v >= 1) w2.string(message);
    });
    return w.toBuffer();
  }

  /** The topic-level settings of a topic: value, and whether the topic overrides the broker's. */
  private topicConfigs(t: Topic): [string, string, boolean][] {
    const c = t.config;
    const entry = (name: string, own: number | string | null | undefined, broker: number | string, show: (v: number | string) => string = String): [string, string, boolean] => [
      name,
      show(own ?? broker),
      own !== null && own !== undefined,
    ];
    return [
      ['cleanup.policy', 'delete', false],
      entry('max.message.bytes', c.maxMessageBytes, this.cfg.maxMessageBytes),
      entry('message.timestamp.after.max.ms', c.timestampAfterMaxMs, this.cfg.messageTimestampAfterMaxMs, showBound),
      entry('message.timestamp.before.max.ms', c.timestampBeforeMaxMs, this.cfg.messageTimestampBeforeMaxMs, showBound),
      entry('message.timestamp.type', c.timestampType, this.cfg.messageTimestampType),
      entry('retention.bytes', c.retentionBytes, this.cfg.retentionBytes),
      entry('retention.ms', c.retentionMs, this.cfg.retentionMs),
      entry('segment.bytes', c.segmentBytes, this.cfg.segmentBytes),
    ];
  }

  /** The broker's settings under their Kafka names (what the flags set). */
  private brokerConfigs(): [string, string, boolean][] {
    const c = this.cfg;
    return (
      [
        ['auto.create.topics.enable', c.autoCreateTopics],
        ['connections.max.idle.ms', c.connectionsMaxIdleMs],
        ['fetch.max.bytes', c.fetchMaxBytes],
        ['group.max.session.timeout.ms', c.groupMaxSessionTimeoutMs],
        ['group.min.session.timeout.ms', c.groupMinSessionTimeoutMs],
        ['log.message.timestamp.after.max.ms', showBound(c.messageTimestampAfterMaxMs)],
        ['log.message.timestamp.before.max.ms', showBound(c.messageTimestampBeforeMaxMs)],
        ['log.message.timestamp.type', c.messageTimestampType],
        ['log.retention.bytes', c.retentionBytes],
        ['log.retention.ms', c.retentionMs],
        ['log.segment.bytes', c.segmentBytes],
        ['max.connections', c.maxConnections],
        ['message.max.bytes', c.maxMessageBytes],
        ['num.partitions', c.defaultPartitions],
        ['socket.request.max.bytes', c.maxRequestBytes],
      ] as [string, number | boolean | string][]
    ).map(([k, val]) => [k, String(val), false]);
  }

  /**
   * DescribeConfigs v0–2 for topics (their max.message.bytes, retention, segment size; "dynamic topic config"
   * when set at creation) and for this broker (id 0: the enforced limits under Kafka's names). Read only.
   */
  private describeConfigs(v: number, r: Reader): Buffer {
    const TOPIC = 2;
    const BROKER = 4;
    const SOURCE_TOPIC = 1;
    const SOURCE_STATIC_BROKER = 4;
    const resources = r.array((x) => ({ type: x.int8(), name: x.string(), names: x.nullableArray((y) => y.string()) }));
    if (v >= 1) r.bool(); // include_synonyms: there are none to report
    endOfRequest(r);
    const w = new Writer(512).int32(0);
    w.array(resources, (w2, res) => {
      let error: number = ErrorCode.NONE;
      let message: string | null = null;
      let entries: [string, string, boolean][] = [];
      if (res.type === TOPIC) {
        const t = this.topics.get(res.name);
        if (t) entries = this.topicConfigs(t);
        else [error, message] = [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, `topic ${res.name} does not exist`];
      } else if (res.type === BROKER && (res.name === String(NODE_ID) || res.name === '')) {
        entries = this.brokerConfigs();
      } else {
        [error, message] = [ErrorCode.INVALID_REQUEST, `resource type ${res.type} ${JSON.stringify(res.name)} is not described by this broker (topics, and broker ${NODE_ID})`];
      }
      if (res.names !== null) entries = entries.filter(([name]) => (res.names as string[]).includes(name));
      w2.int16(error).string(message).int8(res.type).string(res.name);
      w2.array(entries, (w3, [name, value, own]) => {
        w3.string(name).string(value).bool(true);
        if (v === 0) w3.bool(!own);
        else w3.int8(own ? SOURCE_TOPIC : SOURCE_STATIC_BROKER);
        w3.bool(false);
        if (v >= 1) w3.array([], () => undefined);
      });
    });
    return w.toBuffer();
  }

  private initProducerId(_v: number, r: Reader): Buffer {
    const transactionalId = r.nullableString();
    r.int32();
    endOfRequest(r);
    const w = new Writer(32).int32(0);
    // Transactions are out of scope; idempotence (a producer id and sequence numbers) is supported.
    if (transactionalId !== null) return w.int16(ErrorCode.INVALID_REQUEST).int64(-1).int16(-1).toBuffer();
    return w.int16(ErrorCode.NONE).int64(this.nextProducerId++).int16(0).toBuffer();
  }

  private findCoordinator(v: number, r: Reader): Buffer {
    r.string();
    if (v >= 1) r.int8();
    endOfRequest(r);
    const w = new Writer(64);
    if (v >= 1) w.int32(0);
    w.int16(ErrorCode.NONE);
    if (v >= 1) w.string(null);
    return w.int32(NODE_ID).string(this.advertisedHost).int32(this.port).toBuffer();
  }

  private async joinGroup(v: number, r: Reader, h: RequestHeader, peer: string): Promise<Buffer> {
    const groupId = r.string();
    const sessionTimeoutMs = r.int32();
    const rebalanceTimeoutMs = v >= 1 ? r.int32() : sessionTimeoutMs;
    const memberId = r.string();
    const groupInstanceId = v >= 5 ? r.nullableString() : null;
    const protocolType = r.string();
    const protocols = r.array((x) => ({ name: x.string(), metadata: x.bytes() }));
    endOfRequest(r);
    const res = await this.groups.join({
      groupId,
      sessionTimeoutMs,
      rebalanceTimeoutMs,
      memberId,
      groupInstanceId,
      protocolType,
      protocols,
      clientId: h.clientId ?? '',
      clientHost: peer,
    });
    const w = new Writer(256);
    if (v >= 2) w.int32(0);
    w.int16(res.error).int32(res.generation).string(res.protocol).string(res.leader).string(res.memberId);
    w.array(res.members, (w2, m) => {
      w2.string(m.memberId);
      if (v >= 5) w2.string(m.groupInstanceId);
      w2.bytes(m.metadata);
    });
    return w.toBuffer();
  }

  private async syncGroup(v: number, r: Reader): Promise<Buffer> {
    const groupId = r.string();
    const generation = r.int32();
    const memberId = r.string();
    if (v >= 3) r.nullableString();
    const assignments = r.array((x) => ({ memberId: x.string(), assignment: x.bytes() }));
    endOfRequest(r);
    const res = await this.groups.sync(groupId, generation, memberId, assignments);
    const w = new Writer(128);
    if (v >= 1) w.int32(0);
    return w.int16(res.error).bytes(res.assignment).toBuffer();
  }

  private heartbeat(v: number, r: Reader): Buffer {
    const groupId = r.string();
    const generation = r.int32();
    const memberId = r.string();
    if (v >= 3) r.nullableString();
    endOfRequest(r);
    const error = this.groups.heartbeat(groupId, generation, memberId);
    const w = new Writer(8);
    if (v >= 1) w.int32(0);
    return w.int16(error).toBuffer();
  }

  private leaveGroup(v: number, r: Reader): Buffer {
    const groupId = r.string();
    const memberId = r.string();
    endOfRequest(r);
    const error = this.groups.leave(groupId, memberId);
    const w = new Writer(8);
    if (v >= 1) w.int32(0);
    return w.int16(error).toBuffer();
  }

  private describeGroups(v: number, r: Reader): Buffer {
    const ids = r.array((x) => x.string());
    endOfRequest(r);
    const w = new Writer(256);
    if (v >= 1) w.int32(0);
    w.array(ids, (w2, id) => {
      const d = this.groups.describe(id) ?? { state: this.offsets.all(id).length > 0 ? 'Empty' : 'Dead', protocolType: '', protocol: '', members: [] };
      w2.int16(ErrorCode.NONE).string(id).string(d.state).string(d.protocolType).string(d.protocol);
      w2.array(d.members, (w3, m) => w3.string(m.memberId).string(m.clientId).string(m.clientHost).bytes(m.metadata).bytes(m.assignment));
    });
    return w.toBuffer();
  }

  private listGroups(v: number): Buffer {
    const w = new Writer(256);
    if (v >= 1) w.int32(0);
    w.int16(ErrorCode.NONE);
    w.array(this.groups.list(), (w2, g) => w2.string(g.groupId).string(g.protocolType));
    return w.toBuffer();
  }

  private async offsetCommit(v: number, r: Reader): Promise<Buffer> {
    const groupId = r.string();
    const generation = r.int32();
    const memberId = r.string();
    if (v >= 7) r.nullableString();
    if (v >= 2 && v <= 4) r.int64(); // retention_time_ms: committed offsets are kept until overwritten
    const topics = r.array((x) => ({
      name: x.string(),
      partitions: x.array((y) => {
        const index = y.int32();
        const offset = y.int64();
        if (v >= 6) y.int32();
        return { index, offset, metadata: y.nullableString() };
      }),
    }));
    endOfRequest(r);
    const allowed = groupId === '' ? ErrorCode.INVALID_GROUP_ID : this.groups.canCommit(groupId, generation, memberId);
    const errors = new Map<string, number>();
    const entries: { topic: string; partition: number; offset: number; metadata: string | null }[] = [];
    for (const t of topics) {
      for (const p of t.partitions) {
        let error: number = allowed;
        if (error === ErrorCode.NONE && !this.partition(t.name, p.index)) error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
        if (error === ErrorCode.NONE) entries.push({ topic: t.name, partition: p.index, offset: p.offset, metadata: p.metadata });
        errors.set(`${t.name}\0${p.index}`, error);
      }
    }
    try {
      await this.offsets.commit(groupId, entries);
    } catch (err) {
      this.log.error({ err, group: groupId }, 'offset commit write failed');
      for (const e of entries) errors.set(`${e.topic}\0${e.partition}`, ErrorCode.COORDINATOR_NOT_AVAILABLE);
    }
    const w = new Writer(128);
    if (v >= 3) w.int32(0);
    w.array(topics, (w2, t) => {
      w2.string(t.name);
      w2.array(t.partitions, (w3, p) => w3.int32(p.index).int16(errors.get(`${t.name}\0${p.index}`) ?? ErrorCode.NONE));
    });
    return w.toBuffer();
  }

  private offsetFetch(v: number, r: Reader): Buffer {
    const groupId = r.string();
    const requested = r.nullableArray((x) => ({ name: x.string(), partitions: x.array((y) => y.int32()) }));
    endOfRequest(r);
    let topics: { name: string; partitions: number[] }[];
    if (requested === null) {
      const byTopic = new Map<string, number[]>();
      for (const e of this.offsets.all(groupId)) {
        const list = byTopic.get(e.topic) ?? [];
        list.push(e.partition);
        byTopic.set(e.topic, list);
      }
      topics = [...byTopic].map(([name, partitions]) => ({ name, partitions }));
    } else {
      topics = requested;
    }
    const w = new Writer(256);
    if (v >= 3) w.int32(0);
    w.array(topics, (w2, t) => {
      w2.string(t.name);
      w2.array(t.partitions, (w3, p) => {
        const c = this.offsets.get(groupId, t.name, p);
        w3.int32(p).int64(c ? c.offset : -1);
        if (v >= 5) w3.int32(-1);
        w3.string(c ? c.metadata : '').int16(ErrorCode.NONE);
      });
    });
    if (v >= 2) w.int16(ErrorCode.NONE);
    return w.toBuffer();
  }
}

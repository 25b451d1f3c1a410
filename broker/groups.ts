// Consumer-group coordination for the broker (join/sync/heartbeat/leave, rebalance on join, leave and
// session expiry) and the durable committed-offset store (a JSON-lines log, compacted on startup/growth).
import { randomUUID } from 'crypto';
import * as fs from 'fs';
import { join } from 'path';
import type { Logger } from '../lib/log';
import { ErrorCode } from './protocol';
import type { FsyncPolicy } from './log';

export interface JoinRequest {
  groupId: string;
  sessionTimeoutMs: number;
  rebalanceTimeoutMs: number;
  memberId: string;
  groupInstanceId: string | null;
  protocolType: string;
  protocols: { name: string; metadata: Buffer }[];
  clientId: string;
  clientHost: string;
}

export interface JoinResult {
  error: number;
  generation: number;
  protocol: string;
  leader: string;
  memberId: string;
  members: { memberId: string; groupInstanceId: string | null; metadata: Buffer }[];
}

interface Member {
  id: string;
  groupInstanceId: string | null;
  clientId: string;
  clientHost: string;
  sessionTimeoutMs: number;
  rebalanceTimeoutMs: number;
  protocols: { name: string; metadata: Buffer }[];
  lastSeen: number;
  assignment: Buffer;
  pendingJoin: ((r: JoinResult) => void) | null;
  pendingSync: ((r: { error: number; assignment: Buffer }) => void) | null;
}

type GroupState = 'Empty' | 'PreparingRebalance' | 'CompletingRebalance' | 'Stable';

interface Group {
  id: string;
  state: GroupState;
  generation: number;
  protocolType: string;
  protocol: string;
  leader: string;
  members: Map<string, Member>;
  rebalanceTimer: NodeJS.Timeout | null;
}

/** Kafka's group.min.session.timeout.ms / group.max.session.timeout.ms defaults. */
export const GROUP_SESSION_DEFAULTS = { minSessionTimeoutMs: 6000, maxSessionTimeoutMs: 1_800_000 };

function failedJoin(error: number, memberId = ''): JoinResult {
  return { error, generation: -1, protocol: '', leader: '', memberId, members: [] };
}

export class GroupCoordinator {
  private readonly groups = new Map<string, Group>();
  private readonly expiry: NodeJS.Timeout;

  constructor(
    private readonly logger: Logger,
    private readonly limits: { minSessionTimeoutMs: number; maxSessionTimeoutMs: number } = GROUP_SESSION_DEFAULTS,
  ) {
    this.expiry = setInterval(() => this.expireMembers(), 200);
    this.expiry.unref();
  }

  private group(id: string): Group {
    let g = this.groups.get(id);
    if (!g) {
      g = { id, state: 'Empty', generation: 0, protocolType: '', protocol: '', leader: '', members: new Map(), rebalanceTimer: null };
      this.groups.set(id, g);
    }
    return g;
  }

  join(req: JoinRequest): Promise<JoinResult> {
    if (req.groupId === '') return Promise.resolve(failedJoin(ErrorCode.INVALID_GROUP_ID));
    if (req.sessionTimeoutMs < this.limits.minSessionTimeoutMs || req.sessionTimeoutMs > this.limits.maxSessionTimeoutMs) {
      this.logger.warn({ group: req.groupId, sessionTimeoutMs: req.sessionTimeoutMs, ...this.limits }, 'refused join: session timeout outside the group limits');
      return Promise.resolve(failedJoin(ErrorCode.INVALID_SESSION_TIMEOUT));
    }
    const g = this.group(req.groupId);
    let member = req.memberId === '' ? undefined : g.members.get(req.memberId);
    if (req.memberId !== '' && !member) return Promise.resolve(failedJoin(ErrorCode.UNKNOWN_MEMBER_ID, req.memberId));
    if (g.members.size > 0 && (!member || g.members.size > 1)) {
      const others = [...g.members.values()].filter((m) => m !== member);
      const common = req.protocols.some((p) => others.every((m) => m.protocols.some((q) => q.name === p.name)));
      if (req.protocolType !== g.protocolType || !common) return Promise.resolve(failedJoin(ErrorCode.INCONSISTENT_GROUP_PROTOCOL));
    }
    if (!member) {
      member = {
        id: `${req.clientId || 'member'}-${randomUUID()}`,
        groupInstanceId: req.groupInstanceId,
        clientId: req.clientId,
        clientHost: req.clientHost,
        sessionTimeoutMs: 0,
        rebalanceTimeoutMs: 0,
        protocols: [],
        lastSeen: 0,
        assignment: Buffer.alloc(0),
        pendingJoin: null,
        pendingSync: null,
      };
      g.members.set(member.id, member);
      this.logger.info({ group: g.id, member: member.id, client: req.clientId, members: g.members.size }, 'member joined group');
    }
    member.sessionTimeoutMs = req.sessionTimeoutMs;
    member.rebalanceTimeoutMs = Math.max(req.rebalanceTimeoutMs, req.sessionTimeoutMs);
    member.protocols = req.protocols;
    member.lastSeen = Date.now();
    g.protocolType = req.protocolType;
    const m = member;
    return new Promise<JoinResult>((resolve) => {
      // A second join on the same member id supersedes the first (its connection may be gone).
      m.pendingJoin?.(failedJoin(ErrorCode.REBALANCE_IN_PROGRESS, m.id));
      m.pendingJoin = resolve;
      if (g.state !== 'PreparingRebalance') this.prepareRebalance(g, `join of ${m.id}`);
      this.maybeCompleteJoin(g);
    });
  }

  private prepareRebalance(g: Group, reason: string): void {
    for (const m of g.members.values()) {
      if (m.pendingSync) {
        m.pendingSync({ error: ErrorCode.REBALANCE_IN_PROGRESS, assignment: Buffer.alloc(0) });
        m.pendingSync = null;
      }
    }
    if (g.members.size === 0) {
      this.toEmpty(g);
      return;
    }
    g.state = 'PreparingRebalance';
    this.logger.info({ group: g.id, generation: g.generation, reason }, 'group rebalancing');
    if (g.rebalanceTimer) clearTimeout(g.rebalanceTimer);
    const timeout = Math.max(...[...g.members.values()].map((m) => m.rebalanceTimeoutMs));
    g.rebalanceTimer = setTimeout(() => {
      g.rebalanceTimer = null;
      // Members that did not rejoin within the rebalance timeout are dropped from the new generation.
      for (const m of [...g.members.values()]) {
        if (!m.pendingJoin) {
          this.logger.info({ group: g.id, member: m.id }, 'member removed: did not rejoin within the rebalance timeout');
          g.members.delete(m.id);
        }
      }
      this.maybeCompleteJoin(g);
    }, timeout);
    g.rebalanceTimer.unref();
  }

  private toEmpty(g: Group): void {
    if (g.rebalanceTimer) clearTimeout(g.rebalanceTimer);
    g.rebalanceTimer = null;
    g.state = 'Empty';
    g.leader = '';
    g.protocol = '';
    g.generation++;
  }

  private maybeCompleteJoin(g: Group): void {
    if (g.state !== 'PreparingRebalance') return;
    if (g.members.size === 0) {
      this.toEmpty(g);
      return;
    }
    for (const m of g.members.values()) if (!m.pendingJoin) return;
    if (g.rebalanceTimer) clearTimeout(g.rebalanceTimer);
    g.rebalanceTimer = null;
    const members = [...g.members.values()];
    if (!g.members.has(g.leader)) g.leader = members[0].id;
    const leader = g.members.get(g.leader) as Member;
    const chosen = leader.protocols.find((p) => members.every((m) => m.protocols.some((q) => q.name === p.name)));
    g.generation++;
    g.protocol = chosen?.name ?? '';
    g.state = 'CompletingRebalance';
    const now = Date.now();
    this.logger.info({ group: g.id, generation: g.generation, members: members.length, leader: g.leader, protocol: g.protocol }, 'group rebalanced');
    for (const m of members) {
      const resolve = m.pendingJoin as (r: JoinResult) => void;
      m.pendingJoin = null;
      m.lastSeen = now;
      m.assignment = Buffer.alloc(0);
      resolve({
        error: ErrorCode.NONE,
        generation: g.generation,
        protocol: g.protocol,
        leader: g.leader,
        memberId: m.id,
        members:
          m.id === g.leader
            ? members.map((x) => ({
                memberId: x.id,
                groupInstanceId: x.groupInstanceId,
                metadata: x.protocols.find((p) => p.name === g.protocol)?.metadata ?? Buffer.alloc(0),
              }))
            : [],
      });
    }
  }

  sync(groupId: string, generation: number, memberId: string, assignments: { memberId: string; assignment: Buffer }[]): Promise<{ error: number; assignment: Buffer }> {
    const g = this.groups.get(groupId);
    const m = g?.members.get(memberId);
    if (!g || !m) return Promise.resolve({ error: ErrorCode.UNKNOWN_MEMBER_ID, assignment: Buffer.alloc(0) });
    m.lastSeen = Date.now();
    if (generation !== g.generation) return Promise.resolve({ error: ErrorCode.ILLEGAL_GENERATION, assignment: Buffer.alloc(0) });
    if (g.state === 'PreparingRebalance') return Promise.resolve({ error: ErrorCode.REBALANCE_IN_PROGRESS, assignment: Buffer.alloc(0) });
    if (g.state === 'Stable') return Promise.resolve({ error: ErrorCode.NONE, assignment: m.assignment });
    return new Promise((resolve) => {
      m.pendingSync = resolve;
      if (memberId !== g.leader) return;
      for (const a of assignments) {
        const target = g.members.get(a.memberId);
        if (target) target.assignment = a.assignment;
      }
      g.state = 'Stable';
      for (const x of g.members.values()) {
        if (x.pendingSync) {
          x.pendingSync({ error: ErrorCode.NONE, assignment: x.assignment });
          x.pendingSync = null;
        }
      }
    });
  }

  heartbeat(groupId: string, generation: number, memberId: string): number {
    const g = this.groups.get(groupId);
    const m = g?.members.get(memberId);
    if (!g || !m) return ErrorCode.UNKNOWN_MEMBER_ID;
    m.lastSeen = Date.now();
    if (generation !== g.generation) return ErrorCode.ILLEGAL_GENERATION;
    if (g.state === 'PreparingRebalance') return ErrorCode.REBALANCE_IN_PROGRESS;
    return ErrorCode.NONE;
  }

  leave(groupId: string, memberId: string): number {
    const g = this.groups.get(groupId);
    const m = g?.members.get(memberId);
    if (!g || !m) return ErrorCode.UNKNOWN_MEMBER_ID;
    this.logger.info({ group: g.id, member: m.id }, 'member left group');
    this.removeMember(g, m, 'member left');
    return ErrorCode.NONE;
  }

  private removeMember(g: Group, m: Member, reason: string): void {
    g.members.delete(m.id);
    m.pendingJoin?.(failedJoin(ErrorCode.UNKNOWN_MEMBER_ID, m.id));
    m.pendingSync?.({ error: ErrorCode.UNKNOWN_MEMBER_ID, assignment: Buffer.alloc(0) });
    m.pendingJoin = null;
    m.pendingSync = null;
    if (g.state === 'PreparingRebalance') this.maybeCompleteJoin(g);
    else if (g.state !== 'Empty') this.prepareRebalance(g, reason);
  }

  /**
   * Whether an offset commit from this member/generation may be applied now (an error code), decided as
   * Kafka's group coordinator does: a commit outside group management (generation -1, empty member id:
   * kcat, assign()-style consumers, admin offset resets) only while the group has no members; otherwise
   * only a current member in the current generation, and not while the group waits for its assignment.
   */
  canCommit(groupId: string, generation: number, memberId: string): number {
    const g = this.groups.get(groupId);
    // Unknown group: a "simple consumer" commit is fine; a generation of a group never seen is stale.
    if (!g) return generation < 0 ? ErrorCode.NONE : ErrorCode.ILLEGAL_GENERATION;
    if (generation < 0 && g.state === 'Empty') return ErrorCode.NONE;
    const m = g.members.get(memberId);
    if (!m) return ErrorCode.UNKNOWN_MEMBER_ID;
    if (generation !== g.generation) return ErrorCode.ILLEGAL_GENERATION;
    if (g.state === 'CompletingRebalance') return ErrorCode.REBALANCE_IN_PROGRESS;
    m.lastSeen = Date.now();
    return ErrorCode.NONE;
  }

  /** DescribeGroups view of one group (null: the coordinator has never seen it). */
  describe(groupId: string): {
    state: string;
    protocolType: string;
    protocol: string;
    members: { memberId: string; clientId: string; clientHost: string; metadata: Buffer; assignment: Buffer }[];
  } | null {
    const g = this.groups.get(groupId);
    if (!g) return null;
    return {
      state: g.state,
      protocolType: g.protocolType,
      protocol: g.state === 'Stable' ? g.protocol : '',
      members: [...g.members.values()].map((m) => ({
        memberId: m.id,
        clientId: m.clientId,
        clientHost: m.clientHost,
        metadata: m.protocols.find((p) => p.name === g.protocol)?.metadata ?? Buffer.alloc(0),
        assignment: m.assignment,
      })),
    };
  }

  list(): { groupId: string; protocolType: string }[] {
    return [...this.groups.values()].map((g) => ({ groupId: g.id, protocolType: g.protocolType }));
  }

  private expireMembers(): void {
    const now = Date.now();
    for (const g of this.groups.values()) {
      for (const m of [...g.members.values()]) {
        // A member waiting for its join response is alive by definition.
        if (m.pendingJoin || now - m.lastSeen <= m.sessionTimeoutMs) continue;
        this.logger.info({ group: g.id, member: m.id, sessionTimeoutMs: m.sessionTimeoutMs }, 'member removed: session timed out');
        this.removeMember(g, m, `session timeout of ${m.id}`);
      }
    }
  }

  close(): void {
    clearInterval(this.expiry);
    for (const g of this.groups.values()) {
      if (g.rebalanceTimer) clearTimeout(g.rebalanceTimer);
      g.rebalanceTimer = null;
    }
  }
}

export interface CommittedOffset {
  offset: number;
  metadata: string | null;
}

/** Committed offsets per (group, topic, partition), durable in `<dir>/offsets.log` (one JSON object a line). */
export class OffsetStore {
  private readonly offsets = new Map<string, Map<string, CommittedOffset>>();
  private fd: number;
  private lines = 0;
  private readonly path: string;
  private dirty = false;

  constructor(
    dir: string,
    private readonly fsync: FsyncPolicy,
    private readonly logger: Logger,
  ) {
    fs.mkdirSync(dir, { recursive: true });
    this.path = join(dir, 'offsets.log');
    if (fs.existsSync(this.path)) {
      const text = fs.readFileSync(this.path, 'utf8');
      let torn = 0;
      for (const line of text.split('\n')) {
        if (line === '') continue;
        try {
          const e = JSON.parse(line) as { g: string; t: string; p: number; o: number; m: string | null; end: 1 };
          // "end" is written last, so a line cut short by a crash never parses as a complete entry.
          if (e.end !== 1) throw new Error('incomplete');
          this.set(e.g, e.t, e.p, { offset: e.o, metadata: e.m });
        } catch {
          torn++;
        }
      }
      if (torn > 0) this.logger.warn({ file: this.path, lines: torn }, 'ignored torn offset-commit lines (crash mid-write)');
    }
    // Rewrite compacted on every start: bounded file, and any torn tail is gone.
    this.fd = this.compact();
  }

  private set(group: string, topic: string, partition: number, v: CommittedOffset): void {
    let g = this.offsets.get(group);
    if (!g) this.offsets.set(group, (g = new Map()));
    g.set(`${topic}\0${partition}`, v);
  }

  private compact(): number {
    const tmp = `${this.path}.tmp`;
    const lines: string[] = [];
    for (const [group, m] of this.offsets) {
      for (const [key, v] of m) {
        const [t, p] = key.split('\0');
        lines.push(JSON.stringify({ g: group, t, p: Number(p), o: v.offset, m: v.metadata, end: 1 }));
      }
    }
    const fd = fs.openSync(tmp, 'w');
    fs.writeSync(fd, lines.length ? lines.join('\n') + '\n' : '');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, this.path);
    const dfd = fs.openSync(join(this.path, '..'), 'r');
    fs.fsyncSync(dfd);
    fs.closeSync(dfd);
    this.lines = lines.length;
    return fs.openSync(this.path, 'a');
  }

  get(group: string, topic: string, partition: number): CommittedOffset | undefined {
    return this.offsets.get(group)?.get(`${topic}\0${partition}`);
  }

  /** All committed (topic, partition) of a group (OffsetFetch with null topics). */
  all(group: string): { topic: string; partition: number; value: CommittedOffset }[] {
    const m = this.offsets.get(group);
    if (!m) return [];
    return [...m].map(([key, value]) => {
      const [topic, p] = key.split('\0');
      return { topic, partition: Number(p), value };
    });
  }

  /** Records commits; resolves once durable per the fsync policy ('always': fsynced before the ack). */
  async commit(group: string, entries: { topic: string; partition: number; offset: number; metadata: string | null }[]): Promise<void> {
    if (entries.length === 0) return;
    const text = entries.map((e) => JSON.stringify({ g: group, t: e.topic, p: e.partition, o: e.offset, m: e.metadata, end: 1 })).join('\n') + '\n';
    fs.writeSync(this.fd, text);
    for (const e of entries) this.set(group, e.topic, e.partition, { offset: e.offset, metadata: e.metadata });
    this.lines += entries.length;
    this.dirty = true;
    let entriesHeld = 0;
    for (const m of this.offsets.values()) entriesHeld += m.size;
    if (this.lines > 10_000 && this.lines > 4 * entriesHeld) {
      fs.closeSync(this.fd);
      this.fd = this.compact();
      this.dirty = false;
      return;
    }
    if (this.fsync === 'always') await this.sync();
  }

  async sync(): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    const fd = this.fd;
    await new Promise<void>((resolve, reject) =>
      // A compaction may close this fd meanwhile; it fsynced the rewritten file itself.
      fs.fdatasync(fd, (err) => (err && fd === this.fd ? reject(err) : resolve())),
    );
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

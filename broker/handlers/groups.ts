// Consumer groups and committed offsets: FindCoordinator, Join/Sync/Heartbeat/Leave, Describe/ListGroups,
// OffsetCommit and OffsetFetch (the coordinator itself is broker/groups.ts).
// Each handler is a function of the Broker (broker/server.ts), which dispatches requests to it.
import { ErrorCode, Reader, Writer, type RequestHeader } from '../protocol';
import type { Broker } from '../server';
import { NODE_ID, endOfRequest } from './common';

export function findCoordinator(broker: Broker, v: number, r: Reader): Buffer {
  r.string();
  if (v >= 1) r.int8();
  endOfRequest(r);
  const w = new Writer(64);
  if (v >= 1) w.int32(0);
  w.int16(ErrorCode.NONE);
  if (v >= 1) w.string(null);
  return w.int32(NODE_ID).string(broker.advertisedHost).int32(broker.port).toBuffer();
}

export async function joinGroup(broker: Broker, v: number, r: Reader, h: RequestHeader, peer: string): Promise<Buffer> {
  const groupId = r.string();
  const sessionTimeoutMs = r.int32();
  const rebalanceTimeoutMs = v >= 1 ? r.int32() : sessionTimeoutMs;
  const memberId = r.string();
  const groupInstanceId = v >= 5 ? r.nullableString() : null;
  const protocolType = r.string();
  const protocols = r.array((x) => ({ name: x.string(), metadata: x.bytes() }));
  endOfRequest(r);
  const res = await broker.groups.join({
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

/**
 * GroupId, GenerationId, MemberId and, from version `instanceIdSince`, GroupInstanceId: how SyncGroup, Heartbeat and
 * OffsetCommit requests begin. The instance id is read past: static membership is not supported.
 */
function readMember(r: Reader, v: number, instanceIdSince: number): { groupId: string; generation: number; memberId: string } {
  const groupId = r.string();
  const generation = r.int32();
  const memberId = r.string();
  if (v >= instanceIdSince) r.nullableString();
  return { groupId, generation, memberId };
}

/** A response that is only ThrottleTimeMs (from v1) and an error code: Heartbeat, LeaveGroup. */
function errorOnly(v: number, error: number): Buffer {
  const w = new Writer(8);
  if (v >= 1) w.int32(0);
  return w.int16(error).toBuffer();
}

export async function syncGroup(broker: Broker, v: number, r: Reader): Promise<Buffer> {
  const { groupId, generation, memberId } = readMember(r, v, 3);
  const assignments = r.array((x) => ({ memberId: x.string(), assignment: x.bytes() }));
  endOfRequest(r);
  const res = await broker.groups.sync(groupId, generation, memberId, assignments);
  const w = new Writer(128);
  if (v >= 1) w.int32(0);
  return w.int16(res.error).bytes(res.assignment).toBuffer();
}

export function heartbeat(broker: Broker, v: number, r: Reader): Buffer {
  const { groupId, generation, memberId } = readMember(r, v, 3);
  endOfRequest(r);
  return errorOnly(v, broker.groups.heartbeat(groupId, generation, memberId));
}

export function leaveGroup(broker: Broker, v: number, r: Reader): Buffer {
  const groupId = r.string();
  const memberId = r.string();
  endOfRequest(r);
  return errorOnly(v, broker.groups.leave(groupId, memberId));
}

export function describeGroups(broker: Broker, v: number, r: Reader): Buffer {
  const ids = r.array((x) => x.string());
  endOfRequest(r);
  const w = new Writer(256);
  if (v >= 1) w.int32(0);
  w.array(ids, (w2, id) => {
    const d = broker.groups.describe(id) ?? { state: broker.offsets.all(id).length > 0 ? 'Empty' : 'Dead', protocolType: '', protocol: '', members: [] };
    w2.int16(ErrorCode.NONE).string(id).string(d.state).string(d.protocolType).string(d.protocol);
    w2.array(d.members, (w3, m) => w3.string(m.memberId).string(m.clientId).string(m.clientHost).bytes(m.metadata).bytes(m.assignment));
  });
  return w.toBuffer();
}

export function listGroups(broker: Broker, v: number): Buffer {
  const w = new Writer(256);
  if (v >= 1) w.int32(0);
  w.int16(ErrorCode.NONE);
  w.array(broker.groups.list(), (w2, g) => w2.string(g.groupId).string(g.protocolType));
  return w.toBuffer();
}

export async function offsetCommit(broker: Broker, v: number, r: Reader): Promise<Buffer> {
  const { groupId, generation, memberId } = readMember(r, v, 7);
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
  const allowed = groupId === '' ? ErrorCode.INVALID_GROUP_ID : broker.groups.canCommit(groupId, generation, memberId);
  const errors = new Map<string, number>();
  const entries: { topic: string; partition: number; offset: number; metadata: string | null }[] = [];
  for (const t of topics) {
    for (const p of t.partitions) {
      let error: number = allowed;
      if (error === ErrorCode.NONE && !broker.partition(t.name, p.index)) error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION;
      if (error === ErrorCode.NONE) entries.push({ topic: t.name, partition: p.index, offset: p.offset, metadata: p.metadata });
      errors.set(`${t.name}\0${p.index}`, error);
    }
  }
  try {
    await broker.offsets.commit(groupId, entries);
  } catch (err) {
    broker.log.error({ err, group: groupId }, 'offset commit write failed');
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

export function offsetFetch(broker: Broker, v: number, r: Reader): Buffer {
  const groupId = r.string();
  const requested = r.nullableArray((x) => ({ name: x.string(), partitions: x.array((y) => y.int32()) }));
  endOfRequest(r);
  let topics: { name: string; partitions: number[] }[];
  if (requested === null) {
    const byTopic = new Map<string, number[]>();
    for (const e of broker.offsets.all(groupId)) {
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
      const c = broker.offsets.get(groupId, t.name, p);
      w3.int32(p).int64(c ? c.offset : -1);
      if (v >= 5) w3.int32(-1);
      w3.string(c ? c.metadata : '').int16(ErrorCode.NONE);
    });
  });
  if (v >= 2) w.int16(ErrorCode.NONE);
  return w.toBuffer();
}

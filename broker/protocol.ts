// Kafka wire-protocol primitives for the bundled broker: a bounds-checked reader, a growable writer,
// API keys, the versions this broker implements, and the error codes it answers with.

/** Thrown when a request body does not parse; the server closes that connection. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export const ApiKey = {
  Produce: 0,
  Fetch: 1,
  ListOffsets: 2,
  Metadata: 3,
  OffsetCommit: 8,
  OffsetFetch: 9,
  FindCoordinator: 10,
  JoinGroup: 11,
  Heartbeat: 12,
  LeaveGroup: 13,
  SyncGroup: 14,
  DescribeGroups: 15,
  ListGroups: 16,
  ApiVersions: 18,
  CreateTopics: 19,
  InitProducerId: 22,
  DescribeConfigs: 32,
} as const;

/**
 * [min, max] version implemented per API key. Only non-flexible (pre-KIP-482) versions: clients pick the
 * highest version both sides support, so this is exactly what the handlers in server.ts decode and encode.
 */
export const SUPPORTED_VERSIONS: ReadonlyMap<number, readonly [number, number]> = new Map([
  [ApiKey.Produce, [3, 7]],
  [ApiKey.Fetch, [4, 11]],
  [ApiKey.ListOffsets, [1, 5]],
  [ApiKey.Metadata, [0, 8]],
  [ApiKey.OffsetCommit, [2, 7]],
  [ApiKey.OffsetFetch, [1, 5]],
  [ApiKey.FindCoordinator, [0, 2]],
  [ApiKey.JoinGroup, [0, 5]],
  [ApiKey.Heartbeat, [0, 3]],
  [ApiKey.LeaveGroup, [0, 2]],
  [ApiKey.SyncGroup, [0, 3]],
  [ApiKey.DescribeGroups, [0, 2]],
  [ApiKey.ListGroups, [0, 2]],
  [ApiKey.ApiVersions, [0, 2]],
  [ApiKey.CreateTopics, [0, 4]],
  [ApiKey.InitProducerId, [0, 1]],
  [ApiKey.DescribeConfigs, [0, 2]],
] as const);

/** Kafka error codes this broker returns (names as in the protocol guide). */
export const ErrorCode = {
  NONE: 0,
  OFFSET_OUT_OF_RANGE: 1,
  CORRUPT_MESSAGE: 2,
  UNKNOWN_TOPIC_OR_PARTITION: 3,
  INVALID_MESSAGE_SIZE: 4,
  MESSAGE_TOO_LARGE: 10,
  COORDINATOR_NOT_AVAILABLE: 15,
  NOT_COORDINATOR: 16,
  INVALID_TOPIC_EXCEPTION: 17,
  RECORD_LIST_TOO_LARGE: 18,
  INVALID_REQUIRED_ACKS: 21,
  ILLEGAL_GENERATION: 22,
  INCONSISTENT_GROUP_PROTOCOL: 23,
  INVALID_GROUP_ID: 24,
  UNKNOWN_MEMBER_ID: 25,
  INVALID_SESSION_TIMEOUT: 26,
  REBALANCE_IN_PROGRESS: 27,
  INVALID_TIMESTAMP: 32,
  UNSUPPORTED_VERSION: 35,
  TOPIC_ALREADY_EXISTS: 36,
  INVALID_PARTITIONS: 37,
  INVALID_REPLICATION_FACTOR: 38,
  INVALID_REQUEST: 42,
  UNSUPPORTED_FOR_MESSAGE_FORMAT: 43,
  POLICY_VIOLATION: 44,
  OUT_OF_ORDER_SEQUENCE_NUMBER: 45,
  INVALID_PRODUCER_EPOCH: 47,
  INVALID_CONFIG: 40,
  KAFKA_STORAGE_ERROR: 56,
  UNKNOWN_SERVER_ERROR: -1,
} as const;

/** Sequential reader over one request body; every read is bounds-checked and throws ProtocolError. */
export class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer, start = 0) {
    this.pos = start;
  }
  get offset(): number {
    return this.pos;
  }
  get remaining(): number {
    return this.buf.length - this.pos;
  }
  private need(n: number): void {
    if (n < 0 || this.pos + n > this.buf.length) throw new ProtocolError(`truncated request: need ${n} bytes at ${this.pos} of ${this.buf.length}`);
  }
  int8(): number {
    this.need(1);
    return this.buf.readInt8(this.pos++);
  }
  int16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  /** Int64 as a JS number: offsets and timestamps stay far below 2^53. */
  int64(): number {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return Number(v);
  }
  bool(): boolean {
    return this.int8() !== 0;
  }
  nullableString(): string | null {
    const len = this.int16();
    if (len === -1) return null;
    if (len < -1) throw new ProtocolError(`bad string length ${len}`);
    this.need(len);
    const s = this.buf.toString('utf8', this.pos, this.pos + len);
    this.pos += len;
    return s;
  }
  string(): string {
    const s = this.nullableString();
    if (s === null) throw new ProtocolError('null where a string is required');
    return s;
  }
  nullableBytes(): Buffer | null {
    const len = this.int32();
    if (len === -1) return null;
    if (len < -1) throw new ProtocolError(`bad bytes length ${len}`);
    this.need(len);
    const b = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return b;
  }
  bytes(): Buffer {
    return this.nullableBytes() ?? Buffer.alloc(0);
  }
  /** Array of items; null arrays (length -1) come back as null. */
  nullableArray<T>(item: (r: Reader) => T): T[] | null {
    const n = this.int32();
    if (n === -1) return null;
    // Each element takes at least one byte: a larger count is garbage, not a reason to allocate.
    if (n < -1 || n > this.remaining) throw new ProtocolError(`bad array length ${n}`);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(item(this));
    return out;
  }
  array<T>(item: (r: Reader) => T): T[] {
    return this.nullableArray(item) ?? [];
  }
}

/** Growable big-endian writer for response bodies. */
export class Writer {
  private buf: Buffer;
  private pos = 0;
  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  int8(v: number): this {
    this.ensure(1);
    this.buf.writeInt8(v, this.pos++);
    return this;
  }
  bool(v: boolean): this {
    return this.int8(v ? 1 : 0);
  }
  int16(v: number): this {
    this.ensure(2);
    this.buf.writeInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }
  int32(v: number): this {
    this.ensure(4);
    this.buf.writeInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }
  int64(v: number | bigint): this {
    this.ensure(8);
    this.buf.writeBigInt64BE(BigInt(v), this.pos);
    this.pos += 8;
    return this;
  }
  string(s: string | null): this {
    if (s === null) return this.int16(-1);
    const len = Buffer.byteLength(s);
    this.int16(len);
    this.ensure(len);
    this.buf.write(s, this.pos, 'utf8');
    this.pos += len;
    return this;
  }
  bytes(b: Buffer | null): this {
    if (b === null) return this.int32(-1);
    this.int32(b.length);
    return this.raw(b);
  }
  raw(b: Buffer): this {
    this.ensure(b.length);
    b.copy(this.buf, this.pos);
    this.pos += b.length;
    return this;
  }
  array<T>(items: readonly T[] | null, each: (w: Writer, item: T) => void): this {
    if (items === null) return this.int32(-1);
    this.int32(items.length);
    for (const it of items) each(this, it);
    return this;
  }
  /**
   * Bytes field whose content is referenced, not copied, when large (fetched record sets): the response
   * then goes out as several buffers, see toChunks().
   */
  bytesRef(b: Buffer | null): this {
    if (b === null || b.length < 16 * 1024) return this.bytes(b);
    this.int32(b.length);
    this.chunks.push(this.buf.subarray(0, this.pos), b);
    this.buf = Buffer.allocUnsafe(Math.max(256, this.buf.length - this.pos));
    this.pos = 0;
    return this;
  }
  private chunks: Buffer[] = [];
  /** The bytes written so far (a view when nothing was referenced, else one copy). */
  toBuffer(): Buffer {
    const tail = this.buf.subarray(0, this.pos);
    return this.chunks.length === 0 ? tail : Buffer.concat([...this.chunks, tail]);
  }
  /** The bytes written so far as buffers to send in order (no copy). */
  toChunks(): Buffer[] {
    return [...this.chunks, this.buf.subarray(0, this.pos)];
  }
}

export interface RequestHeader {
  apiKey: number;
  apiVersion: number;
  correlationId: number;
  clientId: string | null;
}

/** Request header v1 (api_key, api_version, correlation_id, client_id); every version we accept uses it. */
export function readRequestHeader(r: Reader): RequestHeader {
  const apiKey = r.int16();
  const apiVersion = r.int16();
  const correlationId = r.int32();
  const clientId = r.nullableString();
  return { apiKey, apiVersion, correlationId, clientId };
}

export function isSupported(apiKey: number, version: number): boolean {
  const range = SUPPORTED_VERSIONS.get(apiKey);
  return range !== undefined && version >= range[0] && version <= range[1];
}

/** Frame a response: size prefix + response header v0 (correlation id) + body. */
export function frameResponse(correlationId: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(8 + body.length);
  out.writeInt32BE(4 + body.length, 0);
  out.writeInt32BE(correlationId, 4);
  body.copy(out, 8);
  return out;
}

/** frameResponse for a body in several buffers: returns the 8-byte header followed by the body buffers. */
export function frameResponseChunks(correlationId: number, body: readonly Buffer[]): Buffer[] {
  const size = body.reduce((n, b) => n + b.length, 0);
  const head = Buffer.allocUnsafe(8);
  head.writeInt32BE(4 + size, 0);
  head.writeInt32BE(correlationId, 4);
  return [head, ...body];
}

/** Topic names Kafka accepts: 1–249 of [a-zA-Z0-9._-], not "." or "..". */
export function validTopicName(name: string): boolean {
  return /^[a-zA-Z0-9._-]{1,249}$/.test(name) && name !== '.' && name !== '..';
}

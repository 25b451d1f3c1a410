// kafkajs 2.2.4 (its last release) encodes every produced record through generic helpers: an Encoder per record with a
// zero-filled 512-byte Buffer, a `Buffer.from([...])` per varint, the timestamp delta's zigzag as 64-bit Longs
// (BigInts), and then every record's bytes copied again into the batch — in the producer's profile under churn, GC
// was ~40% of the busy main thread and kafkajs encoding ~12% (bench/RESULTS.md, issue 13). This puts a record encoder
// and a record-batch encoder in their place in the module cache, before kafkajs loads its produce request
// (src/protocol/requests/produce/v3/request.js, which v4–v7 reuse, binds both when it loads): a plain record — key and
// value each a Buffer, a string, null or undefined; headers none or string keys → Buffer/string values (or arrays of
// them); integer offset and timestamp deltas — becomes a small object holding its fields, and the batch encoder writes
// all of them straight into one Buffer of the batch's exact size (zigzag varints in place), then kafkajs's own CRC32C
// over it and, with compression, kafkajs's own codec over the records. Anything else is encoded by kafkajs's own
// record encoder right away (so it throws where kafkajs throws), and a batch holding anything but these records and
// kafkajs Encoders goes to kafkajs's own batch encoder. The bytes are kafkajs's in every case
// (lib/kafkajs-encode.test.ts compares both on random record sets). It must be imported before anything imports
// kafkajs (lib/kafka.ts does); imported later it changes nothing, and fastEncodeInstalled() says so.
/* eslint-disable @typescript-eslint/no-require-imports */

interface KEncoder {
  buf: Buffer;
  offset: number;
  readonly buffer: Buffer;
  size(): number;
  writeInt8(v: unknown): KEncoder;
  writeInt16(v: unknown): KEncoder;
  writeInt32(v: unknown): KEncoder;
  writeInt64(v: unknown): KEncoder;
}
type EncoderClass = (new (initialSize?: number) => KEncoder) & { prototype: KEncoder };
type RecordFn = (args: RecordArgs) => unknown;
type BatchFn = (args: Record<string, unknown>) => Promise<KEncoder>;
export interface RecordEncoders {
  Record: RecordFn;
  RecordBatch: BatchFn;
}
interface RecordArgs {
  offsetDelta?: unknown;
  timestampDelta?: unknown;
  key?: unknown;
  value?: unknown;
  headers?: unknown;
}

const RECORD = 'kafkajs/src/protocol/recordBatch/record/v0';
const BATCH = 'kafkajs/src/protocol/recordBatch/v0';
const PRODUCE_V3 = 'kafkajs/src/protocol/requests/produce/v3/request';

// Kafka record batch v2 layout (kafkajs's src/protocol/recordBatch/v0/index.js): firstOffset int64, length int32,
// partitionLeaderEpoch int32, magic int8, crc uint32, then the body the CRC covers: attributes … firstSequence
// (36 bytes), the record count int32 and the records.
const PREFIX = 8 + 4 + 4 + 1 + 4;
const MAGIC_BYTE = 2;
const TIMESTAMP_MASK = 0;
const TRANSACTIONAL_MASK = 16;

/** kafkajs's 32-bit zigzag (Encoder.encodeZigZag, same operators: any number as ToInt32 does), unsigned. */
const zz32 = (v: number): number => ((v << 1) ^ (v >> 31)) >>> 0;
const uvarintSize = (u: number): number => (u < 0x80 ? 1 : u < 0x4000 ? 2 : u < 0x200000 ? 3 : u < 0x10000000 ? 4 : 5);
/** A timestamp delta's 64-bit zigzag for |v| < 2^52 (exact as a number). */
const zz64 = (v: number): number => (v >= 0 ? v * 2 : -v * 2 - 1);
const uvarlongSize = (z: number): number => {
  let n = 1;
  while (z >= 0x80) {
    z = Math.floor(z / 0x80);
    n++;
  }
  return n;
};
const MAX_DELTA = 2 ** 52;

/** Bytes of a key, value or header part as kafkajs writes it (Buffer raw, string UTF-8), or -1 for null/undefined. */
function partSize(v: Buffer | string | null | undefined): number {
  if (v == null) return -1;
  return typeof v === 'string' ? Buffer.byteLength(v) : v.length;
}
const varBytesSize = (n: number): number => (n < 0 ? 1 : uvarintSize(zz32(n)) + n);

/** Key, value or header value kafkajs writes the same way we do: a Buffer, a string, null/undefined. */
const plainPart = (v: unknown): v is Buffer | string | null | undefined => v == null || typeof v === 'string' || Buffer.isBuffer(v);
const headerPart = (v: unknown): v is Buffer | string => typeof v === 'string' || Buffer.isBuffer(v);

/**
 * A record the batch encoder writes in place. To anything that reads it as a kafkajs Encoder (`buf`, `offset`,
 * `buffer`, `size()`) it is one: kafkajs's record encoder builds it on first use.
 */
class PlainRecord {
  private enc?: KEncoder;
  constructor(
    readonly key: Buffer | string | null | undefined,
    readonly value: Buffer | string | null | undefined,
    /** header key, value, key, value, … in kafkajs's order; null: none */
    readonly headers: (Buffer | string)[] | null,
    readonly offsetDelta: number,
    readonly timestampDelta: number,
    /** the record's bytes after its length varint (kafkajs's sizeOfBody) */
    readonly body: number,
    private readonly args: RecordArgs,
  ) {}
  /** The record with its length prefix. */
  get total(): number {
    return uvarintSize(zz32(this.body)) + this.body;
  }
  private encoder(): KEncoder {
    this.enc ??= encoders().stock.Record(this.args) as KEncoder;
    return this.enc;
  }
  get buf(): Buffer {
    return this.encoder().buf;
  }
  set buf(b: Buffer) {
    this.encoder().buf = b;
  }
  get offset(): number {
    return this.encoder().offset;
  }
  set offset(o: number) {
    this.encoder().offset = o;
  }
  get buffer(): Buffer {
    return this.encoder().buffer;
  }
  size(): number {
    return this.encoder().size();
  }
  toJSON(): unknown {
    return this.buffer.toJSON();
  }
}

/** Records written in place and records encoded by kafkajs's record encoder, this process. */
const stats = { fast: 0, kafkajs: 0 };

export function encodeStats(): { fast: number; kafkajs: number } {
  return { ...stats };
}

/** kafkajs's headers as a flat key/value list in its order (Object.keys, arrays spread), or undefined if not plain. */
function plainHeaders(headers: unknown): (Buffer | string)[] | null | undefined {
  if (headers === undefined) return null;
  if (typeof headers !== 'object' || headers === null) return undefined;
  const proto = Object.getPrototypeOf(headers);
  if (proto !== Object.prototype && proto !== null) return undefined;
  const h = headers as Record<string, unknown>;
  const keys = Object.keys(h);
  if (keys.length === 0) return null;
  const out: (Buffer | string)[] = [];
  for (const k of keys) {
    const v = h[k];
    if (Array.isArray(v)) {
      for (const e of v) {
        if (!headerPart(e)) return undefined;
        out.push(k, e);
      }
    } else {
      if (!headerPart(v)) return undefined;
      out.push(k, v);
    }
  }
  return out.length === 0 ? null : out;
}

/** Off: the installed encoders pass everything to kafkajs's own (setFastEncode, for side-by-side benchmarks). */
let enabled = true;

/** Our Record: a PlainRecord for the plain case, else kafkajs's own (an Encoder, or its error, at once). */
function fastRecord(args: RecordArgs): unknown {
  if (!enabled) return encoders().stock.Record(args);
  const { offsetDelta = 0, timestampDelta = 0, key, value } = args;
  const headers = plainHeaders(args.headers);
  if (
    headers === undefined ||
    typeof offsetDelta !== 'number' ||
    typeof timestampDelta !== 'number' ||
    !Number.isInteger(timestampDelta) ||
    Math.abs(timestampDelta) >= MAX_DELTA ||
    !plainPart(key) ||
    !plainPart(value)
  ) {
    stats.kafkajs++;
    return encoders().stock.Record(args);
  }
  let hsize = 0;
  const nh = headers === null ? 0 : headers.length / 2;
  if (headers !== null) for (const part of headers) hsize += varBytesSize(partSize(part));
  const body = 1 + uvarlongSize(zz64(timestampDelta)) + uvarintSize(zz32(offsetDelta)) + varBytesSize(partSize(key)) + varBytesSize(partSize(value)) + uvarintSize(zz32(nh)) + hsize;
  return new PlainRecord(key, value, headers, offsetDelta, timestampDelta, body, args);
}

function writeUVarInt(buf: Buffer, pos: number, u: number): number {
  while (u >= 0x80) {
    buf[pos++] = (u & 0x7f) | 0x80;
    u >>>= 7;
  }
  buf[pos++] = u;
  return pos;
}

function writeUVarLong(buf: Buffer, pos: number, z: number): number {
  while (z >= 0x80) {
    buf[pos++] = (z % 0x80) | 0x80;
    z = Math.floor(z / 0x80);
  }
  buf[pos++] = z;
  return pos;
}

/** kafkajs's writeVarIntBytes / writeVarIntString for a Buffer, a string or null/undefined. */
function writePart(buf: Buffer, pos: number, v: Buffer | string | null | undefined): number {
  if (v == null) {
    buf[pos++] = 1; // zigzag(-1)
    return pos;
  }
  if (typeof v === 'string') {
    pos = writeUVarInt(buf, pos, zz32(Buffer.byteLength(v)));
    return pos + buf.write(v, pos, 'utf8');
  }
  pos = writeUVarInt(buf, pos, zz32(v.length));
  return pos + v.copy(buf, pos);
}

/** One record at `pos` (length varint first), as kafkajs's record encoder writes it. */
function writeRecord(buf: Buffer, pos: number, r: PlainRecord): number {
  pos = writeUVarInt(buf, pos, zz32(r.body));
  buf[pos++] = 0; // attributes: kafkajs sets none
  pos = writeUVarLong(buf, pos, zz64(r.timestampDelta));
  pos = writeUVarInt(buf, pos, zz32(r.offsetDelta));
  pos = writePart(buf, pos, r.key);
  pos = writePart(buf, pos, r.value);
  const h = r.headers;
  if (h === null) {
    buf[pos++] = 0;
    return pos;
  }
  pos = writeUVarInt(buf, pos, zz32(h.length / 2));
  for (const part of h) pos = writePart(buf, pos, part);
  return pos;
}

/** Whether every record is a PlainRecord or a kafkajs Encoder (what kafkajs's writeEncoderArray accepts). */
function writable(records: unknown[]): boolean {
  for (const r of records) {
    if (r instanceof PlainRecord) continue;
    if (r == null || typeof r !== 'object' || !Buffer.isBuffer((r as KEncoder).buf)) return false;
  }
  return true;
}

/** The records' bytes from `pos`: PlainRecords in place, kafkajs Encoders copied. */
function writeRecords(buf: Buffer, pos: number, records: unknown[]): number {
  for (const r of records) {
    if (r instanceof PlainRecord) {
      pos = writeRecord(buf, pos, r);
      stats.fast++;
    } else {
      const e = r as KEncoder;
      pos += e.buf.copy(buf, pos, 0, e.offset);
    }
  }
  return pos;
}

function recordsSize(records: unknown[]): number {
  let n = 0;
  for (const r of records) n += r instanceof PlainRecord ? r.total : (r as KEncoder).offset;
  return n;
}

function build(): { stock: RecordEncoders; fast: RecordEncoders } {
  const Encoder = require('kafkajs/src/protocol/encoder') as EncoderClass;
  const Long = require('kafkajs/src/utils/long') as { fromInt(n: number): unknown; fromValue(v: unknown): unknown };
  const crc32C = require('kafkajs/src/protocol/recordBatch/crc32C') as (b: Buffer) => number;
  const { Types, lookupCodec, COMPRESSION_CODEC_MASK } = require('kafkajs/src/protocol/message/compression') as {
    Types: { None: number };
    lookupCodec: (t: unknown) => { compress(e: KEncoder): Promise<Buffer> } | null;
    COMPRESSION_CODEC_MASK: number;
  };
  const stockRecord = require(RECORD) as RecordFn;
  const stockBatch = (require(BATCH) as { RecordBatch: BatchFn }).RecordBatch;

  /** A kafkajs Encoder over `buf` (filled up to its length), without the 512-byte Buffer its constructor makes. */
  const encoderOver = (buf: Buffer): KEncoder => {
    const e = Object.create(Encoder.prototype) as KEncoder;
    e.buf = buf;
    e.offset = buf.length;
    return e;
  };

  // kafkajs's RecordBatch (src/protocol/recordBatch/v0/index.js) with the records written in place.
  const fastBatch: BatchFn = async (args) => {
    const {
      compression = Types.None,
      firstOffset = Long.fromInt(0),
      firstTimestamp = Date.now(),
      maxTimestamp = Date.now(),
      partitionLeaderEpoch = 0,
      lastOffsetDelta = 0,
      transactional = false,
      producerId = Long.fromValue(-1),
      producerEpoch = 0,
      firstSequence = 0,
      records = [],
    } = args;
    if (!enabled || !Array.isArray(records) || !writable(records)) return stockBatch(args);
    const attributes = ((compression as number) & COMPRESSION_CODEC_MASK) | TIMESTAMP_MASK | (transactional ? TRANSACTIONAL_MASK : 0);
    // The body's 36 fixed bytes by kafkajs's own Encoder (its int64 conversions and range checks, once per batch).
    const head = new Encoder(64)
      .writeInt16(attributes)
      .writeInt32(lastOffsetDelta)
      .writeInt64(firstTimestamp)
      .writeInt64(maxTimestamp)
      .writeInt64(producerId)
      .writeInt16(producerEpoch)
      .writeInt32(firstSequence);
    let out: Buffer;
    let pos: number;
    if (compression === Types.None) {
      out = Buffer.allocUnsafe(PREFIX + head.offset + 4 + recordsSize(records));
      pos = PREFIX + head.buf.copy(out, PREFIX, 0, head.offset);
      out.writeInt32BE(records.length, pos);
      pos = writeRecords(out, pos + 4, records);
    } else {
      const codec = lookupCodec(compression);
      const raw = Buffer.allocUnsafe(recordsSize(records));
      writeRecords(raw, 0, records);
      const compressed = await (codec as NonNullable<typeof codec>).compress(encoderOver(raw));
      out = Buffer.allocUnsafe(PREFIX + head.offset + 4 + compressed.length);
      pos = PREFIX + head.buf.copy(out, PREFIX, 0, head.offset);
      out.writeInt32BE(records.length, pos);
      pos += 4 + compressed.copy(out, pos + 4);
    }
    if (pos !== out.length) throw new Error(`kafkajs-encode: wrote ${pos} of ${out.length} bytes of a record batch`);
    out.writeInt32BE(partitionLeaderEpoch as number, 12);
    out.writeInt8(MAGIC_BYTE, 16);
    out.writeUInt32BE(crc32C(out.subarray(PREFIX)), 17);
    // firstOffset and the length: kafkajs's writeInt64 / writeBytes into the first 12 bytes
    const pre = new Encoder(16).writeInt64(firstOffset).writeInt32(out.length - 12);
    pre.buf.copy(out, 0, 0, 12);
    return encoderOver(out);
  };
  return { stock: { Record: stockRecord, RecordBatch: stockBatch }, fast: { Record: fastRecord, RecordBatch: fastBatch } };
}

let built: { stock: RecordEncoders; fast: RecordEncoders } | undefined;

function encoders(): { stock: RecordEncoders; fast: RecordEncoders } {
  built ??= build();
  return built;
}

/** The escape hatch: NETTALLY_KAFKAJS_FAST_ENCODE=0 leaves kafkajs's encoding alone (same bytes, more CPU). */
export const FAST_ENCODE_ENV = 'NETTALLY_KAFKAJS_FAST_ENCODE';

function install(): boolean {
  if (process.env[FAST_ENCODE_ENV] === '0') return false;
  try {
    // Too late once kafkajs's produce request is loaded: it holds the originals.
    if (require.cache[require.resolve(PRODUCE_V3)]) return false;
    const { fast } = encoders();
    const rec = require.cache[require.resolve(RECORD)];
    const batch = require.cache[require.resolve(BATCH)];
    if (!rec || !batch) return false;
    // Module-cache entries are what request.js gets from its require()s: replacing their exports is the way in (a
    // new exports object for the batch module: whoever holds kafkajs's keeps it unchanged).
    rec.exports = fast.Record;
    batch.exports = { ...(batch.exports as object), RecordBatch: fast.RecordBatch };
    return true;
  } catch {
    // A kafkajs with another layout: its own encoding stays (slower, same bytes).
    return false;
  }
}

const installed = install();

/** Whether kafkajs's produce request encodes with these encoders (false: imported too late, or another kafkajs). */
export function fastEncodeInstalled(): boolean {
  const rec = require.cache[require.resolve(RECORD)];
  const batch = require.cache[require.resolve(BATCH)];
  return installed && rec?.exports === built?.fast.Record && (batch?.exports as { RecordBatch?: unknown } | undefined)?.RecordBatch === built?.fast.RecordBatch;
}

/**
 * Whether the installed encoders write plain records in place (true, the default) or hand everything to kafkajs's
 * own (false): for benchmarks that compare both in one process. Returns the previous setting.
 */
export function setFastEncode(on: boolean): boolean {
  const was = enabled;
  enabled = on;
  return was;
}

/** kafkajs's own record and batch encoders and these (for the tests that compare them). */
export function recordEncoders(): { stock: RecordEncoders; fast: RecordEncoders } {
  return encoders();
}

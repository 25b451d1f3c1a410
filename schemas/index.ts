// The wire codec between producer and consumer: Avro single-object encoding of nettally records, with the
// writer's schema resolved by CRC-64-AVRO fingerprint (see schemas/README.md for the contract).
import avro from 'avsc';
import { readdirSync, readFileSync, existsSync } from 'fs';
import { join } from 'path';
import { NettallyError } from '../lib/errors';
import { compileReader, isGiveUp, type Cursor, type FastReader, type LongTypes } from './reader';
import { compileWriter, isWriterGiveUp, type FastWriter, type Sink } from './writer';

// The wire record types are generated from the .avsc files (schemas/types.generated.ts, `node scripts/gen-records.js`):
// the .avsc stay the one hand-written definition of the contract; scripts/build.sh fails when the types are stale.
import { RECORD_KINDS, type AvscRecordByKind, type RecordKind } from './types.generated';
export { RECORD_KINDS, type RecordKind };

export type ConnSampleRecord = AvscRecordByKind['conn_sample'];
/** `event` is a string in the schema (open to new values for third-party readers); nettally writes only these two. */
export interface ConnEventRecord extends Omit<AvscRecordByKind['conn_event'], 'event'> {
  event: 'established' | 'closed';
}
export type ListenRecord = AvscRecordByKind['listen'];
export type IfaceRecord = AvscRecordByKind['iface'];

export interface RecordByKind extends Omit<AvscRecordByKind, 'conn_event'> {
  conn_event: ConnEventRecord;
}

/** A decoded message: the kind, the record in the reader's schema, and the writer schema's fingerprint (hex of the 8 wire bytes). */
export type Decoded = { [K in RecordKind]: { kind: K; record: RecordByKind[K]; fingerprint: string } }[RecordKind];

/** Why a message could not be decoded; carried in `NettallyError.context.reason` (code RECORD_MALFORMED). */
export type MalformedReason = 'bad_magic' | 'unknown_fingerprint' | 'truncated' | 'invalid_body';

/** Avro single-object encoding marker. */
const SINGLE_OBJECT_MAGIC = Buffer.from([0xc3, 0x01]);
const HEADER_BYTES = 10;
const EMPTY_BUF = Buffer.alloc(0);

// --- CRC-64-AVRO (Rabin) fingerprint, as specified in the Avro spec "Schema Fingerprints" ---

const EMPTY = 0xc15d213aa4d7a795n;
const MASK64 = 0xffffffffffffffffn;
const FP_TABLE: bigint[] = (() => {
  const t: bigint[] = [];
  for (let i = 0; i < 256; i++) {
    let fp = BigInt(i);
    for (let j = 0; j < 8; j++) fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n) & MASK64);
    t.push(fp);
  }
  return t;
})();

/** The 64-bit Rabin fingerprint of bytes (unsigned). */
export function crc64Avro(data: Uint8Array | string): bigint {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let fp = EMPTY;
  for (const b of bytes) fp = (fp >> 8n) ^ FP_TABLE[Number((fp ^ BigInt(b)) & 0xffn)];
  return fp;
}

/** Parsing Canonical Form of a schema (doc, aliases, defaults, logical types stripped; names fully qualified). */
export function canonicalForm(schema: avro.Schema | avro.Type): string {
  const type = avro.Type.isType(schema) ? (schema as avro.Type) : avro.Type.forSchema(schema as avro.Schema, typeOptions());
  return JSON.stringify(type.schema());
}

/** The 8 fingerprint bytes as they appear on the wire (little-endian CRC-64-AVRO of the canonical form). */
export function schemaFingerprint(schema: avro.Schema | avro.Type): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(crc64Avro(canonicalForm(schema)));
  return b;
}

// --- exact longs: numbers while safe; bigint beyond 2^53 (and always for time_ns via its logical type) ---

const TWO32 = 2 ** 32;
const MIN64 = -(1n << 63n);
const MAX64 = (1n << 63n) - 1n;

const ExactLong = avro.types.LongType.__with({
  // Fast path without BigInt while |v| < 2^53 (hi word within ±2^21): this codec is on every record's hot path.
  fromBuffer: (buf: Buffer): number | bigint => {
    const hi = buf.readInt32LE(4);
    if (hi < 0x200000 && hi >= -0x200000) {
      const v = hi * TWO32 + buf.readUInt32LE(0);
      if (Number.isSafeInteger(v)) return v;
    }
    return buf.readBigInt64LE(0);
  },
  toBuffer: (v: number | bigint): Buffer => {
    const b = Buffer.allocUnsafe(8);
    if (typeof v === 'number') {
      const lo = v % TWO32;
      const hi = (v - lo) / TWO32;
      b.writeUInt32LE(lo < 0 ? lo + TWO32 : lo, 0);
      b.writeInt32LE(lo < 0 ? hi - 1 : hi, 4);
    } else {
      b.writeBigInt64LE(v);
    }
    return b;
  },
  fromJSON: (v: number | string): number | bigint => (typeof v === 'number' ? v : BigInt(v)),
  toJSON: (v: number | bigint): number | string => (typeof v === 'number' ? v : v.toString()),
  isValid: (v: unknown): boolean => (typeof v === 'number' && Number.isSafeInteger(v)) || (typeof v === 'bigint' && v >= MIN64 && v <= MAX64),
  compare: (a: number | bigint, b: number | bigint): number => (a < b ? -1 : a > b ? 1 : 0),
});

/** `timestamp-nanos` (Avro 1.12 logical type on long): Unix epoch nanoseconds as a bigint. */
class TimestampNanos extends avro.types.LogicalType {
  constructor(schema: avro.Schema, opts?: Partial<avro.ForSchemaOptions>) {
    // The underlying long must be the exact one, or values past 2^53 would be refused.
    super(schema, { ...opts, typeHook: () => ExactLong });
  }
  protected override _fromValue(v: number | bigint | undefined): bigint | undefined {
    // undefined: the body was truncated; decode() reports it from the reader's offset.
    return v === undefined ? undefined : BigInt(v);
  }
  protected override _toValue(v: unknown): number | bigint | undefined {
    return typeof v === 'bigint' || typeof v === 'number' ? v : undefined;
  }
  protected override _resolve(type: avro.Type): ((v: number | bigint) => bigint) | undefined {
    const name = type.typeName;
    if (name === 'long' || name === 'abstract:long' || name === 'int' || type instanceof TimestampNanos) return (v) => this._fromValue(v) as bigint;
    return undefined;
  }
}

/** How schemas/reader.ts recognises the exact longs above among avsc's types. */
const LONGS: LongTypes = {
  isExactLong: (t) => t === ExactLong,
  isTimestampNanos: (t) => t instanceof TimestampNanos && t.underlyingType === ExactLong,
};

function typeOptions(): Partial<avro.ForSchemaOptions> {
  return {
    logicalTypes: { 'timestamp-nanos': TimestampNanos },
    // Every plain long (including a logical type's underlying long) is read exactly.
    typeHook: (s) => (s === 'long' || (typeof s === 'object' && (s as { type?: unknown; logicalType?: unknown }).type === 'long' && !('logicalType' in s)) ? ExactLong : undefined),
  };
}

function parseType(schema: avro.Schema): avro.Type {
  return avro.Type.forSchema(schema, typeOptions());
}

// --- the shipped schemas: schemas/<kind>.avsc (current) and schemas/archive/*.avsc (earlier revisions) ---

/** Directory holding the .avsc files, from source (schemas/) or from the build (dist/schemas → ../../schemas). */
function schemaDir(): string {
  for (const dir of [__dirname, join(__dirname, '..', '..', 'schemas')]) {
    if (existsSync(join(dir, 'conn_sample.avsc'))) return dir;
  }
  throw new NettallyError('INTERNAL', `cannot find the nettally .avsc files near ${__dirname}`);
}

function readSchema(path: string): avro.Schema {
  return JSON.parse(readFileSync(path, 'utf8')) as avro.Schema;
}

/** The current schema of each kind, as shipped. */
export function currentSchemas(): Record<RecordKind, avro.Schema> {
  const dir = schemaDir();
  const out = {} as Record<RecordKind, avro.Schema>;
  for (const k of RECORD_KINDS) out[k] = readSchema(join(dir, `${k}.avsc`));
  return out;
}

/** Every schema revision ever shipped (current + archive), so old records stay decodable. */
function shippedSchemas(): avro.Schema[] {
  const dir = schemaDir();
  const all: avro.Schema[] = Object.values(currentSchemas());
  const archive = join(dir, 'archive');
  if (existsSync(archive)) {
    for (const f of readdirSync(archive).sort()) if (f.endsWith('.avsc')) all.push(readSchema(join(archive, f)));
  }
  return all;
}

function fullName(schema: avro.Schema): string {
  const s = schema as { name?: string; namespace?: string };
  if (!s.name) throw new NettallyError('INTERNAL', 'a record schema needs a name');
  return s.name.includes('.') || !s.namespace ? s.name : `${s.namespace}.${s.name}`;
}

function malformed(reason: MalformedReason, message: string, context: Record<string, unknown> = {}, cause?: unknown): NettallyError {
  return new NettallyError('RECORD_MALFORMED', `cannot decode record: ${message}`, { context: { reason, ...context }, cause });
}

/** The reason of a RECORD_MALFORMED error (undefined for any other error). */
export function malformedReason(err: unknown): MalformedReason | undefined {
  return err instanceof NettallyError && err.code === 'RECORD_MALFORMED' ? (err.context.reason as MalformedReason) : undefined;
}

export interface CodecOptions {
  /** Reader (and writer) schema per kind; defaults to the shipped current schemas. */
  readerSchemas?: Partial<Record<RecordKind, avro.Schema>>;
  /** Further writer schemas to accept (e.g. newer revisions); the shipped ones are always known. */
  writerSchemas?: readonly avro.Schema[];
  /**
   * false: avsc reads every record (the oracle of the reader tests, the baseline of bench:consumer). Default true: a
   * reader generated per writer schema (schemas/reader.ts) reads well-formed records, avsc everything else.
   */
  fastReader?: boolean;
  /**
   * false: avsc writes every record (the oracle of the writer tests, the baseline of bench:records). Default true: a
   * writer generated per current schema (schemas/writer.ts) writes the records it can write exactly, avsc the rest.
   */
  fastWriter?: boolean;
}

/** The schema a codec writes one kind with: avsc's type, the single-object header, and the generated writer. */
interface Output {
  type: avro.Type;
  header: Buffer;
  fingerprint: string;
  /** Generated writer (null when the schema is outside writer.ts or fastWriter is off) and its buffer, header first. */
  fast: FastWriter | null;
  sink: Sink;
}

interface Writer {
  kind: RecordKind;
  type: avro.Type;
  /** The reader schema of `kind`, and avsc's resolver from this writer to it (when they differ). */
  reader: avro.Type;
  resolver?: ReturnType<avro.Type['createResolver']>;
  /** hex of the 8 fingerprint bytes, and the same bytes as two little-endian int32 for the lookup per message. */
  fingerprint: string;
  lo: number;
  hi: number;
  /** Generated reader: undefined until the first record of this writer, null when its schema is outside reader.ts. */
  fast?: FastReader | null;
}

/** How many records each reader decided (a record avsc decoded or rejected after the fast reader gave up counts as avsc). */
export interface DecodedBy {
  fast: number;
  avsc: number;
  /** Of the avsc ones: the generated reader threw something other than giving up (a bug; avsc decided them). */
  readerErrors: number;
}

/** How many records each writer wrote (or refused: a record the generated writer left to avsc counts as avsc). */
export interface EncodedBy {
  fast: number;
  avsc: number;
  /** Of the avsc ones: the generated writer threw something other than giving up (a bug, or a throwing getter). */
  writerErrors: number;
}

/** Encoder/decoder for one set of reader schemas plus a registry of known writer schemas by fingerprint. */
export class Codec {
  private readonly readers = new Map<RecordKind, Output>();
  private readonly writers = new Map<string, Writer>();
  /** The same writers as a list: a linear scan of two int32 compares beats hex-encoding 8 bytes per message. */
  private readonly writerList: Writer[] = [];
  private readonly kindByName = new Map<string, RecordKind>();
  private readonly fastReader: boolean;
  private readonly cursor: Cursor = { buf: EMPTY_BUF, p: 0 };
  /** Counts since construction; the reader tests assert the fast path is really taken. */
  readonly decodedBy: DecodedBy = { fast: 0, avsc: 0, readerErrors: 0 };
  readonly encodedBy: EncodedBy = { fast: 0, avsc: 0, writerErrors: 0 };

  constructor(opts: CodecOptions = {}) {
    this.fastReader = opts.fastReader ?? true;
    const current = currentSchemas();
    for (const kind of RECORD_KINDS) {
      const schema = opts.readerSchemas?.[kind] ?? current[kind];
      const type = parseType(schema);
      const fp = schemaFingerprint(type);
      const header = Buffer.concat([SINGLE_OBJECT_MAGIC, fp]);
      const fast = (opts.fastWriter ?? true) ? (compileWriter(type, LONGS) ?? null) : null;
      const sink: Sink = { buf: Buffer.alloc(4096), p: 0 };
      header.copy(sink.buf);
      this.readers.set(kind, { type, header, fingerprint: fp.toString('hex'), fast, sink });
      this.kindByName.set(fullName(schema), kind);
      for (const alias of type.aliases ?? []) this.kindByName.set(alias, kind);
      this.addWriter(fp, kind, type);
    }
    for (const s of [...shippedSchemas(), ...(opts.writerSchemas ?? [])]) this.addWriterSchema(s);
  }

  /** Accepts records written with `schema` (its record name or an alias must match a kind). Returns its fingerprint. */
  addWriterSchema(schema: avro.Schema): string {
    const type = parseType(schema);
    const bytes = schemaFingerprint(type);
    const fp = bytes.toString('hex');
    if (this.writers.has(fp)) return fp;
    const kind = this.kindByName.get(fullName(schema)) ?? (type.aliases ?? []).map((a) => this.kindByName.get(a)).find((k) => k);
    if (!kind) throw new NettallyError('INTERNAL', `writer schema ${fullName(schema)} matches no record kind`);
    this.addWriter(bytes, kind, type);
    return fp;
  }

  private addWriter(fp: Buffer, kind: RecordKind, type: avro.Type): void {
    const w: Writer = { kind, type, reader: this.reader(kind).type, fingerprint: fp.toString('hex'), lo: fp.readInt32LE(0), hi: fp.readInt32LE(4) };
    this.writers.set(w.fingerprint, w);
    this.writerList.push(w);
  }

  /** Fingerprint (hex of the 8 wire bytes) of the schema this codec writes `kind` with. */
  fingerprint(kind: RecordKind): string {
    return this.reader(kind).fingerprint;
  }

  /** Fingerprints of every writer schema this codec can decode. */
  knownFingerprints(): string[] {
    return [...this.writers.keys()];
  }

  /** The single-object encoding of `record`; throws RECORD_MALFORMED (reason invalid_body) naming the bad fields. */
  encode<K extends RecordKind>(kind: K, record: RecordByKind[K]): Buffer {
    const r = this.reader(kind);
    if (r.fast) {
      const s = r.sink;
      s.p = HEADER_BYTES; // the header stays in the buffer from construction (a grown buffer copies it along)
      try {
        r.fast(s, record as unknown as Record<string, unknown>);
        // A copy of exactly the record's bytes (small ones come from Node's buffer pool); the sink is reused.
        const out = Buffer.allocUnsafe(s.p);
        s.buf.copy(out, 0, 0, s.p);
        this.encodedBy.fast++;
        return out;
      } catch (e) {
        // Giving up: avsc decides the record below (its bytes, or its error). Anything else thrown is counted.
        if (!isWriterGiveUp(e)) this.encodedBy.writerErrors++;
      }
    }
    this.encodedBy.avsc++;
    let body: Buffer;
    try {
      body = r.type.toBuffer(record);
    } catch (e) {
      const bad: string[] = [];
      r.type.isValid(record, { errorHook: (path) => bad.push(path.join('.')) });
      throw malformed('invalid_body', `${kind} record has invalid fields: ${bad.join(', ') || (e as Error).message}`, { kind, fields: bad }, e);
    }
    return Buffer.concat([r.header, body], HEADER_BYTES + body.length);
  }

  /** Decodes one message; throws NettallyError RECORD_MALFORMED with context.reason on bad input. */
  decode(buf: Buffer): Decoded {
    if (buf.length < 2 || buf[0] !== 0xc3 || buf[1] !== 0x01) throw malformed('bad_magic', 'not Avro single-object encoding (expected 0xC3 0x01)', { bytes: buf.length });
    if (buf.length < HEADER_BYTES) throw malformed('truncated', `header needs ${HEADER_BYTES} bytes, got ${buf.length}`, { bytes: buf.length });
    const w = this.writerOf(buf);
    if (w.fast === undefined) this.prepare(w);
    if (w.fast) {
      const c = this.cursor;
      c.buf = buf;
      c.p = HEADER_BYTES;
      try {
        const record = w.fast(c);
        // Trailing bytes: avsc words the verdict below, like any input the fast reader did not accept in full.
        if (c.p === buf.length) {
          this.decodedBy.fast++;
          return { kind: w.kind, record, fingerprint: w.fingerprint } as Decoded;
        }
      } catch (e) {
        // Anything but giving up would be a bug in reader.ts: avsc still decides this record exactly; counted, so
        // tests (and anyone reading decodedBy) see it.
        if (!isGiveUp(e)) this.decodedBy.readerErrors++;
      } finally {
        c.buf = EMPTY_BUF; // hold no consumer message past its decode
      }
    }
    this.decodedBy.avsc++;
    return this.decodeWithAvsc(buf, w);
  }

  private writerOf(buf: Buffer): Writer {
    const lo = buf.readInt32LE(2);
    const hi = buf.readInt32LE(6);
    for (const w of this.writerList) if (w.lo === lo && w.hi === hi) return w;
    const fingerprint = buf.subarray(2, HEADER_BYTES).toString('hex');
    throw malformed('unknown_fingerprint', `unknown writer schema fingerprint ${fingerprint}`, { fingerprint });
  }

  /** On a writer's first record: avsc's resolver (as before: a pair avsc cannot resolve throws here), then a fast reader. */
  private prepare(w: Writer): void {
    if (!w.resolver && w.type !== w.reader) w.resolver = w.reader.createResolver(w.type);
    w.fast = (this.fastReader && compileReader(w.type, w.reader, LONGS)) || null;
  }

  private decodeWithAvsc(buf: Buffer, w: Writer): Decoded {
    const fingerprint = w.fingerprint;
    let out: { value: unknown; offset: number };
    try {
      out = w.reader.decode(buf, HEADER_BYTES, w.resolver);
    } catch (e) {
      throw malformed('invalid_body', `${w.kind} body does not match its schema: ${(e as Error).message}`, { fingerprint, kind: w.kind }, e);
    }
    if (out.offset < 0) throw malformed('truncated', `${w.kind} body is truncated`, { fingerprint, kind: w.kind, bytes: buf.length });
    if (out.offset !== buf.length) {
      throw malformed('invalid_body', `${buf.length - out.offset} trailing bytes after the ${w.kind} body`, { fingerprint, kind: w.kind });
    }
    // avsc returns record instances; a plain object keeps the consumer's JSON/equality handling simple.
    return { kind: w.kind, record: { ...(out.value as object) }, fingerprint } as Decoded;
  }

  private reader(kind: RecordKind): Output {
    const r = this.readers.get(kind);
    if (!r) throw new NettallyError('INTERNAL', `unknown record kind ${String(kind)}`);
    return r;
  }
}

export function createCodec(opts: CodecOptions = {}): Codec {
  return new Codec(opts);
}

let defaultCodec: Codec | undefined;
function codec(): Codec {
  defaultCodec ??= new Codec();
  return defaultCodec;
}

/** Encodes with the shipped current schema of `kind`. */
export function encode<K extends RecordKind>(kind: K, record: RecordByKind[K]): Buffer {
  return codec().encode(kind, record);
}

/** Decodes any message written with a shipped schema revision into the current reader schema. */
export function decode(buf: Buffer): Decoded {
  return codec().decode(buf);
}

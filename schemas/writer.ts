// A writer specialised to one record schema, generated as JavaScript at startup: the producer's hot path (avsc's
// generic writer spent ~14% of the producer's CPU, mostly turning every long into 8 bytes and back through
// packLongBytes). It writes straight into one reusable buffer, longs as varints from two 32-bit halves (no bigint
// arithmetic; a bigint input is split once through a DataView). avsc stays the judge of every value this writer does
// not write itself: on anything avsc might refuse, or write in its own way (a non-integer, an unsafe number, a bigint
// beyond int64, a non-string, a string with a lone surrogate, a union value outside null/string, a non-object), the
// writer gives up and Codec.encode hands the same record to avsc, whose bytes or error stand. So this writer only has
// to be exact on what it accepts, and it is: schemas/writer.test.ts compares both on random and odd records.
import type avro from 'avsc';
import type { LongTypes } from './reader';

/** Where a generated writer writes. One per record kind in a codec; encoding is synchronous. */
export interface Sink {
  buf: Buffer;
  p: number;
}

/** A generated writer: appends `v`'s Avro body at sink.p; throws on anything it leaves to avsc. */
export type FastWriter = (s: Sink, v: Record<string, unknown>) => void;

/** Thrown by a generated writer when it leaves the record to avsc. Not an Error: no stack to capture. */
const GIVE_UP: unique symbol = Symbol('nettally.writer.give-up');

/** True when `e` is a generated writer giving up (the record goes to avsc), not a bug. */
export function isWriterGiveUp(e: unknown): boolean {
  return e === GIVE_UP;
}

type Utf8Buffer = Buffer & { utf8Write(s: string, offset: number, length: number): number };

/** Makes room for `n` more bytes at s.p (a record with a long string grows the buffer; it is kept for the next ones). */
function room(s: Sink, n: number): void {
  if (s.p + n <= s.buf.length) return;
  const b = Buffer.allocUnsafe(Math.max(s.buf.length * 2, s.p + n));
  s.buf.copy(b, 0, 0, s.p);
  s.buf = b;
}

const TWO32 = 2 ** 32;
const MIN64 = -(2n ** 63n);
const MAX64 = 2n ** 63n - 1n;
const split = new DataView(new ArrayBuffer(8));

/** The zig-zag varint of the 64-bit two's complement (hi, lo): Avro's long, as avsc's packLongBytes writes it. */
function varint64(s: Sink, hi: number, lo: number): void {
  const sign = hi >> 31;
  let uhi = (((hi << 1) | (lo >>> 31)) ^ sign) >>> 0;
  let ulo = ((lo << 1) ^ sign) >>> 0;
  const buf = s.buf;
  let p = s.p;
  while (uhi !== 0 || ulo > 0x7f) {
    buf[p++] = (ulo & 0x7f) | 0x80;
    ulo = ((ulo >>> 7) | (uhi << 25)) >>> 0;
    uhi >>>= 7;
  }
  buf[p++] = ulo;
  s.p = p;
}

/** The zig-zag varint of an int32 (up to 5 bytes). */
function varint32(s: Sink, v: number): void {
  let u = ((v << 1) ^ (v >> 31)) >>> 0;
  const buf = s.buf;
  let p = s.p;
  while (u > 0x7f) {
    buf[p++] = (u & 0x7f) | 0x80;
    u >>>= 7;
  }
  buf[p++] = u;
  s.p = p;
}

/** avsc's `int`: exactly the numbers with v === (v | 0) (so -0 too, written as 0); a bigint makes avsc's `|` throw. */
function int(s: Sink, v: unknown): void {
  if (typeof v !== 'number' || v !== (v | 0)) throw GIVE_UP;
  room(s, 5);
  varint32(s, v as number);
}

/**
 * ExactLong (schemas/index.ts) and timestamp-nanos over it: a safe-integer number or a bigint within int64, as its
 * isValid says; anything else goes to avsc (which refuses it).
 */
function long(s: Sink, v: unknown): void {
  room(s, 10);
  if (typeof v === 'number') {
    if (v === (v | 0)) return varint32(s, v);
    if (!Number.isSafeInteger(v)) throw GIVE_UP;
    const hi = Math.floor(v / TWO32); // exact: |v| < 2^53, a power-of-two division
    return varint64(s, hi, v - hi * TWO32);
  }
  if (typeof v !== 'bigint' || v < MIN64 || v > MAX64) throw GIVE_UP;
  split.setBigInt64(0, v, true);
  varint64(s, split.getInt32(4, true), split.getUint32(0, true));
}

/**
 * A string as avsc writes it: the UTF-8 byte length, then the bytes. ASCII is copied in JS (most of our strings: ids,
 * addresses, names, cgroup paths); other strings, and strings of 8192+ characters, go through utf8Write. A string
 * with a lone surrogate goes to avsc, which writes it in its own way (CESU-style bytes up to 64 bytes, U+FFFD beyond).
 */
function string(s: Sink, v: unknown): void {
  if (typeof v !== 'string') throw GIVE_UP;
  const n = v.length;
  room(s, 5 + 3 * n);
  if (n < 8192) {
    // An ASCII string's byte length is n: its varint length takes 1 byte below 64, else 2. Write the bytes after it,
    // and bail out to utf8Write on the first non-ASCII character (container ids and kubepods cgroup paths are 64-200).
    const head = n < 64 ? 1 : 2;
    const buf = s.buf;
    let q = s.p + head;
    for (let i = 0; i < n; i++) {
      const c = v.charCodeAt(i);
      if (c > 0x7f) return utf8(s, v);
      buf[q++] = c;
    }
    if (head === 1) buf[s.p] = n << 1;
    else {
      buf[s.p] = ((n << 1) & 0x7f) | 0x80;
      buf[s.p + 1] = n >>> 6;
    }
    s.p = q;
    return;
  }
  utf8(s, v);
}

function utf8(s: Sink, v: string): void {
  if (!(v as string & { isWellFormed(): boolean }).isWellFormed()) throw GIVE_UP;
  const len = Buffer.byteLength(v, 'utf8');
  varint32(s, len);
  s.p += (s.buf as Utf8Buffer).utf8Write(v, s.p, len);
}

/** A union of null and string (the only unions in the shipped schemas), branch indices as the schema orders them. */
function nullOrString(s: Sink, v: unknown, nullIndex: number): void {
  room(s, 1);
  if (v === null) {
    s.buf[s.p++] = nullIndex << 1;
    return;
  }
  if (typeof v !== 'string') throw GIVE_UP;
  s.buf[s.p++] = (1 - nullIndex) << 1;
  string(s, v);
}

/** Bytes avsc writes for a defaulted field whose value is undefined (its default, encoded once by avsc). */
function bytes(s: Sink, b: Buffer): void {
  room(s, b.length);
  for (let i = 0; i < b.length; i++) s.buf[s.p++] = b[i];
}

const HELPERS = { int, long, string, nullOrString, bytes, GIVE_UP };

/** How one field is written: a helper call on the value. undefined when this writer does not know the type. */
function writeExpr(t: avro.Type, v: string, longs: LongTypes): string | undefined {
  if (longs.isExactLong(t) || longs.isTimestampNanos(t)) return `long(s, ${v})`;
  if (t.typeName === 'int') return `int(s, ${v})`;
  if (t.typeName === 'string') return `string(s, ${v})`;
  if (t.typeName === 'union:unwrapped') {
    const names = (t as avro.types.UnwrappedUnionType).types.map((b) => b.typeName);
    if (names.length === 2 && names.includes('null') && names.includes('string')) return `nullOrString(s, ${v}, ${names.indexOf('null')})`;
  }
  return undefined;
}

/**
 * Compiles a writer of `type`'s records, field by field as avsc's record writer does: each field read once
 * (`v.name`, inherited and getter properties included), a defaulted field that is undefined written as its default,
 * fields not in the schema ignored. undefined when a field's type is outside the supported ones (avsc writes those).
 */
export function compileWriter(type: avro.Type, longs: LongTypes): FastWriter | undefined {
  if (type.typeName !== 'record') return undefined;
  const consts: Buffer[] = [];
  const body: string[] = [];
  for (const [i, f] of (type as avro.types.RecordType).fields.entries()) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(f.name)) return undefined; // Avro names are; a property access must be safe
    const write = writeExpr(f.type, `v${i}`, longs);
    if (!write) return undefined;
    const d: unknown = f.defaultValue();
    if (d === undefined) {
      body.push(`const v${i} = v.${f.name}; ${write};`);
    } else {
      body.push(`const v${i} = v.${f.name}; if (v${i} === undefined) bytes(s, k[${consts.length}]); else ${write};`);
      consts.push(f.type.toBuffer(d));
    }
  }
  const names = Object.keys(HELPERS);
  const src = `'use strict';\nconst { ${names.join(', ')} } = h;\nreturn function write(s, v) {\n  if (typeof v !== 'object' || v === null) throw GIVE_UP;\n  ${body.join('\n  ')}\n};`;
  return new Function('h', 'k', src)(HELPERS, consts) as FastWriter;
}

// A reader specialised to one (writer schema, reader schema) pair, generated as JavaScript at startup: the consumer's
// hot path. avsc stays the judge of every input this reader does not accept in full: on anything unusual (a varint
// longer than the widths below, a negative or out-of-bounds length, a union index other than a one-byte valid one,
// bytes past the end, trailing bytes) the reader gives up and Codec.decode hands the same bytes to avsc, whose
// value or verdict (truncated / invalid_body) is final. So the reader only has to be exact on what it accepts, and
// it is: schemas/reader.test.ts compares both on random records and random corruptions.
import type avro from 'avsc';

/** Where a generated reader is in the buffer. One per codec; decoding is synchronous. */
export interface Cursor {
  buf: Buffer;
  p: number;
}

/** A generated reader: the record in the reader schema, the cursor after its last byte; throws on anything unusual. */
export type FastReader = (c: Cursor) => object;

/** Thrown by a generated reader when it leaves the input to avsc. Not an Error: no stack to capture. */
const GIVE_UP: unique symbol = Symbol('nettally.reader.give-up');

/** True when `e` is a generated reader giving up (the input goes to avsc), not a bug. */
export function isGiveUp(e: unknown): boolean {
  return e === GIVE_UP;
}

// --- varints, each exact for what it accepts and equal to avsc's reading of the same bytes ---

const TWO28 = 2 ** 28;
const TWO32 = 2 ** 32;
const TWO42 = 2 ** 42;

type Utf8Buffer = Buffer & { utf8Slice(start: number, end: number): string; latin1Slice(start: number, end: number): string };

/** One byte; past the end, give up (avsc reports truncated). */
function byteAt(c: Cursor, p: number): number {
  if (p >= c.buf.length) throw GIVE_UP;
  return c.buf[p];
}

/**
 * Up to 4 varint bytes in int32 arithmetic (avsc's own first step): u < 2^28 with the cursor after it; or -1 when a
 * fifth byte follows, with the 28 bits and the position after them in `head`.
 */
const head = { n: 0, p: 0 };
function varint28(c: Cursor): number {
  let p = c.p;
  let b = byteAt(c, p++);
  let n = b & 0x7f;
  for (let k = 7; b > 0x7f; k += 7) {
    if (k === 28) {
      head.n = n;
      head.p = p;
      return -1;
    }
    b = byteAt(c, p++);
    n |= (b & 0x7f) << k;
  }
  c.p = p;
  return n;
}

/**
 * avsc's `int` (Tap.readInt): zig-zag of up to 7 varint bytes; no range check, as in avsc (an `int` field holding
 * 2^40 decodes to 2^40 there too). 28 bits in integer arithmetic, then floats, with avsc's own formula.
 */
function int(c: Cursor): number {
  const n = varint28(c);
  if (n >= 0) return (n >>> 1) ^ -(n & 1);
  let f = head.n;
  let p = head.p;
  for (let fk = TWO28; ; fk *= 128) {
    if (fk > TWO42) throw GIVE_UP;
    const b = byteAt(c, p++);
    f += (b & 0x7f) * fk;
    if (b < 0x80) break;
  }
  c.p = p;
  return (f % 2 ? -(f + 1) : f) / 2;
}

/** A length (string): up to 4 varint bytes, non-negative. avsc decides negative or longer ones. */
function len(c: Cursor): number {
  const u = varint28(c);
  if (u < 0 || u & 1) throw GIVE_UP;
  return u >>> 1;
}

const scratch = new DataView(new ArrayBuffer(8));

/**
 * The 64 bits avsc's Tap.unpackLongBytes makes of up to 10 varint bytes: (u >> 1) truncated to 64 bits, inverted when
 * u is odd (zig-zag). Returned as the two 32-bit halves in `wide`, to the caller's choice of number or bigint.
 */
const wide = { lo: 0, hi: 0 };
function wideLong(c: Cursor): void {
  let p = c.p;
  let lo = 0;
  let hi = 0;
  let b = 0x80;
  for (let i = 0; b > 0x7f; i++) {
    if (i === 10) throw GIVE_UP;
    b = byteAt(c, p++);
    const d = b & 0x7f;
    // bit position of this byte's 7 bits in u >> 1: byte 0 loses its lowest bit (the sign), byte i starts at 7i - 1
    if (i === 0) lo = d >>> 1;
    else if (i < 4) lo |= d << (7 * i - 1);
    else if (i === 4) {
      lo |= d << 27;
      hi = d >>> 5;
    } else hi |= d << (7 * i - 33); // i = 9: bits past 63 fall off, as in avsc
  }
  if (c.buf[c.p] & 1) {
    lo = ~lo;
    hi = ~hi;
  }
  c.p = p;
  wide.lo = lo >>> 0;
  wide.hi = hi | 0;
}

function wideBigInt(): bigint {
  scratch.setUint32(0, wide.lo, true);
  scratch.setInt32(4, wide.hi, true);
  return scratch.getBigInt64(0, true);
}

/** `wide` as ExactLong (schemas/index.ts) returns it: a number when |v| < 2^53, else a bigint. */
function wideValue(): number | bigint {
  const { lo, hi } = wide;
  if (hi < 0x200000 && hi >= -0x200000) {
    const v = hi * TWO32 + lo;
    if (Number.isSafeInteger(v)) return v;
  }
  return wideBigInt();
}

/** ExactLong: up to 5 bytes in integer/float arithmetic (the common counters), wider ones via `wide`. */
function long(c: Cursor): number | bigint {
  const n = varint28(c);
  if (n >= 0) return (n >>> 1) ^ -(n & 1);
  const b = byteAt(c, head.p);
  if (b < 0x80) {
    // u < 2^35: exact in a double, and so is the zig-zag
    const f = head.n + b * TWO28;
    c.p = head.p + 1;
    return f % 2 ? -(f + 1) / 2 : f / 2;
  }
  wideLong(c);
  return wideValue();
}

/** TimestampNanos over ExactLong: always a bigint. */
function timestampNanos(c: Cursor): bigint {
  wideLong(c);
  return wideBigInt();
}

// Strings: most values repeat (host_id, hostname, boot_id, comm, addresses, flush_reason, workload of one host's
// records), so each string field keeps the strings it decoded last, one per slot: a hit costs a few byte compares
// instead of a call into C++ and a new string (~30% more events per CPU-second on bench:consumer's data). Bounded:
// at most CACHE_SLOTS strings of at most CACHE_MAX_BYTES per field and writer schema. Only ASCII strings are kept, so
// that equal char codes mean equal bytes; anything else is decoded by utf8Slice every time.
const CACHE_SLOTS = 1024;
const CACHE_MAX_BYTES = 64;
/** Recently decoded ASCII strings of one field, by a hash of their bytes. */
interface StringCache {
  vals: Array<string | undefined>;
}
function newCache(): StringCache {
  return { vals: new Array<string | undefined>(CACHE_SLOTS).fill(undefined) };
}

function cachedString(c: Cursor, cache: StringCache): string {
  const n = len(c);
  const p = c.p;
  const e = p + n;
  const buf = c.buf;
  if (e > buf.length) throw GIVE_UP;
  c.p = e;
  if (n === 0) return '';
  if (n > CACHE_MAX_BYTES) return (buf as Utf8Buffer).utf8Slice(p, e);
  // A few bytes from both ends and the middle pick the slot (only the string's own bytes, so one string has one
  // slot); the full comparison below decides.
  const m = p + (n >>> 1);
  let h = Math.imul(n ^ (buf[p] << 8) ^ (buf[e - 1] << 16) ^ (buf[m] << 24), 0x9e3779b1);
  if (n >= 4) h = Math.imul(h ^ buf[e - 2] ^ (buf[m - 1] << 8) ^ (buf[p + 1] << 16) ^ (buf[e - 3] << 24), 0x85ebca6b);
  const slot = (h ^ (h >>> 15)) & (CACHE_SLOTS - 1);
  const v = cache.vals[slot];
  if (v !== undefined && v.length === n) {
    // v is ASCII (see below), so equal char codes mean equal bytes
    let i = 0;
    while (i < n && v.charCodeAt(i) === buf[p + i]) i++;
    if (i === n) return v;
  }
  let or = 0;
  for (let i = p; i < e; i++) or |= buf[i];
  if (or > 0x7f) return (buf as Utf8Buffer).utf8Slice(p, e);
  const s = (buf as Utf8Buffer).latin1Slice(p, e);
  cache.vals[slot] = s;
  return s;
}

/** A union branch index: one varint byte naming an existing branch; avsc decides any other. */
function branch(c: Cursor, branches: number): number {
  const b = byteAt(c, c.p);
  if (b & 1 || b > 0x7f || b >>> 1 >= branches) throw GIVE_UP;
  c.p++;
  return b >>> 1;
}

function skipVarint(c: Cursor): void {
  let p = c.p;
  for (let i = 0; byteAt(c, p++) > 0x7f; i++) if (i === 9) throw GIVE_UP;
  c.p = p;
}

function skipString(c: Cursor): void {
  const e = len(c) + c.p;
  if (e > c.buf.length) throw GIVE_UP;
  c.p = e;
}

const HELPERS = { int, long, timestampNanos, cachedString, newCache, branch, skipVarint, skipString };
type Helper = keyof typeof HELPERS;

// --- the types this reader knows; any other makes compileReader return undefined (avsc reads that writer) ---

/** The leaf kinds of the shipped schemas, by how they are read. */
type Leaf = 'null' | 'string' | 'int' | 'long' | 'timestamp-nanos';
type Shape = Leaf | { union: Leaf[] };

/** How schemas/index.ts marks its exact long types (avsc sees them as 'abstract:long' and a logical type). */
export interface LongTypes {
  isExactLong(t: avro.Type): boolean;
  isTimestampNanos(t: avro.Type): boolean;
}

function leaf(t: avro.Type, longs: LongTypes): Leaf | undefined {
  if (longs.isExactLong(t)) return 'long';
  if (longs.isTimestampNanos(t)) return 'timestamp-nanos';
  const name = t.typeName;
  return name === 'null' || name === 'string' || name === 'int' ? name : undefined;
}

function shape(t: avro.Type, longs: LongTypes): Shape | undefined {
  if (t.typeName === 'union:unwrapped') {
    const branches = (t as avro.types.UnwrappedUnionType).types.map((b) => leaf(b, longs));
    return branches.every((b): b is Leaf => b !== undefined) ? { union: branches } : undefined;
  }
  return leaf(t, longs);
}

const sameShape = (a: Shape, b: Shape): boolean => JSON.stringify(a) === JSON.stringify(b);

// null is no bytes: read as the constant, skipped as nothing
const READ: Record<Leaf, Helper | undefined> = { null: undefined, string: 'cachedString', int: 'int', long: 'long', 'timestamp-nanos': 'timestampNanos' };
const SKIP: Record<Leaf, Helper | undefined> = { null: undefined, string: 'skipString', int: 'skipVarint', long: 'skipVarint', 'timestamp-nanos': 'skipVarint' };

/** Statements reading (into `v`) or skipping (v undefined) one value of shape `s`. */
function emit(s: Shape, v: string | undefined): string {
  const read = (l: Leaf): string => (l === 'string' ? `cachedString(c, ${v}$cache)` : READ[l] ? `${READ[l]}(c)` : 'null');
  const skip = (l: Leaf): string => (SKIP[l] ? `${SKIP[l]}(c);` : '');
  if (typeof s === 'string') return v ? `const ${v} = ${read(s)};` : skip(s);
  const cases = s.union.map((b, i) => `case ${i}: ${v ? `${v} = ${read(b)};` : skip(b)} break;`);
  return `${v ? `let ${v};` : ''} switch (branch(c, ${s.union.length})) { ${cases.join(' ')} }`;
}


/**
 * Compiles a reader of `writer` records into `reader`'s schema, resolved as avsc resolves them: reader fields matched
 * by name or alias, writer-only fields skipped, reader-only fields given their default (the caller has already had
 * avsc create its resolver, so the pair is known to resolve). undefined when a type is outside the supported shapes.
 */
export function compileReader(writer: avro.Type, reader: avro.Type, longs: LongTypes): FastReader | undefined {
  if (writer.typeName !== 'record' || reader.typeName !== 'record') return undefined;
  const wFields = (writer as avro.types.RecordType).fields;
  const rFields = (reader as avro.types.RecordType).fields;
  if (rFields.some((f) => f.name === '__proto__')) return undefined; // a valid Avro name, but not in an object literal
  const consts: unknown[] = [];
  const valueOf = new Map<string, string>(); // reader field name -> JS expression
  const body: string[] = [];
  const prelude: string[] = [];
  for (const [i, wf] of wFields.entries()) {
    const ws = shape(wf.type, longs);
    if (!ws) return undefined;
    const readers = rFields.filter((rf) => rf.name === wf.name || (rf.aliases ?? []).includes(wf.name));
    if (readers.length > 1) return undefined; // avsc "peeks" the value once per reader field; not worth a copy here
    const rf = readers[0];
    if (rf) {
      const rs = shape(rf.type, longs);
      if (!rs || !sameShape(ws, rs) || valueOf.has(rf.name)) return undefined;
      valueOf.set(rf.name, `v${i}`);
      body.push(emit(ws, `v${i}`));
      if (ws === 'string' || (typeof ws === 'object' && ws.union.includes('string'))) prelude.push(`const v${i}$cache = newCache();`);
    } else {
      body.push(emit(ws, undefined));
    }
  }
  for (const rf of rFields) {
    if (valueOf.has(rf.name)) continue;
    const d: unknown = rf.defaultValue();
    if (d === undefined || (d !== null && typeof d === 'object')) return undefined; // avsc copies object defaults per record
    valueOf.set(rf.name, `k[${consts.length}]`);
    consts.push(d);
  }
  const fields = rFields.map((rf) => `${JSON.stringify(rf.name)}: ${valueOf.get(rf.name)}`);
  const names = Object.keys(HELPERS) as Helper[];
  const src = `'use strict';\nconst { ${names.join(', ')} } = h;\n${prelude.join('\n')}\nreturn function read(c) {\n  ${body.join('\n  ')}\n  return { ${fields.join(', ')} };\n};`;
  return new Function('h', 'k', src)(HELPERS, consts) as FastReader;
}

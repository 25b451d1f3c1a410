// The generated reader (schemas/reader.ts) against avsc as the oracle: on every input both must agree on the value
// (types included: number vs bigint) or on the rejection (reason and message), and the generated reader must really
// decide the well-formed records (else agreement would be vacuous: avsc agreeing with itself).
import avro from 'avsc';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { mulberry32 } from '../consumer/synthetic';
import { createCodec, currentSchemas, malformedReason, RECORD_KINDS, type Codec, type RecordByKind, type RecordKind } from './index';
import { AVSC_DEFAULTS } from './types.generated';

const oracle = createCodec({ fastReader: false });

type Verdict = { value: string } | { reason: string | undefined; message: string };

/** Values with their JS types spelled out, so 5 and 5n, or 0 and -0, differ. */
function typed(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => {
    if (typeof x === 'bigint') return `bigint:${x}`;
    if (typeof x === 'number') return `number:${Object.is(x, -0) ? '-0' : x}`;
    return x;
  });
}

function verdict(codec: Codec, buf: Buffer): Verdict {
  try {
    const d = codec.decode(buf);
    return { value: typed([d.kind, d.fingerprint, Object.entries(d.record)]) };
  } catch (e) {
    return { reason: malformedReason(e), message: (e as Error).message };
  }
}

type FieldSchema = { name: string; type: unknown };
const fieldsOf = (schema: avro.Schema): FieldSchema[] => (schema as unknown as { fields: FieldSchema[] }).fields;
const r1Of = (kind: RecordKind): avro.Schema => JSON.parse(readFileSync(join(__dirname, 'archive', `${kind}.r1.avsc`), 'utf8')) as avro.Schema;
/** A compatible revision with one more long field (default 42): read by current readers with a skip. */
function withExtra(schema: avro.Schema): avro.Schema {
  const s = JSON.parse(JSON.stringify(schema)) as { fields: object[] };
  s.fields.splice(3, 0, { name: 'extra', type: 'long', default: 42 });
  return s as unknown as avro.Schema;
}

const LONG_EDGES = [0n, 1n, -1n, 63n, -64n, 64n, 2n ** 27n, 2n ** 31n - 1n, -(2n ** 31n), 2n ** 34n, 2n ** 35n, 2n ** 48n, 2n ** 53n - 1n, -(2n ** 53n - 1n), 2n ** 53n, -(2n ** 53n), 2n ** 53n + 1n, 2n ** 62n, 2n ** 63n - 1n, -(2n ** 63n)];
const STRING_POOL = ['', 'a', 'host-a', '0123456789abcdef0123456789abcdef', 'fd00::1', 'é', 'x'.repeat(64), 'y'.repeat(65), 'z'.repeat(200), '\u{1F600} ok', 'abXdefghij', 'abYdefghij'];

/** A random value of an Avro type as the codec takes it (longs as bigint or number, strings often repeated). */
function randomValue(type: unknown, rnd: () => number): unknown {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)];
  if (Array.isArray(type)) return rnd() < 0.3 ? null : randomValue(type[1], rnd);
  if (typeof type === 'object' && type !== null) return randomValue((type as { type: unknown }).type, rnd) as bigint; // timestamp-nanos
  switch (type) {
    case 'long': {
      const v = rnd() < 0.5 ? pick(LONG_EDGES) : BigInt.asIntN(64, BigInt(Math.floor(rnd() * 2 ** 32)) * 2n ** 32n + BigInt(Math.floor(rnd() * 2 ** 32))) >> BigInt(Math.floor(rnd() * 64));
      return rnd() < 0.5 && v >= -(2n ** 53n - 1n) && v <= 2n ** 53n - 1n ? Number(v) : v;
    }
    case 'int':
      return rnd() < 0.5 ? pick([0, -1, 1, 80, 65535, 2 ** 31 - 1, -(2 ** 31)]) : Math.floor(rnd() * 2 ** 32) - 2 ** 31;
    case 'string':
      return rnd() < 0.7 ? pick(STRING_POOL) : Array.from({ length: Math.floor(rnd() * 40) }, () => String.fromCodePoint(rnd() < 0.9 ? 32 + Math.floor(rnd() * 95) : 0xa0 + Math.floor(rnd() * 0x2000))).join('');
    default:
      throw new Error(`no generator for ${JSON.stringify(type)}`);
  }
}

function randomRecord(schema: avro.Schema, rnd: () => number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of fieldsOf(schema)) out[f.name] = randomValue(f.type, rnd);
  if (typeof out.time_ns === 'number') out.time_ns = BigInt(out.time_ns);
  return out;
}

/** Damage of the kinds a broken or hostile producer makes: flips, cuts, insertions, runs of continuation bytes. */
function corrupt(buf: Buffer, rnd: () => number): Buffer {
  const b = Buffer.from(buf);
  const at = 10 + Math.floor(rnd() * Math.max(1, b.length - 10));
  switch (Math.floor(rnd() * 7)) {
    case 0:
      b[at] = Math.floor(rnd() * 256);
      return b;
    case 1:
      b[at] ^= 1 << Math.floor(rnd() * 8);
      return b;
    case 2:
      return b.subarray(0, at);
    case 3:
      return Buffer.concat([b.subarray(0, at), Buffer.from([Math.floor(rnd() * 256)]), b.subarray(at)]);
    case 4:
      return Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + Math.floor(rnd() * 3))]);
    case 5:
      return Buffer.concat([b.subarray(0, at), Buffer.alloc(1 + Math.floor(rnd() * 12), 0x80 | Math.floor(rnd() * 128)), b.subarray(at)]);
    default:
      return Buffer.concat([b, Buffer.from([Math.floor(rnd() * 256)])]);
  }
}

describe('generated reader against avsc', () => {
  // writer revision -> the current reader: same schema, r1 (workload defaulted), a newer writer (field skipped)
  const pairs: Array<[string, RecordKind, avro.Schema]> = RECORD_KINDS.flatMap((kind): Array<[string, RecordKind, avro.Schema]> => [
    ['current', kind, currentSchemas()[kind]],
    ['r1', kind, r1Of(kind)],
    ['newer', kind, withExtra(currentSchemas()[kind])],
  ]);

  it.each(pairs)('agrees on random %s %s records and on random corruptions of them', (_rev, kind, writerSchema) => {
    const writer = createCodec({ readerSchemas: { [kind]: writerSchema } });
    const fast = createCodec({ writerSchemas: [writerSchema] });
    const slow = createCodec({ writerSchemas: [writerSchema], fastReader: false });
    const rnd = mulberry32(0x5eed + kind.length);
    let valid = 0;
    let corrupted = 0;
    const rejected = new Set<string | undefined>();
    for (let i = 0; i < 400; i++) {
      const buf = writer.encode(kind, randomRecord(writerSchema, rnd) as unknown as RecordByKind[typeof kind]);
      const want = verdict(slow, buf);
      expect('value' in want).toBe(true);
      expect(verdict(fast, buf)).toEqual(want);
      valid++;
      for (let j = 0; j < 8; j++) {
        const bad = corrupt(buf, rnd);
        const w = verdict(slow, bad);
        const got = verdict(fast, bad);
        // expect() only on a difference: it names the record, the corruption and the bytes (expect per case is slow)
        if (JSON.stringify(got) !== JSON.stringify(w)) expect([i, j, bad.toString('hex'), got]).toEqual([i, j, bad.toString('hex'), w]);
        if ('reason' in w) rejected.add(w.reason);
        corrupted++;
      }
    }
    // every well-formed record was read by the generated reader, not handed to avsc
    expect(fast.decodedBy.fast).toBeGreaterThanOrEqual(valid);
    expect(fast.decodedBy.fast + fast.decodedBy.avsc).toBe(valid + corrupted);
    expect(fast.decodedBy.readerErrors).toBe(0);
    // the corruptions reached both verdicts avsc gives on bodies
    expect([...rejected].sort()).toEqual(['invalid_body', 'truncated']);
  });

  it('a reader with a field the writer lacks gives its default (a newer reader, an older writer)', () => {
    const newer = withExtra(currentSchemas().iface);
    const fast = createCodec({ readerSchemas: { iface: newer } });
    const slow = createCodec({ readerSchemas: { iface: newer }, fastReader: false });
    const buf = createCodec().encode('iface', randomRecord(currentSchemas().iface, mulberry32(7)) as unknown as RecordByKind['iface']);
    expect(verdict(fast, buf)).toEqual(verdict(slow, buf));
    expect(fast.decode(buf).record).toEqual(expect.objectContaining({ extra: 42 }));
    expect(fast.decodedBy).toEqual({ fast: 2, avsc: 0, readerErrors: 0 });
  });
});

// --- hand-made bodies: each field's bytes given explicitly ---

/** Avro zig-zag varint of a 64-bit value. */
function varint(v: bigint): number[] {
  let u = BigInt.asUintN(64, (v << 1n) ^ (v >> 63n));
  const out: number[] = [];
  do {
    let b = Number(u & 0x7fn);
    u >>= 7n;
    if (u) b |= 0x80;
    out.push(b);
  } while (u);
  return out;
}
const str = (s: string | Buffer): number[] => {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return [...varint(BigInt(b.length)), ...b];
};

// From the .avsc defaults first, so a field added with a default needs no edit here (producer/layout.test.ts).
const LISTEN: RecordByKind['listen'] = {
  ...AVSC_DEFAULTS.listen,
  host_id: '0123456789abcdef0123456789abcdef', hostname: 'h', boot_id: 'b', epoch: 1, seq: 2, time_ns: 3n, ts_ns: 4, cookie: 5, netns: 6,
  netns_cookie: 7, pid: 8, uid: 9, comm: 'nginx', family: 2, addr: '0.0.0.0', port: 80, backlog: 511, protocol: 6, cgroup_path: null,
  container_id: 'c', workload: 'w',
};

/** A listen message whose fields are LISTEN's, except the raw bytes given per field name. */
function listenWith(raw: Record<string, number[]>): Buffer {
  const bytes: number[] = [];
  for (const f of fieldsOf(currentSchemas().listen)) {
    if (raw[f.name]) {
      bytes.push(...raw[f.name]);
      continue;
    }
    const v = (LISTEN as unknown as Record<string, unknown>)[f.name];
    if (Array.isArray(f.type)) bytes.push(...(v === null ? [0] : [2, ...str(v as string)]));
    else if (typeof v === 'string') bytes.push(...str(v));
    else bytes.push(...varint(BigInt(v as number | bigint)));
  }
  return Buffer.concat([Buffer.from([0xc3, 0x01]), Buffer.from(createCodec().fingerprint('listen'), 'hex'), Buffer.from(bytes)]);
}

describe('generated reader on hand-made bodies', () => {
  const same = (buf: Buffer): Verdict => {
    const fast = createCodec();
    const v = verdict(fast, buf);
    expect(v).toEqual(verdict(oracle, buf));
    return v;
  };
  const decodedBy = (buf: Buffer): 'fast' | 'avsc' => {
    const c = createCodec();
    try {
      c.decode(buf);
    } catch {
      // the verdict is checked by same()
    }
    return c.decodedBy.fast ? 'fast' : 'avsc';
  };
  const record = (buf: Buffer): Record<string, unknown> => createCodec().decode(buf).record as unknown as Record<string, unknown>;

  it('reads the plain body itself', () => {
    const buf = listenWith({});
    same(buf);
    expect(record(buf)).toEqual(LISTEN);
    expect(decodedBy(buf)).toBe('fast');
  });

  it.each([
    ['2^53 - 1', 2n ** 53n - 1n, 'number'],
    ['-(2^53 - 1)', -(2n ** 53n - 1n), 'number'],
    ['2^53', 2n ** 53n, 'bigint'],
    ['-(2^53)', -(2n ** 53n), 'bigint'],
    ['2^53 + 1', 2n ** 53n + 1n, 'bigint'],
    ['max int64', 2n ** 63n - 1n, 'bigint'],
    ['min int64', -(2n ** 63n), 'bigint'],
  ])('reads the long %s (%s) exactly, as a %s', (_name, v, type) => {
    const buf = listenWith({ backlog: varint(v), time_ns: varint(v) });
    same(buf);
    const r = record(buf);
    expect(typeof r.backlog).toBe(type);
    expect(BigInt(r.backlog as number | bigint)).toBe(v);
    expect(r.time_ns).toBe(v);
    expect(decodedBy(buf)).toBe('fast');
  });

  it.each([
    ['an 11-byte varint of 0 (avsc accepts it)', [...Array<number>(10).fill(0x80), 0x00]],
    ['a 10-byte varint with bits past 64 (avsc drops them)', [...Array<number>(9).fill(0xff), 0x7f]],
    ['a 16-byte varint', [...Array<number>(15).fill(0xff), 0x01]],
    ['a varint running to the end of the message', Array<number>(40).fill(0xff)],
  ])('leaves %s to avsc, with its verdict', (_name, raw) => {
    for (const field of ['backlog', 'time_ns', 'pid', 'epoch']) same(listenWith({ [field]: raw }));
  });

  it('gives the same value for a non-minimal varint it reads itself (10 bytes)', () => {
    const buf = listenWith({ backlog: [0x82, ...Array<number>(8).fill(0x80), 0x00] });
    same(buf);
    expect(record(buf).backlog).toBe(1);
    expect(decodedBy(buf)).toBe('fast');
  });

  it('reads an int field holding more than 32 bits as avsc does (no range check there either)', () => {
    const buf = listenWith({ pid: varint(2n ** 40n + 3n) });
    expect(same(buf)).toEqual({ value: expect.stringContaining('number:1099511627779') });
  });

  it.each([
    ['a negative string length', { comm: varint(-3n) }, 'truncated'],
    ['a string length past the end', { workload: [...varint(100n), 0x41] }, 'truncated'],
    ['a union index out of range', { cgroup_path: [0x04] }, 'invalid_body'],
    ['a negative union index', { cgroup_path: [0x01] }, 'invalid_body'],
    ['trailing bytes', { workload: [...str('w'), 0x00] }, 'invalid_body'],
  ])('rejects %s with avsc\'s reason', (_name, raw, reason) => {
    const v = same(listenWith(raw));
    expect(v).toEqual(expect.objectContaining({ reason }));
  });

  it('decodes invalid UTF-8 as avsc does (replacement characters), and never confuses it with other bytes', () => {
    const latin = Buffer.from([0x6e, 0xe9, 0x78]); // "n", a lone 0xE9, "x"
    const buf = listenWith({ comm: str(latin) });
    same(buf);
    expect(record(buf).comm).toBe('n\uFFFDx');
    const c = createCodec();
    expect(c.decode(listenWith({ comm: str('néx') })).record).toEqual(expect.objectContaining({ comm: 'néx' }));
    expect(c.decode(buf).record).toEqual(expect.objectContaining({ comm: 'n\uFFFDx' }));
  });

  it('keeps strings apart that share the bytes its cache looks at first', () => {
    const c = createCodec();
    const names = ['abXdefghij', 'abYdefghij', 'abXdefghij', 'abcdefZhij', 'abYdefghij'];
    expect(names.map((n) => (c.decode(listenWith({ comm: str(n) })).record as { comm: string }).comm)).toEqual(names);
    expect(c.decodedBy.fast).toBe(names.length);
  });
});

// The generated writer (schemas/writer.ts) against avsc as the oracle: on every record both must produce the same
// bytes, or fail with the same error (code, reason, message, context) — the producer counts and skips a record whose
// encode throws (producer/ingest.ts), so its strictness is part of the contract. The generated writer must really
// write the well-formed records (else agreement would be vacuous: avsc agreeing with itself).
import avro from 'avsc';
import { mulberry32 } from '../consumer/synthetic';
import { NettallyError } from '../lib/errors';
import { createCodec, currentSchemas, RECORD_KINDS, type Codec, type RecordByKind, type RecordKind } from './index';

const oracle = createCodec({ fastWriter: false });

type Outcome = { hex: string } | { code: string | undefined; message: string; context: unknown };

function outcome(codec: Codec, kind: RecordKind, record: unknown): Outcome {
  try {
    return { hex: codec.encode(kind, record as RecordByKind[typeof kind]).toString('hex') };
  } catch (e) {
    return { code: e instanceof NettallyError ? e.code : undefined, message: (e as Error).message, context: e instanceof NettallyError ? e.context : undefined };
  }
}

type FieldSchema = { name: string; type: unknown };
const fieldsOf = (schema: avro.Schema): FieldSchema[] => (schema as unknown as { fields: FieldSchema[] }).fields;

const TWO53 = 2n ** 53n;
const LONG_EDGES = [
  0n, 1n, -1n, 63n, -64n, 64n, -65n, 2n ** 27n, 2n ** 28n, 2n ** 30n - 1n, 2n ** 30n, -(2n ** 30n), -(2n ** 30n) - 1n, 2n ** 31n - 1n, -(2n ** 31n),
  2n ** 32n, 2n ** 32n - 1n, -(2n ** 32n), 2n ** 34n, 2n ** 35n, 2n ** 48n, 2n ** 52n, -(2n ** 52n) - 1n, TWO53 - 1n, -(TWO53 - 1n), TWO53, -TWO53,
  TWO53 + 1n, -(TWO53 + 1n), 2n ** 62n, 2n ** 63n - 1n, -(2n ** 63n), -(2n ** 63n) + 1n, 1_764_633_600_000_000_000n,
];
const STRING_POOL = [
  '', 'a', 'host-a', '0123456789abcdef0123456789abcdef', 'fd00::1', 'é', 'x'.repeat(63), 'x'.repeat(64), 'y'.repeat(65), 'z'.repeat(200),
  'w'.repeat(127), 'w'.repeat(128), 'v'.repeat(8191), 'v'.repeat(8192), 'v'.repeat(8191) + 'é', 'é' + 'v'.repeat(100),
  '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f2c.slice/cri-containerd-' + 'ab'.repeat(32) + '.scope',
  '\u{1F600} ok', 'ü'.repeat(40), '日本語のホスト名', '\u{10FFFF}', '\u0000nul', '\u007f\u0080\u07ff\u0800\uffff',
];

/** A random value of an Avro type as the producer hands it over (longs as bigint or number, strings often repeated). */
function randomValue(type: unknown, rnd: () => number): unknown {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)];
  if (Array.isArray(type)) return rnd() < 0.3 ? null : randomValue(type[1], rnd);
  if (typeof type === 'object' && type !== null) return randomValue((type as { type: unknown }).type, rnd); // timestamp-nanos
  switch (type) {
    case 'long': {
      const v = rnd() < 0.5 ? pick(LONG_EDGES) : BigInt.asIntN(64, BigInt(Math.floor(rnd() * 2 ** 32)) * 2n ** 32n + BigInt(Math.floor(rnd() * 2 ** 32))) >> BigInt(Math.floor(rnd() * 64));
      return rnd() < 0.5 && v >= -(TWO53 - 1n) && v <= TWO53 - 1n ? Number(v) : v;
    }
    case 'int':
      return rnd() < 0.5 ? pick([0, -0, -1, 1, 63, 64, -65, 80, 65535, 2 ** 30, -(2 ** 30) - 1, 2 ** 31 - 1, -(2 ** 31)]) : Math.floor(rnd() * 2 ** 32) - 2 ** 31;
    case 'string':
      return rnd() < 0.6
        ? pick(STRING_POOL)
        : Array.from({ length: Math.floor(rnd() * 90) }, () => String.fromCodePoint(rnd() < 0.8 ? 32 + Math.floor(rnd() * 95) : rnd() < 0.5 ? 0xa0 + Math.floor(rnd() * 0x2000) : 0x10000 + Math.floor(rnd() * 0x1000))).join('');
    default:
      throw new Error(`no generator for ${JSON.stringify(type)}`);
  }
}

function randomRecord(schema: avro.Schema, rnd: () => number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of fieldsOf(schema)) out[f.name] = randomValue(f.type, rnd);
  return out;
}

/** Values avsc refuses for some type, or accepts only for some: each must get avsc's verdict from the codec too. */
const ODD_VALUES: unknown[] = [
  undefined, null, true, 'x', '5', 1.5, NaN, Infinity, -Infinity, -0, 2 ** 31, -(2 ** 31) - 1, 2 ** 53, -(2 ** 53), 2 ** 53 + 2, Number.MAX_VALUE,
  2n ** 63n, -(2n ** 63n) - 1n, 2n ** 64n, 5n, {}, [], Buffer.from('ab'), new Date(0), '\ud800', 'a\udc00b', 'x'.repeat(70) + '\ud83d',
];

describe('generated writer against avsc', () => {
  it.each(RECORD_KINDS.map((k) => [k]))('writes random %s records byte for byte as avsc does', (kind) => {
    const codec = createCodec();
    const schema = currentSchemas()[kind];
    const rnd = mulberry32(0xe7c0de + kind.length);
    for (let i = 0; i < 1500; i++) {
      const r = randomRecord(schema, rnd);
      expect(outcome(codec, kind, r)).toEqual(outcome(oracle, kind, r));
    }
    // Not vacuous: the generated writer wrote them (lone surrogates are the only well-formed input left to avsc).
    expect(codec.encodedBy.fast).toBe(1500);
    expect(codec.encodedBy.writerErrors).toBe(0);
  });

  it.each(RECORD_KINDS.map((k) => [k]))('gives %s records with one odd field the same bytes or the same error as avsc', (kind) => {
    const codec = createCodec();
    const rnd = mulberry32(0xbad + kind.length);
    let errors = 0;
    for (const f of fieldsOf(currentSchemas()[kind])) {
      for (const odd of ODD_VALUES) {
        const r = randomRecord(currentSchemas()[kind], rnd);
        if (odd === undefined && rnd() < 0.5) delete r[f.name]; // missing, not only undefined
        else r[f.name] = odd;
        const want = outcome(oracle, kind, r);
        if ('code' in want) errors++;
        expect(outcome(codec, kind, r)).toEqual(want);
      }
    }
    expect(errors).toBeGreaterThan(0);
    expect(codec.encodedBy.writerErrors).toBe(0);
  });

  it('refuses what avsc refuses with the producer error contract: RECORD_MALFORMED invalid_body naming the fields', () => {
    const codec = createCodec();
    const r = randomRecord(currentSchemas().conn_sample, mulberry32(7));
    r.tx_bytes = 2 ** 53; // not a safe integer: avsc refuses it (a bigint would be taken)
    r.sport = 70_000.5;
    delete r.host_id;
    const out = outcome(codec, 'conn_sample', r);
    expect(out).toMatchObject({ code: 'RECORD_MALFORMED', context: { reason: 'invalid_body', kind: 'conn_sample', fields: ['host_id', 'tx_bytes', 'sport'] } });
    expect(out).toEqual(outcome(oracle, 'conn_sample', r));
  });

  it('takes defaults for missing defaulted fields, ignores extra fields, reads inherited and getter fields as avsc does', () => {
    const codec = createCodec();
    const rnd = mulberry32(99);
    for (let i = 0; i < 50; i++) {
      const r = randomRecord(currentSchemas().conn_event, rnd);
      delete r.workload;
      delete r.cgroup_path;
      r.container_id = undefined;
      r.duration_ns = 123; // producer-side extra, not in the schema
      const inherited = Object.create({ comm: 'from-proto' }) as Record<string, unknown>;
      Object.assign(inherited, r);
      delete inherited.comm;
      Object.defineProperty(inherited, 'seq', { get: () => 41 + i, enumerable: false });
      for (const rec of [r, inherited]) expect(outcome(codec, 'conn_event', rec)).toEqual(outcome(oracle, 'conn_event', rec));
    }
    expect(codec.encodedBy.fast).toBe(100);
  });

  it('treats non-records and throwing getters as avsc does', () => {
    const codec = createCodec();
    const throwing = Object.defineProperty(randomRecord(currentSchemas().iface, mulberry32(3)), 'netns', {
      get: () => {
        throw new Error('boom');
      },
    });
    for (const v of [null, undefined, 'text', 5, [], throwing]) expect(outcome(codec, 'iface', v)).toEqual(outcome(oracle, 'iface', v));
  });

  it('returns a fresh buffer per record: an earlier value is not overwritten by the next encode', () => {
    const codec = createCodec();
    const rnd = mulberry32(11);
    const recs = Array.from({ length: 20 }, () => randomRecord(currentSchemas().listen, rnd));
    const bufs = recs.map((r) => codec.encode('listen', r as unknown as RecordByKind['listen']));
    recs.forEach((r, i) => expect({ hex: bufs[i].toString('hex') }).toEqual(outcome(oracle, 'listen', r)));
    // and decodes to what was written
    expect(codec.decode(bufs[0]).record).toMatchObject({ host_id: recs[0].host_id, comm: recs[0].comm });
  });

  it('grows its buffer for records larger than it (long strings)', () => {
    const codec = createCodec();
    const r = randomRecord(currentSchemas().conn_sample, mulberry32(5));
    r.cgroup_path = '/k/'.repeat(100_000) + 'é';
    expect(outcome(codec, 'conn_sample', r)).toEqual(outcome(oracle, 'conn_sample', r));
    expect(codec.encodedBy.fast).toBe(1);
  });
});

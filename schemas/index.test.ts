// Unit tests of the wire codec: reference fingerprints, round trips, schema evolution, malformed inputs.
import avro from 'avsc';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  canonicalForm, createCodec, crc64Avro, currentSchemas, decode, encode, malformedReason, RECORD_KINDS,
  RecordByKind, RecordKind, schemaFingerprint,
} from './index';
import { AVSC_DEFAULTS } from './types.generated';

// Expected values from the Avro specification's test data (share/test/data/schema-tests.txt, signed longs)
// and the Ruby implementation's single-object header test for "int".
const REFERENCE: Array<[unknown, string, bigint]> = [
  ['null', '"null"', 7195948357588979594n],
  ['int', '"int"', 8247732601305521295n],
  ['long', '"long"', -3434872931120570953n],
  ['string', '"string"', -8142146995180207161n],
  [['int', { type: 'boolean' }], '["int","boolean"]', 5392556393470105090n],
  [{ fields: [], type: 'record', name: 'foo', namespace: 'x.y' }, '{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771n],
  [
    { fields: [{ type: 'boolean', aliases: [], name: 'f1', default: true }, { order: 'descending', name: 'f2', doc: 'Hello', type: 'int' }], type: 'record', name: 'foo' },
    '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},{"name":"f2","type":"int"}]}',
    -4860222112080293046n,
  ],
  [{ namespace: 'x.y.z', type: 'enum', name: 'foo', doc: 'foo bar', symbols: ['A1', 'A2'] }, '{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}', -4448647247586288245n],
  [{ type: 'map', values: 'string' }, '{"type":"map","values":"string"}', -8732877298790414990n],
];

const common = {
  host_id: '0123456789abcdef0123456789abcdef',
  hostname: 'host-a',
  boot_id: '6b4c4bd2-3a1c-4b7e-9b59-9e0c1f1e2d3c',
  epoch: 7,
  seq: 12345,
  time_ns: 1_763_780_000_123_456_789n,
  ts_ns: 9_876_543_210,
  workload: 'payments/api-7f9c',
};
const conn = {
  cookie: 4097,
  start_ns: 9_000_000_000,
  tx_bytes: 2 ** 40 + 3,
  rx_bytes: 17,
  retransmits: 2,
  cgroup_id: 1234,
  netns: 4026531840,
  netns_cookie: 1,
  pid: 4242,
  uid: 1000,
  comm: 'curl',
  family: 10,
  protocol: 6,
  direction: 1,
  saddr: 'fd00::1',
  daddr: 'fd00::2',
  sport: 50000,
  dport: 443,
  cgroup_path: '/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope',
  container_id: '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef',
};
// Each starts from the .avsc defaults, so a field added with a default needs no edit here.
const SAMPLES: { [K in RecordKind]: RecordByKind[K] } = {
  conn_sample: { ...AVSC_DEFAULTS.conn_sample, ...common, ...conn, flush_reason: 'interval' },
  conn_event: { ...AVSC_DEFAULTS.conn_event, ...common, ...conn, event: 'closed', duration_ns: 876_543_210, flush_reason: 'close' },
  listen: {
    ...AVSC_DEFAULTS.listen, ...common, cookie: 99, netns: 4026532000, netns_cookie: 3, pid: 1, uid: 0, comm: 'nginx', family: 2, addr: '0.0.0.0', port: 80,
    backlog: 511, protocol: 6, cgroup_path: null, container_id: null,
  },
  iface: { ...AVSC_DEFAULTS.iface, ...common, netns: 4026531840, ifindex: 2, rx_bytes: 10_000_000_000, rx_packets: 7_000_000, tx_bytes: 5, tx_packets: 1 },
};

/** A "v2" of a shipped schema: one added field with a default, as a compatible evolution would ship it. */
function v2Of(kind: RecordKind): avro.Schema {
  const s = JSON.parse(JSON.stringify(currentSchemas()[kind])) as { fields: object[] };
  s.fields.push({ name: 'added_in_v2', type: 'long', default: 42, doc: 'test-only field (count)' });
  return s as unknown as avro.Schema;
}

describe('CRC-64-AVRO fingerprints', () => {
  it.each(REFERENCE)('matches the Avro spec for %j', (schema, canonical, signed) => {
    expect(canonicalForm(schema as avro.Schema)).toBe(canonical);
    expect(BigInt.asIntN(64, crc64Avro(canonical))).toBe(signed);
  });

  it('writes the single-object header of "int" as the spec shows', () => {
    expect(schemaFingerprint('int').toString('hex')).toBe('8f5c393f1ad57572');
    expect(crc64Avro('')).toBe(0xc15d213aa4d7a795n);
  });
});

describe('codec', () => {
  it.each(RECORD_KINDS)('round-trips %s exactly (longs beyond 2^53 included)', (kind) => {
    const buf = encode(kind, SAMPLES[kind]);
    expect(buf.subarray(0, 2)).toEqual(Buffer.from([0xc3, 0x01]));
    expect(buf.subarray(2, 10).toString('hex')).toBe(createCodec().fingerprint(kind));
    const d = decode(buf);
    expect(d.kind).toBe(kind);
    expect(d.record).toEqual(SAMPLES[kind]);
    expect(typeof d.record.time_ns).toBe('bigint');
  });

  it('documents every field, and the TypeScript samples carry exactly the schema fields', () => {
    for (const kind of RECORD_KINDS) {
      const s = currentSchemas()[kind] as { namespace: string; doc: string; fields: Array<{ name: string; doc?: string }> };
      expect(s.namespace).toBe('io.nettally.v1');
      expect(s.doc).toBeTruthy();
      for (const f of s.fields) expect([kind, f.name, (f.doc ?? '').length > 10]).toEqual([kind, f.name, true]);
      expect(Object.keys(SAMPLES[kind]).sort()).toEqual(s.fields.map((f) => f.name).sort());
    }
  });

  it('encodes longs exactly at the 32/53/64-bit edges', () => {
    const edges: Array<number | bigint> = [0, 1, -1, 2 ** 32, -(2 ** 32), 2 ** 32 - 1, -(2 ** 32) + 1, 2 ** 53 - 1, -(2 ** 53 - 1), 2n ** 53n, -(2n ** 53n) - 5n, 2n ** 63n - 1n, -(2n ** 63n)];
    for (const v of edges) {
      const d = decode(encode('iface', { ...SAMPLES.iface, rx_bytes: v as number }));
      expect(d.kind === 'iface' && String(d.record.rx_bytes)).toBe(String(v));
    }
  });

  it('writes the same bytes as a plain Avro implementation (interoperability)', () => {
    const plain = avro.Type.forSchema(currentSchemas().iface as avro.Schema);
    const rec = { ...SAMPLES.iface, time_ns: 1_234_567_890_123, rx_bytes: -5 };
    const ours = encode('iface', { ...rec, time_ns: BigInt(rec.time_ns) });
    expect(ours.subarray(10)).toEqual(plain.toBuffer(rec));
    expect(plain.fromBuffer(ours.subarray(10))).toEqual(expect.objectContaining({ rx_bytes: -5, time_ns: 1_234_567_890_123 }));
  });

  it('names the invalid fields when a record does not fit its schema', () => {
    const bad = { ...SAMPLES.iface, rx_bytes: 1.5 } as RecordByKind['iface'];
    let err: unknown;
    try {
      encode('iface', bad);
    } catch (e) {
      err = e;
    }
    expect(malformedReason(err)).toBe('invalid_body');
    expect((err as Error).message).toContain('rx_bytes');
  });
});

describe.each(RECORD_KINDS)('schema evolution of %s', (kind) => {
  const v2 = v2Of(kind);

  it('old reader decodes a new writer (added field dropped)', () => {
    const newWriter = createCodec({ readerSchemas: { [kind]: v2 } });
    const oldReader = createCodec({ writerSchemas: [v2] });
    const buf = newWriter.encode(kind, { ...SAMPLES[kind], added_in_v2: 7 } as unknown as RecordByKind[typeof kind]);
    expect(buf.subarray(2, 10).toString('hex')).not.toBe(oldReader.fingerprint(kind));
    const d = oldReader.decode(buf);
    expect(d.kind).toBe(kind);
    expect(d.record).toEqual(SAMPLES[kind]);
  });

  it('new reader decodes an old writer (added field defaulted)', () => {
    const newReader = createCodec({ readerSchemas: { [kind]: v2 } });
    const d = newReader.decode(encode(kind, SAMPLES[kind]));
    expect(d.kind).toBe(kind);
    expect(d.record).toEqual({ ...SAMPLES[kind], added_in_v2: 42 });
  });

  it('a reader that never saw the new writer reports unknown_fingerprint', () => {
    const buf = createCodec({ readerSchemas: { [kind]: v2 } }).encode(kind, { ...SAMPLES[kind], added_in_v2: 1 } as unknown as RecordByKind[typeof kind]);
    let err: unknown;
    try {
      decode(buf);
    } catch (e) {
      err = e;
    }
    expect(malformedReason(err)).toBe('unknown_fingerprint');
  });
});

describe('malformed input', () => {
  const good = encode('conn_sample', SAMPLES.conn_sample);
  const reasonOf = (buf: Buffer): string | undefined => {
    try {
      decode(buf);
    } catch (e) {
      return malformedReason(e);
    }
    return 'decoded';
  };

  it('gives the right reason', () => {
    expect(reasonOf(Buffer.from('{"json":true}'))).toBe('bad_magic');
    expect(reasonOf(Buffer.alloc(0))).toBe('bad_magic');
    expect(reasonOf(Buffer.from([0xc3, 0x01, 1, 2, 3]))).toBe('truncated');
    const unknown = Buffer.from(good);
    unknown[5] ^= 0xff;
    expect(reasonOf(unknown)).toBe('unknown_fingerprint');
    expect(reasonOf(good.subarray(0, good.length - 3))).toBe('truncated');
    expect(reasonOf(good.subarray(0, 11))).toBe('truncated');
    expect(reasonOf(Buffer.concat([good, Buffer.from([0])]))).toBe('invalid_body');
    expect(reasonOf(good)).toBe('decoded');
  });

  it.each(RECORD_KINDS)('reports every cut-short %s as truncated', (kind) => {
    const buf = encode(kind, SAMPLES[kind]);
    const reasons = new Set<string | undefined>();
    for (let n = 2; n < buf.length; n++) reasons.add(reasonOf(buf.subarray(0, n)));
    expect([...reasons]).toEqual(['truncated']);
  });
});

describe('shipped revisions', () => {
  // Records written by a producer of revision r1 (before `workload`) sit in Kafka and in spools: they must decode.
  it.each(RECORD_KINDS)('an r1 %s record decodes with workload defaulted to ""', (kind) => {
    const r1 = JSON.parse(readFileSync(join(__dirname, 'archive', `${kind}.r1.avsc`), 'utf8')) as avro.Schema;
    const { workload, ...old } = SAMPLES[kind];
    expect(workload).not.toBe('');
    const oldWriter = createCodec({ readerSchemas: { [kind]: r1 } });
    const buf = oldWriter.encode(kind, old as unknown as RecordByKind[typeof kind]);
    expect(buf.subarray(2, 10).toString('hex')).not.toBe(createCodec().fingerprint(kind));
    const d = decode(buf);
    expect(d.kind).toBe(kind);
    expect(d.record).toEqual({ ...old, workload: '' });
  });
});

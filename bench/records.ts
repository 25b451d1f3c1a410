// `npm run bench:records`: the per-record cost of the producer's kernel-record path, decode (ring-buffer bytes ->
// kernel record) and toWire (kernel record -> wire record), for the generated code this tree uses
// (producer/layout-decode.generated.ts, producer/wire.generated.ts) side by side with the hand-written form it replaced
// (one line per field: a reader call by a field descriptor; one 29-field literal), kept below as the reference; and the
// Avro encode (wire record -> single-object bytes) by the generated writer (schemas/writer.ts) next to avsc's writer.
// Rounds alternate between the two so that load from other processes hits both alike; the ratio is what to read.
import { decodeBatch, type ConnRecord, formatAddr, commText, KernelKind, LAYOUT } from '../producer/records';
import { nt_conn_record as C } from '../producer/layout.generated';
import { toWire, type WireContext } from '../producer/wire';
import { createCodec, type RecordByKind } from '../schemas/index';
import { benchHelp } from './help';

benchHelp("bench:records", "per-record cost of the producer's kernel-record path (decode, toWire): the generated code side by side with the hand-written reference.", {
  BENCH_RECORDS: "records per round (4096)",
  BENCH_ROUNDS: "alternating rounds (41)",
});

const N = Number(process.env.BENCH_RECORDS ?? 4096);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 41);
const COMMS = ['curl', 'nginx', 'postgres', 'ssh', 'java', 'python3'];

/** N ring-buffer conn records (IPv4 and IPv6, sample and close), as the kernel lays them out. */
function batch(): ArrayBuffer {
  const buf = new ArrayBuffer(N * LAYOUT.conn_record);
  const dv = new DataView(buf);
  for (let i = 0; i < N; i++) {
    const o = i * LAYOUT.conn_record;
    const f = C.fields;
    dv.setBigUint64(o + f.hdr.off, BigInt(5e9 + i * 1000), true);
    dv.setUint32(o + 8, i % 5 === 0 ? KernelKind.CONN_CLOSE : KernelKind.CONN_SAMPLE, true);
    dv.setUint32(o + 12, LAYOUT.conn_record, true);
    dv.setBigUint64(o + f.cookie.off, BigInt(1e6 + i), true);
    dv.setBigUint64(o + f.start_ns.off, BigInt(1e9), true);
    dv.setBigUint64(o + f.tx_bytes.off, BigInt(i * 1500), true);
    dv.setBigUint64(o + f.rx_bytes.off, BigInt(i * 7000), true);
    dv.setUint32(o + f.netns.off, 4026531840, true);
    dv.setUint32(o + f.pid.off, 1000 + (i % 50), true);
    const v6 = i % 4 === 0;
    dv.setUint16(o + f.family.off, v6 ? 10 : 2, true);
    for (let b = 0; b < (v6 ? 16 : 4); b++) {
      dv.setUint8(o + f.saddr.off + b, v6 ? (b === 0 ? 0xfd : b === 15 ? 1 : 0) : [10, 0, 0, 1][b]);
      dv.setUint8(o + f.daddr.off + b, v6 ? (b === 0 ? 0xfd : b === 15 ? 2 : 0) : [10, 0, (i >> 8) & 255, i & 255][b]);
    }
    dv.setUint16(o + f.sport.off, 32768 + (i % 20000), true);
    dv.setUint16(o + f.dport.off, 443, true);
    dv.setUint8(o + f.protocol.off, 6);
    dv.setUint8(o + f.direction.off, 1);
    const comm = COMMS[i % COMMS.length];
    for (let b = 0; b < comm.length; b++) dv.setUint8(o + f.comm.off + b, comm.charCodeAt(b));
    dv.setUint8(o + f.flush_reason.off, i % 5 === 0 ? 4 : 2);
  }
  return buf;
}

// --- the reference: the hand-written decoder and wire literal as they were before the generated code ---

type Field = { readonly off: number; readonly len?: number };
const TWO32 = 2 ** 32;
const FLUSH = ['open', 'open', 'interval', 'threshold', 'close', 'snapshot'] as const;
function u64(dv: DataView, base: number, f: Field, field: string): number {
  const lo = dv.getUint32(base + f.off, true);
  const hi = dv.getUint32(base + f.off + 4, true);
  if (hi >= 0x200000) throw new Error(`${field} exceeds 2^53`);
  return hi * TWO32 + lo;
}
const u64ts = (dv: DataView, b: number, f: Field): number => dv.getUint32(b + f.off + 4, true) * TWO32 + dv.getUint32(b + f.off, true);
const u32 = (dv: DataView, b: number, f: Field): number => dv.getUint32(b + f.off, true);
const u16 = (dv: DataView, b: number, f: Field): number => dv.getUint16(b + f.off, true);
const u8 = (dv: DataView, b: number, f: Field): number => dv.getUint8(b + f.off);
const cstr = (dv: DataView, b: number, f: Field): string => commText(new Uint8Array(dv.buffer, dv.byteOffset + b + f.off, f.len));

function refDecode(buf: ArrayBuffer): ConnRecord[] {
  const dv = new DataView(buf);
  const out: ConnRecord[] = [];
  const F = C.fields;
  for (let off = 0; off + LAYOUT.conn_record <= buf.byteLength; off += LAYOUT.conn_record) {
    const kind = dv.getUint32(off + 8, true) as ConnRecord['kind'];
    const ts = u64ts(dv, off, F.hdr);
    const start = u64ts(dv, off, F.start_ns);
    const family = u16(dv, off, F.family);
    // `as`: the reference is frozen as it was; a field added to the header since is not in it (nor timed).
    out.push({
      kind, ts_ns: ts, cookie: u64(dv, off, F.cookie, 'cookie'), start_ns: start,
      duration_ns: kind === KernelKind.CONN_CLOSE && ts > start ? ts - start : 0,
      tx_bytes: u64(dv, off, F.tx_bytes, 'tx_bytes'), rx_bytes: u64(dv, off, F.rx_bytes, 'rx_bytes'), retransmits: u32(dv, off, F.retransmits),
      cgroup_id: u64ts(dv, off, F.cgroup_id), netns: u32(dv, off, F.netns), netns_cookie: u64(dv, off, F.netns_cookie, 'netns_cookie'),
      pid: u32(dv, off, F.pid), uid: u32(dv, off, F.uid), comm: cstr(dv, off, F.comm), family, protocol: u8(dv, off, F.protocol),
      direction: (u8(dv, off, F.direction) % 3) as ConnRecord['direction'],
      saddr: formatAddr(dv, off + F.saddr.off, family), daddr: formatAddr(dv, off + F.daddr.off, family),
      sport: u16(dv, off, F.sport), dport: u16(dv, off, F.dport), flush_reason: FLUSH[u8(dv, off, F.flush_reason)] ?? 'interval',
    } as ConnRecord);
  }
  return out;
}

/** The old toWire's dispatch, for the kind measured here. */
function refWire(r: ConnRecord, ctx: WireContext): { kind: 'conn_sample'; record: RecordByKind['conn_sample'] } | undefined {
  switch (r.kind) {
    case KernelKind.CONN_SAMPLE:
      return { kind: 'conn_sample', record: refLiteral(r, ctx) };
    default:
      return undefined;
  }
}

function refLiteral(r: ConnRecord, ctx: WireContext): RecordByKind['conn_sample'] {
  const info = ctx.enrich(r.pid);
  return {
    host_id: ctx.host.host_id, hostname: ctx.host.hostname, boot_id: ctx.host.boot_id, epoch: ctx.epoch, seq: ctx.nextSeq(),
    time_ns: ctx.toUnixNs(r.ts_ns), ts_ns: r.ts_ns, cookie: r.cookie, start_ns: r.start_ns, tx_bytes: r.tx_bytes, rx_bytes: r.rx_bytes,
    retransmits: r.retransmits, cgroup_id: r.cgroup_id, netns: r.netns, netns_cookie: r.netns_cookie, pid: r.pid, uid: r.uid,
    comm: r.comm, family: r.family, protocol: r.protocol, direction: r.direction, saddr: r.saddr, daddr: r.daddr, sport: r.sport,
    dport: r.dport, flush_reason: r.flush_reason, cgroup_path: info.cgroup_path, container_id: info.container_id,
    workload: ctx.workload(info, r.netns),
  } as RecordByKind['conn_sample'];
}

// --- the run ---

const INFO = { cgroup_path: '/system.slice/x.service', container_id: null };
let seq = 0;
const ctx: WireContext = {
  host: { host_id: '0'.repeat(32), hostname: 'bench', boot_id: '00000000-0000-4000-8000-000000000000' } as WireContext['host'],
  epoch: 1,
  nextSeq: () => ++seq,
  toUnixNs: (ts) => 1_700_000_000_000_000_000n + BigInt(ts),
  enrich: () => INFO as ReturnType<WireContext['enrich']>,
  workload: () => 'host',
};

/** ns per record of `fn` over `count` records (its result is used, so the work cannot be optimised away). */
function timeNs(count: number, fn: () => number): number {
  const t = process.hrtime.bigint();
  const sink = fn();
  const ns = Number(process.hrtime.bigint() - t);
  if (sink < 0) throw new Error('unreachable');
  return ns / count;
}

/** The fastest round: on a machine shared with other jobs, the round least disturbed by them. */
function best(xs: number[]): number {
  return Math.min(...xs);
}

function main(): void {
  const buf = batch();
  const gen = decodeBatch(buf).records as ConnRecord[];
  const ref = refDecode(buf);
  // Both forms must agree before their speed means anything.
  for (let i = 0; i < N; i++) {
    if (JSON.stringify(gen[i], Object.keys(ref[i]).sort()) !== JSON.stringify(ref[i], Object.keys(ref[i]).sort())) throw new Error(`decoders disagree on record ${i}`);
  }
  // toWire on samples only: the reference builds conn_sample records.
  const genS = gen.filter((r) => r.kind === KernelKind.CONN_SAMPLE);
  const refS = ref.filter((r) => r.kind === KernelKind.CONN_SAMPLE);
  const wires = genS.map((r) => toWire(r, ctx)).filter((w) => w !== undefined);
  const avscCodec = createCodec({ fastWriter: false });
  const genCodec = createCodec();
  for (const w of wires) if (!avscCodec.encode(w.kind, w.record as never).equals(genCodec.encode(w.kind, w.record as never))) throw new Error('encoders disagree');
  const encodeAll = (c: typeof genCodec): number => wires.reduce((n, w) => n + c.encode(w.kind, w.record as never).length, 0);
  const t = { refDecode: [] as number[], genDecode: [] as number[], refWire: [] as number[], genWire: [] as number[], refEncode: [] as number[], genEncode: [] as number[] };
  for (let round = 0; round < ROUNDS + 3; round++) {
    const m = {
      refDecode: timeNs(N, () => refDecode(buf).length),
      genDecode: timeNs(N, () => decodeBatch(buf).records.length),
      refWire: timeNs(refS.length, () => refS.reduce((n, r) => n + (refWire(r, ctx)?.record.seq ?? 0), 0)),
      genWire: timeNs(genS.length, () => genS.reduce((n, r) => n + (toWire(r, ctx)?.record.seq ?? 0), 0)),
      refEncode: timeNs(wires.length, () => encodeAll(avscCodec)),
      genEncode: timeNs(wires.length, () => encodeAll(genCodec)),
    };
    if (round < 3) continue; // warm-up: let both be optimised
    for (const k of Object.keys(m) as Array<keyof typeof m>) t[k].push(m[k]);
  }
  const row = (label: string, ref: number[], gen: number[]): string =>
    `${label.padEnd(28)}${best(ref).toFixed(0).padStart(12)}${best(gen).toFixed(0).padStart(12)}${(best(gen) / best(ref)).toFixed(2).padStart(10)}`;
  console.log(`records: ${N} conn records per round (toWire: the ${genS.length} samples), fastest of ${ROUNDS} rounds, ns per record`);
  console.log(`${'path'.padEnd(28)}${'hand-written'.padStart(12)}${'generated'.padStart(12)}${'ratio'.padStart(10)}`);
  console.log(row('decode (ring buffer -> kernel)', t.refDecode, t.genDecode));
  console.log(row('toWire (kernel -> wire)', t.refWire, t.genWire));
  console.log(row('encode (wire -> Avro; avsc)', t.refEncode, t.genEncode));
  const sum = (a: number[], b: number[]): number[] => a.map((v, i) => v + b[i]);
  console.log(row('all three, per sample', sum(sum(t.refDecode, t.refWire), t.refEncode), sum(sum(t.genDecode, t.genWire), t.genEncode)));
  if (genCodec.encodedBy.avsc > 0) throw new Error(`the generated writer left ${genCodec.encodedBy.avsc} records to avsc`);
}

main();

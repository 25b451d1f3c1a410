// toWire over kernel records decoded from bytes laid out here (the ground truth), through the Avro codec and back:
// every field of every kind arrives with the value written, from the kernel record, the producer or the enrichment.
import { decode, encode } from '../schemas/index';
import { KernelKind, LAYOUT, decodeBatch, decodeIfaces } from './records';
import { nt_conn_record as C, nt_iface_entry as I, nt_iface_val as V, nt_listen_record as L } from './layout.generated';
import { syntheticCapture } from './synthetic';
import { toWire, type WireContext } from './wire';

function context(): WireContext & { seqs: number[] } {
  let seq = 40;
  const seqs: number[] = [];
  return {
    seqs,
    host: { host_id: 'ab'.repeat(16), hostname: 'h1', boot_id: '00000000-0000-4000-8000-000000000001' },
    epoch: 7,
    nextSeq: () => (seqs.push(++seq), seq),
    toUnixNs: (ts) => 1_800_000_000_000_000_000n + BigInt(ts),
    enrich: (pid) => ({ cgroup_path: `/pid/${pid}`, container_id: pid === 4242 ? 'c0ffee' : null }),
    workload: (info, netns) => (info ? `${info.cgroup_path}@${netns}` : `iface@${netns}`),
  };
}

/** A conn record of `kind` and a listen record, back to back, as the ring buffer hands them over. */
function ringBuffer(kind: number): ArrayBuffer {
  const buf = new ArrayBuffer(LAYOUT.conn_record + LAYOUT.listen_record);
  const dv = new DataView(buf);
  const f = C.fields;
  dv.setBigUint64(0, 5000n, true);
  dv.setUint32(8, kind, true);
  dv.setUint32(12, LAYOUT.conn_record, true);
  dv.setBigUint64(f.cookie.off, 77n, true);
  dv.setBigUint64(f.start_ns.off, 1000n, true);
  dv.setBigUint64(f.tx_bytes.off, 2n ** 40n + 5n, true);
  dv.setBigUint64(f.rx_bytes.off, 9n, true);
  dv.setBigUint64(f.cgroup_id.off, 31n, true);
  dv.setBigUint64(f.netns_cookie.off, 12n, true);
  dv.setUint32(f.retransmits.off, 3, true);
  dv.setUint32(f.netns.off, 4026531840, true);
  dv.setUint32(f.pid.off, 4242, true);
  dv.setUint32(f.uid.off, 1000, true);
  dv.setUint8(f.saddr.off, 0xfd);
  dv.setUint8(f.saddr.off + 15, 1);
  dv.setUint8(f.daddr.off, 0xfd);
  dv.setUint8(f.daddr.off + 15, 2);
  dv.setUint16(f.sport.off, 5555, true);
  dv.setUint16(f.dport.off, 443, true);
  dv.setUint16(f.family.off, 10, true);
  dv.setUint8(f.protocol.off, 6);
  dv.setUint8(f.direction.off, 2);
  'curl'.split('').forEach((c, i) => dv.setUint8(f.comm.off + i, c.charCodeAt(0)));
  dv.setUint8(f.flush_reason.off, 3);
  const l = LAYOUT.conn_record;
  const g = L.fields;
  dv.setBigUint64(l, 6000n, true);
  dv.setUint32(l + 8, KernelKind.LISTEN, true);
  dv.setUint32(l + 12, LAYOUT.listen_record, true);
  dv.setBigUint64(l + g.cookie.off, 99n, true);
  dv.setBigUint64(l + g.netns_cookie.off, 13n, true);
  dv.setUint32(l + g.netns.off, 4026531841, true);
  dv.setUint32(l + g.pid.off, 17, true);
  dv.setUint32(l + g.backlog.off, 128, true);
  dv.setUint32(l + g.uid.off, 0, true);
  [127, 0, 0, 1].forEach((b, i) => dv.setUint8(l + g.addr.off + i, b));
  dv.setUint16(l + g.port.off, 8080, true);
  dv.setUint16(l + g.family.off, 2, true);
  dv.setUint8(l + g.protocol.off, 6);
  'nginx'.split('').forEach((c, i) => dv.setUint8(l + g.comm.off + i, c.charCodeAt(0)));
  return buf;
}

function roundTrip(w: ReturnType<typeof toWire>): { kind: string; record: object } {
  if (!w) throw new Error('not shipped');
  const d = decode(encode(w.kind, w.record as never));
  expect(d.kind).toBe(w.kind);
  return d;
}

const head = (seq: number, ts: number, workload: string): object => ({
  host_id: 'ab'.repeat(16), hostname: 'h1', boot_id: '00000000-0000-4000-8000-000000000001', epoch: 7, seq,
  time_ns: 1_800_000_000_000_000_000n + BigInt(ts), ts_ns: ts, workload,
});
const CONN = {
  cookie: 77, start_ns: 1000, tx_bytes: 2 ** 40 + 5, rx_bytes: 9, retransmits: 3, cgroup_id: 31, netns: 4026531840,
  netns_cookie: 12, pid: 4242, uid: 1000, comm: 'curl', family: 10, protocol: 6, direction: 2, saddr: 'fd00::1',
  daddr: 'fd00::2', sport: 5555, dport: 443, cgroup_path: '/pid/4242', container_id: 'c0ffee',
};

test('conn_sample and listen: every field from the bytes, the producer or the enrichment', () => {
  const ctx = context();
  const [conn, listen] = decodeBatch(ringBuffer(KernelKind.CONN_SAMPLE)).records;
  expect(roundTrip(toWire(conn, ctx))).toEqual({
    kind: 'conn_sample', fingerprint: expect.any(String),
    record: { ...head(41, 5000, '/pid/4242@4026531840'), ...CONN, flush_reason: 'threshold' },
  });
  expect(roundTrip(toWire(listen, ctx))).toEqual({
    kind: 'listen', fingerprint: expect.any(String),
    record: {
      ...head(42, 6000, '/pid/17@4026531841'), cookie: 99, netns_cookie: 13, netns: 4026531841, pid: 17, backlog: 128, uid: 0,
      addr: '127.0.0.1', port: 8080, family: 2, protocol: 6, comm: 'nginx', cgroup_path: '/pid/17', container_id: null,
    },
  });
  expect(ctx.seqs).toEqual([41, 42]);
});

test('conn_event: established, and closed with its duration', () => {
  const ctx = context();
  const [open] = decodeBatch(ringBuffer(KernelKind.CONN_OPEN)).records;
  const [close] = decodeBatch(ringBuffer(KernelKind.CONN_CLOSE)).records;
  const event = (seq: number, ev: string, duration: number): object => ({
    kind: 'conn_event', fingerprint: expect.any(String),
    record: { ...head(seq, 5000, '/pid/4242@4026531840'), ...CONN, flush_reason: 'threshold', event: ev, duration_ns: duration },
  });
  expect(roundTrip(toWire(open, ctx))).toEqual(event(41, 'established', 0));
  expect(roundTrip(toWire(close, ctx))).toEqual(event(42, 'closed', 4000));
});

test('conn_event closed from the synthetic source: the duration is its close time minus its start', async () => {
  const src = syntheticCapture({ connsPerSec: 1000, totalConns: 1, samplesPerConn: 0 });
  try {
    let close;
    for await (const batch of src.records()) {
      close = batch.find((r) => r.kind === KernelKind.CONN_CLOSE);
      break;
    }
    if (close === undefined || close.kind !== KernelKind.CONN_CLOSE) throw new Error('the synthetic source yielded no close');
    const w = toWire(close, context());
    expect(w?.kind).toBe('conn_event');
    expect(w?.record).toMatchObject({ event: 'closed', duration_ns: close.ts_ns - close.start_ns });
    expect(close.ts_ns - close.start_ns).toBeGreaterThan(0);
  } finally {
    await src.close();
  }
});

test('iface: counters from the map entry, the time it was read, the workload of its namespace', () => {
  const buf = new ArrayBuffer(LAYOUT.iface_entry);
  const dv = new DataView(buf);
  dv.setUint32(I.fields.key.off, 4026531840, true);
  dv.setUint32(I.fields.key.off + 4, 2, true);
  const v = I.fields.val.off;
  dv.setBigUint64(v + V.fields.rx_bytes.off, 1000n, true);
  dv.setBigUint64(v + V.fields.rx_packets.off, 10n, true);
  dv.setBigUint64(v + V.fields.tx_bytes.off, 2n ** 50n, true);
  dv.setBigUint64(v + V.fields.tx_packets.off, 20n, true);
  const [iface] = decodeIfaces(buf, 777);
  expect(roundTrip(toWire(iface, context()))).toEqual({
    kind: 'iface', fingerprint: expect.any(String),
    record: { ...head(41, 777, 'iface@4026531840'), netns: 4026531840, ifindex: 2, rx_bytes: 1000, rx_packets: 10, tx_bytes: 2 ** 50, tx_packets: 20 },
  });
});

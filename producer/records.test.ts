// Unit tests of the packed-record decoder (producer/records.ts) against buffers laid out as bpf/nettally.h says.
import { LAYOUT, commText, decodeBatch, decodeConnEntries, decodeIfaces, formatAddr } from './records';

function addr(bytes: number[]): DataView {
  const dv = new DataView(new ArrayBuffer(16));
  bytes.forEach((b, i) => dv.setUint8(i, b));
  return dv;
}

function v6(groups: number[]): DataView {
  const dv = new DataView(new ArrayBuffer(16));
  groups.forEach((g, i) => dv.setUint16(2 * i, g, false));
  return dv;
}

test('formatAddr: IPv4, IPv6 (RFC 5952 compression), IPv4-mapped', () => {
  expect(formatAddr(addr([10, 0, 0, 1]), 0, 2)).toBe('10.0.0.1');
  expect(formatAddr(v6([0xfd00, 0, 0, 0, 0, 0, 0, 1]), 0, 10)).toBe('fd00::1');
  expect(formatAddr(v6([0, 0, 0, 0, 0, 0, 0, 0]), 0, 10)).toBe('::');
  expect(formatAddr(v6([0x2001, 0xdb8, 0, 1, 0, 0, 0, 1]), 0, 10)).toBe('2001:db8:0:1::1');
  expect(formatAddr(v6([0x2001, 0xdb8, 1, 2, 3, 4, 5, 6]), 0, 10)).toBe('2001:db8:1:2:3:4:5:6');
  expect(formatAddr(v6([0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001]), 0, 10)).toBe('::ffff:10.0.0.1');
});

function connRecord(dv: DataView, off: number, kind: number, fields: { cookie: number; tx: number; rx: number; ts: number; start: number }): void {
  dv.setBigUint64(off, BigInt(fields.ts), true);
  dv.setUint32(off + 8, kind, true);
  dv.setUint32(off + 12, LAYOUT.conn_record, true);
  dv.setBigUint64(off + 16, BigInt(fields.cookie), true);
  dv.setBigUint64(off + 24, BigInt(fields.start), true);
  dv.setBigUint64(off + 32, BigInt(fields.tx), true);
  dv.setBigUint64(off + 40, BigInt(fields.rx), true);
  dv.setUint32(off + 68, 4026531840, true);
  dv.setUint32(off + 72, 4242, true);
  [10, 1, 2, 3].forEach((b, i) => dv.setUint8(off + 80 + i, b));
  [10, 1, 2, 4].forEach((b, i) => dv.setUint8(off + 96 + i, b));
  dv.setUint16(off + 112, 5555, true);
  dv.setUint16(off + 114, 443, true);
  dv.setUint16(off + 116, 2, true);
  dv.setUint8(off + 118, 6);
  dv.setUint8(off + 119, 1);
  'curl'.split('').forEach((c, i) => dv.setUint8(off + 120 + i, c.charCodeAt(0)));
  dv.setUint8(off + 136, kind === 3 ? 4 : 3);
}

test('decodeBatch: conn and listen records back to back; naive records counted', () => {
  const buf = new ArrayBuffer(LAYOUT.conn_record + LAYOUT.listen_record + LAYOUT.naive_record);
  const dv = new DataView(buf);
  connRecord(dv, 0, 3, { cookie: 77, tx: 2 ** 40 + 5, rx: 9, ts: 5000, start: 1000 });
  const l = LAYOUT.conn_record;
  dv.setUint32(l + 8, 4, true);
  dv.setUint32(l + 12, LAYOUT.listen_record, true);
  dv.setBigUint64(l + 16, 99n, true);
  dv.setUint32(l + 32, 4026531840, true);
  dv.setUint32(l + 40, 128, true);
  dv.setUint16(l + 64, 8080, true);
  dv.setUint16(l + 66, 2, true);
  dv.setUint8(l + 68, 6);
  const n = l + LAYOUT.listen_record;
  dv.setUint32(n + 8, 6, true);
  dv.setUint32(n + 12, LAYOUT.naive_record, true);
  const { records, naive } = decodeBatch(buf);
  expect(naive).toBe(1);
  expect(records).toEqual([
    expect.objectContaining({ kind: 3, cookie: 77, tx_bytes: 2 ** 40 + 5, rx_bytes: 9, duration_ns: 4000, saddr: '10.1.2.3', daddr: '10.1.2.4', sport: 5555, dport: 443, comm: 'curl', pid: 4242, direction: 1, flush_reason: 'close' }),
    expect.objectContaining({ kind: 4, cookie: 99, backlog: 128, port: 8080, addr: '0.0.0.0', netns: 4026531840 }),
  ]);
});

test('decodeBatch rejects truncated and unknown records; counters beyond 2^53 are refused', () => {
  const buf = new ArrayBuffer(LAYOUT.conn_record);
  const dv = new DataView(buf);
  connRecord(dv, 0, 2, { cookie: 1, tx: 1, rx: 1, ts: 1, start: 1 });
  dv.setUint32(12, 400, true);
  expect(() => decodeBatch(buf)).toThrow(/bad size/);
  dv.setUint32(12, LAYOUT.conn_record, true);
  dv.setUint32(8, 9, true);
  expect(() => decodeBatch(buf)).toThrow(/unknown kernel record kind 9/);
  dv.setUint32(8, 2, true);
  dv.setBigUint64(32, 2n ** 60n, true);
  expect(() => decodeBatch(buf)).toThrow(/tx_bytes exceeds 2\^53/);
});

test('decodeConnEntries: closed entries become CONN_CLOSE snapshots at their close time', () => {
  const buf = new ArrayBuffer(LAYOUT.conn);
  const dv = new DataView(buf);
  connRecord(dv, 0, 0, { cookie: 5, tx: 10, rx: 20, ts: 0, start: 100 });
  dv.setBigUint64(144, 10n, true);
  dv.setBigUint64(152, 0n, true);
  dv.setBigUint64(168, 700n, true);
  dv.setUint32(184, 0x01 | 0x04, true);
  const [e] = decodeConnEntries(buf);
  expect(e.record).toMatchObject({ kind: 3, ts_ns: 700, duration_ns: 600, tx_bytes: 10, rx_bytes: 20, flush_reason: 'snapshot' });
  expect(e).toMatchObject({ flushed_tx: 10, flushed_rx: 0, flags: 5 });
});

test('decodeIfaces', () => {
  const buf = new ArrayBuffer(LAYOUT.iface_entry);
  const dv = new DataView(buf);
  dv.setUint32(0, 123, true);
  dv.setUint32(4, 2, true);
  [1000, 10, 2000, 20].forEach((v, i) => dv.setBigUint64(8 + 8 * i, BigInt(v), true));
  expect(decodeIfaces(buf, 55)).toEqual([{ kind: 5, ts_ns: 55, netns: 123, ifindex: 2, rx_bytes: 1000, rx_packets: 10, tx_bytes: 2000, tx_packets: 20 }]);
});

test('commText: ASCII as is, UTF-8 as text (a character the kernel cut off is left out), other bytes one per character', () => {
  // the kernel's 16-byte comm buffer, NUL-padded
  const b = (...x: (number | string)[]): Uint8Array => {
    const out = new Uint8Array(16);
    out.set(x.flatMap((v) => (typeof v === 'string' ? [...Buffer.from(v, 'utf8')] : [v])));
    return out;
  };
  expect(commText(b('nginx', 0, 'junk'))).toBe('nginx');
  expect(commText(b('café', 0))).toBe('café');
  // a 16-byte kernel comm buffer: "日本語のプ" (15 bytes) + NUL, and a 3-byte character cut after its first byte
  expect(commText(b('日本語のプ', 0))).toBe('日本語のプ');
  expect(commText(b('ab日本語の', 0xe3, 0))).toBe('ab日本語の');
  // not UTF-8: every byte kept (Latin-1), so two different names never merge and nothing is replaced
  expect(commText(b('bad', 0xff, 0xfe, 0x80, 0x0a, 0x5c))).toBe('bad\u00ff\u00fe\u0080\n\\');
  expect(commText(b('caf', 0xe9))).toBe('caf\u00e9');
});

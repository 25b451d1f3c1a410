// Kernel record types and the DataView decoder of the packed records defined in bpf/nettally.h. Offsets, sizes, C types
// and constants come from producer/layout.generated.ts (generated from the header, checked against the compiled
// object's BTF by scripts/build.sh): a field moved in the header moves here; a field whose C type changes no longer
// type-checks against the reader below, which is typed by the C type it reads.
import { NettallyError } from '../lib/errors';
import {
  ConnFlag, Direction, FlushReasonCode, KernelKind, nt_conn, nt_conn_record, nt_hdr, nt_iface_entry, nt_iface_key, nt_iface_val, nt_listen_record, nt_naive_record,
} from './layout.generated';

export { ConnFlag, Direction, KernelKind };
export type DirectionValue = (typeof Direction)[keyof typeof Direction];
export type FlushReason = Lowercase<keyof typeof FlushReasonCode>;
export type ConnKind = typeof KernelKind.CONN_OPEN | typeof KernelKind.CONN_SAMPLE | typeof KernelKind.CONN_CLOSE;

/** flush_reason byte -> name; 0 (never written by the kernel) reads as 'open', an unknown code as 'interval'. */
const FLUSH_REASONS: FlushReason[] = ['open'];
for (const [name, code] of Object.entries(FlushReasonCode)) FLUSH_REASONS[code] = name.toLowerCase() as FlushReason;

// The decoded records' types are derived from the generated layout: every integer field of the struct is a number,
// every char[]/u8[] a string; header (`hdr`) and padding (`_*`) fields are not part of a record. A field added to the
// header is therefore a required property here, and decodeConn/decodeListen do not compile until they read it.
type CScalar = 'u8' | 'u16' | 'u32' | 'u64';
type StructFields<S extends { fields: object }> = {
  -readonly [K in keyof S['fields'] as K extends `_${string}` ? never : S['fields'][K] extends { type: CScalar | `${string}[${number}]` } ? K : never]:
    S['fields'][K] extends { type: CScalar } ? number : string;
};

/** One connection's identity and cumulative payload counters (kinds CONN_OPEN, CONN_SAMPLE, CONN_CLOSE). */
export interface ConnRecord extends Omit<StructFields<typeof nt_conn_record>, 'direction' | 'flush_reason'> {
  kind: ConnKind;
  /** CLOCK_BOOTTIME ns when emitted (may lose sub-2ns precision after 104 days of uptime). */
  ts_ns: number;
  /** ts_ns - start_ns on CONN_CLOSE; 0 otherwise. */
  duration_ns: number;
  direction: DirectionValue;
  flush_reason: FlushReason;
}

export interface ListenRecord extends StructFields<typeof nt_listen_record> {
  kind: typeof KernelKind.LISTEN;
  ts_ns: number;
}

/** Cumulative wire counters of one interface (IP packets incl. headers and retransmits), built from the iface map. */
export interface IfaceRecord extends StructFields<typeof nt_iface_key>, StructFields<typeof nt_iface_val> {
  kind: typeof KernelKind.IFACE;
  ts_ns: number;
}

export type KernelRecord = ConnRecord | ListenRecord | IfaceRecord;

/** Sizes in bytes, asserted against the addon's sizeof() at open. */
export const LAYOUT = {
  conn_record: nt_conn_record.size,
  listen_record: nt_listen_record.size,
  naive_record: nt_naive_record.size,
  conn: nt_conn.size,
  iface_entry: nt_iface_entry.size,
} as const;

// Readers typed by the C type of the field they read (a generated field descriptor): reading a __u32 as a u64 or a
// char[] as an address does not compile.
type Field<T extends string> = { readonly off: number; readonly type: T; readonly len?: number };
const C = nt_conn_record.fields;
const L = nt_listen_record.fields;
const M = nt_conn.fields;
const K = nt_iface_key.fields;
const V = nt_iface_val.fields;

const u8 = (dv: DataView, base: number, f: Field<'u8'>): number => dv.getUint8(base + f.off);
const u16 = (dv: DataView, base: number, f: Field<'u16'>): number => dv.getUint16(base + f.off, true);
const u32 = (dv: DataView, base: number, f: Field<'u32'>): number => dv.getUint32(base + f.off, true);

const TWO32 = 2 ** 32;

/** u64 that must be exact (counters, cookies): beyond 2^53 it cannot be a JS number. */
function u64(dv: DataView, base: number, f: Field<'u64'>, field: string): number {
  const lo = dv.getUint32(base + f.off, true);
  const hi = dv.getUint32(base + f.off + 4, true);
  if (hi >= 0x200000) throw new NettallyError('RECORD_MALFORMED', `kernel record field ${field} exceeds 2^53`, { context: { field } });
  return hi * TWO32 + lo;
}

/** u64 timestamps: rounded to the nearest double past 2^53 ns (104 days of uptime). */
function u64ts(dv: DataView, base: number, f: Field<'u64'>): number {
  return dv.getUint32(base + f.off + 4, true) * TWO32 + dv.getUint32(base + f.off, true);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A kernel name (comm: up to 15 bytes, NUL-terminated) as text: UTF-8 when the bytes are UTF-8 (a multi-byte
 * character the kernel cut off at 15 bytes is left out), otherwise one character per byte (Latin-1), so that a name
 * with invalid bytes is still kept byte for byte. ASCII, by far the most common, takes the first loop only.
 */
export function commText(bytes: Uint8Array): string {
  let s = '';
  let end = bytes.length;
  let high = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (c === 0) {
      end = i;
      break;
    }
    if (c >= 0x80) high = true;
    s += String.fromCharCode(c);
  }
  if (!high) return s;
  // The kernel cuts a longer name at 15 bytes (the buffer's last byte is the NUL): only a name that fills the buffer
  // can end in a character cut short, and only there is an incomplete trailing sequence left out.
  let cut = end;
  for (let k = 1; k <= 3 && end >= bytes.length - 1 && end - k >= 0; k++) {
    const b = bytes[end - k];
    if ((b & 0xc0) === 0x80) continue;
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    if (need > k) cut = end - k;
    break;
  }
  try {
    return UTF8.decode(bytes.subarray(0, cut));
  } catch {
    return s;
  }
}

/** A NUL-terminated char[len] (see commText). */
function cstr(dv: DataView, base: number, f: Field<`char[${number}]`> & { readonly len: number }): string {
  return commText(new Uint8Array(dv.buffer, dv.byteOffset + base + f.off, f.len));
}

function addr(dv: DataView, base: number, f: Field<'u8[16]'>, family: number): string {
  return formatAddr(dv, base + f.off, family);
}

/** IPv4 dotted quad, or IPv6 in RFC 5952 form (longest zero run compressed, IPv4-mapped as ::ffff:a.b.c.d). */
export function formatAddr(dv: DataView, off: number, family: number): string {
  if (family !== 10) return `${dv.getUint8(off)}.${dv.getUint8(off + 1)}.${dv.getUint8(off + 2)}.${dv.getUint8(off + 3)}`;
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push(dv.getUint16(off + 2 * i, false));
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${dv.getUint8(off + 12)}.${dv.getUint8(off + 13)}.${dv.getUint8(off + 14)}.${dv.getUint8(off + 15)}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Decodes struct nt_conn_record at `off` (also the first bytes of a struct nt_conn map value). */
export function decodeConn(dv: DataView, off: number, kind: ConnKind, reason?: FlushReason): ConnRecord {
  const ts = u64ts(dv, off + C.hdr.off, nt_hdr.fields.ts_ns);
  const start = u64ts(dv, off, C.start_ns);
  const family = u16(dv, off, C.family);
  return {
    kind,
    ts_ns: ts,
    cookie: u64(dv, off, C.cookie, 'cookie'),
    start_ns: start,
    duration_ns: kind === KernelKind.CONN_CLOSE && ts > start ? ts - start : 0,
    tx_bytes: u64(dv, off, C.tx_bytes, 'tx_bytes'),
    rx_bytes: u64(dv, off, C.rx_bytes, 'rx_bytes'),
    retransmits: u32(dv, off, C.retransmits),
    cgroup_id: u64ts(dv, off, C.cgroup_id),
    netns: u32(dv, off, C.netns),
    netns_cookie: u64(dv, off, C.netns_cookie, 'netns_cookie'),
    pid: u32(dv, off, C.pid),
    uid: u32(dv, off, C.uid),
    comm: cstr(dv, off, C.comm),
    family,
    protocol: u8(dv, off, C.protocol),
    direction: (u8(dv, off, C.direction) % 3) as DirectionValue,
    saddr: addr(dv, off, C.saddr, family),
    daddr: addr(dv, off, C.daddr, family),
    sport: u16(dv, off, C.sport),
    dport: u16(dv, off, C.dport),
    flush_reason: reason ?? FLUSH_REASONS[u8(dv, off, C.flush_reason)] ?? 'interval',
  };
}

export function decodeListen(dv: DataView, off: number): ListenRecord {
  const family = u16(dv, off, L.family);
  return {
    kind: KernelKind.LISTEN,
    ts_ns: u64ts(dv, off + L.hdr.off, nt_hdr.fields.ts_ns),
    cookie: u64(dv, off, L.cookie, 'cookie'),
    netns_cookie: u64(dv, off, L.netns_cookie, 'netns_cookie'),
    netns: u32(dv, off, L.netns),
    pid: u32(dv, off, L.pid),
    backlog: u32(dv, off, L.backlog),
    uid: u32(dv, off, L.uid),
    addr: addr(dv, off, L.addr, family),
    port: u16(dv, off, L.port),
    family,
    protocol: u8(dv, off, L.protocol),
    comm: cstr(dv, off, L.comm),
  };
}

export interface DecodedBatch {
  records: KernelRecord[];
  /** Naive-mode (benchmark) records: counted, not decoded. */
  naive: number;
}

/** Decodes one drain batch: ring-buffer samples back to back, each starting with struct nt_hdr. */
export function decodeBatch(buf: ArrayBuffer): DecodedBatch {
  const dv = new DataView(buf);
  const records: KernelRecord[] = [];
  let naive = 0;
  let off = 0;
  while (off + nt_hdr.size <= buf.byteLength) {
    const kind = u32(dv, off, nt_hdr.fields.kind);
    const size = u32(dv, off, nt_hdr.fields.size_bytes);
    if (size < nt_hdr.size || off + size > buf.byteLength) {
      throw new NettallyError('RECORD_MALFORMED', `kernel record of kind ${kind} at ${off} has bad size ${size}`);
    }
    if ((kind === KernelKind.CONN_OPEN || kind === KernelKind.CONN_SAMPLE || kind === KernelKind.CONN_CLOSE) && size === LAYOUT.conn_record) {
      records.push(decodeConn(dv, off, kind));
    } else if (kind === KernelKind.LISTEN && size === LAYOUT.listen_record) records.push(decodeListen(dv, off));
    else if (kind === KernelKind.NAIVE) naive++;
    else throw new NettallyError('RECORD_MALFORMED', `unknown kernel record kind ${kind} (size ${size})`);
    off += size;
  }
  return { records, naive };
}

/** One struct nt_conn map value with its flush state. */
export interface ConnEntry {
  record: ConnRecord;
  flushed_tx: number;
  flushed_rx: number;
  closed_ns: number;
  flags: number;
}

export function decodeConnEntries(buf: ArrayBuffer): ConnEntry[] {
  const dv = new DataView(buf);
  const out: ConnEntry[] = [];
  for (let off = 0; off + LAYOUT.conn <= buf.byteLength; off += LAYOUT.conn) {
    const flags = u32(dv, off, M.flags);
    const closed = (flags & ConnFlag.CLOSED) !== 0;
    const record = decodeConn(dv, off + M.rec.off, closed ? KernelKind.CONN_CLOSE : KernelKind.CONN_SAMPLE, 'snapshot');
    const closedNs = u64ts(dv, off, M.closed_ns);
    if (closed) {
      record.ts_ns = closedNs;
      record.duration_ns = closedNs > record.start_ns ? closedNs - record.start_ns : 0;
    }
    out.push({ record, flushed_tx: u64(dv, off, M.flushed_tx, 'flushed_tx'), flushed_rx: u64(dv, off, M.flushed_rx, 'flushed_rx'), closed_ns: closedNs, flags });
  }
  return out;
}

export function decodeIfaces(buf: ArrayBuffer, tsNs: number): IfaceRecord[] {
  const dv = new DataView(buf);
  const out: IfaceRecord[] = [];
  for (let off = 0; off + LAYOUT.iface_entry <= buf.byteLength; off += LAYOUT.iface_entry) {
    const key = off + nt_iface_entry.fields.key.off;
    const val = off + nt_iface_entry.fields.val.off;
    out.push({
      kind: KernelKind.IFACE,
      ts_ns: tsNs,
      netns: u32(dv, key, K.netns),
      ifindex: u32(dv, key, K.ifindex),
      rx_bytes: u64(dv, val, V.rx_bytes, 'rx_bytes'),
      rx_packets: u64(dv, val, V.rx_packets, 'rx_packets'),
      tx_bytes: u64(dv, val, V.tx_bytes, 'tx_bytes'),
      tx_packets: u64(dv, val, V.tx_packets, 'tx_packets'),
    });
  }
  return out;
}

// Kernel record types and the DataView decoder of the packed records defined in bpf/nettally.h.
// Field for field with that header (offsets in the comments there): change both together.
import { NettallyError } from '../lib/errors';

export const RecordKind = { CONN_OPEN: 1, CONN_SAMPLE: 2, CONN_CLOSE: 3, LISTEN: 4, IFACE: 5 } as const;
export const Direction = { UNKNOWN: 0, OUTBOUND: 1, INBOUND: 2 } as const;
export type DirectionValue = 0 | 1 | 2;
export type FlushReason = 'open' | 'interval' | 'threshold' | 'close' | 'snapshot';

const FLUSH_REASONS: readonly FlushReason[] = ['open', 'open', 'interval', 'threshold', 'close', 'snapshot'];
const KIND_NAIVE = 6;

/** One connection's identity and cumulative payload counters (kinds CONN_OPEN, CONN_SAMPLE, CONN_CLOSE). */
export interface ConnRecord {
  kind: 1 | 2 | 3;
  /** CLOCK_BOOTTIME ns when emitted (may lose sub-2ns precision after 104 days of uptime). */
  ts_ns: number;
  cookie: number;
  start_ns: number;
  /** ts_ns - start_ns on CONN_CLOSE; 0 otherwise. */
  duration_ns: number;
  /** Cumulative payload bytes the application sent/received through the socket since the connection started. */
  tx_bytes: number;
  rx_bytes: number;
  retransmits: number;
  cgroup_id: number;
  netns: number;
  netns_cookie: number;
  pid: number;
  uid: number;
  comm: string;
  family: number;
  protocol: number;
  direction: DirectionValue;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  flush_reason: FlushReason;
}

export interface ListenRecord {
  kind: 4;
  ts_ns: number;
  cookie: number;
  netns: number;
  netns_cookie: number;
  pid: number;
  uid: number;
  comm: string;
  family: number;
  addr: string;
  port: number;
  backlog: number;
  protocol: number;
}

/** Cumulative wire counters of one interface (IP packets incl. headers and retransmits), built from the iface map. */
export interface IfaceRecord {
  kind: 5;
  ts_ns: number;
  netns: number;
  ifindex: number;
  rx_bytes: number;
  rx_packets: number;
  tx_bytes: number;
  tx_packets: number;
}

export type KernelRecord = ConnRecord | ListenRecord | IfaceRecord;

/** Sizes in bytes, asserted against the addon's sizeof() at open. */
export const LAYOUT = { conn_record: 144, listen_record: 88, naive_record: 32, conn: 192, iface_entry: 40 } as const;

/** nt_conn.flags */
export const ConnFlag = { ESTABLISHED: 0x01, FIN_SENT: 0x02, CLOSED: 0x04, CLOSE_EMITTED: 0x08 } as const;

const TWO32 = 2 ** 32;

/** u64 that must be exact (counters, cookies): beyond 2^53 it cannot be a JS number. */
function u64(dv: DataView, off: number, field: string): number {
  const lo = dv.getUint32(off, true);
  const hi = dv.getUint32(off + 4, true);
  if (hi >= 0x200000) throw new NettallyError('RECORD_MALFORMED', `kernel record field ${field} exceeds 2^53`, { context: { field } });
  return hi * TWO32 + lo;
}

/** u64 timestamps: rounded to the nearest double past 2^53 ns (104 days of uptime). */
function u64ts(dv: DataView, off: number): number {
  return dv.getUint32(off + 4, true) * TWO32 + dv.getUint32(off, true);
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

function cstr(dv: DataView, off: number, len: number): string {
  return commText(new Uint8Array(dv.buffer, dv.byteOffset + off, len));
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

/** Decodes struct nt_conn_record at `off` (also the first 144 bytes of a struct nt_conn map value). */
export function decodeConn(dv: DataView, off: number, kind: 1 | 2 | 3, reason?: FlushReason): ConnRecord {
  const ts = u64ts(dv, off);
  const start = u64ts(dv, off + 24);
  const family = dv.getUint16(off + 116, true);
  return {
    kind,
    ts_ns: ts,
    cookie: u64(dv, off + 16, 'cookie'),
    start_ns: start,
    duration_ns: kind === RecordKind.CONN_CLOSE && ts > start ? ts - start : 0,
    tx_bytes: u64(dv, off + 32, 'tx_bytes'),
    rx_bytes: u64(dv, off + 40, 'rx_bytes'),
    retransmits: dv.getUint32(off + 64, true),
    cgroup_id: u64ts(dv, off + 48),
    netns: dv.getUint32(off + 68, true),
    netns_cookie: u64(dv, off + 56, 'netns_cookie'),
    pid: dv.getUint32(off + 72, true),
    uid: dv.getUint32(off + 76, true),
    comm: cstr(dv, off + 120, 16),
    family,
    protocol: dv.getUint8(off + 118),
    direction: (dv.getUint8(off + 119) % 3) as DirectionValue,
    saddr: formatAddr(dv, off + 80, family),
    daddr: formatAddr(dv, off + 96, family),
    sport: dv.getUint16(off + 112, true),
    dport: dv.getUint16(off + 114, true),
    flush_reason: reason ?? FLUSH_REASONS[dv.getUint8(off + 136)] ?? 'interval',
  };
}

export function decodeListen(dv: DataView, off: number): ListenRecord {
  const family = dv.getUint16(off + 66, true);
  return {
    kind: 4,
    ts_ns: u64ts(dv, off),
    cookie: u64(dv, off + 16, 'cookie'),
    netns_cookie: u64(dv, off + 24, 'netns_cookie'),
    netns: dv.getUint32(off + 32, true),
    pid: dv.getUint32(off + 36, true),
    backlog: dv.getUint32(off + 40, true),
    uid: dv.getUint32(off + 44, true),
    addr: formatAddr(dv, off + 48, family),
    port: dv.getUint16(off + 64, true),
    family,
    protocol: dv.getUint8(off + 68),
    comm: cstr(dv, off + 72, 16),
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
  while (off + 16 <= buf.byteLength) {
    const kind = dv.getUint32(off + 8, true);
    const size = dv.getUint32(off + 12, true);
    if (size < 16 || off + size > buf.byteLength) {
      throw new NettallyError('RECORD_MALFORMED', `kernel record of kind ${kind} at ${off} has bad size ${size}`);
    }
    if (kind >= 1 && kind <= 3 && size === LAYOUT.conn_record) records.push(decodeConn(dv, off, kind as 1 | 2 | 3));
    else if (kind === RecordKind.LISTEN && size === LAYOUT.listen_record) records.push(decodeListen(dv, off));
    else if (kind === KIND_NAIVE) naive++;
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
    const flags = dv.getUint32(off + 184, true);
    const closed = (flags & ConnFlag.CLOSED) !== 0;
    const record = decodeConn(dv, off, closed ? RecordKind.CONN_CLOSE : RecordKind.CONN_SAMPLE, 'snapshot');
    const closedNs = u64ts(dv, off + 168);
    if (closed) {
      record.ts_ns = closedNs;
      record.duration_ns = closedNs > record.start_ns ? closedNs - record.start_ns : 0;
    }
    out.push({ record, flushed_tx: u64(dv, off + 144, 'flushed_tx'), flushed_rx: u64(dv, off + 152, 'flushed_rx'), closed_ns: closedNs, flags });
  }
  return out;
}

export function decodeIfaces(buf: ArrayBuffer, tsNs: number): IfaceRecord[] {
  const dv = new DataView(buf);
  const out: IfaceRecord[] = [];
  for (let off = 0; off + LAYOUT.iface_entry <= buf.byteLength; off += LAYOUT.iface_entry) {
    out.push({
      kind: 5,
      ts_ns: tsNs,
      netns: dv.getUint32(off, true),
      ifindex: dv.getUint32(off + 4, true),
      rx_bytes: u64(dv, off + 8, 'rx_bytes'),
      rx_packets: u64(dv, off + 16, 'rx_packets'),
      tx_bytes: u64(dv, off + 24, 'tx_bytes'),
      tx_packets: u64(dv, off + 32, 'tx_packets'),
    });
  }
  return out;
}

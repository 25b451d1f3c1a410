// Kernel record types and the decoding of the packed records defined in bpf/nettally.h. The per-field decoders are
// generated from the header (producer/layout-decode.generated.ts, by scripts/gen-records.js; the header is checked
// against the compiled object's BTF by scripts/build.sh): a field added to, moved in or retyped in the header is read
// without an edit here. This module adds what the header cannot say: record kinds, durations, batches and snapshots.
import { NettallyError } from '../lib/errors';
import { ConnFlag, Direction, KernelKind, nt_conn, nt_conn_record, nt_hdr, nt_iface_entry, nt_listen_record, nt_naive_record } from './layout.generated';
import { decode_nt_conn_record, decode_nt_iface_entry, decode_nt_listen_record } from './layout-decode.generated';
import { u64, u64ts } from './layout-readers';

export { ConnFlag, Direction, KernelKind };
export { commText, formatAddr, type FlushReason } from './layout-readers';
export type ConnKind = typeof KernelKind.CONN_OPEN | typeof KernelKind.CONN_SAMPLE | typeof KernelKind.CONN_CLOSE;

/** One connection's identity and cumulative payload counters (kinds CONN_OPEN, CONN_SAMPLE, CONN_CLOSE). */
export type ConnRecord = ReturnType<typeof decode_nt_conn_record<ConnKind>> & {
  /** ts_ns - start_ns on CONN_CLOSE; 0 otherwise. */
  duration_ns: number;
};

export type ListenRecord = ReturnType<typeof decode_nt_listen_record<typeof KernelKind.LISTEN>>;

/** Cumulative wire counters of one interface (IP packets incl. headers and retransmits), built from the iface map. */
export type IfaceRecord = ReturnType<typeof decode_nt_iface_entry<typeof KernelKind.IFACE>>;

export type KernelRecord = ConnRecord | ListenRecord | IfaceRecord;

/** Sizes in bytes, asserted against the addon's sizeof() at open. */
export const LAYOUT = {
  conn_record: nt_conn_record.size,
  listen_record: nt_listen_record.size,
  naive_record: nt_naive_record.size,
  conn: nt_conn.size,
  iface_entry: nt_iface_entry.size,
} as const;

/**
 * A fresh connection record of `kind`, every field as the kernel's zero bytes decode (0, '', the unspecified
 * address): for synthetic sources and tests, which set the fields they know by assignment and so need no edit when
 * the header gains a field. (A clone of a fast object is one step in V8; Object.assign of the fields measured ~8x
 * slower on the synthetic source's path.)
 */
export function blankConn(kind: ConnKind): ConnRecord {
  const r = { ...BLANK_CONN };
  r.kind = kind;
  return r;
}

/** struct nt_conn_record at `off` (also the first bytes of a struct nt_conn map value). */
function decodeConn(dv: DataView, off: number, kind: ConnKind): ConnRecord {
  const r = decode_nt_conn_record(dv, off, kind) as ConnRecord;
  r.duration_ns = kind === KernelKind.CONN_CLOSE && r.ts_ns > r.start_ns ? r.ts_ns - r.start_ns : 0;
  return r;
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
    const kind = dv.getUint32(off + nt_hdr.fields.kind.off, true);
    const size = dv.getUint32(off + nt_hdr.fields.size_bytes.off, true);
    if (size < nt_hdr.size || off + size > buf.byteLength) {
      throw new NettallyError('RECORD_MALFORMED', `kernel record of kind ${kind} at ${off} has bad size ${size}`);
    }
    if ((kind === KernelKind.CONN_OPEN || kind === KernelKind.CONN_SAMPLE || kind === KernelKind.CONN_CLOSE) && size === LAYOUT.conn_record) {
      records.push(decodeConn(dv, off, kind));
    } else if (kind === KernelKind.LISTEN && size === LAYOUT.listen_record) records.push(decode_nt_listen_record(dv, off, KernelKind.LISTEN));
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

const M = nt_conn.fields;

export function decodeConnEntries(buf: ArrayBuffer): ConnEntry[] {
  const dv = new DataView(buf);
  const out: ConnEntry[] = [];
  for (let off = 0; off + LAYOUT.conn <= buf.byteLength; off += LAYOUT.conn) out.push(decodeConnEntry(dv, off));
  return out;
}

/** The struct nt_conn map value at `off`. */
export function decodeConnEntry(dv: DataView, off: number): ConnEntry {
  const flags = dv.getUint32(off + M.flags.off, true);
  return { record: connEntryRecord(dv, off, flags), flushed_tx: u64(dv, off + M.flushed_tx.off, 'flushed_tx'), flushed_rx: u64(dv, off + M.flushed_rx.off, 'flushed_rx'), closed_ns: u64ts(dv, off + M.closed_ns.off), flags };
}

/** The record of the struct nt_conn map value at `off` (flags: its flags): CONN_CLOSE at its close time if closed. */
export function connEntryRecord(dv: DataView, off: number, flags: number): ConnRecord {
  const closed = (flags & ConnFlag.CLOSED) !== 0;
  const record = decodeConn(dv, off + M.rec.off, closed ? KernelKind.CONN_CLOSE : KernelKind.CONN_SAMPLE);
  record.flush_reason = 'snapshot';
  if (closed) {
    const closedNs = u64ts(dv, off + M.closed_ns.off);
    record.ts_ns = closedNs;
    record.duration_ns = closedNs > record.start_ns ? closedNs - record.start_ns : 0;
  }
  return record;
}

/**
 * What the sweep reads of every map value, without building a record (most entries need none): offsets of the
 * fields inside struct nt_conn.
 */
export const CONN_ENTRY = {
  flags: M.flags.off,
  cookie: M.rec.off + nt_conn_record.fields.cookie.off,
  tx: M.rec.off + nt_conn_record.fields.tx_bytes.off,
  rx: M.rec.off + nt_conn_record.fields.rx_bytes.off,
  flushedTx: M.flushed_tx.off,
  flushedRx: M.flushed_rx.off,
} as const;

const BLANK_CONN = decodeConn(new DataView(new ArrayBuffer(nt_conn_record.size)), 0, KernelKind.CONN_SAMPLE);

export function decodeIfaces(buf: ArrayBuffer, tsNs: number): IfaceRecord[] {
  const dv = new DataView(buf);
  const out: IfaceRecord[] = [];
  for (let off = 0; off + LAYOUT.iface_entry <= buf.byteLength; off += LAYOUT.iface_entry) out.push(decode_nt_iface_entry(dv, off, KernelKind.IFACE, tsNs));
  return out;
}

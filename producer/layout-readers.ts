// The readers the generated kernel record decoders (producer/layout-decode.generated.ts) use, one per kind of C member
// (scripts/gen-records.js readExpr picks one by the member's C type, name and comment). Hand-written: what a C value
// means in TypeScript (exactness, text, addresses, codes) is decided here, once, not per field.
import { NettallyError } from '../lib/errors';
import { Direction, FlushReasonCode } from './layout.generated';

export type DirectionValue = (typeof Direction)[keyof typeof Direction];
export type FlushReason = Lowercase<keyof typeof FlushReasonCode>;

const TWO32 = 2 ** 32;

/** u64 that must be exact (counters, cookies): beyond 2^53 it cannot be a JS number, and a rounded one would be wrong. */
export function u64(dv: DataView, off: number, field: string): number {
  const lo = dv.getUint32(off, true);
  const hi = dv.getUint32(off + 4, true);
  if (hi >= 0x200000) throw new NettallyError('RECORD_MALFORMED', `kernel record field ${field} exceeds 2^53`, { context: { field } });
  return hi * TWO32 + lo;
}

/** u64 timestamps and ids: rounded to the nearest double past 2^53 (104 days of uptime in ns). */
export function u64ts(dv: DataView, off: number): number {
  return dv.getUint32(off + 4, true) * TWO32 + dv.getUint32(off, true);
}

/** flush_reason byte -> name; 0 (never written by the kernel) reads as 'open', an unknown code as 'interval'. */
const FLUSH_REASONS: FlushReason[] = ['open'];
for (const [name, code] of Object.entries(FlushReasonCode)) FLUSH_REASONS[code] = name.toLowerCase() as FlushReason;

/** Readers of the members whose header comment names a code group (`NT_<GROUP>_*`), by the group's TypeScript name. */
export const codes = {
  Direction: (v: number): DirectionValue => (v % 3) as DirectionValue,
  FlushReasonCode: (v: number): FlushReason => FLUSH_REASONS[v] ?? 'interval',
};

/** A NUL-terminated char[len] as text (see commText). */
export function text(dv: DataView, off: number, len: number): string {
  return commText(new Uint8Array(dv.buffer, dv.byteOffset + off, len));
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

/** A __u8[16] address of the given family: IPv4 (family 2, the first 4 bytes) dotted quad, or IPv6 in RFC 5952 form (longest zero run compressed, IPv4-mapped as ::ffff:a.b.c.d). */
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

// kafkajs 2.2.4 (its last release) decodes every fetched record through generic helpers: a Buffer slice and a
// Decoder object per record, its timestamp delta as a 64-bit Long built byte by byte, then offset and timestamp as
// `Long.fromValue(batch's first offset string).add(delta).toString()` — two BigInt parses per record — and the
// headers through a reduce with an object spread. In the consumer's profile of a fleet drain that was ~6–9% of the
// process (bench/RESULTS.md, issue 12). This puts a record-batch decoder in its place in the module cache, before
// kafkajs loads its fetch decoding (src/protocol/requests/fetch/v4/decodeMessages.js binds it when it loads): the
// batch header is kafkajs's own code; each record is read in place with number arithmetic, producing the same
// message objects (same fields in the same order, offsets and timestamps as the same decimal strings, key and value
// as Buffer slices). A record outside the plain case — with headers, a varint longer than the fast path reads, a first
// offset or timestamp beyond 2^53, not fitting in its batch — is decoded by kafkajs's own record decoder (then the next
// one in place again), so the result is kafkajs's in every case (lib/kafkajs-fetch.test.ts
// compares both on random batches). It must be imported before anything imports kafkajs (lib/kafka.ts does);
// imported later it changes nothing, and fastFetchDecodeInstalled() says so.
/* eslint-disable @typescript-eslint/no-require-imports */

interface KDecoder {
  buffer: Buffer;
  offset: number;
  readInt8(): number;
  readInt16(): number;
  readInt32(): number;
  readInt64(): bigint;
  readAll(): Buffer;
  readVarInt(): number;
  readVarIntBytes(): Buffer | null;
  slice(n: number): KDecoder;
  forward(n: number): void;
}
type DecoderClass = new (b: Buffer) => KDecoder;
type RecordContext = Record<string, unknown> & { firstOffset: string; firstTimestamp: string; maxTimestamp: string; timestampType: number; isControlBatch: boolean; magicByte: number };
type RecordDecoder = (d: KDecoder, ctx: RecordContext) => unknown;
export type BatchDecoder = (d: KDecoder) => Promise<{ records: unknown[] } & Record<string, unknown>>;

const BATCH = 'kafkajs/src/protocol/recordBatch/v0/decoder';
const DECODE_MESSAGES = 'kafkajs/src/protocol/requests/fetch/v4/decodeMessages';

const TIMESTAMP_TYPE_FLAG_MASK = 0x8;
const TRANSACTIONAL_FLAG_MASK = 0x10;
const CONTROL_FLAG_MASK = 0x20;

/** A decimal string as a number when that is exact (|n| < 2^53 and the same digits back), else NaN. */
function exactNumber(s: string): number {
  const n = Number(s);
  return Number.isSafeInteger(n) && String(n) === s ? n : Number.NaN;
}

/** Read position of varint() (module state: no object per call). */
let at = 0;

/**
 * kafkajs's readVarInt (32-bit zigzag) at `at` for varints of up to 4 bytes (|value| < 2^27), advancing `at`; NaN for a
 * longer one (then kafkajs decodes the record).
 */
function varint(buf: Buffer): number {
  let b = buf[at++];
  let z = b & 0x7f;
  if (b >= 0x80) {
    b = buf[at++];
    z |= (b & 0x7f) << 7;
    if (b >= 0x80) {
      b = buf[at++];
      z |= (b & 0x7f) << 14;
      if (b >= 0x80) {
        b = buf[at++];
        if (b >= 0x80) return Number.NaN;
        z |= b << 21;
      }
    }
  }
  return (z >>> 1) ^ -(z & 1);
}

function build(): { stock: BatchDecoder; fast: BatchDecoder } {
  const Decoder = require('kafkajs/src/protocol/decoder') as DecoderClass;
  const { KafkaJSPartialMessageError } = require('kafkajs/src/errors') as { KafkaJSPartialMessageError: new (m: string) => Error };
  const { lookupCodecByAttributes } = require('kafkajs/src/protocol/message/compression') as {
    lookupCodecByAttributes: (a: number) => { decompress(b: Buffer): Promise<Buffer> } | undefined;
  };
  const TimestampTypes = require('kafkajs/src/protocol/timestampTypes') as { LOG_APPEND_TIME: number; CREATE_TIME: number };
  const stockRecord = require('kafkajs/src/protocol/recordBatch/record/v0/decoder') as RecordDecoder;
  const stock = require(BATCH) as BatchDecoder;

  /**
   * Records `[i, n)` of `out` from `d` (positioned at the first one's length varint), in place. Returns the index of
   * the first record it could not decode the plain way (n when all were); `d.offset` is then at that record.
   */
  function fastRecords(d: KDecoder, ctx: RecordContext, out: unknown[], i: number, n: number): number {
    const firstOffset = exactNumber(ctx.firstOffset);
    const firstTs = exactNumber(ctx.firstTimestamp);
    if (Number.isNaN(firstOffset) || Number.isNaN(firstTs)) return i;
    const appendTime = ctx.timestampType === TimestampTypes.LOG_APPEND_TIME && ctx.maxTimestamp ? ctx.maxTimestamp : undefined;
    const { magicByte, isControlBatch } = ctx;
    const buf = d.buffer;
    const end = buf.length;
    for (; i < n; i++) {
      at = d.offset;
      const len = varint(buf);
      const recEnd = at + len;
      if (Number.isNaN(len) || len < 0 || recEnd > end) break;
      let pos = at;
      const attributes = (buf[pos++] << 24) >> 24;
      // timestamp delta: kafkajs reads a 64-bit zigzag varlong; up to 7 bytes (49 bits) here, exact as a number
      let tz = 0;
      let mul = 1;
      let k = 0;
      let b: number;
      do {
        b = buf[pos++];
        tz += (b & 0x7f) * mul;
        mul *= 128;
      } while (b >= 0x80 && ++k < 7);
      if (b >= 0x80) break;
      const tsDelta = tz % 2 === 0 ? tz / 2 : -(tz + 1) / 2;
      at = pos;
      const offsetDelta = varint(buf);
      // key and value (-1 = null)
      const kl = varint(buf);
      if (!(kl >= -1) || at + kl > recEnd) break;
      const key = kl === -1 ? null : buf.subarray(at, at + kl);
      if (kl > 0) at += kl;
      const vl = varint(buf);
      if (!(vl >= -1) || at + vl > recEnd) break;
      const value = vl === -1 ? null : buf.subarray(at, at + vl);
      if (vl > 0) at += vl;
      pos = at;
      // headers: none (count 0, or -1 which kafkajs also reads as none); with headers kafkajs decodes the record
      b = buf[pos++];
      if (b !== 0 && b !== 1) break;
      if (pos > recEnd) break;
      const ts = appendTime ?? firstTs + tsDelta;
      const off = firstOffset + offsetDelta;
      if (typeof ts === 'number' && !Number.isSafeInteger(ts)) break;
      if (!Number.isSafeInteger(off)) break; // also NaN: an offset delta longer than 4 bytes
      out[i] = {
        magicByte,
        attributes,
        timestamp: typeof ts === 'number' ? String(ts) : ts,
        offset: String(off),
        key,
        value,
        headers: {},
        isControlRecord: isControlBatch,
        batchContext: ctx,
      };
      // kafkajs moves to the record's end whatever the record's own fields used (it reads a slice of `len` bytes)
      d.offset = recEnd;
    }
    return i;
  }

  /** kafkajs's per-record loop for records `[i, n)` (what it does for every record). */
  function stockRecords(d: KDecoder, ctx: RecordContext, out: unknown[], i: number, n: number): void {
    for (; i < n; i++) {
      const recordBuffer = d.readVarIntBytes();
      out[i] = stockRecord(new Decoder(recordBuffer as Buffer), ctx);
    }
  }

  /** Records in place while they are plain; each one that is not, by kafkajs's record decoder; then on in place. */
  function decodeAll(d: KDecoder, ctx: RecordContext, n: number): unknown[] {
    const out = new Array<unknown>(n);
    const plain = !Number.isNaN(exactNumber(ctx.firstOffset)) && !Number.isNaN(exactNumber(ctx.firstTimestamp));
    let i = 0;
    while (i < n) {
      const done = plain ? fastRecords(d, ctx, out, i, n) : i;
      stats.fast += done - i;
      if (done === n) break;
      stats.kafkajs++;
      stockRecords(d, ctx, out, done, done + 1);
      i = done + 1;
    }
    return out;
  }

  // kafkajs's batch decoder (src/protocol/recordBatch/v0/decoder.js), with decodeAll for its record loops.
  const fast: BatchDecoder = async (fetchDecoder) => {
    const firstOffset = fetchDecoder.readInt64().toString();
    const length = fetchDecoder.readInt32();
    const decoder = fetchDecoder.slice(length);
    fetchDecoder.forward(length);
    const remainingBytes = Buffer.byteLength(decoder.buffer);
    if (remainingBytes < length) {
      throw new KafkaJSPartialMessageError(`Tried to decode a partial record batch: remainingBytes(${remainingBytes}) < recordBatchLength(${length})`);
    }
    const partitionLeaderEpoch = decoder.readInt32();
    const magicByte = decoder.readInt8();
    decoder.readInt32(); // CRC: kafkajs does not check it either
    const attributes = decoder.readInt16();
    const lastOffsetDelta = decoder.readInt32();
    const firstTimestamp = decoder.readInt64().toString();
    const maxTimestamp = decoder.readInt64().toString();
    const producerId = decoder.readInt64().toString();
    const producerEpoch = decoder.readInt16();
    const firstSequence = decoder.readInt32();
    const inTransaction = (attributes & TRANSACTIONAL_FLAG_MASK) > 0;
    const isControlBatch = (attributes & CONTROL_FLAG_MASK) > 0;
    const timestampType = (attributes & TIMESTAMP_TYPE_FLAG_MASK) > 0 ? TimestampTypes.LOG_APPEND_TIME : TimestampTypes.CREATE_TIME;
    const codec = lookupCodecByAttributes(attributes);
    const recordContext = { firstOffset, firstTimestamp, partitionLeaderEpoch, inTransaction, isControlBatch, lastOffsetDelta, producerId, producerEpoch, firstSequence, maxTimestamp, timestampType };
    const ctx = { ...recordContext, magicByte } as RecordContext;
    let records: unknown[];
    if (!codec) {
      const n = decoder.readInt32();
      records = n === -1 ? [] : decodeAll(decoder, ctx, n);
    } else {
      const n = decoder.readInt32();
      if (n <= 0) records = [];
      else {
        const decompressed = await codec.decompress(decoder.readAll());
        records = decodeAll(new Decoder(decompressed), ctx, n);
      }
    }
    return { ...recordContext, records };
  };
  return { stock, fast };
}

/** Records decoded in place and by kafkajs's record decoder (from the first one the fast path leaves), this process. */
const stats = { fast: 0, kafkajs: 0 };

export function fetchDecodeStats(): { fast: number; kafkajs: number } {
  return { ...stats };
}

let decoders: { stock: BatchDecoder; fast: BatchDecoder } | undefined;

function install(): boolean {
  try {
    // Too late once kafkajs's fetch decoding is loaded: it holds the original.
    if (require.cache[require.resolve(DECODE_MESSAGES)]) return false;
    decoders = build();
    const mod = require.cache[require.resolve(BATCH)];
    if (!mod) return false;
    // A module-cache entry is what decodeMessages.js gets from its require(): replacing its exports is the way in.
    mod.exports = decoders.fast;
    return true;
  } catch {
    // A kafkajs with another layout: its own decoding stays (slower, same result).
    return false;
  }
}

const installed = install();

/** Whether kafkajs decodes fetched record batches with this decoder (false: imported too late, or another kafkajs). */
export function fastFetchDecodeInstalled(): boolean {
  return installed && require.cache[require.resolve(BATCH)]?.exports === decoders?.fast;
}

/** kafkajs's own batch decoder and this one (for the tests that compare them). */
export function batchDecoders(): { stock: BatchDecoder; fast: BatchDecoder } {
  decoders ??= build();
  return decoders;
}

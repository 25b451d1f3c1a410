// Test helper: raw Kafka-protocol requests to the bundled broker (one connection, requests answered in order),
// for tests that need exact error codes or requests no client library would send.
import * as net from 'net';
import { Reader, Writer } from '../../broker/protocol';

/** One connection speaking request/response pairs in order. */
export class Conn {
  private buf = Buffer.alloc(0);
  private waiting: { corr: number; resolve: (r: Reader) => void; reject: (e: Error) => void }[] = [];
  private corr = 0;
  /** Resolves when the broker (or we) closed the connection. */
  readonly closed: Promise<void>;
  private constructor(private readonly s: net.Socket) {
    s.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readInt32BE(0)) {
        const size = this.buf.readInt32BE(0);
        const frame = this.buf.subarray(4, 4 + size);
        this.buf = this.buf.subarray(4 + size);
        const w = this.waiting.shift();
        if (!w) continue;
        const r = new Reader(frame);
        const corr = r.int32();
        if (corr === w.corr) w.resolve(r);
        else w.reject(new Error(`response for correlation id ${corr}, expected ${w.corr}`));
      }
    });
    this.closed = new Promise((resolve) =>
      s.on('close', () => {
        for (const w of this.waiting.splice(0)) w.reject(new Error('connection closed before the response'));
        resolve();
      }),
    );
    s.on('error', () => undefined);
  }
  static open(port: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.off('error', reject);
        resolve(new Conn(s));
      });
      s.on('error', reject);
    });
  }
  /** Sends a request; resolves to a Reader positioned after the correlation id. */
  call(apiKey: number, version: number, body: (w: Writer) => void): Promise<Reader> {
    const corr = ++this.corr;
    const w = new Writer().int32(0).int16(apiKey).int16(version).int32(corr).string('raw-test');
    body(w);
    const out = Buffer.from(w.toBuffer());
    out.writeInt32BE(out.length - 4, 0);
    return new Promise((resolve, reject) => {
      this.waiting.push({ corr, resolve, reject });
      this.s.write(out);
    });
  }
  close(): void {
    this.s.destroy();
  }
}

/** Produce v7, acks -1, one partition: that partition's error and base offset. */
export async function produce(c: Conn, topic: string, records: Buffer, partition = 0): Promise<{ error: number; baseOffset: number }> {
  const r = await c.call(0, 7, (w) =>
    w.string(null).int16(-1).int32(5000).array([0], (w2) => w2.string(topic).array([0], (w3) => w3.int32(partition).bytes(records))),
  );
  r.int32(); // topics
  r.string();
  r.int32(); // partitions
  r.int32();
  const error = r.int16();
  const baseOffset = r.int64();
  return { error, baseOffset };
}

export interface FetchedPartition {
  index: number;
  error: number;
  hw: number;
  records: Buffer;
}

/** Fetch v4 of several partitions of one topic, with the request's and each partition's max bytes. */
export async function fetchParts(
  c: Conn,
  topic: string,
  parts: { index: number; offset: number; maxBytes: number }[],
  opts: { maxWaitMs?: number; minBytes?: number; maxBytes?: number } = {},
): Promise<FetchedPartition[]> {
  const r = await c.call(1, 4, (w) =>
    w
      .int32(-1)
      .int32(opts.maxWaitMs ?? 0)
      .int32(opts.minBytes ?? 0)
      .int32(opts.maxBytes ?? 1 << 20)
      .int8(0)
      .array([0], (w2) => w2.string(topic).array(parts, (w3, p) => w3.int32(p.index).int64(p.offset).int32(p.maxBytes))),
  );
  r.int32(); // throttle
  r.int32(); // topics
  r.string();
  return r.array((x) => {
    const index = x.int32();
    const error = x.int16();
    const hw = x.int64();
    x.int64(); // last stable offset
    x.array((y) => [y.int64(), y.int64()]); // aborted transactions
    return { index, error, hw, records: x.nullableBytes() ?? Buffer.alloc(0) };
  });
}

/** Fetch v4 of partition 0 with 1 MiB limits. */
export async function fetch(c: Conn, topic: string, offset: number, maxWaitMs: number, minBytes: number): Promise<FetchedPartition> {
  const [p] = await fetchParts(c, topic, [{ index: 0, offset, maxBytes: 1 << 20 }], { maxWaitMs, minBytes });
  return p;
}

/** CreateTopics v1 of one topic: its error code and message. */
export async function createTopic(c: Conn, name: string, partitions = 1, configs: [string, string][] = []): Promise<{ error: number; message: string | null }> {
  const r = await c.call(19, 1, (w) =>
    w
      .array([name], (w2, n) =>
        w2
          .string(n)
          .int32(partitions)
          .int16(1)
          .int32(0)
          .array(configs, (w3, [k, v]) => w3.string(k).string(v)),
      )
      .int32(1000)
      .bool(false),
  );
  r.int32();
  r.string();
  return { error: r.int16(), message: r.nullableString() };
}

/** Metadata v4 for the given topics (auto-create allowed): per topic its error code and partition count. */
export async function metadata(c: Conn, topics: string[]): Promise<{ name: string; error: number; partitions: number }[]> {
  const r = await c.call(3, 4, (w) => w.array(topics, (w2, t) => w2.string(t)).bool(true));
  r.int32(); // throttle
  r.array((x) => [x.int32(), x.string(), x.int32(), x.nullableString()]); // brokers
  r.nullableString(); // cluster id
  r.int32(); // controller
  return r.array((x) => {
    const error = x.int16();
    const name = x.string();
    x.bool();
    const partitions = x.array((y) => {
      y.int16();
      const id = y.int32();
      y.int32();
      y.array((z) => z.int32());
      y.array((z) => z.int32());
      return id;
    }).length;
    return { name, error, partitions };
  });
}

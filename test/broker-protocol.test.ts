// Scenario, on the raw wire: idempotent-producer dedup and sequence errors, CRC rejection, and Fetch
// honouring max wait and min bytes (woken early by a produce).
import * as net from 'net';
import { BATCH, crc32c } from '../broker/batch';
import { Reader, Writer } from '../broker/protocol';
import { makeBatch } from './helpers/broker-batches';
import { startTestBroker, type InProcessBroker } from './helpers/broker';

let b: InProcessBroker;

/** One connection speaking request/response pairs in order. */
class Conn {
  private buf = Buffer.alloc(0);
  private waiting: ((b: Buffer) => void)[] = [];
  private corr = 0;
  private constructor(private readonly s: net.Socket) {
    s.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readInt32BE(0)) {
        const size = this.buf.readInt32BE(0);
        const frame = this.buf.subarray(4, 4 + size);
        this.buf = this.buf.subarray(4 + size);
        this.waiting.shift()?.(frame);
      }
    });
  }
  static open(port: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new Conn(s)));
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
    this.s.write(out);
    return new Promise((resolve) =>
      this.waiting.push((frame) => {
        const r = new Reader(frame);
        expect(r.int32()).toBe(corr);
        resolve(r);
      }),
    );
  }
  close(): void {
    this.s.destroy();
  }
}

async function produce(c: Conn, topic: string, records: Buffer): Promise<{ error: number; baseOffset: number }> {
  const r = await c.call(0, 7, (w) =>
    w.string(null).int16(-1).int32(5000).array([0], (w2) => w2.string(topic).array([0], (w3) => w3.int32(0).bytes(records))),
  );
  r.int32(); // topics
  r.string();
  r.int32(); // partitions
  r.int32();
  const error = r.int16();
  const baseOffset = r.int64();
  return { error, baseOffset };
}

async function fetch(c: Conn, topic: string, offset: number, maxWaitMs: number, minBytes: number): Promise<{ error: number; hw: number; records: Buffer }> {
  const r = await c.call(1, 4, (w) =>
    w
      .int32(-1)
      .int32(maxWaitMs)
      .int32(minBytes)
      .int32(1 << 20)
      .int8(0)
      .array([0], (w2) => w2.string(topic).array([0], (w3) => w3.int32(0).int64(offset).int32(1 << 20))),
  );
  r.int32(); // throttle
  r.int32();
  r.string();
  r.int32();
  r.int32();
  const error = r.int16();
  const hw = r.int64();
  r.int64();
  r.array((x) => [x.int64(), x.int64()]);
  return { error, hw, records: r.nullableBytes() ?? Buffer.alloc(0) };
}

beforeAll(async () => {
  b = await startTestBroker();
});
afterAll(async () => {
  await b?.stop();
});

async function createTopic(c: Conn, name: string): Promise<void> {
  const r = await c.call(19, 0, (w) => w.array([name], (w2, n) => w2.string(n).int32(1).int16(1).int32(0).int32(0)).int32(1000));
  r.int32();
  r.string();
  expect(r.int16()).toBe(0);
}

test('idempotent producer: a retried batch is acknowledged with its original offset and stored once', async () => {
  const c = await Conn.open(b.port);
  try {
    await createTopic(c, 'raw-idem');
    const init = await c.call(22, 0, (w) => w.string(null).int32(60000));
    init.int32();
    expect(init.int16()).toBe(0);
    const pid = init.int64();
    const epoch = init.int16();
    const first = await produce(c, 'raw-idem', makeBatch({ count: 3, producerId: pid, epoch, seq: 0 }));
    expect(first).toEqual({ error: 0, baseOffset: 0 });
    const retry = await produce(c, 'raw-idem', makeBatch({ count: 3, producerId: pid, epoch, seq: 0 }));
    expect(retry).toEqual({ error: 0, baseOffset: 0 });
    const gap = await produce(c, 'raw-idem', makeBatch({ count: 1, producerId: pid, epoch, seq: 7 }));
    expect(gap.error).toBe(45); // OUT_OF_ORDER_SEQUENCE_NUMBER
    const next = await produce(c, 'raw-idem', makeBatch({ count: 2, producerId: pid, epoch, seq: 3 }));
    expect(next).toEqual({ error: 0, baseOffset: 3 });
    const f = await fetch(c, 'raw-idem', 0, 0, 0);
    expect(f.hw).toBe(5);
  } finally {
    c.close();
  }
});

test('a batch with a bad CRC is rejected with CORRUPT_MESSAGE and not stored; the connection stays up', async () => {
  const c = await Conn.open(b.port);
  try {
    await createTopic(c, 'raw-crc');
    const bad = makeBatch({ count: 2 });
    bad[BATCH.HEADER_SIZE + 1] ^= 0x40;
    expect((await produce(c, 'raw-crc', bad)).error).toBe(2);
    const good = makeBatch({ count: 2 });
    expect(crc32c(good, BATCH.ATTRIBUTES)).toBe(good.readUInt32BE(BATCH.CRC));
    expect(await produce(c, 'raw-crc', good)).toEqual({ error: 0, baseOffset: 0 });
    const f = await fetch(c, 'raw-crc', 0, 0, 0);
    expect(f.hw).toBe(2);
    // Stored as sent: identical bytes apart from the broker-owned baseOffset and partitionLeaderEpoch.
    expect(f.records.subarray(BATCH.MAGIC)).toEqual(good.subarray(BATCH.MAGIC));
  } finally {
    c.close();
  }
});

test('fetch waits up to max wait for min bytes, and a produce wakes it early', async () => {
  const c = await Conn.open(b.port);
  const p = await Conn.open(b.port);
  try {
    await createTopic(c, 'raw-wait');
    let t = Date.now();
    const empty = await fetch(c, 'raw-wait', 0, 400, 1);
    expect(Date.now() - t).toBeGreaterThanOrEqual(380);
    expect(empty.records.length).toBe(0);

    t = Date.now();
    const pending = fetch(c, 'raw-wait', 0, 10_000, 1);
    await new Promise((r) => setTimeout(r, 150));
    await produce(p, 'raw-wait', makeBatch({ count: 4 }));
    const woken = await pending;
    expect(Date.now() - t).toBeLessThan(5000);
    expect(woken.records.length).toBeGreaterThan(0);
    expect(woken.hw).toBe(4);

    // min bytes larger than what is there: waits the full max wait, then returns what there is.
    t = Date.now();
    const partial = await fetch(c, 'raw-wait', 0, 300, 1 << 20);
    expect(Date.now() - t).toBeGreaterThanOrEqual(280);
    expect(partial.records.length).toBe(woken.records.length);
    // Out of range offsets are an error, not a hang.
    expect((await fetch(c, 'raw-wait', 99, 1000, 1)).error).toBe(1);
  } finally {
    c.close();
    p.close();
  }
});

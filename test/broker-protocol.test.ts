// Scenario, on the raw wire: idempotent-producer dedup and sequence errors, CRC rejection, and Fetch
// honouring max wait and min bytes (woken early by a produce).
import { BATCH, crc32c } from '../broker/batch';
import { makeBatch } from './helpers/broker-batches';
import { Conn, createTopic as createTopicRaw, fetch, produce } from './helpers/broker-wire';
import { startTestBroker, type InProcessBroker } from './helpers/broker';

let b: InProcessBroker;

beforeAll(async () => {
  b = await startTestBroker();
});
afterAll(async () => {
  await b?.stop();
});

async function createTopic(c: Conn, name: string): Promise<void> {
  expect((await createTopicRaw(c, name)).error).toBe(0);
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

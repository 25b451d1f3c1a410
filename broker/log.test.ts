// Unit tests: the partition segment log — offsets, index lookups across segments, crash recovery, retention.
import * as fs from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { BATCH, splitBatches, type BatchInfo } from './batch';
import { makeBatch } from '../test/helpers/broker-batches';
import { PartitionLog, type LogConfig } from './log';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(join(tmpdir(), 'nettally-log-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const cfg: LogConfig = { segmentBytes: 4096, indexIntervalBytes: 256, fsync: 'never' };

function append(log: PartitionLog, b: Buffer): number {
  const infos = splitBatches(b) as BatchInfo[];
  return log.append(b, infos);
}

function offsetsIn(buf: Buffer): number[] {
  return (splitBatches(buf) as BatchInfo[]).map((b) => b.baseOffset);
}

test('assigns dense offsets, rolls segments, and finds any offset through the index', () => {
  const log = PartitionLog.open(dir, cfg);
  const bases: number[] = [];
  for (let i = 0; i < 200; i++) bases.push(append(log, makeBatch({ count: (i % 3) + 1, payload: Buffer.alloc(40 + (i % 50), i) })));
  const expectedBases = bases.reduce<number[]>((acc, _, i) => (acc.push(i === 0 ? 0 : acc[i - 1] + ((i - 1) % 3) + 1), acc), []);
  expect(bases).toEqual(expectedBases);
  expect(log.segmentCount).toBeGreaterThan(3);
  const end = log.nextOffset;
  for (let off = 0; off < end; off += 7) {
    const data = log.read(off, 1) as Buffer;
    const b = (splitBatches(data) as BatchInfo[])[0];
    // The first batch returned contains the offset, even when maxBytes is smaller than it.
    expect(b.baseOffset <= off && off <= b.baseOffset + b.lastOffsetDelta).toBe(true);
    expect(data.length).toBe(b.size);
  }
  expect(log.read(end, 1000)?.length).toBe(0);
  expect(log.read(end + 1, 1000)).toBeNull();
  // maxBytes limits to whole batches.
  const chunk = log.read(0, 1000) as Buffer;
  expect(chunk.length).toBeLessThanOrEqual(1000);
  expect(offsetsIn(chunk)[0]).toBe(0);
  log.close();

  const again = PartitionLog.open(dir, cfg);
  expect(again.nextOffset).toBe(end);
  expect(offsetsIn(again.read(100, 10) as Buffer)[0]).toBeLessThanOrEqual(100);
  again.close();
});

test('recovery truncates a torn or corrupt tail and keeps everything before it', () => {
  const log = PartitionLog.open(dir, { ...cfg, segmentBytes: 1 << 20 });
  for (let i = 0; i < 10; i++) append(log, makeBatch({ count: 2 }));
  const good = log.nextOffset;
  log.close();
  const seg = join(dir, '00000000000000000000.log');
  const size = fs.statSync(seg).size;
  // A half-written batch at the end (crash mid-write).
  fs.appendFileSync(seg, makeBatch({ count: 5 }).subarray(0, 30));
  const truncations: number[][] = [];
  const r1 = PartitionLog.open(dir, cfg, (_f, from, to) => truncations.push([from, to]));
  expect(r1.nextOffset).toBe(good);
  expect(truncations).toEqual([[size + 30, size]]);
  r1.close();
  // A complete-length batch whose bytes are corrupt.
  const bad = makeBatch({ count: 5 });
  bad[BATCH.HEADER_SIZE] ^= 1;
  fs.appendFileSync(seg, bad);
  const r2 = PartitionLog.open(dir, cfg);
  expect(r2.nextOffset).toBe(good);
  expect(fs.statSync(seg).size).toBe(size);
  expect(append(r2, makeBatch())).toBe(good);
  r2.close();
});

test('idempotent producer state: duplicates, gaps and fencing, also after reopening', () => {
  const log = PartitionLog.open(dir, cfg);
  const b0 = makeBatch({ count: 3, producerId: 77, epoch: 0, seq: 0 });
  const i0 = (splitBatches(b0) as BatchInfo[])[0];
  expect(log.checkSequence(i0)).toEqual({ kind: 'ok' });
  log.append(b0, [i0]);
  expect(log.checkSequence(i0)).toEqual({ kind: 'duplicate', baseOffset: 0 });
  const gap = (splitBatches(makeBatch({ producerId: 77, epoch: 0, seq: 5 })) as BatchInfo[])[0];
  expect(log.checkSequence(gap).kind).toBe('out-of-order');
  const next = (splitBatches(makeBatch({ producerId: 77, epoch: 0, seq: 3 })) as BatchInfo[])[0];
  expect(log.checkSequence(next).kind).toBe('ok');
  log.close();
  const reopened = PartitionLog.open(dir, cfg);
  expect(reopened.checkSequence(i0)).toEqual({ kind: 'duplicate', baseOffset: 0 });
  expect(reopened.checkSequence(next).kind).toBe('ok');
  const stale = (splitBatches(makeBatch({ producerId: 77, epoch: -2, seq: 3 })) as BatchInfo[])[0];
  expect(reopened.checkSequence(stale).kind).toBe('fenced');
  reopened.close();
});

test('retention deletes whole old segments by size and by age, never the data still needed', () => {
  const log = PartitionLog.open(dir, { ...cfg, segmentBytes: 1024 });
  for (let i = 0; i < 100; i++) append(log, makeBatch({ payload: Buffer.alloc(100) }));
  const segs = log.segmentCount;
  const size = log.sizeBytes;
  expect(log.applyRetention(Date.now(), -1, -1)).toBe(0);
  const deleted = log.applyRetention(Date.now(), -1, 3000);
  expect(deleted).toBeGreaterThan(0);
  expect(log.segmentCount).toBe(segs - deleted);
  expect(log.sizeBytes).toBeGreaterThanOrEqual(3000);
  expect(log.sizeBytes).toBeLessThan(size);
  expect(log.startOffset).toBeGreaterThan(0);
  expect(log.read(0, 100)).toBeNull();
  expect(offsetsIn(log.read(log.startOffset, 100) as Buffer)[0]).toBe(log.startOffset);
  // Everything older than the limit goes, including the active segment's data (rolled first).
  const end = log.nextOffset;
  log.applyRetention(Date.now() + 60_000, 1000, -1);
  expect(log.segmentCount).toBe(1);
  expect(log.startOffset).toBe(end);
  expect(append(log, makeBatch())).toBe(end);
  log.close();
  const files = fs.readdirSync(dir).sort();
  expect(files).toEqual([`${String(end).padStart(20, '0')}.index`, `${String(end).padStart(20, '0')}.log`]);
});

test('closed segments are opened on demand: few descriptors however many segments', () => {
  const fdCount = (): number => fs.readdirSync('/proc/self/fd').length;
  const before = fdCount();
  const log = PartitionLog.open(dir, { ...cfg, segmentBytes: 1024 });
  for (let i = 0; i < 300; i++) append(log, makeBatch({ payload: Buffer.alloc(200, i & 0xff) }));
  expect(log.segmentCount).toBeGreaterThan(50);
  // Read every offset, jumping across all segments.
  for (let off = 0; off < log.nextOffset; off += 1) {
    const data = log.read(off, 1) as Buffer;
    // Its records carry the payload as a value: 150 bytes of the batch number (the value is a few bytes shorter than 200).
    expect(data.subarray(BATCH.HEADER_SIZE).includes(Buffer.alloc(150, off & 0xff))).toBe(true);
  }
  expect(fdCount() - before).toBeLessThanOrEqual(2 + 4 + 1);
  log.close();
  const again = PartitionLog.open(dir, { ...cfg, segmentBytes: 1024 });
  expect(fdCount() - before).toBeLessThanOrEqual(2);
  expect((again.read(5, 1) as Buffer).subarray(BATCH.HEADER_SIZE).includes(Buffer.alloc(150, 5))).toBe(true);
  again.close();
  expect(fdCount()).toBe(before);
});

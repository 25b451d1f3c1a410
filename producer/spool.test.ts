// Unit tests of the on-disk spool: order, bounds, acknowledgement, restart, torn tails and SIGKILL mid-write.
import { spawn } from 'child_process';
import { appendFileSync, chmodSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, readFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { silentLogger, type Logger } from '../lib/log';
import { Spool, SpoolEntry } from './spool';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'nettally-spool-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const entry = (i: number, size = 50): SpoolEntry => ({ key: Buffer.from('host-a'), value: Buffer.concat([Buffer.from(`${i}:`), Buffer.alloc(size, i % 251)]) });
const ids = (es: SpoolEntry[]): number[] => es.map((e) => Number(e.value.toString('latin1').split(':')[0]));

function drainAll(s: Spool, perBatch = 7): number[] {
  const out: number[] = [];
  for (;;) {
    const b = s.peek(perBatch, 1 << 20);
    if (b.entries.length === 0) return out;
    out.push(...ids(b.entries));
    s.ack(b);
  }
}

describe('Spool', () => {
  it('keeps order across segments, counts records and bytes, and frees acknowledged segments', () => {
    const dir = tempDir();
    const s = Spool.open({ dir, maxBytes: 1 << 20, segmentBytes: 1000 });
    const all = Array.from({ length: 100 }, (_, i) => entry(i));
    for (let i = 0; i < 100; i += 10) expect(s.append(all.slice(i, i + 10))).toBe(true);
    expect(s.records).toBe(100);
    expect(s.bytes).toBe(Spool.sizeOf(all));
    expect(readdirSync(dir).filter((f) => f.endsWith('.seg')).length).toBeGreaterThan(3);
    const first = s.peek(30, 1 << 20);
    expect(ids(first.entries)).toEqual(Array.from({ length: 30 }, (_, i) => i));
    // Not acknowledged: the same entries again.
    expect(ids(s.peek(30, 1 << 20).entries)).toEqual(ids(first.entries));
    s.ack(first);
    expect(s.records).toBe(70);
    expect(drainAll(s)).toEqual(Array.from({ length: 70 }, (_, i) => i + 30));
    expect(s.records).toBe(0);
    expect(s.bytes).toBe(0);
    expect(readdirSync(dir).filter((f) => f.endsWith('.seg')).length).toBe(1);
    s.close();
  });

  it('refuses appends beyond maxBytes until acknowledged entries free room', () => {
    const s = Spool.open({ dir: tempDir(), maxBytes: 1000, fsync: 'never' });
    let n = 0;
    while (s.append([entry(n)])) n++;
    expect(n).toBe(Math.floor(1000 / Spool.sizeOf([entry(0)])));
    expect(s.bytes).toBeLessThanOrEqual(1000);
    s.ack(s.peek(2, 1 << 20));
    expect(s.append([entry(n)])).toBe(true);
    expect(drainAll(s)).toEqual(Array.from({ length: n - 1 }, (_, i) => i + 2));
    expect(() => s.append([entry(0, 2000)])).toThrow(/never fit/);
    s.close();
  });

  it('replays only unacknowledged entries after a restart', () => {
    const dir = tempDir();
    const a = Spool.open({ dir, maxBytes: 1 << 20, segmentBytes: 500 });
    a.append(Array.from({ length: 40 }, (_, i) => entry(i)));
    a.ack(a.peek(15, 1 << 20));
    a.close();
    const b = Spool.open({ dir, maxBytes: 1 << 20, segmentBytes: 500 });
    expect(b.records).toBe(25);
    b.append([entry(40)]);
    expect(drainAll(b)).toEqual(Array.from({ length: 26 }, (_, i) => i + 15));
    b.close();
  });

  it('cuts a torn tail and a corrupt frame, keeping every whole frame before it', () => {
    const dir = tempDir();
    const a = Spool.open({ dir, maxBytes: 1 << 20 });
    a.append(Array.from({ length: 10 }, (_, i) => entry(i)));
    a.close();
    const seg = join(dir, readdirSync(dir).find((f) => f.endsWith('.seg')) as string);
    const good = statSync(seg).size;
    appendFileSync(seg, Buffer.from([200, 0, 0, 0, 1, 2, 3])); // a frame header promising 200 bytes, cut short
    const b = Spool.open({ dir, maxBytes: 1 << 20 });
    expect(b.recoveredTornBytes).toBe(7);
    expect(statSync(seg).size).toBe(good);
    b.append([entry(10)]);
    b.close();
    // Flip one payload byte of frame 5: frames 5.. are cut (a CRC cannot tell where the damage ends).
    const buf = readFileSync(seg);
    const frame = Spool.sizeOf([entry(0)]);
    buf[5 * frame + 20] ^= 0xff;
    writeFileSync(seg, buf);
    const c = Spool.open({ dir, maxBytes: 1 << 20 });
    expect(drainAll(c)).toEqual([0, 1, 2, 3, 4]);
    c.close();
  });

  it('reports durability per fsync policy', async () => {
    for (const fsync of ['always', 'interval', 'never'] as const) {
      const s = Spool.open({ dir: tempDir(), maxBytes: 1 << 20, fsync, fsyncIntervalMs: 20 });
      s.append([entry(1)]);
      let durable = false;
      const p = s.whenDurable().then(() => (durable = true));
      if (fsync === 'never') {
        await p;
      } else {
        // Never before the fsync (it runs on the thread pool or the timer), always soon after.
        expect(durable).toBe(false);
        await p;
      }
      expect(durable).toBe(true);
      s.append([entry(2)]);
      s.close(); // close() fsyncs what is pending and releases every waiter
      await s.whenDurable();
    }
  });

  it('loses no completed append when the writer is SIGKILLed mid-stream', async () => {
    const dir = tempDir();
    // The child loads the TypeScript source through a transpile-only require hook (no build needed).
    const script = `
      const fs = require('fs'), ts = require('typescript');
      require.extensions['.ts'] = (m, f) => m._compile(ts.transpileModule(fs.readFileSync(f, 'utf8'),
        { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } }).outputText, f);
      const { Spool } = require(${JSON.stringify(join(__dirname, 'spool.ts'))});
      const s = Spool.open({ dir: process.argv[1], maxBytes: 1 << 30, segmentBytes: 65536, fsync: 'never' });
      let i = 0;
      for (;;) {
        const batch = [];
        for (let j = 0; j < 20; j++, i++) batch.push({ key: Buffer.from('k'), value: Buffer.from(i + ':' + 'x'.repeat(i % 300)) });
        s.append(batch);
        if (i % 2000 === 0) process.stdout.write(i + '\\n');
      }`;
    const child = spawn(process.execPath, ['-e', script, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => {
      let seen = 0;
      child.stdout.on('data', (d: Buffer) => {
        seen += d.toString().split('\n').filter(Boolean).length;
        if (seen >= 5) resolve();
      });
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    const s = Spool.open({ dir, maxBytes: 1 << 30 });
    const got = drainAll(s, 5000);
    expect(got.length).toBeGreaterThanOrEqual(10_000);
    expect(got).toEqual(Array.from({ length: got.length }, (_, i) => i));
    s.close();
  });

  it('peek with a size check ends the batch before the first entry that does not fit, but always returns one', () => {
    const s = Spool.open({ dir: tempDir(), maxBytes: 1 << 20, segmentBytes: 700 });
    const all = Array.from({ length: 40 }, (_, i) => entry(i, i === 10 ? 5000 : 50));
    for (const e of all) s.append([e]);
    const budget = (limit: number) => {
      let used = 0;
      return (e: SpoolEntry): boolean => (used + e.value.length <= limit ? ((used += e.value.length), true) : false);
    };
    const got: number[][] = [];
    for (;;) {
      const b = s.peek(1000, 1 << 20, budget(300));
      if (b.entries.length === 0) break;
      got.push(ids(b.entries));
      s.ack(b);
    }
    // In order, nothing twice, nothing lost; every batch within the budget except the big entry, alone.
    expect(got.flat()).toEqual(all.map((_, i) => i));
    expect(got.find((g) => g.includes(10))).toEqual([10]);
    for (const g of got.filter((x) => !x.includes(10))) expect(g.length).toBeLessThanOrEqual(5);
    expect(s.records).toBe(0);
    expect(s.bytes).toBe(0);
    s.close();
  });

  it('creates its directory 0700 and files 0600, and tightens an existing spool made with a loose umask', () => {
    const old = process.umask(0o022);
    try {
      const parent = tempDir();
      const dir = join(parent, 'spool');
      const s = Spool.open({ dir, maxBytes: 1 << 20, segmentBytes: 200 });
      for (let i = 0; i < 10; i++) s.append([entry(i)]);
      s.ack(s.peek(3, 1 << 20));
      s.close();
      const mode = (p: string): number => statSync(p).mode & 0o777;
      expect(mode(dir)).toBe(0o700);
      const files = readdirSync(dir);
      expect(files).toContain('head');
      for (const f of files) expect([f, mode(join(dir, f))]).toEqual([f, 0o600]);
      // An older version's spool: world-readable dir and segments.
      chmodSync(dir, 0o755);
      for (const f of files) chmodSync(join(dir, f), 0o644);
      const warnings: Array<{ obj: { fixed?: string[] }; msg: string }> = [];
      const logger = { ...silentLogger, warn: (obj: object, msg: string) => warnings.push({ obj, msg }) } as unknown as Logger;
      const again = Spool.open({ dir, maxBytes: 1 << 20, segmentBytes: 200, logger });
      expect(again.records).toBe(7);
      again.close();
      expect(mode(dir)).toBe(0o700);
      for (const f of readdirSync(dir)) expect([f, mode(join(dir, f))]).toEqual([f, 0o600]);
      expect(warnings).toHaveLength(1);
      expect(warnings[0].msg).toMatch(/readable by other users/);
      expect(warnings[0].obj.fixed).toEqual(expect.arrayContaining([expect.stringContaining(`${dir} (was 0755)`)]));
    } finally {
      process.umask(old);
    }
  });
});

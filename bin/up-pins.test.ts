// The marker up leaves beside its data: which pins are stale (their up is gone, or its pid was reused), which are
// someone else's, and when another up still runs. A temp dir stands in for bpffs: the logic only sees paths.
import { spawnSync } from 'child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import pino from 'pino';
import { Writable } from 'stream';
import { bootId, claimPins, MARKER_FILE, processStartTicks, type UpMarker } from './up-pins';

let root: string;
let bpffs: string;
let dataDir: string;
let lines: Array<Record<string, unknown>>;
const logger = pino(
  { level: 'info' },
  new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      cb();
    },
  }),
);

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'nettally-up-pins-'));
  bpffs = join(root, 'bpf');
  dataDir = join(root, 'data');
  mkdirSync(bpffs);
  mkdirSync(dataDir);
  lines = [];
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

/** A pid that existed and is gone: a child that already exited (pids are not reused that quickly). */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

function pins(name: string): string {
  const dir = join(bpffs, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'conns'), '');
  return dir;
}

function leaveMarker(m: Partial<UpMarker>): void {
  const full: UpMarker = { pid: deadPid(), start_ticks: 1, boot_id: bootId(), pin_dir: join(bpffs, 'nettally-up'), owns_pin_dir: true, started_at: '2026-01-01T00:00:00.000Z', ...m };
  writeFileSync(join(dataDir, MARKER_FILE), JSON.stringify(full));
}

const marker = (): UpMarker => JSON.parse(readFileSync(join(dataDir, MARKER_FILE), 'utf8')) as UpMarker;
const said = (level: number, text: string): boolean => lines.some((l) => l.level === level && String(l.msg).includes(text));

test('no marker, no pins: up owns the pin dir; its marker names it, its pid and start time; release removes it', () => {
  const claim = claimPins(dataDir, join(bpffs, 'nettally-up'), logger, bpffs);
  expect(claim.ownsPinDir).toBe(true);
  expect(marker()).toMatchObject({ pid: process.pid, start_ticks: processStartTicks(process.pid), boot_id: bootId(), pin_dir: join(bpffs, 'nettally-up'), owns_pin_dir: true });
  expect(lines).toEqual([]);
  claim.release();
  expect(existsSync(join(dataDir, MARKER_FILE))).toBe(false);
});

test('a marker whose up is dead: its pins are stale, removed with a warning naming them and the pid', () => {
  const dir = pins('nettally-up');
  const pid = deadPid();
  leaveMarker({ pid, pin_dir: dir });
  const claim = claimPins(dataDir, dir, logger, bpffs);
  expect(existsSync(dir)).toBe(false);
  expect(claim.ownsPinDir).toBe(true);
  expect(lines).toEqual([expect.objectContaining({ level: 40, pin_dir: dir, pid, msg: expect.stringContaining(`removed stale pins at ${dir}`) })]);
  expect(marker().pid).toBe(process.pid);
});

test('a marker whose pid now belongs to another process (other start time) is stale too', () => {
  const dir = pins('nettally-up');
  leaveMarker({ pid: process.pid, start_ticks: (processStartTicks(process.pid) as number) - 1, pin_dir: dir });
  expect(claimPins(dataDir, dir, logger, bpffs).ownsPinDir).toBe(true);
  expect(existsSync(dir)).toBe(false);
});

test('stale pins in another pin dir than this run uses are removed; this run then owns only its own', () => {
  const old = pins('old');
  const now = pins('now');
  leaveMarker({ pin_dir: old });
  const claim = claimPins(dataDir, now, logger, bpffs);
  expect(existsSync(old)).toBe(false);
  expect(existsSync(now)).toBe(true);
  expect(claim.ownsPinDir).toBe(false);
  expect(said(40, `the pin dir ${now} exists and no earlier nettally up`)).toBe(true);
});

test('pins without a marker are kept, up continues on them with a warning, and its marker says it does not own them', () => {
  const dir = pins('nettally-up');
  const claim = claimPins(dataDir, dir, logger, bpffs);
  expect(claim.ownsPinDir).toBe(false);
  expect(existsSync(join(dir, 'conns'))).toBe(true);
  expect(lines).toEqual([expect.objectContaining({ level: 40, pin_dir: dir, msg: expect.stringContaining('the producer continues on the counters pinned there') })]);
  expect(marker().owns_pin_dir).toBe(false);
});

test('a marker of a running up: refused, naming the pid and the data dir; nothing removed, its marker kept', () => {
  const dir = pins('nettally-up');
  leaveMarker({ pid: process.pid, start_ticks: processStartTicks(process.pid), pin_dir: dir, started_at: 'then' });
  const before = readFileSync(join(dataDir, MARKER_FILE), 'utf8');
  expect(() => claimPins(dataDir, dir, logger, bpffs)).toThrow(new RegExp(`--data-dir.*another nettally up \\(pid ${process.pid}, started then\\) is running on ${dataDir}`));
  expect(existsSync(join(dir, 'conns'))).toBe(true);
  expect(readFileSync(join(dataDir, MARKER_FILE), 'utf8')).toBe(before);
});

test('markers that prove nothing remove nothing: other boot, did not own its dir, garbage, a path outside bpffs', () => {
  const dir = pins('nettally-up');
  const outside = join(root, 'precious');
  mkdirSync(outside);
  for (const [m, level, text] of [
    [{ boot_id: 'another-boot', pin_dir: dir }, 30, 'from an earlier boot'],
    [{ owns_pin_dir: false, pin_dir: dir }, 30, 'it left no pins'],
    [{ pin_dir: outside }, 40, 'is not under'],
    [{ pin_dir: `${bpffs}/../precious` }, 40, 'is not under'],
    ['{"pid": "x"', 40, 'not a marker of nettally up'],
  ] as const) {
    lines = [];
    if (typeof m === 'string') writeFileSync(join(dataDir, MARKER_FILE), m);
    else leaveMarker(m);
    const claim = claimPins(dataDir, dir, logger, bpffs);
    expect({ m, ok: existsSync(join(dir, 'conns')) && existsSync(outside), owns: claim.ownsPinDir }).toEqual({ m, ok: true, owns: false });
    expect({ m, said: said(level, text) }).toEqual({ m, said: true });
    claim.release();
  }
});

test('release leaves a marker that another process wrote since', () => {
  const claim = claimPins(dataDir, join(bpffs, 'nettally-up'), logger, bpffs);
  leaveMarker({});
  claim.release();
  expect(existsSync(join(dataDir, MARKER_FILE))).toBe(true);
});

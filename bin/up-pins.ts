// Which pins did an earlier `nettally up` leave? While up runs it keeps a marker in its data dir: its pid, that
// process's start time and the boot it ran in, and the pin directory it created. bpffs holds only pinned objects,
// so the marker cannot sit beside the pins. A clean exit removes pins and marker; one that cannot clean (SIGKILL, the
// OOM killer, a forced second Ctrl-C) leaves both, and the next up on that data dir finds them: a marker whose
// process is gone (or whose pid now belongs to another process) names pins nobody uses any more.
import { existsSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'fs';
import { join } from 'path';
import { configError } from '../lib/errors';
import type { Logger } from '../lib/log';

export const MARKER_FILE = 'up.run.json';

export interface UpMarker {
  pid: number;
  /** Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid from ours. */
  start_ticks: number;
  boot_id: string;
  pin_dir: string;
  /** up created pin_dir (it did not exist, or held stale pins of an earlier up) and removes it on exit. */
  owns_pin_dir: boolean;
  started_at: string;
}

export function bootId(): string {
  return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}

/** Start time of a live process in clock ticks since boot, or undefined when there is no such process. */
export function processStartTicks(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and parentheses: fields are counted after its closing parenthesis.
  const after = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(after[22 - 3]);
  return Number.isFinite(ticks) ? ticks : undefined;
}

/** The only pin dirs up ever removes: under bpffs, no `..` (a marker is a file on disk, so it is checked too). */
export function isPinDirPath(path: string, bpffs: string): boolean {
  return path.startsWith(`${bpffs}/`) && !path.split('/').includes('..');
}

function readMarker(path: string): UpMarker | string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    return (e as Error).message;
  }
  try {
    const m = JSON.parse(text) as Partial<UpMarker>;
    if (typeof m.pid === 'number' && typeof m.start_ticks === 'number' && typeof m.boot_id === 'string' && typeof m.pin_dir === 'string' && typeof m.owns_pin_dir === 'boolean') return m as UpMarker;
  } catch {
    // reported below like any other content that is not a marker
  }
  return `not a marker of nettally up: ${JSON.stringify(text.slice(0, 200))}`;
}

export interface PinClaim {
  /** up removes pinDir on exit: it did not exist, or an earlier up's stale pins were there. */
  ownsPinDir: boolean;
  /** Removes the marker (call once pinDir is gone, or was never ours); a marker that is not this process's stays. */
  release(): void;
}

/**
 * Judges the marker an earlier up left in dataDir, removes that up's stale pins, and writes this process's marker
 * for pinDir. Throws when the marker names an up that is still running (two on one data dir would fight over the
 * ports and pins). Pins without a marker are not up's: it keeps them, and the producer continues on them.
 */
export function claimPins(dataDir: string, pinDir: string, logger: Logger, bpffs = '/sys/fs/bpf'): PinClaim {
  const path = join(dataDir, MARKER_FILE);
  const boot = bootId();
  let staleOwned = false;
  if (existsSync(path)) {
    const m = readMarker(path);
    if (typeof m === 'string') {
      logger.warn({ marker: path, err: m }, `ignoring ${path}: ${m}; no pins are removed because of it`);
    } else if (m.boot_id !== boot) {
      logger.info({ marker: path, pid: m.pid, pin_dir: m.pin_dir }, `the marker of an up from an earlier boot: its pins went with that boot`);
    } else if (processStartTicks(m.pid) === m.start_ticks) {
      throw configError('--data-dir (env NETTALLY_DATA_DIR)', `another nettally up (pid ${m.pid}, started ${m.started_at}) is running on ${dataDir}; stop it first, or give this one another --data-dir`, { pid: m.pid });
    } else if (!m.owns_pin_dir || !existsSync(m.pin_dir)) {
      logger.info({ marker: path, pid: m.pid, pin_dir: m.pin_dir }, `an earlier nettally up (pid ${m.pid}) ended without cleaning up; it left no pins`);
    } else if (!isPinDirPath(m.pin_dir, bpffs)) {
      logger.warn({ marker: path, pin_dir: m.pin_dir }, `ignoring ${path}: its pin dir ${JSON.stringify(m.pin_dir)} is not under ${bpffs}/; nothing removed`);
    } else {
      // When its up died the old producer got SIGTERM (pdeathsig) and put its final counters into the spool, which
      // the next producer replays: the pins hold nothing unshipped. Only a producer killed outright (a forced exit,
      // the OOM killer) leaves bytes in them that were counted after its last flush; those are lost here.
      try {
        rmSync(m.pin_dir, { recursive: true, force: true });
        logger.warn({ pin_dir: m.pin_dir, pid: m.pid, started_at: m.started_at }, `removed stale pins at ${m.pin_dir}: an earlier nettally up (pid ${m.pid}, started ${m.started_at}) created them and ended without cleaning up`);
      } catch (e) {
        logger.error({ pin_dir: m.pin_dir, err: (e as Error).message }, `could not remove the stale pins at ${m.pin_dir} of an earlier nettally up; up removes them on exit`);
      }
      staleOwned = m.pin_dir === pinDir;
    }
  }
  const ownsPinDir = staleOwned || !existsSync(pinDir);
  if (!ownsPinDir) {
    logger.warn(
      { pin_dir: pinDir },
      `the pin dir ${pinDir} exists and no earlier nettally up on this data dir created it: the producer continues on the counters pinned there, and up leaves the dir in place on exit (remove it while no producer runs to start from zero)`,
    );
  }
  const start = processStartTicks(process.pid);
  if (start === undefined) throw new Error(`cannot read /proc/${process.pid}/stat`);
  const marker: UpMarker = { pid: process.pid, start_ticks: start, boot_id: boot, pin_dir: pinDir, owns_pin_dir: ownsPinDir, started_at: new Date().toISOString() };
  // Written whole (temp file + rename) before the producer may create the pins: a crash never leaves pins unnamed.
  writeFileSync(`${path}.tmp`, JSON.stringify(marker) + '\n', { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
  return {
    ownsPinDir,
    release() {
      const now = readMarker(path);
      if (typeof now !== 'string' && now.pid === process.pid && now.start_ticks === start) unlinkSync(path);
    },
  };
}

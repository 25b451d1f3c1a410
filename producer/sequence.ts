// (epoch, seq) for every record: the epoch grows on each producer start (persisted in the state dir), seq counts within it.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'fs';
import { dirname, join } from 'path';
import { NettallyError } from '../lib/errors';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE } from '../lib/private-files';

/** Writes a small file so that after a crash it holds either the old or the new content, never a mix. */
function writeFileAtomic(path: string, content: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', PRIVATE_FILE_MODE);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dfd = openSync(dirname(path), 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/**
 * Claims the next epoch for this host: max(last stored + 1, Unix seconds now). The clock floor keeps epochs
 * increasing even if the state dir is lost (a consumer would otherwise drop the new epoch's records as
 * duplicates of the old one's). The new value is durable before it is used.
 */
export function claimEpoch(stateDir: string, nowMs = Date.now()): number {
  mkdirSync(stateDir, { recursive: true, mode: PRIVATE_DIR_MODE });
  const path = join(stateDir, 'epoch');
  let last = 0;
  try {
    const text = readFileSync(path, 'utf8').trim();
    last = Number(text);
    if (!Number.isSafeInteger(last) || last < 0) {
      throw new NettallyError('CONFIG_INVALID', `state file ${path} is corrupt (${JSON.stringify(text.slice(0, 40))}); remove it to start a new epoch`, {
        context: { setting: '--state-dir' },
      });
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const epoch = Math.max(last + 1, Math.floor(nowMs / 1000));
  writeFileAtomic(path, `${epoch}\n`);
  return epoch;
}

/** Strictly increasing seq within one epoch, starting at 1. */
export class Sequencer {
  private last = 0;
  constructor(readonly epoch: number) {}
  next(): number {
    this.last += 1;
    return this.last;
  }
  get current(): number {
    return this.last;
  }
}

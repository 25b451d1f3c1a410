// Files only the service user may read: the producer's spool and state hold connection metadata (addresses, ports,
// process names, cgroups) of every process on the host, which other local users must not see.
import { chmodSync, lstatSync, mkdirSync, readdirSync, statSync } from 'fs';
import { join } from 'path';

export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

interface Warner {
  warn(obj: object, msg: string): void;
}

/**
 * Creates `dir` (and missing parents) 0700, or tightens an existing one to 0700 and the regular files directly in
 * it to 0600 (a spool made by an older version with the default umask), warning once about what it changed.
 * Returns the paths it changed.
 */
export function ensurePrivateDir(dir: string, logger: Warner): string[] {
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  const fixed: string[] = [];
  const tighten = (path: string, mode: number): void => {
    const st = lstatSync(path);
    if ((st.mode & 0o077) !== 0) {
      chmodSync(path, st.mode & mode & 0o7777);
      fixed.push(`${path} (was ${(st.mode & 0o777).toString(8).padStart(4, '0')})`);
    }
  };
  tighten(dir, PRIVATE_DIR_MODE | 0o7000);
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (lstatSync(path).isFile()) tighten(path, PRIVATE_FILE_MODE);
  }
  if (fixed.length > 0) {
    logger.warn(
      { dir, fixed },
      `${dir} or files in it were readable by other users; set to 0700 (directory) / 0600 (files): they hold every connection's metadata`,
    );
  }
  return fixed;
}

/**
 * A warning for a secret file that group or others may read (or undefined when it is private): names the file and
 * the fix.
 */
export function secretFileWarning(path: string, setting: string): string | undefined {
  let mode: number;
  try {
    mode = statSync(path).mode;
  } catch {
    return undefined; // reading it fails loudly elsewhere
  }
  if ((mode & 0o077) === 0) return undefined;
  return `secret file ${path} (${setting}) is readable by ${mode & 0o070 ? 'its group' : ''}${mode & 0o070 && mode & 0o007 ? ' and ' : ''}${mode & 0o007 ? 'all users' : ''} (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); make it private: chmod 600 ${path}`;
}

// The workload rule file (cgroup-path and netns globs → names, first match wins) and the one function that makes a
// workload name out of hostile input (cgroup, netns and container names are chosen by whoever creates them).
import { createHash } from 'crypto';
import { readFileSync } from 'fs';
import { NettallyError } from '../lib/errors';
import { escapeControls } from '../lib/text';

/**
 * Longest workload name, in UTF-8 bytes. A Kubernetes `namespace/pod` is at most 63 + 1 + 253 bytes; longer names
 * (a netns or cgroup name anyone can make) are cut and end in a hash of the whole name, so two long names stay two.
 */
export const WORKLOAD_MAX_BYTES = 320;

export interface WorkloadRule {
  /** 1-based line in the file, which is also the rule's priority (lower wins). */
  line: number;
  kind: 'cgroup' | 'netns';
  glob: string;
  re: RegExp;
  name: string;
}

// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** Cuts `s` to at most `max` UTF-8 bytes without splitting a character. */
function cutUtf8(s: string, max: number): string {
  let bytes = 0;
  let i = 0;
  for (const ch of s) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > max) break;
    bytes += n;
    i += ch.length;
  }
  return s.slice(0, i);
}

/**
 * A workload name from untrusted text: valid UTF-8 (lone surrogates → U+FFFD), control characters as `\xHH` (so a
 * name can neither end a line nor drive the terminal that shows it), at most WORKLOAD_MAX_BYTES, never empty.
 */
export function workloadName(raw: string): string {
  let s = escapeControls(raw.replace(LONE_SURROGATE, '\ufffd'));
  if (s === '') return '(empty)';
  if (Buffer.byteLength(s) > WORKLOAD_MAX_BYTES) {
    const hash = createHash('sha256').update(raw).digest('hex').slice(0, 12);
    s = `${cutUtf8(s, WORKLOAD_MAX_BYTES - 14)}~${hash}`;
  }
  return s;
}

/**
 * A glob as an anchored RegExp: `*` is any run of characters but `/`, `**` any run including `/`, `?` one character
 * but `/`; everything else is literal.
 */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

function ruleError(file: string, line: number, problem: string): NettallyError {
  return new NettallyError('CONFIG_INVALID', `workload rules ${file}:${line}: ${problem}`, { context: { setting: '--workload-rules (env NETTALLY_WORKLOAD_RULES)', file, line } });
}

/**
 * Parses a rule file. One rule a line: `<cgroup|netns> <glob> <name>` (fields separated by spaces or tabs; the name
 * is the rest of the line). `#` starts a comment line; blank lines are ignored. A cgroup glob matches the process's
 * cgroup path (as in /proc/<pid>/cgroup, so it starts with `/`); a netns glob matches the namespace's `ip netns`
 * name or its inode number. Throws CONFIG_INVALID naming file:line on the first bad line.
 */
export function parseRules(content: Buffer, file: string): WorkloadRule[] {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(content);
  } catch {
    throw ruleError(file, 1 + countLines(content, firstInvalidUtf8(content)), 'not valid UTF-8; save the file as UTF-8');
  }
  const rules: WorkloadRule[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    const s = raw.replace(/\r$/, '').trim();
    if (s === '' || s.startsWith('#')) return;
    const m = /^(\S+)[ \t]+(\S+)[ \t]+(.+)$/.exec(s);
    if (!m) throw ruleError(file, line, `expected "<cgroup|netns> <glob> <name>", got ${JSON.stringify(s)}`);
    const [, kind, glob, nameRaw] = m;
    const name = nameRaw.trim();
    if (kind !== 'cgroup' && kind !== 'netns') throw ruleError(file, line, `unknown rule kind ${JSON.stringify(kind)}: use "cgroup" (a cgroup path glob) or "netns" (an ip netns name or inode glob)`);
    if (kind === 'cgroup' && !glob.startsWith('/') && !glob.startsWith('*')) {
      throw ruleError(file, line, `a cgroup glob matches a path as in /proc/<pid>/cgroup, which starts with "/": got ${JSON.stringify(glob)} (use "/${glob}" or "**/${glob}")`);
    }
    if (CONTROL.test(name)) throw ruleError(file, line, 'the workload name has a control character (tab, escape, …): use printable characters');
    if (Buffer.byteLength(name) > WORKLOAD_MAX_BYTES) throw ruleError(file, line, `the workload name is longer than ${WORKLOAD_MAX_BYTES} bytes`);
    rules.push({ line, kind, glob, re: globToRegExp(glob), name });
  });
  return rules;
}

function firstInvalidUtf8(b: Buffer): number {
  for (let i = 0; i < b.length; i++) {
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(0, i + 1), { stream: true });
    } catch {
      return i;
    }
  }
  return b.length;
}

function countLines(b: Buffer, end: number): number {
  let n = 0;
  for (let i = 0; i < end; i++) if (b[i] === 0x0a) n++;
  return n;
}

/** Reads and parses a rule file; a missing or unreadable file is CONFIG_INVALID naming it. */
export function loadRules(file: string): WorkloadRule[] {
  let content: Buffer;
  try {
    content = readFileSync(file);
  } catch (e) {
    throw new NettallyError('CONFIG_INVALID', `workload rules ${file}: cannot read it (${(e as Error).message}); fix the path given by --workload-rules (env NETTALLY_WORKLOAD_RULES)`, {
      cause: e,
      context: { setting: '--workload-rules (env NETTALLY_WORKLOAD_RULES)', file },
    });
  }
  return parseRules(content, file);
}

/** The first rule (lowest line) of `kind` whose glob matches any of `subjects`, or null. */
export function firstMatch(rules: readonly WorkloadRule[], kind: WorkloadRule['kind'], subjects: readonly string[]): WorkloadRule | null {
  for (const r of rules) if (r.kind === kind && subjects.some((s) => r.re.test(s))) return r;
  return null;
}

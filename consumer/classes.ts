// Destination classes: a CIDR map (built-in defaults + an optional file) that names where a connection's remote
// address is — `internal`, `internet`, `zone-b`, … — by longest prefix, IPv4 and IPv6 (IPv4-mapped IPv6 is IPv4).
// The consumer classifies each connection once, when it first sees it (consumer/aggregator.ts), so one file serves
// the whole fleet and the records keep the raw addresses.
import { readFileSync } from 'fs';
import type { OptionSpec } from '../lib/args';
import { configError } from '../lib/errors';

export const INTERNAL = 'internal';
export const INTERNET = 'internet';
/** Class of a remote address that is not an IP address (a record from a foreign or broken producer). */
export const UNPARSABLE = 'unknown';

/** Built-in rules, in force under any file (a file line with the same prefix replaces one; longer prefixes win). */
export const DEFAULT_CLASS_RULES: readonly (readonly [string, string])[] = [
  ['0.0.0.0/0', INTERNET],
  ['::/0', INTERNET],
  ['0.0.0.0/8', INTERNAL], // "this network" (unspecified)
  ['127.0.0.0/8', INTERNAL], // loopback
  ['169.254.0.0/16', INTERNAL], // link-local
  ['10.0.0.0/8', INTERNAL], // RFC 1918
  ['172.16.0.0/12', INTERNAL],
  ['192.168.0.0/16', INTERNAL],
  ['100.64.0.0/10', INTERNAL], // RFC 6598 carrier-grade NAT (shared address space: never the public internet)
  ['::/128', INTERNAL], // unspecified
  ['::1/128', INTERNAL], // loopback
  ['fe80::/10', INTERNAL], // link-local
  ['fc00::/7', INTERNAL], // unique local addresses (ULA)
];

/** A class name is a tag value billing jobs match on: short, printable, no spaces. */
const CLASS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;

type Addr = { v: 4; n: bigint } | { v: 6; n: bigint };

function parseV4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255 || (p.length > 1 && p[0] === '0')) return undefined;
    n = (n << 8n) | BigInt(p);
  }
  return n;
}

function parseV6(s: string): bigint | undefined {
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone); // fe80::1%eth0: the zone is not part of the address
  let tail: bigint[] = [];
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.', lastColon)) {
    // dotted IPv4 in the last 32 bits (::ffff:10.0.0.1, 64:ff9b::1.2.3.4)
    const v4 = parseV4(s.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    tail = [v4 >> 16n, v4 & 0xffffn];
    s = s.slice(0, lastColon + 1); // "::ffff:" or "64:ff9b::" (keep a "::", drop a single trailing ":")
    if (!s.endsWith('::')) s = s.slice(0, -1);
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (h: string): bigint[] | undefined => {
    if (h === '') return [];
    const out: bigint[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(BigInt(`0x${g}`));
    }
    return out;
  };
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !rest) return undefined;
  const given = head.length + rest.length + tail.length;
  if (halves.length === 1 ? given !== 8 : given > 7) return undefined;
  const all = [...head, ...new Array<bigint>(8 - given).fill(0n), ...rest, ...tail];
  return all.reduce((n, g) => (n << 16n) | g, 0n);
}

const MAPPED_PREFIX = 0xffffn << 32n; // ::ffff:0:0/96

/** An address as IPv4 or IPv6 bits; IPv4-mapped IPv6 (::ffff:a.b.c.d) is the IPv4 address it maps. */
function parseAddr(s: string): Addr | undefined {
  if (!s.includes(':')) {
    const n = parseV4(s);
    return n === undefined ? undefined : { v: 4, n };
  }
  const n = parseV6(s);
  if (n === undefined) return undefined;
  if (n >> 32n === 0xffffn) return { v: 4, n: n & 0xffffffffn };
  return { v: 6, n };
}

interface Rule {
  v: 4 | 6;
  len: number;
  net: bigint;
  cls: string;
  /** Where it came from: `file:line`, or `built-in`. */
  at: string;
}

/** One `CIDR class` line (a bare address is a host route); throws a message without the location. */
function parseRule(cidr: string, cls: string, at: string): Rule {
  const slash = cidr.indexOf('/');
  const a = parseAddr(slash < 0 ? cidr : cidr.slice(0, slash));
  if (!a) throw new Error(`${JSON.stringify(cidr)} is not an IPv4 or IPv6 address/prefix`);
  const written6 = cidr.includes(':');
  const max = written6 ? 128 : 32;
  const lenText = slash < 0 ? String(max) : cidr.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > max) throw new Error(`prefix length ${JSON.stringify(lenText)} of ${cidr} must be 0..${max}`);
  let len = Number(lenText);
  let { v, n } = a;
  if (written6 && v === 4) {
    // an IPv4-mapped IPv6 prefix (::ffff:10.0.0.0/104) is the IPv4 prefix it maps
    if (len < 96) {
      v = 6;
      n = n | MAPPED_PREFIX;
    } else len -= 96;
  }
  const bits = v === 4 ? 32 : 128;
  const host = (1n << BigInt(bits - len)) - 1n;
  if ((n & host) !== 0n) throw new Error(`${cidr} has host bits set (the network of /${lenText} is ${formatNet(v, n & ~host)}/${lenText})`);
  if (!CLASS_NAME.test(cls)) throw new Error(`class ${JSON.stringify(cls)} must be 1-64 characters of A-Z a-z 0-9 _ . : - starting with a letter or digit`);
  return { v, len, net: n, cls, at };
}

function formatNet(v: 4 | 6, n: bigint): string {
  if (v === 4) return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 0xffn)).join('.');
  return Array.from({ length: 8 }, (_, i) => ((n >> BigInt(112 - 16 * i)) & 0xffffn).toString(16)).join(':');
}

/** A compiled class map: classify() is a few Map lookups (one per distinct prefix length, longest first). */
export class RemoteClasses {
  private readonly tables: Record<4 | 6, { len: number; nets: Map<bigint, string> }[]> = { 4: [], 6: [] };
  /** The distinct classes it can answer (bounds the `remote_class` tag's cardinality). */
  readonly classes: ReadonlySet<string>;

  constructor(
    rules: readonly Rule[],
    /** The file the rules came from ('' = built-in only), for logs. */
    readonly source: string,
  ) {
    const byLen = { 4: new Map<number, Map<bigint, string>>(), 6: new Map<number, Map<bigint, string>>() };
    for (const r of rules) {
      let t = byLen[r.v].get(r.len);
      if (!t) byLen[r.v].set(r.len, (t = new Map()));
      t.set(r.net, r.cls); // later rules (the file) replace earlier ones (built-in) of the same prefix
    }
    for (const v of [4, 6] as const) {
      this.tables[v] = [...byLen[v]].sort(([a], [b]) => b - a).map(([len, nets]) => ({ len, nets }));
    }
    this.classes = new Set([...byLen[4].values(), ...byLen[6].values()].flatMap((m) => [...m.values()]).concat(UNPARSABLE));
  }

  /** The class of a remote address as the records carry it (dotted IPv4, IPv6 text); `unknown` if it is neither. */
  classify(addr: string): string {
    const a = parseAddr(addr);
    if (!a) return UNPARSABLE;
    const bits = a.v === 4 ? 32n : 128n;
    for (const { len, nets } of this.tables[a.v]) {
      const shift = bits - BigInt(len);
      const cls = nets.get((a.n >> shift) << shift);
      if (cls !== undefined) return cls;
    }
    return INTERNET; // unreachable while the /0 defaults are in force
  }
}

/** The built-in map alone. */
export const DEFAULT_REMOTE_CLASSES = new RemoteClasses(
  DEFAULT_CLASS_RULES.map(([c, k]) => parseRule(c, k, 'built-in')),
  '',
);

/**
 * Parses a class file's text: one `CIDR class` per line, `#` starts a comment, blank lines ignored. Throws a
 * CONFIG_INVALID error naming `setting`, `file:line` and what to write instead.
 */
export function parseRemoteClasses(text: string, file: string, setting: string): RemoteClasses {
  const rules = DEFAULT_CLASS_RULES.map(([c, k]) => parseRule(c, k, 'built-in'));
  const seen = new Map<string, Rule>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const at = `${file}:${i + 1}`;
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const cols = line.split(/\s+/);
    const fail = (problem: string): never => {
      throw configError(setting, `${at}: ${problem}; each line is "CIDR class" (e.g. "10.20.0.0/16 zone-b"), # starts a comment`, { file, line: i + 1 });
    };
    if (cols.length !== 2) fail(`expected 2 columns, got ${cols.length}: ${JSON.stringify(line)}`);
    let r: Rule;
    try {
      r = parseRule(cols[0], cols[1], at);
    } catch (e) {
      return fail((e as Error).message);
    }
    const key = `${r.v}/${r.len}/${r.net}`;
    const prev = seen.get(key);
    if (prev && prev.cls !== r.cls) fail(`${cols[0]} is already class ${prev.cls} at ${prev.at}`);
    seen.set(key, r);
    rules.push(r);
  });
  return new RemoteClasses(rules, file);
}

/** The consumer's class-file option (also offered by `up`, which checks the file and hands it to its consumer). */
export const REMOTE_CLASSES_OPTION: OptionSpec = {
  name: 'remote-classes',
  type: 'string',
  env: 'NETTALLY_REMOTE_CLASSES',
  default: '',
  help: 'file of "CIDR class" lines (# comments) naming destination classes, longest prefix wins, over the built-in internal/internet ranges (consumer/README.md); a connection keeps the class it was first seen with',
};

/** The map of `--remote-classes FILE` (undefined or '' = the built-in map); a bad file is a startup error. */
export function loadRemoteClasses(file: string | undefined, setting = '--remote-classes (env NETTALLY_REMOTE_CLASSES)'): RemoteClasses {
  if (file === undefined || file === '') return DEFAULT_REMOTE_CLASSES;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw configError(setting, `cannot read ${file}: ${(e as Error).message}`, { file });
  }
  return parseRemoteClasses(text, file, setting);
}

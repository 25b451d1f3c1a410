// Declarative command-line options shared by every `nettally` subcommand: flags, env vars, defaults,
// validation with messages that name the setting, secrets from files, and generated --help.
import { readFileSync } from 'fs';
import { isIPv6 } from 'net';
import { configError } from './errors';
import { secretFileWarning } from './private-files';

export type OptionType = 'string' | 'int' | 'number' | 'bool' | 'duration' | 'bytes' | 'list' | 'enum';

export interface OptionSpec {
  /** Flag name without dashes, kebab-case: `flush-interval` is `--flush-interval`. */
  name: string;
  type: OptionType;
  help: string;
  /** Environment variable read when the flag is absent. */
  env?: string;
  default?: string | number | boolean | readonly string[];
  choices?: readonly string[];
  min?: number;
  max?: number;
  required?: boolean;
  /** Never shown or logged; may also come from `<ENV>_FILE` or `--<name>-file`. */
  secret?: boolean;
  short?: string;
  /**
   * Former flag names (without dashes) and env vars that still set this option for one release: using one logs a
   * deprecation warning naming the new name. --help shows only the new names.
   */
  deprecated?: { flags?: readonly string[]; env?: readonly string[] };
}

export interface CommandSpec {
  name: string;
  summary: string;
  /** Longer text shown under the usage line. */
  description?: string;
  options: readonly OptionSpec[];
  /** Names of positional arguments, for the usage line; none means positionals are rejected. */
  positionals?: readonly string[];
  examples?: readonly string[];
}

export type OptionValue = string | number | boolean | string[] | undefined;

/** Parsed and validated options, frozen; typed getters fail loudly on a spec/use mismatch. */
export class ParsedArgs {
  constructor(
    readonly values: Readonly<Record<string, OptionValue>>,
    readonly positionals: readonly string[],
    /** Where each value came from: 'flag', 'env', 'file' or 'default'. */
    readonly sources: Readonly<Record<string, string>>,
    /** Things the user should fix that do not stop the command (a secret on the command line, a readable secret file). */
    readonly warnings: readonly string[] = [],
  ) {
    Object.freeze(this);
  }
  private get(name: string): OptionValue {
    if (!(name in this.values)) throw new Error(`option ${name} is not declared by this command`);
    return this.values[name];
  }
  str(name: string): string {
    const v = this.get(name);
    if (typeof v !== 'string') throw new Error(`option ${name} has no string value`);
    return v;
  }
  optStr(name: string): string | undefined {
    const v = this.get(name);
    return v === undefined ? undefined : String(v);
  }
  num(name: string): number {
    const v = this.get(name);
    if (typeof v !== 'number') throw new Error(`option ${name} has no numeric value`);
    return v;
  }
  optNum(name: string): number | undefined {
    const v = this.get(name);
    return typeof v === 'number' ? v : undefined;
  }
  bool(name: string): boolean {
    return this.get(name) === true;
  }
  list(name: string): string[] {
    const v = this.get(name);
    return Array.isArray(v) ? [...v] : v === undefined ? [] : [String(v)];
  }
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const BYTE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, ki: 1024, mi: 1024 ** 2, gi: 1024 ** 3,
};

/** Milliseconds from `250ms`, `10s`, `5m`, `1h`, `1d`; a bare number is seconds. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/i.exec(text.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * (m[2] ? DURATION_UNITS[m[2].toLowerCase()] : 1000));
}

/** Bytes from `4096`, `64KiB`, `10MB`, `1GiB`. */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  if (!m) return undefined;
  const unit = BYTE_UNITS[m[2].toLowerCase()];
  return unit === undefined ? undefined : Math.round(Number(m[1]) * unit);
}

export interface HostPort {
  host: string;
  port: number;
}

export interface HostPortRules {
  /** What to write instead, shown in every error: `127.0.0.1:9092`. */
  example: string;
  /** Host of a bare port (`9464`); without one a bare port is refused. */
  defaultHost?: string;
  /** Lowest port accepted: 0 (any free port) unless another process must connect to the port as written. */
  minPort?: number;
}

/**
 * An address option: `host:port`, `[v6]:port` (brackets, as in URLs, because a v6 address has colons of its own) or,
 * with `defaultHost`, a bare port. Throws CONFIG_INVALID naming the setting, the value and what to write instead.
 */
export function parseHostPort(setting: string, value: string, rules: HostPortRules): HostPort {
  const text = value.trim();
  const form = rules.defaultHost === undefined ? 'host:port' : '[host:]port';
  function fail(why: string): never {
    throw configError(setting, `${why}, got ${JSON.stringify(value)}; write ${form} such as ${rules.example} (an IPv6 address in brackets: [::1]:PORT)`);
  }
  const m = /^(?:(?:\[([^\]]*)\]|([^\s:[\]/]+)):)?(\d+)$/.exec(text);
  if (!m) {
    const scheme = /^([a-z][a-z0-9+.-]*:\/\/)/i.exec(text);
    if (scheme) fail(`expected an address without ${scheme[1]}`);
    const v6 = /^([0-9a-f:.]*:[0-9a-f:.]*):(\d+)$/i.exec(text);
    if (v6 && isIPv6(v6[1])) fail(`an IPv6 address needs brackets: [${v6[1]}]:${v6[2]}`);
    fail(`expected ${form}`);
  }
  const [, bracketed, plain, portText] = m;
  if (bracketed !== undefined && !isIPv6(bracketed)) fail('brackets are only for IPv6 addresses');
  const host = bracketed ?? plain ?? rules.defaultHost;
  if (host === undefined) fail(`expected ${form}`);
  const port = Number(portText);
  const minPort = rules.minPort ?? 0;
  if (port < minPort || port > 65535) fail(`port ${portText} is out of range: use ${minPort} to 65535`);
  return { host, port };
}

/** `host:port`, with a v6 host in brackets: what parseHostPort reads and Kafka clients expect in a broker list. */
export function formatHostPort(a: HostPort): string {
  return isIPv6(a.host) ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

function settingName(o: OptionSpec): string {
  return o.env ? `--${o.name} (env ${o.env})` : `--${o.name}`;
}

function deprecation(old: string, o: OptionSpec): string {
  return `${old} is deprecated and will be removed in the next release: use ${settingName(o)} instead (same values)`;
}

function convert(o: OptionSpec, raw: string | boolean, where = settingName(o)): OptionValue {
  if (o.type === 'bool') {
    if (typeof raw === 'boolean') return raw;
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw configError(where, `expected true or false, got ${JSON.stringify(raw)}`);
  }
  if (typeof raw === 'boolean') throw configError(where, 'needs a value');
  let n: number | undefined;
  switch (o.type) {
    case 'string':
      if (o.required && raw === '') throw configError(where, 'must not be empty');
      return raw;
    case 'list':
      return raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
    case 'enum':
      if (!o.choices?.includes(raw)) throw configError(where, `expected one of ${o.choices?.join(', ')}, got ${JSON.stringify(raw)}`);
      return raw;
    case 'int':
      n = /^-?\d+$/.test(raw.trim()) ? Number(raw) : undefined;
      if (n === undefined) throw configError(where, `expected a whole number, got ${JSON.stringify(raw)}`);
      break;
    case 'number':
      n = raw.trim() !== '' && Number.isFinite(Number(raw)) ? Number(raw) : undefined;
      if (n === undefined) throw configError(where, `expected a number, got ${JSON.stringify(raw)}`);
      break;
    case 'duration':
      n = parseDuration(raw);
      if (n === undefined) throw configError(where, `expected a duration such as 500ms, 10s, 5m or 1h, got ${JSON.stringify(raw)}`);
      break;
    case 'bytes':
      n = parseBytes(raw);
      if (n === undefined) throw configError(where, `expected a size such as 4096, 64KiB or 100MB, got ${JSON.stringify(raw)}`);
      break;
  }
  const unit = o.type === 'duration' ? 'ms' : o.type === 'bytes' ? ' bytes' : '';
  if (o.min !== undefined && n < o.min) throw configError(where, `must be at least ${o.min}${unit}, got ${raw}`);
  if (o.max !== undefined && n > o.max) throw configError(where, `must be at most ${o.max}${unit}, got ${raw}`);
  return n;
}

/**
 * Parses argv (without the command name) against the spec, falling back to env vars then defaults.
 * Returns 'help' when --help/-h was given. Throws CONFIG_INVALID naming the flag for anything wrong.
 */
export function parseArgs(spec: CommandSpec, argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedArgs | 'help' {
  const byName = new Map<string, OptionSpec>();
  for (const o of spec.options) {
    byName.set(o.name, o);
    if (o.short) byName.set(o.short, o);
    if (o.secret) byName.set(`${o.name}-file`, { ...o, name: `${o.name}-file`, type: 'string', secret: false });
    for (const old of o.deprecated?.flags ?? []) byName.set(old, o);
  }
  const raw = new Map<string, string | boolean>();
  /** The deprecated flag name that gave an option its value (the last occurrence wins, as for any flag). */
  const viaOld = new Map<string, string>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') return 'help';
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    let key = (eq >= 0 ? a.slice(0, eq) : a).replace(/^--?/, '');
    let value: string | boolean | undefined = eq >= 0 ? a.slice(eq + 1) : undefined;
    let o = byName.get(key);
    if (!o && key.startsWith('no-') && byName.get(key.slice(3))?.type === 'bool' && value === undefined) {
      key = key.slice(3);
      o = byName.get(key);
      value = false;
    }
    if (!o) throw configError(a, `unknown option for 'nettally ${spec.name}' (see nettally ${spec.name} --help)`);
    if (value === undefined) {
      if (o.type === 'bool') value = true;
      else if (i + 1 < argv.length) value = argv[++i];
      else throw configError(`--${o.name}`, 'needs a value');
    }
    raw.set(o.name, value);
    if (o.deprecated?.flags?.includes(key)) viaOld.set(o.name, key);
    else viaOld.delete(o.name);
  }
  if (positionals.length > 0 && !spec.positionals?.length) {
    throw configError(JSON.stringify(positionals[0]), `'nettally ${spec.name}' takes no positional arguments (see nettally ${spec.name} --help)`);
  }

  const values: Record<string, OptionValue> = {};
  const sources: Record<string, string> = {};
  const warnings: string[] = [];
  for (const o of spec.options) {
    let v: string | boolean | undefined = raw.get(o.name);
    let source = 'flag';
    if (o.secret && v === undefined) {
      const file = (raw.get(`${o.name}-file`) as string | undefined) ?? (o.env ? env[`${o.env}_FILE`] : undefined);
      if (file !== undefined) {
        const loose = secretFileWarning(file, o.env ? `${o.env}_FILE / --${o.name}-file` : `--${o.name}-file`);
        if (loose) warnings.push(loose);
        try {
          v = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
          source = 'file';
        } catch (e) {
          throw configError(`--${o.name}-file`, `cannot read ${file}: ${(e as Error).message}`);
        }
      }
    }
    if (v === undefined && o.env && env[o.env] !== undefined && env[o.env] !== '') {
      v = env[o.env] as string;
      source = 'env';
    }
    const oldEnv = v === undefined ? o.deprecated?.env?.find((e) => env[e] !== undefined && env[e] !== '') : undefined;
    if (oldEnv !== undefined) {
      v = env[oldEnv] as string;
      source = 'env';
      warnings.push(deprecation(`env ${oldEnv}`, o));
    }
    const oldFlag = viaOld.get(o.name);
    if (oldFlag !== undefined && raw.has(o.name)) warnings.push(deprecation(`--${oldFlag}`, o));
    if (v === undefined) {
      if (o.required) throw configError(settingName(o), 'is required');
      // String defaults of typed options ('5s', '64KiB') go through the same conversion as user input.
      values[o.name] =
        typeof o.default === 'string' && !['string', 'enum', 'list'].includes(o.type)
          ? convert(o, o.default)
          : Array.isArray(o.default)
            ? [...o.default]
            : o.type === 'list' && typeof o.default === 'string'
              ? convert(o, o.default)
              : (o.default as OptionValue);
      sources[o.name] = 'default';
      continue;
    }
    // A bad value given under an old name is reported under the name the user typed, and the one to use.
    const typed = oldEnv !== undefined ? `env ${oldEnv}` : oldFlag !== undefined && raw.has(o.name) ? `--${oldFlag}` : undefined;
    values[o.name] = convert(o, v, typed ? `${typed} (now ${settingName(o)})` : undefined);
    sources[o.name] = source;
    if (o.secret && source === 'flag') {
      warnings.push(
        `--${o.name} was given on the command line, where every local user can read it (ps, /proc/<pid>/cmdline); ` +
          `put it in a file only this user can read (chmod 600) and pass ${o.env ? `${o.env}_FILE=<file> or ` : ''}--${o.name}-file <file> instead`,
      );
    }
  }
  return new ParsedArgs(values, positionals, sources, warnings);
}

/** A default as a person would write it: 60000 ms as `1m`, 16777216 bytes as `16MiB`. */
function showDefault(o: OptionSpec): string {
  const d = o.default;
  if (Array.isArray(d)) return d.join(',');
  if (typeof d === 'number' && o.type === 'duration' && d > 0) {
    const unit = (['d', 'h', 'm', 's'] as const).find((u) => d % DURATION_UNITS[u] === 0);
    return unit ? `${d / DURATION_UNITS[unit]}${unit}` : `${d}ms`;
  }
  if (typeof d === 'number' && o.type === 'bytes' && d > 0) {
    const unit = (['gib', 'mib', 'kib'] as const).find((u) => d % BYTE_UNITS[u] === 0);
    return unit ? `${d / BYTE_UNITS[unit]}${unit.replace('ib', 'iB').toUpperCase().replace('IB', 'iB')}` : String(d);
  }
  return String(d);
}

/** The --help text: usage, description, options with env vars and defaults (secrets' defaults hidden). */
export function formatHelp(spec: CommandSpec): string {
  const pos = spec.positionals?.length ? ' ' + spec.positionals.map((p) => `<${p}>`).join(' ') : '';
  const lines = [`Usage: nettally ${spec.name} [options]${pos}`, '', spec.summary];
  if (spec.description) lines.push('', spec.description);
  lines.push('', 'Options:');
  const rows = spec.options.map((o) => {
    const flag = `${o.short ? `-${o.short}, ` : ''}--${o.name}${o.type === 'bool' ? '' : ` <${o.type === 'enum' ? o.choices?.join('|') : o.type}>`}`;
    const extra: string[] = [];
    if (o.env) extra.push(`env ${o.env}${o.secret ? `, or ${o.env}_FILE / --${o.name}-file` : ''}`);
    if (o.default !== undefined && !o.secret && o.default !== false) extra.push(`default ${showDefault(o)}`);
    if (o.required) extra.push('required');
    return [flag, o.help + (extra.length ? ` [${extra.join('; ')}]` : '')];
  });
  rows.push(['-h, --help', 'show this help']);
  const width = Math.min(34, Math.max(...rows.map((r) => r[0].length)) + 2);
  for (const [flag, text] of rows) lines.push(`  ${flag.padEnd(width)}${flag.length >= width ? '\n  ' + ' '.repeat(width) : ''}${text}`);
  if (spec.examples?.length) lines.push('', 'Examples:', ...spec.examples.map((e) => `  ${e}`));
  // Read by the logger (lib/log.ts), not by an option: the same for every command.
  lines.push(
    '',
    'Logging (env, every command):',
    '  LOG_LEVEL   trace|debug|info|warn|error (default info)',
    '  LOG_FORMAT  json|pretty (default: pretty, readable lines, when stdout and stderr are a terminal; else json)',
  );
  return lines.join('\n') + '\n';
}

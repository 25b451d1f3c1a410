#!/usr/bin/env node
// Generates the TypeScript side of the record definitions, so each record's fields are written by hand only in
// bpf/nettally.h (kernel layout), schemas/<kind>.avsc (wire contract) and, for what is not copied by name, in
// producer/wire.ts (the mapping between them):
//   producer/layout.generated.ts         <- bpf/nettally.h  (constants, struct sizes, field offsets and C types)
//   producer/layout-decode.generated.ts  <- bpf/nettally.h  (one DataView decoder per kernel record struct)
//   schemas/types.generated.ts           <- schemas/*.avsc  (the wire record interfaces and the list of kinds)
//   producer/wire.generated.ts           <- both            (wire record builders: fields of the same name copied)
// Plain JavaScript (no build step) because scripts/build.sh runs it before tsc, and a fresh clone must type-check.
//
//   node scripts/gen-records.js              rewrite the generated files
//   node scripts/gen-records.js --check      fail (exit 1) naming each stale file; writes nothing
//   node scripts/gen-records.js --btf OBJ    also fail unless the header layout equals the BTF of the compiled
//                                            object (what clang really laid out) for every nt_* struct in it
//   --header FILE / --schemas DIR            read another header / schema folder (tests use a copy)
'use strict';
const { readFileSync, writeFileSync, readdirSync, existsSync } = require('fs');
const { execFileSync } = require('child_process');
const { join, relative } = require('path');

const ROOT = join(__dirname, '..');
const REGEN = 'node scripts/gen-records.js';
const LAYOUT_OUT = join(ROOT, 'producer', 'layout.generated.ts');
const TYPES_OUT = join(ROOT, 'schemas', 'types.generated.ts');
const DECODE_OUT = join(ROOT, 'producer', 'layout-decode.generated.ts');
const WIRE_OUT = join(ROOT, 'producer', 'wire.generated.ts');

class GenError extends Error {}

// --- bpf/nettally.h -> producer/layout.generated.ts ---

/** C scalar types the header may use: size (= alignment) in bytes and the name the TypeScript decoder reads them by. */
const SCALARS = { __u8: [1, 'u8'], __u16: [2, 'u16'], __u32: [4, 'u32'], __u64: [8, 'u64'], char: [1, 'char'] };

/** #define NT_<GROUP>_<NAME> <number> groups, by the TypeScript name they are exported under. */
const GROUPS = { KIND: 'KernelKind', FLUSH: 'FlushReasonCode', DIR: 'Direction', F: 'ConnFlag', STAT: 'KernelStat' };

/** Comments blanked out in place (same length, newlines kept), so positions in the result are positions in the source. */
function stripComments(src) {
  const blank = (c) => c.replace(/[^\n]/g, ' ');
  return src.replace(/\/\*[\s\S]*?\*\//g, blank).replace(/\/\/[^\n]*/g, blank);
}

/** Parses the header's numeric constants and structs; computes offsets with the C ABI's natural alignment. */
function parseHeader(path) {
  const raw = readFileSync(path, 'utf8');
  const src = stripComments(raw);
  const constants = {};
  for (const m of src.matchAll(/^#define\s+NT_([A-Z0-9]+)_([A-Z0-9_]+)\s+(0x[0-9a-fA-F]+|\d+)\s*$/gm)) {
    const group = GROUPS[m[1]] ?? `NT_${m[1]}`;
    (constants[group] ??= {})[m[2]] = Number(m[3]);
  }
  const structs = {};
  for (const m of src.matchAll(/struct\s+(nt_\w+)\s*\{([^}]*)\}\s*;/g)) {
    const [, name, body] = m;
    const bodyAt = m.index + m[0].indexOf('{') + 1;
    const fields = [];
    let off = 0;
    let align = 1;
    let at = 0;
    for (const part of body.split(';')) {
      // The member's line in the source, comments included: a comment naming `NT_<GROUP>_*` says the field holds
      // those codes (the decoder reads it with that group's reader).
      const line = raw.slice(raw.lastIndexOf('\n', bodyAt + at + part.length) + 1).split('\n')[0];
      at += part.length + 1;
      const decl = part.trim();
      if (!decl) continue;
      const codes = /\bNT_([A-Z0-9]+)_\*/.exec(line)?.[1];
      const d = /^(struct\s+\w+|\w+)\s+(\w+)\s*(?:\[(\d+)\])?$/.exec(decl.replace(/\s+/g, ' '));
      if (!d) throw new GenError(`${path}: struct ${name}: cannot parse member "${decl}" (expected "type name;" or "type name[N];")`);
      const [, type, field, count] = d;
      let size;
      let a;
      let ts;
      if (type.startsWith('struct ')) {
        const inner = structs[type.slice(7)];
        if (!inner) throw new GenError(`${path}: struct ${name}.${field}: ${type} must be defined before it is used`);
        size = inner.size;
        a = inner.align;
        ts = type.slice(7);
      } else if (SCALARS[type]) {
        [size, ts] = SCALARS[type];
        a = size;
      } else {
        throw new GenError(`${path}: struct ${name}.${field}: type ${type} is not one of ${Object.keys(SCALARS).join(', ')} or struct nt_*`);
      }
      const n = count === undefined ? undefined : Number(count);
      off = Math.ceil(off / a) * a;
      fields.push({ name: field, off, type: n === undefined ? ts : `${ts}[${n}]`, codes: codes && (GROUPS[codes] ?? `NT_${codes}`) });
      off += size * (n ?? 1);
      align = Math.max(align, a);
    }
    structs[name] = { size: Math.ceil(off / align) * align, align, fields };
  }
  if (!structs.nt_conn_record) throw new GenError(`${path}: no struct nt_conn_record found; is this bpf/nettally.h?`);
  return { constants, structs };
}

function key(name) {
  return /^[A-Za-z_$][\w$]*$/.test(name) ? name : `'${name}'`;
}

function layoutSource(headerPath) {
  const { constants, structs } = parseHeader(headerPath);
  const lines = [
    `// GENERATED by ${REGEN} from bpf/nettally.h: do not edit. Change the header, then run \`${REGEN}\`.`,
    '// scripts/build.sh fails while this file is stale, and checks the header against the compiled object\'s BTF.',
    '',
  ];
  for (const [group, values] of Object.entries(constants)) {
    lines.push(`export const ${group} = {`);
    for (const [k, v] of Object.entries(values)) lines.push(`  ${k}: ${v},`);
    lines.push('} as const;', '');
  }
  // One line per struct: the header is the readable definition; this file is looked up, not read.
  lines.push('// Per struct: its size and, per field, the offset in bytes and the C type (a nested struct\'s type is its name).');
  for (const [name, s] of Object.entries(structs)) {
    const fields = s.fields.map((f) => {
      const arr = /\[(\d+)\]$/.exec(f.type);
      return `${key(f.name)}: { off: ${f.off}, type: '${f.type}'${arr ? `, len: ${arr[1]}` : ''} }`;
    });
    lines.push(`export const ${name} = { size: ${s.size}, fields: { ${fields.join(', ')} } } as const;`);
  }
  lines.push('');
  return lines.join('\n');
}

// --- bpf/nettally.h -> producer/layout-decode.generated.ts ---

/**
 * The structs decoded into kernel records (producer/records.ts), and the wire kinds producer/wire.ts builds from each.
 * A record struct's fields are its members, nested structs flattened, padding (`_*`) left out; a `struct nt_hdr`
 * member (the ring-buffer record header) gives `ts_ns`, and `kind` is the decoder's argument.
 */
const RECORDS = { nt_conn_record: ['conn_sample', 'conn_event'], nt_listen_record: ['listen'], nt_iface_entry: ['iface'] };

/**
 * How a member is read, by its C type (readers in producer/layout-readers.ts):
 *   __u8/__u16/__u32       number (little-endian)
 *   __u64                  number, exact: refused past 2^53 (counters, cookies; a rounded one would bill wrong bytes)
 *   __u64 *_ns, *_id       number, rounded past 2^53 (timestamps pass 2^53 ns after 104 days of uptime; ids never do)
 *   char[N]                text (NUL-terminated; see commText)
 *   __u8[16]               an IP address as text, by the struct's `family` member
 *   comment NT_<GROUP>_*   the number through codes.<Group> (e.g. flush_reason's code -> its name)
 */
function readExpr(s, f, at) {
  const o = `off + ${at}`;
  if (f.codes) return `codes.${f.codes}(${readExpr(s, { ...f, codes: undefined }, at)})`;
  switch (f.type) {
    case 'u8':
      return `dv.getUint8(${o})`;
    case 'u16':
      return `dv.getUint16(${o}, true)`;
    case 'u32':
      return `dv.getUint32(${o}, true)`;
    case 'u64':
      return /_(ns|id)$/.test(f.name) ? `u64ts(dv, ${o})` : `u64(dv, ${o}, '${f.name}')`;
    case 'u8[16]':
      if (!s.fields.some((g) => g.name === 'family')) throw new GenError(`${f.name}: an address (__u8[16]) needs a "family" member in the same struct`);
      return `formatAddr(dv, ${o}, family)`;
  }
  const text = /^char\[(\d+)\]$/.exec(f.type);
  if (text) return `text(dv, ${o}, ${text[1]})`;
  throw new GenError(`${f.name}: no reader for C type ${f.type}; add one to ${REGEN} (readExpr) and producer/layout-readers.ts`);
}

/** The decoded record's fields of struct `name`: [field name, read expression], nested structs flattened. */
function recordFields(structs, name, base = 0) {
  const out = [];
  const s = structs[name];
  for (const f of s.fields) {
    if (f.name.startsWith('_')) continue;
    if (f.type === 'nt_hdr') out.push(['ts_ns', `u64ts(dv, off + ${base + f.off + structs.nt_hdr.fields.find((g) => g.name === 'ts_ns').off})`]);
    else if (structs[f.type]) out.push(...recordFields(structs, f.type, base + f.off));
    else {
      try {
        out.push([f.name, readExpr(s, f, base + f.off)]);
      } catch (e) {
        throw e instanceof GenError ? new GenError(`bpf/nettally.h: struct ${name}.${e.message}`) : e;
      }
    }
  }
  return out;
}

function hasHeader(structs, name) {
  return structs[name].fields.some((f) => f.type === 'nt_hdr');
}

function decodeSource(headerPath) {
  const { structs } = parseHeader(headerPath);
  const lines = [
    `// GENERATED by ${REGEN} from bpf/nettally.h: do not edit. Change the header, then run \`${REGEN}\`.`,
    '// One decoder per kernel record struct: every member read at its offset by its C type (the rules and readers are in',
    '// scripts/gen-records.js readExpr and producer/layout-readers.ts). producer/records.ts types and uses them.',
    "import { codes, formatAddr, text, u64, u64ts } from './layout-readers';",
    '',
  ];
  for (const name of Object.keys(RECORDS)) {
    if (!structs[name]) throw new GenError(`${headerPath}: no struct ${name} (a kernel record ${REGEN} decodes)`);
    const fields = recordFields(structs, name);
    const hdr = hasHeader(structs, name);
    const family = fields.find(([n]) => n === 'family');
    const uses = (x) => fields.some(([, e]) => e.includes(x));
    lines.push(`/** struct ${name} at \`off\`${hdr ? '' : '; `ts_ns`: when it was read'}. */`);
    lines.push(`export function decode_${name}<K extends number>(dv: DataView, off: number, kind: K${hdr ? '' : ', ts_ns: number'}) {`);
    if (family && uses('family)')) lines.push(`  const family = ${family[1]};`);
    lines.push(`  return { kind${hdr ? '' : ', ts_ns'}, ${fields.map(([n, e]) => (n === 'family' && uses('family)') ? 'family' : `${key(n)}: ${e}`)).join(', ')} };`);
    lines.push('}', '');
  }
  return lines.join('\n');
}

/** Compares the parsed header with the BTF clang wrote into `obj` (bpftool 7.1: `-j btf dump file OBJ format raw`). */
function checkBtf(headerPath, obj) {
  const { structs } = parseHeader(headerPath);
  let btf;
  try {
    btf = JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', obj, 'format', 'raw'], { encoding: 'utf8', maxBuffer: 256 << 20 }));
  } catch (e) {
    throw new GenError(`cannot read the BTF of ${obj} with bpftool (${e.message.split('\n')[0]}); build it first (bash scripts/build.sh)`);
  }
  const problems = [];
  let checked = 0;
  for (const t of btf.types) {
    if (t.kind !== 'STRUCT' || !structs[t.name]) continue;
    checked++;
    const s = structs[t.name];
    if (t.size !== s.size) problems.push(`struct ${t.name}: size ${t.size} in BTF, ${s.size} parsed from the header`);
    const btfFields = t.members.map((m) => `${m.name}@${m.bits_offset / 8}`).join(' ');
    const ours = s.fields.map((f) => `${f.name}@${f.off}`).join(' ');
    if (btfFields !== ours) problems.push(`struct ${t.name}: members in BTF ${btfFields}\n  parsed from the header ${ours}`);
  }
  if (checked === 0) problems.push(`${obj} has no BTF for any nt_* struct of ${headerPath}`);
  if (problems.length) throw new GenError(`${relative(ROOT, headerPath)} does not describe what clang laid out in ${obj}:\n${problems.join('\n')}`);
  return checked;
}

// --- schemas/*.avsc -> schemas/types.generated.ts ---

function tsType(t, where) {
  if (Array.isArray(t)) {
    return t.map((u) => tsType(u, where)).join(' | ');
  }
  if (typeof t === 'object' && t !== null) {
    if (t.logicalType === 'timestamp-nanos' && t.type === 'long') return 'bigint';
    if (t.type === 'enum') return t.symbols.map((s) => `'${s}'`).join(' | ');
    if (t.type === 'array') return `Array<${tsType(t.items, where)}>`;
    return tsType(t.type, where);
  }
  const map = { null: 'null', string: 'string', boolean: 'boolean', int: 'number', long: 'number', float: 'number', double: 'number', bytes: 'Buffer' };
  if (!map[t]) throw new GenError(`${where}: Avro type ${JSON.stringify(t)} has no TypeScript mapping in ${REGEN}; add one there`);
  return map[t];
}

/**
 * The .avsc repeat fields across records (Avro has no inheritance): a field declared alike (name, type, doc) in
 * several records is emitted once, in an interface named after the records sharing it, which they extend.
 */
/** The .avsc files of `schemaDir`, sorted by file name: { file, kind, schema }. */
function readSchemas(schemaDir) {
  const files = readdirSync(schemaDir).filter((f) => f.endsWith('.avsc')).sort();
  if (files.length === 0) throw new GenError(`${schemaDir}: no .avsc files`);
  return files.map((f) => {
    const schema = JSON.parse(readFileSync(join(schemaDir, f), 'utf8'));
    if (schema.type !== 'record' || !schema.name || !Array.isArray(schema.fields)) throw new GenError(`schemas/${f}: the top level must be a named record with fields`);
    return { file: f, kind: f.slice(0, -'.avsc'.length), schema };
  });
}

function typesSource(schemaDir) {
  const records = readSchemas(schemaDir).map(({ file: f, kind, schema }) => {
    const fields = schema.fields.map((field) => {
      const doc = field.doc ? `  /** ${field.doc.replace(/\*\//g, '*\\/')} */\n` : '';
      return `${doc}  ${key(field.name)}: ${tsType(field.type, `schemas/${f} field ${field.name}`)};`;
    });
    const defaults = schema.fields
      .filter((field) => 'default' in field)
      .map((field) => {
        const bigint = typeof field.type === 'object' && field.type?.logicalType === 'timestamp-nanos';
        return `${key(field.name)}: ${bigint ? `${field.default}n` : JSON.stringify(field.default)}`;
      });
    return { file: f, kind, name: schema.name, namespace: schema.namespace, fields, defaults };
  });
  // declaration text -> names of the records declaring it, in file order
  const owners = new Map();
  for (const r of records) for (const d of r.fields) owners.set(d, [...(owners.get(d) ?? []), r.name]);
  const groups = new Map(); // shared interface name -> declarations
  for (const [d, names] of owners) {
    if (names.length < 2) continue;
    const g = names.length === records.length ? 'CommonFields' : `${names.join('')}Fields`;
    groups.set(g, [...(groups.get(g) ?? []), d]);
  }
  const lines = [
    `// GENERATED by ${REGEN} from schemas/*.avsc: do not edit. Change the .avsc (the versioned contract), then run`,
    `// \`${REGEN}\`. scripts/build.sh fails while this file is stale.`,
    '',
  ];
  for (const [g, decls] of groups) lines.push(`/** Fields declared alike in ${g === 'CommonFields' ? 'every record' : 'several records'}. */`, `export interface ${g} {`, ...decls, '}', '');
  for (const r of records) {
    const own = r.fields.filter((d) => owners.get(d).length < 2);
    const bases = [...groups.keys()].filter((g) => groups.get(g).some((d) => owners.get(d).includes(r.name)));
    lines.push(`/** ${r.namespace ? `${r.namespace}.` : ''}${r.name} (schemas/${r.file}). */`);
    if (own.length === 0) lines.push(`export type ${r.name} = ${bases.join(' & ')};`, '');
    else lines.push(`export interface ${r.name}${bases.length ? ` extends ${bases.join(', ')}` : ''} {`, ...own, '}', '');
  }
  lines.push('/** The record kinds on the topic: one per schemas/<kind>.avsc. */');
  lines.push(`export const RECORD_KINDS = [${records.map((r) => `'${r.kind}'`).join(', ')}] as const;`);
  lines.push('export type RecordKind = (typeof RECORD_KINDS)[number];', '');
  lines.push('/** The generated type of each kind, as its .avsc declares it. */', 'export interface AvscRecordByKind {');
  for (const r of records) lines.push(`  ${r.kind}: ${r.name};`);
  lines.push('}', '');
  // Fixtures and synthetic data start from these, so a field added with a default (as the evolution rules require)
  // needs no edit in them.
  lines.push('/** Per kind, every field its .avsc gives a default, with that default (what a reader fills in when a writer lacks it). */');
  lines.push('export const AVSC_DEFAULTS = {');
  for (const r of records) lines.push(`  ${r.kind}: { ${r.defaults.join(', ')} },`);
  lines.push('} as const;', '');
  return lines.join('\n');
}

// --- bpf/nettally.h + schemas/*.avsc -> producer/wire.generated.ts ---

/**
 * One builder per wire kind, for producer/wire.ts: the whole record as one object literal (a spread or Object.assign
 * on this per-record path measured 2.5x to ~500x slower in V8), each field taken from one of three sources:
 *   h  the fields the producer adds to every record (in every .avsc and in no kernel record): host identity, seq, ...
 *   k  the kernel record, for every wire field it has by the same name (kernel and wire names are the same on purpose)
 *   x  the rest, computed by producer/wire.ts (enrichment, conn_event's event and duration)
 * The parameters are typed by the wire record, so producer/wire.ts is where tsc points when a source is missing a field.
 * One line per builder: this file is looked up, not read.
 */
function wireSource(headerPath, schemaDir) {
  const { structs } = parseHeader(headerPath);
  const schemas = readSchemas(schemaDir);
  const kernelOf = {};
  for (const [struct, kinds] of Object.entries(RECORDS)) {
    if (!structs[struct]) throw new GenError(`${headerPath}: no struct ${struct} (a kernel record ${REGEN} decodes)`);
    const names = new Set(['ts_ns', ...recordFields(structs, struct).map(([n]) => n)]);
    for (const kind of kinds) kernelOf[kind] = names;
  }
  const inAll = schemas[0].schema.fields.map((f) => f.name).filter((n) => schemas.every((r) => r.schema.fields.some((f) => f.name === n)));
  const head = inAll.filter((n) => !Object.values(kernelOf).some((names) => names.has(n)));
  const union = (names) => names.map((n) => `'${n}'`).join(' | ');
  const lines = [
    `// GENERATED by ${REGEN} from bpf/nettally.h and schemas/*.avsc: do not edit. Change those, then run \`${REGEN}\`.`,
    '// Wire record builders for producer/wire.ts: see wireSource in scripts/gen-records.js for the three sources h, k, x.',
    "import type { AvscRecordByKind as W } from '../schemas/types.generated';",
    '',
    '/** The fields the producer adds to every record: declared in every .avsc, in no kernel record. */',
    `export type Head = Pick<W['${schemas[0].kind}'], ${union(head)}>;`,
    '',
  ];
  for (const { kind, file, schema } of schemas) {
    if (!kernelOf[kind]) throw new GenError(`schemas/${file}: no kernel record struct is mapped to kind ${kind}; add it to RECORDS in ${REGEN}`);
    const fromK = schema.fields.map((f) => f.name).filter((n) => kernelOf[kind].has(n) && !head.includes(n));
    const fromX = schema.fields.map((f) => f.name).filter((n) => !fromK.includes(n) && !head.includes(n));
    const x = fromX.length ? 'x' : '_x';
    const src = (n) => `${key(n)}: ${head.includes(n) ? 'h' : fromK.includes(n) ? 'k' : 'x'}.${n}`;
    lines.push(`/** schemas/${file} from h, the kernel record's fields of the same name (k) and x. */`);
    lines.push(
      `type ${kind}_kernel = ${union(fromK)}; ` +
        `export function ${kind}(h: Head, k: Pick<W['${kind}'], ${kind}_kernel>, ${x}: Omit<W['${kind}'], keyof Head | ${kind}_kernel>): W['${kind}'] { ` +
        `return { ${schema.fields.map((f) => src(f.name)).join(', ')} }; }`,
      '',
    );
  }
  return lines.join('\n');
}

// --- main ---

function main(argv) {
  const opt = { check: false, header: join(ROOT, 'bpf', 'nettally.h'), schemas: join(ROOT, 'schemas'), btf: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--check') opt.check = true;
    else if (a === '--header' || a === '--schemas' || a === '--btf') {
      if (argv[i + 1] === undefined) throw new GenError(`${a} needs a value`);
      opt[a.slice(2)] = argv[++i];
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(readFileSync(__filename, 'utf8').split('\n').slice(1, 15).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
      return 0;
    } else throw new GenError(`unknown argument ${a} (see ${REGEN} --help)`);
  }
  const outputs = [
    [LAYOUT_OUT, layoutSource(opt.header)],
    [DECODE_OUT, decodeSource(opt.header)],
    [TYPES_OUT, typesSource(opt.schemas)],
    [WIRE_OUT, wireSource(opt.header, opt.schemas)],
  ];
  let stale = 0;
  for (const [file, text] of outputs) {
    const rel = relative(ROOT, file);
    const old = existsSync(file) ? readFileSync(file, 'utf8') : undefined;
    if (old === text) continue;
    if (opt.check) {
      process.stderr.write(`gen-records: ${rel} is stale (its source changed); run \`${REGEN}\` and commit ${rel}\n`);
      stale++;
    } else {
      writeFileSync(file, text);
      process.stderr.write(`gen-records: wrote ${rel}\n`);
    }
  }
  if (opt.btf) checkBtf(opt.header, opt.btf);
  return stale ? 1 : 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (e) {
  if (!(e instanceof GenError)) throw e;
  process.stderr.write(`gen-records: ${e.message}\n`);
  process.exitCode = 1;
}

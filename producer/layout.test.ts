// The generated record definitions stay true to their sources: scripts/gen-records.js --check fails when a committed
// generated file is stale, and --btf fails when bpf/nettally.h does not describe what the compiler laid out. Works on
// copies in a temp dir; the real tree is only read (asserted below). Needs clang and bpftool (as the build does), not root.
import { spawnSync } from 'child_process';
import { createHash } from 'crypto';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { nt_conn_record } from './layout.generated';

const ROOT = join(__dirname, '..');
const HEADER = join(ROOT, 'bpf', 'nettally.h');
const GENERATED = ['producer/layout.generated.ts', 'producer/layout-decode.generated.ts', 'schemas/types.generated.ts', 'producer/wire.generated.ts'].map((f) => join(ROOT, f));

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'nettally-layout-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function gen(...args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'scripts', 'gen-records.js'), ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stderr: r.stderr };
}

function digest(): string[] {
  return GENERATED.map((f) => createHash('sha256').update(readFileSync(f)).digest('hex'));
}

/** The header with nt_conn_record's sport and dport (both __u16, so every size assert still holds) swapped. */
function swappedHeader(): string {
  const h = join(dir, 'nettally.h');
  const src = readFileSync(HEADER, 'utf8');
  const sport = /^\s*__u16 sport;.*$/m.exec(src)?.[0];
  const dport = /^\s*__u16 dport;.*$/m.exec(src)?.[0];
  if (!sport || !dport) throw new Error('bpf/nettally.h no longer has the sport/dport lines this test swaps; pick two other same-size fields');
  writeFileSync(h, src.replace(sport, '\0').replace(dport, sport).replace('\0', dport));
  return h;
}

test('the committed generated files match bpf/nettally.h and schemas/*.avsc', () => {
  const r = gen('--check');
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
});

test('swapping two same-size fields in the header makes the check fail, naming the file and the command', () => {
  const before = digest();
  const r = gen('--check', '--header', swappedHeader());
  expect(r.status).toBe(1);
  expect(r.stderr).toContain('producer/layout.generated.ts is stale');
  expect(r.stderr).toContain('run `node scripts/gen-records.js`');
  expect(r.stderr).not.toContain('types.generated.ts');
  expect(digest()).toEqual(before); // --check writes nothing
  // What the decoder reads by: sport before dport, as the real header says.
  expect([nt_conn_record.fields.sport.off, nt_conn_record.fields.dport.off]).toEqual([112, 114]);
});

test('the header is checked against the BTF of an object compiled from it: a swapped copy passes its own size asserts but not this', () => {
  const h = swappedHeader();
  const src = join(dir, 'probe.bpf.c');
  // Types from vmlinux.h in the real build; four typedefs are all the header needs.
  writeFileSync(
    src,
    '#define __VMLINUX_H__\ntypedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned int __u32; typedef unsigned long long __u64;\n' +
      '#include "nettally.h"\nstruct nt_conn_record probe_conn; struct nt_listen_record probe_listen;\n',
  );
  const obj = join(dir, 'probe.bpf.o');
  const cc = spawnSync('clang', ['-g', '-O2', '-target', 'bpf', '-I', dir, '-c', src, '-o', obj], { encoding: 'utf8', timeout: 60_000 });
  // The header's _Static_asserts (sizes and a few offsets) accept the swap: that is the gap the generator closes.
  expect(cc.stderr).toBe('');
  expect(cc.status).toBe(0);

  const bad = gen('--check', '--btf', obj);
  expect(bad.status).toBe(1);
  expect(bad.stderr).toContain('bpf/nettally.h does not describe what clang laid out');
  expect(bad.stderr).toMatch(/struct nt_conn_record: members in BTF .*dport@112 sport@114/);

  // The same object against the header it was compiled from agrees (the stale check still fails on the swap).
  const good = gen('--check', '--header', h, '--btf', obj);
  expect(good.stderr).not.toContain('does not describe');
});

test('a header member the decoder has no reader for fails the generator, naming the member and where to add one; nothing is written', () => {
  const before = digest();
  const h = join(dir, 'unreadable.h');
  const src = readFileSync(HEADER, 'utf8');
  writeFileSync(h, src.replace(/^(\s*)__u8 _pad\[7\];/m, '$1__u8 blob[7];'));
  const r = gen('--check', '--header', h); // --check: even if it did not fail, the real tree is not written
  expect(r.status).toBe(1);
  expect(r.stderr).toContain('struct nt_conn_record.blob: no reader for C type u8[7]');
  expect(r.stderr).toContain('readExpr');
  expect(digest()).toEqual(before);
});

/** A copy of what tsc and the generator read (tsconfig's folders, the header, the generator), node_modules linked. */
function copyTree(): string {
  const tree = join(dir, 'tree');
  const tsconfig = JSON.parse(readFileSync(join(ROOT, 'tsconfig.json'), 'utf8')) as { include: string[] };
  for (const d of [...tsconfig.include, 'native', 'scripts']) {
    cpSync(join(ROOT, d), join(tree, d), { recursive: true, filter: (src) => !/[/\\](node_modules|build|dist)$/.test(src) });
  }
  mkdirSync(join(tree, 'bpf'));
  cpSync(HEADER, join(tree, 'bpf', 'nettally.h'));
  for (const f of ['tsconfig.json', 'package.json']) cpSync(join(ROOT, f), join(tree, f));
  symlinkSync(join(ROOT, 'node_modules'), join(tree, 'node_modules'));
  return tree;
}

function addAvscField(file: string, field: object): void {
  const schema = JSON.parse(readFileSync(file, 'utf8')) as { fields: object[] };
  schema.fields.push(field);
  writeFileSync(file, JSON.stringify(schema, null, 2));
}

test(
  'adding a field: the header and the .avsc are enough when the names match; otherwise tsc points at producer/wire.ts alone',
  () => {
    const tree = copyTree();
    // `tos`, in the header (taken from the padding: same layout size) and in both connection schemas: copied by name.
    const h = join(tree, 'bpf', 'nettally.h');
    const src = readFileSync(h, 'utf8');
    const pad = /^(\s*)__u8 _pad\[7\];.*$/m.exec(src);
    if (!pad) throw new Error('bpf/nettally.h no longer has nt_conn_record\'s __u8 _pad[7]; take the new field from other padding');
    writeFileSync(h, src.replace(pad[0], `${pad[1]}__u8 tos;${pad[1]}__u8 _pad[6];`));
    const tos = { name: 'tos', type: 'int', default: 0, doc: 'IP TOS byte.' };
    addAvscField(join(tree, 'schemas', 'conn_sample.avsc'), tos);
    addAvscField(join(tree, 'schemas', 'conn_event.avsc'), tos);
    // `mark`, in the listen schema only: no kernel field has the name, so producer/wire.ts must supply it.
    addAvscField(join(tree, 'schemas', 'listen.avsc'), { name: 'mark', type: 'long', default: 0, doc: 'Firewall mark.' });

    const g = spawnSync(process.execPath, [join(tree, 'scripts', 'gen-records.js')], { encoding: 'utf8', timeout: 60_000 });
    expect(g.status).toBe(0);
    expect(readFileSync(join(tree, 'producer', 'layout-decode.generated.ts'), 'utf8')).toContain('tos: dv.getUint8(off + 137)');
    expect(readFileSync(join(tree, 'producer', 'wire.generated.ts'), 'utf8')).toContain('tos: k.tos');

    const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json', '--noEmit'], {
      cwd: tree,
      encoding: 'utf8',
      timeout: 280_000,
    });
    const errors = tsc.stdout.split('\n').filter((l) => /error TS\d+/.test(l));
    expect(errors.length).toBeGreaterThan(0);
    expect({ files: [...new Set(errors.map((l) => l.split('(')[0]))], errors }).toEqual({ files: ['producer/wire.ts'], errors: errors.filter((l) => l.startsWith('producer/wire.ts')) });
    // tsc's full message (its lines after the first) names the field and what lacks it.
    expect(tsc.stdout).toContain("Property 'mark' is missing in type 'ProcessInfo'");
    expect(tsc.stdout).not.toContain("'tos'");
  },
  300_000,
);

// The generated record definitions stay true to their sources: scripts/gen-records.js --check fails when a committed
// generated file is stale, and --btf fails when bpf/nettally.h does not describe what the compiler laid out. Works on
// copies in a temp dir; the real tree is only read (asserted below). Needs clang and bpftool (as the build does), not root.
import { spawnSync } from 'child_process';
import { createHash } from 'crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { nt_conn_record } from './layout.generated';

const ROOT = join(__dirname, '..');
const HEADER = join(ROOT, 'bpf', 'nettally.h');
const GENERATED = [join(ROOT, 'producer', 'layout.generated.ts'), join(ROOT, 'schemas', 'types.generated.ts')];

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

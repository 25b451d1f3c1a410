// The status channel between `nettally up` and its children, with real processes: lib/status.ts transpiled to
// JavaScript and run in a child forked with an IPC channel (as up's children get one), or spawned without one (as a
// daemon started by hand).
import { fork, spawn, type ChildProcess } from 'child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { transpileModule, ModuleKind } from 'typescript';
import { parseStatusMessage, STATUS_CHANNEL_ENV, STATUS_VERSION, type DaemonReport } from './status';

const dir = mkdtempSync(join(tmpdir(), 'nettally-status-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const REPORT: DaemonReport = { daemon: 'broker', phase: 'ready', address: '127.0.0.1:9092' };

// The child: makes its reporter, says on stdout what it saw, sends REPORT (after the parent let go, with `late`).
const CHILD = `
const { statusReporter } = require('./status.js');
const r = statusReporter();
const hadEnv = process.env.${STATUS_CHANNEL_ENV} !== undefined;
const send = () => r.report(${JSON.stringify(REPORT)}).then(() => {
  process.stdout.write(JSON.stringify({ enabled: r.enabled, envLeft: hadEnv }) + '\\n');
  if (process.connected) process.disconnect();
});
if (process.argv[2] === 'late') process.once('disconnect', send); else send();
`;

beforeAll(() => {
  const src = readFileSync(join(__dirname, 'status.ts'), 'utf8');
  writeFileSync(join(dir, 'status.js'), transpileModule(src, { compilerOptions: { module: ModuleKind.CommonJS } }).outputText);
  writeFileSync(join(dir, 'child.js'), CHILD);
});

interface Run {
  messages: unknown[];
  out: { enabled: boolean; envLeft: boolean };
  code: number | null;
  stderr: string;
}

function collect(child: ChildProcess): Promise<Run> {
  const messages: unknown[] = [];
  let out = '';
  let stderr = '';
  child.on('message', (m) => messages.push(m));
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  // 'exit' and the end of stdout, not 'close': after the parent's disconnect() Node never emits 'close'.
  const ended = new Promise((r) => child.stdout?.once('end', r));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return Promise.all([exited, ended]).then(([code]) => ({ messages, out: JSON.parse(out || 'null'), code, stderr }));
}

const envWith = (v: string | undefined): NodeJS.ProcessEnv => {
  const env = { ...process.env };
  if (v === undefined) delete env[STATUS_CHANNEL_ENV];
  else env[STATUS_CHANNEL_ENV] = v;
  return env;
};

test('started by up (IPC channel + the variable): the report arrives as sent, and grandchildren do not inherit the variable', async () => {
  const run = await collect(fork(join(dir, 'child.js'), [], { env: envWith('ipc'), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }));
  expect(run).toMatchObject({ code: 0, out: { enabled: true, envLeft: false } });
  expect(run.messages).toEqual([{ nettally_status: STATUS_VERSION, report: REPORT }]);
  expect(run.messages.map(parseStatusMessage)).toEqual([REPORT]);
});

test('a Node parent with an IPC channel that is not up (no variable) gets nothing', async () => {
  const run = await collect(fork(join(dir, 'child.js'), [], { env: envWith(undefined), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }));
  expect(run).toMatchObject({ code: 0, out: { enabled: false } });
  expect(run.messages).toEqual([]);
});

test('started by hand (no channel) with the variable set: reports are dropped, nothing fails', async () => {
  const run = await collect(spawn(process.execPath, [join(dir, 'child.js')], { cwd: dir, env: envWith('ipc'), stdio: ['ignore', 'pipe', 'pipe'] }));
  expect(run).toMatchObject({ code: 0, out: { enabled: false }, stderr: '' });
});

test('a parent that has let go (up killed): the report is dropped quietly and the daemon goes on', async () => {
  const child = fork(join(dir, 'child.js'), ['late'], { env: envWith('ipc'), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  const done = collect(child);
  child.disconnect();
  const run = await done;
  expect(run).toMatchObject({ code: 0, out: { enabled: true }, stderr: '' });
  expect(run.messages).toEqual([]);
});

test('parseStatusMessage takes well-formed reports only', () => {
  const ok = (report: unknown): DaemonReport | undefined => parseStatusMessage({ nettally_status: STATUS_VERSION, report });
  expect(ok(REPORT)).toEqual(REPORT);
  expect(ok({ daemon: 'producer', phase: 'failed', error: 'spool: EIO' })).toEqual({ daemon: 'producer', phase: 'failed', error: 'spool: EIO' });
  for (const bad of [null, 'status', { nettally_status: 2, report: REPORT }, { report: REPORT }, { nettally_status: STATUS_VERSION }]) expect(parseStatusMessage(bad)).toBeUndefined();
  for (const report of [{ ...REPORT, daemon: 'influxd' }, { ...REPORT, phase: 'up' }, { daemon: 'producer', phase: 'failed' }, null]) expect(ok(report)).toBeUndefined();
});

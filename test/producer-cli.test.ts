// Scenario: the `nettally producer` command — help, config validation, --check, privileges, status line,
// metrics endpoint on localhost, secrets kept out of the logs.
import { spawnSync } from 'child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'fs';
import { get } from 'http';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { ensureProducerBuilt, startProducerProcess, type ProducerProcess } from './helpers/producer';

const ROOT = resolve(__dirname, '..');
const BIN = join(ROOT, 'dist/bin/nettally.js');
const cleanups: Array<() => unknown> = [];
afterAll(() => {
  for (const c of cleanups.reverse()) c();
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'nettally-pcli-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function cli(args: string[], prefix: string[] = []): { code: number | null; out: string; err: string } {
  ensureProducerBuilt();
  const cmd = prefix.length ? prefix[0] : process.execPath;
  const r = spawnSync(cmd, [...prefix.slice(1), ...(prefix.length ? [process.execPath] : []), BIN, 'producer', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('--help documents the flags and their env vars', () => {
  const r = cli(['--help']);
  expect(r.code).toBe(0);
  for (const s of ['--spool-max-bytes', 'NETTALLY_SPOOL_MAX_BYTES', '--metrics-listen', '--check', 'KAFKA_SASL_PASSWORD_FILE', '--fsync']) expect(r.out).toContain(s);
});

test('bad settings are rejected at start, naming the setting', () => {
  expect(cli(['--compression', 'zstd'])).toMatchObject({ code: 2, err: expect.stringContaining('--compression') });
  expect(cli(['--brokers', 'nohostport'])).toMatchObject({ code: 2, err: expect.stringContaining('--brokers') });
  expect(cli(['--metrics-listen', 'everywhere'])).toMatchObject({ code: 2, err: expect.stringContaining('--metrics-listen') });
  expect(cli(['--pin-dir', 'relative/dir'])).toMatchObject({ code: 2, err: expect.stringContaining('--pin-dir') });
  expect(cli(['--sasl-mechanism', 'plain', '--sasl-username', 'u'])).toMatchObject({ code: 2, err: expect.stringContaining('--sasl-password') });
});

test('--check loads and attaches the programs and exits 0', () => {
  const r = cli(['--check']);
  expect({ code: r.code, out: r.out }).toEqual({ code: 0, out: expect.stringContaining('ok: eBPF programs loaded and attached') });
});

test('without privileges it says what is needed and how to grant it', () => {
  const r = cli(['--state-dir', tempDir()], ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all']);
  expect(r.code).toBe(1);
  expect(r.err).toContain('CAP_BPF+CAP_PERFMON');
  expect(r.err).toMatch(/setcap|AmbientCapabilities/);
});

test('status line and localhost metrics; the SASL password never reaches the logs', async () => {
  const dir = tempDir();
  const secret = `pw-${process.pid}-s3cr3t`;
  writeFileSync(join(dir, 'pw'), `${secret}\n`);
  // No broker at this address: the producer keeps spooling and says so.
  const p: ProducerProcess = startProducerProcess(
    ['--brokers', '127.0.0.1:1', '--state-dir', join(dir, 'state'), '--pin-dir', 'none', '--status-interval', '300ms', '--metrics-listen', '0',
      '--sasl-mechanism', 'plain', '--sasl-username', 'nettally', '--iface-interval', '200ms', '--shutdown-timeout', '1s'],
    { KAFKA_SASL_PASSWORD_FILE: join(dir, 'pw') },
  );
  cleanups.push(() => p.child.kill('SIGKILL'));
  await p.ready;
  const until = Date.now() + 20_000;
  while (!/"msg":"status"/.test(p.stderr()) || !/metrics endpoint listening/.test(p.stderr())) {
    if (Date.now() > until) throw new Error(`no status line / metrics line:\n${p.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const url = /"metrics":"(http:\/\/127\.0\.0\.1:\d+\/metrics)"/.exec(p.stderr())?.[1];
  expect(url).toBeDefined();
  const body = await new Promise<string>((res, rej) =>
    get(url as string, { agent: false }, (r) => {
      let b = '';
      r.on('data', (d: Buffer) => (b += d.toString()));
      r.on('end', () => res(b));
    }).on('error', rej),
  );
  expect(body).toMatch(/^nettally_producer_spool_bytes \d+$/m);
  expect(body).toMatch(/^nettally_producer_kernel_ringbuf_drops_total \d+$/m);
  expect(body).toMatch(/^nettally_producer_kafka_up 0$/m);
  const status = JSON.parse(p.stderr().split('\n').find((l) => l.includes('"msg":"status"')) as string) as { status: Record<string, unknown> };
  expect(status.status).toMatchObject({ kafka_ok: false, spool_bytes: expect.any(Number), records_out: 0, send_latency_ms_last: expect.any(Number) });
  expect(status.status.kernel).toMatchObject({ ringbuf_drops: expect.any(Number) });
  p.child.kill('SIGTERM');
  expect(await p.exited).toBe(0);
  expect(p.stderr()).toMatch(/producer stopped/);
  expect(p.stderr()).not.toContain(secret);
});

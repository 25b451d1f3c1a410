// Scenario: the `nettally producer` command — help, config validation, --check, privileges, status line,
// metrics endpoint on localhost, secrets kept out of the logs.
import { spawn, spawnSync } from 'child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'fs';
import { get } from 'http';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { startTestBroker } from './helpers/broker';
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

/** The command as a child, without blocking the event loop (for tests that run a broker in this process). */
function cliAsync(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  ensureProducerBuilt();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, 'producer', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, out, err });
    });
  });
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
  for (const s of ['--spool-max-bytes', 'NETTALLY_SPOOL_MAX_BYTES', '--metrics-listen', '--check', 'KAFKA_SASL_PASSWORD_FILE', '--fsync', '--max-message-bytes', 'NETTALLY_MAX_MESSAGE_BYTES']) expect(r.out).toContain(s);
});

test('bad settings are rejected at start, naming the setting', () => {
  expect(cli(['--compression', 'zstd'])).toMatchObject({ code: 2, err: expect.stringContaining('--compression') });
  expect(cli(['--brokers', 'nohostport'])).toMatchObject({ code: 2, err: expect.stringContaining('--brokers') });
  expect(cli(['--metrics-listen', 'everywhere'])).toMatchObject({ code: 2, err: expect.stringContaining('--metrics-listen') });
  expect(cli(['--pin-dir', 'relative/dir'])).toMatchObject({ code: 2, err: expect.stringContaining('--pin-dir') });
  expect(cli(['--sasl-mechanism', 'plain', '--sasl-username', 'u'])).toMatchObject({ code: 2, err: expect.stringContaining('--sasl-password') });
});

test('--check loads and attaches the programs, finds the topic on Kafka, and exits 0', async () => {
  const b = await startTestBroker();
  try {
    const r = await cliAsync(['--check', '--brokers', b.address]);
    expect({ code: r.code, out: r.out }).toEqual({ code: 0, out: expect.stringContaining('ok: eBPF programs loaded and attached') });
    expect(r.out).toMatch(/^ok: Kafka: connected to 127\.0\.0\.1:\d+; topic nettally\.records has 1 partition/m);
  } finally {
    await b.stop();
  }
});

test('--check loads with the run\'s capture settings: a pinned connection map of another size fails it; it pins nothing', async () => {
  const pinDir = `/sys/fs/bpf/nettally-test-pcheck-${process.pid}-${Date.now()}`;
  const fresh = `${pinDir}-fresh`;
  cleanups.push(() => rmSync(pinDir, { recursive: true, force: true }), () => rmSync(fresh, { recursive: true, force: true }));
  const { openCapture } = await import('../producer/capture');
  // ground truth: the maps a producer with --max-connections 4096 left pinned
  await (await openCapture({ pinDir, maxConnections: 4096, ifaceIntervalMs: 0 })).close();
  const b = await startTestBroker();
  try {
    const other = await cliAsync(['--check', '--brokers', b.address, '--pin-dir', pinDir]);
    expect({ code: other.code, out: other.out }).toEqual({ code: 1, out: expect.stringMatching(/^FAILED: eBPF programs: .*--max-connections .*is 1048576, but the connection map pinned in .* has 4096 entries/m) });
    expect(other.out).toMatch(/^ok: Kafka/m);
    const same = await cliAsync(['--check', '--brokers', b.address, '--pin-dir', pinDir, '--max-connections', '4096', '--ring-buffer-bytes', '64KiB']);
    expect({ code: same.code, out: same.out }).toEqual({ code: 0, out: expect.stringContaining(`maps pinned in ${pinDir} were left alone`) });
    const none = await cliAsync(['--check', '--brokers', b.address, '--pin-dir', fresh]);
    expect({ code: none.code, out: none.out }).toEqual({ code: 0, out: expect.stringContaining('the run creates them') });
    expect(existsSync(fresh)).toBe(false);
  } finally {
    await b.stop();
  }
});

test('--check reports a topic Kafka refuses (missing, auto-create off), SASL the broker lacks, an unreachable Kafka, and exits 1', async () => {
  const b = await startTestBroker({ autoCreateTopics: false });
  try {
    const r = await cliAsync(['--check', '--brokers', b.address]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^FAILED: Kafka: UNKNOWN_TOPIC_OR_PARTITION: .*topic nettally\.records does not exist .*create it/m);
  } finally {
    await b.stop();
  }
  // SASL asked of a listener without SASL (the bundled broker has none): a configuration error, said as such.
  const pw = join(tempDir(), 'pw');
  writeFileSync(pw, 'secret\n', { mode: 0o600 });
  const open = await startTestBroker();
  try {
    const r = await cliAsync(['--check', '--brokers', open.address, '--sasl-mechanism', 'plain', '--sasl-username', 'u', '--sasl-password-file', pw]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^FAILED: Kafka: UNSUPPORTED_API: .*--sasl-mechanism against a listener without SASL/m);
  } finally {
    await open.stop();
  }
  const down = await cliAsync(['--check', '--brokers', '127.0.0.1:1']);
  expect(down.code).toBe(1);
  expect(down.out).toMatch(/^FAILED: Kafka: .*cannot reach 127\.0\.0\.1:1/m);
});

test('--batch-max-bytes above --max-message-bytes is refused naming both; a secret flag warns without showing it', () => {
  const r = cli(['--batch-max-bytes', '2MiB', '--sasl-mechanism', 'plain', '--sasl-username', 'u', '--sasl-password', 'hunter2-secret']);
  expect(r.code).toBe(2);
  expect(r.err).toMatch(/--batch-max-bytes .*--max-message-bytes \(env NETTALLY_MAX_MESSAGE_BYTES\) 1048588/);
  expect(r.err).toMatch(/--sasl-password was given on the command line.*KAFKA_SASL_PASSWORD_FILE/);
  expect(r.err).not.toContain('hunter2-secret');
  // A lowered broker limit alone lowers the default batch size with it.
  expect(cli(['--max-message-bytes', '512KiB', '--compression', 'zstd'])).toMatchObject({ code: 2, err: expect.stringContaining('--compression') });
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
  writeFileSync(join(dir, 'pw'), `${secret}\n`, { mode: 0o600 });
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
  const fetchMetrics = (): Promise<string> =>
    new Promise<string>((res, rej) =>
      get(url as string, { agent: false }, (r) => {
        let b = '';
        r.on('data', (d: Buffer) => (b += d.toString()));
        r.on('end', () => res(b));
      }).on('error', rej),
    );
  // The first failed send (kafkajs gives up connecting after its own retries) turns 'connecting' into 'retrying'.
  let body = await fetchMetrics();
  while (!/kafka_state\{state="retrying"\} 1/.test(body) && Date.now() < until + 20_000) {
    await new Promise((r) => setTimeout(r, 200));
    body = await fetchMetrics();
  }
  expect(body).toMatch(/^nettally_producer_spool_bytes \d+$/m);
  expect(body).toMatch(/^nettally_producer_kernel_ringbuf_drops_total \d+$/m);
  expect(body).toMatch(/^nettally_producer_kafka_up 0$/m);
  expect(body).toMatch(/^nettally_producer_kafka_state\{state="retrying"\} 1$/m);
  while (!/"kafka_state":"retrying"/.test(p.stderr().split('\n').filter((l) => l.includes('"msg":"status"')).pop() ?? '') && Date.now() < until + 20_000) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const status = JSON.parse(p.stderr().split('\n').filter((l) => l.includes('"msg":"status"')).pop() as string) as { status: Record<string, unknown> };
  expect(status.status).toMatchObject({ kafka_ok: false, kafka_state: 'retrying', spool_bytes: expect.any(Number), records_out: 0, send_latency_ms_last: expect.any(Number) });
  expect(status.status.kernel).toMatchObject({ ringbuf_drops: expect.any(Number) });
  p.child.kill('SIGTERM');
  expect(await p.exited).toBe(0);
  expect(p.stderr()).toMatch(/producer stopped/);
  expect(p.stderr()).not.toContain(secret);
});

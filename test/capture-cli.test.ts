// Scenario: `nettally capture --json` prints the records of a known transfer as JSON lines; --check and bad flags.
import { spawn, spawnSync } from 'child_process';
import { existsSync, rmSync } from 'fs';
import path from 'path';
import pino from 'pino';
import { Writable } from 'stream';
import { parseArgs, type ParsedArgs } from '../lib/args';
import { silentLogger } from '../lib/log';
import { command } from '../producer/cmd-capture';
import { command as top } from '../producer/cmd-top';
import type { TopFrame } from '../producer/top';
import { bootTimeNs, openCapture, unixNsFromBootNs, type ConnRecord } from '../producer/capture';
import { transfer } from './helpers/capture';
import { createNetnsPair, type NetnsPair } from './helpers/netns';

let pair: NetnsPair;
beforeAll(() => {
  pair = createNetnsPair('cli');
});
afterAll(() => pair?.destroy());

function sink(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString() };
}

function args(argv: string[]): ParsedArgs {
  const a = parseArgs(command.spec, argv, {});
  if (a === 'help') throw new Error('help');
  return a;
}

test('--json prints exact close records of a transfer made while it runs', async () => {
  const out = sink();
  const ac = new AbortController();
  const run = command.run(args(['--json', '--duration', '20s', '--iface-interval', '0']), { logger: silentLogger, signal: ac.signal, stdout: out.stream });
  await new Promise((r) => setTimeout(r, 300));
  const res = await transfer(pair, 'tcp', 4, ['--reply', '4321'], ['--bytes', '123456']);
  const sport = res.client[0].sport;
  const closeOf = (): ConnRecord | undefined =>
    out
      .text()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as ConnRecord)
      .find((r) => r.kind === 3 && r.netns === pair.a.inode && r.sport === sport);
  const until = Date.now() + 10000;
  while (!closeOf() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  ac.abort();
  expect(await run).toBe(0);
  expect(closeOf()).toMatchObject({ tx_bytes: 123456, rx_bytes: 4321, dport: res.port, protocol: 6, flush_reason: 'close' });
});

test('without a cgroup2 mount it falls back to per-syscall counting, and says so; TCP and UDP stay exact', async () => {
  // a private mount namespace without the cgroup2 mount: the packet programs have nowhere to attach
  const cli = path.resolve(__dirname, '../dist/bin/nettally.js');
  const script = 'for m in $(awk \'$3 == "cgroup2" { print $2 }\' /proc/self/mounts); do umount -l "$m"; done; exec "$0" "$@"';
  const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, process.execPath, cli, 'capture', '--json', '--duration', '60s', '--iface-interval', '0', '--flush-interval', '200ms'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    const until = Date.now() + 15000;
    while (!err.includes('kernel capture attached') && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    expect(err).toContain('no cgroup2 mount: counting falls back to per-syscall tracepoints');
    const tcp = await transfer(pair, 'tcp', 4, ['--reply', '999'], ['--bytes', '77777', '--chunk', '100']);
    const udp = await transfer(pair, 'udp', 4, ['--count', '20', '--reply', '55'], ['--count', '20', '--chunk', '321', '--reply', '1']);
    const records = (): ConnRecord[] =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as ConnRecord);
    const tcpClose = (): ConnRecord | undefined => records().find((r) => r.kind === 3 && r.netns === pair.a.inode && r.sport === tcp.client[0].sport);
    // UDP sockets get no close record without cgroup2: the latest record of the client socket carries its totals
    const udpLast = (): ConnRecord | undefined => records().filter((r) => r.netns === pair.a.inode && r.protocol === 17 && r.dport === udp.port).pop();
    const done = Date.now() + 10000;
    while (!(tcpClose() && udpLast()?.tx_bytes === udp.client[0].tx) && Date.now() < done) await new Promise((r) => setTimeout(r, 50));
    expect(tcpClose()).toMatchObject({ tx_bytes: 77777, rx_bytes: 999 });
    expect(udpLast()).toMatchObject({ tx_bytes: 20 * 321, rx_bytes: udp.client[0].rx });
  } finally {
    child.kill('SIGINT');
    await exited;
  }
  expect(child.exitCode ?? 0).toBe(0);
});

test('--check loads, attaches and exits 0', async () => {
  const out = sink();
  expect(await command.run(args(['--check']), { logger: silentLogger, signal: new AbortController().signal, stdout: out.stream })).toBe(0);
  expect(out.text()).toMatch(/load and attach/);
});

test('--check loads with the settings given and pins nothing; a pinned map the run could not reuse fails it', async () => {
  const pinDir = `/sys/fs/bpf/nettally-test-ccheck-${process.pid}-${Date.now()}`;
  const fresh = `${pinDir}-fresh`;
  try {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString()) as Record<string, unknown>), cb()) }));
    const check = (argv: string[]) => command.run(args(['--check', ...argv]), { logger, signal: new AbortController().signal, stdout: sink().stream });
    expect(await check(['--pin-dir', fresh, '--max-connections', '4096', '--ring-buffer-bytes', '8KiB', '--flush-threshold-bytes', '1MiB', '--flush-interval', '2s'])).toBe(0);
    expect(lines.find((l) => l.msg === 'kernel capture attached')).toMatchObject({ maxConnections: 4096, ringBufferBytes: 8192, flushThresholdBytes: 1 << 20, flushIntervalMs: 2000 });
    expect(existsSync(fresh)).toBe(false);
    // ground truth: maps pinned by a capture with 4096 connections
    await (await openCapture({ pinDir, maxConnections: 4096, ifaceIntervalMs: 0 })).close();
    await expect(check(['--pin-dir', pinDir])).rejects.toThrow(/--max-connections .*has 4096 entries/);
    expect(await check(['--pin-dir', pinDir, '--max-connections', '4096'])).toBe(0);
  } finally {
    rmSync(pinDir, { recursive: true, force: true });
    rmSync(fresh, { recursive: true, force: true });
  }
});

test('old flag names still work, with a warning naming the new one', () => {
  const a = args(['--ring-buffer', '8KiB', '--flush-threshold', '1MiB']);
  expect([a.num('ring-buffer-bytes'), a.num('flush-threshold-bytes')]).toEqual([8192, 1 << 20]);
  expect(a.warnings.join('\n')).toMatch(/--ring-buffer is deprecated.*--ring-buffer-bytes[^]*--flush-threshold is deprecated.*--flush-threshold-bytes|--flush-threshold is deprecated[^]*--ring-buffer is deprecated/);
});

test('bad settings are rejected naming the flag', () => {
  expect(() => args(['--ring-buffer', '1000'])).toThrow(/--ring-buffer.*at least 4096/);
  expect(() => args(['--flush-interval', 'soon'])).toThrow(/--flush-interval/);
});

test('top --json: the netns totals equal the bytes a transfer moved in that netns', async () => {
  const out = sink();
  const ac = new AbortController();
  const a = parseArgs(top.spec, ['--json', '--interval', '200ms', '--netns', String(pair.a.inode)], {});
  if (a === 'help') throw new Error('help');
  const run = top.run(a, { logger: silentLogger, signal: ac.signal, stdout: out.stream });
  await new Promise((r) => setTimeout(r, 300));
  const res = await transfer(pair, 'tcp', 4, ['--conns', '4', '--reply', '1111'], ['--conns', '4', '--bytes', '77777']);
  const frames = (): TopFrame[] => out.text().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as TopFrame);
  const want = { tx_bytes: 4 * 77777, rx_bytes: 4 * 1111 };
  const until = Date.now() + 10000;
  const totals = (): unknown => {
    const f = frames().pop();
    const n = f?.netns.find((x) => x.netns === pair.a.inode);
    return n && { tx_bytes: n.tx_bytes, rx_bytes: n.rx_bytes };
  };
  while (JSON.stringify(totals()) !== JSON.stringify(want) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  ac.abort();
  expect(await run).toBe(0);
  expect(res.client).toHaveLength(4);
  expect(totals()).toEqual(want);
  expect(frames().every((f) => f.connections.every((c) => c.netns === pair.a.inode))).toBe(true);
});

test('without privileges the addon says what is missing and how to grant it', () => {
  const addon = path.join(__dirname, '..', 'native', 'build', 'Release', 'nettally.node');
  const js = `const m={exports:{}};process.dlopen(m,${JSON.stringify(addon)});try{new m.exports.Capture({onBatch(){},onClosed(){}})}catch(e){console.log(e.code+': '+e.message)}`;
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', js], { encoding: 'utf8' });
  expect(r.stdout).toMatch(/^PRIVILEGES: loading eBPF programs needs root or CAP_BPF\+CAP_PERFMON.*setcap cap_bpf,cap_perfmon/);
});

test('kernel timestamps convert to Unix time', () => {
  const unixMs = Number(unixNsFromBootNs(bootTimeNs()) / 1_000_000n);
  expect(Math.abs(unixMs - Date.now())).toBeLessThan(1000);
});

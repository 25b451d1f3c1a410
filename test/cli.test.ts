// The `nettally` CLI as a user meets it: every subcommand has --help, unknown input is refused with a
// pointer to help, and a stop signal delivered twice (process + group) still stops cleanly.
import { spawnSync } from 'child_process';
import { existsSync, mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join, resolve } from 'path';
import { freePort } from '../bin/influxd';
import { ensureBuilt } from './helpers/broker';
import { spawnUp, waitReady } from './helpers/up';

const CLI = resolve(__dirname, '../dist/bin/nettally.js');
const SUBCOMMANDS = ['up', 'producer', 'consumer', 'broker', 'top', 'usage', 'dashboard', 'capture'];

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => ensureBuilt());

describe('nettally CLI', () => {
  it('lists every subcommand, and each one has --help', () => {
    const main = run(['--help']);
    expect(main.status).toBe(0);
    for (const name of SUBCOMMANDS) {
      expect(main.stdout).toContain(`  ${name} `);
      const help = run([name, '--help']);
      expect({ name, status: help.status }).toEqual({ name, status: 0 });
      expect(help.stdout).toContain(`Usage: nettally ${name} [options]`);
    }
  });

  it('refuses an unknown command or option, naming it', () => {
    const cmd = run(['frobnicate']);
    expect(cmd.status).toBe(2);
    expect(cmd.stderr).toContain("unknown command 'frobnicate'");
    const opt = run(['usage', '--colour', 'blue']);
    expect(opt.status).toBe(2);
    expect(opt.stderr).toContain('--colour');
    expect(opt.stderr).toContain("See 'nettally usage --help'");
  });

  it('stops cleanly when SIGINT reaches the process and its group a moment apart', async () => {
    // nettally up takes seconds to stop (producer flush, consumer commit, servers), so a second copy of the
    // signal arrives mid-stop, as it does under timeout(1) or `kill -INT -- -PGID`.
    const dataDir = mkdtempSync(join(tmpdir(), 'nettally-cli-'));
    const pinDir = `/sys/fs/bpf/nettally-cli-${process.pid}`;
    const [kafkaPort, influxPort] = [await freePort(), await freePort()];
    const up = spawnUp(['--data-dir', dataDir, '--kafka-listen', `127.0.0.1:${kafkaPort}`, '--influx-port', String(influxPort), '--pin-dir', pinDir, '--status-interval', '1s']);
    try {
      await waitReady(up);
      process.kill(up.child.pid as number, 'SIGINT');
      await new Promise((r) => setTimeout(r, 100));
      process.kill(-(up.child.pid as number), 'SIGINT');
      expect(await up.exited).toBe(0);
      expect(up.err).not.toContain('forced exit');
      expect(up.out).toContain('nettally up: stopped');
      expect(existsSync(pinDir)).toBe(false);
    } finally {
      await up.kill();
      rmSync(pinDir, { recursive: true, force: true });
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

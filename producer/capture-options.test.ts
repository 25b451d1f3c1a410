// One capture option set: every command that loads the capture lists the same flags and env vars for it, and all
// read the one table of defaults. Needs no root: it looks at --help and parsed values only.
import { formatHelp, parseArgs, type CommandSpec, type ParsedArgs } from '../lib/args';
import { command as captureCommand } from './cmd-capture';
import { command as producerCommand } from './cmd-producer';
import { command as topCommand } from './cmd-top';
import { command as upCommand } from '../bin/up';
import { CAPTURE_DEFAULTS, CAPTURE_OPTIONS, captureSettingsAsFlags, captureSettingsFrom, checkSettings } from './capture-options';
import { resolveCaptureOptions } from './capture';

/** flag → env var (or '' without one) of every row of a --help text. */
function helpRows(spec: CommandSpec): Map<string, string> {
  const rows = new Map<string, string>();
  // A row starts with "  -x, --flag" or "  --flag"; a long flag puts its text on the next line.
  for (const row of formatHelp(spec).split(/\n(?= {2}-)/)) {
    const flag = /^ {2}(?:-\w, )?--([a-z0-9-]+)/.exec(row)?.[1];
    if (flag) rows.set(flag, /\[env ([A-Z0-9_]+)/.exec(row)?.[1] ?? '');
  }
  return rows;
}

/** The options of `capture` that are not about the capture itself (what to print, when to stop). */
const CAPTURE_COMMAND_OWN = ['json', 'duration', 'count', 'snapshot', 'check', 'help'];

function parsed(spec: CommandSpec, argv: string[], env: NodeJS.ProcessEnv = {}): ParsedArgs {
  const a = parseArgs(spec, argv, env);
  if (a === 'help') throw new Error('unexpected help');
  return a;
}

describe('capture options', () => {
  it('capture --help and producer --help list the same capture flags with the same env vars', () => {
    const capture = helpRows(captureCommand.spec);
    const producer = helpRows(producerCommand.spec);
    const captureSettings = [...capture].filter(([flag]) => !CAPTURE_COMMAND_OWN.includes(flag));
    expect(captureSettings.length).toBeGreaterThanOrEqual(CAPTURE_OPTIONS.length + 1);
    for (const [flag, env] of captureSettings) expect([flag, producer.get(flag)]).toEqual([flag, env]);
    for (const o of [...CAPTURE_OPTIONS, { name: 'pin-dir', env: 'NETTALLY_PIN_DIR' }]) {
      expect([o.name, capture.get(o.name)]).toEqual([o.name, o.env]);
      expect([o.name, producer.get(o.name)]).toEqual([o.name, o.env]);
    }
  });

  it('up lists them too, and top the map sizes, under the same names', () => {
    const up = helpRows(upCommand.spec);
    for (const o of CAPTURE_OPTIONS) expect([o.name, up.get(o.name)]).toEqual([o.name, o.env]);
    const top = helpRows(topCommand.spec);
    for (const name of ['max-connections', 'ring-buffer-bytes']) expect(top.get(name)).toBe(CAPTURE_OPTIONS.find((o) => o.name === name)?.env);
  });

  it('capture and producer parse the same values to the same settings, with one table of defaults', () => {
    const argv = ['--flush-interval', '2s', '--flush-threshold-bytes', '1MiB', '--ring-buffer-bytes', '64KiB', '--max-connections', '4096', '--iface-interval', '0', '--pin-dir', '/sys/fs/bpf/x'];
    const fromCapture = captureSettingsFrom(parsed(captureCommand.spec, argv));
    expect(fromCapture).toEqual({ flushIntervalMs: 2000, flushThresholdBytes: 1 << 20, ringBufferBytes: 65536, maxConnections: 4096, ifaceIntervalMs: 0, pinDir: '/sys/fs/bpf/x' });
    expect(captureSettingsFrom(parsed(producerCommand.spec, argv))).toEqual(fromCapture);
    // up hands the producer exactly what it parsed
    expect(captureSettingsFrom(parsed(producerCommand.spec, captureSettingsAsFlags(fromCapture)))).toEqual(fromCapture);

    const defaults = captureSettingsFrom(parsed(captureCommand.spec, []));
    expect(defaults).toEqual({ ...CAPTURE_DEFAULTS });
    const { pinDir, ...producerDefaults } = captureSettingsFrom(parsed(producerCommand.spec, []));
    expect(producerDefaults).toEqual(defaults);
    expect(pinDir).toBe('/sys/fs/bpf/nettally');
    // the API's defaults are the flags' defaults
    const api = resolveCaptureOptions({});
    for (const k of Object.keys(CAPTURE_DEFAULTS) as (keyof typeof CAPTURE_DEFAULTS)[]) expect([k, api[k]]).toEqual([k, CAPTURE_DEFAULTS[k]]);
  });

  it('the same limits on every command: flush interval at least 100ms, a power-of-two ring buffer', () => {
    for (const spec of [captureCommand.spec, producerCommand.spec, upCommand.spec]) {
      expect(() => parsed(spec, ['--flush-interval', '50ms'])).toThrow(/--flush-interval .*at least 100ms/);
      expect(() => captureSettingsFrom(parsed(spec, ['--ring-buffer-bytes', '12KiB', '--pin-dir', '/sys/fs/bpf/x']))).toThrow(/--ring-buffer-bytes .*power of two/);
    }
    expect(() => resolveCaptureOptions({ flushIntervalMs: 50 })).toThrow(/flushIntervalMs/);
  });

  it('old names keep working with a warning naming the new one', () => {
    const a = parsed(captureCommand.spec, ['--ring-buffer', '8KiB', '--flush-threshold', '2MiB']);
    expect(captureSettingsFrom(a)).toMatchObject({ ringBufferBytes: 8192, flushThresholdBytes: 2 << 20 });
    expect(a.warnings).toEqual([expect.stringContaining('use --flush-threshold-bytes'), expect.stringContaining('use --ring-buffer-bytes')]);
    const p = parsed(producerCommand.spec, [], { NETTALLY_FLUSH_THRESHOLD: '1MiB', NETTALLY_BATCH_MAX_MS: '50ms' });
    expect(p.num('flush-threshold-bytes')).toBe(1 << 20);
    expect(p.num('batch-max-wait')).toBe(50);
    expect(p.warnings).toEqual([expect.stringContaining('NETTALLY_BATCH_MAX_MS is deprecated'), expect.stringContaining('NETTALLY_FLUSH_THRESHOLD is deprecated')]);
  });

  it('a --check never pins, never shares pinned maps, and fails when the pinned map has another size', () => {
    const s = { ...CAPTURE_DEFAULTS, pinDir: '/sys/fs/bpf/nt' };
    const { pinDir: _, ...unpinned } = s;
    expect(checkSettings({ ...unpinned })).toEqual({ settings: unpinned });
    expect(checkSettings(s, () => ({ pinned: false }))).toEqual({ settings: unpinned, note: expect.stringContaining('the run creates them') });
    const same = checkSettings(s, (dir) => ({ pinned: dir === '/sys/fs/bpf/nt', maxConnections: CAPTURE_DEFAULTS.maxConnections }));
    expect(same).toEqual({ settings: unpinned, note: expect.stringContaining('/sys/fs/bpf/nt were left alone') });
    expect(checkSettings(s, () => ({ pinned: true })).settings).toEqual(unpinned);
    expect(() => checkSettings({ ...s, maxConnections: 4096 }, () => ({ pinned: true, maxConnections: 1 << 20 }))).toThrow(/--max-connections .*is 4096.*has 1048576 entries/);
  });
});

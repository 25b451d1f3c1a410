import { CommandSpec, formatHelp, formatHostPort, parseArgs, parseBytes, parseDuration, parseHostPort } from './args';
import { NettallyError } from './errors';
import { chmodSync, unlinkSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';

const spec: CommandSpec = {
  name: 'demo',
  summary: 'a demo command',
  options: [
    { name: 'brokers', type: 'list', env: 'KAFKA_BROKERS', default: ['127.0.0.1:9092'], help: 'Kafka bootstrap brokers' },
    { name: 'interval', type: 'duration', default: '1s', help: 'refresh interval', min: 10 },
    { name: 'limit', type: 'bytes', default: 1024, help: 'spool limit' },
    { name: 'json', type: 'bool', default: false, help: 'JSON output' },
    { name: 'format', type: 'enum', choices: ['table', 'csv'], default: 'table', help: 'output format' },
    { name: 'token', type: 'string', env: 'INFLUX_TOKEN', secret: true, help: 'InfluxDB token' },
  ],
};

function configErrorOf(fn: () => unknown): NettallyError {
  try {
    fn();
  } catch (e) {
    if (e instanceof NettallyError) return e;
    throw e;
  }
  throw new Error('expected a configuration error');
}

describe('parseArgs', () => {
  it('takes flags over env over defaults', () => {
    const a = parseArgs(spec, ['--interval', '250ms', '--json'], { KAFKA_BROKERS: 'a:1, b:2' });
    if (a === 'help') throw new Error('unexpected help');
    expect(a.list('brokers')).toEqual(['a:1', 'b:2']);
    expect(a.num('interval')).toBe(250);
    expect(a.bool('json')).toBe(true);
    expect(a.sources.brokers).toBe('env');
    expect(a.sources.format).toBe('default');
  });

  it('names the bad setting and its env var', () => {
    const e = configErrorOf(() => parseArgs(spec, [], { KAFKA_BROKERS: 'x', INFLUX_TOKEN: 't' }) && parseArgs(spec, ['--format', 'xml'], {}));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toContain('--format');
    expect(e.message).toContain('table, csv');
    expect(configErrorOf(() => parseArgs(spec, ['--bogus'], {})).message).toContain('--bogus');
    expect(configErrorOf(() => parseArgs(spec, ['--interval', '5ms'], {})).message).toContain('at least 10');
  });

  it('reads secrets from <ENV>_FILE and keeps them out of help', () => {
    const path = `${tmpdir()}/nettally-args-${process.pid}`;
    writeFileSync(path, 's3cret\n');
    try {
      const a = parseArgs(spec, [], { INFLUX_TOKEN_FILE: path });
      if (a === 'help') throw new Error('unexpected help');
      expect(a.str('token')).toBe('s3cret');
    } finally {
      unlinkSync(path);
    }
    expect(formatHelp(spec)).toContain('INFLUX_TOKEN_FILE');
    expect(formatHelp(spec)).toMatch(/LOG_FORMAT {2}json\|pretty/);
    expect(parseArgs(spec, ['-h'], {})).toBe('help');
  });

  it('warns about a secret given as a flag (visible in /proc/<pid>/cmdline) and points to the _FILE variant', () => {
    const a = parseArgs(spec, ['--token', 'hunter2'], {});
    if (a === 'help') throw new Error('unexpected help');
    expect(a.str('token')).toBe('hunter2');
    expect(a.warnings).toHaveLength(1);
    expect(a.warnings[0]).toMatch(/--token was given on the command line/);
    expect(a.warnings[0]).toContain('/proc/<pid>/cmdline');
    expect(a.warnings[0]).toContain('INFLUX_TOKEN_FILE');
    expect(a.warnings[0]).not.toContain('hunter2');
    // From the environment or a private file: nothing to warn about.
    const b = parseArgs(spec, [], { INFLUX_TOKEN: 'hunter2' });
    if (b === 'help') throw new Error('unexpected help');
    expect(b.warnings).toEqual([]);
  });

  it('warns about a secret file that group or others can read, naming the file and the fix', () => {
    const path = `${tmpdir()}/nettally-args-loose-${process.pid}`;
    writeFileSync(path, 's3cret\n', { mode: 0o600 });
    try {
      const ok = parseArgs(spec, [], { INFLUX_TOKEN_FILE: path });
      if (ok === 'help') throw new Error('unexpected help');
      expect(ok.warnings).toEqual([]);
      for (const [mode, who] of [[0o644, 'all users'], [0o640, 'its group']] as const) {
        chmodSync(path, mode);
        for (const [argv, env] of [[[], { INFLUX_TOKEN_FILE: path }], [['--token-file', path], {}]] as const) {
          const a = parseArgs(spec, argv, env);
          if (a === 'help') throw new Error('unexpected help');
          expect(a.str('token')).toBe('s3cret');
          expect(a.warnings).toEqual([expect.stringContaining(`secret file ${path}`)]);
          expect(a.warnings[0]).toContain(who);
          expect(a.warnings[0]).toContain(`chmod 600 ${path}`);
          expect(a.warnings[0]).not.toContain('s3cret');
        }
      }
    } finally {
      unlinkSync(path);
    }
  });

  describe('deprecated names', () => {
    const renamed: CommandSpec = {
      name: 'demo',
      summary: 's',
      options: [{ name: 'ring-buffer-bytes', type: 'bytes', env: 'NT_RING_BUFFER_BYTES', default: 4096, min: 4096, help: 'r', deprecated: { flags: ['ring-buffer'], env: ['NT_RING_BUFFER'] } }],
    };
    const parsed = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
      const a = parseArgs(renamed, argv, env);
      if (a === 'help') throw new Error('unexpected help');
      return a;
    };

    it('an old flag still sets the option, with a warning naming the new flag', () => {
      const a = parsed(['--ring-buffer', '64KiB']);
      expect(a.num('ring-buffer-bytes')).toBe(65536);
      expect(a.sources['ring-buffer-bytes']).toBe('flag');
      expect(a.warnings).toEqual([expect.stringMatching(/^--ring-buffer is deprecated .*use --ring-buffer-bytes \(env NT_RING_BUFFER_BYTES\)/)]);
      expect(parsed(['--ring-buffer=8KiB']).num('ring-buffer-bytes')).toBe(8192);
    });

    it('an old env var still sets the option, with a warning; the new names win over it silently', () => {
      const a = parsed([], { NT_RING_BUFFER: '8KiB' });
      expect(a.num('ring-buffer-bytes')).toBe(8192);
      expect(a.sources['ring-buffer-bytes']).toBe('env');
      expect(a.warnings).toEqual([expect.stringMatching(/^env NT_RING_BUFFER is deprecated .*use --ring-buffer-bytes/)]);
      for (const b of [parsed([], { NT_RING_BUFFER: '8KiB', NT_RING_BUFFER_BYTES: '16KiB' }), parsed(['--ring-buffer-bytes', '16KiB'], { NT_RING_BUFFER: '8KiB' })]) {
        expect(b.num('ring-buffer-bytes')).toBe(16384);
        expect(b.warnings).toEqual([]);
      }
    });

    it('the last of old and new flag wins, as for any repeated flag; the warning only when the old one did', () => {
      expect(parsed(['--ring-buffer', '8KiB', '--ring-buffer-bytes', '16KiB'])).toMatchObject({ values: { 'ring-buffer-bytes': 16384 }, warnings: [] });
      expect(parsed(['--ring-buffer-bytes', '16KiB', '--ring-buffer', '8KiB']).num('ring-buffer-bytes')).toBe(8192);
    });

    it('a bad value under an old name is reported under the name typed and the new one', () => {
      const e = configErrorOf(() => parseArgs(renamed, ['--ring-buffer', '1000'], {}));
      expect(e.message).toMatch(/--ring-buffer \(now --ring-buffer-bytes \(env NT_RING_BUFFER_BYTES\)\).*at least 4096/);
      expect(configErrorOf(() => parseArgs(renamed, [], { NT_RING_BUFFER: 'big' })).message).toMatch(/env NT_RING_BUFFER \(now --ring-buffer-bytes/);
    });

    it('--help shows only the new names', () => {
      const help = formatHelp(renamed);
      expect(help).toContain('--ring-buffer-bytes');
      expect(help).toContain('NT_RING_BUFFER_BYTES');
      expect(help).not.toMatch(/--ring-buffer\b(?!-)/);
      expect(help).not.toMatch(/NT_RING_BUFFER\b(?!_)/);
    });
  });

  it('parses durations and sizes', () => {
    expect(parseDuration('2')).toBe(2000);
    expect(parseDuration('1h')).toBe(3_600_000);
    expect(parseDuration('soon')).toBeUndefined();
    expect(parseBytes('64KiB')).toBe(65536);
    expect(parseBytes('10MB')).toBe(10_000_000);
    expect(parseBytes('3 parsecs')).toBeUndefined();
  });
});

describe('formatHelp', () => {
  it('shows numeric defaults the way a person writes them', () => {
    const help = formatHelp({
      name: 'x',
      summary: 's',
      options: [
        { name: 'window', type: 'duration', default: 60_000, help: 'w' },
        { name: 'wait', type: 'duration', default: 1500, help: 'w' },
        { name: 'buf', type: 'bytes', default: 16 * 1024 * 1024, help: 'b' },
      ],
    });
    expect(help).toContain('default 1m]');
    expect(help).toContain('default 1500ms]');
    expect(help).toContain('default 16MiB]');
  });
});

describe('parseHostPort', () => {
  const setting = '--listen (env NT_LISTEN)';
  const rules = { example: '127.0.0.1:9092' };
  const errorOf = (value: string, r: Parameters<typeof parseHostPort>[2] = rules): string => configErrorOf(() => parseHostPort(setting, value, r)).message;

  it('refuses what is not host:port, naming the setting, the value and an example to write instead', () => {
    for (const bad of ['', 'nonsense', '127.0.0.1', '127.0.0.1:', ':9092', 'a b:9092', '127.0.0.1:90x2', '[::1]', '[::1]9092']) {
      const m = errorOf(bad);
      expect(m).toContain('--listen (env NT_LISTEN)');
      expect(m).toContain(JSON.stringify(bad));
      expect(m).toContain('127.0.0.1:9092');
    }
  });

  it('says a port is out of range and which range is accepted', () => {
    expect(errorOf('127.0.0.1:65536')).toMatch(/port 65536 .*0 to 65535/);
    expect(errorOf('127.0.0.1:99999999')).toMatch(/0 to 65535/);
    expect(errorOf('127.0.0.1:0', { ...rules, minPort: 1 })).toMatch(/port 0 .*1 to 65535/);
  });

  it('tells how to write an IPv6 address without brackets, and refuses brackets around anything else', () => {
    expect(errorOf('::1:9092')).toContain('[::1]:9092');
    expect(errorOf('fe80::1:8087')).toContain('[fe80::1]:8087');
    expect(errorOf('[localhost]:9092')).toMatch(/brackets.*IPv6/);
    expect(errorOf('[127.0.0.1]:9092')).toMatch(/brackets.*IPv6/);
  });

  it('refuses a URL, saying to drop the scheme', () => {
    expect(errorOf('http://127.0.0.1:8087')).toMatch(/without http:\/\//);
  });

  it('refuses a bare port unless the option has a default host', () => {
    expect(errorOf('9464')).toContain('"9464"');
    expect(parseHostPort(setting, '9464', { example: '9464', defaultHost: '127.0.0.1' })).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(errorOf('70000', { example: '9464', defaultHost: '127.0.0.1' })).toMatch(/port 70000/);
  });

  it('parses host:port, [v6]:port and port 0, trimming blanks', () => {
    expect(parseHostPort(setting, ' 127.0.0.1:9092 ', rules)).toEqual({ host: '127.0.0.1', port: 9092 });
    expect(parseHostPort(setting, 'localhost:0', rules)).toEqual({ host: 'localhost', port: 0 });
    expect(parseHostPort(setting, 'kafka-1.example.com:65535', rules)).toEqual({ host: 'kafka-1.example.com', port: 65535 });
    expect(parseHostPort(setting, '[::1]:8087', rules)).toEqual({ host: '::1', port: 8087 });
    expect(parseHostPort(setting, '[::ffff:127.0.0.1]:1', rules)).toEqual({ host: '::ffff:127.0.0.1', port: 1 });
  });

  it('formats an address back the way parseHostPort reads it', () => {
    expect(formatHostPort({ host: '::1', port: 9092 })).toBe('[::1]:9092');
    expect(formatHostPort({ host: '127.0.0.1', port: 9092 })).toBe('127.0.0.1:9092');
    for (const v of ['[::1]:9092', 'localhost:1']) expect(formatHostPort(parseHostPort(setting, v, rules))).toBe(v);
  });
});

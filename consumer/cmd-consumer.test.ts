// Unit tests of `nettally consumer` configuration: defaults, validation naming the setting, secrets from files.
import { mkdtempSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { parseArgs } from '../lib/args';
import { command, consumerConfigFrom, redactUrl } from './cmd-consumer';

function config(argv: string[], env: NodeJS.ProcessEnv = {}): ReturnType<typeof consumerConfigFrom> {
  const args = parseArgs(command.spec, argv, env);
  if (args === 'help') throw new Error('help');
  return consumerConfigFrom(args);
}

test('defaults: 1-minute windows, 1-hour rollup, v1 writes to the local InfluxDB', () => {
  const c = config([]);
  expect(c.aggregation.windowMs).toBe(60_000);
  expect(c.aggregation.rollupMs).toBe(3_600_000);
  expect(c.aggregation.allowedLatenessMs).toBe(120_000);
  expect(c.group).toBe('nettally-consumer');
  expect(c.topic).toBe('nettally.records');
  expect(c.dlqTopic).toBe('nettally.records.dlq');
  expect(c.pointsDlqTopic).toBe('nettally.points.dlq');
  expect(c.influx).toMatchObject({ url: 'http://127.0.0.1:8086', api: 'v1', db: 'nettally' });
  expect(c.flushIntervalMs).toBe(5000);
});

test('bad settings are refused naming the flag', () => {
  expect(() => config(['--window', '7m'])).toThrow(/--window/);
  expect(() => config(['--window', 'soon'])).toThrow(/--window/);
  expect(() => config(['--influx-url', 'localhost:8086'])).toThrow(/--influx-url/);
  expect(() => config(['--influx-api', 'v3'])).toThrow(/--influx-api/);
  expect(() => config(['--dlq-topic', 'nettally.records'])).toThrow(/--state-topic\/--dlq-topic/);
  expect(() => config(['--points-dlq-topic', 'nettally.records'])).toThrow(/--points-dlq-topic/);
  expect(() => config(['--influx-username', 'u'])).toThrow(/--influx-username/);
  expect(() => config(['--brokers', 'nohost'])).toThrow(/--brokers/);
});

test('InfluxDB secrets come from env or files and are only in the config, not in the logged URL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nettally-consumer-test-'));
  try {
    writeFileSync(join(dir, 'pw'), 'from-file\n');
    const c = config(['--influx-username', 'billing'], { INFLUX_PASSWORD_FILE: join(dir, 'pw') });
    expect(c.influx.password).toBe('from-file');
    expect(config([], { INFLUX_TOKEN: 'tok' }).influx.token).toBe('tok');
    expect(redactUrl('https://user:secret@influx.example:8086/')).toBe('https://influx.example:8086');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--remote-classes / NETTALLY_REMOTE_CLASSES: the class map is read at start; a bad line stops it naming file:line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nettally-consumer-test-'));
  try {
    expect(config([]).aggregation.remoteClasses.classify('10.1.2.3')).toBe('internal');
    writeFileSync(join(dir, 'ok'), '# zones\n10.20.0.0/16 zone-b\n');
    expect(config(['--remote-classes', join(dir, 'ok')]).aggregation.remoteClasses.classify('10.20.1.1')).toBe('zone-b');
    expect(config([], { NETTALLY_REMOTE_CLASSES: join(dir, 'ok') }).aggregation.remoteClasses.classify('10.20.1.1')).toBe('zone-b');
    writeFileSync(join(dir, 'bad'), '10.20.0.0/16 zone-b\n10.30.0.0/16\n');
    expect(() => config([], { NETTALLY_REMOTE_CLASSES: join(dir, 'bad') })).toThrow(`invalid setting --remote-classes (env NETTALLY_REMOTE_CLASSES): ${join(dir, 'bad')}:2: expected 2 columns, got 1`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

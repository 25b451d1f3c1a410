// The terminal formatter: real pino JSON lines in, one readable line out, and nothing from a logged value that a
// terminal would execute.
import pino from 'pino';
import { formatLine, logFormat, StatusLine } from './log';

/** What a real pino logger writes for one call. */
function jsonOf(log: (l: pino.Logger) => void): string {
  const lines: string[] = [];
  const l = pino({ name: 'nettally-test', level: 'trace' }, { write: (s: string) => lines.push(s) });
  log(l);
  expect(lines).toHaveLength(1);
  return lines[0];
}

// eslint-disable-next-line no-control-regex -- asserting that none reach the terminal
const RAW_CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/;

describe('formatLine', () => {
  it('shows local time, the level, the component and the message, then key=value fields', () => {
    const at = new Date(2026, 0, 2, 3, 4, 5).getTime();
    const line = formatLine(jsonOf((l) => l.warn({ component: 'producer', time_ms: 1, spool_bytes: 2048, ok: true }, 'spool growing')).replace(/"time":\d+/, `"time":${at}`));
    expect(line).toBe('03:04:05 WARN  producer: spool growing time_ms=1 spool_bytes=2048 ok=true\n');
  });

  it.each([
    [10, 'TRACE'],
    [20, 'DEBUG'],
    [30, 'INFO '],
    [40, 'WARN '],
    [50, 'ERROR'],
    [60, 'FATAL'],
  ])('names level %i %s', (level, name) => {
    expect(formatLine(JSON.stringify({ level, time: 0, msg: 'm' })).slice(9, 15)).toBe(`${name} `);
  });

  it('leaves out pino bookkeeping and does not repeat a component the message already names', () => {
    const line = formatLine(jsonOf((l) => l.info({ component: 'consumer' }, 'consumer: partition state loaded')));
    expect(line).toMatch(/^\d\d:\d\d:\d\d INFO {2}consumer: partition state loaded\n$/);
    expect(line).not.toMatch(/pid=|hostname=|name=|level=|time=/);
  });

  it('quotes values with spaces, quotes, = or backslashes, and shows objects as JSON', () => {
    const line = formatLine(jsonOf((l) => l.info({ a: 'two words', b: 'x=y', c: 'back\\slash', d: 'say "hi"', e: { k: [1, 2] }, f: null, g: '' }, 'm')));
    expect(line).toContain(' a="two words" b="x=y" c="back\\\\slash" d="say \\"hi\\"" e={"k":[1,2]} f=null g=""\n');
  });

  it('escapes every control character from messages, keys, values, components and stacks', () => {
    const hostile = 'evil\x1b]0;pwned\x07\x1b[2J\r\n\x9b31m\x7f\x00end';
    const line = formatLine(jsonOf((l) => l.error({ component: hostile, comm: hostile, [hostile]: 1, nested: { v: hostile }, stack: `Error: ${hostile}\n    at x` }, hostile)));
    expect(line).not.toMatch(RAW_CONTROL);
    // A newline in a value cannot start a line of its own: only the stack continues on lines, all indented.
    const [first, ...rest] = line.split('\n');
    expect(first).toMatch(/^\d\d:\d\d:\d\d ERROR evil/);
    expect(rest.pop()).toBe('');
    expect(rest).toEqual(['    Error: evil\\x1b]0;pwned\\x07\\x1b[2J\\x0d', '    \\x9b31m\\x7f\\x00end', '        at x']);
    expect(line).toContain('evil\\x1b]0;pwned\\x07\\x1b[2J');
    expect(line).toContain('\\x9b31m\\x7f');
  });

  it('passes a line that is not JSON through, escaped', () => {
    expect(formatLine('plain \x1b[31mred\n')).toBe('plain \\x1b[31mred\n');
  });
});

describe('logFormat', () => {
  it('is pretty on a terminal and json elsewhere, unless LOG_FORMAT says otherwise', () => {
    expect(logFormat({}, true)).toBe('pretty');
    expect(logFormat({}, false)).toBe('json');
    expect(logFormat({ LOG_FORMAT: 'json' }, true)).toBe('json');
    expect(logFormat({ LOG_FORMAT: 'pretty' }, false)).toBe('pretty');
  });

  it('rejects an unknown LOG_FORMAT by name', () => {
    expect(() => logFormat({ LOG_FORMAT: 'yaml' }, true)).toThrow(/LOG_FORMAT: must be json or pretty.*"yaml"/);
  });
});

describe('StatusLine', () => {
  it('redraws in place, prints other lines above itself, and ends as an ordinary line', () => {
    let screen = '';
    const s = new StatusLine((t) => (screen += t));
    s.print('before\n');
    s.show('status 1\n');
    s.show('status 2');
    s.print('a log line\n');
    s.show('status \x1b[2J3');
    s.end();
    s.print('after\n');
    expect(screen).toBe('before\n\r\x1b[Kstatus 1\r\x1b[Kstatus 2\r\x1b[Ka log line\nstatus 2\r\x1b[Kstatus \\x1b[2J3\nafter\n');
  });

  it('cuts the status to the terminal width, which a wrapped line would defeat', () => {
    let screen = '';
    let cols: number | undefined = 10;
    const s = new StatusLine((t) => (screen += t), () => cols);
    s.show('0123456789abcdef');
    expect(screen).toBe('\r\x1b[K01234567…');
    cols = undefined;
    s.show('0123456789abcdef');
    expect(screen.endsWith('\r\x1b[K0123456789abcdef')).toBe(true);
  });
});

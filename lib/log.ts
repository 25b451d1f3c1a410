// The project's logger: pino on stderr (stdout belongs to command output such as `capture --json`). JSON lines,
// except on a terminal, where people read it: there each line is formatted (formatLine) and a live status line
// (StatusLine, `nettally up`) is kept out of its way. LOG_FORMAT=json|pretty overrides the choice.
import pino from 'pino';
import { configError } from './errors';
import { escapeControls } from './text';

export type Logger = pino.Logger;

/** Keys whose values are never logged (secrets reach us through config objects). */
const REDACT = ['password', 'token', 'sasl.password', '*.password', '*.token', 'config.kafka.sasl.password', 'config.influx.token'];

export type LogFormat = 'json' | 'pretty';

/**
 * LOG_FORMAT if set, else `pretty` when both stdout and stderr are terminals (someone is watching), else `json`
 * (a pipe, a file, journald, `up` keeping its children's lines in its log files).
 */
export function logFormat(env: NodeJS.ProcessEnv = process.env, isTTY = process.stdout.isTTY === true && process.stderr.isTTY === true): LogFormat {
  const v = env.LOG_FORMAT;
  if (v === undefined || v === '') return isTTY ? 'pretty' : 'json';
  if (v === 'json' || v === 'pretty') return v;
  throw configError('LOG_FORMAT', `must be json or pretty (or unset: pretty on a terminal, json otherwise), got ${JSON.stringify(v)}`);
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** pino's own fields, shown in the line's fixed part or not at all. */
const FIXED = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'component', 'stack']);

/** A value as `key=value` shows it: bare when unambiguous, else JSON-quoted; never a raw control character. */
function showValue(v: unknown): string {
  const s = typeof v === 'string' ? (/^[^\s"=\\]+$/.test(v) ? v : JSON.stringify(v)) : (JSON.stringify(v) ?? String(v));
  return escapeControls(s);
}

/**
 * One pino JSON line as a terminal line: `12:03:04 WARN  producer: message key=value …` (local time), a stack on
 * indented lines below. Every text that came from outside (messages, values, a child's output) has its control
 * characters escaped (`\x1b`), so a hostile process name cannot move the cursor or retitle the terminal.
 */
export function formatLine(json: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return escapeControls(json.replace(/\n$/, '')) + '\n';
  }
  const t = typeof rec.time === 'number' ? new Date(rec.time) : new Date();
  const clock = [t.getHours(), t.getMinutes(), t.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
  const level = (typeof rec.level === 'number' ? LEVELS[rec.level] : undefined) ?? String(rec.level ?? '');
  const msg = escapeControls(String(rec.msg ?? ''));
  const component = typeof rec.component === 'string' ? escapeControls(rec.component) : '';
  // up's lines about a child already begin with its name ("producer: capture attached").
  const head = component && !msg.startsWith(`${component}:`) ? `${component}: ${msg}` : msg;
  const fields = Object.entries(rec)
    .filter(([k, v]) => !FIXED.has(k) && v !== undefined)
    .map(([k, v]) => `${escapeControls(k)}=${showValue(v)}`);
  const stack = typeof rec.stack === 'string' ? rec.stack.split('\n').map((l) => `    ${escapeControls(l)}\n`).join('') : '';
  return `${clock} ${level.padEnd(5)} ${head}${fields.length ? ' ' + fields.join(' ') : ''}\n${stack}`;
}

/** The status line on screen, if any: every pretty logger of the process prints above it (the dispatcher's too). */
const screen: { status?: StatusLine } = {};

/**
 * The one line a terminal shows in place at its bottom (`up`'s status): redrawn with carriage return + erase-line,
 * cleared before anything else is printed and redrawn after it, left as an ordinary line by end().
 */
export class StatusLine {
  private text = '';
  private shown = false;
  /**
   * @param write the terminal's writer (up's: stops writing once the terminal is gone)
   * @param columns the terminal's width now (it can be resized), if known
   */
  constructor(
    private readonly write: (s: string) => void,
    private readonly columns: () => number | undefined = () => undefined,
  ) {}

  /** Shows `text` (one line, no newline) in place of the current status, cut to the terminal's width. */
  show(text: string): void {
    this.text = escapeControls(text.replace(/\n$/, ''));
    // A line the terminal wraps is not erased by \r + erase-line: each redraw would leave its first rows behind.
    const cols = this.columns();
    if (cols !== undefined && cols > 1 && this.text.length > cols - 1) this.text = this.text.slice(0, cols - 2) + '…';
    this.write(`\r\x1b[K${this.text}`);
    this.shown = true;
    screen.status = this;
  }

  /** Prints `s` (whole lines) above the status line: erase it, print, draw it again. */
  print(s: string, to: (s: string) => void = this.write): void {
    if (this.shown) this.write('\r\x1b[K');
    to(s);
    if (this.shown) this.write(this.text);
  }

  /** Leaves the last status on screen as a normal line; later output goes below it. */
  end(): void {
    if (this.shown) this.write('\n');
    this.shown = false;
    if (screen.status === this) screen.status = undefined;
  }
}

/**
 * `alsoTo`: a second destination that gets every line too, always JSON (`nettally up`'s own log file, which
 * outlives a closed stderr). The stderr destination stops writing, without an error, once stderr is a broken pipe.
 * `format` (default logFormat()) is stderr's; pretty lines go above a StatusLine on screen.
 */
export function createLogger(opts: { level?: string; name?: string; alsoTo?: pino.DestinationStream; format?: LogFormat } = {}): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info';
  const fd2 = pino.destination({ fd: 2, sync: true });
  const stderr: pino.DestinationStream =
    (opts.format ?? logFormat()) === 'pretty'
      ? {
          write: (line: string): void => {
            const text = formatLine(line);
            if (screen.status) screen.status.print(text, (s) => fd2.write(s));
            else fd2.write(text);
          },
        }
      : fd2;
  return pino(
    {
      name: opts.name ?? 'nettally',
      level,
      redact: { paths: REDACT, censor: '[redacted]' },
    },
    opts.alsoTo ? pino.multistream([{ level: level as pino.Level, stream: stderr }, { level: level as pino.Level, stream: opts.alsoTo }]) : stderr,
  );
}

/** A logger that drops everything, for library use without logging. */
export const silentLogger: Logger = pino({ level: 'silent' });

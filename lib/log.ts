// The project's logger: pino JSON lines on stderr (stdout belongs to command output such as `capture --json`).
import pino from 'pino';

export type Logger = pino.Logger;

/** Keys whose values are never logged (secrets reach us through config objects). */
const REDACT = ['password', 'token', 'sasl.password', '*.password', '*.token', 'config.kafka.sasl.password', 'config.influx.token'];

/**
 * `alsoTo`: a second destination that gets every line too (`nettally up`'s own log file, which outlives a closed
 * stderr). The stderr destination stops writing, without an error, once stderr is a broken pipe.
 */
export function createLogger(opts: { level?: string; name?: string; alsoTo?: pino.DestinationStream } = {}): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info';
  const stderr = pino.destination({ fd: 2, sync: true });
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

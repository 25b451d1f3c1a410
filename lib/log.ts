// The project's logger: pino JSON lines on stderr (stdout belongs to command output such as `capture --json`).
import pino from 'pino';

export type Logger = pino.Logger;

/** Keys whose values are never logged (secrets reach us through config objects). */
const REDACT = ['password', 'token', 'sasl.password', '*.password', '*.token', 'config.kafka.sasl.password', 'config.influx.token'];

export function createLogger(opts: { level?: string; name?: string } = {}): Logger {
  return pino(
    {
      name: opts.name ?? 'nettally',
      level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
      redact: { paths: REDACT, censor: '[redacted]' },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

/** A logger that drops everything, for library use without logging. */
export const silentLogger: Logger = pino({ level: 'silent' });

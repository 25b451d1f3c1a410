// One error type for the whole project: a stable code, a retriable flag and context fields.

export type ErrorCode =
  | 'CONFIG_INVALID' // a flag, env var or config value is wrong; the message names it
  | 'PRIVILEGES' // not root / missing CAP_BPF+CAP_PERFMON
  | 'KERNEL_UNSUPPORTED' // no BTF, missing tracepoint, load/attach failure
  | 'KAFKA_UNAVAILABLE'
  | 'INFLUX_UNAVAILABLE'
  | 'RECORD_MALFORMED' // a record that cannot be decoded (bad magic, unknown fingerprint, truncated)
  | 'SPOOL_FULL'
  | 'PROTOCOL' // a peer broke the wire protocol
  | 'INTERNAL';

/** Base error: `code` is stable for programs, `message` is for people, `retriable` says whether trying again can help. */
export class NettallyError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly context: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { retriable?: boolean; cause?: unknown; context?: Record<string, unknown> } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'NettallyError';
    this.code = code;
    this.retriable = opts.retriable ?? false;
    this.context = Object.freeze({ ...(opts.context ?? {}) });
  }
}

/** A configuration error that names the setting (flag and env var) and what would be accepted. */
export function configError(setting: string, problem: string, context: Record<string, unknown> = {}): NettallyError {
  return new NettallyError('CONFIG_INVALID', `invalid setting ${setting}: ${problem}`, { context: { setting, ...context } });
}

export function isRetriable(err: unknown): boolean {
  return err instanceof NettallyError ? err.retriable : false;
}

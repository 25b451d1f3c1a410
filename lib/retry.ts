// The one retry loop: exponential backoff with a cap, retriable vs permanent errors (NettallyError.retriable unless
// the caller classifies), an AbortSignal that stops it, and an onAttempt hook where the caller logs and keeps status.
// Nothing retries in silence: every failure that is retried goes through onAttempt first.
import { isRetriable } from './errors';

export interface AttemptFailure {
  /** The failed attempt, from 1. */
  attempt: number;
  error: unknown;
  /** What `retriable` said about the error (false: only an operator can fix it, yet retryPermanent keeps trying). */
  retriable: boolean;
  /** How long the loop waits before the next attempt. */
  delayMs: number;
}

export interface RetryOptions {
  /** First wait; each further wait doubles, up to the cap. */
  initialMs: number;
  /** Cap of the wait after a retriable error. */
  maxMs: number;
  /** Cap of the wait after a permanent error (with retryPermanent); defaults to maxMs. */
  permanentMaxMs?: number;
  /** Whether trying again can help; defaults to NettallyError.retriable (anything else counts as permanent). */
  retriable?: (error: unknown) => boolean;
  /**
   * false (default): a permanent error is thrown at once. true: it is retried too, because giving up would drop data
   * and the spool/partition waits for an operator; onAttempt must then say so loudly on every attempt.
   */
  retryPermanent?: boolean;
  /**
   * Stops the retrying: a failure once it is aborted, or the end of a wait it cut short, throws signal.reason;
   * no attempt starts after it. An attempt in flight is not interrupted (pass the signal to the work for that).
   */
  signal?: AbortSignal;
  /** Called after each failure that will be retried, before the wait. Throwing from it ends the loop with that error. */
  onAttempt?: (failure: AttemptFailure) => void;
  /** How to wait (e.g. while heartbeating); must return early when `signal` aborts. Defaults to a timer. */
  wait?: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
}

/** Waits `ms`, or less if `signal` aborts; leaves no listener behind on long-lived signals. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    if (signal?.aborted) done();
    else signal?.addEventListener('abort', done, { once: true });
  });
}

/** Runs `fn` until it resolves; see RetryOptions for when it gives up. */
export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const classify = opts.retriable ?? isRetriable;
  const wait = opts.wait ?? sleep;
  const { signal } = opts;
  let delayMs = opts.initialMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      const retriable = classify(error);
      if (!retriable && !opts.retryPermanent) throw error;
      opts.onAttempt?.({ attempt, error, retriable, delayMs });
      await wait(delayMs, signal);
      if (signal?.aborted) throw signal.reason;
      delayMs = Math.min(delayMs * 2, retriable ? opts.maxMs : (opts.permanentMaxMs ?? opts.maxMs));
    }
  }
}

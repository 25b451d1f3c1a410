import { NettallyError } from './errors';
import { retry, sleep, type AttemptFailure } from './retry';

const transient = (): NettallyError => new NettallyError('KAFKA_UNAVAILABLE', 'broker down', { retriable: true });
const permanent = (): NettallyError => new NettallyError('CONFIG_INVALID', 'bad setting');

/** fn failing with the given errors in turn, then returning 'ok'; records the attempt numbers it saw. */
function failing(errors: unknown[]): { fn: (attempt: number) => Promise<string>; attempts: number[] } {
  const attempts: number[] = [];
  const queue = [...errors];
  return {
    attempts,
    fn: (attempt) => {
      attempts.push(attempt);
      const e = queue.shift();
      return e === undefined ? Promise.resolve('ok') : Promise.reject(e);
    },
  };
}

/** A wait that records the delays asked for and returns at once. */
function recordingWait(): { wait: (ms: number) => Promise<void>; delays: number[] } {
  const delays: number[] = [];
  return { delays, wait: (ms) => (delays.push(ms), Promise.resolve()) };
}

test('backs off exponentially up to the cap and returns the first success', async () => {
  const { fn, attempts } = failing(Array.from({ length: 6 }, transient));
  const { wait, delays } = recordingWait();
  const seen: AttemptFailure[] = [];
  await expect(retry(fn, { initialMs: 100, maxMs: 500, wait, onAttempt: (f) => seen.push(f) })).resolves.toBe('ok');
  expect(attempts).toEqual([1, 2, 3, 4, 5, 6, 7]);
  expect(delays).toEqual([100, 200, 400, 500, 500, 500]);
  expect(seen.map((f) => [f.attempt, f.delayMs, f.retriable])).toEqual(delays.map((d, i) => [i + 1, d, true]));
  expect(seen.every((f) => (f.error as Error).message === 'broker down')).toBe(true);
});

test('a permanent error (NettallyError not retriable, or any other error) is thrown at once by default', async () => {
  for (const e of [permanent(), new Error('plain')]) {
    const { fn, attempts } = failing([e]);
    const onAttempt = jest.fn();
    await expect(retry(fn, { initialMs: 1, maxMs: 1, onAttempt })).rejects.toBe(e);
    expect(attempts).toEqual([1]);
    expect(onAttempt).not.toHaveBeenCalled();
  }
});

test('retryPermanent keeps trying permanent errors, reported as such, with their own cap', async () => {
  const { fn } = failing([permanent(), permanent(), permanent(), permanent(), transient(), transient()]);
  const { wait, delays } = recordingWait();
  const seen: boolean[] = [];
  await retry(fn, { initialMs: 100, maxMs: 150, permanentMaxMs: 1000, retryPermanent: true, wait, onAttempt: (f) => seen.push(f.retriable) });
  expect(seen).toEqual([false, false, false, false, true, true]);
  // the cap applied to each next wait is that of the error just seen
  expect(delays).toEqual([100, 200, 400, 800, 1000, 150]);
});

test('a caller-supplied classification replaces NettallyError.retriable', async () => {
  const { fn, attempts } = failing([new Error('LEADER_NOT_AVAILABLE'), new Error('TOPIC_AUTHORIZATION_FAILED')]);
  const retriable = (e: unknown): boolean => (e as Error).message === 'LEADER_NOT_AVAILABLE';
  await expect(retry(fn, { initialMs: 1, maxMs: 1, retriable })).rejects.toThrow('TOPIC_AUTHORIZATION_FAILED');
  expect(attempts).toEqual([1, 2]);
});

test('throwing from onAttempt ends the loop with that error', async () => {
  const { fn, attempts } = failing(Array.from({ length: 10 }, transient));
  const stop = new Error('deadline passed');
  const onAttempt = (f: AttemptFailure): void => {
    if (f.attempt === 3) throw stop;
  };
  await expect(retry(fn, { initialMs: 1, maxMs: 1, onAttempt })).rejects.toBe(stop);
  expect(attempts).toEqual([1, 2, 3]);
});

test('aborting the signal cuts the wait short and no attempt starts after it', async () => {
  const ctl = new AbortController();
  const reason = new Error('stopping');
  const { fn, attempts } = failing(Array.from({ length: 10 }, transient));
  const t0 = Date.now();
  const p = retry(fn, { initialMs: 60_000, maxMs: 60_000, signal: ctl.signal, onAttempt: () => setTimeout(() => ctl.abort(reason), 50) });
  await expect(p).rejects.toBe(reason);
  expect(attempts).toEqual([1]);
  expect(Date.now() - t0).toBeLessThan(30_000);
});

test('a failure once the signal is aborted is thrown as the abort reason, without onAttempt', async () => {
  const ctl = new AbortController();
  const reason = new Error('revoked');
  const onAttempt = jest.fn();
  const fn = (): Promise<never> => {
    ctl.abort(reason);
    return Promise.reject(transient());
  };
  await expect(retry(fn, { initialMs: 1, maxMs: 1, signal: ctl.signal, onAttempt })).rejects.toBe(reason);
  expect(onAttempt).not.toHaveBeenCalled();
});

test('sleep returns at once on an already aborted signal and leaves no listener', async () => {
  const ctl = new AbortController();
  ctl.abort();
  const t0 = Date.now();
  await sleep(60_000, ctl.signal);
  expect(Date.now() - t0).toBeLessThan(30_000);
  const live = new AbortController();
  const add = jest.spyOn(live.signal, 'addEventListener');
  const remove = jest.spyOn(live.signal, 'removeEventListener');
  await sleep(1, live.signal);
  expect(remove).toHaveBeenCalledTimes(add.mock.calls.length);
});

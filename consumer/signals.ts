// Waiting inside a consumer-group member: signals that combine stop and ownership fences, and heartbeats during
// long waits so that the group keeps the member.
import { setMaxListeners } from 'events';

/**
 * A signal aborted when any of `sources` is (or after `timeoutMs`); dispose() detaches it, so that long-lived
 * sources (the stop signal, a partition's fence) collect no listeners across flushes.
 */
export function linkedSignal(sources: AbortSignal[], timeoutMs?: number): { signal: AbortSignal; dispose: () => void } {
  const ctl = new AbortController();
  // one listener per HTTP request of a bisected write; they go away with the signal
  setMaxListeners(0, ctl.signal);
  const abort = (): void => ctl.abort();
  for (const s of sources) {
    if (s.aborted) ctl.abort();
    else s.addEventListener('abort', abort, { once: true });
  }
  const t = timeoutMs === undefined ? undefined : setTimeout(abort, timeoutMs);
  return {
    signal: ctl.signal,
    dispose: () => {
      clearTimeout(t);
      for (const s of sources) s.removeEventListener('abort', abort);
    },
  };
}

/** Awaits `p`, calling heartbeat every few seconds so the group keeps this member during long waits. */
export async function withHeartbeat<T>(p: Promise<T>, heartbeat: (() => Promise<void>) | undefined, everyMs: number): Promise<T> {
  if (!heartbeat) return p;
  let settled = false;
  const result = p.finally(() => {
    settled = true;
  });
  // If a heartbeat throws (rebalance) we leave before `p` settles; its rejection must not go unhandled.
  result.catch(() => undefined);
  while (!settled) {
    let timer: NodeJS.Timeout | undefined;
    const tick = new Promise<void>((r) => (timer = setTimeout(r, everyMs)));
    await Promise.race([result.then(() => undefined, () => undefined), tick]);
    clearTimeout(timer);
    if (!settled) await heartbeat();
  }
  return result;
}

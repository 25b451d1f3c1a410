// kafkajs 2.2.4 (its last release) keeps a 1 ms timer running on every broker connection once a request has been
// fulfilled: RequestQueue.scheduleCheckPendingRequests computes `throttledUntil - Date.now()` (throttledUntil starts
// at -1, so hugely negative), and when nothing is pending schedules the next check with that delay (= 1 ms), whose
// check schedules the next, forever (kafkajs issues #1556, #1604, #1704; fixes proposed upstream, never released).
// Measured here: ~600 checks per second per connection, ~0.03 of a core for an idle `nettally producer` — most of
// its idle cost (bench/RESULTS.md, issue 13). With nothing pending there is nothing to check: push() schedules a
// check when it queues a request and every fulfilled or timed-out request checks the queue, so skipping is exact.
// A prototype patch: it applies to queues created before or after this module loads (lib/kafka.ts imports it).

interface RequestQueueProto {
  scheduleCheckPendingRequests(this: { pending: unknown[] }): void;
  [PATCHED]?: true;
}
const PATCHED = Symbol.for('nettally.kafkajs-idle');

function install(): boolean {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const proto = (require('kafkajs/src/network/requestQueue') as { prototype: RequestQueueProto }).prototype;
    if (proto[PATCHED]) return true;
    const original = proto.scheduleCheckPendingRequests;
    if (typeof original !== 'function') return false;
    proto.scheduleCheckPendingRequests = function (this: { pending: unknown[] }) {
      if (this.pending.length === 0) return; // nothing waits: no timer (kafkajs would spin one every 1 ms)
      original.call(this);
    };
    proto[PATCHED] = true;
    return true;
  } catch {
    // A kafkajs with another layout: its own behaviour stays (an idle process costs more CPU, nothing else changes).
    return false;
  }
}

const installed = install();

/** Whether kafkajs' request queues skip the idle 1 ms pending-request check (false: a kafkajs of another layout). */
export function idleFixInstalled(): boolean {
  return installed;
}

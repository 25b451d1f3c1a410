// Test helper for broker scenario files: per-test cleanups (run after each test, also on failure), an in-process
// broker and raw connections cleaned up with them, a kafkajs client, and kafkajs error helpers.
import { Kafka, logLevel } from 'kafkajs';
import { startTestBroker, type InProcessBroker } from './broker';
import { Conn } from './broker-wire';

/** Undone in reverse order after each test of the file that imports this module. */
export const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

export async function broker(opts: Parameters<typeof startTestBroker>[0] = {}): Promise<InProcessBroker> {
  const b = await startTestBroker(opts);
  cleanups.push(() => b.stop());
  return b;
}

export async function conn(port: number): Promise<Conn> {
  const c = await Conn.open(port);
  cleanups.push(() => c.close());
  return c;
}

export function kafkaFor(b: { address: string }, clientId: string): Kafka {
  return new Kafka({ brokers: [b.address], clientId, logLevel: logLevel.NOTHING, retry: { retries: 2, initialRetryTime: 100 } });
}

/** The KafkaJSProtocolError in an error's cause chain (kafkajs wraps non-retriable ones). */
export function protocolError(err: unknown): { name: string; type: string; retriable: boolean } | undefined {
  for (let e = err as { name?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.name === 'KafkaJSProtocolError') return e as { name: string; type: string; retriable: boolean };
  }
  return undefined;
}

/** What the promise rejected with; throws if it resolved. */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

// kafkajs 2.2.4 keeps a 1 ms timer running forever on every broker connection once it has sent a request (its
// request queue reschedules its pending-request check with a negative delay when nothing is pending: kafkajs issues
// #1556, #1604, #1704) — most of an idle producer's CPU. With lib/kafkajs-idle.ts the check runs only while requests
// wait; sends still complete, before and after an idle spell, against the bundled broker.
import { createRequire } from 'module';
import { idleFixInstalled } from './kafkajs-idle';
import { createKafkaClient } from './kafka';
import { startTestBroker, type InProcessBroker } from '../test/helpers/broker';

const req = createRequire(__filename);
type Queue = { prototype: { checkPendingRequests(this: unknown): void } };
const RequestQueue = req('kafkajs/src/network/requestQueue') as Queue;

let broker: InProcessBroker | undefined;
afterEach(async () => {
  await broker?.stop();
  broker = undefined;
});

test('an idle, connected producer runs no pending-request checks; sends before and after the idle spell are acknowledged', async () => {
  expect(idleFixInstalled()).toBe(true);
  broker = await startTestBroker();
  const producer = createKafkaClient({ brokers: [broker.address] }).producer({ allowAutoTopicCreation: true, maxInFlightRequests: 1 });
  await producer.connect();
  const orig = RequestQueue.prototype.checkPendingRequests;
  let checks = 0;
  RequestQueue.prototype.checkPendingRequests = function (this: unknown) {
    checks++;
    return orig.call(this);
  };
  try {
    const send = (v: string): Promise<unknown> => producer.send({ topic: 'idle', messages: [{ key: 'k', value: v }], acks: -1 });
    await send('before');
    checks = 0;
    await new Promise((r) => setTimeout(r, 1500)); // idle: kafkajs 2.2.4 makes ~1000 checks per second here
    const idleChecks = checks;
    const res = (await send('after')) as Array<{ baseOffset: string }>;
    expect(res[0].baseOffset).toBe('1'); // the second record of the topic: both sends reached the broker
    // A fulfilled request checks the queue once by design; a timer loop would make hundreds.
    expect(idleChecks).toBeLessThanOrEqual(5);
  } finally {
    RequestQueue.prototype.checkPendingRequests = orig;
    await producer.disconnect();
  }
}, 60_000);

// kafkajs' producer groups each send's messages with our linear grouping, and the result is kafkajs' own.
import { linearGrouping, linearGroupingInstalled } from './kafkajs-grouping';
import './kafka';

test('installed before kafkajs loads its producer', () => {
  expect(linearGroupingInstalled()).toBe(true);
});

test('the same result as kafkajs 2.2.4: partition → its messages in send order; nothing without partition metadata', () => {
  const partitionMetadata = [0, 1, 2].map((partitionId) => ({ partitionErrorCode: 0, partitionId, leader: 0, replicas: [0], isr: [0] }));
  const messages = Array.from({ length: 10 }, (_, i) => ({ key: `k${i % 4}`, value: `v${i}` }));
  const partitioner = ({ message }: { message: { key?: unknown } }): number => Number(String(message.key).slice(1)) % 3;
  // kafkajs' original, verbatim in behaviour: reduce with a spread per message.
  const original = messages.reduce<Record<number, typeof messages>>((r, m) => {
    const p = partitioner({ message: m });
    return Object.assign(r, { [p]: [...(r[p] ?? []), m] });
  }, {});
  expect(linearGrouping({ topic: 't', partitionMetadata, messages, partitioner })).toEqual(original);
  expect(linearGrouping({ topic: 't', partitionMetadata: [], messages, partitioner })).toEqual({});
});

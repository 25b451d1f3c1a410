// kafkajs 2.2.4 (its last release) groups the messages of every send by partition with `[...current, message]`
// inside a reduce (src/producer/groupMessagesPerPartition.js): O(n²) element copies per batch — 12.5 million for one
// batch of 5000 records, ~12% of the producer's CPU at its batch size (bench/RESULTS.md, issue 13). This puts the
// linear equivalent (the same result: partition → its messages in order) in its place in the module cache, before
// kafkajs loads its producer (src/producer/sendMessages.js binds the function when it loads). It must be imported
// before anything imports kafkajs (lib/kafka.ts imports it first); imported later it changes nothing, and
// linearGroupingInstalled() says so.
import type { Message, PartitionerArgs } from 'kafkajs';

type Grouping = (args: { topic: string; partitionMetadata: PartitionerArgs['partitionMetadata']; messages: Message[]; partitioner: (a: PartitionerArgs) => number }) => Record<number, Message[]>;

/** kafkajs' grouping, in linear time. */
export const linearGrouping: Grouping = ({ topic, partitionMetadata, messages, partitioner }) => {
  const result: Record<number, Message[]> = {};
  if (partitionMetadata.length === 0) return result;
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message });
    (result[partition] ??= []).push(message);
  }
  return result;
};

const GROUPING = 'kafkajs/src/producer/groupMessagesPerPartition';
const SEND_MESSAGES = 'kafkajs/src/producer/sendMessages';

function install(): boolean {
  try {
    // Too late once kafkajs' producer module is loaded: it holds the original.
    if (require.cache[require.resolve(SEND_MESSAGES)]) return false;
    // A module-cache entry is what sendMessages.js gets from its require(): loading it here is the way in.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require(GROUPING);
    const mod = require.cache[require.resolve(GROUPING)];
    if (!mod) return false;
    mod.exports = linearGrouping;
    return true;
  } catch {
    // A kafkajs with another layout: its own grouping stays (slower for large batches, same result).
    return false;
  }
}

const installed = install();

/** Whether kafkajs sends with linearGrouping (false: imported after kafkajs' producer, or another kafkajs). */
export function linearGroupingInstalled(): boolean {
  return installed && require.cache[require.resolve(GROUPING)]?.exports === linearGrouping;
}

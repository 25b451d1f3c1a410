// `nettally producer --check`, Kafka half: can this host reach the brokers, authenticate, and find (or have the
// broker create) the topic? Uses the producer's own client settings and metadata path, and writes no record.
import type { KafkaConfig } from 'kafkajs';
import { createKafkaClient } from '../lib/kafka';
import type { Logger } from '../lib/log';
import { classifyKafkaError, hintFor } from './kafka-errors';

export interface KafkaCheck {
  ok: boolean;
  /** One line for people: what was found, or what failed and what to do. */
  message: string;
  /** Kafka error type when it failed (e.g. UNKNOWN_TOPIC_OR_PARTITION). */
  code?: string;
}

export async function checkKafka(config: KafkaConfig, topic: string, logger: Logger, timeoutMs = 30_000): Promise<KafkaCheck> {
  const kafka = createKafkaClient(config, { logger, levels: 'debug', retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 }, connectionTimeout: 5000 });
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  const admin = kafka.admin();
  const brokers = Array.isArray(config.brokers) ? config.brokers.join(',') : 'brokers';
  let timer: NodeJS.Timeout | undefined;
  const work = async (): Promise<KafkaCheck> => {
    await producer.connect();
    // An empty send runs the producer's metadata lookup for the topic (with auto-creation, as the producer asks
    // for it) and the authorization of Describe, and produces nothing.
    await producer.send({ topic, messages: [], acks: -1 });
    await admin.connect();
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    const parts = meta.topics[0]?.partitions ?? [];
    const leaderless = parts.filter((p) => p.leader < 0).length;
    if (parts.length === 0 || leaderless > 0) {
      return { ok: false, code: 'LEADER_NOT_AVAILABLE', message: `topic ${topic} on ${brokers} has ${parts.length} partitions, ${leaderless} without a leader: check the brokers` };
    }
    return {
      ok: true,
      message: `connected to ${brokers}; topic ${topic} has ${parts.length} partition${parts.length === 1 ? '' : 's'} with leaders (write permission is proven by the first send: see kafka_state in the status line and metrics)`,
    };
  };
  try {
    return await Promise.race([
      work(),
      new Promise<KafkaCheck>((resolve) => {
        timer = setTimeout(() => resolve({ ok: false, code: 'TIMEOUT', message: `no answer from ${brokers} within ${timeoutMs} ms: check --brokers, the network and TLS settings` }), timeoutMs);
      }),
    ]);
  } catch (e) {
    const f = classifyKafkaError(e);
    const what = f.kind === 'needs-operator' ? hintFor(f.code, topic) : `cannot reach ${brokers}: check --brokers and that Kafka is up`;
    return { ok: false, code: f.code, message: `${f.code}: ${f.message}; ${what}` };
  } finally {
    clearTimeout(timer);
    await Promise.race([Promise.all([producer.disconnect(), admin.disconnect()]).catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
  }
}

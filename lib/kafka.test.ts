import pino from 'pino';
import { Writable } from 'stream';
import { createKafkaClient, kafkaConfigFrom, KAFKA_OPTIONS } from './kafka';
import { parseArgs, type ParsedArgs } from './args';

/** A pino logger at debug writing into `lines` (parsed JSON). */
function capture(): { logger: pino.Logger; lines: { level: number; msg: string; kafkajs?: string }[] } {
  const lines: { level: number; msg: string; kafkajs?: string }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as { level: number; msg: string });
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

const config = { brokers: ['127.0.0.1:1'] };
const PINO = { debug: 20, info: 30, warn: 40, error: 50 };

test('kafkajs levels map onto pino levels, with the namespace; info and debug stay at debug', () => {
  const { logger, lines } = capture();
  const log = createKafkaClient(config, { logger }).logger().namespace('Connection');
  log.error('refused');
  log.warn('slow');
  log.info('hello'); // below kafkajs WARN: not logged at all
  expect(lines.map((l) => [l.level, l.msg, l.kafkajs])).toEqual([
    [PINO.error, 'refused', 'Connection'],
    [PINO.warn, 'slow', 'Connection'],
  ]);
});

test("levels 'debug' puts every kafkajs line at debug (callers that report Kafka state themselves)", () => {
  const { logger, lines } = capture();
  const log = createKafkaClient(config, { logger, levels: 'debug' }).logger();
  log.error('refused');
  log.warn('slow');
  expect(lines.map((l) => l.level)).toEqual([PINO.debug, PINO.debug]);
});

test('expected lines go to debug whatever their level', () => {
  const { logger, lines } = capture();
  const log = createKafkaClient(config, { logger, expected: (m) => m.startsWith('Response CreateTopics') }).logger();
  log.error('Response CreateTopics(key: 19, version: 3)');
  log.error('Response Produce(key: 0, version: 7)');
  expect(lines.map((l) => [l.level, l.msg.slice(0, 20)])).toEqual([
    [PINO.debug, 'Response CreateTopic'],
    [PINO.error, 'Response Produce(key'],
  ]);
});

test('without a logger kafkajs logs nothing (and does not fail)', () => {
  expect(() => createKafkaClient(config).logger().error('nobody hears this')).not.toThrow();
});

test('--brokers is read like every other address option: the bad entry, what is wrong, what to write', () => {
  const parse = (v: string): ParsedArgs => {
    const a = parseArgs({ name: 't', summary: '', options: KAFKA_OPTIONS }, ['--brokers', v], {});
    if (a === 'help') throw new Error('help');
    return a;
  };
  expect(() => kafkaConfigFrom(parse('::1:9092'))).toThrow(/\[::1\]:9092/);
  expect(() => kafkaConfigFrom(parse('kafka:0'))).toThrow(/port 0 is out of range: use 1 to 65535/);
  expect(() => kafkaConfigFrom(parse('ok:9092,kafka://b:9092'))).toThrow(/without kafka:\/\/, got "kafka:\/\/b:9092"/);
  expect(kafkaConfigFrom(parse('a:9092,[::1]:9093')).brokers).toEqual(['a:9092', '[::1]:9093']);
});

// up's view of its children from their typed reports: readiness, rates from two reports, failures, the status line.
import type { ConsumerReport, ProducerReport } from '../lib/status';
import { ChildStatus, pipelineStatus, statusLine } from './up-status';

const producer = (over: Partial<ProducerReport> = {}): ProducerReport => ({
  daemon: 'producer', phase: 'ready', records_out: 0, kernel_drops: 0, conn_map_full: 0, iface_map_full: 0, spool_bytes: 0, kafka_state: 'ok', kafka_error_code: null, ...over,
});
const consumer = (over: Partial<ConsumerReport> = {}): ConsumerReport => ({
  daemon: 'consumer', phase: 'ready', events_per_s: 0, lag: 0, partitions: [0], last_window: null, influx_down_since_ms: null, ...over,
});

test('nothing reported yet: starting, no numbers', () => {
  const p = new ChildStatus('producer');
  const c = new ChildStatus('consumer');
  expect(statusLine(4000, p, c, 'q')).toBe('[up 00:00:04] producer (starting) - rec/s, kernel drops -, spool - | consumer (starting) - ev/s, lag -, last window - | query: q\n');
  expect(pipelineStatus(p, c)).toMatchObject({ producer: { ready: false, records_per_s: undefined }, consumer: { ready: false, lag: undefined } });
});

test('the rate comes from two reports; drops, map full and spool from the latest', () => {
  const p = new ChildStatus('producer');
  p.update(producer({ records_out: 100 }), 10_000);
  p.update(producer({ records_out: 150, kernel_drops: 3, conn_map_full: 2, iface_map_full: 1, spool_bytes: 2048 }), 12_000);
  const c = new ChildStatus('consumer');
  c.update(consumer({ events_per_s: 25, lag: 12_345, last_window: '2026-11-22T03:45:00.000Z' }), 12_000);
  expect(statusLine(3_723_000, p, c, 'q')).toBe(
    '[up 01:02:03] producer 25 rec/s, kernel drops 3, map full 3, spool 2048B | consumer 25 ev/s, lag 12.3k, last window 2026-11-22T03:45:00Z | query: q\n',
  );
});

test('phases: degraded counts as ready, a starting consumer does not; reports of another daemon are ignored', () => {
  const p = new ChildStatus('producer');
  p.update(producer({ phase: 'degraded', kafka_state: 'retrying', kafka_error_code: 'LEADER_NOT_AVAILABLE' }), 1000);
  expect(p.ready).toBe(true);
  const c = new ChildStatus('consumer');
  c.update(consumer({ phase: 'starting' }), 1000);
  expect(c.ready).toBe(false);
  c.update(producer(), 1000);
  expect(c.latest?.daemon).toBe('consumer');
  // Kafka retrying shows as DOWN, an error state by its code; InfluxDB down for how long, as of the report.
  expect(statusLine(0, p, c, 'q')).toContain(', Kafka DOWN |');
  p.update(producer({ phase: 'degraded', kafka_state: 'error', kafka_error_code: 'TOPIC_AUTHORIZATION_FAILED' }), 2000);
  c.update(consumer({ phase: 'degraded', influx_down_since_ms: 2000 }), 14_000);
  expect(statusLine(0, p, c, 'q')).toMatch(/, Kafka ERROR TOPIC_AUTHORIZATION_FAILED \| consumer 0 ev\/s, lag 0, last window -, InfluxDB down 12s \|/);
  expect(pipelineStatus(p, c)).toMatchObject({ producer: { kafka_ok: false, kafka_error: 'TOPIC_AUTHORIZATION_FAILED' }, consumer: { ready: true, influx: 'down 12s' } });
});

test('a failure report is kept (the first one) and does not replace the numbers', () => {
  const p = new ChildStatus('producer');
  p.update(producer({ records_out: 7 }), 1000);
  p.update({ daemon: 'producer', phase: 'failed', error: 'spool: EIO' }, 2000);
  p.update({ daemon: 'producer', phase: 'failed', error: 'later' }, 3000);
  expect(p.failure).toBe('spool: EIO');
  expect(p.latest?.records_out).toBe(7);
});

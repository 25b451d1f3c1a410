// What `nettally up` knows about its children, from the typed reports they send over the IPC channel (lib/status.ts),
// and what it shows of it: the status line and the pipeline status the dashboard serves. No log text is read here.
import type { PipelineStatus } from '../dashboard/api';
import type { DaemonName, DaemonReport, ReportOf } from '../lib/status';

/** The latest report of one child, the one before it (rates), and whether it ever said it does its job. */
export class ChildStatus<D extends DaemonName = DaemonName> {
  latest: ReportOf<D> | undefined;
  at = 0;
  prev: ReportOf<D> | undefined;
  prevAt = 0;
  /** It reported ready or degraded once (degraded is running: a producer with Kafka away still counts and spools). */
  ready = false;
  /** The error of its failure report, if it sent one (it exits next). */
  failure: string | undefined;

  constructor(readonly daemon: D) {}

  /** Takes a report of this child's daemon; reports naming another daemon are ignored. */
  update(r: DaemonReport, now = Date.now()): void {
    if (r.daemon !== this.daemon) return;
    if (r.phase === 'failed') {
      this.failure ??= r.error;
      return;
    }
    this.prev = this.latest;
    this.prevAt = this.at;
    this.latest = r as ReportOf<D>;
    this.at = now;
    if (r.phase === 'ready' || r.phase === 'degraded') this.ready = true;
  }
}

function fmt(v: number | undefined, unit = ''): string {
  if (v === undefined) return '-';
  if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(1)}M${unit}`;
  if (Math.abs(v) >= 1e4) return `${(v / 1e3).toFixed(1)}k${unit}`;
  return `${Math.round(v)}${unit}`;
}

/** `down 12s`, as of the consumer's report. */
function influxState(since: number | null, at: number): string {
  return since === null ? 'ok' : `down ${Math.round((at - since) / 1000)}s`;
}

/** The pipeline's health from the children's latest reports: the status line's numbers, and the dashboard's. */
export function pipelineStatus(producer: ChildStatus<'producer'>, consumer: ChildStatus<'consumer'>): PipelineStatus {
  const p = producer.latest;
  const c = consumer.latest;
  const prevOut = producer.prev?.records_out;
  return {
    as_of_ms: Math.max(producer.at, consumer.at) || Date.now(),
    producer: {
      ready: producer.ready,
      records_per_s: p && prevOut !== undefined && producer.at > producer.prevAt ? ((p.records_out - prevOut) * 1000) / (producer.at - producer.prevAt) : undefined,
      kernel_drops: p?.kernel_drops,
      map_full: (p?.conn_map_full ?? 0) + (p?.iface_map_full ?? 0),
      spool_bytes: p?.spool_bytes,
      kafka_ok: p ? p.kafka_state === 'ok' : undefined,
      kafka_error: p?.kafka_state === 'error' ? String(p.kafka_error_code) : undefined,
    },
    consumer: {
      ready: consumer.ready,
      events_per_s: c?.events_per_s,
      lag: c?.lag,
      last_window: c?.last_window ?? undefined,
      influx: c ? influxState(c.influx_down_since_ms, consumer.at) : undefined,
    },
  };
}

/** One status line from the children's latest reports. */
export function statusLine(uptimeMs: number, producer: ChildStatus<'producer'>, consumer: ChildStatus<'consumer'>, query: string): string {
  const { producer: p, consumer: c } = pipelineStatus(producer, consumer);
  const up = Math.floor(uptimeMs / 1000);
  const clock = `${String(Math.floor(up / 3600)).padStart(2, '0')}:${String(Math.floor(up / 60) % 60).padStart(2, '0')}:${String(up % 60).padStart(2, '0')}`;
  // An error state (authorization, missing topic) will not clear by itself: name it, not just "down".
  const kafka = p.kafka_ok !== false ? '' : p.kafka_error !== undefined ? `, Kafka ERROR ${p.kafka_error}` : ', Kafka DOWN';
  const lastWindow = c.last_window?.replace(/\.000Z$/, 'Z') ?? '-';
  const influx = c.influx !== undefined && c.influx !== 'ok' ? `, InfluxDB ${c.influx}` : '';
  return (
    `[up ${clock}] producer ${p.ready ? '' : '(starting) '}${fmt(p.records_per_s)} rec/s, kernel drops ${fmt(p.kernel_drops)}${p.map_full ? `, map full ${p.map_full}` : ''}, spool ${fmt(p.spool_bytes, 'B')}${kafka}` +
    ` | consumer ${c.ready ? '' : '(starting) '}${fmt(c.events_per_s)} ev/s, lag ${fmt(c.lag)}, last window ${lastWindow}${influx}` +
    ` | query: ${query}\n`
  );
}

// Optional Prometheus text endpoint for the producer's status (off unless --metrics-listen is given; localhost by default).
import { createServer, type Server } from 'http';
import type { AddressInfo } from 'net';
import { parseHostPort, type HostPort } from '../lib/args';
import type { ProducerStatus } from './producer';

/** "9464" → 127.0.0.1:9464; "host:port" and "[v6]:port" as given. Throws CONFIG_INVALID naming --metrics-listen. */
export function parseListen(text: string): HostPort {
  return parseHostPort('--metrics-listen (env NETTALLY_METRICS_LISTEN)', text, { example: '9464 or 127.0.0.1:9464', defaultHost: '127.0.0.1' });
}

const HELP: Array<[keyof ProducerStatus, string, 'counter' | 'gauge']> = [
  ['records_in', 'Kernel records received from the capture', 'counter'],
  ['records_spooled', 'Records appended to the on-disk spool', 'counter'],
  ['records_out', 'Records acknowledged by Kafka', 'counter'],
  ['records_folded', 'Established records not shipped: their connection closed (or sent a sample) first, and that record was shipped instead', 'counter'],
  ['batches_out', 'Batches acknowledged by Kafka', 'counter'],
  ['spool_records', 'Records in the spool not yet acknowledged', 'gauge'],
  ['spool_bytes', 'Bytes in the spool not yet acknowledged', 'gauge'],
  ['spool_max_bytes', 'Spool size limit in bytes', 'gauge'],
  ['spool_full_events', 'Times the spool filled up and the kernel drain paused', 'counter'],
  ['kafka_errors', 'Failed Kafka sends (retried)', 'counter'],
  ['batches_split', 'Batches the broker refused as too large (MESSAGE_TOO_LARGE), split and resent', 'counter'],
  ['records_dead_lettered', 'Records too large for any Kafka batch, kept in <state-dir>/dead-letter.jsonl instead of sent', 'counter'],
  ['max_batch_bytes', 'Largest record batch the producer builds now (bytes; below --max-message-bytes once a broker refused one)', 'gauge'],
  ['send_latency_ms_last', 'Latency of the last acknowledged Kafka batch in ms', 'gauge'],
  ['workloads', 'Distinct workload names given out since start (host and other not counted)', 'gauge'],
  ['workloads_overflow', 'Records billed to workload "other" because --max-workloads distinct names were reached', 'counter'],
  ['workload_rules_reloads', 'Times the workload rule file was re-read (changed on disk, or SIGHUP)', 'counter'],
  ['workload_rules_errors', 'Workload rule file re-reads that failed (the previous rules stay in force)', 'counter'],
  ['epoch', 'Producer epoch', 'gauge'],
  ['seq', 'Last sequence number assigned in this epoch', 'gauge'],
];

/** Prometheus text exposition of a status. */
export function renderMetrics(s: ProducerStatus): string {
  const out: string[] = [];
  const put = (name: string, help: string, type: string, value: number): void => {
    out.push(`# HELP nettally_producer_${name} ${help}`, `# TYPE nettally_producer_${name} ${type}`, `nettally_producer_${name} ${value}`);
  };
  for (const [key, help, type] of HELP) put(type === 'counter' ? `${key}_total` : key, help, type, Number(s[key]));
  put('spool_full', '1 while the spool is full (kernel drain paused)', 'gauge', s.spool_full ? 1 : 0);
  put('kafka_up', '1 when the last Kafka send succeeded', 'gauge', s.kafka_ok ? 1 : 0);
  // One series per state (1 for the current one), so an alert can fire on kafka_state{state="error"} == 1.
  out.push('# HELP nettally_producer_kafka_state Kafka state: connecting, ok, retrying (transient) or error (needs an operator: authorization, missing topic, config)');
  out.push('# TYPE nettally_producer_kafka_state gauge');
  for (const state of ['connecting', 'ok', 'retrying', 'error']) out.push(`nettally_producer_kafka_state{state="${state}"} ${s.kafka_state === state ? 1 : 0}`);
  if (s.kafka_error_code !== null) {
    out.push('# HELP nettally_producer_kafka_error Kafka error code of the current retrying/error state, with the Unix time it began as the value');
    out.push('# TYPE nettally_producer_kafka_error gauge');
    const since = s.kafka_error_since ? Math.floor(Date.parse(s.kafka_error_since) / 1000) : 0;
    out.push(`nettally_producer_kafka_error{code="${s.kafka_error_code.replace(/[\\"\n]/g, '_')}"} ${since}`);
  }
  // Where the memory is: the JS heap vs native (Buffers and other allocations outside it) vs the whole process.
  const m = process.memoryUsage();
  out.push('# HELP nettally_producer_memory_bytes Process memory: rss (resident, all of it), heap_used (JS objects), external (Buffers and other native memory owned by JS objects)');
  out.push('# TYPE nettally_producer_memory_bytes gauge');
  for (const [kind, v] of [['rss', m.rss], ['heap_used', m.heapUsed], ['external', m.external]] as const) out.push(`nettally_producer_memory_bytes{kind="${kind}"} ${v}`);
  if (s.kernel) {
    put('kernel_ringbuf_drops_total', 'Ring-buffer reservations that failed in the kernel (records delayed, counters kept)', 'counter', s.kernel.ringbuf_drops);
    put('kernel_conn_map_full_total', 'Connections not tracked because the kernel connection map was full', 'counter', s.kernel.conn_map_full);
    put('kernel_iface_map_full_total', 'Interfaces not tracked because the kernel interface map was full', 'counter', s.kernel.iface_map_full);
    put('kernel_tracked_conns', 'Connections in the kernel map', 'gauge', s.kernel.tracked_conns);
  }
  return out.join('\n') + '\n';
}

/** Serves GET /metrics; resolves once listening. */
export async function serveMetrics(listen: { host: string; port: number }, status: () => ProducerStatus): Promise<{ server: Server; address: AddressInfo }> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/metrics' || req.url === '/')) {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(renderMetrics(status()));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  return { server, address: server.address() as AddressInfo };
}

// `nettally producer`: the per-host daemon (kernel counters → Avro → spool → Kafka); also `--check`.
import { execFileSync } from 'child_process';
import { readFileSync } from 'fs';
import type { Command } from '../lib/command';
import { configError, NettallyError } from '../lib/errors';
import { KAFKA_OPTIONS, kafkaConfigFrom } from '../lib/kafka';
import type { ParsedArgs } from '../lib/args';
import { processStatusReporter, type ProducerReport } from '../lib/status';
import { parseListen, serveMetrics } from './metrics';
import { CAPTURE_OPTIONS, captureSettingsFrom, checkSettings, pinDirOption } from './capture-options';
import { KAFKA_DEFAULT_MAX_MESSAGE_BYTES } from './kafka-batch';
import { checkKafka } from './kafka-check';
import { createProducer, type ProducerConfig, type ProducerStatus } from './producer';
import type { FsyncPolicy } from './spool';
import { WORKLOAD_OPTIONS, workloadOptionsFrom } from './workload';
import { loadRules } from './workload-rules';

const CAP_NET_ADMIN = 12;
const CAP_SYS_ADMIN = 21;
const CAP_PERFMON = 38;
const CAP_BPF = 39;

/** Effective capabilities of this process (from /proc/self/status). */
function effectiveCaps(statusText = readFileSync('/proc/self/status', 'utf8')): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(statusText);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

/** Throws PRIVILEGES with how to grant them unless this process may load and attach the BPF programs. */
function checkPrivileges(caps = effectiveCaps()): void {
  const has = (c: number): boolean => (caps & (1n << BigInt(c))) !== 0n;
  if (has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) return;
  const missing = [has(CAP_BPF) ? '' : 'CAP_BPF', has(CAP_PERFMON) ? '' : 'CAP_PERFMON'].filter(Boolean).join('+');
  throw new NettallyError(
    'PRIVILEGES',
    `loading the eBPF programs needs root, or CAP_BPF+CAP_PERFMON (missing: ${missing}; CAP_NET_ADMIN too for the cgroup programs, ` +
      `CAP_SYS_ADMIN to mount bpffs for pinned maps). Run it as root (sudo nettally producer …), or grant the capabilities, e.g. ` +
      `systemd: AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN, or: sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep "$(readlink -f "$(command -v node)")". ` +
      `Nothing else in the producer needs privileges.`,
    { context: { missing, net_admin: has(CAP_NET_ADMIN) } },
  );
}

function mountTypeAt(path: string): string | undefined {
  let type: string | undefined;
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[1] === path) type = f[2];
  }
  return type;
}

/**
 * Mounts what the capture needs and a fresh boot may lack: bpffs, for the pins (the programs need no tracefs).
 * It stays mounted: the pins must outlive this process. `nettally up` does its own mounting and cleanup.
 */
function ensureMounts(pinDir: string | undefined, logger: { info(o: object, m: string): void }): void {
  const mount = (type: string, source: string, target: string): void => {
    try {
      execFileSync('mount', ['-t', type, source, target], { stdio: ['ignore', 'ignore', 'pipe'] });
      logger.info({ type, target }, `mounted ${type}`);
    } catch (e) {
      throw new NettallyError('KERNEL_UNSUPPORTED', `cannot mount ${type} on ${target} (${(e as Error).message.trim()}); mount it yourself: mount -t ${type} ${source} ${target}`, { cause: e });
    }
  };
  if (pinDir?.startsWith('/sys/fs/bpf/') && mountTypeAt('/sys/fs/bpf') !== 'bpf') mount('bpf', 'bpf', '/sys/fs/bpf');
}

/** What `nettally up` is told (the numbers of the status log line): degraded while Kafka fails, records spooled. */
export function producerReport(s: ProducerStatus): ProducerReport {
  const failing = s.kafka_state === 'retrying' || s.kafka_state === 'error';
  return {
    daemon: 'producer',
    phase: failing ? 'degraded' : 'ready',
    ...(failing && s.kafka_last_error !== null ? { error: `Kafka: ${s.kafka_last_error}` } : {}),
    records_out: s.records_out,
    kernel_drops: s.kernel?.ringbuf_drops,
    conn_map_full: s.kernel?.conn_map_full,
    iface_map_full: s.kernel?.iface_map_full,
    spool_bytes: s.spool_bytes,
    kafka_state: s.kafka_state,
    kafka_error_code: s.kafka_error_code,
  };
}

function configFrom(args: ParsedArgs): ProducerConfig {
  const maxMessageBytes = args.num('max-message-bytes');
  let batchMaxBytes = args.num('batch-max-bytes');
  if (batchMaxBytes > maxMessageBytes) {
    // The default batch size follows a lowered broker limit; one the operator chose must agree with it.
    if (args.sources['batch-max-bytes'] === 'default') batchMaxBytes = maxMessageBytes;
    else {
      throw configError(
        '--batch-max-bytes (env NETTALLY_BATCH_MAX_BYTES)',
        `${batchMaxBytes} is more than --max-message-bytes (env NETTALLY_MAX_MESSAGE_BYTES) ${maxMessageBytes}, the largest record batch the broker accepts; lower --batch-max-bytes or raise --max-message-bytes to the topic's max.message.bytes`,
      );
    }
  }
  const spoolMaxBytes = args.num('spool-max-bytes');
  if (batchMaxBytes * 2 > spoolMaxBytes) {
    throw configError('--spool-max-bytes (env NETTALLY_SPOOL_MAX_BYTES)', `must be at least twice --batch-max-bytes (${batchMaxBytes}), got ${spoolMaxBytes}`);
  }
  return {
    stateDir: args.str('state-dir'),
    kafka: kafkaConfigFrom(args),
    topic: args.str('topic'),
    spoolMaxBytes,
    fsync: args.str('fsync') as FsyncPolicy,
    batchMaxRecords: args.num('batch-max-records'),
    batchMaxBytes,
    maxMessageBytes,
    batchMaxMs: args.num('batch-max-wait'),
    ...captureSettingsFrom(args),
    compression: args.str('compression') as 'gzip' | 'none',
    idempotent: args.bool('idempotent'),
    shutdownTimeoutMs: args.num('shutdown-timeout'),
    statusIntervalMs: args.num('status-interval'),
    ...workloadConfigFrom(args),
  };
}

function workloadConfigFrom(args: ParsedArgs): Pick<ProducerConfig, 'workloadRules' | 'maxWorkloads' | 'workloadStateRoot'> {
  const w = workloadOptionsFrom(args);
  // Read once here so that a bad rule file stops the command before anything is mounted or loaded (naming file:line).
  if (w.rulesFile !== undefined) loadRules(w.rulesFile);
  return { workloadRules: w.rulesFile, maxWorkloads: w.maxNames, workloadStateRoot: w.stateRoot };
}

export const command: Command = {
  spec: {
    name: 'producer',
    summary: 'count traffic in the kernel and ship records to Kafka (Avro, durable spool, exact counters)',
    description:
      'Loads the eBPF counters (root or CAP_BPF+CAP_PERFMON), enriches every record with host id, boot id, epoch and seq,\n' +
      'appends it to an on-disk spool and sends it to Kafka (acks=all). Records leave the spool only once Kafka acknowledged\n' +
      'them; SIGTERM sends what it can within --shutdown-timeout and keeps the rest for the next start.',
    options: [
      ...KAFKA_OPTIONS,
      { name: 'state-dir', type: 'string', env: 'NETTALLY_STATE_DIR', default: '/var/lib/nettally/producer', help: 'epoch file and spool directory' },
      pinDirOption('/sys/fs/bpf/nettally', 'bpffs directory for pinned maps (counters survive restarts); "none" disables pinning'),
      { name: 'spool-max-bytes', type: 'bytes', env: 'NETTALLY_SPOOL_MAX_BYTES', default: '256MiB', min: 65536, help: 'spool size limit; when full the kernel drain pauses (bytes delayed, not lost)' },
      { name: 'fsync', type: 'enum', env: 'NETTALLY_FSYNC', choices: ['always', 'interval', 'never'], default: 'always', help: 'spool fsync: per appended batch, every 200ms, or never (the OS decides)' },
      { name: 'batch-max-records', type: 'int', env: 'NETTALLY_BATCH_MAX_RECORDS', default: 5000, min: 1, max: 100000, help: 'records per Kafka batch' },
      { name: 'batch-max-bytes', type: 'bytes', env: 'NETTALLY_BATCH_MAX_BYTES', default: '1MiB', min: 1024, help: 'spooled bytes per Kafka batch (about; at most --max-message-bytes)' },
      {
        name: 'max-message-bytes', type: 'bytes', env: 'NETTALLY_MAX_MESSAGE_BYTES', default: KAFKA_DEFAULT_MAX_MESSAGE_BYTES, min: 1024, max: 1 << 30,
        help: "the broker's limit on one record batch: the topic's max.message.bytes (Kafka's default 1048588); every batch, header included, is cut to fit",
      },
      {
        name: 'batch-max-wait', type: 'duration', env: 'NETTALLY_BATCH_MAX_WAIT', default: '200ms', min: 0,
        deprecated: { flags: ['batch-max-ms'], env: ['NETTALLY_BATCH_MAX_MS'] }, help: 'longest a record waits for a fuller batch',
      },
      ...CAPTURE_OPTIONS,
      ...WORKLOAD_OPTIONS,
      { name: 'compression', type: 'enum', env: 'NETTALLY_COMPRESSION', choices: ['none', 'gzip'], default: 'none', help: 'Kafka batch compression' },
      { name: 'idempotent', type: 'bool', env: 'NETTALLY_IDEMPOTENT', default: false, help: 'use the Kafka idempotent producer (consumers dedupe by host/epoch/seq either way)' },
      { name: 'shutdown-timeout', type: 'duration', env: 'NETTALLY_SHUTDOWN_TIMEOUT', default: '10s', min: 0, help: 'on SIGTERM, how long to keep sending before leaving the rest in the spool' },
      { name: 'status-interval', type: 'duration', env: 'NETTALLY_STATUS_INTERVAL', default: '30s', min: 0, help: 'one status log line this often (0 = off)' },
      { name: 'metrics-listen', type: 'string', env: 'NETTALLY_METRICS_LISTEN', help: 'serve Prometheus metrics on [host:]port (off by default; host defaults to 127.0.0.1)' },
      { name: 'check', type: 'bool', default: false, help: 'load and attach the eBPF programs with the settings of a real run (but unpinned; pinned maps are compared, not shared), connect to Kafka and look up the topic, report, and exit (1 if anything failed)' },
    ],
    examples: [
      'sudo nettally producer --brokers kafka1:9092,kafka2:9092 --state-dir /var/lib/nettally/producer',
      'sudo nettally producer --check',
      'KAFKA_SASL_MECHANISM=scram-sha-512 KAFKA_SASL_USERNAME=nettally KAFKA_SASL_PASSWORD_FILE=/etc/nettally/kafka.pw KAFKA_TLS=1 sudo -E nettally producer',
    ],
  },

  async run(args, ctx) {
    const config = configFrom(args);
    const metricsListen = args.optStr('metrics-listen');
    const listen = metricsListen ? parseListen(metricsListen) : undefined;
    checkPrivileges();
    // A check changes nothing on the host: no mount, no pins (see checkSettings).
    ensureMounts(args.bool('check') ? undefined : config.pinDir, ctx.logger);

    if (args.bool('check')) {
      // Both halves are checked and reported, so one run tells an operator everything that is wrong.
      let failed = false;
      try {
        const { openCapture } = await import('./capture');
        const check = checkSettings(captureSettingsFrom(args));
        const cap = await openCapture(check.settings, ctx.logger);
        const stats = cap.stats();
        await cap.close();
        ctx.stdout.write(`ok: eBPF programs loaded and attached (tracked connections: ${stats.tracked_conns}${check.note ? `; ${check.note}` : ''})\n`);
      } catch (e) {
        failed = true;
        ctx.stdout.write(`FAILED: eBPF programs: ${(e as Error).message}\n`);
      }
      const kafka = await checkKafka(config.kafka, config.topic, ctx.logger);
      ctx.stdout.write(`${kafka.ok ? 'ok' : 'FAILED'}: Kafka: ${kafka.message}\n`);
      return failed || !kafka.ok ? 1 : 0;
    }

    const producer = createProducer({ config, logger: ctx.logger });
    let fatal: Error | undefined;
    const failed = new Promise<void>((resolve) =>
      producer.on('fatal', (e) => {
        fatal = e;
        resolve();
      }),
    );
    // SIGHUP re-reads the workload rule file (it is also re-read when it changes on disk); installed before the
    // start so that a SIGHUP sent as soon as the producer reports it streams cannot take node's default (exit).
    const onHup = (): void => producer.reloadWorkloadRules();
    process.on('SIGHUP', onHup);
    try {
      await producer.start();
    } catch (e) {
      process.off('SIGHUP', onHup);
      throw e;
    }
    // Capture attached: up counts this producer as ready, and from now on gets each status it logs.
    const reporter = processStatusReporter();
    if (reporter.enabled) {
      void reporter.report(producerReport(producer.status()));
      producer.on('status', (s) => void reporter.report(producerReport(s)));
    }
    let metrics: Awaited<ReturnType<typeof serveMetrics>> | undefined;
    try {
      if (listen) {
        metrics = await serveMetrics(listen, () => producer.status());
        ctx.logger.info({ metrics: `http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${metrics.address.port}/metrics` }, 'metrics endpoint listening');
      }
      ctx.logger.info({ topic: config.topic, brokers: config.kafka.brokers }, 'producer running');
      await Promise.race([
        failed,
        new Promise<void>((resolve) => {
          if (ctx.signal.aborted) resolve();
          else ctx.signal.addEventListener('abort', () => resolve(), { once: true });
        }),
      ]);
    } finally {
      process.off('SIGHUP', onHup);
      metrics?.server.close();
      await producer.stop();
    }
    if (fatal) throw fatal instanceof NettallyError ? fatal : new NettallyError('INTERNAL', `producer failed: ${fatal.message}`, { cause: fatal });
    return 0;
  },
};

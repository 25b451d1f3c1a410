// `nettally up`: the whole pipeline on one machine — bundled broker, local influxd, producer, consumer —
// with a live status line until Ctrl-C, which stops everything and leaves no process, pin or mount behind
// (also when its stdout is a pipe whose reader died first, and when it fails).
import { spawnSync, execFileSync } from 'child_process';
import { mkdirSync, readFileSync, rmSync } from 'fs';
import { connect } from 'net';
import { join, resolve } from 'path';
import { ConfigResourceTypes, type Admin } from 'kafkajs';
import pino from 'pino';
import { formatHostPort, ParsedArgs, parseArgs, parseHostPort, type CommandSpec, type OptionSpec } from '../lib/args';
import type { Command, CommandContext } from '../lib/command';
import { configError, NettallyError } from '../lib/errors';
import { createKafkaClient, KAFKA_OPTIONS, kafkaConfigFrom } from '../lib/kafka';
import { InfluxClient, influxConfigFrom } from '../consumer/influx';
import { DASHBOARD_INFLUX_OPTIONS } from '../dashboard/cmd-dashboard';
import { checkListenAddress, parseListen, startDashboard } from '../dashboard/server';
import { createLogger, logFormat, StatusLine, type Logger } from '../lib/log';
import { retry } from '../lib/retry';
import { CAPTURE_OPTIONS, captureSettingsAsFlags, captureSettingsFrom } from '../producer/capture-options';
import { WORKLOAD_OPTIONS, workloadOptionsFrom } from '../producer/workload';
import { loadRules } from '../producer/workload-rules';
import { loadRemoteClasses, REMOTE_CLASSES_OPTION } from '../consumer/classes';
import { startLocalInflux, type LocalInflux } from './influxd';
import { startChild, stopChild, waitFor, type AnyChild } from './up-children';
import { claimPins, isPinDirPath, type PinClaim } from './up-pins';
import { pipelineStatus, statusLine } from './up-status';

/** Kafka connection options (TLS, SASL, topic, client id) shared with producer/consumer; `brokers` is up's own. */
const FORWARDED_KAFKA_OPTIONS: readonly OptionSpec[] = KAFKA_OPTIONS.filter((o) => o.name !== 'brokers');

const spec: CommandSpec = {
  name: 'up',
  summary: 'Run the whole pipeline on this machine until Ctrl-C: bundled Kafka broker, local InfluxDB, producer, consumer.',
  description: [
    'Starts what is missing — the bundled Kafka-protocol broker and Debian\'s influxd on --data-dir — then the producer',
    '(eBPF counters) and the consumer (InfluxDB rollups), and prints a status line until Ctrl-C, which stops the',
    'producer first (its last counters reach Kafka), then the consumer (final write), then the servers. bpffs is',
    'mounted if needed and unmounted on exit; a pin directory that did not exist before is removed. Stale pins of an',
    'earlier up that could not clean up (killed) are removed at start; pins up did not create are kept.',
    'Set KAFKA_BROKERS to use an existing Kafka instead of the bundled broker, and INFLUX_URL to use an existing',
    'InfluxDB instead of a local influxd. Needs root. Logs of every component go to <data-dir>/logs/; up\'s own log',
    'and everything it prints also go to <data-dir>/logs/up.log (they continue there when stdout is closed).',
    'On a terminal it prints readable log lines and redraws one status line in place; piped, or with LOG_FORMAT=json,',
    'JSON log lines and a status line per tick (env LOG_FORMAT=json|pretty; logs/*.log are always JSON).',
  ].join('\n'),
  options: [
    { name: 'data-dir', type: 'string', env: 'NETTALLY_DATA_DIR', default: '/var/lib/nettally', help: 'where broker, InfluxDB, producer spool and logs keep their files' },
    { name: 'kafka-listen', type: 'string', env: 'NETTALLY_BROKER_LISTEN', default: '127.0.0.1:9092', help: 'address of the bundled broker (ignored with --brokers/KAFKA_BROKERS)' },
    { name: 'brokers', type: 'list', env: 'KAFKA_BROKERS', help: 'use this Kafka (host:port[,host:port]) instead of starting the bundled broker' },
    { name: 'partitions', type: 'int', env: 'NETTALLY_TOPIC_PARTITIONS', default: 1, min: 1, max: 10_000, help: 'partitions of the records topic if up creates it (one host uses one partition)' },
    ...FORWARDED_KAFKA_OPTIONS,
    { name: 'influx-url', type: 'string', env: 'INFLUX_URL', help: 'use this InfluxDB (v1 API; credentials from INFLUX_* env) instead of starting a local influxd' },
    { name: 'influx-port', type: 'int', env: 'NETTALLY_INFLUX_PORT', default: 8086, min: 1, max: 65535, help: 'HTTP port of the local influxd on 127.0.0.1 (ignored with INFLUX_URL)' },
    { name: 'influx-db', type: 'string', env: 'INFLUX_DB', default: 'nettally', help: 'InfluxDB database for the rollups' },
    { name: 'pin-dir', type: 'string', env: 'NETTALLY_PIN_DIR', default: '/sys/fs/bpf/nettally-up', help: 'bpffs directory for the producer\'s pinned maps; removed on exit unless it existed before' },
    // The producer's capture settings, forwarded to it; --flush-interval also sets the consumer's write interval.
    ...CAPTURE_OPTIONS.map((o) => (o.name === 'flush-interval' ? { ...o, help: `${o.help}; also how often the consumer writes windows` } : o)),
    // Who traffic is billed to (the producer's --workload-*) and where it goes (the consumer's --remote-classes):
    // checked here, before anything starts, then forwarded.
    ...WORKLOAD_OPTIONS,
    REMOTE_CLASSES_OPTION,
    { name: 'status-interval', type: 'duration', env: 'NETTALLY_STATUS_INTERVAL', default: '2s', min: 200, help: 'how often the status line is printed' },
    { name: 'dashboard', type: 'bool', env: 'NETTALLY_DASHBOARD', default: true, help: 'serve the dashboard (nettally dashboard) in this process; --no-dashboard to not' },
    { name: 'dashboard-listen', type: 'string', env: 'NETTALLY_DASHBOARD_LISTEN', default: '127.0.0.1:8087', help: 'address of the dashboard page, loopback only (it has no authentication; port 0: any free port)' },
  ],
  examples: [
    'sudo ./nettally up',
    'sudo ./nettally up --data-dir /tmp/nettally --kafka-listen 127.0.0.1:19092 --influx-port 18086',
    'sudo KAFKA_BROKERS=kafka1:9092 INFLUX_URL=http://influx:8086 ./nettally up',
  ],
};

const BPFFS = '/sys/fs/bpf';

function mountType(path: string): string | undefined {
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[1] === path) return f[2];
  }
  return undefined;
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host, port });
    s.setTimeout(500);
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
    s.once('timeout', () => (s.destroy(), res(false)));
  });
}

/** An existing records topic is left as it is (its settings are its operator's); up only says what it has. */
async function reportTimestampType(admin: Admin, topic: string, logger: Logger): Promise<void> {
  try {
    const res = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['message.timestamp.type'] }] });
    const type = res.resources[0]?.configEntries.find((e) => e.configName === 'message.timestamp.type')?.configValue;
    if (type === 'LogAppendTime') logger.info({ topic, timestampType: type }, 'the records topic exists');
    else {
      logger.warn(
        { topic, timestampType: type ?? 'unknown' },
        `the records topic exists with message.timestamp.type=${type ?? 'unknown'}: producers' clocks (or forged records) set the Kafka timestamps; ` +
          'up does not change an existing topic — set message.timestamp.type=LogAppendTime on it (Apache Kafka: kafka-configs --alter --entity-type topics ' +
          `--entity-name ${topic} --add-config message.timestamp.type=LogAppendTime), or remove it to let up recreate it`,
      );
    }
  } catch (e) {
    logger.warn({ topic, err: (e as Error).message }, 'cannot read the records topic\'s message.timestamp.type (DescribeConfigs); leaving the topic as it is');
  }
}

/**
 * Makes sure the records topic exists before the consumer waits for it (the producer would auto-create it with the
 * broker's default), with message.timestamp.type=LogAppendTime. Exported for tests.
 */
export async function ensureTopic(args: ParsedArgs, brokers: string[], topic: string, partitions: number, logger: Logger, signal: AbortSignal): Promise<void> {
  const config = kafkaConfigFrom(new ParsedArgs({ ...args.values, brokers }, [], args.sources));
  const admin = createKafkaClient(config, { retry: { retries: 3 } }).admin();
  const deadline = Date.now() + 60_000;
  try {
    await retry(
      async () => {
        try {
          await admin.connect();
          const topics = await admin.listTopics();
          if (!topics.includes(topic)) {
            // LogAppendTime: the broker's clock, not the sender's, is each record's Kafka timestamp, which bounds how far
            // ahead the consumer lets a record's time_ns go (--max-clock-ahead) — so neither a host whose clock is ahead
            // nor a record forged on the broker can choose its own time.
            await admin.createTopics({ topics: [{ topic, numPartitions: partitions, configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }] }], waitForLeaders: true });
            logger.info({ topic, partitions, timestampType: 'LogAppendTime' }, 'created the records topic');
          } else {
            await reportTimestampType(admin, topic, logger);
          }
          await admin.disconnect();
        } catch (e) {
          await admin.disconnect().catch(() => undefined);
          throw e;
        }
      },
      {
        // a broker just started may refuse anything for a while: every error is worth another try, for a minute
        initialMs: 1000,
        maxMs: 1000,
        retryPermanent: true,
        signal,
        onAttempt: ({ error: e }) => {
          if (Date.now() > deadline) {
            throw new NettallyError('KAFKA_UNAVAILABLE', `cannot create or list the topic ${topic} on ${brokers.join(',')}: ${(e as Error).message}; check --brokers (env KAFKA_BROKERS) and the Kafka TLS/SASL settings`, { cause: e });
          }
          logger.warn({ err: (e as Error).message, brokers }, 'Kafka not ready yet; retrying');
        },
      },
    );
  } catch (e) {
    if (signal.aborted) return;
    throw e;
  }
}

/** The environment for children: ours plus up's Kafka settings as env vars (secrets never on a command line). */
function childEnv(args: ParsedArgs, brokers: string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, KAFKA_BROKERS: brokers.join(',') };
  // Readiness and status come over the IPC channel (bin/up-children.ts), so the children's LOG_LEVEL is the user's.
  // Their logs/*.log stay JSON lines, also when up's own are pretty; up relays their warnings and errors.
  env.LOG_FORMAT = 'json';
  for (const o of FORWARDED_KAFKA_OPTIONS) {
    if (!o.env) continue;
    const v = args.values[o.name];
    if (v === undefined) delete env[o.env];
    else env[o.env] = Array.isArray(v) ? v.join(',') : String(v);
    if (o.secret) delete env[`${o.env}_FILE`];
  }
  return env;
}

/**
 * The producer's workload flags and the consumer's class file, read and checked now (a bad line stops up before it
 * starts anything, naming file:line), as flags for the children with absolute paths.
 */
function billingFlags(args: ParsedArgs): { producer: string[]; consumer: string[] } {
  const w = workloadOptionsFrom(args);
  const producer = ['--max-workloads', String(w.maxNames), '--workload-state-root', resolve(w.stateRoot ?? '/')];
  if (w.rulesFile) {
    loadRules(w.rulesFile);
    producer.push('--workload-rules', resolve(w.rulesFile));
  }
  const classes = args.str('remote-classes');
  loadRemoteClasses(classes);
  return { producer, consumer: classes ? ['--remote-classes', resolve(classes)] : [] };
}

async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const dataDir = resolve(args.str('data-dir'));
  const logDir = join(dataDir, 'logs');
  const pinDir = args.str('pin-dir');
  if (!isPinDirPath(pinDir, BPFFS)) throw configError('--pin-dir (env NETTALLY_PIN_DIR)', `must be a directory under ${BPFFS}/, got ${JSON.stringify(pinDir)}`);
  const capture = captureSettingsFrom(args); // validated before anything starts
  const billing = billingFlags(args); // so are the workload rules and the class file
  const external = args.list('brokers');
  // Port 1 and up: the producer and consumer are given this address as written, so it cannot be "any free port".
  const listen = parseHostPort('--kafka-listen (env NETTALLY_BROKER_LISTEN)', args.str('kafka-listen'), { example: '127.0.0.1:9092', minPort: 1 });
  const dashboardListen = args.bool('dashboard') ? parseListen('--dashboard-listen (env NETTALLY_DASHBOARD_LISTEN)', args.str('dashboard-listen')) : undefined;
  if (dashboardListen) checkListenAddress('--dashboard-listen (env NETTALLY_DASHBOARD_LISTEN)', dashboardListen.host);
  const brokers = external.length > 0 ? external : [formatHostPort(listen)];
  const topic = args.str('topic');
  const db = args.str('influx-db');
  if (topic === '') throw configError('--topic (env KAFKA_TOPIC)', 'must not be empty');
  kafkaConfigFrom(new ParsedArgs({ ...args.values, brokers }, [], args.sources)); // validates TLS/SASL settings up front
  if (process.getuid?.() !== 0) {
    throw new NettallyError('PRIVILEGES', 'needs root: the producer loads eBPF programs, and up mounts bpffs when it is missing (run: sudo ./nettally up)');
  }
  try {
    mkdirSync(logDir, { recursive: true });
  } catch (e) {
    throw configError('--data-dir (env NETTALLY_DATA_DIR)', `cannot create ${logDir}: ${(e as Error).message}`);
  }

  // up's own log: every line on stderr and in logs/up.log, and what it prints on stdout in up.log too. A terminal
  // closing or `| tee` dying then costs the view, not the record, and not the run.
  const upLogPath = join(logDir, 'up.log');
  const upLog = pino.destination({ dest: upLogPath, sync: true, append: true, mode: 0o600 });
  let upLogFailed = false;
  upLog.on('error', (e: Error) => {
    // A full disk must not stop the pipeline (nor throw out of a log call): say it once where it can still be seen.
    if (!upLogFailed) ctx.logger.error({ err: e.message, log: upLogPath }, `cannot write ${upLogPath}; up's log continues on stderr only`);
    upLogFailed = true;
  });
  // On a terminal (LOG_FORMAT unset or pretty): readable log lines and one status line redrawn in place; up.log
  // stays JSON either way.
  const format = logFormat();
  const logger = createLogger({ name: 'nettally-up', alsoTo: upLog, format });
  const transcript = pino({ name: 'nettally-up' }, upLog);
  let stdoutGone = false;
  const write = (text: string): void => {
    if (!stdoutGone) ctx.stdout.write(text);
  };
  const status = format === 'pretty' && (ctx.stdout as NodeJS.WriteStream).isTTY === true ? new StatusLine(write, () => (ctx.stdout as NodeJS.WriteStream).columns) : undefined;
  const say = (text: string): void => {
    transcript.info({ out: text.trimEnd() }, 'output');
    if (status) status.print(text);
    else write(text);
  };
  const sayStatus = (text: string): void => {
    if (!status) return say(text);
    transcript.info({ out: text.trimEnd() }, 'output');
    status.show(text);
  };
  // Writing to a pipe whose reader has exited fails with EPIPE, reported as an 'error' event that would otherwise
  // kill up before it stopped anything. These listeners stay after run() returns: the dispatcher still writes to
  // stderr then.
  const outputGone = (name: string) => (e: NodeJS.ErrnoException): void => {
    if (name === 'stdout') {
      if (stdoutGone) return;
      stdoutGone = true;
    }
    logger.warn({ stream: name, code: e.code, err: e.message }, `${name} is closed (${e.code ?? e.message}: its reader, e.g. tee, has exited); up keeps running, its output and log continue in ${upLogPath}`);
  };
  ctx.stdout.on('error', outputGone('stdout'));
  process.stderr.on('error', outputGone('stderr'));

  // Every way out runs shutdown(): Ctrl-C (ctx.signal), SIGHUP, a child exiting, an exception thrown anywhere in up,
  // including callbacks outside this async chain (they would otherwise end the process with the children,
  // pins and mounts left behind).
  const stop = new AbortController();
  const signal = stop.signal;
  let fatal: Error | undefined;
  const onFatal = (e: unknown): void => {
    const err = e instanceof Error ? e : new Error(String(e));
    logger.error({ err: err.message, stack: err.stack }, 'unexpected error; stopping everything');
    fatal ??= err;
    stop.abort();
  };
  const onStopSignal = (): void => stop.abort();
  if (ctx.signal.aborted) stop.abort();
  else ctx.signal.addEventListener('abort', onStopSignal, { once: true });
  // Closing the terminal up runs in sends SIGHUP, whose default ends the process on the spot: stop as on Ctrl-C.
  const onHangup = (): void => {
    logger.warn({ signal: 'SIGHUP' }, 'SIGHUP (its terminal is gone): stopping everything');
    stop.abort();
  };
  process.on('SIGHUP', onHangup);
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);

  const mounted: string[] = [];
  let pins: PinClaim | undefined;
  const children: AnyChild[] = [];
  let influx: LocalInflux | undefined;
  const removePins = (): void => {
    if (!pins) return;
    if (pins.ownsPinDir) rmSync(pinDir, { recursive: true, force: true });
    // Only once the pins are gone: a marker left behind makes the next up remove them.
    pins.release();
    pins = undefined;
  };
  // A forced exit (second Ctrl-C → process.exit) cannot wait for anything: kill our process groups, then remove what
  // we created, synchronously.
  const cleanUpNow = (): void => {
    logger.warn({ pin_dir: pins?.ownsPinDir ? pinDir : undefined, mounts: mounted }, 'exiting before the orderly stop finished: killing every child (SIGKILL), removing the pins and mounts up made');
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    influx?.killSync();
    try {
      removePins();
    } catch {
      // the marker stays: the next up removes these pins
    }
    for (const path of mounted.reverse()) spawnSync('umount', [path], { stdio: 'ignore' });
  };
  process.once('exit', cleanUpNow);

  let dashboard: { url: string; close(): Promise<void> } | undefined;
  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => (stopping ??= stopAll());
  const stopAll = async (): Promise<void> => {
    await dashboard?.close();
    // Producer first (it ships the kernel's last counters to Kafka), then the consumer (final write + commit), then servers.
    for (const name of ['producer', 'consumer', 'broker']) {
      const c = children.find((x) => x.name === name);
      if (c && c.proc.exitCode === null && c.proc.signalCode === null) {
        logger.info({ component: name }, `stopping ${name}`);
        await stopChild(c, name === 'broker' ? 15_000 : 30_000, logger);
      }
    }
    if (influx) {
      logger.info({ component: 'influxd' }, 'stopping influxd');
      await influx.close();
    }
    try {
      removePins();
    } catch (e) {
      logger.warn({ pin_dir: pinDir, err: (e as Error).message }, 'could not remove the pin directory; the next up on this data dir removes it');
    }
    for (const path of mounted.reverse()) {
      try {
        execFileSync('umount', [path], { stdio: ['ignore', 'ignore', 'pipe'] });
        logger.info({ mount: path }, 'unmounted');
      } catch (e) {
        logger.warn({ mount: path, err: (e as Error).message }, 'could not unmount');
      }
    }
    mounted.length = 0;
    process.removeListener('exit', cleanUpNow);
    process.removeListener('uncaughtException', onFatal);
    process.removeListener('unhandledRejection', onFatal);
    process.removeListener('SIGHUP', onHangup);
    ctx.signal.removeEventListener('abort', onStopSignal);
  };
  /** Stops and cleans everything, then ends the run: an unexpected error wins over `code`. */
  const finish = async (code: number): Promise<number> => {
    await shutdown();
    if (fatal) throw new NettallyError('INTERNAL', `nettally up failed: ${fatal.message}`, { cause: fatal });
    return code;
  };

  try {
    // The producer needs bpffs (pins; its programs need no tracefs: tp_btf, cgroup hooks, an iterator); mount it if missing.
    if (mountType(BPFFS) !== 'bpf') {
      execFileSync('mount', ['-t', 'bpf', 'bpf', BPFFS], { stdio: ['ignore', 'ignore', 'pipe'] });
      mounted.push(BPFFS);
      logger.info({ mount: BPFFS }, 'mounted bpffs');
    }
    // With bpffs in place: stale pins of an earlier up on this data dir go, and our marker names the pin dir.
    pins = claimPins(dataDir, pinDir, logger, BPFFS);

    if (external.length === 0) {
      if (await portOpen(listen.host, listen.port)) {
        throw configError('--kafka-listen (env NETTALLY_BROKER_LISTEN)', `${formatHostPort(listen)} is already in use; pick another address, or set KAFKA_BROKERS to use the Kafka listening there`);
      }
      const broker = startChild('broker', ['broker', '--listen', formatHostPort(listen), '--data-dir', join(dataDir, 'broker'), '--partitions', String(args.num('partitions'))], childEnv(args, brokers), logDir, logger);
      children.push(broker);
      if (!(await waitFor('the broker listens', () => broker.status.ready, broker, 30_000, signal, logDir))) return await finish(0);
    }
    await ensureTopic(args, brokers, topic, args.num('partitions'), logger, signal);

    let influxUrl = args.optStr('influx-url');
    if (!influxUrl && !signal.aborted) {
      const port = args.num('influx-port');
      if (await portOpen('127.0.0.1', port)) {
        throw configError('--influx-port (env NETTALLY_INFLUX_PORT)', `127.0.0.1:${port} is already in use; pick another port, or set INFLUX_URL to use the InfluxDB listening there`);
      }
      influx = await startLocalInflux({ dataDir: join(dataDir, 'influxdb'), httpPort: port, rpcPort: 0, database: db, detached: true, dieWithParent: true, logger });
      influxUrl = influx.url;
    }
    if (signal.aborted || !influxUrl) return await finish(0);

    const env = childEnv(args, brokers);
    const statusEvery = `${args.num('status-interval')}ms`;
    const flushEvery = `${args.num('flush-interval')}ms`;
    // Ready once it reports so: the consumer when its partitions' state is restored, the producer when attached.
    const consumer = startChild('consumer', ['consumer', '--influx-url', influxUrl, '--influx-db', db, '--flush-interval', flushEvery, '--status-interval', statusEvery, ...billing.consumer], env, logDir, logger);
    children.push(consumer);
    const producer = startChild('producer', ['producer', '--state-dir', join(dataDir, 'producer'), ...captureSettingsAsFlags(capture), ...billing.producer, '--status-interval', statusEvery], env, logDir, logger);
    children.push(producer);
    if (dashboardListen) {
      // In this process: the page shows the children's status (records/s, drops, spool, lag) besides InfluxDB's view.
      const influxArgs = parseArgs({ name: 'up', summary: '', options: DASHBOARD_INFLUX_OPTIONS }, ['--influx-url', influxUrl, '--influx-db', db]) as ParsedArgs;
      try {
        dashboard = await startDashboard({
          client: new InfluxClient(influxConfigFrom(influxArgs)),
          ...dashboardListen,
          setting: '--dashboard-listen (env NETTALLY_DASHBOARD_LISTEN)',
          logger: logger.child({ component: 'dashboard' }),
          pipeline: () => pipelineStatus(producer.status, consumer.status),
        });
      } catch (e) {
        // The page is an extra: a busy default port (another up, another program) must not stop the counting.
        // An address the user asked for is theirs to fix, so that fails.
        if (args.sources['dashboard-listen'] !== 'default') throw e;
        logger.warn({ err: (e as Error).message }, 'dashboard not started; set --dashboard-listen to another address (or --no-dashboard)');
      }
    }

    const query = `nettally usage --influx-url ${influxUrl}${db === 'nettally' ? '' : ` --influx-db ${db}`}`;
    say(
      `nettally up: Kafka ${brokers.join(',')}${external.length ? '' : ' (bundled broker)'}, topic ${topic}; InfluxDB ${influxUrl}${influx ? ' (local influxd)' : ''}, ` +
        `database ${db}; logs in ${logDir}.${dashboard ? ` Dashboard: ${dashboard.url}` : ''} Ctrl-C stops everything.\n`,
    );

    const startedAt = Date.now();
    // A child that exits, or reports that it gives up, ends the run.
    const died = Promise.race(children.flatMap((c) => [c.exited.then((code) => ({ c, code })), c.failed.then(() => ({ c, code: undefined }))]));
    let announced = false;
    const tick = (): void => {
      if (!announced && producer.status.ready && consumer.status.ready) {
        announced = true;
        say(`nettally up: ready — counting traffic (producer attached, consumer consuming). Query: ${query} --from -1h --group-by netns,port${dashboard ? ` — Dashboard: ${dashboard.url}` : ''}\n`);
      }
    };
    const readyPoll = setInterval(tick, 100);
    const ticker = setInterval(() => sayStatus(statusLine(Date.now() - startedAt, producer.status, consumer.status, query)), args.num('status-interval'));
    const stopped = new Promise<'signal'>((r) => (signal.aborted ? r('signal') : signal.addEventListener('abort', () => r('signal'), { once: true })));
    const first = await Promise.race([stopped, died]);
    clearInterval(ticker);
    clearInterval(readyPoll);
    status?.end();
    if (first !== 'signal') {
      const { c, code } = first;
      const why = c.status.failure === undefined ? '' : `: ${c.status.failure}`;
      const what = code === undefined ? `failed${why}` : `exited unexpectedly (code ${code})${why}`;
      logger.error({ component: c.name, code, error: c.status.failure, last: c.lastLines.last(5) }, `${c.name} ${what}; stopping everything — see ${join(logDir, `${c.name}.log`)}`);
      return await finish(1);
    }
    if (!fatal) say('nettally up: stopping (producer, consumer, broker, influxd)...\n');
    const code = await finish(0);
    say('nettally up: stopped\n');
    return code;
  } catch (err) {
    await shutdown();
    if (err instanceof NettallyError) throw err;
    throw new NettallyError('INTERNAL', `nettally up failed: ${(err as Error).message}`, { cause: err });
  }
}

export const command: Command = { spec, run };

// The typed status each daemon (broker, producer, consumer, dashboard) reports to the `nettally up` that started
// it, over Node's IPC channel: up decides readiness, draws its status line and its JSON status and chooses when to
// stop from these objects, never from log text (a reworded or silenced log line changes nothing). The daemons keep
// logging the same numbers for operators. Started by hand (no up, no channel), a daemon reports nothing.
//
// Imports nothing but Node (types only): the unit test runs this file in a forked child as plain JavaScript.

/**
 * starting: not yet doing its job; ready: doing it; degraded: running but impaired (producer: Kafka refuses or is
 * away, the spool holds the records; consumer: InfluxDB is down); failed: giving up (the process exits next).
 */
export type Phase = 'starting' | 'ready' | 'degraded' | 'failed';

export const DAEMONS = ['broker', 'producer', 'consumer', 'dashboard'] as const;
export type DaemonName = (typeof DAEMONS)[number];

/** A daemon's report while it runs; its numbers are as of the moment it was sent. */
interface Common {
  phase: Exclude<Phase, 'failed'>;
  /** Why it is degraded, for people (up repeats it). */
  error?: string;
}

export interface BrokerReport extends Common {
  daemon: 'broker';
  /** host:port clients connect to. */
  address?: string;
}

export interface ProducerReport extends Common {
  daemon: 'producer';
  /** Records Kafka acknowledged since start (cumulative: up derives the rate from two reports). */
  records_out: number;
  /** Kernel ring-buffer reservations that failed (records lost, counters not). */
  kernel_drops?: number;
  /** Connections / interfaces not tracked because a kernel map was full (bytes uncounted). */
  conn_map_full?: number;
  iface_map_full?: number;
  spool_bytes: number;
  /** connecting, ok, retrying (transient) or error (needs an operator; kafka_error_code says which). */
  kafka_state: 'connecting' | 'ok' | 'retrying' | 'error';
  kafka_error_code: string | null;
}

export interface ConsumerReport extends Common {
  daemon: 'consumer';
  /** Records read per second (duplicates included) over the last status interval. */
  events_per_s: number;
  /** Sum over assigned partitions of high watermark − next offset. */
  lag: number;
  partitions: number[];
  /** Start of the newest window written to InfluxDB, ISO time; null before the first. */
  last_window: string | null;
  /** Since when InfluxDB refuses or is unreachable (ms since the epoch); null when it is fine. */
  influx_down_since_ms: number | null;
}

export interface DashboardReport extends Common {
  daemon: 'dashboard';
  url?: string;
}

/** The last report of a daemon that gives up: the dispatcher sends it for any command that ends with an error. */
export interface FailureReport {
  daemon: DaemonName;
  phase: 'failed';
  error: string;
}

export type DaemonReport = BrokerReport | ProducerReport | ConsumerReport | DashboardReport | FailureReport;
/** The running reports of one daemon (a FailureReport names any daemon, so it is not among them). */
export type ReportOf<D extends DaemonName> = Extract<DaemonReport, { daemon: D }>;

/** The message on the channel: tagged, so a parent never takes another program's message for a status. */
export interface StatusMessage {
  nettally_status: typeof STATUS_VERSION;
  report: DaemonReport;
}
export const STATUS_VERSION = 1;

/** Set by up in its children's environment: report over the IPC channel it opened. */
export const STATUS_CHANNEL_ENV = 'NETTALLY_STATUS_CHANNEL';

const PHASES: readonly string[] = ['starting', 'ready', 'degraded', 'failed'];

/** The report in a message from a child, or undefined for anything that is not a well-formed status message. */
export function parseStatusMessage(msg: unknown): DaemonReport | undefined {
  if (typeof msg !== 'object' || msg === null) return undefined;
  const m = msg as Partial<StatusMessage>;
  if (m.nettally_status !== STATUS_VERSION || typeof m.report !== 'object' || m.report === null) return undefined;
  const r = m.report as unknown as Record<string, unknown>;
  if (!(DAEMONS as readonly unknown[]).includes(r.daemon) || !PHASES.includes(r.phase as string)) return undefined;
  if (r.phase === 'failed' && typeof r.error !== 'string') return undefined;
  return m.report;
}

export interface StatusReporter {
  /** True when reports go somewhere (this process was started by up). */
  readonly enabled: boolean;
  /** Sends a report; resolves once it is handed to the channel or could not be (never rejects, never throws). */
  report(r: DaemonReport): Promise<void>;
}

type Channel = Pick<NodeJS.Process, 'send' | 'connected'>;

/**
 * The reporter of this process: live only when up asked for it (STATUS_CHANNEL_ENV=ipc) and the IPC channel is
 * there. The variable is removed at once, so a Node program this daemon starts never reports to it by mistake.
 * A parent that is gone (up killed) costs nothing: the send fails quietly.
 */
export function statusReporter(env: NodeJS.ProcessEnv = process.env, channel: Channel = process): StatusReporter {
  const asked = env[STATUS_CHANNEL_ENV] === 'ipc';
  delete env[STATUS_CHANNEL_ENV];
  const enabled = asked && typeof channel.send === 'function';
  return {
    enabled,
    report: (r) =>
      new Promise<void>((resolve) => {
        if (!enabled || !channel.connected || !channel.send) return resolve();
        const msg: StatusMessage = { nettally_status: STATUS_VERSION, report: r };
        try {
          // With a callback, a failed send (EPIPE: up died) is passed to it instead of being thrown as 'error'.
          channel.send(msg, undefined, {}, () => resolve());
        } catch {
          resolve();
        }
      }),
  };
}

let shared: StatusReporter | undefined;
/** The process's one reporter (the environment variable is read once). */
export function processStatusReporter(): StatusReporter {
  return (shared ??= statusReporter());
}

// `nettally dashboard`: the traffic dashboard (a small web page) over the InfluxDB rollups, until Ctrl-C.
import type { CommandSpec, OptionSpec, ParsedArgs } from '../lib/args';
import type { Command, CommandContext } from '../lib/command';
import { INFLUX_OPTIONS, InfluxClient, influxConfigFrom } from '../consumer/influx';
import { processStatusReporter } from '../lib/status';
import { parseListen, startDashboard } from './server';

/** --listen and --allow-remote, shared with `nettally up` (which serves the dashboard too). */
export const DASHBOARD_LISTEN_OPTIONS: readonly OptionSpec[] = [
  { name: 'listen', type: 'string', env: 'NETTALLY_DASHBOARD_LISTEN', default: '127.0.0.1:8087', help: 'address of the page, host:port (port 0: any free port)' },
  { name: 'allow-remote', type: 'bool', env: 'NETTALLY_DASHBOARD_ALLOW_REMOTE', default: false, help: 'allow a non-loopback --listen address (the page has NO authentication: put a proxy with authentication in front)' },
];

/**
 * InfluxDB settings of `usage`, with a longer query timeout: a 24 h chart over a fleet's 1-minute rollup takes
 * seconds on a busy server (bench/RESULTS.md), and a page that waits beats one that fails and is reloaded.
 */
export const DASHBOARD_INFLUX_OPTIONS: readonly OptionSpec[] = INFLUX_OPTIONS.map((o) => (o.name === 'influx-timeout' ? { ...o, default: '30s' } : o));

const spec: CommandSpec = {
  name: 'dashboard',
  summary: 'Serve the traffic dashboard (a web page over the InfluxDB rollups) on 127.0.0.1 until Ctrl-C.',
  description: [
    'Stacked traffic over time by host, network namespace, port, process, protocol or direction (15m to 7d), the',
    'hourly totals with their final state, the billing CSV as a download, the last minute (refreshed every 5 s) and',
    'what InfluxDB tells about the pipeline (newest window written, newest final window). Every number comes from',
    "the queries of 'nettally usage', so the page and the CLI agree. The page has no authentication: it listens on",
    'loopback only, unless --allow-remote; requests naming another Host are refused. `nettally up` serves it too.',
  ].join('\n'),
  options: [...DASHBOARD_LISTEN_OPTIONS, ...DASHBOARD_INFLUX_OPTIONS],
  examples: [
    'nettally dashboard                                   # http://127.0.0.1:8087/, InfluxDB at http://127.0.0.1:8086',
    'nettally dashboard --listen 127.0.0.1:9000 --influx-url http://influx:8086 --influx-db nettally',
    'ssh -L 8087:127.0.0.1:8087 host-with-nettally      # look at a remote machine\'s dashboard from here',
  ],
};

async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const setting = '--listen (env NETTALLY_DASHBOARD_LISTEN)';
  const listen = parseListen(setting, args.str('listen'));
  const config = influxConfigFrom(args);
  const dashboard = await startDashboard({ client: new InfluxClient(config), ...listen, setting, allowRemote: args.bool('allow-remote'), logger: ctx.logger });
  void processStatusReporter().report({ daemon: 'dashboard', phase: 'ready', url: dashboard.url });
  ctx.stdout.write(`nettally dashboard: ${dashboard.url} (InfluxDB ${config.url}, database ${config.db}). No authentication: anyone who can reach this address can read the traffic. Ctrl-C stops.\n`);
  await new Promise<void>((r) => (ctx.signal.aborted ? r() : ctx.signal.addEventListener('abort', () => r(), { once: true })));
  await dashboard.close();
  return 0;
}

export const command: Command = { spec, run };

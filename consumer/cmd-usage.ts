// `nettally usage`: traffic history from the InfluxDB rollups as table/CSV/JSON, and the hourly billing export.
import type { CommandSpec, ParsedArgs } from '../lib/args';
import type { Command, CommandContext } from '../lib/command';
import { configError } from '../lib/errors';
import { INFLUX_OPTIONS, InfluxClient, influxConfigFrom } from './influx';
import { BILLING_PER, GROUP_BY_TAGS, IFACE_SUM_FIELDS, TRAFFIC_SUM_FIELDS, billingCsv, billingQuery, flatten, formatRows, groupTags, parseBillingPer, parseGroupBy, parseTime, runUsage, type UsageQuery } from './usage';

const spec: CommandSpec = {
  name: 'usage',
  summary: 'Traffic history and billing exports from the nettally rollups in InfluxDB.',
  description: [
    'Sums the rollup points of every Kafka partition per window and group (InfluxQL: runs on InfluxDB 1.x, on 2.x',
    'through its v1 API, and on 3.x). A window is listed when its start lies in [--from, --to). Bytes are payload',
    'bytes (traffic) or wire bytes (--measurement iface). "final" is true once every summed point is final.',
    'active_connections: connections open at the window\'s end; peak_connections: the sum of each series\' most open at once.',
    'With --billing: one CSV row per hour and host (or network namespace, workload, remote class), from the 1-hour rollup.',
  ].join('\n'),
  options: [
    { name: 'from', type: 'string', default: '-1h', help: 'start: now, -<duration> (e.g. -24h), ISO 8601 date, or Unix time' },
    { name: 'to', type: 'string', default: 'now', help: 'end (exclusive), same forms as --from' },
    { name: 'group-by', type: 'list', default: ['host'], help: `comma-separated: ${Object.keys(GROUP_BY_TAGS).join(', ')}` },
    { name: 'window', type: 'enum', choices: ['1m', '1h'], default: '1m', help: 'rollup to read: 1-minute or 1-hour windows' },
    { name: 'measurement', type: 'enum', choices: ['traffic', 'iface'], default: 'traffic', help: 'payload traffic per connection group, or interface wire counters' },
    { name: 'format', type: 'enum', choices: ['table', 'csv', 'json'], default: 'table', help: 'output format' },
    { name: 'billing', type: 'bool', default: false, help: 'hourly billing export (CSV) from the 1-hour rollup' },
    { name: 'per', type: 'list', default: ['host'], help: `billing granularity (with --billing), comma-separated: ${BILLING_PER.join(', ')}` },
    ...INFLUX_OPTIONS,
  ],
  examples: [
    'nettally usage --from -6h --group-by host,port',
    'nettally usage --from 2026-11-01T00:00:00Z --to 2026-11-02T00:00:00Z --window 1h --format csv',
    'nettally usage --billing --per netns --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z > november.csv',
    'nettally usage --billing --per workload,remote_class --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z',
    'nettally usage --from -1h --group-by workload,remote_class',
  ],
};

async function run(args: ParsedArgs, ctx: CommandContext): Promise<number> {
  const now = Date.now();
  const fromMs = parseTime('--from', args.str('from'), now);
  const toMs = parseTime('--to', args.str('to'), now);
  if (toMs <= fromMs) throw configError('--from/--to', `--to must be after --from (${new Date(fromMs).toISOString()} .. ${new Date(toMs).toISOString()})`);
  const client = new InfluxClient(influxConfigFrom(args));
  const billing = args.bool('billing');
  const measurement = billing ? 'traffic' : (args.str('measurement') as 'traffic' | 'iface');
  const groupBy = billing ? [] : parseGroupBy('--group-by', args.list('group-by'), measurement);
  const q: UsageQuery = billing ? billingQuery(fromMs, toMs, parseBillingPer('--per', args.list('per'))) : { measurement, fromMs, toMs, windowMs: args.str('window') === '1h' ? 3_600_000 : 60_000, groupBy };
  ctx.logger.debug({ query: q }, 'querying InfluxDB');
  const rows = await runUsage(client, q);
  const tags = groupTags(q);
  if (billing) {
    ctx.stdout.write(billingCsv(rows, q));
    return 0;
  }
  const fields = measurement === 'traffic' ? TRAFFIC_SUM_FIELDS : IFACE_SUM_FIELDS;
  ctx.stdout.write(formatRows(flatten(rows), ['window', ...tags, ...fields, 'final', 'gap'], args.str('format') as 'table' | 'csv' | 'json'));
  return 0;
}

export const command: Command = { spec, run };

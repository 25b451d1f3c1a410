// `nettally top`: live per-process / per-connection / per-netns RX/TX rates and totals straight from the kernel.
import type { CommandSpec } from '../lib/args';
import type { Command } from '../lib/command';
import { openCapture } from './capture';
import { captureOptions, ringBufferBytesFrom } from './capture-options';
import { ProcessEnricher } from './host';
import { TopModel, renderFrame } from './top';
import { WORKLOAD_DEFAULTS, WORKLOAD_OPTIONS, WorkloadResolver, workloadOptionsFrom } from './workload';

const spec: CommandSpec = {
  name: 'top',
  summary: 'live per-process/connection/netns/workload traffic straight from the kernel',
  description:
    'Payload bytes per connection (TCP and UDP), summed per process, per network namespace and per workload (named ' +
    'as the producer names them: --workload-rules, pod, container, ip netns name, systemd unit, host), with rates over ' +
    'the last interval. Totals count from when top started. Closed connections are marked * for one interval and ' +
    'stay in their process and netns totals.',
  options: [
    { name: 'interval', type: 'duration', help: 'refresh interval', default: 1000, min: 100 },
    { name: 'count', type: 'int', help: 'stop after this many intervals (0 = until SIGINT/SIGTERM)', default: 0, min: 0 },
    { name: 'pid', type: 'int', help: 'only connections owned by this process (tgid)', min: 0 },
    { name: 'netns', type: 'int', help: 'only connections in this network namespace (inode, as in `stat -Lc %i /proc/<pid>/ns/net`)', min: 0 },
    { name: 'json', type: 'bool', help: 'one JSON document per interval (same field names as the records; the busiest --limit connections)', default: false },
    { name: 'limit', type: 'int', help: 'rows per table in the text view; connections per --json document', default: 20, min: 1 },
    // Of the capture settings only the map sizes apply: top reads the connection map and discards the records.
    ...captureOptions('max-connections', 'ring-buffer-bytes'),
    ...WORKLOAD_OPTIONS,
  ],
  examples: ['sudo nettally top', 'sudo nettally top --json --interval 5s --count 12', 'sudo nettally top --netns 4026532256'],
};

export const command: Command = {
  spec,
  async run(args, ctx) {
    const interval = args.num('interval');
    const count = args.num('count');
    const json = args.bool('json');
    const limit = args.num('limit');
    // Before the capture opens: a bad rule file is a configuration error naming file:line.
    const workloads = new WorkloadResolver({ ...workloadOptionsFrom(args), logger: ctx.logger });
    const enricher = new ProcessEnricher();
    // only the busiest --limit connections become rows (text and JSON): a frame never holds the whole connection map
    const model = new TopModel(
      { pid: args.optNum('pid'), netns: args.optNum('netns') },
      (r) => workloads.resolve(enricher.lookup(r.pid, Date.now(), r.cgroup_id), r.netns),
      limit,
    );
    const refresh = setInterval(() => workloads.refresh(), WORKLOAD_DEFAULTS.refreshMs);
    refresh.unref();
    // top reads the maps; records are not needed, so flush rarely and ignore the ring buffer's contents
    const cap = await openCapture(
      { flushIntervalMs: 3_600_000, flushThresholdBytes: Number.MAX_SAFE_INTEGER, ifaceIntervalMs: 0, maxConnections: args.num('max-connections'), ringBufferBytes: ringBufferBytesFrom(args) },
      ctx.logger,
    );
    const drain = (async () => {
      for await (const _batch of cap.records()) {
        // discarded: the snapshots carry the same cumulative counters
      }
    })();
    const tty = !json && (ctx.stdout as NodeJS.WriteStream).isTTY === true;
    let frames = 0;
    let last = Date.now();
    try {
      while (!ctx.signal.aborted && (count === 0 || frames < count)) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, interval);
          ctx.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
        });
        if (ctx.signal.aborted) break;
        const now = Date.now();
        const { frame, closed } = model.updateChunks(cap.snapshotChunks(), now - last, now);
        last = now;
        cap.forget(closed);
        frames++;
        if (json) ctx.stdout.write(JSON.stringify(frame) + '\n');
        else ctx.stdout.write((tty ? '\x1b[H\x1b[2J' : frames > 1 ? '\n' : '') + renderFrame(frame, limit));
      }
    } finally {
      clearInterval(refresh);
      await cap.close();
      await drain;
    }
    return 0;
  },
};

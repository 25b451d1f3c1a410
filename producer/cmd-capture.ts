// `nettally capture`: dumps decoded kernel records (JSON lines or one readable line each) straight from the capture API.
import type { CommandSpec } from '../lib/args';
import type { Command } from '../lib/command';
import { KernelKind, openCapture, type Capture, type KernelRecord } from './capture';
import { CAPTURE_OPTIONS, captureSettingsFrom, checkSettings, pinDirOption } from './capture-options';

const spec: CommandSpec = {
  name: 'capture',
  summary: 'dump decoded kernel records as JSON lines (debugging)',
  description:
    'Loads and attaches the eBPF programs and prints every record the kernel emits: connection open/sample/close, ' +
    'listen events and per-interface counters. Field names are the record contract (bpf/nettally.h). Closed ' +
    'connections are forgotten in the kernel once printed. Kernel drop counters are logged on exit.',
  options: [
    { name: 'json', type: 'bool', help: 'one JSON object per line (otherwise one readable line per record)', default: false },
    { name: 'duration', type: 'duration', help: 'stop after this long (0 = until SIGINT/SIGTERM)', default: 0, min: 0 },
    { name: 'count', type: 'int', help: 'stop after this many records (0 = no limit)', default: 0, min: 0 },
    ...CAPTURE_OPTIONS,
    pinDirOption(undefined, 'bpffs directory for pinned maps, reused when present (counters continue); unset or "none": no pinning'),
    { name: 'snapshot', type: 'bool', help: 'print every tracked connection (flush_reason snapshot) first', default: false },
    { name: 'check', type: 'bool', help: 'load and attach the kernel programs with the settings above, then exit 0 (or fail saying why)', default: false },
  ],
  examples: ['sudo nettally capture --json --duration 10s', 'sudo nettally capture --check', 'sudo nettally capture --json --count 100 | jq .'],
};

/** Kernel kind -> its readable name: CONN_OPEN -> OPEN (the NT_KIND_* name without the CONN_ prefix). */
const KIND_NAMES: Record<number, string> = Object.fromEntries(Object.entries(KernelKind).map(([name, kind]) => [kind, name.replace(/^CONN_/, '')]));

function hostPort(addr: string, port: number, family: number): string {
  return family === 10 ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** One readable line per record (the JSON form is the contract; this is for eyes). */
function formatRecord(r: KernelRecord): string {
  const kind = KIND_NAMES[r.kind] ?? String(r.kind);
  if (r.kind === KernelKind.LISTEN) {
    return `${kind.padEnd(6)} tcp ${hostPort(r.addr, r.port, r.family)} backlog=${r.backlog} netns=${r.netns} pid=${r.pid} comm=${r.comm}`;
  }
  if (r.kind === KernelKind.IFACE) {
    return `${kind.padEnd(6)} netns=${r.netns} ifindex=${r.ifindex} rx=${r.rx_bytes}B/${r.rx_packets}p tx=${r.tx_bytes}B/${r.tx_packets}p`;
  }
  const proto = r.protocol === 6 ? 'tcp' : 'udp';
  const dir = ['?', 'out', 'in'][r.direction];
  const dur = r.kind === KernelKind.CONN_CLOSE ? ` duration=${(r.duration_ns / 1e9).toFixed(3)}s` : '';
  return (
    `${kind.padEnd(6)} ${proto} ${hostPort(r.saddr, r.sport, r.family)} ${dir === 'in' ? '<-' : '->'} ${hostPort(r.daddr, r.dport, r.family)} ` +
    `tx=${r.tx_bytes} rx=${r.rx_bytes} retrans=${r.retransmits} pid=${r.pid} comm=${r.comm} netns=${r.netns} reason=${r.flush_reason}${dur}`
  );
}

/** Resolves once `out` takes more writes (at once unless its buffer is full); also on error/close (then nothing waits). */
function drained(out: NodeJS.WritableStream): Promise<void> {
  const w = out as NodeJS.WritableStream & { writableNeedDrain?: boolean };
  if (!w.writableNeedDrain) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      for (const ev of ['drain', 'error', 'close']) w.removeListener(ev, done);
      resolve();
    };
    for (const ev of ['drain', 'error', 'close']) w.once(ev, done);
  });
}

export const command: Command = {
  spec,
  async run(args, ctx) {
    const log = ctx.logger;
    const settings = captureSettingsFrom(args);
    if (args.bool('check')) {
      const check = checkSettings(settings);
      await (await openCapture(check.settings, log)).close();
      ctx.stdout.write(`nettally capture: kernel programs load and attach${check.note ? ` (${check.note})` : ''}\n`);
      return 0;
    }
    const cap: Capture = await openCapture(settings, log);
    const json = args.bool('json');
    const limit = args.num('count');
    let printed = 0;
    let stopping = false;
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      void cap.close();
    };
    let broken = false;
    ctx.stdout.on('error', () => {
      broken = true; // e.g. `| head`: stop quietly
      stop();
    });
    const print = (recs: readonly KernelRecord[]): void => {
      if (broken) return;
      let out = '';
      for (const r of recs) {
        if (limit > 0 && printed >= limit) break;
        out += (json ? JSON.stringify(r) : formatRecord(r)) + '\n';
        printed++;
      }
      if (out) ctx.stdout.write(out);
      if (limit > 0 && printed >= limit) stop();
    };
    const duration = args.num('duration');
    const timer = duration > 0 ? setTimeout(stop, duration) : undefined;
    const status = setInterval(() => log.info({ printed, ...cap.stats() }, 'capturing'), 30_000);
    ctx.signal.addEventListener('abort', stop, { once: true });
    try {
      if (args.bool('snapshot')) {
        // chunk by chunk, each written (and drained by the reader) before the next is read: the whole connection map
        // (up to --max-connections, ~0.5 KB each) is never in memory at once
        for (const chunk of cap.snapshotChunks()) {
          print(chunk);
          if (stopping) break;
          await drained(ctx.stdout);
        }
      }
      for await (const batch of cap.records()) {
        print(batch);
        // printed is as durable as this command gets: let the kernel drop closed connections
        const closed = batch.flatMap((r) => (r.kind === KernelKind.CONN_CLOSE ? [r.cookie] : []));
        if (closed.length > 0 && !stopping) cap.forget(closed);
      }
    } finally {
      if (timer) clearTimeout(timer);
      clearInterval(status);
      ctx.signal.removeEventListener('abort', stop);
      stop();
      await cap.close();
    }
    log.info({ printed, ...cap.stats() }, 'capture finished');
    return 0;
  },
};

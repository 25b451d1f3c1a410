#!/usr/bin/env node
// The `nettally` CLI: dispatches to each pipeline stage's subcommand module, loaded on demand.
import { formatHelp, parseArgs } from '../lib/args';
import type { Command } from '../lib/command';
import { NettallyError } from '../lib/errors';
import { createLogger, type Logger } from '../lib/log';
import { DAEMONS, processStatusReporter, type DaemonName } from '../lib/status';

/** Subcommand → module exporting `command: Command`. Each lives with the stage it drives. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  up: { summary: 'run the whole pipeline on this machine (broker, InfluxDB, producer, consumer)', load: async () => (await import('./up')).command },
  producer: { summary: 'count traffic in the kernel and ship records to Kafka', load: async () => (await import('../producer/cmd-producer')).command },
  consumer: { summary: 'aggregate records from Kafka into exact InfluxDB rollups', load: async () => (await import('../consumer/cmd-consumer')).command },
  broker: { summary: 'run the bundled single-node Kafka-protocol broker', load: async () => (await import('../broker/cli')).command },
  top: { summary: 'live per-process/connection/netns traffic straight from the kernel', load: async () => (await import('../producer/cmd-top')).command },
  usage: { summary: 'traffic history and billing exports from InfluxDB', load: async () => (await import('../consumer/cmd-usage')).command },
  dashboard: { summary: 'serve the traffic dashboard web page over InfluxDB (loopback)', load: async () => (await import('../dashboard/cmd-dashboard')).command },
  capture: { summary: 'dump decoded kernel records as JSON lines (debugging)', load: async () => (await import('../producer/cmd-capture')).command },
};

function mainHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length)) + 3;
  return [
    'Usage: nettally <command> [options]',
    '',
    'Exact network traffic accounting: eBPF counters -> Kafka (Avro) -> InfluxDB rollups.',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`),
    '',
    "Run 'nettally <command> --help' for a command's options.",
    '',
  ].join('\n');
}

/**
 * A daemon that ends with an error tells the `nettally up` that started it why, before it exits (bounded: a parent
 * that stopped reading must not hold the exit).
 */
async function reportFailure(name: string, err: unknown): Promise<void> {
  if (!(DAEMONS as readonly string[]).includes(name)) return;
  const reporter = processStatusReporter();
  if (!reporter.enabled) return;
  const sent = reporter.report({ daemon: name as DaemonName, phase: 'failed', error: err instanceof Error ? err.message : String(err) });
  await Promise.race([sent, new Promise((r) => setTimeout(r, 1000).unref())]);
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    process.stdout.write(`${(await import('../package.json')).version}\n`);
    return 0;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    process.stderr.write(`nettally: unknown command '${name}'\n\n${mainHelp()}`);
    return 2;
  }
  if (name === 'producer') {
    // The daemon on every host runs with its own memory settings (producer/runtime.ts): this re-executes the process
    // once (same pid) unless they are in force, given by the user, or turned off.
    const [{ applyRuntimePlan }, { loadNative }] = await Promise.all([import('../producer/runtime'), import('../native/index')]);
    applyRuntimePlan(loadNative, (msg) => process.stderr.write(`nettally producer: warning: ${msg}\n`));
  } else if (name === 'consumer') {
    // the consumer too (consumer/runtime.ts): its young generation and malloc arenas, the same way
    const [{ applyConsumerRuntime }, { loadNative }] = await Promise.all([import('../consumer/runtime'), import('../native/index')]);
    applyConsumerRuntime(loadNative, (msg) => process.stderr.write(`nettally consumer: warning: ${msg}\n`));
  }
  const command = await entry.load();
  let logger: Logger;
  try {
    logger = createLogger({ name: `nettally-${name}` });
  } catch (err) {
    // LOG_FORMAT set to something unknown: there is no logger to say it with yet.
    process.stderr.write(`nettally ${name}: ${(err as Error).message}\n`);
    return 2;
  }
  try {
    const args = parseArgs(command.spec, rest);
    if (args === 'help') {
      process.stdout.write(formatHelp(command.spec));
      return 0;
    }
    for (const w of args.warnings) logger.warn(w);
    const controller = new AbortController();
    let firstSignalAt = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      // The same stop request often arrives twice at once (to the process and to its group, e.g. timeout(1),
      // kill -- -PGID): only a signal sent again later means "force".
      if (firstSignalAt === 0 || Date.now() - firstSignalAt < 1000) {
        if (firstSignalAt === 0) logger.info({ signal: sig }, 'stopping (send again to force)');
        firstSignalAt ||= Date.now();
        controller.abort();
      } else {
        logger.warn({ signal: sig }, 'forced exit');
        process.exit(130);
      }
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    return await command.run(args, { logger, signal: controller.signal, stdout: process.stdout });
  } catch (err) {
    await reportFailure(name, err);
    if (err instanceof NettallyError) {
      process.stderr.write(`nettally ${name}: ${err.message}\n`);
      if (err.code === 'CONFIG_INVALID') process.stderr.write(`See 'nettally ${name} --help'.\n`);
      return err.code === 'CONFIG_INVALID' ? 2 : 1;
    }
    logger.fatal({ err }, 'unexpected failure');
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // The command is done; a client library's retry timer or socket (kafkajs with a broker gone) must not keep the
    // process alive. Not ref'd: an ordinary exit happens at once.
    setTimeout(() => process.exit(), 2000).unref();
  },
  (err: unknown) => {
    process.stderr.write(`nettally: ${String(err)}\n`);
    process.exitCode = 1;
  },
);

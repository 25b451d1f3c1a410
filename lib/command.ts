// What a `nettally` subcommand module exports, and the context the dispatcher hands it.
import type { CommandSpec, ParsedArgs } from './args';
import type { Logger } from './log';

export interface CommandContext {
  logger: Logger;
  /** Aborted on the first SIGINT/SIGTERM: finish cleanly (flush, close, release kernel objects). */
  signal: AbortSignal;
  stdout: NodeJS.WritableStream;
}

/** A subcommand: its option spec (which also renders --help) and its body; resolves to the exit code. */
export interface Command {
  spec: CommandSpec;
  run(args: ParsedArgs, ctx: CommandContext): Promise<number>;
}

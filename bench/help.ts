// `--help` for the benches set by BENCH_* environment variables (bench:fleet and bench:broker take flags and have
// their own): what the bench measures and each variable it reads, then exit — instead of starting a run of minutes.
// Any other argument is refused the same way, so a mistyped flag never runs a bench with silently ignored settings.

/** Prints the help and exits when asked (or on an argument the bench does not take); returns otherwise. */
export function benchHelp(name: string, summary: string, vars: Readonly<Record<string, string>>): void {
  const args = process.argv.slice(2);
  if (args.length === 0) return;
  const asked = args.every((a) => a === '--help' || a === '-h');
  const width = Math.max(...Object.keys(vars).map((k) => k.length));
  const text = [
    `Usage: [BENCH_…=value …] npm run ${name}`,
    '',
    summary,
    '',
    'Settings (environment):',
    ...Object.entries(vars).map(([k, v]) => `  ${k.padEnd(width)}  ${v}`),
    '',
    'Results go to stdout; record them with the command and `uptime` in bench/RESULTS.md.',
    '',
  ].join('\n');
  if (asked) {
    process.stdout.write(text);
    process.exit(0);
  }
  process.stderr.write(`${name}: takes no arguments (got ${args.map((a) => JSON.stringify(a)).join(' ')}); settings are environment variables:\n\n${text}`);
  process.exit(2);
}

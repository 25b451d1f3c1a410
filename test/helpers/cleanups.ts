// Test helper: cleanups run in reverse order after a test file, also when it failed; each failure is reported, none
// stops the others.
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';

export class Cleanups {
  private readonly fns: Array<() => Promise<unknown> | unknown> = [];

  push(...fns: Array<() => Promise<unknown> | unknown>): void {
    this.fns.push(...fns);
  }

  /** A fresh temp dir, removed by run(). */
  tempDir(tag: string): string {
    const d = mkdtempSync(join(tmpdir(), `nettally-${tag}-`));
    this.push(() => rmSync(d, { recursive: true, force: true }));
    return d;
  }

  async run(): Promise<void> {
    for (const c of this.fns.splice(0).reverse()) {
      try {
        await c();
      } catch (e) {
        process.stderr.write(`cleanup failed: ${String(e)}\n`);
      }
    }
  }
}

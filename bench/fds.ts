// Many open descriptors held by helper processes (bench/fds.py): what the refresh iterator walks (bench:capture) and
// live TCP connections the producer tracks (bench:producer).
import { spawn, type ChildProcess } from 'child_process';
import { join, resolve } from 'path';

const ROOT = resolve(__dirname, '../..');
const FDS_PER_PROCESS = 16000; // below this machine's hard RLIMIT_NOFILE (20000), which root cannot raise here

/** Starts processes holding `count` descriptors of `kind` between them (bench/fds.py); resolves once all are open. */
export async function holdFds(kind: string, count: number): Promise<ChildProcess[]> {
  const procs: ChildProcess[] = [];
  const ready: Promise<void>[] = [];
  for (let left = count; left > 0; left -= FDS_PER_PROCESS) {
    const p = spawn('python3', [join(ROOT, 'bench', 'fds.py'), kind, String(Math.min(left, FDS_PER_PROCESS))], { stdio: ['pipe', 'pipe', 'inherit'] });
    procs.push(p);
    ready.push(
      new Promise((ok, fail) => {
        let out = '';
        p.stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) ok();
        });
        p.once('exit', (code) => fail(new Error(`fds.py ${kind} exited ${code} before holding its descriptors`)));
      }),
    );
  }
  try {
    await Promise.all(ready);
  } catch (e) {
    releaseFds(procs);
    throw e;
  }
  return procs;
}

export function releaseFds(procs: ChildProcess[]): void {
  for (const p of procs) {
    p.stdin?.end();
    p.kill();
  }
}

// Test helper for capture scenarios: collects a capture's records in the background and runs the traffic generator.
import path from 'path';
import type { Capture, ConnRecord, KernelRecord, ListenRecord } from '../../producer/capture';
import { nsSpawn, type NetnsPair, type Spawned } from './netns';

export const TRAFFIC_PY = path.join(__dirname, 'traffic.py');

export interface Moved {
  sport: number;
  dport: number;
  rx: number;
  tx: number;
}

export class Collector {
  readonly records: KernelRecord[] = [];
  private readonly loop: Promise<void>;
  constructor(readonly cap: Capture) {
    this.loop = (async () => {
      for await (const batch of cap.records()) {
        this.records.push(...batch);
        // closed connections are shipped as soon as we saw them: let the kernel drop them
        const closed = batch.filter((r): r is ConnRecord => r.kind === 3).map((r) => r.cookie);
        if (closed.length) cap.forget(closed);
      }
    })();
  }
  conns(): ConnRecord[] {
    return this.records.filter((r): r is ConnRecord => r.kind >= 1 && r.kind <= 3);
  }
  listens(): ListenRecord[] {
    return this.records.filter((r): r is ListenRecord => r.kind === 4);
  }
  /** The CONN_CLOSE record of the connection with these ports in this netns. */
  closeOf(netns: number, protocol: number, sport: number, dport: number): ConnRecord | undefined {
    return this.conns().find((r) => r.kind === 3 && r.netns === netns && r.protocol === protocol && r.sport === sport && r.dport === dport);
  }
  /** Waits until `pred` holds over the records so far. */
  async waitFor(pred: () => boolean, timeoutMs = 10000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > until) throw new Error('timed out waiting for capture records');
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  async end(): Promise<void> {
    await this.cap.close();
    await this.loop;
  }
}

export interface TransferResult {
  port: number;
  server: Moved[];
  client: Moved[];
}

/** A free port is any port: the namespaces are fresh. */
export function randomPort(): number {
  return 20000 + Math.floor(Math.random() * 40000);
}

/** Starts the server in pair.b and waits until it listens. */
export async function startServer(pair: NetnsPair, proto: 'tcp' | 'udp', family: 4 | 6, port: number, args: string[]): Promise<Spawned> {
  const bind = family === 6 ? pair.b.addr6 : pair.b.addr4;
  const srv = nsSpawn(pair.b.name, 'python3', [TRAFFIC_PY, `${proto}-server`, '--family', String(family), '--bind', bind, '--port', String(port), ...args]);
  await Promise.race([srv.waitLine('READY'), srv.done]);
  return srv;
}

export function startClient(pair: NetnsPair, proto: 'tcp' | 'udp', family: 4 | 6, port: number, args: string[]): Spawned {
  const host = family === 6 ? pair.b.addr6 : pair.b.addr4;
  return nsSpawn(pair.a.name, 'python3', [TRAFFIC_PY, `${proto}-client`, '--family', String(family), '--host', host, '--port', String(port), ...args]);
}

export function movedOf(out: string): Moved[] {
  const lines = out.trim().split('\n');
  return (JSON.parse(lines[lines.length - 1]) as { conns: Moved[] }).conns;
}

/** Server in pair.b, client in pair.a; returns what each socket moved (reported by the generator's own syscalls). */
export async function transfer(pair: NetnsPair, proto: 'tcp' | 'udp', family: 4 | 6, serverArgs: string[], clientArgs: string[]): Promise<TransferResult> {
  const port = randomPort();
  const srv = await startServer(pair, proto, family, port, serverArgs);
  const cli = startClient(pair, proto, family, port, clientArgs);
  const [so, co] = await Promise.all([srv.done, cli.done]);
  return { port, server: movedOf(so), client: movedOf(co) };
}

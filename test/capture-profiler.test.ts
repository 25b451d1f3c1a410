// Scenario: the capture loads while a CPU profiler samples the process (node --cpu-prof, the inspector). The
// profiler's SIGPROF lands during the BPF verifier, which then gives up with EAGAIN ("failed to load BPF programs:
// Resource temporarily unavailable" under `node --cpu-prof`, bench/RESULTS.md); libbpf's own 5 retries were not
// enough at a sampling interval below the verifier's run time.
import { Session } from 'inspector';
import { openCapture } from '../producer/capture';

function post(s: Session, method: string, params?: object): Promise<unknown> {
  return new Promise((resolve, reject) => s.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));
}

test('the BPF programs load while the inspector samples every 50 µs (SIGPROF during the verifier)', async () => {
  const s = new Session();
  s.connect();
  try {
    await post(s, 'Profiler.enable');
    await post(s, 'Profiler.setSamplingInterval', { interval: 50 });
    await post(s, 'Profiler.start');
    // three opens in a row: the failure was intermittent (it depends on where the signals land)
    for (let i = 0; i < 3; i++) {
      const cap = await openCapture({ ifaceIntervalMs: 0 });
      await cap.close();
    }
  } finally {
    await post(s, 'Profiler.stop').catch(() => undefined);
    s.disconnect();
  }
}, 120_000);

// runtimePlan: which node flags and environment the producer adds to its own start (the re-execution itself is
// tested end to end in test/producer-runtime.test.ts).
import { runtimePlan } from './runtime';

test('a boolean V8 flag is added bare, and not when the user gave it or its --no- form (either spelling)', () => {
  expect(runtimePlan([], {})?.execArgv).toEqual(['--max-semi-space-size=2', '--max-old-space-size=256', '--single-threaded-gc']);
  for (const given of ['--no-single-threaded-gc', '--no_single_threaded_gc', '--single-threaded-gc', '--single_threaded_gc']) {
    expect(runtimePlan([given], {})?.execArgv).toEqual(['--max-semi-space-size=2', '--max-old-space-size=256']);
  }
});

test('nothing when tuning is off or already applied; each MALLOC_* variable kept as given', () => {
  expect(runtimePlan([], { NETTALLY_NODE_TUNING: '0' })).toBeNull();
  expect(runtimePlan([], { NETTALLY_NODE_TUNED: '1' })).toBeNull();
  expect(runtimePlan([], { MALLOC_ARENA_MAX: '8', MALLOC_MMAP_THRESHOLD_: '0' })?.env).toEqual({ MALLOC_TRIM_THRESHOLD_: '262144' });
  expect(runtimePlan([], {})?.env).toEqual({ MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_TRIM_THRESHOLD_: '262144' });
});

// The last lines of a child's output that `up` quotes when the child fails: a fixed number kept, oldest dropped first.
import { RecentLines } from './up-children';

test('keeps the newest lines up to its capacity, in order, and hands out the last n', () => {
  const r = new RecentLines(20);
  expect(r.last(8)).toEqual([]);
  expect(r.size).toBe(0);
  for (let i = 1; i <= 5; i++) r.push(`line ${i}`);
  expect(r.last(8)).toEqual(['line 1', 'line 2', 'line 3', 'line 4', 'line 5']);
  expect(r.last(2)).toEqual(['line 4', 'line 5']);
  for (let i = 6; i <= 47; i++) r.push(`line ${i}`);
  expect(r.size).toBe(20);
  expect(r.last(8)).toEqual(Array.from({ length: 8 }, (_, k) => `line ${40 + k}`));
  expect(r.last(100)).toEqual(Array.from({ length: 20 }, (_, k) => `line ${28 + k}`));
  expect(r.last(0)).toEqual([]);
});

// When window cells are written: a final window once, open windows only as previews, and a cell that was not
// previewed keeps its "changed" mark (in the snapshot too) until a preview or its final write carries it.
import { WindowSet, type Cell, type OutPoint } from './windows';

function round(ws: WindowSet, watermarkMs: number, preview: boolean): OutPoint[] {
  const out: OutPoint[] = [];
  const finals: number[] = [];
  const written: Cell[] = [];
  ws.pending(watermarkMs, '0', out, finals, preview, written);
  ws.markWritten(finals, written);
  return out;
}

const cell = (p: OutPoint): string => `${p.time_ms}:${p.tags.k}:${String(p.fields.final)}:${String(p.fields.n)}`;

test('without previews only final windows are written, each once; unpreviewed changes wait for the next preview', () => {
  const ws = new WindowSet('m_1m', 60_000, ['k'], ['n']);
  ws.add(0, ['a'], 'a', [1]);
  ws.add(60_000, ['a'], 'a', [2]);
  ws.add(60_000, ['b'], 'b', [3]);
  expect(round(ws, 0, false)).toEqual([]);
  // window 0 becomes final: written once, final=true, and dropped
  expect(round(ws, 60_000, false).map(cell)).toEqual(['0:a:true:1']);
  expect(round(ws, 60_000, false)).toEqual([]);
  // a preview carries every cell changed since it was last written, then nothing until one changes again
  expect(round(ws, 60_000, true).map(cell)).toEqual(['60000:a:false:2', '60000:b:false:3']);
  expect(round(ws, 60_000, true)).toEqual([]);
  ws.add(60_000, ['b'], 'b', [1]);
  expect(round(ws, 60_000, true).map(cell)).toEqual(['60000:b:false:4']);
  expect(round(ws, 120_000, false).map(cell)).toEqual(['60000:a:true:2', '60000:b:true:4']);
});

test('the changed mark of a cell not yet previewed survives a snapshot and restore', () => {
  const ws = new WindowSet('m_1m', 60_000, ['k'], ['n']);
  ws.add(0, ['a'], 'a', [1]);
  ws.add(0, ['b'], 'b', [1]);
  expect(round(ws, -1, true).length).toBe(2);
  ws.add(0, ['b'], 'b', [5]);
  const restored = new WindowSet('m_1m', 60_000, ['k'], ['n']);
  restored.load(JSON.parse(JSON.stringify(ws.toJSONLazy().map(([s, cells]) => [s, [...cells]]))));
  expect(round(restored, -1, true).map(cell)).toEqual(['0:b:false:6']);
});

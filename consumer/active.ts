// Active connections per rollup group: how many connections are open at each window's end (`active_connections`)
// and the most open at once within the window (`peak_connections`), exact in event time for connections the
// consumer knows.
//
// Each traffic cell keeps two internal values beside its fields: the net change of open connections its window saw
// for the group (+1 when a connection is first seen, −1 when it ends; in the same windows as connections_opened and
// connections_closed) and the largest prefix of those changes in arrival order (the peak above the count at the
// window's start). The count at a window's end is then the count at the end of the last final window (`base`) plus
// the changes of every window since: computed before each write, for every open window, and a group with open
// connections gets a point in every window (also when it moved no bytes), so a query for any window sees them.
import type { Cell, WindowSet } from './windows';

/** Positions in a traffic cell's values (consumer/windows.ts TRAFFIC_FIELDS, then TRAFFIC_INTERNAL). */
const ACTIVE = 5;
const PEAK = 6;
const CHANGE = 7;
const RISE = 8;

/** Snapshot form: [end of the last final window or null, [group tags, open connections][]]. */
export type ActiveJSON = [number | null, [string[], number][]];

export class ActiveCounts {
  /** Group key → open connections at the end of the last final window (only groups with some). */
  private base = new Map<string, { tags: string[]; n: number }>();
  /** Start of the first window not yet final and written (null until one was). */
  private from: number | null = null;

  constructor(private readonly set: WindowSet) {}

  /** A connection starts (+1) or stops (−1) being open in the window of `timeMs`, in the group `tags`/`key`. */
  change(timeMs: number, tags: string[], key: string, d: 1 | -1): void {
    const c = this.set.cell(timeMs, tags, key);
    c.v[CHANGE] += d;
    if (c.v[CHANGE] > c.v[RISE]) c.v[RISE] = c.v[CHANGE];
    c.dirty = true;
    c.unsaved = true;
  }

  /**
   * Sets active/peak on every open window's cells up to the window of `maxEventMs`, creating the cells of groups that
   * have open connections but no records in a window; a cell whose numbers changed becomes dirty (written next).
   */
  refresh(maxEventMs: number): void {
    const set = this.set;
    const starts = [...set.windows.keys()].sort((a, b) => a - b);
    let s = this.from ?? starts[0];
    if (s === undefined || !Number.isFinite(s)) return;
    const last = Math.max(starts[starts.length - 1] ?? s, Number.isFinite(maxEventMs) ? set.start(maxEventMs) : s);
    const open = new Map<string, { tags: string[]; n: number }>();
    for (const [k, g] of this.base) open.set(k, { tags: g.tags, n: g.n });
    for (;;) {
      const w = set.windows.get(s);
      // groups with open connections get a cell in every window
      for (const [k, g] of open) if (!w?.has(k)) set.cell(s, g.tags, k);
      for (const [k, c] of set.windows.get(s) ?? new Map<string, Cell>()) {
        const before = open.get(k)?.n ?? 0;
        const end = before + c.v[CHANGE];
        const peak = before + c.v[RISE];
        if (c.v[ACTIVE] !== end || c.v[PEAK] !== peak) {
          c.v[ACTIVE] = end;
          c.v[PEAK] = peak;
          c.dirty = true;
          c.unsaved = true;
        }
        if (end > 0) open.set(k, { tags: c.tags, n: end });
        else open.delete(k);
      }
      // with nothing open, skip to the next window that has records (a quiet stretch costs no loop)
      const after = s;
      const next = open.size > 0 ? s + set.sizeMs : starts.find((x) => x > after);
      if (next === undefined || next > last) break;
      s = next;
    }
  }

  /** After the final windows `finals` were written (before WindowSet.markWritten drops them): carry their end counts. */
  finalized(finals: readonly number[]): void {
    if (finals.length === 0) return;
    const lastFinal = Math.max(...finals);
    const w = this.set.windows.get(lastFinal);
    this.base = new Map();
    // refresh() gave every group open at this window's end a cell in it
    if (w) for (const [k, c] of w) if (c.v[ACTIVE] > 0) this.base.set(k, { tags: c.tags, n: c.v[ACTIVE] });
    this.from = lastFinal + this.set.sizeMs;
  }

  toJSON(): ActiveJSON {
    return [this.from, [...this.base.values()].map((g) => [g.tags, g.n])];
  }

  load(data: ActiveJSON | undefined): void {
    this.from = data?.[0] ?? null;
    this.base = new Map((data?.[1] ?? []).map(([tags, n]) => [tags.join('\u0000'), { tags, n }]));
  }
}

// Per-partition exact aggregation: dedupe by (host, epoch, seq), cumulative→delta per connection/interface,
// event-time tumbling windows (1 m + 1 h) with a watermark, and a JSON snapshot of all of it for crash recovery.
// Deterministic: the same records in the same order give the same windows, whatever the wall clock says.

import { IFACE_FIELDS, IFACE_TAGS, TRAFFIC_FIELDS, TRAFFIC_INTERNAL, TRAFFIC_TAGS, WindowSet, addTraffic, lazyMap, sizeName, type Cell, type OutPoint } from './windows';
import type { AggInput, ConnInput, IfaceInput } from './records';
import { ActiveCounts, type ActiveJSON } from './active';
import { DIRECTIONS, PROTOCOLS, PartsMap, TagSets, TrackedRows, dropGroup, hostBootOf, tagValue, toArrays, workloadTag, type ConnState, type EpochMark, type HostState, type IfaceState } from './agg-state';
import { DEFAULT_AGG_OPTIONS, type AggCounters, type AggNotice, type AggregatorOptions, type Outcome } from './agg-options';

/**
 * Version 2 adds start_ns per connection, dormant connections and per-host progress; version 3 the connection's
 * remote_class and open-connection group, and the open-connection counts per group. Versions 1 and 2 still restore.
 */
const SNAPSHOT_VERSION = 3;


/**
 * Exact aggregation state of one Kafka partition.
 *
 * Time rule (deterministic: it uses only data in the records, never the wall clock, so a replay of the same records
 * in the same order makes the same decisions):
 * - A record's effective time is its time_ns, except when that is more than maxAheadMs ahead of its Kafka timestamp
 *   (ref_ms): then it is the Kafka timestamp (counted as `clamped`, logged). One record can thus move the partition's
 *   watermark at most maxAheadMs past the time Kafka gives it.
 * - Window finality follows the partition watermark (newest effective time − allowed lateness); a record whose
 *   window is final goes to the oldest open window (too late; bytes never lost).
 * - State lifetime follows its own host's progress, per boot (the newest effective time of that boot's records): a
 *   host far behind or ahead of the others never expires their state, nor they its, nor a reboot with a clock days
 *   behind its own older state. And expiry never forgets a baseline: a silent connection only becomes dormant
 *   (cumulatives kept, tags dropped); baselines go when the connection closed, when its boot was retired (another
 *   boot of the host sends and this one has been silent for idleTimeoutMs), or when the host has been silent for
 *   forgetHostMs of partition time.
 */
export class PartitionAggregator {
  readonly opts: AggregatorOptions;
  private readonly partitionTag: string;
  private readonly traffic1m: WindowSet;
  private readonly traffic1h: WindowSet;
  private readonly iface1m: WindowSet;
  private readonly iface1h: WindowSet;
  private readonly active1m: ActiveCounts;
  private readonly active1h: ActiveCounts;
  /** `host \0 boot \0 cookie` → connection (found by parts per record: PartsMap). */
  private conns = new PartsMap<ConnState>(3, undefined, true);
  /** `host \0 boot \0 netns \0 ifindex` → interface (a PartsMap for its host index: purges). */
  private ifaces = new PartsMap<IfaceState>(3);
  /** `host \0 epoch` → dedupe mark. */
  private marks = new PartsMap<EpochMark>(2);
  private hosts = new Map<string, HostState>();
  /** host \0 netns \0 protocol → port → event ms of the listen record. */
  private listeners = new PartsMap<Map<number, number>>(3);
  /** The connections' tags and cell keys, one shared pair per distinct tag set (TagSets). */
  private tagSets = new TagSets();
  private maxEventMs = Number.NEGATIVE_INFINITY;
  private notices = new Map<AggNotice['kind'], AggNotice>();
  counters: AggCounters = { records: 0, duplicates: 0, too_late: 0, ignored: 0, clamped: 0, counter_restarts: 0, stale: 0 };

  constructor(opts: Partial<AggregatorOptions> & { partition: number }) {
    this.opts = { ...DEFAULT_AGG_OPTIONS, ...opts };
    if (this.opts.rollupMs % this.opts.windowMs !== 0) throw new Error('rollup must be a multiple of the window');
    this.partitionTag = String(this.opts.partition);
    const n = sizeName;
    this.traffic1m = new WindowSet(`nettally_traffic_${n(this.opts.windowMs)}`, this.opts.windowMs, TRAFFIC_TAGS, TRAFFIC_FIELDS, TRAFFIC_INTERNAL);
    this.traffic1h = new WindowSet(`nettally_traffic_${n(this.opts.rollupMs)}`, this.opts.rollupMs, TRAFFIC_TAGS, TRAFFIC_FIELDS, TRAFFIC_INTERNAL);
    this.active1m = new ActiveCounts(this.traffic1m);
    this.active1h = new ActiveCounts(this.traffic1h);
    this.iface1m = new WindowSet(`nettally_iface_${n(this.opts.windowMs)}`, this.opts.windowMs, IFACE_TAGS, IFACE_FIELDS);
    this.iface1h = new WindowSet(`nettally_iface_${n(this.opts.rollupMs)}`, this.opts.rollupMs, IFACE_TAGS, IFACE_FIELDS);
  }

  /** Event-time watermark: windows ending at or before it are final. */
  get watermarkMs(): number {
    return this.maxEventMs - this.opts.allowedLatenessMs;
  }

  get maxEventTimeMs(): number {
    return this.maxEventMs;
  }

  /** Live state sizes, for the status line and memory bounds. */
  get sizes(): { connections: number; dormant: number; interfaces: number; epochs: number; hosts: number; windows: number } {
    let dormant = 0;
    for (const c of this.conns.values()) if (c.tags === null) dormant++;
    return { connections: this.conns.size - dormant, dormant, interfaces: this.ifaces.size, epochs: this.marks.size, hosts: this.hosts.size, windows: this.traffic1m.windows.size + this.iface1m.windows.size };
  }

  /** Notices since the last call (at most one per kind, with a count), for the consumer to log. */
  takeNotices(): AggNotice[] {
    const out = [...this.notices.values()];
    this.notices.clear();
    return out;
  }

  private notice(n: Omit<AggNotice, 'n'>): void {
    const cur = this.notices.get(n.kind);
    if (cur) cur.n++;
    else this.notices.set(n.kind, { ...n, n: 1 });
  }

  /** Silent past the host's own progress: a connection becomes dormant, a dedupe mark is dropped. */
  private idle(lastMs: number, progressMs: number): boolean {
    return lastMs < progressMs - this.opts.idleTimeoutMs;
  }

  /** The clock state of a boot is judged by: that boot's newest effective time (-∞, i.e. nothing idle, if unknown). */
  private progress(h: HostState, boot: string): number {
    return h.boots.get(boot) ?? Number.NEGATIVE_INFINITY;
  }

  /** A closed connection is kept for the close grace (stragglers), then forgotten. */
  private closedGone(c: ConnState, progressMs: number): boolean {
    return c.closed_ms >= 0 && c.closed_ms < progressMs - this.opts.closeGraceMs;
  }

  private bootRetired(h: HostState, boot: string): boolean {
    if (boot === h.boot) return false; // (the common case: no map lookups)
    const last = h.boots.get(boot);
    return last !== undefined && this.idle(last, this.progress(h, h.boot));
  }

  /** Drops the connection and interface state of the given boots of a host (keys `host \0 boot \0 …`). */
  private purgeBoots(host: string, boots: ReadonlySet<string>, h: HostState): void {
    // connections of a retired boot still counted open (a boot's first record ends the open ones of the boots
    // before it; these were first seen later) stop at the time the boot was retired, as the rule reads it
    for (const b of boots) {
      this.endActive(host, this.attribution((h.boots.get(b) ?? this.maxEventMs) + this.opts.idleTimeoutMs).at, (boot) => boot === b);
    }
    // through the host index (a key's host and boot are its index path, as hostBootOf splits it)
    for (const m of [this.conns, this.ifaces]) m.deleteGroups(host, (b) => boots.has(b));
    for (const b of boots) h.boots.delete(b);
  }

  private hostForgotten(h: HostState): boolean {
    return h.seen_ms < this.maxEventMs - this.opts.forgetHostMs;
  }

  /** Drops everything known about a host (all state keys start with `host_id \0`). */
  private purgeHost(host: string): void {
    const h = this.hosts.get(host);
    // its connections stop counting open when the host is forgotten (partition time, as the rule reads it)
    this.endActive(host, this.attribution((h?.seen_ms ?? this.maxEventMs) + this.opts.forgetHostMs).at, () => true);
    const maps = [this.conns, this.ifaces, this.marks, this.listeners] as PartsMap<unknown>[];
    for (const m of maps) m.deleteGroups(host);
    // a host_id containing \0 (forged) is filed under a shorter first part in the index: only a scan finds its keys
    const prefix = `${host}\u0000`;
    if (host.includes('\u0000')) for (const m of maps) for (const k of [...m.keys()]) if (k.startsWith(prefix)) m.delete(k);
    this.hosts.delete(host);
  }

  /** The record's host, after forgetting it if it was silent too long (done here too, so sweeps never change results). */
  private hostOf(r: AggInput): HostState {
    let h = this.hosts.get(r.host_id);
    if (h && this.hostForgotten(h)) {
      this.purgeHost(r.host_id);
      h = undefined;
    }
    if (!h) {
      h = { boot: r.boot_id, seen_ms: this.maxEventMs, boots: new Map() };
      this.hosts.set(r.host_id, h);
    }
    // A retired boot sending again (a forged or very late record): its state is gone, as a sweep would have made it.
    if (this.bootRetired(h, r.boot_id)) this.purgeBoots(r.host_id, new Set([r.boot_id]), h);
    return h;
  }

  /** Dedupe by (host_id, epoch, seq); true when the record is new. */
  private accept(r: AggInput, t: number, h: HostState): boolean {
    let m = this.marks.find2(r.host_id, r.epoch) ?? this.marks.get(`${r.host_id}\u0000${r.epoch}`);
    if (m && this.idle(m.last_ms, this.progress(h, m.boot === '' ? r.boot_id : m.boot))) m = undefined;
    if (!m) {
      this.marks.set(`${r.host_id}\u0000${r.epoch}`, { hwm: r.seq, gaps: [], last_ms: t, boot: r.boot_id });
      return true;
    }
    if (t > m.last_ms) m.last_ms = t;
    m.boot = r.boot_id;
    const W = this.opts.dedupeWindow;
    if (r.seq > m.hwm) {
      for (let s = Math.max(m.hwm + 1, r.seq - W + 1); s < r.seq; s++) m.gaps.push(s);
      m.hwm = r.seq;
      if (m.gaps.length > 0 && m.gaps[0] <= m.hwm - W) m.gaps = m.gaps.filter((s) => s > m!.hwm - W);
      return true;
    }
    const i = m.gaps.indexOf(r.seq);
    if (i < 0) return false;
    m.gaps.splice(i, 1);
    return true;
  }

  /** Window-start time a record's deltas go to: its own, or (too late) the oldest still-open window. */
  private attribution(timeMs: number): { at: number; late: boolean } {
    const late = this.tooLate(timeMs);
    return { at: late ? this.watermarkMs : timeMs, late };
  }

  /** True when the window of `timeMs` is final already (a record of that time goes to the oldest open window). */
  private tooLate(timeMs: number): boolean {
    return Math.floor(timeMs / this.opts.windowMs) * this.opts.windowMs + this.opts.windowMs <= this.watermarkMs;
  }

  /** Applies one decoded record. */
  add(r: AggInput): Outcome {
    // Effective event time: time_ms, or the Kafka timestamp when time_ms is too far ahead of it (inline: no pairs)
    const ref = r.ref_ms;
    const clamped = ref !== undefined && ref >= 0 && r.time_ms > ref + this.opts.maxAheadMs;
    const t = clamped ? ref : r.time_ms;
    const h = this.hostOf(r);
    if (!this.accept(r, t, h)) {
      this.counters.duplicates++;
      return 'duplicate';
    }
    if (clamped) {
      this.counters.clamped++;
      this.notice({ kind: 'clamped', host_id: r.host_id, time_ms: r.time_ms, ref_ms: r.ref_ms });
    }
    const late = this.tooLate(t);
    const at = late ? this.watermarkMs : t;
    if (t > this.maxEventMs) this.maxEventMs = t;
    // A boot not seen before: the host rebooted, which closed every connection of its earlier boots (without close
    // records): they stop counting as open here, deterministically at this record.
    const bootLast = h.boots.get(r.boot_id);
    if (bootLast === undefined && h.boots.size > 0) this.endActive(r.host_id, at, (boot) => boot !== r.boot_id);
    h.boot = r.boot_id;
    // this boot's progress (what progress() returns from here on)
    let bootMs = bootLast ?? Number.NEGATIVE_INFINITY;
    if (t > bootMs) {
      h.boots.set(r.boot_id, t);
      bootMs = t;
    }
    h.seen_ms = this.maxEventMs;
    this.counters.records++;
    if (late) this.counters.too_late++;
    switch (r.kind) {
      case 'conn':
        this.addConn(r, at, t, bootMs);
        break;
      case 'iface':
        this.addIface(r, at, t);
        break;
      case 'listen': {
        const key = `${r.host_id}\u0000${r.netns}\u0000${r.protocol}`;
        let ports = this.listeners.get(key);
        if (!ports) {
          ports = new Map();
          this.listeners.set(key, ports);
        }
        ports.set(r.port, Math.max(ports.get(r.port) ?? t, t));
        break;
      }
      default:
        this.counters.ignored++;
        return 'ignored';
    }
    return late ? 'too_late' : 'counted';
  }

  private servicePort(r: ConnInput): number {
    if (r.direction === 1) return r.dport;
    if (r.direction === 2) return r.sport;
    const ports = this.listeners.get(`${r.host_id}\u0000${r.netns}\u0000${r.protocol}`);
    if (ports?.has(r.sport)) return r.sport;
    if (ports?.has(r.dport)) return r.dport;
    // No listener known: the ephemeral side is (almost always) the higher port.
    return Math.min(r.sport, r.dport);
  }

  private connTags(r: ConnInput, cls: string): string[] {
    return [
      r.host_id,
      tagValue(r.hostname),
      String(r.netns),
      PROTOCOLS[r.protocol] ?? String(r.protocol),
      DIRECTIONS[r.direction] ?? String(r.direction),
      String(this.servicePort(r)),
      tagValue(r.comm),
      workloadTag(r.workload ?? ''),
      cls,
    ];
  }

  /**
   * Connection `c` starts (+1) or stops (−1) counting as open in its group (c.atags), in the window of `at`. The
   * group's key is the connection's cell key when the group is its current tags (the common case: no join).
   */
  private activeChange(at: number, c: ConnState, d: 1 | -1): void {
    const tags = c.atags!;
    const key = tags === c.tags ? c.key : tags.join('\u0000');
    this.active1m.change(at, tags, key, d);
    this.active1h.change(at, tags, key, d);
  }

  /**
   * Connections of `host` (of the boots that pass `which`) stop counting as open, in the window of `at`. Walks only
   * that host's connections (the PartsMap index), not every connection of the partition.
   */
  private endActive(host: string, at: number, which: (boot: string) => boolean): void {
    const groups = this.conns.groupsOf(host);
    if (groups === undefined) return;
    for (const [boot, conns] of groups) {
      if (!which(boot)) continue;
      for (const c of conns.values()) {
        if (c.atags === null) continue;
        this.activeChange(at, c, -1);
        c.atags = null;
        c.unsaved = true;
      }
    }
  }

  /** `progress`: the clock of the record's boot (progress()), after this record. */
  private addConn(r: ConnInput, at: number, t: number, progress: number): void {
    const start = r.start_ns ?? null;
    let st = this.conns.find3(r.host_id, r.boot_id, r.cookie) ?? this.conns.get(`${r.host_id}\u0000${r.boot_id}\u0000${r.cookie}`);
    if (st && this.closedGone(st, progress)) st = undefined;
    let opened = 0;
    const fresh = !st;
    if (!st) {
      // classified once, here: it stays the connection's class (a changed map applies to new connections)
      const cls = this.opts.remoteClasses.classify(r.daddr ?? '');
      st = { tx: 0, rx: 0, retr: 0, start, last_ms: t, closed_ms: -1, tags: null, key: '', cls, atags: null, cell1m: null, cell1h: null, unsaved: true };
      this.conns.set(`${r.host_id}\u0000${r.boot_id}\u0000${r.cookie}`, st);
      // A connection the producer found already open at its start was opened before anyone watched.
      if (r.event !== 'sample' || r.flush_reason !== 'snapshot') opened = 1;
    } else if (this.idle(st.last_ms, progress)) {
      // Dormant (whether or not a sweep already dropped its tags): it comes back with tags as of now, so the
      // result never depends on when sweeps ran.
      dropGroup(st);
    }
    st.unsaved = true; // any of the below may change it: the next state save writes its row
    if (st.cls === null) st.cls = this.opts.remoteClasses.classify(r.daddr ?? '');
    if (st.tags === null) {
      const s = this.tagSets.intern(this.connTags(r, st.cls));
      st.tags = s.tags;
      st.key = s.key;
    }
    if (fresh) {
      // first seen (found open by a producer snapshot included): open from here, in the group it has now
      st.atags = st.tags;
      this.activeChange(at, st, 1);
    }
    let stale = false;
    if (start !== null && st.start !== start) {
      if (st.start === null && r.tx_bytes >= st.tx && r.rx_bytes >= st.rx) {
        st.start = start; // restored from a version-1 snapshot: the first record that does not go backwards names the counting
      } else if (st.start === null || start > st.start) {
        // The kernel started counting this connection again (fresh maps: pins removed, --pin-dir none, a new `up`):
        // all its payload bytes are new. Retransmits are not: the kernel copies TCP's own per-socket total_retrans,
        // which a new counting does not reset.
        this.counters.counter_restarts++;
        this.notice({ kind: 'counter_restart', host_id: r.host_id, time_ms: r.time_ms, cookie: String(r.cookie) });
        st.tx = 0;
        st.rx = 0;
        st.start = start;
      } else stale = true; // a reading of an earlier counting, delivered after a newer one: already superseded
    }
    if (!stale && (r.tx_bytes < st.tx || r.rx_bytes < st.rx)) stale = true;
    if (stale) this.counters.stale++;
    // Within one counting the kernel's counters only grow: a lower value is an older reading delivered late
    // (ring buffer drained after a sweep read the map), so it adds nothing.
    const ok = st.start === start || start === null;
    const dtx = ok && r.tx_bytes > st.tx ? r.tx_bytes - st.tx : 0;
    const drx = ok && r.rx_bytes > st.rx ? r.rx_bytes - st.rx : 0;
    const dre = r.retransmits > st.retr ? r.retransmits - st.retr : 0;
    st.tx += dtx;
    st.rx += drx;
    st.retr += dre;
    if (t > st.last_ms) st.last_ms = t;
    let closed = 0;
    if (r.event === 'close' && st.closed_ms < 0) {
      st.closed_ms = t;
      closed = 1;
      if (st.atags !== null) this.activeChange(at, st, -1);
      st.atags = null;
    }
    if (dtx === 0 && drx === 0 && dre === 0 && opened === 0 && closed === 0) return;
    st.cell1m = this.traffic1m.cachedCell(at, st.tags, st.key, st.cell1m);
    st.cell1h = this.traffic1h.cachedCell(at, st.tags, st.key, st.cell1h);
    addTraffic(st.cell1m, dtx, drx, opened, closed, dre);
    addTraffic(st.cell1h, dtx, drx, opened, closed, dre);
  }

  private addIface(r: IfaceInput, at: number, t: number): void {
    const key = `${r.host_id}\u0000${r.boot_id}\u0000${r.netns}\u0000${r.ifindex}`;
    const cur = [r.rx_bytes, r.rx_packets, r.tx_bytes, r.tx_packets];
    // Interface baselines do not expire on silence (an unchanged interface is not re-emitted): only with their boot.
    let st = this.ifaces.get(key);
    const d = [0, 0, 0, 0];
    if (!st) {
      st = { epoch: r.epoch, v: [0, 0, 0, 0], last_ms: t };
      this.ifaces.set(key, st);
    }
    // One periodic reader produces these, in order: a lower value (any epoch) is a counter that restarted from zero
    // (fresh maps, a netns inode reused).
    const reset = cur.some((x, i) => x < st!.v[i]);
    if (reset) {
      this.counters.counter_restarts++;
      this.notice({ kind: 'counter_restart', host_id: r.host_id, time_ms: r.time_ms });
    }
    for (let i = 0; i < 4; i++) {
      if (reset) {
        d[i] = cur[i];
        st.v[i] = cur[i];
      } else if (cur[i] > st.v[i]) {
        d[i] = cur[i] - st.v[i];
        st.v[i] = cur[i];
      }
    }
    if (r.epoch > st.epoch) st.epoch = r.epoch;
    if (t > st.last_ms) st.last_ms = t;
    if (d.every((x) => x === 0)) return;
    const tags = [r.host_id, tagValue(r.hostname), String(r.netns), String(r.ifindex), workloadTag(r.workload ?? '')];
    const tkey = tags.join('\u0000');
    this.iface1m.add(at, tags, tkey, d);
    this.iface1h.add(at, tags, tkey, d);
  }

  /**
   * Points to write at a flush, and a `commit` to call once they are durably written (drops final windows, marks
   * previewed cells clean, drops expired state). Nothing changes until then. Final windows are always included (they
   * must be written before the snapshot that no longer holds them); changed cells of open windows by `mode`:
   * - `finals`: none (the snapshot holds them, so skipping a preview loses nothing);
   * - `previews`: the changed 1 m cells; the changed cells of a rollup (1 h) only in a round where one of its 1 m
   *   windows became final — a rollup point is then rewritten at most once per window, not once per preview
   *   interval (issue 12: at 5 s previews that was ~720 rewrites of each busy hour); fresh numbers are in the 1 m
   *   points, and the hour is at most one window (+ allowed lateness) behind them;
   * - `all`: every changed cell (a graceful stop; unit tests).
   */
  pending(mode: 'finals' | 'previews' | 'all' = 'all'): { points: OutPoint[]; finals: number; commit: () => void } {
    const points: OutPoint[] = [];
    const wm = this.watermarkMs;
    // open-connection counts of every open window (derived values only: recomputing them is idempotent)
    this.active1m.refresh(this.maxEventMs);
    this.active1h.refresh(this.maxEventMs);
    // a rollup follows the window set before it in this list (its inputs), whose finals are known by then
    const sets = [this.traffic1m, this.traffic1h, this.iface1m, this.iface1h];
    const written: Cell[][] = sets.map(() => []);
    const finals: number[][] = [];
    sets.forEach((s, i) => {
      const f: number[] = [];
      const rollup = i % 2 === 1;
      const preview = mode === 'all' || (mode === 'previews' && (!rollup || finals[i - 1].length > 0));
      s.pending(wm, this.partitionTag, points, f, preview, written[i]);
      finals.push(f);
    });
    const previews = written.reduce((n, w) => n + w.length, 0);
    return {
      points,
      finals: points.length - previews,
      commit: () => {
        this.active1m.finalized(finals[0]);
        this.active1h.finalized(finals[1]);
        sets.forEach((s, i) => s.markWritten(finals[i], written[i]));
        this.sweep();
      },
    };
  }

  /** Frees state that is logically gone already (add() treats it the same way), so sweeping never changes results. */
  private sweep(): void {
    for (const [host, h] of this.hosts) {
      if (this.hostForgotten(h)) {
        this.purgeHost(host);
        continue;
      }
      const retired = new Set([...h.boots.keys()].filter((b) => this.bootRetired(h, b)));
      if (retired.size > 0) this.purgeBoots(host, retired, h);
    }
    // by host and boot (the index): each one's clock is looked up once, not once per connection
    const gone: string[] = [];
    this.conns.forEachGroup((host, boot, conns) => {
      const h = this.hosts.get(host);
      if (!h) return;
      const progress = this.progress(h, boot);
      for (const [cookie, c] of conns) {
        if (this.closedGone(c, progress)) gone.push(`${host}\u0000${boot}\u0000${cookie}`);
        else if (c.tags !== null && this.idle(c.last_ms, progress)) dropGroup(c);
      }
    });
    for (const k of gone) this.conns.delete(k);
    this.tagSets.retain(this.conns.values());
    for (const [k, m] of this.marks) {
      const h = this.hosts.get(k.slice(0, k.indexOf('\u0000')));
      // a mark of unknown boot (version-1 snapshot) waits for its epoch's next record to learn it
      if (h && m.boot !== '' && this.idle(m.last_ms, this.progress(h, m.boot))) this.marks.delete(k);
    }
  }

  /** Everything needed to continue exactly where this state stands (JSON-safe). */
  snapshot(): Record<string, unknown> {
    return toArrays(this.snapshotLazy()) as Record<string, unknown>;
  }

  /**
   * snapshot() with the per-connection/-window collections as one-shot iterables instead of arrays, so a sliced
   * encoder (consumer/state-store.ts encodeSnapshot) serializes 100k connections without first copying them all in
   * one blocking step. Must be consumed before the next add()/pending commit (the consumer holds the partition lock).
   */
  snapshotLazy(): Record<string, unknown> {
    return {
      v: SNAPSHOT_VERSION,
      partition: this.opts.partition,
      window_ms: this.opts.windowMs,
      rollup_ms: this.opts.rollupMs,
      max_event_ms: Number.isFinite(this.maxEventMs) ? this.maxEventMs : null,
      counters: this.counters,
      windows: [this.traffic1m.toJSONLazy(), this.traffic1h.toJSONLazy(), this.iface1m.toJSONLazy(), this.iface1h.toJSONLazy()],
      // atags: 1 = the same as tags (the common case, stored once)
      conns: new TrackedRows(this.conns, (k, c) => [k, c.tx, c.rx, c.retr, c.last_ms, c.closed_ms, c.tags, c.start, c.cls, c.atags !== null && c.atags === c.tags ? 1 : c.atags]),
      active: [this.active1m.toJSON(), this.active1h.toJSON()],
      ifaces: lazyMap(this.ifaces, ([k, s]) => [k, s.epoch, s.v, s.last_ms]),
      marks: lazyMap(this.marks, ([k, m]) => [k, m.hwm, m.gaps, m.last_ms, m.boot]),
      listeners: [...this.listeners].map(([k, p]) => [k, [...p]]),
      hosts: lazyMap(this.hosts, ([k, h]) => [k, h.boot, h.seen_ms, [...h.boots]]),
    };
  }

  /** Restores a snapshot() (version 1, 2 or 3) taken with the same window sizes; throws if it does not fit. */
  restore(snap: Record<string, unknown>): void {
    if (snap.v !== 1 && snap.v !== 2 && snap.v !== SNAPSHOT_VERSION) throw new Error(`unsupported snapshot version ${String(snap.v)}`);
    if (snap.window_ms !== this.opts.windowMs || snap.rollup_ms !== this.opts.rollupMs) {
      throw new Error(`snapshot was taken with window ${String(snap.window_ms)}ms/${String(snap.rollup_ms)}ms, this consumer uses ${this.opts.windowMs}ms/${this.opts.rollupMs}ms`);
    }
    this.maxEventMs = snap.max_event_ms === null ? Number.NEGATIVE_INFINITY : (snap.max_event_ms as number);
    this.counters = { records: 0, duplicates: 0, too_late: 0, ignored: 0, clamped: 0, counter_restarts: 0, stale: 0, ...(snap.counters as Partial<AggCounters>) };
    const w = snap.windows as unknown[];
    [this.traffic1m, this.traffic1h, this.iface1m, this.iface1h].forEach((s, i) => s.load(w[i]));
    const tagSets = (this.tagSets = new TagSets());
    type ConnRow = [string, number, number, number, number, number, string[] | null, (number | null)?, (string | null)?, (string[] | 1 | null)?];
    this.conns = new PartsMap(
      3,
      (snap.conns as ConnRow[]).map(([k, tx, rx, retr, last_ms, closed_ms, tagsIn, start, cls, atags]) => {
        // tags of an older snapshot lack workload/remote_class: taken anew at the connection's next record
        const s = tagsIn !== null && tagsIn.length === TRAFFIC_TAGS.length ? tagSets.intern(tagsIn) : null;
        const tags = s?.tags ?? null;
        const at = atags === 1 ? tags : atags ? tagSets.intern(atags).tags : null;
        const c: ConnState = { tx, rx, retr, start: start ?? null, last_ms, closed_ms, tags, key: s?.key ?? '', cls: cls ?? null, atags: at, cell1m: null, cell1h: null, unsaved: true };
        return [k, c] as const;
      }),
      true,
    );
    const active = snap.active as ActiveJSON[] | undefined;
    this.active1m.load(active?.[0]);
    this.active1h.load(active?.[1]);
    this.ifaces = new PartsMap(3, (snap.ifaces as [string, number, number[], number][]).map(([k, epoch, v, last_ms]) => [k, { epoch, v, last_ms }] as const));
    type MarkRow = [string, number, number[], number, string?];
    this.marks = new PartsMap(2, (snap.marks as MarkRow[]).map(([k, hwm, gaps, last_ms, boot]) => [k, { hwm, gaps, last_ms, boot: boot ?? '' }] as const));
    this.listeners = new PartsMap(3, (snap.listeners as [string, [number, number][]][]).map(([k, p]) => [k, new Map(p)] as const));
    if (snap.v !== 1) {
      type HostRow = [string, string, number, [string, number][]];
      this.hosts = new Map((snap.hosts as HostRow[]).map(([k, boot, seen_ms, boots]) => [k, { boot, seen_ms, boots: new Map(boots) }]));
      return;
    }
    // Version 1 kept no per-host progress: derive each boot's from its state (the newest boot is taken as the latest).
    this.hosts = new Map();
    const seen = (k: string, ms: number): void => {
      const [host, boot] = hostBootOf(k);
      let h = this.hosts.get(host);
      if (!h) {
        h = { boot, seen_ms: this.maxEventMs, boots: new Map() };
        this.hosts.set(host, h);
      }
      if (ms > this.progress(h, boot)) h.boots.set(boot, ms);
      if (ms >= this.progress(h, h.boot)) h.boot = boot;
    };
    for (const [k, c] of this.conns) seen(k, c.last_ms);
    for (const [k, s] of this.ifaces) seen(k, s.last_ms);
  }
}

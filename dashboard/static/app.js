// nettally dashboard page: plain ES module, no build step. Reads the server's JSON endpoints (dashboard/api.ts) and
// draws with uPlot (served from the package's node_modules). State lives in the URL hash so a view can be shared.
import uPlot from './vendor/uPlot.esm.js';

const $ = (id) => document.getElementById(id);
const PALETTE = ['#2563eb', '#f97316', '#16a34a', '#9333ea', '#dc2626', '#0891b2', '#ca8a04', '#db2777', '#4f46e5', '#65a30d', '#0d9488', '#7c2d12', '#475569', '#be123c', '#15803d', '#1e40af', '#a16207', '#6d28d9', '#b91c1c', '#0369a1'];
const OTHER_COLOR = '#98a2b3';
const LIVE_EVERY_MS = 5000;
const HISTORY_EVERY_MS = 60000;

const state = { range: '1h', group: 'host', metric: 'total', measurement: 'traffic' };
let chart = null;
/** Group label → its colour in the chart, so the live table uses the same colours. */
let colorOf = new Map();

// ---- formatting -------------------------------------------------------------------------------------------------
const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
function human(n, suffix = '') {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  let i = 0;
  let v = Math.abs(n);
  while (v >= 1000 && i < UNITS.length - 1) { v /= 1000; i++; }
  // Whole bytes stay whole; fractions (rates, axis ticks below 1 kB/s) keep enough digits to tell ticks apart.
  const digits = i === 0 && Number.isInteger(v) ? 0 : v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${n < 0 ? '-' : ''}${v.toFixed(digits)} ${UNITS[i]}${suffix}`;
}
/** Exact bytes with thousands separators: billing needs every byte, people need the grouping. */
const exact = (n) => Math.round(n).toLocaleString('en-US');
const hhmm = (ms) => new Date(ms).toISOString().slice(11, 16);
const dayHour = (ms) => new Date(ms).toISOString().slice(0, 16).replace('T', ' ');
function ago(ms, now = Date.now()) {
  const s = Math.round((now - ms) / 1000);
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}
function lighten(hex, amount) {
  const n = parseInt(hex.slice(1), 16);
  const mix = (c) => Math.round(c + (255 - c) * amount);
  return `rgb(${mix(n >> 16)}, ${mix((n >> 8) & 255)}, ${mix(n & 255)})`;
}
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
const GROUP_NAMES = { host: 'host', netns: 'network namespace', workload: 'workload', remote_class: 'destination class', port: 'port', process: 'process', protocol: 'protocol', direction: 'direction', iface: 'interface' };
/** Groups of each measurement (dashboard/api.ts DASHBOARD_GROUPS). Totals and the last minute are payload (what is billed). */
const GROUPS = { traffic: ['host', 'netns', 'workload', 'remote_class', 'port', 'process', 'protocol', 'direction'], iface: ['host', 'netns', 'workload', 'iface'] };
const payloadGroup = () => (GROUPS.traffic.includes(state.group) ? state.group : 'host');

// ---- data -------------------------------------------------------------------------------------------------------
/** Newest request per endpoint: an answer to an older view (the range was changed meanwhile) is dropped. */
const latest = new Map();
class Superseded extends Error {}

async function getJSON(path, params) {
  const ticket = {};
  latest.set(path, ticket);
  const res = await fetch(`${path}?${new URLSearchParams(params)}`, { cache: 'no-store' });
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (latest.get(path) !== ticket) throw new Superseded();
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}
function showError(id, err) {
  if (err instanceof Superseded) return;
  const p = $(id);
  p.hidden = !err;
  p.textContent = err ? String(err.message || err) : '';
}

// ---- chart ------------------------------------------------------------------------------------------------------
function chartSize() {
  const w = $('chart').clientWidth || 900;
  return { width: w, height: Math.max(260, Math.min(420, Math.round(w * 0.32))) };
}

function drawChart(d) {
  const stepSec = d.step_ms / 1000;
  const n = d.series.length;
  // Stacked areas: series i is drawn as the sum of groups 0..i; drawing the biggest sum first and each smaller one
  // over it (opaque fills) gives the stack without uPlot bands. The legend shows each group's own rate.
  // Average rate over each whole bucket. The newest bucket is still filling and reads low (it is shaded as not
  // final): dividing by the seconds elapsed instead would turn the consumer's first write of a minute into a spike.
  const rates = d.series.map((s) => s.values.map((v) => v / stepSec));
  const cum = [];
  rates.forEach((r, i) => cum.push(r.map((v, j) => v + (i > 0 ? cum[i - 1][j] : 0))));
  const order = [...Array(n).keys()].reverse();
  const color = (i) => (d.other_groups > 0 && i === n - 1 ? OTHER_COLOR : PALETTE[i % PALETTE.length]);
  colorOf = new Map(d.series.map((s, i) => [s.label, color(i)]));
  const data = [d.times, ...order.map((i) => cum[i])];
  const series = [
    { label: 'time (UTC)', value: (u, v) => (v == null ? '' : dayHour(v * 1000)) },
    ...order.map((i) => ({
      label: `${d.series[i].label} — ${human(d.series[i].total_bytes)}`,
      stroke: color(i),
      fill: lighten(color(i), 0.35),
      width: 1,
      points: { show: false },
      value: (u, v, si, idx) => (idx == null ? '' : human(rates[i][idx], '/s')),
    })),
  ];
  const final = d.final;
  const opts = {
    ...chartSize(),
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'),
    series,
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: { x: { time: true, range: [d.from_ms / 1000, d.to_ms / 1000] }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1000] } },
    axes: [
      {
        stroke: '#667085',
        grid: { stroke: '#eef0f3' },
        // 24-hour UTC clock; the date under the first tick and under midnight.
        values: (u, splits, ai, space, incr) =>
          splits.map((v, i) => {
            const iso = new Date(v * 1000).toISOString();
            const hm = iso.slice(11, 16);
            const day = iso.slice(5, 10);
            return incr >= 86400 ? day : i === 0 || hm === '00:00' ? `${hm}\n${day}` : hm;
          }),
      },
      { stroke: '#667085', grid: { stroke: '#eef0f3' }, size: 78, values: (u, vals) => vals.map((v) => human(v, '/s')) },
    ],
    hooks: {
      // Buckets that are not final yet (they may still grow) get a light background.
      drawClear: [
        (u) => {
          const ctx = u.ctx;
          ctx.save();
          ctx.fillStyle = 'rgba(247, 144, 9, 0.10)';
          for (let i = 0; i < final.length; i++) {
            if (final[i]) continue;
            const x0 = u.valToPos(d.times[i], 'x', true);
            const x1 = u.valToPos(d.times[i] + stepSec, 'x', true);
            ctx.fillRect(x0, u.bbox.top, Math.max(1, x1 - x0), u.bbox.height);
          }
          ctx.restore();
        },
      ],
    },
  };
  if (chart) chart.destroy();
  $('chart').textContent = '';
  chart = new uPlot(opts, data, $('chart'));
  const step = d.step_ms >= 3600000 ? `${d.step_ms / 3600000} h` : `${d.step_ms / 60000} min`;
  const others = d.other_groups > 0 ? `; the ${d.other_groups} smaller groups are summed as "other"` : '';
  const empty = n === 0 ? ' No traffic in this range.' : '';
  $('chart-note').textContent = `${dayHour(d.from_ms)} – ${dayHour(d.to_ms)} UTC, average rate per ${step} bucket from ${d.measurement}${others}. Shaded: not final yet.${empty}`;
  document.body.dataset.chartSeries = String(n);
}

/** Marks a panel as loading (dimmed) while its request runs; the others render as soon as their data is there. */
async function busy(id, work) {
  const panel = $(id).closest('.panel');
  panel.classList.add('loading');
  try {
    await work();
  } finally {
    panel.classList.remove('loading');
  }
}

async function loadChart() {
  $('chart-title').textContent = `${state.measurement === 'iface' ? 'Wire traffic (interfaces)' : 'Traffic'} by ${GROUP_NAMES[state.group]} (${state.metric === 'tx' ? 'sent' : state.metric === 'rx' ? 'received' : 'sent + received'})`;
  try {
    drawChart(await getJSON('api/series', { range: state.range, group: state.group, metric: state.metric, measurement: state.measurement }));
    showError('chart-error', null);
    if (lastLive) renderLive(lastLive);
  } catch (e) {
    if (e instanceof Superseded) return;
    // No chart of another range or grouping under this title: an old picture would read as the new one.
    if (chart) chart.destroy();
    chart = null;
    $('chart').textContent = '';
    $('chart-note').textContent = '';
    delete document.body.dataset.chartSeries;
    showError('chart-error', e);
  }
}

// ---- totals -----------------------------------------------------------------------------------------------------
function finalBadge(f) {
  return el('span', { class: `final ${f ? 'yes' : 'no'}` }, f ? 'final' : 'open');
}

async function loadTotals() {
  const params = { range: state.range, group: payloadGroup() };
  $('billing-host').href = `api/billing.csv?${new URLSearchParams({ range: state.range, per: 'host' })}`;
  $('billing-netns').href = `api/billing.csv?${new URLSearchParams({ range: state.range, per: 'netns' })}`;
  $('billing-workload').href = `api/billing.csv?${new URLSearchParams({ range: state.range, per: 'workload' })}`;
  $('billing-class').href = `api/billing.csv?${new URLSearchParams({ range: state.range, per: 'remote_class' })}`;
  try {
    const d = await getJSON('api/totals', params);
    Object.assign($('totals').dataset, { fromMs: d.from_ms, toMs: d.to_ms });
    $('totals-range').textContent = `${dayHour(d.from_ms)} – ${dayHour(d.to_ms)} UTC from ${d.measurement}`;
    const hb = $('hours').tBodies[0];
    hb.replaceChildren(
      ...d.hours.map((h) =>
        el('tr', {}, el('td', { class: 'label' }, dayHour(Date.parse(h.window))), el('td', { title: human(h.tx_bytes) }, exact(h.tx_bytes)), el('td', { title: human(h.rx_bytes) }, exact(h.rx_bytes)), el('td', { title: human(h.total_bytes) }, exact(h.total_bytes)), el('td', {}, h.groups), el('td', {}, finalBadge(h.final))),
      ),
    );
    if (d.hours.length === 0) hb.append(el('tr', {}, el('td', { class: 'label', colspan: '6' }, 'No traffic in these hours.')));
    $('totals-title').textContent = `By ${GROUP_NAMES[payloadGroup()]} and hour`;
    const t = $('totals');
    t.tHead.replaceChildren(el('tr', {}, el('th', { class: 'label' }, 'hour (UTC)'), ...d.tags.map((k) => el('th', { class: 'label' }, k)), el('th', {}, 'tx_bytes'), el('th', {}, 'rx_bytes'), el('th', {}, 'total'), el('th', {}, 'state')));
    t.tBodies[0].replaceChildren(
      ...d.rows.map((r) =>
        el(
          'tr',
          { dataset: { window: r.window } },
          el('td', { class: 'label' }, dayHour(Date.parse(r.window))),
          ...d.tags.map((k) => el('td', { class: 'label', dataset: { tag: k } }, r[k])),
          el('td', { title: human(r.tx_bytes), dataset: { field: 'tx_bytes' } }, exact(r.tx_bytes)),
          el('td', { title: human(r.rx_bytes), dataset: { field: 'rx_bytes' } }, exact(r.rx_bytes)),
          el('td', { title: human(r.tx_bytes + r.rx_bytes) }, exact(r.tx_bytes + r.rx_bytes)),
          el('td', { dataset: { field: 'final' } }, finalBadge(r.final)),
        ),
      ),
    );
    $('totals-note').textContent = d.total_rows > d.rows.length ? `Showing the newest ${d.rows.length} of ${d.total_rows} rows; the billing CSV and nettally usage have all of them.` : `${d.total_rows} rows.`;
    showError('totals-error', null);
  } catch (e) {
    showError('totals-error', e);
  }
}

// ---- live -------------------------------------------------------------------------------------------------------
let lastLive = null;

async function loadLive() {
  try {
    renderLive((lastLive = await getJSON('api/live', { group: payloadGroup(), top: '10' })));
    showError('live-error', null);
  } catch (e) {
    showError('live-error', e);
  }
}

function renderLive(d) {
  $('live-group').textContent = GROUP_NAMES[payloadGroup()];
  $('live').dataset.currentWindowMs = d.current_window_ms;
  $('live-asof').textContent = `${hhmm(d.current_window_ms)} UTC minute, as of ${new Date(d.now_ms).toISOString().slice(11, 19)}`;
  const sum = (x) => x.tx_bytes + x.rx_bytes;
  const rows = d.groups.map((g) =>
    el(
      'tr',
      { dataset: { label: g.label } },
      el('td', { class: 'label' }, el('span', { class: 'swatch', style: `background:${colorOf.get(g.label) ?? OTHER_COLOR}` }), g.label),
      el('td', { title: `sent ${exact(g.current.tx_bytes)} B, received ${exact(g.current.rx_bytes)} B` }, human(sum(g.current))),
      el('td', { title: `sent ${exact(g.previous.tx_bytes)} B, received ${exact(g.previous.rx_bytes)} B` }, human(sum(g.previous))),
      el('td', {}, human(sum(g.previous) / 60, '/s')),
    ),
  );
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { class: 'label', colspan: '4' }, 'Nothing written for the last two minutes.')));
  if (d.total_groups > d.groups.length) rows.push(el('tr', {}, el('td', { class: 'label note', colspan: '4' }, `and ${d.total_groups - d.groups.length} more`)));
  $('live').tBodies[0].replaceChildren(...rows);
}

// ---- health -----------------------------------------------------------------------------------------------------
function badge(text, level, title = '') {
  return el('span', { class: `badge ${level}`, title }, text);
}

async function loadHealth() {
  try {
    const d = await getJSON('api/health', {});
    const now = d.now_ms;
    const badges = [];
    const dl = [];
    const row = (k, v) => dl.push(el('dt', {}, k), el('dd', {}, v));
    const inf = d.influx;
    if (!inf.ok) {
      badges.push(badge('InfluxDB unreachable', 'bad', inf.error));
      row('InfluxDB', inf.error);
    } else {
      badges.push(badge(`InfluxDB ok (${inf.query_ms} ms)`, 'ok'));
      const last = inf.last_window_1m ? Date.parse(inf.last_window_1m) : null;
      const lastFinal = inf.last_final_window_1h ? Date.parse(inf.last_final_window_1h) : null;
      // The newest 1-minute window normally is the current or the previous minute; older means nothing is written.
      badges.push(last === null ? badge('no windows written yet', 'warn') : badge(`last window ${hhmm(last)}`, now - last > 3 * 60000 ? 'warn' : 'ok', `newest 1-minute window: ${inf.last_window_1m}`));
      row('newest 1-minute window', last === null ? 'none in the last 24 h' : `${dayHour(last)} (${ago(last, now)})`);
      row('newest final 1-minute window', inf.last_final_window_1m ? dayHour(Date.parse(inf.last_final_window_1m)) : 'none yet');
      row('newest final hour (billable)', lastFinal === null ? 'none yet' : `${dayHour(lastFinal)} UTC`);
    }
    const p = d.pipeline;
    if (p) {
      const pr = p.producer;
      const co = p.consumer;
      badges.push(badge(`producer ${pr.ready ? `${Math.round(pr.records_per_s ?? 0)} rec/s` : 'starting'}`, pr.ready ? 'ok' : 'warn'));
      if ((pr.kernel_drops ?? 0) > 0 || (pr.map_full ?? 0) > 0) badges.push(badge(`kernel drops ${pr.kernel_drops ?? 0}${pr.map_full ? `, map full ${pr.map_full}` : ''}`, 'bad'));
      if (pr.kafka_ok === false) badges.push(badge(pr.kafka_error ? `Kafka error ${pr.kafka_error}` : 'Kafka down', 'bad'));
      badges.push(badge(`consumer lag ${co.lag ?? '–'}`, (co.lag ?? 0) > 10000 ? 'warn' : co.ready ? 'ok' : 'warn'));
      row('producer', pr.ready ? 'attached' : 'starting');
      row('records/s', pr.records_per_s === undefined ? '–' : Math.round(pr.records_per_s));
      row('kernel drops', `${pr.kernel_drops ?? '–'}${pr.map_full ? ` (connection map full: ${pr.map_full})` : ''}`);
      row('spool', human(pr.spool_bytes));
      row('Kafka', pr.kafka_ok === false ? `${pr.kafka_error ? `error ${pr.kafka_error}` : 'unreachable'} (records wait in the spool)` : 'ok');
      row('consumer', `${co.ready ? 'consuming' : 'starting'}, ${co.events_per_s === undefined ? '–' : Math.round(co.events_per_s)} records/s`);
      row('consumer lag', co.lag ?? '–');
      row('consumer: last window', co.last_window ?? '–');
      row('as of', `${new Date(p.as_of_ms).toISOString().slice(11, 19)} UTC`);
    } else {
      row('producer / consumer', 'not known here (run by nettally up to see records/s, drops, spool and lag)');
    }
    $('health').replaceChildren(...badges);
    $('pipeline').replaceChildren(...dl);
    showError('health-error', null);
  } catch (e) {
    if (e instanceof Superseded) return;
    $('health').replaceChildren(badge('dashboard unreachable', 'bad', String(e.message || e)));
    showError('health-error', e);
  }
}

// ---- wiring -----------------------------------------------------------------------------------------------------
function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  for (const k of Object.keys(state)) if (h.get(k)) state[k] = h.get(k);
}
function writeHash() {
  history.replaceState(null, '', `#${new URLSearchParams(state)}`);
}
function syncControls() {
  for (const b of document.querySelectorAll('#ranges button')) b.classList.toggle('on', b.dataset.range === state.range);
  if (!GROUPS[state.measurement]?.includes(state.group)) state.group = 'host';
  for (const o of $('group').options) o.disabled = !GROUPS[state.measurement]?.includes(o.value);
  $('group').value = state.group;
  $('measurement').value = state.measurement;
  $('metric').value = state.metric;
}

let historyLoads = 0;

async function loadHistory() {
  const mine = ++historyLoads;
  document.body.dataset.state = 'loading';
  lastLive = null;
  await Promise.all([busy('chart', loadChart), busy('totals', loadTotals), busy('live', loadLive)]);
  // Only the newest view is "ready": an older load finishing late (the view changed meanwhile) is not.
  if (mine === historyLoads) document.body.dataset.state = 'ready';
}

function onChange() {
  syncControls(); // may fall back to a group the measurement has
  writeHash();
  void loadHistory();
}

readHash();
syncControls();
for (const b of document.querySelectorAll('#ranges button')) b.addEventListener('click', () => ((state.range = b.dataset.range), onChange()));
$('measurement').addEventListener('change', (e) => ((state.measurement = e.target.value), onChange()));
$('group').addEventListener('change', (e) => ((state.group = e.target.value), onChange()));
$('metric').addEventListener('change', (e) => ((state.metric = e.target.value), onChange()));
window.addEventListener('resize', () => chart && chart.setSize(chartSize()));
void loadHealth();
void loadHistory();
setInterval(() => void loadLive(), LIVE_EVERY_MS);
setInterval(() => void loadHealth(), LIVE_EVERY_MS);
setInterval(() => void (document.hidden ? null : Promise.all([loadChart(), loadTotals()])), HISTORY_EVERY_MS);

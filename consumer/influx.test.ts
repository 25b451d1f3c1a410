// Tag text encoding (influx.ts): reversible for every string, and the stored text never has a backslash where
// InfluxDB 1.x line protocol reads it as an escape. The real-influxd round trip is test/influx-write.test.ts.
import { escapeControls } from '../lib/text';
import { decodeTagText, encodeTagText, toLine } from './influx';

function randomString(rnd: () => number): string {
  const units: number[] = [];
  const n = Math.floor(rnd() * 20);
  for (let i = 0; i < n; i++) units.push(rnd() < 0.5 ? Math.floor(rnd() * 256) : Math.floor(rnd() * 0x10000));
  return String.fromCharCode(...units);
}

test('encodeTagText is reversible and leaves no backslash before , = space or the end', () => {
  let s = 7;
  const rnd = (): number => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let i = 0; i < 20_000; i++) {
    const v = randomString(rnd);
    const enc = encodeTagText(v);
    expect(enc).not.toMatch(/\\(?!x[0-9a-f]{2})/);
    expect(escapeControls(enc)).toBe(enc);
    // lone surrogates (not text; UTF-8 cannot carry them) are the one lossy case: they become U+FFFD
    const wellFormed = v.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
    expect(decodeTagText(enc)).toBe(wellFormed);
  }
  expect(encodeTagText('nginx')).toBe('nginx');
  expect(encodeTagText('x\\')).toBe('x\\x5c');
  expect(encodeTagText('a\nb\x1b')).toBe('a\\x0ab\\x1b');
  expect(decodeTagText('\\x5cx41')).toBe('\\x41');
  expect(decodeTagText('old\\value')).toBe('old\\value');
});

test('toLine: hostile tags, big integers in exact decimal, empty tags left out, non-integers refused', () => {
  const p = { measurement: 'nettally_traffic_1m', tags: { partition: '0', comm: 'ev"il=,x \\', hostname: '' }, fields: { tx_bytes: 2 ** 60, final: false }, time_ms: 60_000 };
  expect(toLine(p)).toBe('nettally_traffic_1m,comm=ev"il\\=\\,x\\ \\x5c,partition=0 final=F,tx_bytes=1152921504606846976i 60000');
  expect(() => toLine({ ...p, fields: { tx_bytes: 1.5 } })).toThrow(/not an integer/);
});

/** toLine as it was before its plans and caches (the oracle: same lines, same refusals). */
function referenceLine(p: { measurement: string; tags: Record<string, string>; fields: Record<string, number | boolean>; time_ms: number }): string {
  const lp = (s: string): string => encodeTagText(s).replace(/[,= ]/g, '\\$&');
  const tags = Object.keys(p.tags)
    .filter((k) => p.tags[k] !== '')
    .sort()
    .map((k) => `,${lp(k)}=${lp(p.tags[k])}`)
    .join('');
  const fields = Object.keys(p.fields)
    .sort()
    .map((k) => {
      const v = p.fields[k];
      if (typeof v === 'boolean') return `${lp(k)}=${v ? 'T' : 'F'}`;
      if (!Number.isInteger(v)) throw new Error(`point ${p.measurement} field ${k} is ${v}, not an integer`);
      return `${lp(k)}=${BigInt(v)}i`;
    });
  if (fields.length === 0) throw new Error(`point ${p.measurement} has no fields`);
  if (!Number.isSafeInteger(p.time_ms)) throw new Error(`point ${p.measurement} has time ${p.time_ms}`);
  return `${p.measurement.replace(/[, ]/g, '\\$&')}${tags} ${fields.join(',')} ${p.time_ms}`;
}

test('toLine equals the plain construction on random points: shapes changing under one measurement, hostile text, every number kind', () => {
  let s = 11;
  const rnd = (): number => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const tagKeys = ['partition', 'host_id', 'comm', 'a b', 'x,y', 'k=v', 'zz'];
  const fieldKeys = ['tx_bytes', 'rx_bytes', 'final', 'gap', 'a b'];
  const values = [0, -1, 42, 2 ** 53 - 1, 2 ** 53, 2 ** 60, -(2 ** 63), 1e21, 1.5, Number.NaN, Infinity, true, false];
  const outcome = (f: () => string): string => {
    try {
      return f();
    } catch (e) {
      return `throws ${(e as Error).message}`;
    }
  };
  for (let i = 0; i < 20_000; i++) {
    const tags: Record<string, string> = {};
    // a few shapes per measurement, in varying insertion order: the cached plan must follow the keys
    for (const k of tagKeys) if (rnd() < 0.6) tags[k] = rnd() < 0.2 ? '' : rnd() < 0.5 ? pick(['nginx', 'h1', '0', 'x\\', 'a,b c=d']) : randomString(rnd);
    const fields: Record<string, number | boolean> = {};
    for (const k of rnd() < 0.5 ? fieldKeys : [...fieldKeys].reverse()) if (rnd() < 0.6) fields[k] = rnd() < 0.9 ? Math.floor(rnd() * 1e6) : pick(values);
    const p = { measurement: pick(['nettally_traffic_1m', 'nettally_iface_1h', 'm, x']), tags, fields, time_ms: rnd() < 0.98 ? 60_000 * i : pick([1.5, 2 ** 60, -60_000]) };
    expect(outcome(() => toLine(p))).toBe(outcome(() => referenceLine(p)));
  }
});

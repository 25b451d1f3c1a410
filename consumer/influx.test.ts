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

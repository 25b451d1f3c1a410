// Unit tests of the destination class map: longest prefix, IPv6, IPv4-mapped IPv6, defaults, bad file lines.
import { mkdtempSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { DEFAULT_REMOTE_CLASSES, loadRemoteClasses, parseRemoteClasses } from './classes';

const parse = (text: string): ReturnType<typeof parseRemoteClasses> => parseRemoteClasses(text, 'classes.txt', '--remote-classes');

describe('remote classes', () => {
  test('built-in defaults: loopback, link-local, RFC 1918, CGNAT, ULA are internal; the rest internet', () => {
    const c = DEFAULT_REMOTE_CLASSES;
    for (const a of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.7.7', '169.254.1.1', '100.64.0.1', '100.127.255.255', '::1', 'fe80::1', 'fe80::1%eth0', 'fd77::2', 'fc00::1', '::']) {
      expect([a, c.classify(a)]).toEqual([a, 'internal']);
    }
    for (const a of ['8.8.8.8', '172.32.0.1', '172.15.255.255', '100.128.0.1', '192.169.0.1', '2001:db8::1', '2a00:1450::200e', 'fe00::1']) {
      expect([a, c.classify(a)]).toEqual([a, 'internet']);
    }
  });

  test('longest prefix wins, whatever the line order; a file line replaces a built-in of the same prefix', () => {
    const c = parse(['10.20.0.0/16 zone-b', '10.20.30.0/24 zone-c', '10.20.30.40/32 db', '10.0.0.0/8 dc', '0.0.0.0/0 egress'].join('\n'));
    expect(c.classify('10.20.30.40')).toBe('db');
    expect(c.classify('10.20.30.41')).toBe('zone-c');
    expect(c.classify('10.20.31.1')).toBe('zone-b');
    expect(c.classify('10.21.0.1')).toBe('dc');
    expect(c.classify('8.8.8.8')).toBe('egress');
    // a shorter file prefix does not beat a longer built-in one
    expect(parse('0.0.0.0/1 low-half').classify('10.0.0.1')).toBe('internal');
    expect(parse('0.0.0.0/1 low-half').classify('11.0.0.1')).toBe('low-half');
  });

  test('IPv6 prefixes, compressed forms, and prefixes not on a 16-bit boundary', () => {
    const c = parse(['2001:db8::/32 partner', '2001:db8:abcd::/48 zone-b', '2001:db8:abcd:12::/63 rack', 'fd77::/16 lab'].join('\n'));
    expect(c.classify('2001:db8::1')).toBe('partner');
    expect(c.classify('2001:0db8:abcd:0000:0000:0000:0000:0001')).toBe('zone-b');
    expect(c.classify('2001:db8:abcd:13::9')).toBe('rack');
    expect(c.classify('2001:db8:abcd:14::9')).toBe('zone-b');
    expect(c.classify('fd77::2')).toBe('lab');
    expect(c.classify('fd78::2')).toBe('internal');
    expect(c.classify('2001:db9::1')).toBe('internet');
  });

  test('IPv4-mapped IPv6 addresses are classified as the IPv4 address (dual-stack sockets)', () => {
    const c = parse(['10.20.0.0/16 zone-b', '::ffff:192.0.2.0/120 doc'].join('\n'));
    expect(c.classify('::ffff:10.20.1.1')).toBe('zone-b');
    expect(c.classify('::ffff:0a14:0101')).toBe('zone-b');
    expect(c.classify('::ffff:127.0.0.1')).toBe('internal');
    expect(c.classify('::ffff:8.8.8.8')).toBe('internet');
    // a rule written as a mapped prefix covers the plain IPv4 form too
    expect(c.classify('192.0.2.9')).toBe('doc');
    expect(c.classify('::ffff:192.0.2.9')).toBe('doc');
    // NAT64 (64:ff9b::/96) is not mapped: it is an IPv6 destination
    expect(c.classify('64:ff9b::10.20.1.1')).toBe('internet');
  });

  test('comments, blank lines, bare addresses (host routes), CRLF', () => {
    const c = parse('# fleet map\r\n\r\n  192.0.2.7   gateway  # the one box\r\n2001:db8::7 gateway6\r\n');
    expect(c.classify('192.0.2.7')).toBe('gateway');
    expect(c.classify('192.0.2.8')).toBe('internet');
    expect(c.classify('2001:db8::7')).toBe('gateway6');
    expect([...c.classes].sort()).toEqual(['gateway', 'gateway6', 'internal', 'internet', 'unknown']);
  });

  test('a remote address that is not an IP address is class unknown (never a crash)', () => {
    for (const a of ['', 'x', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1::2::3', 'g::1', '1:2:3:4:5:6:7:8:9']) {
      expect([a, DEFAULT_REMOTE_CLASSES.classify(a)]).toEqual([a, 'unknown']);
    }
  });

  test.each([
    ['10.0.0.0/8', 3, 'expected 2 columns, got 1'],
    ['10.0.0.0/8 a b', 3, 'expected 2 columns, got 3'],
    ['10.0.0.300/32 x', 3, 'is not an IPv4 or IPv6 address/prefix'],
    ['10.0.0.0/33 x', 3, 'prefix length "33" of 10.0.0.0/33 must be 0..32'],
    ['fd00::/129 x', 3, 'must be 0..128'],
    ['10.0.0.0/-1 x', 3, 'prefix length "-1"'],
    ['10.1.0.0/8 x', 3, 'host bits set (the network of /8 is 10.0.0.0/8)'],
    ['10.0.0.0/8 "zone b"', 3, 'expected 2 columns'],
    ['10.0.0.0/8 zone,b', 3, 'class "zone,b" must be'],
    ['192.0.2.0/24 dup', 3, '192.0.2.0/24 is already class doc at classes.txt:2'],
  ])('bad line %j is a startup error naming file:line', (line, lineNo, problem) => {
    const text = `# header\n192.0.2.0/24 doc\n${line}\n8.8.8.8 ok\n`;
    let err: { code?: string; message?: string } = {};
    try {
      parse(text);
    } catch (e) {
      err = e as typeof err;
    }
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toMatch(new RegExp(`^invalid setting --remote-classes: classes\\.txt:${lineNo}: `));
    expect(err.message).toContain(problem);
  });

  test('the same prefix twice with the same class is fine; a missing file names the file and the setting', () => {
    expect(parse('192.0.2.0/24 doc\n192.0.2.0/24 doc').classify('192.0.2.1')).toBe('doc');
    const dir = mkdtempSync(join(tmpdir(), 'nettally-classes-'));
    try {
      expect(() => loadRemoteClasses(join(dir, 'nope.txt'))).toThrow(`invalid setting --remote-classes (env NETTALLY_REMOTE_CLASSES): cannot read ${join(dir, 'nope.txt')}`);
      writeFileSync(join(dir, 'ok.txt'), '203.0.113.0/24 zone-b\n');
      const c = loadRemoteClasses(join(dir, 'ok.txt'));
      expect(c.classify('203.0.113.5')).toBe('zone-b');
      expect(c.source).toBe(join(dir, 'ok.txt'));
      expect(loadRemoteClasses(undefined)).toBe(DEFAULT_REMOTE_CLASSES);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The fast offset helpers must agree with BigInt on every string kafkajs or a snapshot could hand them.
import { nextOffset, offsetBefore, offsetLag } from './offsets';

const samples = ['0', '1', '9', '10', '007', '-1', '', '999999999999999', '1000000000000000', '9007199254740991', '9007199254740993', '18446744073709551615', '123456789012345'];

test('offsetBefore and nextOffset are BigInt comparison and BigInt + 1, around the number/BigInt boundary too', () => {
  for (const a of samples) {
    expect(nextOffset(a)).toBe((BigInt(a) + 1n).toString());
    for (const b of samples) expect([a, b, offsetBefore(a, b)]).toEqual([a, b, BigInt(a) < BigInt(b)]);
  }
  // a string BigInt refuses is refused the same way (the caller's error), not read as a number
  expect(() => nextOffset('1e3')).toThrow(SyntaxError);
  expect(() => offsetBefore('1e3', '5')).toThrow(SyntaxError);
});

test('offsetLag is max(0, high - next) as BigInt computes it, short or long', () => {
  for (const [h, n] of [['10', '3'], ['3', '10'], ['0', '0'], ['999999999999999', '1'], ['12345678901234567890', '12345678901234567000'], ['5', '12345678901234567890']]) {
    const d = BigInt(h) - BigInt(n);
    expect(offsetLag(h, n)).toBe(d > 0n ? Number(d) : 0);
  }
});

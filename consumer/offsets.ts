// Kafka offsets (kafkajs gives them as decimal strings) on the consumer's per-message path: compared and advanced
// as numbers when they are short digit strings (every offset a real log reaches: < 10^15), exactly as BigInt would,
// without two BigInt parses and a BigInt add per message; anything else goes the BigInt way.
const SHORT = /^\d{1,15}$/;

/** BigInt(a) < BigInt(b). */
export function offsetBefore(a: string, b: string): boolean {
  if (SHORT.test(a) && SHORT.test(b)) return Number(a) < Number(b);
  return BigInt(a) < BigInt(b);
}

/** BigInt(offset) + 1, as a decimal string. */
export function nextOffset(offset: string): string {
  return SHORT.test(offset) ? String(Number(offset) + 1) : (BigInt(offset) + 1n).toString();
}

/** max(0, BigInt(high) - BigInt(next)): messages between a position and the partition's end (lag). */
export function offsetLag(high: string, next: string): number {
  if (SHORT.test(high) && SHORT.test(next)) return Math.max(0, Number(high) - Number(next));
  const d = BigInt(high) - BigInt(next);
  return d > 0n ? Number(d) : 0;
}

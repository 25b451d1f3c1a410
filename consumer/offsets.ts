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

// Records Kafka can never take (larger than the broker's message size limit on their own) are kept here, in the
// state dir, instead of blocking the spool behind them or being dropped: one JSON line each, fsynced before the
// spool lets go of them. Today's schemas cannot produce such a record (producer/kafka-batch.test.ts proves the bound);
// this is the safety net for a broker configured below one record, or a future schema.
import { closeSync, fsyncSync, openSync, writeSync } from 'fs';
import { join } from 'path';
import { PRIVATE_FILE_MODE } from '../lib/private-files';
import type { SpoolEntry } from './spool';

export const DEAD_LETTER_FILE = 'dead-letter.jsonl';

export interface DeadLetterLine {
  /** ISO time it was dead-lettered. */
  at: string;
  reason: string;
  /** Kafka message key (host_id) and the Avro single-object value, base64 (decode with schemas/index.ts decode()). */
  key_b64: string;
  value_b64: string;
  /** Size of the record batch this record alone makes, and the limit it was held against. */
  batch_bytes: number;
  limit_bytes: number;
}

/** Appends entries with their reason to <stateDir>/dead-letter.jsonl (0600) and fsyncs; returns the file's path. */
export function deadLetter(stateDir: string, entries: readonly SpoolEntry[], info: { reason: string; batchBytes: number; limitBytes: number }): string {
  const path = join(stateDir, DEAD_LETTER_FILE);
  const at = new Date().toISOString();
  const text = entries
    .map((e) => {
      const line: DeadLetterLine = {
        at, reason: info.reason, key_b64: e.key.toString('base64'), value_b64: e.value.toString('base64'),
        batch_bytes: info.batchBytes, limit_bytes: info.limitBytes,
      };
      return JSON.stringify(line) + '\n';
    })
    .join('');
  const fd = openSync(path, 'a', PRIVATE_FILE_MODE);
  try {
    const buf = Buffer.from(text);
    let done = 0;
    while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return path;
}

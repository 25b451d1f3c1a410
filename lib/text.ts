// Text that leaves the process (InfluxDB tags, terminal lines) without control characters that would change how
// it is read: a newline ends a line-protocol line, an ESC sequence re-programs the terminal that shows a log line.

// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL = /[\x00-\x1f\x7f-\x9f]/g;

/** `\xHH` (two lower-case hex digits) for one character below U+0100. */
export function hexEscape(c: string): string {
  return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
}

/** Control characters (C0, DEL, C1) as `\xHH`: safe to store, and to show on a terminal. */
export function escapeControls(s: string): string {
  return s.replace(CONTROL, hexEscape);
}

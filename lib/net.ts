// Address checks shared by the servers that refuse remote clients (broker, dashboard): neither has authentication.
import { isIPv4 } from 'net';

/** 127.0.0.0/8, ::1 and IPv4-mapped 127.x (::ffff:127.0.0.1). */
export function isLoopbackIp(ip: string): boolean {
  if (isIPv4(ip)) return ip.startsWith('127.');
  const v6 = ip.toLowerCase();
  return v6 === '::1' || (v6.startsWith('::ffff:') && isIPv4(v6.slice(7)) && v6.slice(7).startsWith('127.'));
}

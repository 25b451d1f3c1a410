#!/usr/bin/env python3
"""Holds many open files for bench:capture's refresh measurement: `fds.py KIND COUNT`.

KIND: `files` (COUNT separately opened descriptors of /dev/null: what the refresh iterator walks and skips) or `tcp` (COUNT/2 connected
loopback TCP pairs: sockets it refreshes). Raises its own RLIMIT_NOFILE (root may), prints `ready N` once every
descriptor is open, and holds them until stdin closes. Without CAP_SYS_RESOURCE (this machine) a process cannot go
above its hard limit: the bench spreads larger counts over several of these processes (the iterator walks every
process's files, so the total is what counts).
"""
import os
import resource
import socket
import sys


def main():
    kind, count = sys.argv[1], int(sys.argv[2])
    need = count + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            sys.exit('fds.py: %d descriptors need RLIMIT_NOFILE %d, the hard limit is %d: hold fewer per process' % (count, need, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    held = []
    if kind == 'files':
        # separate opens, not dups: every descriptor its own struct file, as on a real host (dups share one, which
        # the iterator then finds in the cache every time)
        while len(held) < count:
            held.append(os.open('/dev/null', os.O_RDONLY))
    elif kind == 'tcp':
        # one listener per 16k connections: the ephemeral port range limits connections per destination
        listeners = []
        while len(held) + 2 <= count:
            if len(held) // 2 % 16384 == 0:
                ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                ls.bind(('127.0.0.1', 0))
                ls.listen(4096)
                listeners.append(ls)
            c = socket.create_connection(ls.getsockname())
            s, _ = ls.accept()
            held.extend([c, s])
        for ls in listeners:
            ls.close()
    else:
        sys.exit('fds.py: KIND must be files or tcp, not ' + kind)
    sys.stdout.write('ready %d\n' % len(held))
    sys.stdout.flush()
    sys.stdin.read()


if __name__ == '__main__':
    main()

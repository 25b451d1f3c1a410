#!/usr/bin/env python3
# Traffic generator for the capture scenario tests: moves known payload bytes and prints what each socket moved (JSON).
import argparse
import ctypes
import json
import os
import socket
import sys
import tempfile
import threading
import time


def fam(f):
    return socket.AF_INET6 if f == 6 else socket.AF_INET


def recv_all(s, mode, pipe):
    """Reads until EOF; returns bytes read. mode 'splice' moves socket -> pipe -> /dev/null without recv()."""
    total = 0
    if mode == 'splice':
        r, w = pipe
        with open('/dev/null', 'wb') as null:
            while True:
                n = os.splice(s.fileno(), w, 1 << 16)
                if n == 0:
                    break
                total += n
                left = n
                while left:
                    left -= os.splice(r, null.fileno(), left)
        return total
    while True:
        if mode == 'peek':
            s.recv(100, socket.MSG_PEEK)  # a peek is not a receive
        b = s.recv(1 << 16)
        if not b:
            return total
        total += len(b)


def send_n(s, n, chunk, mode):
    sent = 0
    if mode == 'sendfile':
        with tempfile.TemporaryFile() as f:
            f.write(os.urandom(min(n, 1 << 20)) * (n // (1 << 20) + 1) if n else b'')
            f.truncate(n)
            f.flush()
            off = 0
            while off < n:
                k = os.sendfile(s.fileno(), f.fileno(), off, min(chunk, n - off))
                off += k
            return off
    if mode == 'splice':
        r, w = os.pipe()
        data = b'z' * chunk
        while sent < n:
            k = os.write(w, data[: min(chunk, n - sent)])
            while k:
                m = os.splice(r, s.fileno(), k)
                k -= m
                sent += m
        os.close(r)
        os.close(w)
        return sent
    if mode == 'sendmsg':
        parts = [b'a' * max(1, chunk // 3), b'b' * max(1, chunk // 3), b'c' * max(1, chunk - 2 * max(1, chunk // 3))]
        while sent < n:
            left = n - sent
            bufs, total = [], 0
            for p in parts:
                if total >= left:
                    break
                bufs.append(p[: left - total])
                total += len(bufs[-1])
            sent += s.sendmsg(bufs)
        return sent
    buf = b'x' * chunk
    while sent < n:
        sent += s.send(buf[: min(chunk, n - sent)])
    return sent


def tcp_server(a):
    s = socket.socket(fam(a.family), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.bind, a.port))
    s.listen(a.backlog)
    if a.relisten:
        s.listen(a.relisten)
    print(json.dumps({'port': s.getsockname()[1]}), flush=True)
    print('READY', flush=True)
    pipe = os.pipe() if a.recv_mode == 'splice' else None
    conns = []
    for _ in range(a.conns):
        c, peer = s.accept()
        if a.duplex:
            # read and write at the same time: two threads refresh the same socket's counters concurrently
            got = {}
            t = threading.Thread(target=lambda: got.update(rx=recv_all(c, a.recv_mode, pipe)))
            t.start()
            tx = send_n(c, a.reply, a.chunk, 'send')
            c.shutdown(socket.SHUT_WR)
            t.join()
            rx = got['rx']
        else:
            rx = recv_all(c, a.recv_mode, pipe)
            tx = send_n(c, a.reply, a.chunk, 'send')
        c.close()
        conns.append({'sport': s.getsockname()[1], 'dport': peer[1], 'rx': rx, 'tx': tx})
    s.close()
    print(json.dumps({'conns': conns}), flush=True)


def tcp_client(a):
    conns = []
    parts = [int(x) for x in a.parts.split(',')] if a.parts else [a.bytes]
    for _ in range(a.conns):
        c = socket.socket(fam(a.family), socket.SOCK_STREAM)
        c.connect((a.host, a.port))
        tx = 0
        got = {}
        reader = None
        if a.duplex:
            reader = threading.Thread(target=lambda: got.update(rx=recv_all(c, 'recv', None)))
            reader.start()
        for i, n in enumerate(parts):
            if i > 0:
                print('PART%d' % i, flush=True)
                while not os.path.exists(os.path.join(a.pause_dir, 'go%d' % i)):
                    time.sleep(0.02)
            tx += send_n(c, n, a.chunk, a.send_mode)
        c.shutdown(socket.SHUT_WR)
        if reader:
            reader.join()
            rx = got['rx']
        else:
            rx = recv_all(c, 'recv', None)
        conns.append({'sport': c.getsockname()[1], 'dport': a.port, 'rx': rx, 'tx': tx})
        c.close()
    print(json.dumps({'conns': conns}), flush=True)


def udp_server(a):
    s = socket.socket(fam(a.family), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: no drops on a busy machine
    s.bind((a.bind, a.port))
    s.settimeout(3)
    print(json.dumps({'port': s.getsockname()[1]}), flush=True)
    print('READY', flush=True)
    rx = tx = 0
    peer = None
    try:
        for _ in range(a.count):
            b, peer = s.recvfrom(65536)
            rx += len(b)
    except socket.timeout:
        pass
    if peer is not None:
        tx += s.sendto(b'y' * a.reply, peer)
    s.close()
    print(json.dumps({'conns': [{'sport': a.port, 'dport': peer[1] if peer else 0, 'rx': rx, 'tx': tx}]}), flush=True)


def udp_client(a):
    c = socket.socket(fam(a.family), socket.SOCK_DGRAM)
    c.connect((a.host, a.port))
    tx = 0
    for _ in range(a.count):
        tx += c.send(b'x' * a.chunk)
    c.settimeout(15)
    rx = len(c.recv(65536)) if a.reply else 0
    sport = c.getsockname()[1]
    c.close()
    print(json.dumps({'conns': [{'sport': sport, 'dport': a.port, 'rx': rx, 'tx': tx}]}), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('role', choices=['tcp-server', 'tcp-client', 'udp-server', 'udp-client'])
    p.add_argument('--family', type=int, default=4)
    p.add_argument('--bind', default='')
    p.add_argument('--host', default='')
    p.add_argument('--port', type=int, default=0)
    p.add_argument('--conns', type=int, default=1)
    p.add_argument('--bytes', type=int, default=0)
    p.add_argument('--chunk', type=int, default=65536)
    p.add_argument('--reply', type=int, default=0)
    p.add_argument('--count', type=int, default=1)
    p.add_argument('--backlog', type=int, default=16)
    p.add_argument('--relisten', type=int, default=0)
    p.add_argument('--duplex', action='store_true', help='TCP: send and receive at the same time (two threads)')
    p.add_argument('--parts', default='', help='comma-separated sizes; before part i waits for <pause-dir>/go<i>')
    p.add_argument('--pause-dir', default='')
    p.add_argument('--send-mode', default='send', choices=['send', 'sendfile', 'splice', 'sendmsg'])
    p.add_argument('--recv-mode', default='recv', choices=['recv', 'splice', 'peek'])
    p.add_argument('--comm', default='', help='process name to take first, as hex bytes (prctl PR_SET_NAME: any bytes a user picks)')
    a = p.parse_args()
    if a.comm:
        name = bytes.fromhex(a.comm)
        ctypes.CDLL(None, use_errno=True).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
        with open('/proc/self/comm', 'rb') as f:
            if f.read()[:-1] != name[:15]:
                sys.exit('prctl(PR_SET_NAME) did not set the name')
    {'tcp-server': tcp_server, 'tcp-client': tcp_client, 'udp-server': udp_server, 'udp-client': udp_client}[a.role](a)


if __name__ == '__main__':
    sys.exit(main())

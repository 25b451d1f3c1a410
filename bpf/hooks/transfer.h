/* SPDX-License-Identifier: GPL-2.0 */
/* Part of bpf/nettally.bpf.c, included there (not compiled alone; needs its maps and helpers): bytes sent and received: the sock_send_length / sock_recv_length tracepoints and the first sight of a connection. */
#pragma once

/* A connection first seen sending or receiving (UDP, or TCP established before capture started: counted from here
 * on). Owner: `current` when `in_task` (a syscall, a UDP send), else `task` (the refresh iterator's file holder),
 * else left for a later refresh. */
static __always_inline struct nt_conn *conn_first_sight(__u64 cookie, struct sock *sk, void *hs, __u8 proto, int in_task,
							struct task_struct *task)
{
	struct nt_conn *e;

	if (proto == IPPROTO_TCP) {
		int state = sk->__sk_common.skc_state;

		if (state != TCP_ESTABLISHED && state != TCP_CLOSE_WAIT)
			return 0;
	}
	e = conn_create(cookie, sk, NT_DIR_UNKNOWN);
	if (!e)
		return 0;
	if (in_task)
		set_owner_current(&e->rec);
	else if (task)
		set_owner_task(&e->rec, task);
	if (proto == IPPROTO_TCP)
		tcp_refresh(e, sk, hs, 0); /* baseline: counts from here on */
	e->flags |= NT_F_ESTABLISHED;
	emit_conn(e, NT_KIND_CONN_OPEN, NT_FLUSH_OPEN);
	return e;
}

/* Bytes moved on a socket, seen by a syscall (`syscall`: `bytes` is the call's result) or by a packet: TCP refreshes
 * from its sequence numbers (`bytes` unused but for a syscall's first sight), UDP adds `bytes`. */
static __always_inline void on_transfer(struct sock *sk, void *hs, __u64 cookie, __u16 proto, __u32 bytes, int is_send, int in_task,
					int syscall)
{
	struct nt_conn *e = bpf_map_lookup_elem(&conns, &cookie);

	if (!e) {
		e = conn_first_sight(cookie, sk, hs, proto, in_task, 0);
		if (!e)
			return;
		if (proto == IPPROTO_TCP && syscall) {
			/* this call's bytes are already in write_seq / copied_seq: keep them */
			if (is_send)
				e->tx_seq_base -= bytes;
			else
				e->rx_seq_base -= bytes;
		}
	} else if (!e->rec.pid && in_task) {
		set_owner_current(&e->rec); /* accepted before we knew the listener's owner */
	}
	if (e->flags & NT_F_CLOSED)
		return;
	if (proto == IPPROTO_TCP) {
		if (!(e->flags & NT_F_ESTABLISHED))
			return;
		tcp_refresh(e, sk, hs, 0);
		maybe_flush(e);
		return;
	}
	if (is_send)
		__sync_fetch_and_add(&e->rec.tx_bytes, (__u64)bytes);
	else
		__sync_fetch_and_add(&e->rec.rx_bytes, (__u64)bytes);
	maybe_flush(e);
}

/* Per-syscall counting: used only without a cgroup2 mount (and by the benchmark's naive mode). Both tracepoints fire
 * for every send/receive of every socket family, which alone costs ~5% of iperf3's throughput at 64 B writes here. */
static __always_inline void on_syscall(struct sock *sk, int ret, int is_send)
{
	__u64 cookie;
	__u16 proto;

	if (ret <= 0 || !inet_family(sk))
		return;
	proto = sk->sk_protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return;
	if (proto == IPPROTO_TCP && !naive) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
		__u32 seq;

		if (!tp)
			return;
		seq = is_send ? tp->write_seq : tp->copied_seq;
		if (!seq_crossed(seq - (__u32)ret, seq))
			return;
	}
	cookie = sock_cookie(sk);
	if (naive)
		emit_naive(cookie, ret, is_send);
	on_transfer(sk, sk, cookie, proto, ret, is_send, 1, 1);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(nt_send, struct sock *sk, int ret, int flags)
{
	if (hooks_only)
		return 0;
	on_syscall(sk, ret, 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(nt_recv, struct sock *sk, int ret, int flags)
{
	if (hooks_only)
		return 0;
	if (flags & MSG_PEEK)
		return 0;
	on_syscall(sk, ret, 0);
	return 0;
}

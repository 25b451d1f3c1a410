/* SPDX-License-Identifier: GPL-2.0 */
/* Part of bpf/nettally.bpf.c, included there (not compiled alone; needs its maps and helpers): connection lifecycle: TCP state changes, TCP socket destruction, the refresh iterator, UDP close. */
#pragma once

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(nt_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct sock *s = (struct sock *)sk;
	struct nt_conn *e;
	__u64 cookie;

	if (!inet_family(sk) || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	cookie = bpf_get_socket_cookie(s);
	switch (newstate) {
	case TCP_LISTEN:
		on_listen(sk, cookie);
		return 0;
	case TCP_SYN_SENT:
		/* connect() runs in the owner's context; ESTABLISHED usually arrives in softirq */
		e = conn_create(cookie, sk, NT_DIR_OUTBOUND);
		if (e)
			set_owner_current(&e->rec);
		return 0;
	case TCP_ESTABLISHED:
		if (oldstate == TCP_SYN_SENT) {
			e = bpf_map_lookup_elem(&conns, &cookie);
			if (!e) {
				e = conn_create(cookie, sk, NT_DIR_OUTBOUND);
				if (!e)
					return 0;
			}
			/* the local port is assigned after SYN_SENT: identity is complete only now */
			fill_identity(&e->rec, sk);
			e->rec.direction = NT_DIR_OUTBOUND;
		} else if (oldstate == TCP_SYN_RECV) {
			struct listener_key k = {};
			struct owner *o;

			e = conn_create(cookie, sk, NT_DIR_INBOUND);
			if (!e)
				return 0;
			k.netns_cookie = e->rec.netns_cookie;
			k.port = e->rec.sport;
			o = bpf_map_lookup_elem(&listeners, &k);
			if (o) {
				e->rec.pid = o->pid;
				e->rec.uid = o->uid;
				e->rec.cgroup_id = o->cgroup_id;
				__builtin_memcpy(e->rec.comm, o->comm, sizeof(e->rec.comm));
			}
		} else {
			return 0;
		}
		e->rec.start_ns = bpf_ktime_get_boot_ns();
		e->rec.tx_bytes = 0;
		e->rec.rx_bytes = 0;
		e->flags &= ~NT_F_TCP_SEQ;
		tcp_refresh(e, s, s, 0); /* baseline */
		e->flags |= NT_F_ESTABLISHED;
		emit_conn(e, NT_KIND_CONN_OPEN, NT_FLUSH_OPEN);
		return 0;
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK:
		/* tcp_send_fin() follows this transition: count the data, then stop following write_seq */
		e = bpf_map_lookup_elem(&conns, &cookie);
		if (!e || (e->flags & (NT_F_CLOSED | NT_F_ESTABLISHED)) != NT_F_ESTABLISHED)
			return 0;
		tcp_refresh(e, s, s, 1);
		e->flags |= NT_F_FIN_SENT;
		maybe_flush(e);
		return 0;
	case TCP_CLOSE:
		if (oldstate == TCP_LISTEN) {
			struct listener_key k = listener_of(sk);
			struct owner *o = bpf_map_lookup_elem(&listeners, &k);

			if (o && o->cookie == cookie) {
				listen_recheck(sk, o);
				bpf_map_delete_elem(&listeners, &k);
			}
			return 0;
		}
		e = bpf_map_lookup_elem(&conns, &cookie);
		if (!e)
			return 0;
		if (!(e->flags & NT_F_ESTABLISHED)) {
			bpf_map_delete_elem(&conns, &cookie); /* connect() failed: nothing was transferred */
			return 0;
		}
		if (!(e->flags & NT_F_CLOSED))
			tcp_refresh(e, s, s, 0);
		return 0;
	}
	return 0;
}

/* The socket is gone: counters are final (reads after a FIN-triggered CLOSE state happen before this). */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(nt_tcp_destroy, struct sock *sk)
{
	struct nt_conn *e;
	__u64 cookie;

	if (!inet_family(sk))
		return 0;
	cookie = bpf_get_socket_cookie(sk);
	e = bpf_map_lookup_elem(&conns, &cookie);
	if (!e)
		return 0;
	if (!(e->flags & NT_F_ESTABLISHED)) {
		bpf_map_delete_elem(&conns, &cookie);
		return 0;
	}
	if (e->flags & NT_F_CLOSED)
		return 0;
	tcp_refresh(e, sk, sk, 0);
	conn_close(e);
	return 0;
}

/* A listening socket seen by the refresh: a listener that predates the capture gets its owner (for the connections
 * it accepts) and a LISTEN record; a known one is checked for a changed backlog. */
static __always_inline void refresh_listener(struct sock *sk, __u64 cookie, struct task_struct *task)
{
	struct listener_key k = listener_of(sk);
	struct owner *o = bpf_map_lookup_elem(&listeners, &k);
	struct owner n = {};

	if (o) {
		if (o->cookie == cookie)
			listen_recheck(sk, o);
		return;
	}
	owner_from_task(&n, task);
	n.cookie = cookie;
	n.backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
	if (bpf_map_update_elem(&listeners, &k, &n, BPF_NOEXIST) == 0)
		emit_listen(sk, &n);
}

/* Run by user space (reading the iterator) when a capture opens, every half flush interval and before every
 * snapshot: brings each open TCP connection's counters up to its sequence numbers and flushes what is due. This is
 * what flushes connections whose calls all took the fast path, idle ones, and ones that move bytes only by splice or
 * zerocopy receive; it also finds connections and listeners that predate the capture, with the process holding
 * them as owner. It walks every open file of every process (all network namespaces; a socket shared by several
 * processes is visited more than once, which changes nothing); this kernel refuses iterators over map elements. */
SEC("iter/task_file")
int nt_refresh(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *f = ctx->file;
	struct socket *so;
	struct sock *sk;
	struct nt_conn *e;
	__u64 cookie;
	int state;

	if (!f || !task)
		return 0;
	so = bpf_sock_from_file(f);
	if (!so)
		return 0;
	sk = so->sk;
	if (!sk || !inet_family(sk))
		return 0;
	if (sk->sk_protocol == IPPROTO_UDP) {
		/* first seen receiving (in softirq): the owner is whoever holds it */
		cookie = sk->__sk_common.skc_cookie.counter;
		e = cookie ? bpf_map_lookup_elem(&conns, &cookie) : 0;
		if (e && !e->rec.pid)
			set_owner_task(&e->rec, task);
		return 0;
	}
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	/* The socket pointer is untrusted here (no helper takes it, bpf_get_socket_cookie included): read the cached
	 * cookie. A socket without one has seen no packet or state change since the capture attached (those generate
	 * it): tell user space which file it is, so that it generates the cookie (SO_COOKIE) and runs the iterator
	 * again. */
	cookie = sk->__sk_common.skc_cookie.counter;
	if (!cookie) {
		struct nt_refresh_miss miss = { .pid = task->tgid, .fd = ctx->fd };

		bpf_seq_write(ctx->meta->seq, &miss, sizeof(miss));
		return 0;
	}
	state = sk->__sk_common.skc_state;
	if (state == TCP_LISTEN) {
		refresh_listener(sk, cookie, task);
		return 0;
	}
	e = bpf_map_lookup_elem(&conns, &cookie);
	if (!e) {
		/* established before the capture started: counted from now on, owned by this process */
		conn_first_sight(cookie, sk, 0, IPPROTO_TCP, 0, task);
	} else if ((e->flags & (NT_F_CLOSED | NT_F_ESTABLISHED)) != NT_F_ESTABLISHED) {
		return 0;
	} else {
		if (!e->rec.pid)
			set_owner_task(&e->rec, task); /* accepted from a listener whose owner was unknown */
		tcp_refresh(e, sk, 0, 0);
		maybe_flush(e);
	}
	return 0;
}

/* UDP has no state tracepoint: close() of the socket is the end of the "connection". */
SEC("cgroup/sock_release")
int nt_sock_release(struct bpf_sock *ctx)
{
	struct nt_conn *e;
	__u64 cookie;

	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	cookie = bpf_get_socket_cookie(ctx);
	e = bpf_map_lookup_elem(&conns, &cookie);
	if (!e)
		return 1;
	if (!e->rec.pid)
		set_owner_current(&e->rec); /* first seen receiving (softirq): close() runs in the owner's context */
	conn_close(e);
	return 1;
}

/* SPDX-License-Identifier: GPL-2.0 */
/* Part of bpf/nettally.bpf.c, included there (not compiled alone; needs its maps and helpers): listen events and listener rechecks. */
#pragma once

static __always_inline void fill_listen(struct nt_listen_record *r, const struct sock *sk, const struct owner *o)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);

	r->hdr.ts_ns = bpf_ktime_get_boot_ns();
	r->hdr.kind = NT_KIND_LISTEN;
	r->hdr.size_bytes = sizeof(*r);
	r->cookie = o->cookie;
	r->netns = BPF_CORE_READ(net, ns.inum);
	r->netns_cookie = BPF_CORE_READ(net, net_cookie);
	r->pid = o->pid;
	r->uid = o->uid;
	r->backlog = o->backlog;
	r->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	r->protocol = (__u8)BPF_CORE_READ(sk, sk_protocol);
	r->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	__builtin_memset(r->addr, 0, sizeof(r->addr));
	if (r->family == AF_INET6)
		BPF_CORE_READ_INTO(&r->addr, sk, __sk_common.skc_v6_rcv_saddr);
	else
		BPF_CORE_READ_INTO((__u32 *)r->addr, sk, __sk_common.skc_rcv_saddr);
	__builtin_memcpy(r->comm, o->comm, sizeof(r->comm));
	__builtin_memset(r->_pad, 0, sizeof(r->_pad));
}

static __always_inline void emit_listen(const struct sock *sk, const struct owner *o)
{
	struct nt_listen_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	if (!r) {
		stat_inc(NT_STAT_RINGBUF_DROPS);
		return;
	}
	fill_listen(r, sk, o);
	bpf_ringbuf_submit(r, 0);
}

static __always_inline struct listener_key listener_of(const struct sock *sk)
{
	struct listener_key k = {};

	k.netns_cookie = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
	k.port = BPF_CORE_READ(sk, __sk_common.skc_num);
	return k;
}

static __always_inline void on_listen(const struct sock *sk, __u64 cookie)
{
	struct listener_key k = listener_of(sk);
	struct owner o = {};

	o.pid = bpf_get_current_pid_tgid() >> 32;
	o.uid = (__u32)bpf_get_current_uid_gid();
	o.cgroup_id = bpf_get_current_cgroup_id();
	o.cookie = cookie;
	o.backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	bpf_map_update_elem(&listeners, &k, &o, BPF_ANY);
	emit_listen(sk, &o);
}

/* A listen() on a listening socket changes only sk_max_ack_backlog: no state change, no tracepoint (the syscall
 * tracepoints would put every syscall of every process on the slow path). Compared at each refresh and at close. */
static __always_inline void listen_recheck(const struct sock *sk, struct owner *o)
{
	__u32 backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);

	if (backlog == o->backlog)
		return;
	o->backlog = backlog;
	emit_listen(sk, o);
}

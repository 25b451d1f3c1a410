// SPDX-License-Identifier: GPL-2.0
/* nettally kernel side: cumulative per-connection payload counters, listen events, per-interface wire counters.
 * Tracepoints only (tp_btf), one cgroup sock_release hook for UDP close, and a task_file iterator that user space
 * runs (refresh). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "nettally.h"

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MSG_PEEK 2
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* TCP states (include/net/tcp_states.h) */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_FIN_WAIT2 5
#define TCP_TIME_WAIT 6
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_LISTEN 10
#define TCP_CLOSING 11

/* Settings: rodata, set by user space between open and load (values: producer/capture-options.ts; these
 * initial values are placeholders, always overwritten). */
const volatile __u64 flush_interval_ns = 5000000000ULL;
const volatile __u64 flush_threshold_bytes = 16ULL << 20;
/* The TCP hot path looks at a connection when a packet (or, without cgroup2, a call) moves one of its sequence
 * numbers across a multiple of 2^gate_shift: user space sets it to about a quarter of flush_threshold_bytes. */
const volatile __u8 gate_shift = 22;
const volatile __u8 naive = 0;      /* benchmark: also one record per send/recv call */
const volatile __u8 hooks_only = 0; /* benchmark: nt_send/nt_recv return at once (what the tracepoints alone cost) */

/* The flush age is measured in jiffies (a memory read) rather than ktime (measured at ~40 ns per call on the development VM). */
extern const int CONFIG_HZ __kconfig __weak;

static __always_inline __u64 age_clock(void)
{
	return CONFIG_HZ ? bpf_jiffies64() : bpf_ktime_get_ns();
}

static __always_inline __u64 flush_interval_ticks(void)
{
	return CONFIG_HZ ? flush_interval_ns * CONFIG_HZ / 1000000000ULL : flush_interval_ns;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* set from producer/capture-options.ts (ring-buffer-bytes) before load */
} events SEC(".maps");

/* HASH, not LRU: an LRU would evict unshipped counters silently. User space deletes closed entries (forget). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072); /* set from producer/capture-options.ts (max-connections) before load */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct nt_conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct nt_iface_key);
	__type(value, struct nt_iface_val);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NT_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Owner of a listening port, so accepted connections (established in softirq) get the right pid/comm. */
struct listener_key {
	__u64 netns_cookie;
	__u32 port;
	__u32 _pad;
};
struct owner {
	__u64 cgroup_id;
	__u64 cookie;
	__u32 pid;
	__u32 uid;
	char comm[16];
	__u32 backlog; /* as last reported: a 2nd listen() that changed it is reported at the next refresh or close */
	__u32 _pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listener_key);
	__type(value, struct owner);
} listeners SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline void set_owner_current(struct nt_conn_record *r)
{
	r->pid = bpf_get_current_pid_tgid() >> 32;
	r->uid = (__u32)bpf_get_current_uid_gid();
	r->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(r->comm, sizeof(r->comm));
}

/* Addresses, ports, netns: identity read once per connection (CO-RE reads; not on the hot path). */
static __always_inline void fill_identity(struct nt_conn_record *r, const struct sock *sk)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);

	r->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	r->protocol = (__u8)BPF_CORE_READ(sk, sk_protocol);
	r->netns = BPF_CORE_READ(net, ns.inum);
	r->netns_cookie = BPF_CORE_READ(net, net_cookie);
	r->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	r->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (r->family == AF_INET6) {
		BPF_CORE_READ_INTO(&r->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&r->daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		BPF_CORE_READ_INTO((__u32 *)r->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)r->daddr, sk, __sk_common.skc_daddr);
	}
}

static __always_inline int emit_conn(struct nt_conn *e, __u32 kind, __u8 reason)
{
	struct nt_conn_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	if (!r) {
		stat_inc(NT_STAT_RINGBUF_DROPS);
		return -1;
	}
	__builtin_memcpy(r, &e->rec, sizeof(*r));
	r->hdr.ts_ns = bpf_ktime_get_boot_ns();
	r->hdr.kind = kind;
	r->hdr.size_bytes = sizeof(*r);
	r->flush_reason = reason;
	bpf_ringbuf_submit(r, 0);
	return 0;
}

/* Creates the entry for a connection; NULL when the map is full (counted). */
static __always_inline struct nt_conn *conn_create(__u64 cookie, const struct sock *sk, __u8 direction)
{
	struct nt_conn z = {};
	long err;

	fill_identity(&z.rec, sk);
	z.rec.cookie = cookie;
	z.rec.direction = direction;
	z.rec.start_ns = bpf_ktime_get_boot_ns();
	err = bpf_map_update_elem(&conns, &cookie, &z, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST */)
		stat_inc(NT_STAT_CONN_MAP_FULL);
	return bpf_map_lookup_elem(&conns, &cookie);
}

/* Moves a byte counter to the sequence number `seq` (counter == seq - base, extended to 64 bits). The counter is
 * the whole state (one 64-bit store, no separate "last seen"), so two CPUs refreshing the same socket at once can
 * never count the same bytes twice; a refresh only moves the counter forward. */
static __always_inline void seq_advance(__u64 *ctr, __u32 base, __u32 seq)
{
	__u64 cur = *ctr;
	__s32 d = (__s32)(seq - (base + (__u32)cur));

	/* compare-and-swap: when another CPU (the refresh iterator, a state change) moved it meanwhile, its value
	 * stands and the next refresh catches up; a plain store could move the counter backwards */
	if (d > 0)
		__sync_val_compare_and_swap(ctr, cur, cur + (__u64)d);
}

/* TCP's own sequence counters see every path (write/sendfile/splice/io_uring, recvmsg/splice/zerocopy):
 * tx = write_seq advanced by the application (stops before the FIN), rx = copied_seq advanced by reads
 * (a consumed FIN takes one sequence number and is excluded). `at_fin`: called at the transition that precedes
 * tcp_send_fin(). `hs`: the same socket as the helpers of the calling program type accept it (the BTF pointer in
 * tracing programs, the bpf_sock in cgroup_skb, which refuses the BTF one), or 0 in the refresh iterator, whose
 * socket pointer is untrusted (no helper takes it): there the TCP fields are read through a read-only cast. */
static __always_inline void tcp_refresh(struct nt_conn *e, struct sock *sk, void *hs, int at_fin)
{
	struct tcp_sock *tp = hs ? bpf_skc_to_tcp_sock(hs) : bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
	__u32 wseq, cseq;
	int state;

	if (!tp)
		return;
	if (!(e->flags & NT_F_TCP_SEQ)) {
		wseq = tp->write_seq;
		cseq = tp->copied_seq;
		if (((sk->__sk_common.skc_flags >> bpf_core_enum_value(enum sock_flags, SOCK_DONE)) & 1) && cseq == tp->rcv_nxt)
			cseq -= 1;
		e->tx_seq_base = wseq - (__u32)e->rec.tx_bytes;
		e->rx_seq_base = cseq - (__u32)e->rec.rx_bytes;
		e->flags |= NT_F_TCP_SEQ;
		return;
	}
	if (!(e->flags & NT_F_FIN_SENT)) {
		wseq = tp->write_seq;
		/* state after write_seq: a FIN is queued only after the state left ESTABLISHED/CLOSE_WAIT */
		state = sk->__sk_common.skc_state;
		if (at_fin || state == TCP_ESTABLISHED || state == TCP_CLOSE_WAIT || state == TCP_CLOSE)
			seq_advance(&e->rec.tx_bytes, e->tx_seq_base, wseq);
		e->rec.retransmits = tp->total_retrans;
	}
	cseq = tp->copied_seq;
	if (((sk->__sk_common.skc_flags >> bpf_core_enum_value(enum sock_flags, SOCK_DONE)) & 1) && cseq == tp->rcv_nxt)
		cseq -= 1;
	seq_advance(&e->rec.rx_bytes, e->rx_seq_base, cseq);
}

/* Flush when unflushed bytes exceed the threshold or are older than the interval; a failed reserve leaves
 * the entry dirty so the next event (or the user-space sweep) carries the total. */
static __always_inline void maybe_flush(struct nt_conn *e)
{
	__u64 tx = e->rec.tx_bytes, rx = e->rec.rx_bytes;
	__u64 unflushed = (tx - e->flushed_tx) + (rx - e->flushed_rx);
	__u64 now;
	__u8 reason;

	if (!unflushed || !(e->flags & NT_F_ESTABLISHED))
		return;
	now = age_clock();
	if (unflushed >= flush_threshold_bytes) {
		reason = NT_FLUSH_THRESHOLD;
	} else if (!e->dirty_since) {
		e->dirty_since = now;
		return;
	} else if (now - e->dirty_since >= flush_interval_ticks()) {
		reason = NT_FLUSH_INTERVAL;
	} else {
		return;
	}
	if (emit_conn(e, NT_KIND_CONN_SAMPLE, reason) == 0) {
		e->flushed_tx = tx;
		e->flushed_rx = rx;
		e->dirty_since = 0;
	} else if (!e->dirty_since) {
		e->dirty_since = now;
	}
}

/* True when a sequence number moved from `from` to `to` across a multiple of 2^gate_shift: time for the slow path
 * (refresh, threshold check). A connection moving N bytes takes it about N / 2^gate_shift times per direction, so a
 * threshold flush comes at most 2^gate_shift bytes per direction late. */
static __always_inline int seq_crossed(__u32 from, __u32 to)
{
	return ((from ^ to) >> gate_shift) != 0;
}

static __always_inline void conn_close(struct nt_conn *e)
{
	if (e->flags & NT_F_CLOSED)
		return;
	e->closed_ns = bpf_ktime_get_boot_ns();
	e->rec.hdr.ts_ns = e->closed_ns;
	e->flags |= NT_F_CLOSED;
	if (emit_conn(e, NT_KIND_CONN_CLOSE, NT_FLUSH_CLOSE) == 0) {
		e->flags |= NT_F_CLOSE_EMITTED;
		e->flushed_tx = e->rec.tx_bytes;
		e->flushed_rx = e->rec.rx_bytes;
		e->dirty_since = 0;
	}
}

static __always_inline void emit_naive(__u64 cookie, int bytes, __u32 is_send)
{
	struct nt_naive_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	if (!r) {
		stat_inc(NT_STAT_RINGBUF_DROPS);
		return;
	}
	r->hdr.ts_ns = bpf_ktime_get_boot_ns();
	r->hdr.kind = NT_KIND_NAIVE;
	r->hdr.size_bytes = sizeof(*r);
	r->cookie = cookie;
	r->bytes = bytes;
	r->is_send = is_send;
	bpf_ringbuf_submit(r, 0);
}

/* The cookie is generated once (by the first bpf_get_socket_cookie) and cached in the socket: read it directly. */
static __always_inline __u64 sock_cookie(struct sock *sk)
{
	__u64 c = sk->__sk_common.skc_cookie.counter;

	return c ? c : bpf_get_socket_cookie(sk);
}

static __always_inline int inet_family(const struct sock *sk)
{
	__u16 f = sk->__sk_common.skc_family;

	return f == AF_INET || f == AF_INET6;
}

static __always_inline void owner_from_task(struct owner *o, struct task_struct *t)
{
	o->pid = BPF_CORE_READ(t, tgid);
	o->uid = BPF_CORE_READ(t, cred, uid.val);
	o->cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	BPF_CORE_READ_INTO(&o->comm, t, comm);
}

static __always_inline void set_owner_task(struct nt_conn_record *r, struct task_struct *t)
{
	struct owner o = {};

	owner_from_task(&o, t);
	r->pid = o.pid;
	r->uid = o.uid;
	r->cgroup_id = o.cgroup_id;
	__builtin_memcpy(r->comm, o.comm, sizeof(r->comm));
}

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

/* Per-packet counting (the default, with a cgroup2 mount): the cgroup_skb hooks on the cgroup2 root see every IP
 * packet of every process's sockets, at a rate far below the syscall rate for small writes (TCP coalesces them). TCP:
 * whether an incoming segment crossed a sequence boundary (its bytes are counted from sequence numbers anyway; see
 * seq_crossed). UDP: the datagram's payload, sent (egress, in
 * the sender's context) or delivered to the socket (ingress; a datagram the socket then fails to queue is taken
 * back by nt_udp_drop). */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

#define TCP_NEW_SYN_RECV 12

static __always_inline void on_packet(struct __sk_buff *ctx, int egress)
{
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	struct sock *sk = skb->sk;
	struct bpf_sock *hs;
	__u32 hdrs, len;
	__u64 cookie;
	__u16 proto;
	int state;

	if (!sk)
		return;
	/* egress counts UDP alone, and runs for every TCP segment too: one load decides (for a timewait or request
	 * socket the field lies beyond its smaller struct, a harmless read; the checks below exclude them) */
	if (egress && sk->sk_protocol != IPPROTO_UDP)
		return;
	if (!inet_family(sk))
		return;
	state = sk->__sk_common.skc_state;
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return; /* not a full socket */
	proto = sk->sk_protocol;
	if (proto == IPPROTO_TCP) {
		void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
		__u32 off = (__u32)(skb->transport_header - skb->network_header) + 4;
		struct tcp_sock *tp;
		__u32 th[2]; /* the segment's seq and ack_seq */
		__u32 seq;

		/* incoming segments alone tick both directions (a sender receives the ACKs, a receiver the data) */
		if (egress)
			return;
		/* the headers are in the linear part: read them in place (bounded for the verifier), the helper only for
		 * an unusual layout */
		if (off < 256 && data + (off & 0xff) + sizeof(th) <= end) {
			__builtin_memcpy(th, data + (off & 0xff), sizeof(th));
		} else if (bpf_skb_load_bytes(ctx, off, th, sizeof(th))) {
			return;
		}
		seq = bpf_ntohl(th[0]);
		/* snd_una is written by this same path on this CPU: a read-only cast, no helper call */
		tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
		if (!seq_crossed(seq, seq + skb->len) && !seq_crossed(tp->snd_una, bpf_ntohl(th[1])))
			return;
		len = 0;
	} else if (proto == IPPROTO_UDP) {
		/* the program sees the packet from its IP header on, in both directions */
		hdrs = (__u32)(skb->transport_header - skb->network_header) + 8;
		len = skb->len;
		if (len <= hdrs)
			return;
		len -= hdrs;
	} else {
		return;
	}
	hs = ctx->sk;
	if (!hs)
		return;
	hs = bpf_sk_fullsock(hs);
	if (!hs)
		return;
	cookie = sk->__sk_common.skc_cookie.counter;
	if (!cookie)
		cookie = bpf_get_socket_cookie(ctx);
	on_transfer(sk, hs, cookie, proto, len, egress, egress && proto == IPPROTO_UDP, 0);
}

SEC("cgroup_skb/egress")
int nt_pkt_out(struct __sk_buff *ctx)
{
	on_packet(ctx, 1);
	return 1;
}

SEC("cgroup_skb/ingress")
int nt_pkt_in(struct __sk_buff *ctx)
{
	on_packet(ctx, 0);
	return 1;
}

/* A UDP datagram counted at ingress that the socket could not queue (receive buffer full, ...): not delivered. */
SEC("tp_btf/udp_fail_queue_rcv_skb")
int BPF_PROG(nt_udp_drop, int rc, struct sock *sk, struct sk_buff *skb)
{
	struct nt_conn *e;
	__u16 ulen = 0;
	__u64 cookie;

	if (!sk || !skb)
		return 0;
	cookie = sk->__sk_common.skc_cookie.counter;
	if (!cookie)
		return 0;
	e = bpf_map_lookup_elem(&conns, &cookie);
	if (!e || (e->flags & NT_F_CLOSED))
		return 0;
	bpf_probe_read_kernel(&ulen, sizeof(ulen), skb->head + skb->transport_header + 4 /* udphdr.len */);
	ulen = bpf_ntohs(ulen);
	if (ulen > 8)
		__sync_fetch_and_sub(&e->rec.rx_bytes, (__u64)(ulen - 8));
	return 0;
}

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

/* Per-interface wire counters: IP packets, headers included, one count per skb (as the interface's own stats).
 * Two programs run per packet (and four over loopback, with the packet hooks), so the counter update itself is on the
 * hot path: a per-CPU array of NT_IFACE_SLOTS slots, each owned by the first (netns, ifindex) that hashes to it,
 * takes it with an inlined array lookup and a key compare; the per-CPU hash (jhash, bucket walk: ~0.5% of a
 * CPU-bound loopback transfer) is only for an interface whose slot another one owns on that CPU. User space adds
 * both per key. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NT_IFACE_SLOTS);
	__type(key, __u32);
	__type(value, struct nt_iface_entry);
} iface_slots SEC(".maps");

static __always_inline void iface_val_add(struct nt_iface_val *v, __u64 bytes, int tx)
{
	/* per-CPU values, and both hooks run with bottom halves disabled: nothing else updates this copy meanwhile */
	if (tx) {
		v->tx_bytes += bytes;
		v->tx_packets += 1;
	} else {
		v->rx_bytes += bytes;
		v->rx_packets += 1;
	}
}

static __always_inline void iface_add(struct net_device *dev, __u64 bytes, int tx)
{
	struct nt_iface_key k = {};
	struct nt_iface_entry *slot;
	struct nt_iface_val *v;
	__u32 i;

	k.ifindex = dev->ifindex;
	k.netns = dev->nd_net.net->ns.inum;
	/* netns inode numbers are sequential and every netns has lo as ifindex 1: mix both (Fibonacci hashing) */
	i = ((k.netns ^ (k.ifindex << 16)) * 2654435761U) >> (32 - NT_IFACE_SLOTS_SHIFT);
	slot = bpf_map_lookup_elem(&iface_slots, &i);
	if (slot) {
		if (slot->key.netns == k.netns && slot->key.ifindex == k.ifindex) {
			iface_val_add(&slot->val, bytes, tx);
			return;
		}
		if (!slot->key.netns) { /* free (a real netns inode is never 0): this interface owns it on this CPU */
			slot->key = k;
			iface_val_add(&slot->val, bytes, tx);
			return;
		}
	}
	v = bpf_map_lookup_elem(&ifaces, &k);
	if (!v) {
		struct nt_iface_val z = {};

		if (bpf_map_update_elem(&ifaces, &k, &z, BPF_NOEXIST) && !bpf_map_lookup_elem(&ifaces, &k)) {
			stat_inc(NT_STAT_IFACE_MAP_FULL);
			return;
		}
		v = bpf_map_lookup_elem(&ifaces, &k);
		if (!v)
			return;
	}
	iface_val_add(v, bytes, tx);
}

static __always_inline int is_ip(struct sk_buff *skb)
{
	__u16 p = skb->protocol;

	return p == bpf_htons(ETH_P_IP) || p == bpf_htons(ETH_P_IPV6);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(nt_if_rx, struct sk_buff *skb)
{
	struct net_device *dev = skb->dev;

	if (!dev || !is_ip(skb))
		return 0;
	/* the link-layer header is already pulled: len is the IP packet */
	iface_add(dev, skb->len, 0);
	return 0;
}

SEC("tp_btf/net_dev_xmit")
int BPF_PROG(nt_if_tx, struct sk_buff *skb, int rc, struct net_device *dev, unsigned int skb_len)
{
	__u16 mac, nh;
	__u32 l2 = 0;

	if (rc != 0 || !dev || !is_ip(skb))
		return 0;
	/* skb_len includes the link-layer header; skb->data may already have moved (loopback pulls it in its xmit),
	 * the header offsets from skb->head do not */
	mac = skb->mac_header;
	nh = skb->network_header;
	if (mac != (__u16)~0U && nh > mac)
		l2 = nh - mac;
	if (l2 > skb_len)
		l2 = 0;
	iface_add(dev, skb_len - l2, 1);
	return 0;
}

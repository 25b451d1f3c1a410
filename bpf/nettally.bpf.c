// SPDX-License-Identifier: GPL-2.0
/* nettally kernel side: cumulative per-connection payload counters, listen events, per-interface wire counters.
 * Tracepoints only (tp_btf, classic tracepoints) plus one cgroup sock_release hook for UDP close. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "nettally.h"

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

/* Settings: rodata, set by user space between open and load. */
const volatile __u64 flush_interval_ns = 5000000000ULL;
const volatile __u64 flush_threshold_bytes = 16ULL << 20;
const volatile __u8 naive = 0;

/* The flush age is measured in jiffies (a memory read) rather than ktime (~40 ns per call on this VM). */
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
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* HASH, not LRU: an LRU would evict unshipped counters silently. User space deletes closed entries (forget). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
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
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct listener_key);
	__type(value, struct owner);
} listeners SEC(".maps");

/* A listen() on an already listening socket, between sys_enter and sys_exit (key: pid_tgid). LRU: a thread killed
 * between the two leaves an entry behind, and evicting such an entry loses nothing. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} relisten SEC(".maps");

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

	if (d > 0)
		*ctr = cur + (__u64)d;
}

#define NT_TX 1
#define NT_RX 2
#define NT_AT_FIN 4

/* TCP's own sequence counters see every path (write/sendfile/splice/io_uring, recvmsg/splice/zerocopy):
 * tx = write_seq advanced by the application (stops before the FIN), rx = copied_seq advanced by reads
 * (a consumed FIN takes one sequence number and is excluded). `what`: NT_TX and/or NT_RX (the hot paths refresh
 * only their own direction), NT_AT_FIN at the transition that precedes tcp_send_fin(). */
static __always_inline void tcp_refresh(struct nt_conn *e, struct sock *sk, int what)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
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
	if ((what & NT_TX) && !(e->flags & NT_F_FIN_SENT)) {
		wseq = tp->write_seq;
		/* state after write_seq: a FIN is queued only after the state left ESTABLISHED/CLOSE_WAIT */
		state = sk->__sk_common.skc_state;
		if ((what & NT_AT_FIN) || state == TCP_ESTABLISHED || state == TCP_CLOSE_WAIT || state == TCP_CLOSE)
			seq_advance(&e->rec.tx_bytes, e->tx_seq_base, wseq);
		e->rec.retransmits = tp->total_retrans;
	}
	if (what & NT_RX) {
		cseq = tp->copied_seq;
		if (((sk->__sk_common.skc_flags >> bpf_core_enum_value(enum sock_flags, SOCK_DONE)) & 1) && cseq == tp->rcv_nxt)
			cseq -= 1;
		seq_advance(&e->rec.rx_bytes, e->rx_seq_base, cseq);
	}
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

/* A connection first seen on a syscall (UDP, or TCP established before capture started). */
static __always_inline struct nt_conn *conn_first_sight(__u64 cookie, struct sock *sk, __u8 proto)
{
	struct nt_conn *e = conn_create(cookie, sk, NT_DIR_UNKNOWN);

	if (!e)
		return 0;
	set_owner_current(&e->rec);
	if (proto == IPPROTO_TCP)
		tcp_refresh(e, sk, NT_TX | NT_RX); /* baseline: counts from here on */
	e->flags |= NT_F_ESTABLISHED;
	emit_conn(e, NT_KIND_CONN_OPEN, NT_FLUSH_OPEN);
	return e;
}

static __always_inline void on_syscall(struct sock *sk, int ret, int is_send)
{
	__u64 cookie;
	struct nt_conn *e;
	__u16 proto;

	if (ret <= 0 || !inet_family(sk))
		return;
	proto = sk->sk_protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return;
	/* TCP receive counting happens in tcp_rcv_space_adjust (every read path calls it). */
	if (proto == IPPROTO_TCP && !is_send && !naive)
		return;
	cookie = sock_cookie(sk);
	if (naive) {
		emit_naive(cookie, ret, is_send);
		if (proto == IPPROTO_TCP && !is_send)
			return;
	}
	e = bpf_map_lookup_elem(&conns, &cookie);
	if (!e) {
		e = conn_first_sight(cookie, sk, proto);
		if (!e)
			return;
		if (proto == IPPROTO_TCP) {
			/* this call's bytes are already in write_seq: keep them */
			e->tx_seq_base -= ret;
		}
	} else if (!e->rec.pid) {
		set_owner_current(&e->rec); /* accepted before we knew the listener's owner */
	}
	if (e->flags & NT_F_CLOSED)
		return;
	if (proto == IPPROTO_TCP) {
		if (!(e->flags & NT_F_ESTABLISHED))
			return;
		tcp_refresh(e, sk, NT_TX);
	} else if (is_send) {
		__sync_fetch_and_add(&e->rec.tx_bytes, (__u64)ret);
	} else {
		__sync_fetch_and_add(&e->rec.rx_bytes, (__u64)ret);
	}
	maybe_flush(e);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(nt_send, struct sock *sk, int ret, int flags)
{
	on_syscall(sk, ret, 1);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(nt_recv, struct sock *sk, int ret, int flags)
{
	if (flags & MSG_PEEK)
		return 0;
	on_syscall(sk, ret, 0);
	return 0;
}

SEC("tp_btf/tcp_rcv_space_adjust")
int BPF_PROG(nt_tcp_rcv, struct sock *sk)
{
	__u64 cookie;
	struct nt_conn *e;

	if (!inet_family(sk) || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	cookie = sock_cookie(sk);
	e = bpf_map_lookup_elem(&conns, &cookie);
	if (!e) {
		int state = sk->__sk_common.skc_state;

		if (state != TCP_ESTABLISHED && state != TCP_CLOSE_WAIT)
			return 0;
		e = conn_first_sight(cookie, sk, IPPROTO_TCP);
		return 0;
	}
	if ((e->flags & (NT_F_CLOSED | NT_F_ESTABLISHED)) != NT_F_ESTABLISHED)
		return 0;
	tcp_refresh(e, sk, NT_RX);
	maybe_flush(e);
	return 0;
}

static __always_inline void fill_listen(struct nt_listen_record *r, const struct sock *sk, __u64 cookie)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);

	r->hdr.ts_ns = bpf_ktime_get_boot_ns();
	r->hdr.kind = NT_KIND_LISTEN;
	r->hdr.size_bytes = sizeof(*r);
	r->cookie = cookie;
	r->netns = BPF_CORE_READ(net, ns.inum);
	r->netns_cookie = BPF_CORE_READ(net, net_cookie);
	r->pid = bpf_get_current_pid_tgid() >> 32;
	r->uid = (__u32)bpf_get_current_uid_gid();
	r->backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
	r->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	r->protocol = (__u8)BPF_CORE_READ(sk, sk_protocol);
	r->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	__builtin_memset(r->addr, 0, sizeof(r->addr));
	if (r->family == AF_INET6)
		BPF_CORE_READ_INTO(&r->addr, sk, __sk_common.skc_v6_rcv_saddr);
	else
		BPF_CORE_READ_INTO((__u32 *)r->addr, sk, __sk_common.skc_rcv_saddr);
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	__builtin_memset(r->_pad, 0, sizeof(r->_pad));
}

static __always_inline void on_listen(const struct sock *sk, __u64 cookie)
{
	struct nt_listen_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	struct listener_key k = {};
	struct owner o = {};

	k.netns_cookie = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
	k.port = BPF_CORE_READ(sk, __sk_common.skc_num);
	o.pid = bpf_get_current_pid_tgid() >> 32;
	o.uid = (__u32)bpf_get_current_uid_gid();
	o.cgroup_id = bpf_get_current_cgroup_id();
	o.cookie = cookie;
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	bpf_map_update_elem(&listeners, &k, &o, BPF_ANY);
	if (!r) {
		stat_inc(NT_STAT_RINGBUF_DROPS);
		return;
	}
	fill_listen(r, sk, cookie);
	bpf_ringbuf_submit(r, 0);
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
		tcp_refresh(e, s, NT_TX | NT_RX); /* baseline */
		e->flags |= NT_F_ESTABLISHED;
		emit_conn(e, NT_KIND_CONN_OPEN, NT_FLUSH_OPEN);
		return 0;
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK:
		/* tcp_send_fin() follows this transition: count the data, then stop following write_seq */
		e = bpf_map_lookup_elem(&conns, &cookie);
		if (!e || (e->flags & (NT_F_CLOSED | NT_F_ESTABLISHED)) != NT_F_ESTABLISHED)
			return 0;
		tcp_refresh(e, s, NT_TX | NT_RX | NT_AT_FIN);
		e->flags |= NT_F_FIN_SENT;
		maybe_flush(e);
		return 0;
	case TCP_CLOSE:
		if (oldstate == TCP_LISTEN) {
			struct listener_key k = {};
			struct owner *o;

			k.netns_cookie = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
			k.port = BPF_CORE_READ(sk, __sk_common.skc_num);
			o = bpf_map_lookup_elem(&listeners, &k);
			if (o && o->cookie == cookie)
				bpf_map_delete_elem(&listeners, &k);
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
			tcp_refresh(e, s, NT_TX | NT_RX);
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
	tcp_refresh(e, sk, NT_TX | NT_RX);
	conn_close(e);
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
	if (e)
		conn_close(e);
	return 1;
}

/* A second listen() changes the backlog without a state change: catch it at the syscall. */
static __always_inline struct sock *fd_to_sock(long fd)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds;
	struct file *f = 0;
	struct socket *so;

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return 0;
	so = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(so, sk);
}

SEC("tracepoint/syscalls/sys_enter_listen")
int nt_listen_enter(struct trace_event_raw_sys_enter *ctx)
{
	struct sock *sk = fd_to_sock(ctx->args[0]);
	__u64 id = bpf_get_current_pid_tgid();
	__u64 v;

	if (!sk || BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN)
		return 0;
	v = (__u64)sk;
	bpf_map_update_elem(&relisten, &id, &v, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_listen")
int nt_listen_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *v = bpf_map_lookup_elem(&relisten, &id);
	struct nt_listen_record *r;
	struct sock *sk;
	__u64 cookie;

	if (!v)
		return 0;
	sk = (struct sock *)*v;
	bpf_map_delete_elem(&relisten, &id);
	if (ctx->ret != 0)
		return 0;
	/* classic tracepoints cannot call bpf_get_socket_cookie; the first listen generated it */
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		stat_inc(NT_STAT_RINGBUF_DROPS);
		return 0;
	}
	fill_listen(r, sk, cookie);
	bpf_ringbuf_submit(r, 0);
	return 0;
}

/* Per-interface wire counters: IP packets, headers included, one count per skb (as the interface's own stats). */
static __always_inline void iface_add(struct net_device *dev, __u64 bytes, int tx)
{
	struct nt_iface_key k = {};
	struct nt_iface_val *v;

	k.ifindex = dev->ifindex;
	k.netns = dev->nd_net.net->ns.inum;
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
	/* per-CPU values, and both hooks run with bottom halves disabled: nothing else updates this copy meanwhile */
	if (tx) {
		v->tx_bytes += bytes;
		v->tx_packets += 1;
	} else {
		v->rx_bytes += bytes;
		v->rx_packets += 1;
	}
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

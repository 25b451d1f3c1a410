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
#define EEXIST 17 /* errno.h, not includable with vmlinux.h */

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

/* The programs, one part per hook family (bpf/hooks/); the order matters: later parts use earlier ones' helpers. */
#include "hooks/transfer.h"
#include "hooks/listen.h"
#include "hooks/packet.h"
#include "hooks/lifecycle.h"
#include "hooks/iface.h"

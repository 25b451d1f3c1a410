/* SPDX-License-Identifier: GPL-2.0 */
/* Part of bpf/nettally.bpf.c, included there (not compiled alone; needs its maps and helpers): per-packet counting by the cgroup_skb hooks, and UDP datagrams a socket failed to queue. */
#pragma once

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

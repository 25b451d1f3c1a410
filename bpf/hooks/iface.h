/* SPDX-License-Identifier: GPL-2.0 */
/* Part of bpf/nettally.bpf.c, included there (not compiled alone; needs its maps and helpers): per-interface wire counters. */
#pragma once

/* Per-interface wire counters: IP packets, headers included, one count per skb (as the interface's own stats).
 * Two or three programs run per packet (five over loopback, with the packet hooks), so the counter update itself is
 * on the hot path: a per-CPU array of NT_IFACE_SLOTS slots, each owned by the first (netns, ifindex) that hashes to it,
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
	if (v) {
		iface_val_add(v, bytes, tx);
		return;
	}
	/* first packet of this interface on this CPU's hash: insert it with the packet already counted (a per-CPU hash
	 * insert sets this CPU's copy and zeroes the others), so creating costs one update, not update + lookup */
	struct nt_iface_val first = {};
	long err;

	iface_val_add(&first, bytes, tx);
	err = bpf_map_update_elem(&ifaces, &k, &first, BPF_NOEXIST);
	if (!err)
		return;
	/* -EEXIST: another CPU inserted the key meanwhile (its insert zeroed our copy, nothing of ours was in it yet) */
	v = err == -EEXIST ? bpf_map_lookup_elem(&ifaces, &k) : NULL;
	if (!v) {
		stat_inc(NT_STAT_IFACE_MAP_FULL);
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

/* Transmit: the skb's fields are read before the driver gets it, the result counted after it returned.
 * net:net_dev_xmit fires after ndo_start_xmit returned; on success the skb belongs to the driver, and on a real NIC
 * TX completion on another CPU may already have freed (and reused) it: only the tracepoint's own arguments (dev, rc,
 * skb_len) are safe there. So nt_if_tx_start (net:net_dev_start_xmit, right before the driver call, same function
 * xmit_one(), always paired with net_dev_xmit on this CPU with bottom halves disabled) stashes what nt_if_tx needs: the
 * skb pointer, as a value to compare, never dereferenced, whether it is an IP packet, and its link-layer header length
 * (skb_len, the length at the driver call, is an argument of net_dev_xmit). A stacked device
 * (bridge, vlan, tunnel) transmits the same skb on its lower device from inside its own driver call, so the stash is
 * a stack: start pushes, xmit pops, in nesting order. rc != 0 (NETDEV_TX_BUSY requeues the skb and transmits it again
 * later with a new start; a drop is not a transmit) pops without counting. */
#define NT_XMIT_DEPTH 8 /* the kernel's XMIT_RECURSION_LIMIT: deeper nesting is dropped by the kernel itself */
struct nt_xmit_frame {
	__u64 skb;
	__u32 l2; /* link-layer header length */
	__u32 is_ip;
};
struct nt_xmit_stack {
	__u32 depth;
	__u32 _pad;
	struct nt_xmit_frame f[NT_XMIT_DEPTH];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nt_xmit_stack);
} xmit_stack SEC(".maps");

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(nt_if_tx_start, struct sk_buff *skb, struct net_device *dev)
{
	struct nt_xmit_stack *st;
	__u32 zero = 0, d, l2 = 0, ip = is_ip(skb);
	__u16 mac, nh;

	st = bpf_map_lookup_elem(&xmit_stack, &zero);
	if (!st)
		return 0;
	if (ip) {
		/* skb->len includes the link-layer header: measured between the header offsets from skb->head */
		mac = skb->mac_header;
		nh = skb->network_header;
		if (mac != (__u16)~0U && nh > mac)
			l2 = nh - mac;
	}
	/* a start whose xmit never ran (only while the programs are being attached or detached) leaves a frame behind:
	 * harmless below the limit, and a full stack starts over rather than refusing every later packet */
	d = st->depth;
	if (d >= NT_XMIT_DEPTH)
		d = 0;
	st->f[d].skb = (__u64)skb;
	st->f[d].l2 = l2;
	st->f[d].is_ip = ip;
	st->depth = d + 1;
	return 0;
}

SEC("tp_btf/net_dev_xmit")
int BPF_PROG(nt_if_tx, struct sk_buff *skb, int rc, struct net_device *dev, unsigned int skb_len)
{
	struct nt_xmit_stack *st;
	__u32 zero = 0, d, l2;

	st = bpf_map_lookup_elem(&xmit_stack, &zero);
	if (!st)
		return 0;
	d = st->depth - 1;
	/* the pointer compared, not dereferenced. Paired start/xmit always find their frame on top; a mismatch (or an
	 * empty stack) is an xmit whose start ran before the programs were attached: leave the stack as it is */
	if (d >= NT_XMIT_DEPTH || st->f[d].skb != (__u64)skb)
		return 0;
	st->depth = d;
	if (rc != 0 || !dev)
		return 0;
	if (!st->f[d].is_ip)
		return 0;
	l2 = st->f[d].l2;
	iface_add(dev, l2 > skb_len ? skb_len : skb_len - l2, 1);
	return 0;
}

/* SPDX-License-Identifier: GPL-2.0 */
/* Part of bpf/nettally.bpf.c, included there (not compiled alone; needs its maps and helpers): per-interface wire counters. */
#pragma once

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

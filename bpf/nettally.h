/* nettally kernel records and map layouts: the one C definition, shared by bpf/ and native/.
 * producer/layout.generated.ts is generated from this file (node scripts/gen-records.js) and producer/records.ts decodes
 * by it; scripts/build.sh fails while that file is stale or this header disagrees with the compiled object's BTF. */
#ifndef NETTALLY_H
#define NETTALLY_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Record kinds (record header `kind`). */
#define NT_KIND_CONN_OPEN 1   /* connection established (or first seen) */
#define NT_KIND_CONN_SAMPLE 2 /* periodic/threshold flush of cumulative counters */
#define NT_KIND_CONN_CLOSE 3  /* final counters */
#define NT_KIND_LISTEN 4      /* listen() (first, or a later one changing the backlog) */
#define NT_KIND_IFACE 5       /* built in user space from the iface map, never in the ring buffer */
#define NT_KIND_NAIVE 6       /* benchmark-only naive mode: one record per send/recv syscall */

/* flush_reason */
#define NT_FLUSH_OPEN 1
#define NT_FLUSH_INTERVAL 2
#define NT_FLUSH_THRESHOLD 3
#define NT_FLUSH_CLOSE 4
#define NT_FLUSH_SNAPSHOT 5 /* user space only */

/* direction */
#define NT_DIR_UNKNOWN 0
#define NT_DIR_OUTBOUND 1 /* connect() */
#define NT_DIR_INBOUND 2  /* accept() */

/* nt_conn.flags */
#define NT_F_ESTABLISHED 0x01   /* OPEN emitted or attempted; before this an outbound TCP entry is only "connecting" */
#define NT_F_FIN_SENT 0x02      /* FIN queued: write_seq no longer moves with application data */
#define NT_F_CLOSED 0x04        /* socket gone; counters final; user space forgets the entry */
#define NT_F_CLOSE_EMITTED 0x08 /* the CONN_CLOSE record made it into the ring buffer */
#define NT_F_TCP_SEQ 0x10       /* tx_seq_base/rx_seq_base are valid */

/* Stats array indexes (per-CPU u64, summed by user space). */
#define NT_STAT_RINGBUF_DROPS 0
#define NT_STAT_CONN_MAP_FULL 1
#define NT_STAT_IFACE_MAP_FULL 2
#define NT_STAT_MAX 4

/* Every ring-buffer record starts with this. */
struct nt_hdr {
	__u64 ts_ns;      /* CLOCK_BOOTTIME when emitted */
	__u32 kind;       /* NT_KIND_* */
	__u32 size_bytes; /* sizeof the whole record */
};

/* Kinds 1-3 (ring buffer), and the user-space snapshot of a map entry. 144 bytes. */
struct nt_conn_record {
	struct nt_hdr hdr;    /*   0 */
	__u64 cookie;         /*  16 socket cookie */
	__u64 start_ns;       /*  24 CLOCK_BOOTTIME when established/first seen */
	__u64 tx_bytes;       /*  32 cumulative payload bytes sent */
	__u64 rx_bytes;       /*  40 cumulative payload bytes received */
	__u64 cgroup_id;      /*  48 */
	__u64 netns_cookie;   /*  56 */
	__u32 retransmits;    /*  64 cumulative retransmitted segments (TCP) */
	__u32 netns;          /*  68 netns inode */
	__u32 pid;            /*  72 tgid of the owner */
	__u32 uid;            /*  76 */
	__u8 saddr[16];       /*  80 IPv4 in the first 4 bytes */
	__u8 daddr[16];       /*  96 */
	__u16 sport;          /* 112 host order */
	__u16 dport;          /* 114 host order */
	__u16 family;         /* 116 AF_INET=2 / AF_INET6=10 */
	__u8 protocol;        /* 118 6 TCP / 17 UDP */
	__u8 direction;       /* 119 NT_DIR_* */
	char comm[16];        /* 120 */
	__u8 flush_reason;    /* 136 NT_FLUSH_* */
	__u8 _pad[7];         /* 137 */
};

/* Kind 4. 88 bytes. */
struct nt_listen_record {
	struct nt_hdr hdr;    /*  0 */
	__u64 cookie;         /* 16 */
	__u64 netns_cookie;   /* 24 */
	__u32 netns;          /* 32 */
	__u32 pid;            /* 36 */
	__u32 backlog;        /* 40 */
	__u32 uid;            /* 44 */
	__u8 addr[16];        /* 48 */
	__u16 port;           /* 64 host order */
	__u16 family;         /* 66 */
	__u8 protocol;        /* 68 */
	__u8 _pad[3];         /* 69 */
	char comm[16];        /* 72 */
};

/* Value of the `conns` hash map (key: __u64 cookie). The record fields plus flush state. 192 bytes. */
struct nt_conn {
	struct nt_conn_record rec; /*   0 hdr.ts_ns = last update, hdr.kind unused */
	__u64 flushed_tx;          /* 144 counters carried by the last record that made it into the ring buffer */
	__u64 flushed_rx;          /* 152 */
	__u64 dirty_since;         /* 160 jiffies (ns if CONFIG_HZ is unknown) when the counters first differed from flushed_*; 0 = clean */
	__u64 closed_ns;           /* 168 CLOCK_BOOTTIME at close */
	__u32 tx_seq_base;         /* 176 TCP write_seq at tx_bytes == 0: (u32)(tx_seq_base + tx_bytes) is the last write_seq counted */
	__u32 rx_seq_base;         /* 180 TCP copied_seq at rx_bytes == 0 */
	__u32 flags;               /* 184 NT_F_* */
	__u32 _pad;                /* 188 */
};

/* Key of the `ifaces` per-CPU hash map. */
struct nt_iface_key {
	__u32 netns;
	__u32 ifindex;
};

/* Value of the `ifaces` map: wire bytes (IP packets incl. headers) and packets. */
struct nt_iface_val {
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 tx_bytes;
	__u64 tx_packets;
};

/* Packed per (netns, ifindex) sum handed to user space by the addon; also the value of the `iface_slots` per-CPU
 * array (key 0 = a free slot). 40 bytes. */
#define NT_IFACE_SLOTS_SHIFT 6
#define NT_IFACE_SLOTS (1 << NT_IFACE_SLOTS_SHIFT)
struct nt_iface_entry {
	struct nt_iface_key key; /*  0 */
	struct nt_iface_val val; /*  8 */
};

/* Written by the refresh iterator into its output for a TCP socket that has no cookie yet (it predates the capture
 * and saw no packet since): user space generates the cookie through the holder's fd (SO_COOKIE) and runs the
 * iterator again. 8 bytes. */
struct nt_refresh_miss {
	__u32 pid; /* thread-group id holding the socket */
	__u32 fd;
};

/* Kind 6, benchmark-only naive mode (bench/capture.ts): one record per send/recv syscall, counted by user space,
 * never shipped. Last, apart from the records nettally ships. 32 bytes. */
struct nt_naive_record {
	struct nt_hdr hdr; /*  0 */
	__u64 cookie;      /* 16 */
	__u32 bytes;       /* 24 */
	__u32 is_send;     /* 28 */
};

#ifdef __cplusplus
#define NT_STATIC_ASSERT static_assert
#else
#define NT_STATIC_ASSERT _Static_assert
#endif
#define NT_ASSERT_OFF(t, f, o) NT_STATIC_ASSERT(__builtin_offsetof(struct t, f) == (o), #t "." #f " offset")
NT_STATIC_ASSERT(sizeof(struct nt_conn_record) == 144, "nt_conn_record size");
NT_STATIC_ASSERT(sizeof(struct nt_listen_record) == 88, "nt_listen_record size");
NT_STATIC_ASSERT(sizeof(struct nt_naive_record) == 32, "nt_naive_record size");
NT_STATIC_ASSERT(sizeof(struct nt_conn) == 192, "nt_conn size");
NT_STATIC_ASSERT(sizeof(struct nt_iface_entry) == 40, "nt_iface_entry size");
NT_STATIC_ASSERT(sizeof(struct nt_refresh_miss) == 8, "nt_refresh_miss size");
NT_ASSERT_OFF(nt_conn_record, comm, 120);
NT_ASSERT_OFF(nt_conn_record, flush_reason, 136);
NT_ASSERT_OFF(nt_listen_record, comm, 72);
NT_ASSERT_OFF(nt_conn, flags, 184);

#endif /* NETTALLY_H */

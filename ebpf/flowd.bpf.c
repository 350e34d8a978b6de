// SPDX-License-Identifier: GPL-2.0
/* flowd.bpf.c: TC egress classifiers that mark packets with the Scitags experiment and
 * activity.
 *
 * Both parse Ethernet, up to two 802.1Q/802.1ad tags, then IPv6 whose next header is
 * TCP or UDP directly (packets with extension headers already present are left alone),
 * build the full 5-tuple key and look it up in FLOWD_FLOWS. On a miss, a TCP packet
 * gets the default of FLOWD_CONFIG when one is set (match-all, the perfsonar plugin);
 * otherwise it passes unmarked.
 *
 * - flowd_mark rewrites only the 20 flow-label bits of IPv6 word 0 (version and Traffic
 *   Class, ECN included, are kept). IPv6 has no header checksum and the label is not in
 *   the TCP/UDP pseudo-header, so no checksum changes. A default label gets five
 *   entropy bits from a hash of the 5-tuple: the same for every packet of a flow, spread
 *   over flows (ECMP).
 * - flowd_mark_eh inserts an 8-byte Hop-by-Hop or Destination Options header (or both,
 *   16 bytes) right after the IPv6 header, carrying option 0x1E with the tag
 *   exp<<8 | act exactly as flowd-go writes it, and fixes next header and payload
 *   length. A packet that would exceed the MTU passes unchanged (counted). Untagged
 *   frames grow with bpf_skb_adjust_room (which also lowers the MSS of GSO packets so
 *   that every segment still fits); frames with VLAN tags in their data (which
 *   bpf_skb_adjust_room refuses) grow at the head and get their headers moved.
 *
 * Both always return TC_ACT_OK: the marker never drops a packet. Failures leave the
 * packet as it was and are counted in FLOWD_STATS.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "flowd.h"

#define IPV6_HLEN 40
#define ETH_HLEN_ 14
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ETH_P_IPV6_ 0x86DD
#define NEXTHDR_HOP 0
#define NEXTHDR_TCP 6
#define NEXTHDR_UDP 17
#define NEXTHDR_DEST 60
#define ENTROPY_MASK 0xC0103

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* replaced by the loader (EBPF_MAP_SIZE) */
	__type(key, struct flowd_key);
	__type(value, struct flowd_value);
} FLOWD_FLOWS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOWD_STATS_SLOTS);
	__type(key, __u32);
	__type(value, struct flowd_stats);
} FLOWD_STATS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flowd_config);
} FLOWD_CONFIG SEC(".maps");

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

/* What parse() found: the IPv6 header at data + off (off is 14, 18 or 22). */
struct parsed {
	__u32 off;
	struct flowd_stats *st;
};

static __always_inline struct flowd_stats *stats_of(struct __sk_buff *skb)
{
	__u32 slot = skb->ifindex < FLOWD_STATS_SLOTS ? skb->ifindex : 0;
	return bpf_map_lookup_elem(&FLOWD_STATS, &slot);
}

/* Finds an IPv6 TCP/UDP packet and fills its key. Returns 0 when there is nothing to
 * mark. Counts every IPv6 packet in seen. */
static __always_inline int parse(struct __sk_buff *skb, struct flowd_key *key, struct parsed *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return 0;
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		struct vlan_tag *tag = data + off;
		if ((void *)(tag + 1) > data_end)
			return 0;
		proto = tag->proto;
		off += sizeof(*tag);
	}
	if (proto != bpf_htons(ETH_P_IPV6_))
		return 0;

	/* IPv6 header plus the 4 port bytes of TCP/UDP. */
	__u8 *ip6 = data + off;
	if ((void *)(ip6 + IPV6_HLEN + 4) > data_end) {
		/* Count the IPv6 packet even when it is too short to mark. */
		if ((void *)(ip6 + 1) <= data_end && (ip6[0] >> 4) == 6) {
			struct flowd_stats *st = stats_of(skb);
			if (st)
				st->seen++;
		}
		return 0;
	}
	if ((ip6[0] >> 4) != 6)
		return 0;

	p->st = stats_of(skb);
	if (p->st)
		p->st->seen++;

	__u8 nexthdr = ip6[6];
	if (nexthdr != NEXTHDR_TCP && nexthdr != NEXTHDR_UDP)
		return 0;

	__builtin_memcpy(key->saddr, ip6 + 8, 16);
	__builtin_memcpy(key->daddr, ip6 + 24, 16);
	__builtin_memcpy(&key->sport, ip6 + IPV6_HLEN, 2);
	__builtin_memcpy(&key->dport, ip6 + IPV6_HLEN + 2, 2);
	key->proto = nexthdr;
	p->off = off;
	return 1;
}

static __always_inline struct flowd_config *config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&FLOWD_CONFIG, &zero);
}

/* The mark of the flow: its flow-map value, else (TCP only) the default. Returns 0 when
 * the packet is not to be marked; *by_default says where the mark came from. */
static __always_inline int mark_of(const struct flowd_key *key, const struct flowd_config *cfg, __u32 *mark, int *by_default)
{
	struct flowd_value *val = bpf_map_lookup_elem(&FLOWD_FLOWS, key);
	if (val) {
		*mark = val->label;
		*by_default = 0;
		return 1;
	}
	if (!cfg || !(cfg->flags & FLOWD_CONFIG_DEFAULT) || key->proto != NEXTHDR_TCP)
		return 0;
	*mark = cfg->default_mark;
	*by_default = 1;
	return 1;
}

/* A hash of the 5-tuple (10 words of the key; FNV-1a over words, then the murmur3
 * finaliser so every output bit depends on every input bit). Stable for the life of a
 * flow, unlike skb->hash, which the kernel re-draws after a retransmission timeout. */
static __always_inline __u32 flow_hash(const struct flowd_key *key)
{
	const __u32 *w = (const __u32 *)key;
	__u32 h = 0x811C9DC5;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*key) / 4); i++) {
		h ^= w[i];
		h *= 0x01000193;
	}
	h ^= h >> 16;
	h *= 0x85EBCA6B;
	h ^= h >> 13;
	h *= 0xC2B2AE35;
	h ^= h >> 16;
	return h;
}

SEC("classifier")
int flowd_mark(struct __sk_buff *skb)
{
	struct flowd_key key __attribute__((aligned(8))) = {};
	struct parsed p = {};
	__u32 label;
	int by_default;

	if (!parse(skb, &key, &p))
		return TC_ACT_OK;
	if (!mark_of(&key, config(), &label, &by_default))
		return TC_ACT_OK;
	if (by_default)
		label = (label & ~ENTROPY_MASK) | (flow_hash(&key) & ENTROPY_MASK);

	/* parse() checked these bytes; the verifier wants it seen here again. */
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *ip6 = data + (p.off & 0x1F);
	if ((void *)(ip6 + IPV6_HLEN) > data_end)
		return TC_ACT_OK;

	/* Word 0 is | version(4) | traffic class(8) | label(20) |: the label is the low
	 * nibble of byte 1 and bytes 2-3. Byte-wise writes keep the header alignment-free
	 * (it sits at offset 14, 18 or 22) and leave every Traffic Class bit alone. */
	ip6[1] = (ip6[1] & 0xF0) | ((label >> 16) & 0x0F);
	ip6[2] = (label >> 8) & 0xFF;
	ip6[3] = label & 0xFF;
	if (p.st) {
		p.st->marked++;
		if (by_default)
			p.st->by_default++;
	}
	return TC_ACT_OK;
}

/* One 8-byte options header carrying the tag, as flowd-go writes it. */
static __always_inline void option_header(__u8 *h, __u8 next, __u32 tag)
{
	h[0] = next;
	h[1] = 0; /* length in 8-octet units beyond the first 8 */
	h[2] = FLOWD_OPT_TYPE;
	h[3] = FLOWD_OPT_LEN;
	h[4] = (tag >> 16) & 0xFF;
	h[5] = (tag >> 8) & 0xFF;
	h[6] = tag & 0xFF;
	h[7] = 0; /* Pad1 */
}

/* The LEN bytes to insert and the IPv6 next header that announces them. */
static __always_inline __u8 build_eh(__u8 *eh, __u32 marking, __u8 nexthdr, __u32 tag)
{
	if (marking == FLOWD_MARK_HOP_BY_HOP_DESTINATION) {
		option_header(eh, NEXTHDR_DEST, tag);
		option_header(eh + 8, nexthdr, tag);
		return NEXTHDR_HOP;
	}
	option_header(eh, nexthdr, tag);
	return marking == FLOWD_MARK_HOP_BY_HOP ? NEXTHDR_HOP : NEXTHDR_DEST;
}

/* Untagged frame of an IPv6 skb: the kernel makes room after the IPv6 header (and, for
 * a GSO packet, lowers gso_size by LEN so every segment keeps fitting the MTU). */
static __always_inline int insert_plain(struct __sk_buff *skb, const __u8 *eh, __u8 ip_next, __u16 plen, const __u32 LEN)
{
	if (bpf_skb_adjust_room(skb, LEN, BPF_ADJ_ROOM_NET, 0))
		return -1;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u8 *ip6 = data + ETH_HLEN_;
	if ((void *)(ip6 + IPV6_HLEN + LEN) > data_end) {
		/* Cannot happen (the room is in the linear part); undo, never send half a header. */
		bpf_skb_adjust_room(skb, -(__s32)LEN, BPF_ADJ_ROOM_NET, 0);
		return -1;
	}
	ip6[4] = plen >> 8;
	ip6[5] = plen & 0xFF;
	ip6[6] = ip_next;
#pragma unroll
	for (__u32 i = 0; i < LEN; i++)
		ip6[IPV6_HLEN + i] = eh[i];
	return 0;
}

/* VLAN tags in the frame's data (QinQ inner tag, reorder_hdr off): skb->protocol is the
 * tag's TPID, which bpf_skb_adjust_room refuses. Grow the head by LEN and write the L2
 * and IPv6 headers LEN bytes further forward, followed by the new header; the TCP/UDP
 * header and payload stay where they are. Only for linear-header, non-GSO skbs (GSO
 * would need the lower MSS that only bpf_skb_adjust_room sets). */
static __always_inline int insert_tagged(struct __sk_buff *skb, const __u8 *eh, __u8 ip_next, __u16 plen, const __u32 OFF, const __u32 LEN)
{
	__u8 buf[22 + IPV6_HLEN + 16];

	if (bpf_skb_load_bytes(skb, 0, buf, OFF + IPV6_HLEN))
		return -1;
	buf[OFF + 4] = plen >> 8;
	buf[OFF + 5] = plen & 0xFF;
	buf[OFF + 6] = ip_next;
#pragma unroll
	for (__u32 i = 0; i < LEN; i++)
		buf[OFF + IPV6_HLEN + i] = eh[i];
	if (bpf_skb_change_head(skb, LEN, 0))
		return -1;
	/* The head is private and linear now: this store cannot fail. */
	bpf_skb_store_bytes(skb, 0, buf, OFF + IPV6_HLEN + LEN, 0);
	return 0;
}

SEC("classifier")
int flowd_mark_eh(struct __sk_buff *skb)
{
	struct flowd_key key __attribute__((aligned(8))) = {};
	struct parsed p = {};
	__u32 tag;
	int by_default;

	if (!parse(skb, &key, &p))
		return TC_ACT_OK;
	struct flowd_config *cfg = config();
	if (!cfg || !mark_of(&key, cfg, &tag, &by_default))
		return TC_ACT_OK;
	__u32 marking = cfg->marking;
	const __u32 len = marking == FLOWD_MARK_HOP_BY_HOP_DESTINATION ? 16 : 8;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = p.off;
	__u8 *ip6 = data + (off & 0x1F);
	if ((void *)(ip6 + IPV6_HLEN) > data_end)
		return TC_ACT_OK;
	__u32 plen = ((__u32)ip6[4] << 8) | ip6[5];
	__u8 nexthdr = ip6[6];

	/* Payload length 0 is a BIG TCP GSO packet: segmentation writes each length. */
	__u32 new_plen = plen ? plen + len : 0;
	/* The L3 length against the MTU: VLAN tags in the data do not count. */
	__u32 mtu_len = IPV6_HLEN + plen;
	long rc = bpf_check_mtu(skb, 0, &mtu_len, len, 0);
	if (rc > 0 || new_plen > 0xFFFF) {
		if (p.st)
			p.st->eh_too_big++;
		return TC_ACT_OK;
	}

	__u8 eh[16];
	__u8 ip_next = build_eh(eh, marking, nexthdr, tag);
	int err = -1; /* rc < 0 (no such device): not inserted */
	if (rc < 0) {
		err = -1;
	} else if (off == ETH_HLEN_ && skb->protocol == bpf_htons(ETH_P_IPV6_)) {
		if (len == 16)
			err = insert_plain(skb, eh, ip_next, new_plen, 16);
		else
			err = insert_plain(skb, eh, ip_next, new_plen, 8);
	} else if (off != ETH_HLEN_ && skb->protocol != bpf_htons(ETH_P_IPV6_) && skb->gso_size == 0) {
		if (off == 18 && len == 16)
			err = insert_tagged(skb, eh, ip_next, new_plen, 18, 16);
		else if (off == 18)
			err = insert_tagged(skb, eh, ip_next, new_plen, 18, 8);
		else if (len == 16)
			err = insert_tagged(skb, eh, ip_next, new_plen, 22, 16);
		else
			err = insert_tagged(skb, eh, ip_next, new_plen, 22, 8);
	}
	if (p.st) {
		if (err) {
			p.st->eh_failed++;
		} else {
			p.st->marked++;
			p.st->eh_inserted++;
			if (by_default)
				p.st->by_default++;
		}
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* flowd.bpf.c: TC egress classifier that writes the Scitags IPv6 flow label.
 *
 * For every egress frame: parse Ethernet, up to two 802.1Q/802.1ad tags, then IPv6
 * whose next header is TCP or UDP directly (extension headers: not marked). Build the
 * full 5-tuple key, look it up in FLOWD_FLOWS and, if found, rewrite only the 20
 * flow-label bits of IPv6 word 0 (version and Traffic Class, ECN included, are kept).
 * IPv6 needs no checksum fix: it has no header checksum and the label is not part of
 * the TCP/UDP pseudo-header. Always returns TC_ACT_OK: the marker never drops.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "flowd.h"

#define IPV6_HLEN 40
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ETH_P_IPV6_ 0x86DD
#define NEXTHDR_TCP 6
#define NEXTHDR_UDP 17

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

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

SEC("classifier")
int flowd_mark(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		struct vlan_tag *tag = data + off;
		if ((void *)(tag + 1) > data_end)
			return TC_ACT_OK;
		proto = tag->proto;
		off += sizeof(*tag);
	}
	if (proto != bpf_htons(ETH_P_IPV6_))
		return TC_ACT_OK;

	/* IPv6 header plus the 4 port bytes of TCP/UDP. off is 14, 18 or 22. */
	__u8 *ip6 = data + off;
	if ((void *)(ip6 + IPV6_HLEN + 4) > data_end) {
		/* Count the IPv6 packet even when it is too short to mark. */
		if ((void *)(ip6 + 1) <= data_end && (ip6[0] >> 4) == 6) {
			__u32 slot = skb->ifindex < FLOWD_STATS_SLOTS ? skb->ifindex : 0;
			struct flowd_stats *st = bpf_map_lookup_elem(&FLOWD_STATS, &slot);
			if (st)
				st->seen++;
		}
		return TC_ACT_OK;
	}
	if ((ip6[0] >> 4) != 6)
		return TC_ACT_OK;

	__u32 slot = skb->ifindex < FLOWD_STATS_SLOTS ? skb->ifindex : 0;
	struct flowd_stats *st = bpf_map_lookup_elem(&FLOWD_STATS, &slot);
	if (st)
		st->seen++;

	__u8 nexthdr = ip6[6];
	if (nexthdr != NEXTHDR_TCP && nexthdr != NEXTHDR_UDP)
		return TC_ACT_OK;

	struct flowd_key key = {};
	__builtin_memcpy(key.saddr, ip6 + 8, 16);
	__builtin_memcpy(key.daddr, ip6 + 24, 16);
	__builtin_memcpy(&key.sport, ip6 + IPV6_HLEN, 2);
	__builtin_memcpy(&key.dport, ip6 + IPV6_HLEN + 2, 2);
	key.proto = nexthdr;

	struct flowd_value *val = bpf_map_lookup_elem(&FLOWD_FLOWS, &key);
	if (!val)
		return TC_ACT_OK;

	/* Word 0 is | version(4) | traffic class(8) | label(20) |: the label is the low
	 * nibble of byte 1 and bytes 2-3. Byte-wise writes keep the header alignment-free
	 * (it sits at offset 14, 18 or 22) and leave every Traffic Class bit alone. */
	__u32 label = val->label;
	ip6[1] = (ip6[1] & 0xF0) | ((label >> 16) & 0x0F);
	ip6[2] = (label >> 8) & 0xFF;
	ip6[3] = label & 0xFF;
	if (st)
		st->marked++;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

/* flowd.h: the ABI shared by the eBPF marker (flowd.bpf.c) and its Rust loader
 * (src/backend/marker/abi.rs mirrors every struct here; a unit test checks sizes and
 * offsets). This file is the only definition: change both sides together.
 */
#ifndef FLOWD_H
#define FLOWD_H

#include <linux/types.h>

/* Map and program names the loader looks up. */
#define FLOWD_PROG_NAME "flowd_mark"
#define FLOWD_FLOWS_MAP "FLOWD_FLOWS"
#define FLOWD_STATS_MAP "FLOWD_STATS"

/* Per-interface counter slots: slot = ifindex when ifindex < FLOWD_STATS_SLOTS, else
 * slot 0 ("other"; ifindex 0 is never a real interface). */
#define FLOWD_STATS_SLOTS 1024

/* Flow-map key: the full 5-tuple of an OUTGOING packet.
 * Addresses and ports are in NETWORK byte order, copied as they appear in the packet.
 * proto is the IPv6 next header (6 TCP, 17 UDP). pad must be zero. 40 bytes. */
struct flowd_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* Flow-map value: the 20-bit flow label in HOST byte order (bits above 19 ignored). */
struct flowd_value {
	__u32 label;
};

/* Per-CPU counters of one slot. */
struct flowd_stats {
	__u64 seen;   /* IPv6 packets (skbs) that reached the classifier */
	__u64 marked; /* packets whose flow label was rewritten */
};

#endif

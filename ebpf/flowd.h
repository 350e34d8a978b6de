/* flowd.h: the ABI shared by the eBPF marker (flowd.bpf.c) and its Rust loader
 * (src/backend/marker/abi.rs mirrors every struct here; a unit test checks sizes and
 * offsets). This file is the only definition: change both sides together.
 */
#ifndef FLOWD_H
#define FLOWD_H

#include <linux/types.h>

/* Program and map names the loader looks up. Two classifiers share the maps; the
 * loader loads exactly one of them (EBPF_MARKING): flowd_mark writes the flow label and
 * needs nothing newer than the kernels of RHEL 8, flowd_mark_eh inserts an extension
 * header and needs bpf_check_mtu (kernel 5.12+). */
#define FLOWD_PROG_NAME "flowd_mark"
#define FLOWD_PROG_EH_NAME "flowd_mark_eh"
#define FLOWD_FLOWS_MAP "FLOWD_FLOWS"
#define FLOWD_STATS_MAP "FLOWD_STATS"
#define FLOWD_CONFIG_MAP "FLOWD_CONFIG"

/* Per-interface counter slots: slot = ifindex when ifindex < FLOWD_STATS_SLOTS, else
 * slot 0 ("other"; ifindex 0 is never a real interface). */
#define FLOWD_STATS_SLOTS 1024

/* struct flowd_config.marking (EBPF_MARKING). */
#define FLOWD_MARK_LABEL 0                  /* flow label (flowd_mark) */
#define FLOWD_MARK_HOP_BY_HOP 1             /* Hop-by-Hop Options header (flowd_mark_eh) */
#define FLOWD_MARK_DESTINATION 2            /* Destination Options header (flowd_mark_eh) */
#define FLOWD_MARK_HOP_BY_HOP_DESTINATION 3 /* both, 16 bytes (flowd_mark_eh) */

/* struct flowd_config.flags */
#define FLOWD_CONFIG_DEFAULT 1 /* default_mark is set: a TCP packet no flow claims gets it */

/* Extension-header option, written as flowd-go writes it: an 8-byte header
 * [next header][hdr ext len 0][type 0x1E][length 3][tag>>16][tag>>8][tag][Pad1],
 * tag = exp<<8 | act. Type 0x1E: skip if unknown, does not change en route, RFC 4727
 * experimental. */
#define FLOWD_OPT_TYPE 0x1E
#define FLOWD_OPT_LEN 3

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

/* Flow-map value, HOST byte order: the 20-bit flow label (bits above 19 ignored) with
 * FLOWD_MARK_LABEL, the extension-header tag exp<<8 | act (24 bits) otherwise. */
struct flowd_value {
	__u32 label;
};

/* The one entry (key 0) of FLOWD_CONFIG, written by the loader. */
struct flowd_config {
	__u32 marking;      /* FLOWD_MARK_* */
	__u32 flags;        /* FLOWD_CONFIG_* */
	__u32 default_mark; /* with FLOWD_CONFIG_DEFAULT: the label with its entropy bits
			     * zero (the program adds 5 bits from a hash of the 5-tuple), or
			     * the tag */
	__u32 pad;
};

/* Per-CPU counters of one slot. */
struct flowd_stats {
	__u64 seen;        /* IPv6 packets (skbs) that reached the classifier */
	__u64 marked;      /* packets whose flow label was rewritten or that got an
			    * extension header */
	__u64 by_default;  /* of marked: marked with the default (no flow-map entry) */
	__u64 eh_inserted; /* extension headers inserted (counted in marked too) */
	__u64 eh_too_big;  /* not inserted: the packet would exceed the MTU */
	__u64 eh_failed;   /* not inserted: the kernel could not make room (e.g. UDP GSO,
			    * VLAN tags in the data of a GSO packet) */
};

#endif

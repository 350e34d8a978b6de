//! `#[repr(C)]` mirrors of `ebpf/flowd.h` and the embedded eBPF object.
//!
//! Owns the ABI between the loader and the kernel program: struct layouts, map and
//! program names, and the `unsafe impl Pod` that lets aya copy these structs in and out
//! of maps. A unit test compiles `ebpf/flowd.h` with the C compiler and compares sizes,
//! offsets and names, so the two sides cannot drift apart silently.

use std::net::{IpAddr, Ipv6Addr};

use crate::flow::{FlowKey, Proto};

/// The compiled eBPF object (built by `build.rs` from `ebpf/flowd.bpf.c`).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowd.bpf.o"));

/// `FLOWD_PROG_NAME`: the classifier function, also the name of our tc filter.
pub const PROG_NAME: &str = "flowd_mark";
/// `FLOWD_FLOWS_MAP`: the LRU hash of flows to mark.
pub const FLOWS_MAP: &str = "FLOWD_FLOWS";
/// `FLOWD_STATS_MAP`: the per-CPU counter array.
pub const STATS_MAP: &str = "FLOWD_STATS";
/// `FLOWD_STATS_SLOTS`: counter slots (slot = ifindex below this, else 0).
pub const STATS_SLOTS: u32 = 1024;

/// `struct flowd_key`: the 5-tuple of an outgoing IPv6 packet. Addresses and ports are
/// in network byte order, exactly as in the packet; `pad` is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawKey {
    /// Source address (network order).
    pub saddr: [u8; 16],
    /// Destination address (network order).
    pub daddr: [u8; 16],
    /// Source port, network byte order (as `u16::to_be`).
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// IPv6 next header: 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// Explicit padding, always zero.
    pub pad: [u8; 3],
}

// SAFETY: repr(C), all fields are plain integers/byte arrays and the padding is explicit,
// so there are no uninitialised bytes and every bit pattern is a valid value.
unsafe impl aya::Pod for RawKey {}

impl RawKey {
    /// The key of packets sent from `src` to `dst` (IPv6 only).
    pub fn new(proto: Proto, src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> RawKey {
        RawKey { saddr: src.octets(), daddr: dst.octets(), sport: sport.to_be(), dport: dport.to_be(), proto: proto.number(), pad: [0; 3] }
    }

    /// The key of `key`'s packets as sent from `key.src` to `key.dst`; `None` for IPv4.
    pub fn from_flow(key: &FlowKey) -> Option<RawKey> {
        match (key.src.ip(), key.dst.ip()) {
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(RawKey::new(key.proto, s, key.src.port(), d, key.dst.port())),
            _ => None,
        }
    }
}

/// `struct flowd_value`: the 20-bit flow label, host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawValue {
    /// The flow label (bits 0..=19).
    pub label: u32,
}

// SAFETY: repr(C) with a single u32: no padding, every bit pattern valid.
unsafe impl aya::Pod for RawValue {}

/// `struct flowd_stats`: one CPU's counters of one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawStats {
    /// IPv6 packets (skbs) seen.
    pub seen: u64,
    /// Packets whose flow label was rewritten.
    pub marked: u64,
}

// SAFETY: repr(C) with two u64: no padding, every bit pattern valid.
unsafe impl aya::Pod for RawStats {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::process::Command;

    const PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include "flowd.h"
int main(void) {
    printf("key %zu %zu %zu %zu %zu %zu %zu\n", sizeof(struct flowd_key),
        offsetof(struct flowd_key, saddr), offsetof(struct flowd_key, daddr),
        offsetof(struct flowd_key, sport), offsetof(struct flowd_key, dport),
        offsetof(struct flowd_key, proto), offsetof(struct flowd_key, pad));
    printf("value %zu\n", sizeof(struct flowd_value));
    printf("stats %zu %zu %zu\n", sizeof(struct flowd_stats),
        offsetof(struct flowd_stats, seen), offsetof(struct flowd_stats, marked));
    printf("names %s %s %s %d\n", FLOWD_PROG_NAME, FLOWD_FLOWS_MAP, FLOWD_STATS_MAP, FLOWD_STATS_SLOTS);
    return 0;
}
"#;

    #[test]
    fn test_rust_layout() {
        assert_eq!(size_of::<RawKey>(), 40);
        assert_eq!(offset_of!(RawKey, sport), 32);
        assert_eq!(offset_of!(RawKey, proto), 36);
        assert_eq!(size_of::<RawValue>(), 4);
        assert_eq!(size_of::<RawStats>(), 16);
    }

    #[test]
    fn test_layout_matches_c_header() {
        let dir = std::env::temp_dir().join(format!("flowd-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("probe.c");
        let bin = dir.join("probe");
        std::fs::write(&src, PROBE).unwrap();
        let inc = concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let built = Command::new(&cc).arg(format!("-I{inc}")).arg(&src).arg("-o").arg(&bin).status();
        if !built.is_ok_and(|s| s.success()) {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("cannot compile the ABI probe with {cc}");
        }
        let out = Command::new(&bin).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8(out.stdout).unwrap();
        let want = format!(
            "key {} {} {} {} {} {} {}\nvalue {}\nstats {} {} {}\nnames {} {} {} {}\n",
            size_of::<RawKey>(),
            offset_of!(RawKey, saddr),
            offset_of!(RawKey, daddr),
            offset_of!(RawKey, sport),
            offset_of!(RawKey, dport),
            offset_of!(RawKey, proto),
            offset_of!(RawKey, pad),
            size_of::<RawValue>(),
            size_of::<RawStats>(),
            offset_of!(RawStats, seen),
            offset_of!(RawStats, marked),
            PROG_NAME,
            FLOWS_MAP,
            STATS_MAP,
            STATS_SLOTS,
        );
        assert_eq!(text, want);
    }

    #[test]
    fn test_key_is_network_order() {
        let k = RawKey::new(Proto::Udp, "2001:db8::1".parse().unwrap(), 0x1234, "2001:db8::2".parse().unwrap(), 80);
        // The fields in struct order (their offsets are checked against the C header above).
        let bytes = [&k.saddr[..], &k.daddr[..], &k.sport.to_ne_bytes(), &k.dport.to_ne_bytes(), &[k.proto], &k.pad].concat();
        assert_eq!(&bytes[32..37], &[0x12, 0x34, 0x00, 0x50, 17]);
        assert_eq!(bytes[15], 1);
        assert_eq!(bytes[31], 2);
    }
}

//! `#[repr(C)]` mirrors of `ebpf/flowd.h` and the embedded eBPF object.
//!
//! Owns the ABI between the loader and the kernel programs: struct layouts, map and
//! program names, constants, and the `unsafe impl Pod` that lets aya copy these structs
//! in and out of maps (plus the `struct __sk_buff` bytes `BPF_PROG_TEST_RUN` takes). A unit test compiles `ebpf/flowd.h` with the C compiler and compares sizes,
//! offsets and names, so the two sides cannot drift apart silently.

use std::net::{IpAddr, Ipv6Addr};

use crate::flow::{FlowKey, Proto};

/// The compiled eBPF object (built by `build.rs` from `ebpf/flowd.bpf.c`).
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowd.bpf.o"));

/// `FLOWD_PROG_NAME`: the flow-label classifier, also the name of its tc filter.
pub(crate) const PROG_NAME: &str = "flowd_mark";
/// `FLOWD_PROG_EH_NAME`: the extension-header classifier, also the name of its tc filter.
pub(crate) const PROG_EH_NAME: &str = "flowd_mark_eh";
/// `FLOWD_FLOWS_MAP`: the LRU hash of flows to mark.
pub(crate) const FLOWS_MAP: &str = "FLOWD_FLOWS";
/// `FLOWD_STATS_MAP`: the per-CPU counter array.
pub(crate) const STATS_MAP: &str = "FLOWD_STATS";
/// `FLOWD_CONFIG_MAP`: the one-entry array the loader writes the marking and the default into.
pub(crate) const CONFIG_MAP: &str = "FLOWD_CONFIG";
/// `FLOWD_STATS_SLOTS`: counter slots (slot = ifindex below this, else 0).
pub(crate) const STATS_SLOTS: u32 = 1024;
/// `FLOWD_MARK_LABEL` .. `FLOWD_MARK_HOP_BY_HOP_DESTINATION`: `flowd_config.marking`.
pub(crate) const MARK_LABEL: u32 = 0;
/// `FLOWD_MARK_HOP_BY_HOP`.
pub(crate) const MARK_HOP_BY_HOP: u32 = 1;
/// `FLOWD_MARK_DESTINATION`.
pub(crate) const MARK_DESTINATION: u32 = 2;
/// `FLOWD_MARK_HOP_BY_HOP_DESTINATION`.
pub(crate) const MARK_HOP_BY_HOP_DESTINATION: u32 = 3;
/// `FLOWD_CONFIG_DEFAULT`: `flowd_config.default_mark` is set (match-all).
pub(crate) const CONFIG_DEFAULT: u32 = 1;
/// `FLOWD_OPT_TYPE`: the IPv6 option type of the extension-header tag (flowd-go's).
pub const OPT_TYPE: u8 = 0x1E;
/// `FLOWD_OPT_LEN`: its data length (the 24-bit tag).
#[cfg(test)]
pub(crate) const OPT_LEN: u8 = 3;

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
    pub(crate) fn from_flow(key: &FlowKey) -> Option<RawKey> {
        match (key.src.ip(), key.dst.ip()) {
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(RawKey::new(key.proto, s, key.src.port(), d, key.dst.port())),
            _ => None,
        }
    }
}

/// `struct flowd_value`: the mark, host byte order: the 20-bit flow label with
/// `EBPF_MARKING='label'`, the extension-header tag `exp<<8 | act` otherwise.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawValue {
    /// The flow label (bits 0..=19) or the tag (bits 0..=23).
    pub label: u32,
}

// SAFETY: repr(C) with a single u32: no padding, every bit pattern valid.
unsafe impl aya::Pod for RawValue {}

/// `struct flowd_config`: the one entry of `FLOWD_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawConfig {
    /// `MARK_*`.
    pub marking: u32,
    /// `CONFIG_DEFAULT` or 0.
    pub flags: u32,
    /// The default: a label with its entropy bits zero, or a tag.
    pub default_mark: u32,
    /// Explicit padding, always zero.
    pub pad: u32,
}

// SAFETY: repr(C) with four u32: no padding, every bit pattern valid.
unsafe impl aya::Pod for RawConfig {}

/// `struct flowd_stats`: one CPU's counters of one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawStats {
    /// IPv6 packets (skbs) seen.
    pub seen: u64,
    /// Packets whose flow label was rewritten or that got an extension header.
    pub marked: u64,
    /// Of `marked`: marked with the default (match-all), no flow-map entry.
    pub by_default: u64,
    /// Extension headers inserted.
    pub eh_inserted: u64,
    /// Extension headers not inserted: the packet would exceed the MTU.
    pub eh_too_big: u64,
    /// Extension headers not inserted: the kernel could not make room.
    pub eh_failed: u64,
}

// SAFETY: repr(C) with six u64: no padding, every bit pattern valid.
unsafe impl aya::Pod for RawStats {}

/// `struct __sk_buff` as `BPF_PROG_TEST_RUN` takes it for context input (the fields it
/// accepts; the rest must be zero). Offsets are checked against `<linux/bpf.h>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestCtx {
    /// `ifindex`: the device the skb is sent on (0 = loopback), e.g. for its MTU.
    pub ifindex: u32,
    /// `gso_size`: non-zero makes the skb a GSO packet (of no GSO type).
    pub gso_size: u32,
    /// `gso_segs`.
    pub gso_segs: u32,
}

/// `sizeof(struct __sk_buff)` and the offsets of the fields of [`TestCtx`].
pub(crate) const SKB_CTX_LEN: usize = 192;
const SKB_IFINDEX: usize = 40;
const SKB_GSO_SEGS: usize = 164;
const SKB_GSO_SIZE: usize = 176;

impl TestCtx {
    /// The `struct __sk_buff` bytes.
    pub(crate) fn bytes(&self) -> [u8; SKB_CTX_LEN] {
        let mut b = [0u8; SKB_CTX_LEN];
        b[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[SKB_GSO_SEGS..SKB_GSO_SEGS + 4].copy_from_slice(&self.gso_segs.to_ne_bytes());
        b[SKB_GSO_SIZE..SKB_GSO_SIZE + 4].copy_from_slice(&self.gso_size.to_ne_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::process::Command;

    const PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/bpf.h>
#include "flowd.h"
int main(void) {
    printf("key %zu %zu %zu %zu %zu %zu %zu\n", sizeof(struct flowd_key),
        offsetof(struct flowd_key, saddr), offsetof(struct flowd_key, daddr),
        offsetof(struct flowd_key, sport), offsetof(struct flowd_key, dport),
        offsetof(struct flowd_key, proto), offsetof(struct flowd_key, pad));
    printf("value %zu\n", sizeof(struct flowd_value));
    printf("stats %zu %zu %zu %zu %zu %zu %zu\n", sizeof(struct flowd_stats),
        offsetof(struct flowd_stats, seen), offsetof(struct flowd_stats, marked),
        offsetof(struct flowd_stats, by_default), offsetof(struct flowd_stats, eh_inserted),
        offsetof(struct flowd_stats, eh_too_big), offsetof(struct flowd_stats, eh_failed));
    printf("config %zu %zu %zu %zu %zu\n", sizeof(struct flowd_config),
        offsetof(struct flowd_config, marking), offsetof(struct flowd_config, flags),
        offsetof(struct flowd_config, default_mark), offsetof(struct flowd_config, pad));
    printf("names %s %s %s %s %s %d\n", FLOWD_PROG_NAME, FLOWD_PROG_EH_NAME, FLOWD_FLOWS_MAP,
        FLOWD_STATS_MAP, FLOWD_CONFIG_MAP, FLOWD_STATS_SLOTS);
    printf("consts %d %d %d %d %d %d %d\n", FLOWD_MARK_LABEL, FLOWD_MARK_HOP_BY_HOP,
        FLOWD_MARK_DESTINATION, FLOWD_MARK_HOP_BY_HOP_DESTINATION, FLOWD_CONFIG_DEFAULT,
        FLOWD_OPT_TYPE, FLOWD_OPT_LEN);
    printf("skb %zu %zu %zu %zu\n", sizeof(struct __sk_buff), offsetof(struct __sk_buff, ifindex),
        offsetof(struct __sk_buff, gso_segs), offsetof(struct __sk_buff, gso_size));
    return 0;
}
"#;

    #[test]
    fn test_rust_layout() {
        assert_eq!(size_of::<RawKey>(), 40);
        assert_eq!(offset_of!(RawKey, sport), 32);
        assert_eq!(offset_of!(RawKey, proto), 36);
        assert_eq!(size_of::<RawValue>(), 4);
        assert_eq!(size_of::<RawStats>(), 48);
        assert_eq!(size_of::<RawConfig>(), 16);
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
            "key {} {} {} {} {} {} {}\nvalue {}\nstats {} {} {} {} {} {} {}\nconfig {} {} {} {} {}\nnames {} {} {} {} {} {}\nconsts {} {} {} {} {} {} {}\nskb {} {} {} {}\n",
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
            offset_of!(RawStats, by_default),
            offset_of!(RawStats, eh_inserted),
            offset_of!(RawStats, eh_too_big),
            offset_of!(RawStats, eh_failed),
            size_of::<RawConfig>(),
            offset_of!(RawConfig, marking),
            offset_of!(RawConfig, flags),
            offset_of!(RawConfig, default_mark),
            offset_of!(RawConfig, pad),
            PROG_NAME,
            PROG_EH_NAME,
            FLOWS_MAP,
            STATS_MAP,
            CONFIG_MAP,
            STATS_SLOTS,
            MARK_LABEL,
            MARK_HOP_BY_HOP,
            MARK_DESTINATION,
            MARK_HOP_BY_HOP_DESTINATION,
            CONFIG_DEFAULT,
            OPT_TYPE,
            OPT_LEN,
            SKB_CTX_LEN,
            SKB_IFINDEX,
            SKB_GSO_SEGS,
            SKB_GSO_SIZE,
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

//! Privileged tests of the eBPF marker: `BPF_PROG_TEST_RUN` of the classifier on crafted
//! frames (this file) and end-to-end marking between two network namespaces (`netns.rs`).
//!
//! They need root and a kernel with BPF; otherwise each test prints `SKIP: <reason>` and
//! passes. Any other failure is a real failure.

#![cfg(feature = "ebpf")]

mod netns;
mod testrun;

use std::net::Ipv6Addr;

use flowd::backend::marker::{MarkerProgram, Marking, ProgramLoadError, RawKey};
use flowd::flow::Proto;
use flowd::label;

/// Why privileged tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (privileged eBPF tests need CAP_BPF/CAP_NET_ADMIN)".into());
    }
    None
}

/// True when the marker program can be loaded here; otherwise prints `SKIP: reason`.
pub fn can_load_marker() -> bool {
    match load_program(16) {
        Ok(_) => true,
        Err(r) => {
            crate::util::skip(&r);
            false
        }
    }
}

/// Loads the marker program, or returns the SKIP reason when the kernel lacks BPF.
pub fn load_program(map_size: u32) -> Result<MarkerProgram, String> {
    if let Some(r) = skip_reason() {
        return Err(r);
    }
    match MarkerProgram::load(map_size) {
        Ok(p) => Ok(p),
        Err(e) => {
            let mut chain = format!("{e}");
            let mut src = std::error::Error::source(&e);
            let mut os = None;
            while let Some(s) = src {
                chain.push_str(&format!(": {s}"));
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    os = os.or(io.raw_os_error());
                }
                src = s.source();
            }
            let lacks_bpf =
                matches!(os, Some(libc::ENOSYS | libc::EPERM)) || chain.contains("Operation not permitted") || chain.contains("Function not implemented");
            if lacks_bpf && !matches!(e, ProgramLoadError::Missing { .. }) {
                Err(format!("kernel lacks BPF for us: {chain}"))
            } else {
                panic!("cannot load the marker program: {chain}");
            }
        }
    }
}

/// Runs `$body` with a loaded program, or prints SKIP and returns.
macro_rules! with_program {
    ($p:ident, $body:block) => {
        let mut $p = match load_program(1024) {
            Ok(p) => p,
            Err(reason) => {
                crate::util::skip(&reason);
                return;
            }
        };
        $body
    };
}

pub const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88A8;

/// A crafted IPv6 frame.
#[derive(Clone)]
struct Frame {
    vlans: Vec<u16>,
    tc: u8,
    label: u32,
    nexthdr: u8,
    hop_by_hop: bool,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    /// Payload bytes after the 10 of `scitags!!!`.
    pad: usize,
}

impl Frame {
    fn tcp() -> Frame {
        Frame {
            vlans: Vec::new(),
            // DSCP 46 (EF) + ECN CE: every Traffic Class bit must survive.
            tc: 0xBB,
            label: 0x5A5A5,
            nexthdr: 6,
            hop_by_hop: false,
            src: SRC,
            dst: DST,
            sport: 1094,
            dport: 53012,
            pad: 0,
        }
    }

    fn key(&self) -> RawKey {
        let proto = if self.nexthdr == 17 { Proto::Udp } else { Proto::Tcp };
        RawKey::new(proto, self.src, self.sport, self.dst, self.dport)
    }

    /// Offset of the IPv6 header.
    fn ip_off(&self) -> usize {
        14 + 4 * self.vlans.len()
    }

    fn bytes(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        for tpid in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x2A]); // TCI: VLAN 42
        }
        f.extend_from_slice(&0x86DDu16.to_be_bytes());
        let mut l4 = Vec::new();
        if self.hop_by_hop {
            // next header, length 0 (8 bytes), PadN option of 4 bytes.
            l4.extend_from_slice(&[self.nexthdr, 0, 1, 4, 0, 0, 0, 0]);
        }
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.nexthdr == 17 {
            l4.extend_from_slice(&[0, 18, 0xAB, 0xCD]); // UDP length, checksum
        } else {
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xFF, 0xFF, 0x12, 0x34, 0, 0]);
        }
        l4.extend_from_slice(b"scitags!!!");
        l4.resize(l4.len() + self.pad, 0x5A);
        let word0 = label::ipv6_word0(self.label, self.tc);
        f.extend_from_slice(&word0.to_be_bytes());
        f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        f.push(if self.hop_by_hop { 0 } else { self.nexthdr });
        f.push(64);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.extend_from_slice(&l4);
        f
    }

    /// The frame as the marker must emit it with `label`.
    fn marked(&self, label: u32) -> Vec<u8> {
        let mut f = self.bytes();
        let o = self.ip_off();
        f[o..o + 4].copy_from_slice(&label::ipv6_word0(label, self.tc).to_be_bytes());
        f
    }
}

fn ipv4_frame() -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0xB8, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 198, 51, 100, 2]);
    f.extend_from_slice(&[0x04, 0x46, 0xCF, 0x14, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]);
    f
}

/// Runs the classifier once on `frame`; asserts TC_ACT_OK and returns the output frame.
fn run(p: &mut MarkerProgram, frame: &[u8]) -> Vec<u8> {
    let (r, out) = p.test_run(frame, 1).expect("BPF_PROG_TEST_RUN");
    assert_eq!(r.retval, 0, "the marker must always return TC_ACT_OK");
    out
}

const LABEL_2_9: u32 = 0xD0127; // atlas/Debug with all entropy bits set (SPEC §5b)

#[test]
fn test_run_ipv6_tcp_match_sets_only_the_label() {
    with_program!(p, {
        let f = Frame::tcp();
        p.insert(&f.key(), LABEL_2_9).unwrap();
        let out = run(&mut p, &f.bytes());
        assert_eq!(out, f.marked(LABEL_2_9));
        let o = f.ip_off();
        assert_eq!(&out[o..o + 4], &[0x6B, 0xBD, 0x01, 0x27], "version 6, TC 0xBB kept, label 0xD0127");
        assert_eq!(label::decode(0xD0127), (2, 9));
        let c = p.total_counters().unwrap();
        assert_eq!((c.seen, c.marked), (1, 1));
    });
}

#[test]
fn test_run_no_match_is_unchanged() {
    with_program!(p, {
        let f = Frame::tcp();
        p.insert(&f.key(), LABEL_2_9).unwrap();
        for other in [
            Frame { sport: 1095, ..f.clone() },
            Frame { dport: 53013, ..f.clone() },
            Frame { src: "2001:db8::3".parse().unwrap(), ..f.clone() },
            Frame { dst: "2001:db8:1::3".parse().unwrap(), ..f.clone() },
            Frame { nexthdr: 17, ..f.clone() }, // same ports and addresses, other protocol
        ] {
            let b = other.bytes();
            assert_eq!(run(&mut p, &b), b);
        }
        // The reverse direction (an ACK of the flow) is a different key.
        let rev = Frame { src: f.dst, dst: f.src, sport: f.dport, dport: f.sport, ..f.clone() };
        assert_eq!(run(&mut p, &rev.bytes()), rev.bytes());
        let c = p.total_counters().unwrap();
        assert_eq!((c.seen, c.marked), (6, 0));
    });
}

#[test]
fn test_run_udp_match() {
    with_program!(p, {
        let f = Frame { nexthdr: 17, tc: 0x01, label: 0, ..Frame::tcp() };
        let l = label::encode(3, 14, 5).unwrap();
        p.insert(&f.key(), l).unwrap();
        assert_eq!(run(&mut p, &f.bytes()), f.marked(l));
    });
}

#[test]
fn test_run_vlan_tagged_match() {
    with_program!(p, {
        let l = label::encode(5, 16, 0).unwrap();
        for vlans in [vec![TPID_8021Q], vec![TPID_8021AD, TPID_8021Q], vec![TPID_8021Q, TPID_8021Q]] {
            let f = Frame { vlans, ..Frame::tcp() };
            p.insert(&f.key(), l).unwrap();
            assert_eq!(run(&mut p, &f.bytes()), f.marked(l));
        }
        // Three tags: beyond what the marker parses, passes unchanged.
        let f = Frame { vlans: vec![TPID_8021AD, TPID_8021Q, TPID_8021Q], ..Frame::tcp() };
        assert_eq!(run(&mut p, &f.bytes()), f.bytes());
    });
}

#[test]
fn test_run_extension_header_ipv4_and_non_ip_are_unchanged() {
    with_program!(p, {
        let f = Frame { hop_by_hop: true, ..Frame::tcp() };
        p.insert(&f.key(), LABEL_2_9).unwrap();
        assert_eq!(run(&mut p, &f.bytes()), f.bytes());
        let v4 = ipv4_frame();
        assert_eq!(run(&mut p, &v4), v4);
        let mut arp = v4.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&mut p, &arp), arp);
        // IPv6 ethertype but version nibble 4: not IPv6, unchanged.
        let mut bogus = Frame::tcp().bytes();
        bogus[14] = 0x45;
        assert_eq!(run(&mut p, &bogus), bogus);
        let c = p.total_counters().unwrap();
        assert_eq!((c.seen, c.marked), (1, 0), "only the hop-by-hop frame is IPv6");
    });
}

/// BPF_PROG_TEST_RUN itself refuses an untagged IPv6 frame shorter than 14 + 40 bytes
/// (the kernel pulls the IPv6 header before running the program: EINVAL), so the short
/// lengths are exercised through VLAN-tagged frames, for which it pulls nothing and the
/// program's own bounds checks are all that stands between it and the end of the data.
#[test]
fn test_run_truncated_frames_are_unchanged() {
    with_program!(p, {
        let f = Frame::tcp();
        p.insert(&f.key(), LABEL_2_9).unwrap();
        let full = f.bytes();
        for len in [14, 20, 53] {
            match p.test_run(&full[..len], 1) {
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "length {len}"),
                Ok((r, out)) => assert_eq!((r.retval, out.as_slice()), (0, &full[..len]), "length {len}"),
            }
        }
        for len in [54, 55, 57] {
            let b = &full[..len];
            assert_eq!(run(&mut p, b), b, "length {len}");
        }
        for vlans in [vec![TPID_8021Q], vec![TPID_8021AD, TPID_8021Q]] {
            let tagged = Frame { vlans, ..f.clone() };
            p.insert(&tagged.key(), LABEL_2_9).unwrap();
            let full = tagged.bytes();
            let ip = tagged.ip_off();
            for len in [14, 15, 16, 18, 20, 22, ip + 1, ip + 20, ip + 39, ip + 40, ip + 43] {
                let b = &full[..len];
                assert_eq!(run(&mut p, b), b, "tagged {:?} length {len}", tagged.vlans);
            }
            // Header plus both ports is the shortest frame the marker can mark.
            let b = &full[..ip + 44];
            assert_eq!(run(&mut p, b), &tagged.marked(LABEL_2_9)[..ip + 44]);
        }
        let b = &f.bytes()[..58];
        assert_eq!(run(&mut p, b), &f.marked(LABEL_2_9)[..58]);
    });
}

#[test]
fn test_run_map_delete_stops_marking() {
    with_program!(p, {
        let f = Frame::tcp();
        p.insert(&f.key(), LABEL_2_9).unwrap();
        assert_eq!(p.label(&f.key()), Some(LABEL_2_9));
        assert!(p.remove(&f.key()).unwrap());
        assert!(!p.remove(&f.key()).unwrap());
        assert_eq!(run(&mut p, &f.bytes()), f.bytes());
    });
}

/// The committed `ebpf/flowd.bpf.o` (what a build without clang embeds) marks exactly as
/// the object this build embedded, with every EBPF_MARKING: same output bytes, return
/// value and counters for hits, match-all misses, VLAN, extension-header, IPv4 and
/// truncated frames.
#[test]
fn test_run_committed_object_marks_like_the_embedded_one() {
    if !can_load_marker() {
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf/flowd.bpf.o");
    let bytes = std::fs::read(path).unwrap();
    for marking in [Marking::Label, Marking::HopByHop, Marking::Destination, Marking::HopByHopDestination] {
        let mut built = MarkerProgram::load_marking(1024, marking).unwrap_or_else(|e| panic!("embedded object: {e}"));
        let mut committed = MarkerProgram::load_object(&bytes, 1024, marking).unwrap_or_else(|e| panic!("{path} does not load: {e}"));
        let mark = if marking == Marking::Label { LABEL_2_9 } else { 0x209 };
        let f = Frame::tcp();
        let vlan = Frame { vlans: vec![TPID_8021AD, TPID_8021Q], ..Frame::tcp() };
        for p in [&mut built, &mut committed] {
            p.insert(&f.key(), mark).unwrap();
            p.insert(&vlan.key(), mark).unwrap();
            p.set_default(Some(if marking == Marking::Label { label::encode(1, 2, 0).unwrap() } else { 0x102 })).unwrap();
        }
        let frames = [
            f.bytes(),
            vlan.bytes(),
            Frame { sport: 1095, ..f.clone() }.bytes(),
            Frame { sport: 1095, nexthdr: 17, ..f.clone() }.bytes(),
            Frame { hop_by_hop: true, ..f.clone() }.bytes(),
            ipv4_frame(),
            f.bytes()[..57].to_vec(),
            vlan.bytes()[..30].to_vec(),
        ];
        for frame in &frames {
            assert_eq!(run(&mut committed, frame), run(&mut built, frame), "{}", marking.name());
        }
        let (a, b) = (committed.total_counters().unwrap(), built.total_counters().unwrap());
        assert_eq!(a, b, "{}", marking.name());
        assert_eq!((a.marked, a.by_default), (3, 1), "{}", marking.name());
        if marking == Marking::Label {
            assert_eq!(run(&mut committed, &f.bytes()), f.marked(LABEL_2_9));
        }
    }
}

//! `BPF_PROG_TEST_RUN` of the match-all default (flow label) and of extension-header
//! marking on exact bytes: plain, VLAN and QinQ frames, every EBPF_MARKING, an existing
//! Hop-by-Hop header, the MTU limit (on a veth of MTU 1500 in a namespace), GSO skbs the
//! kernel cannot grow, IPv4 and ARP.

use std::net::Ipv6Addr;

use flowd::backend::marker::abi::OPT_TYPE;
use flowd::backend::marker::{Counters, MarkerProgram, Marking, TestCtx};
use flowd::label;

use super::{ipv4_frame, load_program, run, Frame, LABEL_2_9, TPID_8021AD, TPID_8021Q};

/// Loads the classifier of `marking`, or prints SKIP and returns None.
fn load(marking: Marking) -> Option<MarkerProgram> {
    match load_program(16) {
        Ok(_) => Some(MarkerProgram::load_marking(1024, marking).unwrap_or_else(|e| panic!("{} does not load: {e:?}", marking.name()))),
        Err(reason) => {
            crate::util::skip(&reason);
            None
        }
    }
}

/// The classifier's 5-tuple hash (FNV-1a over the key's ten native-endian words, then
/// the murmur3 finaliser), written again here so the tests know each label exactly.
fn flow_hash(f: &Frame) -> u32 {
    let k = f.key();
    let bytes = [&k.saddr[..], &k.daddr[..], &k.sport.to_ne_bytes(), &k.dport.to_ne_bytes(), &[k.proto], &k.pad].concat();
    let mut h: u32 = 0x811C_9DC5;
    for w in bytes.chunks(4) {
        h ^= u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
        h = h.wrapping_mul(0x0100_0193);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

#[test]
fn test_run_match_all_labels_every_unclaimed_tcp_packet_per_flow() {
    let Some(mut p) = load(Marking::Label) else { return };
    let base = label::encode(1, 2, 0).unwrap();
    let f = Frame::tcp();
    // No default: a miss stays unmarked, as without the perfsonar plugin.
    assert_eq!(run(&mut p, &f.bytes()), f.bytes());
    p.set_default(Some(base)).unwrap();
    assert_eq!(p.default_mark().unwrap(), Some(base));

    let want = base | (flow_hash(&f) & label::ENTROPY_MASK);
    assert_eq!(run(&mut p, &f.bytes()), f.marked(want), "Traffic Class kept, label = default + entropy of the 5-tuple");
    assert_eq!(label::decode(want), (1, 2));
    // Every packet of the flow gets the same label, whatever its old label or TC.
    assert_eq!(run(&mut p, &Frame { label: 0, tc: 0x02, ..f.clone() }.bytes()), Frame { tc: 0x02, ..f.clone() }.marked(want));
    // Tagged frames too.
    for vlans in [vec![TPID_8021Q], vec![TPID_8021AD, TPID_8021Q]] {
        let t = Frame { vlans, ..f.clone() };
        assert_eq!(run(&mut p, &t.bytes()), t.marked(want));
    }

    // Flows spread over the 32 entropy values (ECMP), each keeping the (1, 2) bits.
    let mut seen = std::collections::HashSet::new();
    for sport in 40000..40256u16 {
        let g = Frame { sport, ..f.clone() };
        let out = run(&mut p, &g.bytes());
        let o = g.ip_off();
        let l = u32::from_be_bytes([out[o], out[o + 1], out[o + 2], out[o + 3]]) & label::LABEL_MASK;
        assert_eq!(l, base | (flow_hash(&g) & label::ENTROPY_MASK));
        assert_eq!(l & label::SEMANTIC_MASK, base);
        seen.insert(label::entropy_of(l));
    }
    assert!(seen.len() >= 28, "256 flows over 32 entropy values: only {} used", seen.len());

    // An announced flow keeps its own label; UDP misses, IPv4 and ARP are left alone.
    p.insert(&f.key(), LABEL_2_9).unwrap();
    assert_eq!(run(&mut p, &f.bytes()), f.marked(LABEL_2_9));
    let udp = Frame { nexthdr: 17, ..f.clone() };
    assert_eq!(run(&mut p, &udp.bytes()), udp.bytes());
    let v4 = ipv4_frame();
    assert_eq!(run(&mut p, &v4), v4);
    let mut arp = v4.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(run(&mut p, &arp), arp);
    let hbh = Frame { hop_by_hop: true, sport: 2000, ..f.clone() };
    assert_eq!(run(&mut p, &hbh.bytes()), hbh.bytes());

    let c = p.total_counters().unwrap();
    // seen: 1 + 1 + 1 + 2 + 256 + 1 (hit) + 1 (udp) + 1 (hbh); marked: all but the first, udp and hbh.
    assert_eq!((c.seen, c.marked, c.by_default), (264, 261, 260));

    // Cleared: misses are unmarked again.
    p.set_default(None).unwrap();
    let g = Frame { sport: 3000, ..f.clone() };
    assert_eq!(run(&mut p, &g.bytes()), g.bytes());
}

/// `f` as the extension-header classifier must emit it with `marking` and `tag`.
fn with_eh(f: &Frame, marking: Marking, tag: u32) -> Vec<u8> {
    let b = f.bytes();
    let o = f.ip_off();
    let opt = |next: u8| vec![next, 0, OPT_TYPE, 3, (tag >> 16) as u8, (tag >> 8) as u8, tag as u8, 0];
    let l4 = b[o + 6];
    let (ip_next, eh) = match marking {
        Marking::HopByHop => (0, opt(l4)),
        Marking::Destination => (60, opt(l4)),
        Marking::HopByHopDestination => (0, [opt(60), opt(l4)].concat()),
        Marking::Label => unreachable!(),
    };
    let mut out = [&b[..o + 40], &eh[..], &b[o + 40..]].concat();
    let plen = u16::from_be_bytes([b[o + 4], b[o + 5]]) + eh.len() as u16;
    out[o + 4..o + 6].copy_from_slice(&plen.to_be_bytes());
    out[o + 6] = ip_next;
    out
}

fn counters(p: &MarkerProgram) -> Counters {
    p.total_counters().unwrap()
}

#[test]
fn test_run_extension_headers_on_exact_bytes() {
    for marking in [Marking::HopByHop, Marking::Destination, Marking::HopByHopDestination] {
        let Some(mut p) = load(marking) else { return };
        let tag = 2 << 8 | 9;
        let f = Frame::tcp();
        // Not announced, no default: unchanged.
        assert_eq!(run(&mut p, &f.bytes()), f.bytes());
        p.insert(&f.key(), tag).unwrap();
        let out = run(&mut p, &f.bytes());
        assert_eq!(out, with_eh(&f, marking, tag), "{}", marking.name());
        if marking == Marking::Destination {
            // SPEC §5b EH vector: next header 0x3C, then 06 00 1E 03 00 02 09 00.
            assert_eq!(out[20], 0x3C);
            assert_eq!(&out[54..62], &[0x06, 0x00, 0x1E, 0x03, 0x00, 0x02, 0x09, 0x00]);
        }
        // Version, Traffic Class and flow label untouched.
        assert_eq!(&out[14..18], &f.bytes()[14..18]);
        // A second run over the same skb (repeat 2) does not insert a second header.
        let (r, twice) = p.test_run(&f.bytes(), 2).unwrap();
        assert_eq!((r.retval, twice), (0, with_eh(&f, marking, tag)));

        // UDP, VLAN and QinQ (tags in the data: the headers move, the payload stays).
        let udp = Frame { nexthdr: 17, ..f.clone() };
        p.insert(&udp.key(), tag).unwrap();
        assert_eq!(run(&mut p, &udp.bytes()), with_eh(&udp, marking, tag), "udp {}", marking.name());
        for vlans in [vec![TPID_8021Q], vec![TPID_8021AD, TPID_8021Q]] {
            let t = Frame { vlans: vlans.clone(), ..f.clone() };
            assert_eq!(run(&mut p, &t.bytes()), with_eh(&t, marking, tag), "{vlans:x?} {}", marking.name());
        }
        // Existing extension header, IPv4, ARP: unchanged.
        let hbh = Frame { hop_by_hop: true, ..f.clone() };
        assert_eq!(run(&mut p, &hbh.bytes()), hbh.bytes());
        let v4 = ipv4_frame();
        assert_eq!(run(&mut p, &v4), v4);
        let mut arp = v4.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&mut p, &arp), arp);

        // Match-all: a TCP packet no flow claims gets the default tag (no entropy).
        let other = Frame { sport: 5555, ..f.clone() };
        let default_tag = 1 << 8 | 2;
        p.set_default(Some(default_tag)).unwrap();
        assert_eq!(run(&mut p, &other.bytes()), with_eh(&other, marking, default_tag));
        let other_udp = Frame { sport: 5555, ..udp.clone() };
        assert_eq!(run(&mut p, &other_udp.bytes()), other_udp.bytes(), "match-all is TCP only");

        let c = counters(&p);
        assert_eq!((c.marked, c.eh_inserted, c.by_default, c.eh_too_big, c.eh_failed), (6, 6, 1, 0, 0), "{}", marking.name());
    }
}

/// GSO skbs the kernel cannot grow (`BPF_PROG_TEST_RUN` makes a GSO skb of no GSO type,
/// which `bpf_skb_adjust_room` refuses; tagged GSO skbs are never grown at the head):
/// they pass unchanged and are counted.
#[test]
fn test_run_gso_skbs_that_cannot_grow_pass_unchanged() {
    let Some(mut p) = load(Marking::Destination) else { return };
    let f = Frame::tcp();
    let t = Frame { vlans: vec![TPID_8021Q], ..f.clone() };
    p.insert(&f.key(), 0x209).unwrap();
    let gso = Some(TestCtx { ifindex: 0, gso_size: 1400, gso_segs: 2 });
    for frame in [f.bytes(), t.bytes()] {
        let (r, out) = p.test_run_ctx(&frame, 1, gso).unwrap();
        assert_eq!((r.retval, out), (0, frame));
    }
    let c = counters(&p);
    assert_eq!((c.eh_inserted, c.eh_failed, c.marked), (0, 2, 0));
}

/// A frame whose IPv6 packet plus the header exceeds the MTU of the device it leaves by
/// passes unchanged (counted); one that fits gets the header. VLAN tags in the data do
/// not count against the MTU.
#[test]
fn test_run_too_big_for_the_mtu_passes_unchanged() {
    if load(Marking::Destination).is_none() {
        return;
    }
    let ns = super::netns::Netns::new("t").expect("namespaces");
    let (results, c) = super::netns::in_ns(&ns.a, || {
        let mut p = MarkerProgram::load_marking(64, Marking::HopByHopDestination).expect("load");
        let ifindex = nix::net::if_::if_nametoindex("vethA").expect("vethA");
        let ctx = Some(TestCtx { ifindex, ..TestCtx::default() });
        let mut results = Vec::new();
        // IPv6 packet sizes (header + payload) around 1500 - 16.
        for (vlans, ip_len) in [(vec![], 1484usize), (vec![], 1485), (vec![TPID_8021Q], 1484), (vec![TPID_8021AD, TPID_8021Q], 1485), (vec![], 1500)] {
            let f = sized(vlans, ip_len);
            p.insert(&f.key(), 0x209).unwrap();
            let (r, out) = p.test_run_ctx(&f.bytes(), 1, ctx).unwrap();
            assert_eq!(r.retval, 0);
            results.push((out == with_eh(&f, Marking::HopByHopDestination, 0x209), out == f.bytes()));
        }
        (results, p.total_counters().unwrap())
    });
    assert_eq!(results, [(true, false), (false, true), (true, false), (false, true), (false, true)]);
    assert_eq!((c.eh_inserted, c.eh_too_big, c.eh_failed), (2, 3, 0));
}

/// A TCP frame whose IPv6 packet is `ip_len` bytes long.
fn sized(vlans: Vec<u16>, ip_len: usize) -> Frame {
    Frame { vlans, pad: ip_len - 40 - 30, src: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, ip_len as u16), ..Frame::tcp() }
}

//! Benchmark: nanoseconds per packet of the eBPF marker, measured by the kernel with
//! `BPF_PROG_TEST_RUN`, for label marking (hit, miss, VLAN hit, IPv4), match-all (a miss
//! that gets the perfsonar default) and extension-header insertion (each marking, plain
//! and VLAN-tagged). The flow map holds `--flows N` entries (default 10000).
//!
//! Label and match-all cases run `--repeat N` times (default 1e6) on one skb: marking the
//! label is idempotent. An inserted header is not (the kernel reruns the program on the
//! same, now longer, skb, which then has an extension header and is skipped), so each
//! insertion case is `--single N` runs (default 20000) of one packet each, and the median
//! is reported minus the kernel's per-run timer overhead, measured as the difference
//! between the label hit in single runs and in repeated runs.
//!
//! Run as root: `cargo run --release --example bench_marker -- [--repeat N] [--flows N]
//! [--single N]` (or `make bench-ebpf`). Prints one line per case.

use std::net::Ipv6Addr;

use flowd::backend::marker::{MarkerProgram, Marking, RawKey};
use flowd::flow::Proto;
use flowd::label;

fn frame(vlan: bool, src: Ipv6Addr, sport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2A]);
    }
    f.extend_from_slice(&[0x86, 0xDD]);
    f.extend_from_slice(&label::ipv6_word0(0, 0x68).to_be_bytes());
    // payload 1420 (1460-byte IPv6 packet: room for a 16-byte header within MTU 1500), TCP, hop limit
    f.extend_from_slice(&[0x05, 0x8C, 6, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2).octets());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&5201u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xFF, 0xFF, 0, 0, 0, 0]);
    f.resize(f.len() + 1400, 0xA5);
    f
}

fn ipv4() -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0x05, 0xDC, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 198, 51, 100, 2]);
    f.extend_from_slice(&[0x04, 0x46, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xFF, 0xFF, 0, 0, 0, 0]);
    f.resize(1474, 0xA5);
    f
}

fn arg(args: &[String], name: &str, default: u32) -> u32 {
    args.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse().ok()).unwrap_or(default)
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("{what}: {e}");
    std::process::exit(1);
}

/// The program of `marking` with `flows` flows (mark `mark`) in its map.
fn loaded(marking: Marking, flows: u32, mark: u32) -> MarkerProgram {
    // Twice the flows: an LRU map evicts before it is quite full (per-CPU free lists).
    let mut p = match MarkerProgram::load_marking(flows.max(16) * 2, marking) {
        Ok(p) => p,
        Err(e) => fail("cannot load the marker (root and a BPF-capable kernel needed)", e),
    };
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let dst = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    for i in 0..flows {
        let s = Ipv6Addr::from(u128::from(src) + u128::from(i));
        if let Err(e) = p.insert(&RawKey::new(Proto::Tcp, s, 40000, dst, 5201), mark) {
            fail("cannot fill the flow map", e);
        }
    }
    p
}

/// Best of 3 runs of `repeat` repetitions on one skb, and whether the frame changed.
fn repeated(p: &mut MarkerProgram, f: &[u8], repeat: u32, name: &str) -> (u32, bool) {
    let mut best = u32::MAX;
    let mut changed = false;
    for _ in 0..3 {
        match p.test_run(f, repeat) {
            Ok((r, out)) => {
                best = best.min(r.duration_ns);
                changed = out != f;
            }
            Err(e) => fail(&format!("{name}: BPF_PROG_TEST_RUN failed"), e),
        }
    }
    (best, changed)
}

/// Median of `n` single runs (each on a fresh skb), with the output length it produced.
fn single(p: &mut MarkerProgram, f: &[u8], n: u32, name: &str) -> (u32, usize) {
    let mut d = Vec::with_capacity(n as usize);
    let mut len = 0;
    for _ in 0..n {
        match p.test_run(f, 1) {
            Ok((r, out)) => {
                d.push(r.duration_ns);
                len = out.len();
            }
            Err(e) => fail(&format!("{name}: BPF_PROG_TEST_RUN failed"), e),
        }
    }
    d.sort_unstable();
    (d[d.len() / 2], len)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let repeat = arg(&args, "--repeat", 1_000_000);
    let flows = arg(&args, "--flows", 10_000);
    let n_single = arg(&args, "--single", 20_000).max(1);
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let hit = frame(false, src, 40000);
    let miss = frame(false, src, 40001);
    let vlan_hit = frame(true, src, 40000);

    println!("BPF_PROG_TEST_RUN, {flows} flows in the map, 1474/1478-byte frames (IPv6 packet 1460 bytes)");
    println!("label marking and match-all: best of 3 runs of {repeat} repetitions");
    let mut p = loaded(Marking::Label, flows, label::encode(2, 9, 7).unwrap_or(0));
    let (label_hit, marked) = repeated(&mut p, &hit, repeat, "label hit");
    if !marked {
        fail("label hit", "the frame was not marked");
    }
    let show = |name: &str, (ns, changed): (u32, bool)| println!("{name:<44} {ns:>4} ns/packet{}", if changed { "" } else { " (unchanged)" });
    show("label: ipv6 tcp hit", (label_hit, marked));
    show("label: ipv6 tcp miss", repeated(&mut p, &miss, repeat, "miss"));
    show("label: vlan ipv6 tcp hit", repeated(&mut p, &vlan_hit, repeat, "vlan hit"));
    show("label: ipv4 (ignored)", repeated(&mut p, &ipv4(), repeat, "ipv4"));
    if let Err(e) = p.set_default(Some(label::encode(1, 2, 0).unwrap_or(0))) {
        fail("cannot set the match-all default", e);
    }
    let (match_all, changed) = repeated(&mut p, &miss, repeat, "match-all");
    show("match-all: ipv6 tcp miss -> default label", (match_all, changed));
    println!("{:<44} {:+4} ns/packet", "  match-all miss minus label hit", i64::from(match_all) - i64::from(label_hit));
    show("match-all: ipv6 tcp hit (own label)", repeated(&mut p, &hit, repeat, "match-all hit"));

    let (label_single, _) = single(&mut p, &hit, n_single, "label hit single");
    let overhead = label_single.saturating_sub(label_hit);
    println!(
        "extension headers: median of {n_single} single runs minus {overhead} ns timer overhead (label hit: {label_single} ns single, {label_hit} ns repeated)"
    );
    for marking in [Marking::HopByHop, Marking::Destination, Marking::HopByHopDestination] {
        let mut p = loaded(marking, flows, 2 << 8 | 9);
        for (what, f) in [("hit", &hit), ("vlan hit", &vlan_hit), ("miss", &miss)] {
            let name = format!("{}: ipv6 tcp {what}", marking.name());
            let (med, len) = single(&mut p, f, n_single, &name);
            let grew = len - f.len();
            println!("{name:<44} {:>4} ns/packet (+{grew} bytes)", med.saturating_sub(overhead));
        }
        if let Err(e) = p.set_default(Some(1 << 8 | 2)) {
            fail("cannot set the match-all default", e);
        }
        let name = format!("{}: match-all miss -> default tag", marking.name());
        let (med, len) = single(&mut p, &miss, n_single, &name);
        println!("{name:<44} {:>4} ns/packet (+{} bytes)", med.saturating_sub(overhead), len - miss.len());
    }
}

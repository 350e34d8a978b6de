//! Benchmark: nanoseconds per packet of the eBPF marker, measured by the kernel with
//! `BPF_PROG_TEST_RUN` (repeat ≥ 1e6), for a marked IPv6/TCP frame, an IPv6 miss, a
//! VLAN-tagged hit and IPv4. The flow map holds `--flows N` entries (default 10000).
//!
//! Run as root: `cargo run --example bench_marker -- [--repeat N] [--flows N]`
//! (or `make bench-ebpf`). Prints one line per case and a summary.

use std::net::Ipv6Addr;

use flowd::backend::marker::{MarkerProgram, RawKey};
use flowd::flow::Proto;
use flowd::label;

fn frame(vlan: bool, src: Ipv6Addr, sport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2A]);
    }
    f.extend_from_slice(&[0x86, 0xDD]);
    f.extend_from_slice(&label::ipv6_word0(0, 0x68).to_be_bytes());
    f.extend_from_slice(&[0x05, 0x8C, 6, 64]); // payload 1420, TCP, hop limit
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
    f.resize(1514, 0xA5);
    f
}

fn arg(args: &[String], name: &str, default: u32) -> u32 {
    args.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let repeat = arg(&args, "--repeat", 1_000_000);
    let flows = arg(&args, "--flows", 10_000);
    let mut p = match MarkerProgram::load(flows.max(16)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot load the marker (root and a BPF-capable kernel needed): {e}");
            std::process::exit(1);
        }
    };
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let dst = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
    let l = label::encode(2, 9, 7).unwrap_or(0);
    for i in 0..flows {
        let s = Ipv6Addr::from(u128::from(src) + u128::from(i));
        if let Err(e) = p.insert(&RawKey::new(Proto::Tcp, s, 40000, dst, 5201), l) {
            eprintln!("cannot fill the flow map: {e}");
            std::process::exit(1);
        }
    }
    let cases = [
        ("ipv6 tcp hit", frame(false, src, 40000)),
        ("ipv6 tcp miss", frame(false, src, 40001)),
        ("vlan ipv6 tcp hit", frame(true, src, 40000)),
        ("ipv4 (ignored)", ipv4()),
    ];
    println!("BPF_PROG_TEST_RUN, repeat {repeat}, {flows} flows in the map, 1514-byte frames");
    for (name, f) in cases {
        let mut best = u32::MAX;
        for _ in 0..3 {
            match p.test_run(&f, repeat) {
                Ok((r, _)) => best = best.min(r.duration_ns),
                Err(e) => {
                    eprintln!("{name}: BPF_PROG_TEST_RUN failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        println!("{name:<20} {best:>4} ns/packet (best of 3 runs)");
    }
}

//! Benchmark: the per-flow part of a `/metrics` scrape in process, without the kernel:
//! matching `--sockets` dumped sockets (both ends of `--flows` loopback flows when it is
//! twice the flows) to the flow table, then rendering the `flow_tcp_*` families into a
//! page reused across rounds, as the HTTP listener does.
//!
//! `cargo run --release --example bench_render -- [--flows N] [--rounds N]`
//! (part of `make bench-metrics`). Prints the median and best time per phase.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use flowd::backend::prometheus::FlowMetrics;
use flowd::flow::{FlowEvent, FlowKey, FlowState, Micros, Proto};
use flowd::flow_table::FlowTable;
use flowd::metrics::Metrics;
use flowd::registry::ScitagsRegistry;
use flowd::wire::prom::Page;
use flowd::wire::sock_diag::{BbrInfo, CongName, Conn, ConnExt, SkMemInfo, TcpInfo};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse().ok()).unwrap_or(default)
}

/// A plausible established-socket `tcp_info` (kernel 6.x layout, 232 bytes).
fn tcp_info(i: u32) -> TcpInfo {
    let mut raw = [0u8; 232];
    let put = |raw: &mut [u8; 232], off: usize, v: u32| raw[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    raw[0] = 1;
    raw[5] = 1 | 2 | 4;
    raw[6] = 7 | (7 << 4);
    for (off, v) in [(8, 204_000), (12, 40_000), (16, 65_483), (20, 536), (68, 361 + i % 997), (72, 120 + i % 13), (80, 10)] {
        put(&mut raw, off, v);
    }
    raw[104..112].copy_from_slice(&(u64::from(i) * 977).to_ne_bytes());
    raw[200..208].copy_from_slice(&(u64::from(i) * 1_000_003).to_ne_bytes());
    TcpInfo::from_bytes(&raw)
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0])
}

/// What a scrape's dump carries besides tcp_info: socket memory and the algorithm name
/// for every socket, BBR state for every fourth (as on a host running some bbr flows).
fn ext(i: u32) -> ConnExt {
    let mem: Vec<u8> = [i % 4096, 131_072, i % 7, 87_040, 264, i % 100, 0, 0, 0].iter().flat_map(|v| v.to_ne_bytes()).collect();
    let bbr = i % 4 == 0;
    ConnExt {
        skmem: Some(SkMemInfo::from_bytes(&mem)),
        cong: CongName::from_bytes(if bbr { b"bbr\0" } else { b"cubic\0" }),
        bbr: bbr.then_some(BbrInfo { bw_lo: 12_500_000 + i, bw_hi: 0, min_rtt: 200 + i % 50, pacing_gain: 320, cwnd_gain: 512 }),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (n, rounds) = (arg(&args, "--flows", 10_000), arg(&args, "--rounds", 30));
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut flows = FlowTable::new(n + 1);
    let mut metrics = Metrics::new();
    let mut conns = Vec::with_capacity(2 * n);
    for i in 0..n {
        let (c, s) = (SocketAddr::new(lo, 20_000 + (i % 40_000) as u16), SocketAddr::new(lo, 1094 + (i / 40_000) as u16));
        let key = FlowKey { proto: Proto::Tcp, src: c, dst: s };
        flows.track(&mut FlowEvent::new(FlowState::Start, key, 3, 14, Micros(1)), &mut metrics);
        for (src, dst) in [(c, s), (s, c)] {
            conns.push(Conn { src, dst, state: 1, inode: i as u32 + 1, uid: 0, tcp_info: Some(tcp_info(i as u32)), ext: ext(i as u32) });
        }
    }
    let registry = ScitagsRegistry::bundled();
    let mut backend = FlowMetrics::new();
    let mut page = Page::new();
    let (mut matching, mut rendering) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        page.clear();
        let t0 = Instant::now();
        for c in &conns {
            backend.match_conn(&flows, c);
        }
        let t1 = Instant::now();
        backend.write(&registry, &mut page);
        matching.push(t1 - t0);
        rendering.push(t1.elapsed());
    }
    let (m, mb) = median(matching);
    let (r, rb) = median(rendering);
    println!(
        "{n} flows, {} sockets: match {:.2} ms (best {:.2}), render {:.2} ms (best {:.2}), page {:.1} MiB",
        conns.len(),
        m.as_secs_f64() * 1e3,
        mb.as_secs_f64() * 1e3,
        r.as_secs_f64() * 1e3,
        rb.as_secs_f64() * 1e3,
        page.len() as f64 / (1 << 20) as f64
    );
}

//! Benchmark: the site policy's cost per event, and the `/flows` page.
//!
//! 1. `Policy::decide` with `--networks N` excluded CIDR networks (IPv4 and IPv6, every
//!    prefix length, nested), `--events M` decisions over 16,384 flow keys of which
//!    about a third have an endpoint inside (`EXCLUDE_MATCH='either'`, so both endpoints
//!    are always looked up): ns per event (median and best of 7 rounds), the lookup of
//!    one address alone, and a linear scan of the networks (what the scanners'
//!    *_INTERNAL_NETWORKS do) for scale.
//! 2. `explain::write_flows` with `--flows F` open flows in the table: ms and bytes per
//!    page (the time the loop is busy with one `GET /flows`).
//! 3. With `--flowd PATH`: the real binary, `--flows F` flows announced through its pipe,
//!    `GET /flows` over loopback: ms per request (median, worst) and bytes.
//!
//! `cargo run --release --example bench_policy -- [--networks 1000] [--events 1000000]
//! [--flows 10000] [--flowd target/release/flowd]` (`make bench-policy`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, reason = "benchmark program")]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flowd::config::{ExcludeMatch, PolicyConfig};
use flowd::decision::Decision;
use flowd::explain::{self, View};
use flowd::flow::{FlowEvent, FlowKey, FlowState, Micros, Proto};
use flowd::flow_table::{FlowTable, Recent};
use flowd::metrics::Metrics;
use flowd::netaddr::Cidr;
use flowd::policy::ranges::Ranges;
use flowd::policy::{Policy, Verdict};
use flowd::registry::ScitagsRegistry;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse().ok()).unwrap_or(default)
}

/// xorshift64*: reproducible pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// (median, worst).
fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

/// (median, best).
fn median_best(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

/// `n` networks: 3/4 IPv4 (/8 to /32), 1/4 IPv6 (/16 to /128), many nested in others.
fn networks(n: usize, rng: &mut Rng) -> Vec<Cidr> {
    (0..n)
        .map(|i| {
            if i % 4 != 3 {
                let a = Ipv4Addr::from((rng.next() as u32) & 0x3FFF_FFFF | 0x0A00_0000);
                format!("{a}/{}", 8 + rng.next() % 25)
            } else {
                let a = Ipv6Addr::from(0x2001_0db8u128 << 96 | (u128::from(rng.next()) << 32));
                format!("{a}/{}", 32 + rng.next() % 97)
            }
            .parse()
            .unwrap()
        })
        .collect()
}

/// Flow keys: a third with the src inside a listed network (v4 or v6), the rest outside.
fn keys(n: usize, nets: &[Cidr], rng: &mut Rng) -> Vec<FlowKey> {
    let family = |v6: bool| nets.iter().filter(|n| n.addr.is_ipv6() == v6).copied().collect::<Vec<_>>();
    let (v4_nets, v6_nets) = (family(false), family(true));
    (0..n)
        .map(|i| {
            let v6 = i % 4 == 3;
            let outside = |r: &mut Rng| -> IpAddr {
                if v6 {
                    Ipv6Addr::from(0x3fff_0000u128 << 96 | u128::from(r.next())).into()
                } else {
                    Ipv4Addr::from(0xC000_0000 | (r.next() as u32 & 0x00FF_FFFF)).into()
                }
            };
            let pool = if v6 { &v6_nets } else { &v4_nets };
            let src = if i % 3 == 0 && !pool.is_empty() { pool[(rng.next() % pool.len() as u64) as usize].addr } else { outside(rng) };
            let dst = outside(rng);
            FlowKey::new(Proto::Tcp, SocketAddr::new(src, 1094), SocketAddr::new(dst, (i % 60_000) as u16 + 1024)).unwrap()
        })
        .collect()
}

fn bench_policy(n_nets: usize, n_events: usize) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let nets = networks(n_nets, &mut rng);
    // A pool that stays in the caches: the policy's cost, not the benchmark's memory traffic.
    let ks = keys(16_384, &nets, &mut rng);
    let rounds = n_events.div_ceil(ks.len()).max(1);
    let cfg = PolicyConfig { networks: nets.clone(), domains: Vec::new(), exclude_match: ExcludeMatch::Either, domains_refresh: Duration::from_secs(300) };
    let mut policy = Policy::new(&cfg, None, Instant::now());
    let mut metrics = Metrics::new();
    let now = Instant::now();
    let mut per_event = Vec::new();
    let mut excluded = 0usize;
    for _ in 0..7 {
        excluded = 0;
        let t0 = Instant::now();
        for _ in 0..rounds {
            for k in &ks {
                if matches!(policy.decide(k, now, &mut metrics), Verdict::Exclude { .. }) {
                    excluded += 1;
                }
            }
        }
        per_event.push(t0.elapsed().as_nanos() as f64 / (rounds * ks.len()) as f64);
    }
    let (med, best) = median_best(per_event);
    let ranges = Ranges::new(&nets);
    let addrs: Vec<IpAddr> = ks.iter().flat_map(|k| [k.src.ip(), k.dst.ip()]).collect();
    let mut per_lookup = Vec::new();
    let mut hits = 0usize;
    for _ in 0..7 {
        hits = 0;
        let t0 = Instant::now();
        for _ in 0..rounds {
            hits += addrs.iter().filter(|a| ranges.find(**a).is_some()).count();
        }
        per_lookup.push(t0.elapsed().as_nanos() as f64 / (rounds * addrs.len()) as f64);
    }
    let (lookup, lookup_best) = median_best(per_lookup);
    // The linear scan, on a sample (it is ~100x slower), must agree.
    let sample = &ks[..ks.len().min(4_000)];
    let t0 = Instant::now();
    let mut lin = 0usize;
    for k in sample {
        let hit = |ip: IpAddr| nets.iter().any(|n| n.contains(ip));
        lin += usize::from(hit(k.src.ip()) || hit(k.dst.ip()));
    }
    let linear = t0.elapsed().as_nanos() as f64 / sample.len() as f64;
    let lin_expected = sample.iter().filter(|k| matches!(policy.decide(k, now, &mut metrics), Verdict::Exclude { .. })).count();
    assert_eq!(lin, lin_expected, "the bucket index and the linear scan disagree");
    assert!(hits > 0);
    println!(
        "policy: {n_nets} networks ({} ranges), {} events ({:.0}% excluded): decide {med:.1} ns/event (best round {best:.1}); one address {lookup:.1} ns (best {lookup_best:.1}); linear scan {linear:.0} ns/event",
        ranges.len(),
        rounds * ks.len(),
        100.0 * excluded as f64 / ks.len() as f64 / rounds as f64
    );
}

fn table(n: usize) -> FlowTable {
    let mut flows = FlowTable::new(n + 1);
    let mut m = Metrics::new();
    for i in 0..n {
        let src = SocketAddr::new(Ipv6Addr::from(0x2001_0db8u128 << 96 | 1).into(), 1094);
        let dst = SocketAddr::new(Ipv6Addr::from(0x2001_0db8u128 << 96 | 0x1_0000 | (i as u128 / 50_000)).into(), 1024 + (i % 50_000) as u16);
        let mut ev = FlowEvent::new(FlowState::Start, FlowKey::new(Proto::Tcp, src, dst).unwrap(), 2, 9, Micros(1_700_000_000_000_000 + i as i64));
        flows.track_as(&mut ev, "np_api", Decision::PassedNoMatch, &mut m);
        if let Some(f) = flows.get_mut(&ev.key) {
            f.note(Decision::Fireflied);
            f.note(Decision::Marked);
        }
    }
    flows
}

fn bench_page(n: usize) {
    let flows = table(n);
    let recent = Recent::default();
    let registry = ScitagsRegistry::bundled();
    let cfg = PolicyConfig::default();
    let policy = Policy::new(&cfg, None, Instant::now());
    let label_of = |_: &FlowKey| Some(0xD0127);
    let view = View { flows: &flows, recent: &recent, registry: &registry, policy: &policy, label_of: &label_of };
    let mut out = Vec::new();
    let mut times = Vec::new();
    for _ in 0..15 {
        out.clear();
        let t0 = Instant::now();
        explain::write_flows(&view, explain::MAX_FLOWS, &mut out);
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let (med, worst) = median(times);
    println!("/flows page in process: {n} flows, {:.2} ms (worst {worst:.2}), {} bytes ({:.0} bytes/flow)", med, out.len(), out.len() as f64 / n as f64);
}

fn get(port: u16, path: &str) -> (f64, usize, String) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let body = all.windows(4).position(|w| w == b"\r\n\r\n").map(|i| all.split_off(i + 4)).unwrap_or_default();
    (ms, body.len(), String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

fn bench_binary(flowd: &str, n: usize) {
    let dir = std::env::temp_dir().join(format!("flowd-bench-policy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.join("flowd.cfg");
    std::fs::write(
        &cfg,
        format!(
            "PLUGIN='np_api'\nBACKEND='udp_firefly'\nUDP_FIREFLY_TO_PEER=False\nNP_API_FILE='{}'\nPID_FILE=''\nPROMETHEUS_SRV_PORT={port}\nEXCLUDE_NETWORKS=('10.0.0.0/8',)\n",
            dir.join("np").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(flowd)
        .args(["-f", "-c"])
        .arg(&cfg)
        .env("STATE_DIRECTORY", dir.join("state"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "flowd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut pipe = std::fs::OpenOptions::new().write(true).open(dir.join("np")).unwrap();
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("start tcp 2001:db8::1 1094 2001:db8::{:x} {} atlas Debug\n", 2 + i / 50_000, 1024 + i % 50_000));
    }
    pipe.write_all(text.as_bytes()).unwrap();
    let want = format!("\"open\":{n},");
    while !get(port, "/flows").2.contains(&want) {
        assert!(Instant::now() < deadline + Duration::from_secs(20), "the flows did not arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..15 {
        let (ms, b, _) = get(port, "/flows");
        times.push(ms);
        bytes = b;
    }
    let (med, worst) = median(times);
    let one = get(port, "/flows/2001:db8::2/1024/2001:db8::1/1094");
    println!(
        "GET /flows from {flowd}: {n} flows, {med:.1} ms per request (worst {worst:.1}), {bytes} bytes; GET /flows/<tuple> {:.2} ms, {} bytes",
        one.0, one.1
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    bench_policy(arg(&args, "--networks", 1000), arg(&args, "--events", 1_000_000));
    let flows = arg(&args, "--flows", 10_000);
    bench_page(flows);
    if let Some(path) = args.windows(2).find(|w| w[0] == "--flowd").map(|w| w[1].clone()) {
        bench_binary(&path, flows);
    }
}

//! np_api → udp_firefly benchmark, flowd and the Python flowd side by side in one run.
//!
//! Each daemon runs in private mount+network namespaces (so both can use their default
//! pipe `/var/run/flowd` and send fireflies to 127.0.0.1:10514, where this program
//! listens). Measured: startup time to the first answered event, idle RSS and CPU,
//! throughput of N start + N end lines (events/s end to end, CPU µs per event, loss,
//! peak RSS), and latency at a paced 1,000 events/s (p50/p99).
//!
//! Usage (root): `cargo bench --bench np_api -- [--events N] [--python PYTHON FLOWD_SCRIPT]`.
//! Without --python it looks for the venv at /work/pyflowd (see README, "Performance").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stdout, reason = "benchmark program")]

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PIPE: &str = "/var/run/flowd";

fn clk_tck() -> f64 {
    100.0
}

/// (rss bytes, cpu seconds) summed over `pid` and its descendants.
fn tree_usage(pid: u32) -> (u64, f64) {
    let (rss, user, sys) = tree_usage_split(pid);
    (rss, user + sys)
}

/// (rss bytes, user cpu seconds, kernel cpu seconds) over `pid` and its descendants.
fn tree_usage_split(pid: u32) -> (u64, f64, f64) {
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut stats: HashMap<u32, (u64, f64, f64)> = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let rest = &s[s.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ppid: u32 = f[1].parse().unwrap();
        let user = f[11].parse::<f64>().unwrap() / clk_tck();
        let sys = f[12].parse::<f64>().unwrap() / clk_tck();
        let rss = f[21].parse::<u64>().unwrap() * 4096;
        kids.entry(ppid).or_default().push(p);
        stats.insert(p, (rss, user, sys));
    }
    let mut todo = vec![pid];
    let (mut rss, mut user, mut sys) = (0, 0.0, 0.0);
    while let Some(p) = todo.pop() {
        if let Some((r, u, s)) = stats.get(&p) {
            rss += r;
            user += u;
            sys += s;
        }
        todo.extend(kids.get(&p).cloned().unwrap_or_default());
    }
    (rss, user, sys)
}

fn sink() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:10514").unwrap();
    // SO_RCVBUFFORCE (root) so a burst is not dropped by the sink; best effort.
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &(64 << 20));
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

fn src_port_of(d: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(d).ok()?;
    let i = s.find("\"src-port\": ").or_else(|| s.find("\"src-port\":"))?;
    let rest = s[i + 11..].trim_start_matches([':', ' ']);
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

struct Result {
    name: String,
    ready_ms: f64,
    idle_rss_mib: f64,
    idle_cpu_pct: f64,
    events: usize,
    received: usize,
    events_per_s: f64,
    cpu_us_per_event: f64,
    user_us_per_event: f64,
    peak_rss_mib: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn open_pipe_nonblocking() -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).custom_flags(0o4000).open(PIPE).ok()
}

fn run_one(name: &str, mut cmd: Command, n: usize) -> Result {
    let s = sink();
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    // Poll in 1 ms steps while waiting for the first answer (the resolution of "ready").
    s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut child: Child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    // Ready = the first probe event answered with a firefly.
    let ready;
    let mut probe_port = 1u16;
    loop {
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{name} never answered");
        }
        if let Some(mut p) = open_pipe_nonblocking() {
            let _ = p.write_all(format!("start tcp 127.0.0.1 {probe_port} 127.0.0.1 9 1 1\n").as_bytes());
            probe_port += 1;
        }
        if s.recv(&mut buf).is_ok() {
            ready = t0.elapsed();
            break;
        }
    }
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    while s.recv(&mut buf).is_ok() {}
    // Idle.
    let (_, c0) = tree_usage(pid);
    std::thread::sleep(Duration::from_secs(5));
    let (idle_rss, c1) = tree_usage(pid);
    let idle_cpu_pct = (c1 - c0) / 5.0 * 100.0;

    // Throughput: n start + n end lines as fast as the pipe takes them.
    let mut text = String::with_capacity(n * 110);
    for i in 0..n {
        text.push_str(&format!("start tcp 127.0.0.1 {} 127.0.0.1 443 2 9\n", 1024 + (i % 60000)));
    }
    for i in 0..n {
        text.push_str(&format!("end tcp 127.0.0.1 {} 127.0.0.1 443 2 9\n", 1024 + (i % 60000)));
    }
    let (_, user_before, sys_before) = tree_usage_split(pid);
    let cpu_before = user_before + sys_before;
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new().write(true).open(PIPE).unwrap();
        for chunk in text.as_bytes().chunks(4096) {
            w.write_all(chunk).unwrap();
        }
    });
    let mut received = 0usize;
    let mut last = Instant::now();
    let mut peak_rss = 0u64;
    let mut quiet_since = Instant::now();
    let mut checks = 0u32;
    while received < 2 * n {
        match s.recv(&mut buf) {
            Ok(_) => {
                received += 1;
                last = Instant::now();
                quiet_since = last;
            }
            Err(_) => {
                if quiet_since.elapsed() > Duration::from_secs(3) && writer.is_finished() {
                    break;
                }
            }
        }
        checks += 1;
        if checks % 20_000 == 0 {
            peak_rss = peak_rss.max(tree_usage(pid).0);
        }
    }
    writer.join().unwrap();
    let elapsed = last.duration_since(start).as_secs_f64();
    let (rss_after, user_after, sys_after) = tree_usage_split(pid);
    let cpu_after = user_after + sys_after;
    let user_us_per_event = (user_after - user_before) * 1e6 / received.max(1) as f64;
    peak_rss = peak_rss.max(rss_after);
    let cpu_us_per_event = (cpu_after - cpu_before) * 1e6 / received.max(1) as f64;
    std::thread::sleep(Duration::from_millis(300));
    while s.recv(&mut buf).is_ok() {}

    // Latency at 1,000 events/s.
    let mut sent_at: HashMap<u16, Instant> = HashMap::new();
    let mut lat = Vec::new();
    let mut w = std::fs::OpenOptions::new().write(true).open(PIPE).unwrap();
    s.set_read_timeout(Some(Duration::from_micros(200))).unwrap();
    let begin = Instant::now();
    for i in 0..3000u32 {
        let port = 20000 + i as u16;
        let due = begin + Duration::from_millis(u64::from(i));
        while Instant::now() < due {
            if let Ok(k) = s.recv(&mut buf) {
                if let Some(p) = src_port_of(&buf[..k]) {
                    if let Some(t) = sent_at.remove(&p) {
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
        }
        sent_at.insert(port, Instant::now());
        w.write_all(format!("start tcp 127.0.0.1 {port} 127.0.0.1 443 2 9\n").as_bytes()).unwrap();
    }
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end && !sent_at.is_empty() {
        if let Ok(k) = s.recv(&mut buf) {
            if let Some(p) = src_port_of(&buf[..k]) {
                if let Some(t) = sent_at.remove(&p) {
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |q: f64| if lat.is_empty() { f64::NAN } else { lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    Result {
        name: name.into(),
        ready_ms: ready.as_secs_f64() * 1e3,
        idle_rss_mib: idle_rss as f64 / 1048576.0,
        idle_cpu_pct,
        events: 2 * n,
        received,
        events_per_s: received as f64 / elapsed.max(1e-9),
        cpu_us_per_event,
        user_us_per_event,
        peak_rss_mib: peak_rss as f64 / 1048576.0,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    }
}

fn serve_registry(api: PathBuf) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut b = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut b);
            let body = std::fs::read(&api).unwrap();
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(&body);
        }
    });
    port
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Re-exec inside private mount + network namespaces.
    if std::env::var_os("FLOWD_BENCH_INNER").is_none() {
        let me = std::env::current_exe().unwrap();
        let script = format!(
            "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/cache && ip link set lo up && exec {} {}",
            me.display(),
            args[1..].iter().filter(|a| *a != "--bench").cloned().collect::<Vec<_>>().join(" ")
        );
        let st = Command::new("unshare").args(["--mount", "--net", "--fork", "sh", "-c", &script]).env("FLOWD_BENCH_INNER", "1").status();
        match st {
            Ok(s) if s.success() => return,
            other => {
                println!("SKIP: the benchmark needs root and unshare(1): {other:?}");
                return;
            }
        }
    }
    let mut n = 100_000usize;
    let mut python: Option<(String, String)> = None;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--events" => {
                n = args[i + 1].parse().unwrap();
                i += 1;
            }
            "--ours-only" => python = Some((String::new(), String::new())),
            "--python" => {
                python = Some((args[i + 1].clone(), args[i + 2].clone()));
                i += 2;
            }
            _ => {}
        }
        i += 1;
    }
    let dir = std::env::temp_dir().join(format!("flowd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = root.join("etc/api.json");
    let reg_port = serve_registry(api);

    let ours_cfg = dir.join("flowd.cfg");
    std::fs::write(&ours_cfg, "PLUGIN='np_api'\nBACKEND='udp_firefly'\nPROMETHEUS_SRV_PORT=0\n").unwrap();
    let bin = root.join("target/release/flowd");
    let mut results = Vec::new();
    let mut ours = Command::new(&bin);
    ours.args(["-f", "-c", ours_cfg.to_str().unwrap()]);
    results.push(run_one("flowd (Rust)", ours, n));

    let py = python.or_else(|| {
        let venv = Path::new("/work/pyflowd");
        let script = venv.join("lib/python3.11/site-packages/usr/sbin/flowd");
        script.exists().then(|| (venv.join("bin/python").display().to_string(), script.display().to_string()))
    });
    match py {
        Some((python, _)) if python.is_empty() => {}
        Some((python, script)) => {
            let py_cfg = dir.join("py.cfg");
            std::fs::write(&py_cfg, format!("PLUGIN='np_api'\nBACKEND='udp_firefly'\nFLOW_MAP_API='http://127.0.0.1:{reg_port}/api.json'\n")).unwrap();
            let mut c = Command::new(python);
            c.args([script.as_str(), "-c", py_cfg.to_str().unwrap()]);
            results.push(run_one("Python flowd 1.1.7", c, n.min(50_000)));
        }
        None => println!("(Python flowd not found: pip install scitags==1.1.7 into /work/pyflowd, see README)"),
    }
    println!("\n| metric | {} |", results.iter().map(|r| r.name.clone()).collect::<Vec<_>>().join(" | "));
    println!("|---|{}", "---|".repeat(results.len()));
    let row = |label: &str, f: &dyn Fn(&Result) -> String| println!("| {label} | {} |", results.iter().map(f).collect::<Vec<_>>().join(" | "));
    row("ready after start (ms)", &|r| format!("{:.1}", r.ready_ms));
    row("idle RSS, all processes (MiB)", &|r| format!("{:.1}", r.idle_rss_mib));
    row("idle CPU (% of a core, 5 s)", &|r| format!("{:.2}", r.idle_cpu_pct));
    row("events written (start+end)", &|r| r.events.to_string());
    row("fireflies received", &|r| r.received.to_string());
    row("loss", &|r| format!("{} ({:.2} %)", r.events - r.received, (r.events - r.received) as f64 * 100.0 / r.events as f64));
    row("throughput (events/s)", &|r| format!("{:.0}", r.events_per_s));
    row("CPU per event (µs)", &|r| format!("{:.2}", r.cpu_us_per_event));
    row("  of which user space (µs)", &|r| format!("{:.2}", r.user_us_per_event));
    row("peak RSS under load (MiB)", &|r| format!("{:.1}", r.peak_rss_mib));
    row("latency p50 at 1k ev/s (ms)", &|r| format!("{:.3}", r.p50_ms));
    row("latency p99 at 1k ev/s (ms)", &|r| format!("{:.3}", r.p99_ms));
    let _ = std::fs::remove_dir_all(&dir);
}

//! Fault injection against the real binary: floods of bad input, signals under load,
//! unreachable peers and registries, a replaced pipe. Each case checks that flowd logs,
//! counts, keeps doing everything else and recovers without a restart. Cases that need
//! root (namespaces, mounts, routes) are in `hardening/ns.rs` and print `SKIP:` otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail the test on any error")]

mod ns;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::{json_of, Flowd, Sink};

const T: Duration = Duration::from_secs(10);

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Raises a sink's receive buffer so that a burst is queued, not dropped, by the kernel:
/// SO_RCVBUFFORCE as root (beyond net.core.rmem_max), SO_RCVBUF otherwise.
pub(crate) fn big_rcvbuf(s: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let size = 256 << 20;
    if setsockopt(s, sockopt::RcvBufForce, &size).is_err() {
        let _ = setsockopt(s, sockopt::RcvBuf, &size);
    }
}

/// A UDP sink drained by its own thread into memory until `finish`.
pub(crate) struct Collector {
    pub addr: String,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl Collector {
    pub fn start() -> Collector {
        Collector::on(Sink::v4().sock)
    }

    pub fn on(sock: UdpSocket) -> Collector {
        big_rcvbuf(&sock);
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (st, ct) = (Arc::clone(&stop), Arc::clone(&count));
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    out.push(buf[..n].to_vec());
                    ct.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Whatever is still queued.
            sock.set_nonblocking(true).unwrap();
            while let Ok(n) = sock.recv(&mut buf) {
                out.push(buf[..n].to_vec());
            }
            out
        });
        Collector { addr, stop, count, thread: Some(thread) }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `n` datagrams arrived, or nothing new came for `quiet`.
    pub fn wait_for(&self, n: u64, quiet: Duration) {
        let (mut last, mut since) = (self.count(), Instant::now());
        while self.count() < n {
            std::thread::sleep(Duration::from_millis(20));
            let c = self.count();
            if c != last {
                (last, since) = (c, Instant::now());
            } else if since.elapsed() > quiet {
                return;
            }
        }
    }

    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// VmRSS of a process in KiB.
pub(crate) fn vm_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// The counters flowd logs at shutdown: `totals: NAME a/b=1 c/d=2` → {"a/b": 1, …}.
pub(crate) fn totals(log: &str, name: &str) -> HashMap<String, u64> {
    let prefix = format!("totals: {name} ");
    let mut out = HashMap::new();
    for line in log.lines() {
        if let Some(i) = line.find(&prefix) {
            for kv in line[i + prefix.len()..].split(' ') {
                if let Some((k, v)) = kv.split_once('=') {
                    out.insert(k.to_string(), v.parse::<f64>().unwrap() as u64);
                }
            }
        }
    }
    out
}

/// (state, src ip, src port) of a firefly; panics if it is not complete JSON.
fn state_port(d: &[u8]) -> (String, String, u64) {
    let s = std::str::from_utf8(d).expect("firefly is UTF-8");
    let j = json_of(s);
    let fid = &j["flow-id"];
    (j["flow-lifecycle"]["state"].as_str().unwrap().to_string(), fid["src-ip"].as_str().unwrap().to_string(), fid["src-port"].as_u64().unwrap())
}

/// Malformed line number `m` and the reason flowd must count it under.
fn malformed(m: u64) -> (Vec<u8>, &'static str) {
    if m % 100 == 99 {
        return (vec![b'x'; 1100], "line_too_long");
    }
    let (line, why): (&[u8], _) = match m % 9 {
        0 => (b"start tcp 192.0.2.1 1 198.51.100.1", "field_count"),
        1 => (b"begin tcp 192.0.2.1 1 198.51.100.1 2 2 9", "bad_state"),
        2 => (b"start sctp 192.0.2.1 1 198.51.100.1 2 2 9", "bad_protocol"),
        3 => (b"start tcp 192.0.2.300 1 198.51.100.1 2 2 9", "bad_address"),
        4 => (b"start tcp 192.0.2.1 0 198.51.100.1 2 2 9", "bad_port"),
        5 => (b"start tcp 192.0.2.1 1 ::1 2 2 9", "family_mismatch"),
        6 => (b"start tcp \xff\xfe 1 198.51.100.1 2 2 9", "not_utf8"),
        7 => (b"start tcp 192.0.2.1 1 198.51.100.1 2 nosuchexp 9", "unknown_experiment"),
        _ => (b"start tcp 192.0.2.1 1 198.51.100.1 2 atlas nosuchact", "unknown_activity"),
    };
    (line.to_vec(), why)
}

#[test]
fn a_million_malformed_lines_lose_no_valid_event_and_memory_stays_flat() {
    const VALID: u64 = 100_000;
    const BAD_PER_VALID: u64 = 10;
    let col = Collector::start();
    let mut f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", col.addr));
    let pid = f.child.id();
    let written = Arc::new(AtomicU64::new(0));
    let pipe = f.pipe.clone();
    let w = Arc::clone(&written);
    // Valid line k is the start (k even) or end (k odd) of flow k/2 (src port 1 + k/2),
    // so the flow table stays small; 10 malformed lines follow each valid one.
    let writer = std::thread::spawn(move || {
        let mut out = std::fs::OpenOptions::new().write(true).open(pipe).unwrap();
        let mut expected: HashMap<&'static str, u64> = HashMap::new();
        let mut chunk = Vec::with_capacity(128 << 10);
        let mut m = 0;
        for k in 0..VALID {
            let state = if k % 2 == 0 { "start" } else { "end" };
            writeln!(chunk, "{state} tcp 192.0.2.1 {} 198.51.100.1 443 atlas Debug", 1 + k / 2).unwrap();
            for _ in 0..BAD_PER_VALID {
                let (line, why) = malformed(m);
                m += 1;
                *expected.entry(why).or_default() += 1;
                chunk.extend_from_slice(&line);
                chunk.push(b'\n');
            }
            if chunk.len() > 64 << 10 {
                out.write_all(&chunk).unwrap();
                chunk.clear();
                w.store(k, Ordering::Relaxed);
            }
        }
        out.write_all(&chunk).unwrap();
        w.store(VALID, Ordering::Relaxed);
        expected
    });
    // RSS samples (valid lines written so far, KiB) while the flood runs.
    let mut samples = Vec::new();
    while !writer.is_finished() {
        if let Some(kb) = vm_rss_kb(pid) {
            samples.push((written.load(Ordering::Relaxed), kb));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let expected = writer.join().unwrap();
    col.wait_for(VALID, T);
    samples.push((VALID, vm_rss_kb(pid).expect("flowd is still running")));
    let (st, _) = f.stop_keep();
    assert!(st.success(), "exit status {st:?}");
    let log = f.stderr();
    let got = col.finish();

    let seen: HashSet<(String, String, u64)> = got.iter().map(|d| state_port(d)).collect();
    assert_eq!(got.len() as u64, VALID, "every valid line gives exactly one firefly");
    assert_eq!(seen.len() as u64, VALID, "no duplicates");
    let bad = totals(&log, "flowd_bad_input_total");
    for (why, n) in &expected {
        assert_eq!(bad.get(&format!("np_api/{why}")), Some(n), "reason {why}; totals {bad:?}\n{}", tail(&log));
    }
    assert_eq!(bad.values().sum::<u64>(), VALID * BAD_PER_VALID);
    let ev = totals(&log, "flowd_events_total");
    assert_eq!((ev["np_api/start"], ev["np_api/end"]), (VALID / 2, VALID / 2));
    assert_eq!(totals(&log, "flowd_fireflies_sent_total")["collector"], VALID);
    assert!(totals(&log, "flowd_firefly_send_errors_total").is_empty());
    assert!(log.contains("more rejected lines not logged individually: "), "held-back warnings are summarised:\n{}", tail(&log));
    assert!(log.lines().count() < 500, "the log is not flooded: {} lines", log.lines().count());
    // Memory: the peak after the first fifth of the flood is within 8 MiB of the peak before.
    let warm = samples.iter().filter(|(k, _)| *k <= VALID / 5).map(|s| s.1).max().unwrap_or(0);
    let peak = samples.iter().map(|s| s.1).max().unwrap();
    eprintln!("flood: RSS warm {warm} KiB, peak {peak} KiB, {} samples", samples.len());
    assert!(warm > 0 && peak <= warm + 8 * 1024, "RSS grew from {warm} to {peak} KiB: {samples:?}");
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn sighup_and_sigterm_at_100k_events_per_second_leave_no_event_half_processed() {
    let (a, b, c) = (Collector::start(), Collector::start(), Collector::start());
    let base = format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST=['{}', '{}']", a.addr, b.addr);
    let mut f = Flowd::start(&base);
    let stop = Arc::new(AtomicBool::new(false));
    let (pipe, s) = (f.pipe.clone(), Arc::clone(&stop));
    // ~100k lines/s: 1000 lines every 10 ms, until told to stop or the pipe goes away.
    let writer = std::thread::spawn(move || {
        let mut out = std::fs::OpenOptions::new().write(true).open(pipe).unwrap();
        let mut n = 0u64;
        let mut next = Instant::now();
        while !s.load(Ordering::Relaxed) {
            let mut chunk = Vec::with_capacity(64 << 10);
            for _ in 0..1000 {
                let state = if n % 2 == 0 { "start" } else { "end" };
                writeln!(chunk, "{state} tcp 192.0.2.{} {} 198.51.100.1 443 2 9", 1 + n / 120_000, 1 + (n / 2) % 60_000).unwrap();
                n += 1;
            }
            if out.write_all(&chunk).is_err() {
                break;
            }
            next += Duration::from_millis(10);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        n
    });
    std::thread::sleep(Duration::from_millis(500));
    let text = |extra: &str| crate::util::Flowd::config_text(f.dir.path(), &format!("{base}\n{extra}"));
    // 1: same config (nothing restarts); 2: a third collector (backends restart); 3: same again.
    // Each reload is awaited before the next SIGHUP (signals of one kind coalesce).
    for (i, extra) in ["# reload 1", &format!("UDP_FIREFLY_DST=['{}', '{}', '{}']", a.addr, b.addr, c.addr), "# reload 3"].iter().enumerate() {
        std::fs::write(&f.cfg, text(extra)).unwrap();
        f.signal(1);
        let deadline = Instant::now() + T;
        while f.stderr().matches("configuration reloaded").count() <= i {
            assert!(Instant::now() < deadline, "reload {} not done:\n{}", i + 1, tail(&f.stderr()));
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(f.stderr().contains("backends restarted"));
    let pid = f.child.id();
    let (st, took) = f.stop_keep();
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(st.success(), "exit status {st:?}\n{}", tail(&f.stderr()));
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    assert!(vm_rss_kb(pid).is_none(), "flowd is gone");
    let log = f.stderr();
    assert_eq!(log.matches("configuration reloaded").count(), 3, "{}", tail(&log));
    for col in [&a, &b, &c] {
        col.wait_for(u64::MAX, Duration::from_millis(500));
    }
    let (ga, gb, gc) = (a.finish(), b.finish(), c.finish());
    // Every datagram is a complete firefly; A and B saw the same events in the same order;
    // C (added by reload 2) saw exactly the tail of that sequence.
    let (sa, sb, sc): (Vec<_>, Vec<_>, Vec<_>) =
        (ga.iter().map(|d| state_port(d)).collect(), gb.iter().map(|d| state_port(d)).collect(), gc.iter().map(|d| state_port(d)).collect());
    assert!(!sa.is_empty() && !sc.is_empty());
    assert_eq!(sa, sb, "an event reached one collector but not the other");
    // C was in the config from reload 2 to reload 3: it saw one unbroken stretch of A's events.
    let first = sa.iter().position(|e| *e == sc[0]).expect("C's first event went to A too");
    assert_eq!(&sa[first..first + sc.len()], &sc[..], "collector C missed events in its stretch");
    let ev = totals(&log, "flowd_events_total");
    assert_eq!(ev.values().sum::<u64>(), sa.len() as u64, "every event read was sent");
    assert!(sa.len() as u64 <= written);
    eprintln!("signals: {written} lines written in {took:?} after SIGTERM, {} events handled", sa.len());
}

/// A TCP server on loopback; `answer(i)` gives the reply to connection i (`None`: accept
/// and never answer). Accepted connection numbers are reported on the channel.
fn http_server(answer: impl Fn(usize) -> Option<String> + Send + 'static) -> (String, mpsc::Receiver<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api.json", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let held = Arc::new(Mutex::new(Vec::new()));
    std::thread::spawn(move || {
        for (i, s) in l.incoming().enumerate() {
            let Ok(mut s) = s else { return };
            let _ = tx.send(i);
            match answer(i) {
                Some(body) => {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", body.len(), body);
                }
                None => held.lock().unwrap().push(s),
            }
        }
    });
    (url, rx)
}

#[test]
fn registry_returning_junk_or_hanging_at_start_falls_back_within_the_timeout() {
    let sink = Sink::v4();
    let (junk, _) = http_server(|_| Some("<html>not json</html>".into()));
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nFLOW_MAP_API='{junk}'", sink.addr()));
    assert!(f.stderr().contains("starting on the bundled registry"), "{}", f.stderr());
    f.wait_log("refresh failed, keeping the registry in force", T);
    assert!(f.stderr().contains("not a flow-map registry"), "{}", f.stderr());
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 atlas Debug\n");
    assert_eq!(json_of(&sink.recv(1, T)[0])["context"]["experiment-id"], 2);
    drop(f);

    let (hang, accepted) = http_server(|_| None);
    let t0 = Instant::now();
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nFLOW_MAP_API='{hang}'\nFLOW_MAP_TIMEOUT=2", sink.addr()));
    let took = t0.elapsed();
    assert!(accepted.recv_timeout(T).is_ok(), "flowd connected to the registry");
    assert!(took < Duration::from_secs(2), "start took {took:?}: a hanging registry must not delay readiness");
    assert!(f.stderr().contains("starting on the bundled registry"), "{}", f.stderr());
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 cms 1\n");
    assert_eq!(json_of(&sink.recv(1, T)[0])["context"]["experiment-id"], 3);
}

#[test]
fn a_hanging_registry_refresh_never_stalls_the_loop() {
    let col = Collector::start();
    let body = r#"{"experiments":[{"expName":"one","expId":101,"activities":[{"activityName":"a","activityId":1}]}]}"#;
    let (url, accepted) = http_server(move |i| (i == 0).then(|| body.to_string()));
    let mut f =
        Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nFLOW_MAP_API='{url}'\nFLOW_MAP_REFRESH=1\nFLOW_MAP_TIMEOUT=60", col.addr));
    assert_eq!(accepted.recv_timeout(T), Ok(0));
    // The first refresh connects and hangs (for up to 60 s); events must keep flowing.
    assert_eq!(accepted.recv_timeout(T), Ok(1));
    let mut lines = String::new();
    for i in 0..2000 {
        lines.push_str(&format!("start tcp 192.0.2.1 {} 198.51.100.1 2 one a\n", 1 + i));
    }
    f.write(&lines);
    col.wait_for(2000, T);
    assert_eq!(col.count(), 2000, "{}", f.stderr());
    let (st, took) = f.stop_keep();
    assert!(st.success());
    assert!(took < Duration::from_secs(5), "SIGTERM during a hung refresh took {took:?}");
    let got = col.finish();
    assert!(got.iter().all(|d| json_of(std::str::from_utf8(d).unwrap())["context"]["experiment-id"] == 101));
}

#[test]
fn unreachable_collector_and_peer_do_not_disturb_the_loop() {
    // A port with no listener: the kernel answers with ICMP port unreachable.
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let col = Collector::start();
    let mut f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=True\nUDP_FIREFLY_PORT={}\nUDP_FIREFLY_DST=['{dead}', '{}']", dead.port(), col.addr));
    let mut lines = String::new();
    for i in 0..3000 {
        lines.push_str(&format!("start udp 127.0.0.1 {} 127.0.0.3 2 2 9\n", 1 + i));
    }
    f.write(&lines);
    col.wait_for(3000, T);
    let (st, _) = f.stop_keep();
    assert!(st.success());
    assert_eq!(col.finish().len(), 3000);
    let log = f.stderr();
    let sent = totals(&log, "flowd_fireflies_sent_total");
    let failed = totals(&log, "flowd_firefly_send_errors_total");
    // Unconnected sockets get no ICMP errors: the sends count as sent; any that fail are counted.
    assert_eq!(sent.get("collector").copied().unwrap_or(0) + failed.get("collector/send_failed").copied().unwrap_or(0), 6000, "{}", tail(&log));
    assert_eq!(sent.get("peer").copied().unwrap_or(0) + failed.get("peer/send_failed").copied().unwrap_or(0), 3000);
}

#[test]
fn pipe_replaced_by_a_symlink_or_a_directory_is_moved_aside_and_recreated() {
    let sink = Sink::v4();
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr()));
    let victim = f.dir.path().join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::fs::remove_file(&f.pipe).unwrap();
    std::os::unix::fs::symlink(&victim, &f.pipe).unwrap();
    f.wait_log("replaced by a non-FIFO file", T);
    f.wait_log("re-created it", T);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n", "the link's target is untouched");
    let aside = f.pipe.with_extension("not-a-fifo");
    assert!(std::fs::symlink_metadata(&aside).unwrap().file_type().is_symlink(), "the link itself was moved aside");
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 2 9\n");
    assert_eq!(sink.recv(1, T).len(), 1);
    std::fs::remove_file(&f.pipe).unwrap();
    std::fs::remove_file(&aside).unwrap();
    std::fs::create_dir(&f.pipe).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    f.wait_log("re-created it", T);
    assert!(std::fs::symlink_metadata(&aside).unwrap().is_dir());
    let mut ok = false;
    for _ in 0..100 {
        if crate::util::is_fifo(&f.pipe) {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "FIFO back at its path:\n{}", f.stderr());
    f.write("start tcp 192.0.2.1 2 198.51.100.1 2 2 9\n");
    assert_eq!(sink.recv(1, T).len(), 1);
}

/// GET /metrics on a fresh connection; the body, if the answer was 200.
fn get_metrics(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.1 200").then_some(out)
}

#[test]
fn out_of_fds_for_http_clients_keeps_the_pipe_served_and_recovers() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let col = Collector::start();
    let mut f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nPROMETHEUS_SRV_PORT={port}", col.addr));
    let pid = f.child.id();
    assert!(get_metrics(port).is_some(), "listener up:\n{}", f.stderr());
    // Leave flowd 4 spare descriptors, then hold many client connections open.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let limit = format!("--nofile={}:{}", open + 4, open + 4);
    assert!(std::process::Command::new("prlimit").args(["--pid", &pid.to_string(), &limit]).status().unwrap().success());
    let clients: Vec<_> = (0..40).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(clients.len() > 4);
    let mut lines = String::new();
    for i in 0..1000 {
        lines.push_str(&format!("start tcp 192.0.2.1 {} 198.51.100.1 2 2 9\n", 1 + i));
    }
    f.write(&lines);
    col.wait_for(1000, T);
    assert_eq!(col.count(), 1000, "the pipe is served while accept fails:\n{}", tail(&f.stderr()));
    // Clients go away: flowd accepts again without a restart.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        if let Some(p) = get_metrics(port) {
            break p;
        }
        assert!(Instant::now() < deadline, "metrics never came back:\n{}", tail(&f.stderr()));
        std::thread::sleep(Duration::from_millis(100));
    };
    let fd_limit = page.lines().find(|l| l.starts_with("flowd_http_accept_errors_total{") && l.contains("fd_limit"));
    assert!(fd_limit.is_some_and(|l| !l.ends_with(" 0")), "accept errors counted:\n{page}");
    f.write("start tcp 192.0.2.1 5000 198.51.100.1 2 2 9\n");
    col.wait_for(1001, T);
    let (st, _) = f.stop_keep();
    assert!(st.success());
    assert_eq!(col.finish().len(), 1001);
}

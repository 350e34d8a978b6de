//! End-to-end marker tests in two network namespaces joined by a veth pair.
//!
//! Namespace A runs the marker on `vethA` and sends two TCP flows to B that differ only
//! in their source address; B captures every frame with an AF_PACKET socket. The crash
//! tests run the marker in a child process (this test binary re-executed) and kill it
//! with SIGKILL. Namespaces are deleted by `Netns::drop`, also when a test fails.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowd::backend::marker::{AttachMode, Attached, Marker, MarkerConfig, Marking, PACKETS_MARKED};
use flowd::context::Context;
use flowd::decision::Decision;
use flowd::enrich::local::LocalAddrs;
use flowd::flow::{FlowEvent, FlowKey, FlowState, Micros, Proto};
use flowd::label;
use flowd::metrics::Metrics;
use flowd::registry::{IdOrName, ScitagsRegistry};
use nix::sys::socket::{self as sk, sockopt};

const A1: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const A3: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
const B2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const PORT: u16 = 5001;
const SPORT: u16 = 40001;
/// DSCP 26 (AF31); the sender sets it with IPV6_TCLASS.
const DSCP: u8 = 26;

/// Two namespaces `a` and `b` with `vethA` (fd00::1, fd00::3) ↔ `vethB` (fd00::2).
pub struct Netns {
    pub a: String,
    pub b: String,
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Netns {
    pub fn new(tag: &str) -> Result<Netns, String> {
        let id = format!("fdt{}{tag}", std::process::id());
        let ns = Netns { a: format!("{id}a"), b: format!("{id}b") };
        sh(&["ip", "netns", "add", &ns.a])?;
        sh(&["ip", "netns", "add", &ns.b])?;
        let (a, b) = (ns.a.as_str(), ns.b.as_str());
        sh(&["ip", "link", "add", "vethA", "netns", a, "type", "veth", "peer", "name", "vethB", "netns", b])?;
        for (n, cmds) in [(a, vec!["sysctl -qw net.ipv6.auto_flowlabels=0", "sysctl -qw net.ipv4.tcp_ecn=1"]), (b, vec!["sysctl -qw net.ipv4.tcp_ecn=1"])] {
            for c in cmds {
                let mut v = vec!["ip", "netns", "exec", n];
                v.extend(c.split(' '));
                sh(&v)?;
            }
        }
        sh(&["ip", "-n", a, "addr", "add", "fd00::1/64", "dev", "vethA", "nodad"])?;
        sh(&["ip", "-n", a, "addr", "add", "fd00::3/64", "dev", "vethA", "nodad"])?;
        sh(&["ip", "-n", b, "addr", "add", "fd00::2/64", "dev", "vethB", "nodad"])?;
        for (n, dev) in [(a, "vethA"), (b, "vethB"), (a, "lo"), (b, "lo")] {
            sh(&["ip", "-n", n, "link", "set", dev, "up"])?;
        }
        Ok(ns)
    }

    /// `tc filter show dev vethA egress` in namespace A.
    pub fn egress_filters(&self) -> String {
        sh(&["ip", "netns", "exec", &self.a, "tc", "filter", "show", "dev", "vethA", "egress"]).unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a fresh thread that has entered namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread panicked")
}

fn event(state: FlowState, src: Ipv6Addr, dst: Ipv6Addr, exp: u32, act: u32) -> FlowEvent {
    let key =
        FlowKey::new(Proto::Tcp, SocketAddr::V6(SocketAddrV6::new(src, SPORT, 0, 0)), SocketAddr::V6(SocketAddrV6::new(dst, PORT, 0, 0))).expect("same family");
    FlowEvent::new(state, key, exp, act, Micros::now())
}

fn feed(m: &mut Marker, metrics: &mut Metrics, ev: &FlowEvent) -> Result<Option<Decision>, String> {
    let registry = ScitagsRegistry::bundled();
    let mut out = Vec::new();
    let mut rejected = Vec::new();
    let poll = mio::Poll::new().map_err(|e| e.to_string())?;
    let mut local = LocalAddrs::new();
    let mut cx = Context::new(Instant::now(), &mut out, &mut rejected, metrics, &registry, poll.registry(), &mut local);
    m.handle(ev, &mut cx).map_err(|e| e.to_string())
}

/// One captured A→B TCP frame.
#[derive(Clone, Copy, Debug)]
struct Seen {
    src: Ipv6Addr,
    tc: u8,
    label: u32,
    seq: u32,
    syn: bool,
    payload: usize,
}

fn parse(f: &[u8]) -> Option<Seen> {
    if f.len() < 14 + 40 + 20 || f[12..14] != [0x86, 0xDD] || f[14 + 6] != 6 {
        return None;
    }
    let ip = &f[14..];
    let w0 = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
    let tcp = &ip[40..];
    if dst != B2 || u16::from_be_bytes([tcp[2], tcp[3]]) != PORT {
        return None;
    }
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let doff = usize::from(tcp[12] >> 4) * 4;
    Some(Seen {
        src: Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?),
        tc: (w0 >> 20) as u8,
        label: w0 & 0xFFFFF,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        syn: tcp[13] & 0x02 != 0,
        payload: plen.saturating_sub(doff),
    })
}

/// Captures A→B frames in namespace B until `stop` is set.
fn capture(ns: &str, stop: Arc<AtomicBool>, ready: std::sync::mpsc::Sender<()>) -> std::thread::JoinHandle<Vec<Seen>> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let fd = sk::socket(sk::AddressFamily::Packet, sk::SockType::Raw, sk::SockFlag::empty(), sk::SockProtocol::EthAll).expect("AF_PACKET socket");
        sk::setsockopt(&fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(0, 100_000)).expect("timeout");
        sk::setsockopt(&fd, sockopt::RcvBuf, &(8 << 20)).expect("rcvbuf");
        let _ = ready.send(());
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::SeqCst) {
            match sk::recv(fd.as_fd().as_raw_fd_compat(), &mut buf, sk::MsgFlags::empty()) {
                Ok(n) => seen.extend(parse(&buf[..n.min(buf.len())])),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => panic!("capture recv: {e}"),
            }
        }
        seen
    })
}

/// Checks every captured frame: DSCP (all) and ECT(0) (data) preserved; the announced
/// flow from A1 carries `label` up to the `end` (sequence number below PHASE1) and 0
/// after; the flow from A3 is never marked. Returns (marked, after end, other) counts.
fn check_capture(seen: &[Seen], label: u32) -> (usize, usize, usize) {
    let isn1 = seen.iter().find(|s| s.src == A1 && s.syn).map(|s| s.seq).expect("SYN of the announced flow");
    assert!(seen.iter().any(|s| s.src == A3 && s.syn), "SYN of the other flow");
    let (mut p1, mut p2, mut other) = (0, 0, 0);
    // The highest sequence number seen per source: a data segment below it is a
    // retransmission, which the sender's TCP sends without ECT (RFC 3168 §6.1.5).
    // A segment whose (source, sequence number) was seen before is one too (a tail loss
    // probe resends the highest segment).
    let mut highest: HashMap<Ipv6Addr, u32> = HashMap::new();
    let mut sent: std::collections::HashSet<(Ipv6Addr, u32)> = std::collections::HashSet::new();
    for s in seen {
        assert_eq!(s.tc >> 2, DSCP, "DSCP preserved on {s:?}");
        let again = s.payload > 0 && !sent.insert((s.src, s.seq));
        let top = highest.entry(s.src).or_insert(s.seq);
        let retransmission = again || (s.seq.wrapping_sub(*top) as i32 <= 0 && !s.syn && s.seq != *top);
        if s.seq.wrapping_sub(*top) as i32 > 0 {
            *top = s.seq;
        }
        if s.payload > 0 && !retransmission && s.tc & 3 != 0b10 {
            // A first transmission must carry the ECT(0) the sender set.
            assert_eq!(s.tc & 3, 0b10, "ECT(0) preserved on data {s:?}");
        }
        if s.src == A1 {
            let rel = s.seq.wrapping_sub(isn1).wrapping_sub(1) as usize;
            if s.syn || rel < PHASE1 {
                assert_eq!(s.label, label, "announced flow, before end: {s:?}");
                p1 += 1;
            } else {
                assert_eq!(s.label, 0, "announced flow after end must be unmarked: {s:?}");
                p2 += 1;
            }
        } else if s.src == A3 {
            assert_eq!(s.label, 0, "the other flow must stay unmarked: {s:?}");
            other += 1;
        }
    }
    assert!(p1 > 10 && p2 > 2 && other > 10, "captured {p1} marked, {p2} after end, {other} other");
    (p1, p2, other)
}

trait RawFdCompat {
    fn as_raw_fd_compat(&self) -> std::os::fd::RawFd;
}
impl RawFdCompat for std::os::fd::BorrowedFd<'_> {
    fn as_raw_fd_compat(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

/// A TCP connection from `[src]:SPORT` to `[B2]:PORT` with Traffic Class DSCP<<2.
fn connect(src: Ipv6Addr) -> TcpStream {
    let fd = sk::socket(sk::AddressFamily::Inet6, sk::SockType::Stream, sk::SockFlag::empty(), None).expect("socket");
    sk::setsockopt(&fd, sockopt::Ipv6TClass, &i32::from(DSCP << 2)).expect("IPV6_TCLASS");
    sk::setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
    sk::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &sk::SockaddrIn6::from(SocketAddrV6::new(src, SPORT, 0, 0))).expect("bind");
    sk::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &sk::SockaddrIn6::from(SocketAddrV6::new(B2, PORT, 0, 0))).expect("connect");
    TcpStream::from(fd)
}

/// Server in B: accepts connections and counts bytes per peer address.
/// A TCP server on `[B2]:PORT` counting bytes per client, and a packet capture, both in
/// namespace `b`; the capture is ready when this returns.
struct Observed {
    got: Arc<Mutex<HashMap<IpAddr, usize>>>,
    stop: Arc<AtomicBool>,
    cap: std::thread::JoinHandle<Vec<Seen>>,
}

impl Observed {
    fn start(b: &str) -> Observed {
        let got = Arc::new(Mutex::new(HashMap::new()));
        let g = Arc::clone(&got);
        in_ns(b, move || serve(TcpListener::bind((B2, PORT)).expect("listen"), g));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let cap = capture(b, Arc::clone(&stop), tx);
        rx.recv_timeout(Duration::from_secs(5)).expect("capture ready");
        Observed { got, stop, cap }
    }
}

fn serve(listener: TcpListener, got: Arc<Mutex<HashMap<IpAddr, usize>>>) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let got = Arc::clone(&got);
            std::thread::spawn(move || {
                let peer = c.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    *got.lock().unwrap().entry(peer).or_insert(0) += n;
                }
            });
        }
    });
}

fn wait_for(got: &Arc<Mutex<HashMap<IpAddr, usize>>>, peer: Ipv6Addr, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().get(&IpAddr::V6(peer)).copied().unwrap_or(0) < n {
        assert!(Instant::now() < deadline, "server did not receive {n} bytes from {peer}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

const PHASE1: usize = 4 << 20;
const PHASE2: usize = 1 << 20;

#[test]
fn netns_marks_announced_flow_only_and_keeps_traffic_class() {
    if !super::can_load_marker() {
        return;
    }
    let ns = Netns::new("m").expect("namespaces");
    let Observed { got, stop, cap } = Observed::start(&ns.b);

    let g = Arc::clone(&got);
    let (marked_metric, announced_label, mode) = in_ns(&ns.a, move || {
        let mut metrics = Metrics::new();
        let mc = MarkerConfig::label(vec!["vethA".into()], 1024, AttachMode::Auto);
        let mut m = Marker::with_config(&mc).expect("marker attaches to vethA");
        let mode = m.interfaces().next().map(|(_, a)| a);
        // Announced the other way round (remote → local): the marker must swap it.
        let remote_view = FlowKey::new(Proto::Tcp, SocketAddr::V6(SocketAddrV6::new(B2, PORT, 0, 0)), SocketAddr::V6(SocketAddrV6::new(A1, SPORT, 0, 0)))
            .expect("same family");
        let start = FlowEvent::new(FlowState::Start, remote_view, 2, 9, Micros::now());
        assert_eq!(feed(&mut m, &mut metrics, &start).expect("start"), Some(Decision::Marked));
        let announced_label = m.label_of(&event(FlowState::Start, A1, B2, 2, 9).key);
        // The enrichment layer's periodic `ongoing` events reach the marker too: no new
        // flow, no new label.
        assert_eq!(feed(&mut m, &mut metrics, &FlowEvent::new(FlowState::Ongoing, remote_view, 2, 9, Micros::now())).expect("ongoing"), None);
        assert_eq!((m.flows(), m.label_of(&remote_view)), (1, announced_label));
        let chunk = vec![0x5Au8; 1 << 16];
        let mut c1 = connect(A1);
        let mut c3 = connect(A3);
        for _ in 0..PHASE1 / chunk.len() {
            c1.write_all(&chunk).expect("write c1");
            c3.write_all(&chunk).expect("write c3");
        }
        wait_for(&g, A1, PHASE1);
        wait_for(&g, A3, PHASE1);
        assert_eq!(feed(&mut m, &mut metrics, &event(FlowState::End, A1, B2, 2, 9)).expect("end"), Some(Decision::Unmarked));
        assert_eq!(m.flows(), 0);
        for _ in 0..PHASE2 / chunk.len() {
            c1.write_all(&chunk).expect("write c1");
        }
        wait_for(&g, A1, PHASE1 + PHASE2);
        drop((c1, c3));
        std::thread::sleep(Duration::from_millis(200));
        m.export(&mut metrics);
        (metrics.get(&PACKETS_MARKED, &["vethA"]), announced_label, mode)
    });
    stop.store(true, Ordering::SeqCst);
    let seen = cap.join().expect("capture thread");

    let label = announced_label.expect("flow was marked");
    assert_eq!(label::decode(label), (2, 9));
    assert_eq!(label & label::SEMANTIC_MASK, label::encode(2, 9, 0).unwrap());
    assert_eq!(mode, Some(Attached::Tcx), "kernel 6.6+ must use TCX");
    assert!(marked_metric.unwrap_or(0.0) > 0.0, "marked counter exported: {marked_metric:?}");

    let (p1, p2, other) = check_capture(&seen, label);
    println!("captured {p1} marked frames, {p2} after end, {other} of the unannounced flow; label {label:#07x}");
}

/// Child side of the crash tests: attaches a marker in the namespace named by
/// `FLOWD_TEST_MARKER_CHILD`, prints READY and waits to be killed. A no-op otherwise.
#[test]
fn child_marker_helper() {
    let Ok(ns) = std::env::var("FLOWD_TEST_MARKER_CHILD") else { return };
    let mode = AttachMode::parse(&std::env::var("FLOWD_MARKER_ATTACH").unwrap_or_default()).expect("mode");
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    let mc = MarkerConfig::label(vec!["vethA".into()], 64, mode);
    let _m = Marker::with_config(&mc).expect("child marker");
    println!("FLOWD-CHILD-READY");
    std::io::stdout().flush().expect("flush");
    // Killed by the parent long before this; the bound keeps a lost child from lingering.
    std::thread::sleep(Duration::from_secs(60));
}

/// Runs the marker in a child process, waits until it is attached, then SIGKILLs it.
fn run_and_kill_child(ns: &str, mode: &str, while_alive: impl FnOnce()) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["--exact", "marker::netns::child_marker_helper", "--nocapture", "--test-threads=1"])
        .env("FLOWD_TEST_MARKER_CHILD", ns)
        .env("FLOWD_MARKER_ATTACH", mode)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let ready = BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.trim_end().ends_with("FLOWD-CHILD-READY"));
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!("child marker did not become ready");
    }
    while_alive();
    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");
}

fn tcx_progs(ns: &str) -> Vec<String> {
    in_ns(ns, || {
        let (_, progs) = aya::programs::SchedClassifier::query_tcx("vethA", aya::programs::TcAttachType::Egress).expect("query TCX");
        progs.iter().map(|p| p.name_as_str().unwrap_or("?").to_string()).collect()
    })
}

fn add_foreign_filters(ns: &Netns) {
    let dir = std::env::temp_dir().join(format!("flowd-foreign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let src = dir.join("foreign.bpf.c");
    let obj = dir.join("foreign.bpf.o");
    std::fs::write(
        &src,
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n\
         SEC(\"classifier\") int foreign_ok(struct __sk_buff *skb) { return 0; }\n\
         char LICENSE[] SEC(\"license\") = \"GPL\";\n",
    )
    .expect("write foreign.bpf.c");
    let o = obj.to_str().expect("utf-8 path");
    sh(&["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", src.to_str().unwrap(), "-o", o]).expect("compile foreign filter");
    let a = ns.a.as_str();
    sh(&["ip", "netns", "exec", a, "tc", "qdisc", "add", "dev", "vethA", "clsact"]).expect("clsact");
    sh(&["ip", "netns", "exec", a, "tc", "filter", "add", "dev", "vethA", "egress", "prio", "1", "protocol", "all", "u32", "match", "u32", "0", "0"])
        .expect("foreign u32 filter");
    sh(&["ip", "netns", "exec", a, "tc", "filter", "add", "dev", "vethA", "egress", "prio", "2", "bpf", "da", "obj", o, "sec", "classifier"])
        .expect("foreign bpf filter");
    let _ = std::fs::remove_dir_all(&dir);
}

fn count(filters: &str, what: &str) -> usize {
    filters.lines().filter(|l| l.contains(what)).count()
}

fn assert_foreign_intact(ns: &Netns, when: &str) {
    let f = ns.egress_filters();
    assert!(f.contains(" u32 ") && f.contains("foreign_ok"), "foreign filters lost {when}:\n{f}");
}

#[test]
fn netns_crash_leaves_nothing_with_tcx_and_stale_clsact_is_cleaned() {
    if !super::can_load_marker() {
        return;
    }
    let ns = Netns::new("c").expect("namespaces");
    add_foreign_filters(&ns);

    // TCX: the link dies with the process.
    run_and_kill_child(&ns.a, "tcx", || {
        assert_eq!(tcx_progs(&ns.a), vec!["flowd_mark".to_string()], "attached via TCX while alive");
    });
    assert!(tcx_progs(&ns.a).is_empty(), "a TCX link must not survive kill -9");
    assert_eq!(count(&ns.egress_filters(), "flowd_mark"), 0);
    assert_foreign_intact(&ns, "after TCX crash");

    // clsact: the filter survives the crash ...
    run_and_kill_child(&ns.a, "clsact", || {
        assert_eq!(count(&ns.egress_filters(), "flowd_mark"), 1, "clsact filter while alive");
    });
    assert_eq!(count(&ns.egress_filters(), "flowd_mark"), 1, "clsact filter is stale after kill -9");
    assert_foreign_intact(&ns, "after clsact crash");

    // ... and the next start removes it, attaches exactly one, and a clean stop removes ours only.
    let a = ns.a.clone();
    let filters_while_running = in_ns(&ns.a, move || {
        let mc = MarkerConfig::label(vec!["vethA".into()], 64, AttachMode::Clsact);
        let m = Marker::with_config(&mc).expect("restart in clsact mode");
        let f = sh(&["ip", "netns", "exec", &a, "tc", "filter", "show", "dev", "vethA", "egress"]).unwrap_or_default();
        drop(m);
        f
    });
    assert_eq!(count(&filters_while_running, "flowd_mark"), 1, "stale filter replaced:\n{filters_while_running}");
    assert_eq!(count(&ns.egress_filters(), "flowd_mark"), 0, "clean stop removes our filter");
    assert_foreign_intact(&ns, "after clean clsact stop");

    // A stale clsact filter is also removed when the next flowd uses TCX.
    run_and_kill_child(&ns.a, "clsact", || {});
    assert_eq!(count(&ns.egress_filters(), "flowd_mark"), 1);
    in_ns(&ns.a, || {
        let mc = MarkerConfig::label(vec!["vethA".into()], 64, AttachMode::Auto);
        let m = Marker::with_config(&mc).expect("restart in auto mode");
        assert_eq!(m.interfaces().next().map(|(_, a)| a), Some(Attached::Tcx));
    });
    assert_eq!(count(&ns.egress_filters(), "flowd_mark"), 0, "stale clsact filter removed by a TCX start");
    assert!(tcx_progs(&ns.a).is_empty(), "clean TCX stop detaches");
    assert_foreign_intact(&ns, "at the end");
}

/// The real daemon, run in namespace A with `ip netns exec` (which execs, so the child's
/// pid is flowd's own and SIGKILL hits flowd).
struct NsFlowd {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pipe: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl NsFlowd {
    fn start(ns: &str) -> NsFlowd {
        NsFlowd::start_with(ns, "")
    }

    /// Starts flowd with `extra` appended to the config (a key set again wins).
    fn start_with(ns: &str, extra: &str) -> NsFlowd {
        NsFlowd::start_text(ns, &|pipe: &std::path::Path| {
            format!("PLUGIN='np_api'\nBACKEND='ebpf'\nNETWORK_INTERFACE='vethA'\nNP_API_FILE='{}'\nPID_FILE=''\nPROMETHEUS_SRV_PORT=0\n{extra}", pipe.display())
        })
    }

    /// Starts flowd on the config `text(pipe path)`, written as it is (flowd.cfg, or a
    /// flowd-go YAML file).
    fn start_text(ns: &str, text: &dyn Fn(&std::path::Path) -> String) -> NsFlowd {
        let dir = std::env::temp_dir().join(format!("flowd-netns-{}-{ns}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let pipe = dir.join("np");
        let cfg = dir.join("flowd.cfg");
        let log = dir.join("stderr.log");
        std::fs::write(&cfg, text(&pipe)).expect("write config");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_flowd"), "-d", "-c"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .env_remove("JOURNAL_STREAM")
            .spawn()
            .expect("spawn flowd");
        let f = NsFlowd { child, dir, pipe, log };
        f.wait_log("ready", Duration::from_secs(10));
        f
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            assert!(Instant::now() < deadline, "flowd log never contained {needle:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn write(&self, line: &str) {
        let mut f = std::fs::OpenOptions::new().write(true).open(&self.pipe).expect("open pipe");
        f.write_all(line.as_bytes()).expect("write pipe");
    }
}

impl Drop for NsFlowd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn netns_real_flowd_marks_via_pipe_and_kill9_leaves_only_foreign_filters() {
    if !super::can_load_marker() {
        return;
    }
    let ns = Netns::new("f").expect("namespaces");
    add_foreign_filters(&ns);
    let Observed { got, stop, cap } = Observed::start(&ns.b);

    let mut flowd = NsFlowd::start(&ns.a);
    flowd.wait_log("attached to vethA egress (tcx)", Duration::from_secs(5));
    assert_eq!(tcx_progs(&ns.a), vec!["flowd_mark".to_string()]);
    flowd.write(&format!("start tcp fd00::1 {SPORT} fd00::2 {PORT} 2 9\n"));
    flowd.wait_log("marker: marking", Duration::from_secs(5));
    // A reload that re-creates the marker (new map size) must replay the open flow into
    // the new, empty map: the traffic below is only marked if it did.
    let cfg = flowd.dir.join("flowd.cfg");
    let text = std::fs::read_to_string(&cfg).expect("read config");
    std::fs::write(&cfg, format!("{text}EBPF_MAP_SIZE=2048\n")).expect("rewrite config");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(flowd.child.id() as i32), nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    flowd.wait_log("replayed 1 open flows", Duration::from_secs(10));

    let (c1, c3) = in_ns(&ns.a, || (connect(A1), connect(A3)));
    let chunk = vec![0x5Au8; 1 << 16];
    let (mut c1, mut c3) = (c1, c3);
    for _ in 0..PHASE1 / chunk.len() {
        c1.write_all(&chunk).expect("write c1");
        c3.write_all(&chunk).expect("write c3");
    }
    wait_for(&got, A1, PHASE1);
    wait_for(&got, A3, PHASE1);
    flowd.write(&format!("end tcp fd00::1 {SPORT} fd00::2 {PORT} 2 9\n"));
    flowd.wait_log("marker: stopped marking", Duration::from_secs(5));
    for _ in 0..PHASE2 / chunk.len() {
        c1.write_all(&chunk).expect("write c1");
    }
    wait_for(&got, A1, PHASE1 + PHASE2);
    drop((c1, c3));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let seen = cap.join().expect("capture thread");

    let label = seen.iter().find(|s| s.src == A1 && s.syn).map(|s| s.label).expect("SYN captured");
    assert_eq!(label::decode(label), (2, 9), "label {label:#07x}");
    assert_eq!(label & label::SEMANTIC_MASK, label::encode(2, 9, 0).unwrap());
    let (p1, p2, other) = check_capture(&seen, label);
    println!("real flowd: {p1} marked frames (label {label:#07x}), {p2} after end, {other} unannounced");

    flowd.child.kill().expect("kill -9 flowd");
    flowd.child.wait().expect("reap flowd");
    assert!(tcx_progs(&ns.a).is_empty(), "TCX link must vanish with the killed flowd");
    assert_eq!(count(&ns.egress_filters(), "flowd_mark"), 0);
    assert_foreign_intact(&ns, "after kill -9 of the real flowd");
}

#[test]
fn netns_marker_reattaches_to_a_deleted_and_recreated_interface() {
    if !super::can_load_marker() {
        return;
    }
    let ns = Netns::new("r").expect("namespaces");
    let flowd = NsFlowd::start(&ns.a);
    flowd.wait_log("attached to vethA egress (tcx)", Duration::from_secs(5));
    flowd.write(&format!("start tcp fd00::1 {SPORT} fd00::2 {PORT} 2 9\n"));
    flowd.wait_log("marker: marking", Duration::from_secs(5));

    sh(&["ip", "-n", &ns.a, "link", "del", "vethA"]).expect("delete vethA");
    flowd.wait_log("interface vethA disappeared", Duration::from_secs(15));
    let (a, b) = (ns.a.as_str(), ns.b.as_str());
    sh(&["ip", "link", "add", "vethA", "netns", a, "type", "veth", "peer", "name", "vethB", "netns", b]).expect("re-create veth");
    sh(&["ip", "-n", a, "addr", "add", "fd00::1/64", "dev", "vethA", "nodad"]).expect("addr");
    sh(&["ip", "-n", b, "addr", "add", "fd00::2/64", "dev", "vethB", "nodad"]).expect("addr");
    sh(&["ip", "-n", a, "link", "set", "vethA", "up"]).expect("up");
    sh(&["ip", "-n", b, "link", "set", "vethB", "up"]).expect("up");
    flowd.wait_log("re-attached to vethA egress", Duration::from_secs(15));
    assert_eq!(tcx_progs(&ns.a), vec!["flowd_mark".to_string()]);

    // The open flow is marked again on the new interface: its SYN carries the label.
    let Observed { got, stop, cap } = Observed::start(&ns.b);
    let mut c1 = in_ns(&ns.a, || connect(A1));
    c1.write_all(&[0x5A; 4096]).expect("write");
    wait_for(&got, A1, 4096);
    drop(c1);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    let seen = cap.join().expect("capture thread");
    let label = seen.iter().find(|s| s.src == A1 && s.syn).map(|s| s.label).expect("SYN captured");
    assert_eq!(label::decode(label), (2, 9), "label {label:#07x} after re-attach");
}

/// Issue 17 part 2, end to end with the real binary: `PLUGIN='perfsonar'` marks every
/// egress IPv6 TCP packet of a connection nobody announced with experiment 1 / activity
/// 2 (one label for the whole flow, Traffic Class kept), while a flow announced through
/// np_api on the same host keeps its own label.
#[test]
fn netns_real_flowd_perfsonar_marks_every_unannounced_tcp_packet() {
    if !super::can_load_marker() {
        return;
    }
    let ns = Netns::new("p").expect("namespaces");
    let Observed { got, stop, cap } = Observed::start(&ns.b);
    let flowd = NsFlowd::start_with(&ns.a, "PLUGIN='perfsonar,np_api'\nPERFSONAR_EXPERIMENT=1\nPERFSONAR_ACTIVITY=2\n");
    flowd.wait_log("match-all: every IPv6 TCP packet no flow claims is marked with experiment 1, activity 2", Duration::from_secs(5));
    flowd.write(&format!("start tcp fd00::1 {SPORT} fd00::2 {PORT} 2 9\n"));
    flowd.wait_log("with label", Duration::from_secs(5));

    let (mut c1, mut c3) = in_ns(&ns.a, || (connect(A1), connect(A3)));
    let chunk = vec![0x5Au8; 1 << 16];
    for _ in 0..(1 << 20) / chunk.len() {
        c1.write_all(&chunk).expect("write c1");
        c3.write_all(&chunk).expect("write c3");
    }
    wait_for(&got, A1, 1 << 20);
    wait_for(&got, A3, 1 << 20);
    drop((c1, c3));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let seen = cap.join().expect("capture thread");

    let labels = |src: Ipv6Addr| -> Vec<u32> { seen.iter().filter(|s| s.src == src).map(|s| s.label).collect() };
    for (src, exp, act) in [(A3, 1, 2), (A1, 2, 9)] {
        let l = labels(src);
        assert!(l.len() > 10, "{src}: only {} frames captured", l.len());
        assert!(l.iter().all(|x| *x == l[0]), "{src}: one label per flow, got {:x?}", l.iter().collect::<std::collections::BTreeSet<_>>());
        assert_eq!(label::decode(l[0]), (exp, act), "{src}: label {:#07x}", l[0]);
        assert_eq!(l[0] & label::SEMANTIC_MASK, label::encode(exp, act, 0).unwrap());
    }
    assert!(seen.iter().all(|s| s.tc >> 2 == DSCP), "DSCP kept on every frame");
    println!("perfsonar: unannounced flow {:#07x}, announced flow {:#07x}", labels(A3)[0], labels(A1)[0]);
}

/// Issue 17's done check: OSG's perfSONAR installer config for flowd-go, unmodified but
/// for the interface name and the collector (a sink here), run by the real binary: every
/// egress IPv6 TCP packet of a real connection carries experiment 1 / activity 2, and no
/// firefly with port 0 or `::` goes to the collector (the plugin announces no flow).
#[test]
fn netns_flowd_go_perfsonar_config_runs_as_it_is() {
    if !super::can_load_marker() {
        return;
    }
    let ns = Netns::new("g").expect("namespaces");
    let sink = in_ns(&ns.a, || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("sink");
        s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
        s
    });
    let port = sink.local_addr().expect("sink addr").port();
    let Observed { got, stop, cap } = Observed::start(&ns.b);
    let yaml = format!(
        "plugins:\n  perfsonar: {{activityId: 2, experimentId: 1}}\nbackends:\n  firefly: {{sendToCollector: true, collectorAddress: 127.0.0.1, collectorPort: {port},\n            prependSyslog: false, enrich: true}}\n  marker: {{targetInterfaces: [vethA], markingStrategy: label, forceHookRemoval: true}}\nenrichers: {{period: 60000, netlink: {{}}, skops: {{}}}}\n"
    );
    let flowd = NsFlowd::start_text(&ns.a, &|_| yaml.clone());
    flowd.wait_log("match-all: every IPv6 TCP packet no flow claims is marked with experiment 1, activity 2", Duration::from_secs(5));
    let log = flowd.stderr();
    assert!(log.contains("forceHookRemoval") && log.contains("skops"), "stale and unsupported keys are warned about:\n{log}");
    let mut c3 = in_ns(&ns.a, || connect(A3));
    let chunk = vec![0x5Au8; 1 << 16];
    for _ in 0..(1 << 20) / chunk.len() {
        c3.write_all(&chunk).expect("write c3");
    }
    wait_for(&got, A3, 1 << 20);
    drop(c3);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let seen = cap.join().expect("capture thread");
    let l: Vec<u32> = seen.iter().filter(|s| s.src == A3).map(|s| s.label).collect();
    assert!(l.len() > 10 && l.iter().all(|x| *x == l[0]), "one label on every frame: {} frames", l.len());
    assert_eq!(label::decode(l[0]), (1, 2), "label {:#07x}", l[0]);
    let mut buf = [0u8; 2048];
    assert!(sink.recv(&mut buf).is_err(), "no firefly for the match-all marking: {}", String::from_utf8_lossy(&buf));
}

/// Runs `tshark -r pcap` with `fields` for the A→B TCP frames of the test flows.
fn tshark_fields(pcap: &std::path::Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["-r".to_string(), pcap.display().to_string(), "-Y".into(), format!("tcp.dstport == {PORT}"), "-T".into(), "fields".into()];
    for f in fields {
        args.push("-e".into());
        args.push((*f).into());
    }
    let out = Command::new("tshark").args(&args).output().expect("tshark -r");
    assert!(out.status.success(), "tshark -r failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(String::from).collect()).collect()
}

/// Issue 17 part 4, end to end: each extension-header marking over a veth with real TCP
/// (TSO super-packets included), captured in the peer namespace and decoded by tshark:
/// the announced flow carries option 0x1e with exp<<8|act = 2<<8|9 in the header the
/// marking names, the other flow carries none, and both transfer all their data.
#[test]
fn netns_extension_headers_decoded_by_tshark() {
    if !super::can_load_marker() {
        return;
    }
    if Command::new("tshark").arg("--version").output().map(|o| !o.status.success()).unwrap_or(true) {
        crate::util::skip("tshark is not installed (scripts/test-deps installs it)");
        return;
    }
    for (i, marking) in [Marking::Destination, Marking::HopByHop, Marking::HopByHopDestination].into_iter().enumerate() {
        let ns = Netns::new(&format!("e{i}")).expect("namespaces");
        let got = Arc::new(Mutex::new(HashMap::new()));
        let g = Arc::clone(&got);
        in_ns(&ns.b, move || serve(TcpListener::bind((B2, PORT)).expect("listen"), g));
        let pcap = std::env::temp_dir().join(format!("flowd-eh-{}-{i}.pcap", std::process::id()));
        let mut tshark = Command::new("ip")
            .args(["netns", "exec", &ns.b, "tshark", "-q", "-i", "vethB", "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tshark");
        let mut err = BufReader::new(tshark.stderr.take().expect("stderr"));
        let mut line = String::new();
        while !line.contains("Capturing on") {
            line.clear();
            assert!(err.read_line(&mut line).expect("tshark stderr") > 0, "tshark did not start capturing");
        }
        let g = Arc::clone(&got);
        let counters = in_ns(&ns.a, move || {
            let mut metrics = Metrics::new();
            let mc = MarkerConfig { marking, ..MarkerConfig::label(vec!["vethA".into()], 1024, AttachMode::Auto) };
            let mut m = Marker::with_config(&mc).expect("marker attaches to vethA");
            feed(&mut m, &mut metrics, &event(FlowState::Start, A1, B2, 2, 9)).expect("start");
            assert_eq!(m.label_of(&event(FlowState::Start, A1, B2, 2, 9).key), Some(2 << 8 | 9), "the tag, no entropy");
            let chunk = vec![0x5Au8; 1 << 16];
            let (mut c1, mut c3) = (connect(A1), connect(A3));
            for _ in 0..(2 << 20) / chunk.len() {
                c1.write_all(&chunk).expect("write c1");
                c3.write_all(&chunk).expect("write c3");
            }
            wait_for(&g, A1, 2 << 20);
            wait_for(&g, A3, 2 << 20);
            drop((c1, c3));
            std::thread::sleep(Duration::from_millis(300));
            m.program().total_counters().expect("counters")
        });
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(tshark.id() as i32), nix::sys::signal::Signal::SIGINT).expect("stop tshark");
        tshark.wait().expect("reap tshark");

        let rows = tshark_fields(&pcap, &["ipv6.src", "ipv6.nxt", "ipv6.opt.type", "ipv6.opt.experimental", "frame.len", "ipv6.plen"]);
        let _ = std::fs::remove_file(&pcap);
        let (want_nxt, want_types, want_value) = match marking {
            // Option 0x1e with its 3 bytes exp<<8|act, then the Pad1 (0x00) that ends the header.
            Marking::Destination => ("60", "0x1e,0x00", "000209"),
            Marking::HopByHop => ("0", "0x1e,0x00", "000209"),
            _ => ("0", "0x1e,0x00,0x1e,0x00", "000209,000209"),
        };
        let len = marking.inserted_len();
        let (mut tagged, mut big, mut too_big, mut other) = (0, 0, 0, 0);
        for r in &rows {
            let frame_len: usize = r[4].parse().expect("frame.len");
            let value = r[3].replace(':', "");
            if r[0] == A1.to_string() {
                if r[1] == want_nxt {
                    assert_eq!((r[2].as_str(), value.as_str()), (want_types, want_value), "{}: {r:?}", marking.name());
                    tagged += 1;
                    big += usize::from(frame_len > 1514);
                } else {
                    // Only a full-size packet that is not a GSO packet is left without it.
                    assert_eq!(r[1], "6", "{}: {r:?}", marking.name());
                    assert!(frame_len + len > 1514 && frame_len <= 1514, "{}: unmarked frame that would have fitted: {r:?}", marking.name());
                    too_big += 1;
                }
            } else {
                assert_eq!((r[0].as_str(), r[1].as_str(), r[2].as_str()), (A3.to_string().as_str(), "6", ""), "{}: unannounced flow: {r:?}", marking.name());
                other += 1;
            }
        }
        println!("{}: {tagged} frames with the header ({big} GSO super-packets), {too_big} too big, {other} of the other flow; {counters:?}", marking.name());
        assert!(tagged > 10 && big > 0 && other > 10, "{}: {tagged} tagged, {big} GSO, {other} other", marking.name());
        assert!(counters.eh_inserted > 0 && counters.eh_failed == 0, "{}: {counters:?}", marking.name());
        assert!(too_big <= counters.eh_too_big as usize, "{}: every unmarked frame seen was counted too big ({counters:?})", marking.name());
    }
}

/// The match-all default given as registry names waits for the first loop turn
/// (`poll_at` is due at once), is resolved through the registry then, and an unknown name
/// leaves the kernel without a default.
#[test]
fn netns_match_all_names_are_resolved_on_the_first_turn() {
    if !super::can_load_marker() {
        return;
    }
    let ns = Netns::new("n").expect("namespaces");
    in_ns(&ns.a, || {
        let registry = ScitagsRegistry::bundled();
        let turn = |m: &mut Marker| {
            let (mut out, mut metrics, mut local, mut rejected) = (Vec::new(), Metrics::new(), LocalAddrs::new(), Vec::new());
            let poll = mio::Poll::new().expect("poll");
            let mut cx = Context::new(Instant::now(), &mut out, &mut rejected, &mut metrics, &registry, poll.registry(), &mut local);
            m.on_timeout(&mut cx);
            assert!(out.is_empty(), "the marker announces nothing");
        };
        let named = |exp: &str, act: &str| MarkerConfig {
            match_all: Some((IdOrName::parse(exp), IdOrName::parse(act))),
            ..MarkerConfig::label(vec!["vethA".into()], 64, AttachMode::Auto)
        };
        let mut m = Marker::with_config(&named("atlas", "perfSONAR")).expect("marker");
        assert_eq!(m.match_all(), None, "names wait for the registry");
        assert!(m.poll_at().is_some_and(|at| at <= Instant::now()), "due at once");
        turn(&mut m);
        assert_eq!(m.match_all(), Some((2, 2)));
        assert_eq!(m.program().default_mark().expect("config map"), Some(label::encode(2, 2, 0).unwrap()));
        assert!(m.poll_at().is_some_and(|at| at > Instant::now() + Duration::from_secs(4)), "then every 5 s");
        drop(m);

        let mut m = Marker::with_config(&named("atlas", "no such activity")).expect("marker");
        turn(&mut m);
        assert_eq!((m.match_all(), m.program().default_mark().expect("config map")), (None, None));
        // Numeric ids are in place before the first turn, with an extension-header marking too.
        let ids = MarkerConfig { marking: Marking::Destination, ..named("3", "14") };
        let mut m = Marker::with_config(&ids).expect("marker");
        assert_eq!((m.match_all(), m.program().default_mark().expect("config map")), (Some((3, 14)), Some(3 << 8 | 14)));
    });
}

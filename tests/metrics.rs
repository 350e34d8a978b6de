//! The metrics listener and the prometheus backend, end to end: scrape the running binary.
//!
//! Covers the page (names, types, labels, promtool), the per-flow series of real loopback
//! TCP flows announced through np_api, and the listener's hardening: malformed, oversized,
//! slow and half-closed requests, HEAD, 404/405, keep-alive, and the connection cap, each
//! while another client is still served.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::util::{Flowd, TempDir};

const T: Duration = Duration::from_secs(5);

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// flowd with the listener on a free loopback port; returns it with the port.
fn start(extra: &str) -> (Flowd, u16) {
    let port = free_port();
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nPROMETHEUS_SRV_PORT={port}\n{extra}"));
    (f, port)
}

pub(crate) fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// One response: status code, head lines, body.
pub(crate) struct Resp {
    pub(crate) code: u16,
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// Reads one response from `s`; `head_only` for HEAD (no body despite Content-Length).
pub(crate) fn read_resp(s: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Option<Resp> {
    let mut chunk = [0u8; 65536];
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(pending[..end].to_vec()).unwrap();
    pending.drain(..end);
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut r = Resp { code, head, body: Vec::new() };
    let len: usize = if head_only { 0 } else { r.header("content-length").unwrap().parse().unwrap() };
    while pending.len() < len {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed inside a body");
        pending.extend_from_slice(&chunk[..n]);
    }
    r.body = pending.drain(..len).collect();
    Some(r)
}

/// Sends raw bytes on a fresh connection and reads one response.
pub(crate) fn raw(port: u16, req: &[u8]) -> Resp {
    let mut s = connect(port);
    s.write_all(req).unwrap();
    read_resp(&mut s, &mut Vec::new(), false).expect("a response")
}

/// GET /metrics on a fresh connection.
pub(crate) fn scrape(port: u16) -> String {
    let r = raw(port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(r.code, 200, "{}", r.head);
    r.text()
}

/// `(labels, value)` of every sample of `name` on a page.
pub(crate) fn samples(page: &str, name: &str) -> Vec<(String, f64)> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (n == name).then(|| (labels.to_string(), value.parse().unwrap()))
        })
        .collect()
}

fn type_of(page: &str, name: &str) -> Option<String> {
    page.lines().find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")).map(str::to_string))
}

/// Waits until the page satisfies `ok` (events travel through the pipe asynchronously).
fn scrape_until(port: u16, ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = raw(port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let page = r.text();
        if (r.code == 200 && ok(&page)) || std::time::Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `promtool check metrics` on the page, or says SKIP when promtool is missing.
fn promtool_check(page: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        crate::util::skip("promtool not installed (apt-get install prometheus)");
        return;
    };
    child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "promtool check metrics:\n{text}\n---\n{page}");
}

#[test]
fn self_metrics_are_served_with_types_and_pass_promtool() {
    let (f, port) = start("");
    f.write("start tcp 192.0.2.1 1094 198.51.100.7 40000 atlas Debug\nbogus line\n");
    let page = scrape_until(port, |p| samples(p, "flowd_open_flows").first().is_some_and(|s| s.1 == 1.0));
    for (name, kind) in [
        ("flowd_events_total", "counter"),
        ("flowd_bad_input_total", "counter"),
        ("flowd_backend_errors_total", "counter"),
        ("flowd_fireflies_sent_total", "counter"),
        ("flowd_firefly_send_errors_total", "counter"),
        ("flowd_registry_refresh_failures_total", "counter"),
        ("flowd_registry_last_success_timestamp_seconds", "gauge"),
        ("flowd_registry_age_seconds", "gauge"),
        ("flowd_open_flows", "gauge"),
        ("flowd_build_info", "gauge"),
        ("flowd_http_requests_total", "counter"),
        ("flowd_http_connections_refused_total", "counter"),
        ("flowd_http_connections_open", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
    ] {
        assert_eq!(type_of(&page, name).as_deref(), Some(kind), "{name} in\n{page}");
    }
    assert_eq!(samples(&page, "flowd_events_total"), [(r#"plugin="np_api",state="start""#.to_string(), 1.0)]);
    assert_eq!(samples(&page, "flowd_bad_input_total").iter().map(|s| s.1).sum::<f64>(), 1.0, "{page}");
    let build = samples(&page, "flowd_build_info");
    assert_eq!(build.len(), 1);
    assert!(build[0].0.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{build:?}");
    assert!(samples(&page, "flowd_http_requests_total").iter().any(|(l, v)| l == r#"code="200""# && *v >= 1.0));
    assert!(samples(&page, "process_resident_memory_bytes")[0].1 > 0.0);
    promtool_check(&page);
    let r = raw(port, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!((r.code, r.header("connection").as_deref()), (200, Some("close")));
    assert!(r.text().contains("/metrics"));
}

#[test]
fn ongoing_events_are_counted_by_origin_and_reach_every_backend() {
    let (f, port) = start("BACKEND='udp_firefly,dummy'\nUDP_FIREFLY_ONGOING_INTERVAL=1");
    f.write("start tcp 192.0.2.1 1094 198.51.100.7 40000 2 9\n");
    // The dummy backend logs every event it is handed, the periodic ongoing ones too.
    f.wait_log("flow ongoing tcp 192.0.2.1:1094 -> 198.51.100.7:40000 exp=2", Duration::from_secs(10));
    let enrich = r#"plugin="enrich",state="ongoing""#;
    let counted = |p: &str| samples(p, "flowd_events_total").into_iter().find(|(l, _)| l == enrich).map(|s| s.1);
    let page = scrape_until(port, |p| counted(p).is_some_and(|n| n >= 2.0));
    let ongoing = counted(&page).unwrap_or_else(|| panic!("no {enrich} events in\n{page}"));
    assert!(ongoing >= 2.0, "{page}");
    assert!(samples(&page, "flowd_events_total").contains(&(r#"plugin="np_api",state="start""#.to_string(), 1.0)), "{page}");
    // Every ongoing event produced went through the fan-out in the turn that made it.
    assert_eq!(samples(&page, "flowd_fireflies_ongoing_total"), [(String::new(), ongoing)], "{page}");
    promtool_check(&page);
}

#[test]
fn head_404_405_and_two_requests_on_one_keep_alive_connection() {
    let (_f, port) = start("");
    let mut s = connect(port);
    let mut pending = Vec::new();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let get = read_resp(&mut s, &mut pending, false).unwrap();
    assert_eq!((get.code, get.header("connection").as_deref()), (200, Some("keep-alive")));
    assert_eq!(get.header("content-type").as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    // Second request on the same connection: HEAD, with the same headers and no body.
    s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let head = read_resp(&mut s, &mut pending, true).unwrap();
    assert_eq!(head.code, 200);
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(len > 1000, "HEAD announces the GET length");
    // Pipelined: 404 and 405 in one write; both answered in order, connection kept.
    s.write_all(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\nPOST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").unwrap();
    let nf = read_resp(&mut s, &mut pending, false).unwrap();
    assert_eq!(nf.code, 404);
    let na = read_resp(&mut s, &mut pending, false).unwrap();
    assert_eq!((na.code, na.header("allow").as_deref()), (405, Some("GET, HEAD")));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let last = read_resp(&mut s, &mut pending, false).unwrap();
    assert_eq!((last.code, last.header("connection").as_deref()), (200, Some("close")));
    assert!(read_resp(&mut s, &mut pending, false).is_none(), "closed after Connection: close");
    let page = last.text();
    let codes = samples(&page, "flowd_http_requests_total");
    for code in ["404", "405"] {
        assert!(codes.iter().any(|(l, v)| l == &format!("code=\"{code}\"") && *v == 1.0), "{codes:?}");
    }
}

#[test]
fn malformed_oversized_and_half_closed_requests_get_errors() {
    let (_f, port) = start("");
    for (req, code) in [
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"GET /metrics HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET /metrics HTTP/3.0\r\nHost: a\r\n\r\n".to_vec(), 505),
        (b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789".to_vec(), 413),
        ([b"GET /".to_vec(), vec![b'a'; 9000]].concat(), 414),
        ([b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec(), vec![b'b'; 9000], b"\r\n\r\n".to_vec()].concat(), 431),
    ] {
        let mut s = connect(port);
        s.write_all(&req).unwrap();
        let r = read_resp(&mut s, &mut Vec::new(), false).expect("an error response");
        assert_eq!(r.code, code, "{}", String::from_utf8_lossy(&req[..req.len().min(60)]));
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        assert!(read_resp(&mut s, &mut Vec::new(), false).is_none(), "closed after an error");
        // Meanwhile another client is served.
        assert!(scrape(port).contains("flowd_open_flows"));
    }
    // Half-closed after a complete request: the answer still comes, then EOF.
    let mut s = connect(port);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut pending = Vec::new();
    assert_eq!(read_resp(&mut s, &mut pending, false).unwrap().code, 200);
    assert!(read_resp(&mut s, &mut pending, false).is_none());
    // Half-closed inside a request head: 400, then EOF.
    let mut s = connect(port);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_resp(&mut s, &mut pending, false).unwrap().code, 400);
    // Connected and closed without a byte: nothing to answer, no harm done.
    drop(connect(port));
    assert!(scrape(port).contains("flowd_open_flows"));
}

#[test]
fn slow_request_times_out_with_408_while_others_are_served() {
    let (_f, port) = start("");
    let mut slow = connect(port);
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n").unwrap();
    let mut idle = connect(port);
    // Trickle bytes for a while: this does not extend the deadline, and others are served.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        slow.write_all(b"X-A: b\r\n").unwrap();
        assert!(scrape(port).contains("flowd_http_connections_open"));
    }
    let r = read_resp(&mut slow, &mut Vec::new(), false).expect("a 408 before the read timeout");
    assert_eq!(r.code, 408);
    // An idle keep-alive connection is closed without an answer.
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).unwrap(), 0);
    let page = scrape(port);
    assert!(samples(&page, "flowd_http_requests_total").iter().any(|(l, v)| l == r#"code="408""# && *v == 1.0), "{page}");
}

#[test]
fn connections_over_the_cap_are_refused_and_counted() {
    let (_f, port) = start("");
    let held: Vec<TcpStream> = (0..64).map(|_| connect(port)).collect();
    let mut extra = connect(port);
    let r = read_resp(&mut extra, &mut Vec::new(), false).expect("a 503");
    assert_eq!(r.code, 503);
    drop(held);
    // Slots free up as the server notices the closes; then scraping works again.
    let page = scrape_until(port, |p| samples(p, "flowd_http_connections_refused_total").first().is_some_and(|s| s.1 >= 1.0));
    assert!(samples(&page, "flowd_http_connections_refused_total")[0].1 >= 1.0, "{page}");
}

#[test]
fn a_port_in_use_is_a_clear_startup_error() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = TempDir::new("busy");
    let text = Flowd::config_text(dir.path(), &format!("PROMETHEUS_SRV_PORT={port}"));
    let cfg = dir.path().join("flowd.cfg");
    std::fs::write(&cfg, text).unwrap();
    let (st, _out, err) = crate::util::run(&["-f", "-c", cfg.to_str().unwrap()]);
    assert_eq!(st.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.contains("cannot listen for metrics")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&format!("127.0.0.1:{port}")) && line.to_lowercase().contains("in use"), "{line}");
}

/// The families the Python flowd's README documents, with the type each must have.
const PY_FAMILIES: &[(&str, &str)] = &[
    ("flow_tcp_rto", "gauge"),
    ("flow_tcp_rtt", "gauge"),
    ("flow_tcp_rtt_var", "gauge"),
    ("flow_tcp_ato", "gauge"),
    ("flow_tcp_mss", "gauge"),
    ("flow_tcp_pmtu", "gauge"),
    ("flow_tcp_rcvmss", "gauge"),
    ("flow_tcp_advmss", "gauge"),
    ("flow_tcp_cwnd", "gauge"),
    ("flow_tcp_ssthresh", "gauge"),
    ("flow_tcp_bytes_sent_total", "counter"),
    ("flow_tcp_bytes_acked_total", "counter"),
    ("flow_tcp_bytes_received_total", "counter"),
    ("flow_tcp_segs_out_total", "counter"),
    ("flow_tcp_segs_in_total", "counter"),
    ("flow_tcp_data_segs_out_total", "counter"),
    ("flow_tcp_data_segs_in_total", "counter"),
    ("flow_tcp_send", "gauge"),
    ("flow_tcp_lastsnd", "gauge"),
    ("flow_tcp_lastrcv", "gauge"),
    ("flow_tcp_lastack", "gauge"),
    ("flow_tcp_pacing_rate", "gauge"),
    ("flow_tcp_delivery_rate", "gauge"),
    ("flow_tcp_delivered", "gauge"),
    ("flow_tcp_busy", "gauge"),
    ("flow_tcp_rwnd_limited", "gauge"),
    ("flow_tcp_rcv_space", "gauge"),
    ("flow_tcp_rcv_ssthresh", "gauge"),
    ("flow_tcp_minrtt", "gauge"),
    ("flow_tcp_snd_wnd", "gauge"),
    ("flow_tcp_ca_info", "gauge"),
];

/// A connected loopback TCP pair: (client, server-side socket).
fn tcp_pair(host: &str) -> (TcpStream, TcpStream) {
    let l = TcpListener::bind((host, 0)).unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

#[test]
fn real_loopback_flows_get_tcp_info_series_that_vanish_after_end() {
    let (f, port) = start("BACKEND='udp_firefly,prometheus'");
    let (mut c4, mut s4) = tcp_pair("127.0.0.1");
    c4.write_all(&[7u8; 1000]).unwrap();
    s4.read_exact(&mut [0u8; 1000]).unwrap();
    let (c6, s6) = tcp_pair("::1");
    let (c4a, s4a) = (c4.local_addr().unwrap(), s4.local_addr().unwrap());
    let (c6a, s6a) = (c6.local_addr().unwrap(), s6.local_addr().unwrap());
    // IPv4 announced client → server; IPv6 announced server → client, with ids the
    // registry does not know; one more flow without any local socket.
    f.write(&format!(
        "start tcp 127.0.0.1 {} 127.0.0.1 {} atlas Debug\nstart tcp ::1 {} ::1 {} 999 7\nstart tcp 192.0.2.1 1094 198.51.100.1 40000 cms 14\n",
        c4a.port(),
        s4a.port(),
        s6a.port(),
        c6a.port()
    ));
    let page = scrape_until(port, |p| samples(p, "flowd_prometheus_flows_matched").first().is_some_and(|s| s.1 == 2.0));
    assert_eq!(samples(&page, "flowd_prometheus_flows_matched")[0].1, 2.0, "{page}");
    let l4 = format!(r#"act="Debug",dst="127.0.0.1",exp="atlas",flow="{}:{}",src="127.0.0.1""#, c4a.port(), s4a.port());
    let l6 = format!(r#"act="7",dst="::1",exp="999",flow="{}:{}",src="::1""#, s6a.port(), c6a.port());
    for (name, kind) in PY_FAMILIES {
        assert_eq!(type_of(&page, name).as_deref(), Some(*kind), "{name}");
        if *name == "flow_tcp_ca_info" || *name == "flow_tcp_pacing_rate" {
            continue;
        }
        let s = samples(&page, name);
        assert!(s.iter().any(|(l, _)| l == &l4), "{name} for the IPv4 flow in {s:?}");
        assert!(s.iter().any(|(l, _)| l == &l6), "{name} for the IPv6 flow in {s:?}");
        assert_eq!(s.len(), 2, "{name}: only the two flows with sockets: {s:?}");
    }
    // The IPv4 flow is seen from the client's socket: it sent the 1000 bytes.
    let sent = samples(&page, "flow_tcp_bytes_acked_total").into_iter().find(|(l, _)| l == &l4).unwrap().1;
    assert!(sent >= 1000.0, "{sent}");
    let rtt = samples(&page, "flow_tcp_rtt").into_iter().find(|(l, _)| l == &l4).unwrap().1;
    assert!(rtt > 0.0 && rtt < 1000.0, "rtt in ms: {rtt}");
    let ca = samples(&page, "flow_tcp_ca_info");
    assert!(ca.iter().any(|(l, v)| l.contains("opts=\"ts sack") && l.ends_with(r#"src="127.0.0.1""#) && *v == 1.0), "{ca:?}");
    assert!(!page.contains("192.0.2.1"), "no series for a flow without a local socket");
    promtool_check(&page);

    f.write(&format!("end tcp 127.0.0.1 {} 127.0.0.1 {} atlas Debug\n", c4a.port(), s4a.port()));
    let page = scrape_until(port, |p| samples(p, "flowd_prometheus_flows_matched").first().is_some_and(|s| s.1 == 1.0));
    assert!(samples(&page, "flow_tcp_rtt").iter().all(|(l, _)| l != &l4), "IPv4 series gone after end");
    assert_eq!(samples(&page, "flow_tcp_rtt").len(), 1);
    f.write(&format!("end tcp ::1 {} ::1 {} 999 7\n", s6a.port(), c6a.port()));
    let page = scrape_until(port, |p| samples(p, "flowd_open_flows").first().is_some_and(|s| s.1 == 1.0));
    assert!(!page.lines().any(|l| l.starts_with("flow_tcp_")), "no flow series left:\n{page}");
    promtool_check(&page);
}

/// The families the Python flowd parsed out of `ss -tinm` besides tcp_info: socket memory,
/// BBR state, and the congestion-control name in `flow_tcp_ca_info{opts}`, from one dump
/// of real loopback sockets, one of them running bbr.
#[test]
fn python_flowd_skmem_bbr_and_congestion_families_from_real_sockets() {
    let available = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").unwrap_or_default();
    if !available.split_whitespace().any(|a| a == "bbr") && std::process::Command::new("modprobe").arg("tcp_bbr").status().map_or(true, |s| !s.success()) {
        crate::util::skip("the kernel has no tcp_bbr");
        return;
    }
    let (f, port) = start("BACKEND='prometheus'");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = socket2_connect_with_cc(l.local_addr().unwrap(), "bbr");
    let (mut s, _) = l.accept().unwrap();
    let mut c = c;
    c.write_all(&[5u8; 200_000]).unwrap();
    s.read_exact(&mut vec![0u8; 200_000]).unwrap();
    let (ca, sa) = (c.local_addr().unwrap(), s.local_addr().unwrap());
    let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let cubic_c = socket2_connect_with_cc(l2.local_addr().unwrap(), "cubic");
    let (cubic_s, _) = l2.accept().unwrap();
    let (ka, kb) = (cubic_c.local_addr().unwrap(), cubic_s.local_addr().unwrap());
    f.write(&format!(
        "start tcp 127.0.0.1 {} 127.0.0.1 {} atlas Debug\nstart tcp 127.0.0.1 {} 127.0.0.1 {} atlas Debug\n",
        ca.port(),
        sa.port(),
        ka.port(),
        kb.port()
    ));
    let page = scrape_until(port, |p| samples(p, "flowd_prometheus_flows_matched").first().is_some_and(|s| s.1 == 2.0));
    let bbr = format!(r#"act="Debug",dst="127.0.0.1",exp="atlas",flow="{}:{}",src="127.0.0.1""#, ca.port(), sa.port());
    let cubic = format!(r#"act="Debug",dst="127.0.0.1",exp="atlas",flow="{}:{}",src="127.0.0.1""#, ka.port(), kb.port());
    // The flows are announced from the client side, whose socket chose the algorithm.
    for name in [
        "flow_tcp_skmem_rmem_alloc",
        "flow_tcp_skmem_rcv_buf",
        "flow_tcp_skmem_wmem_allow",
        "flow_tcp_skmem_snd_buf",
        "flow_tcp_skmem_fwd_alloc",
        "flow_tcp_skmem_wmem_queued",
        "flow_tcp_skmem_opt_mem",
        "flow_tcp_skmem_back_log",
        "flow_tcp_skmem_sock_drop",
    ] {
        assert_eq!(type_of(&page, name).as_deref(), Some("gauge"), "{name}");
        let s = samples(&page, name);
        assert!(s.iter().any(|(l, _)| l == &bbr) && s.iter().any(|(l, _)| l == &cubic), "{name}: {s:?}");
    }
    let rcvbuf = samples(&page, "flow_tcp_skmem_rcv_buf").into_iter().find(|(l, _)| l == &bbr).unwrap().1;
    assert!(rcvbuf > 1000.0, "rcv_buf in bytes: {rcvbuf}");
    let bw = samples(&page, "flow_tcp_bbr_bw");
    assert!(bw.iter().any(|(l, v)| l == &bbr && *v > 0.0), "bbr bandwidth for the bbr flow: {bw:?}");
    assert!(bw.iter().all(|(l, _)| l != &cubic), "no bbr series for cubic: {bw:?}");
    assert!(samples(&page, "flow_tcp_bbr_mrtt").iter().any(|(l, v)| l == &bbr && *v < 1000.0));
    let ca_info = samples(&page, "flow_tcp_ca_info");
    let opts = |flow: &str| ca_info.iter().find(|(l, _)| l.contains(flow)).map(|(l, _)| l.clone()).unwrap_or_default();
    assert!(opts(&format!("flow=\"{}:{}\"", ca.port(), sa.port())).contains(" bbr wscale:"), "{ca_info:?}");
    assert!(opts(&format!("flow=\"{}:{}\"", ka.port(), kb.port())).contains(" cubic wscale:"), "{ca_info:?}");
    promtool_check(&page);
}

/// A TCP connection to `to` whose socket uses congestion control `cc` from the SYN on.
fn socket2_connect_with_cc(to: std::net::SocketAddr, cc: &str) -> TcpStream {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let fd = socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).unwrap();
    socket::setsockopt(&fd, sockopt::TcpCongestion, &std::ffi::OsString::from(cc)).unwrap();
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(to)).unwrap();
    TcpStream::from(fd)
}

/// An IPv4 flow whose local socket is an IPv4-mapped one on a dual-stack listener (as
/// XRootD on `[::]`): its tcp_info comes from that socket, not from the peer's plain IPv4
/// socket found first in the IPv4 dump; pages served on one kept-alive connection (whose
/// buffers are reused) stay complete.
#[test]
fn ipv4_flow_on_a_dual_stack_socket_and_repeated_scrapes_on_one_connection() {
    let (f, port) = start("BACKEND='prometheus'");
    let l = TcpListener::bind(("::", 0)).unwrap();
    let mut client = TcpStream::connect(("127.0.0.1", l.local_addr().unwrap().port())).unwrap();
    let (mut server, peer) = l.accept().unwrap();
    assert!(peer.ip().to_string().starts_with("::ffff:"), "dual-stack accept: {peer}");
    server.write_all(&[1u8; 3000]).unwrap();
    client.read_exact(&mut [0u8; 3000]).unwrap();
    let (sport, cport) = (l.local_addr().unwrap().port(), client.local_addr().unwrap().port());
    // Announced from the server's side, as the storage service would.
    f.write(&format!("start tcp 127.0.0.1 {sport} 127.0.0.1 {cport} cms 14\n"));
    let labels = format!(r#"act="Analysis Input",dst="127.0.0.1",exp="cms",flow="{sport}:{cport}",src="127.0.0.1""#);
    let acked = |page: &str| samples(page, "flow_tcp_bytes_acked_total").into_iter().find(|(l, _)| l == &labels).map(|s| s.1);
    let page = scrape_until(port, |p| acked(p).is_some());
    assert!(acked(&page).unwrap() >= 3000.0, "tcp_info of the server's mapped socket, which sent 3000 bytes:\n{page}");
    let mut s = connect(port);
    let mut pending = Vec::new();
    for _ in 0..3 {
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let page = read_resp(&mut s, &mut pending, false).expect("a response").text();
        assert!(acked(&page).unwrap() >= 3000.0, "{page}");
        assert_eq!(page.matches("# TYPE flow_tcp_").count(), 58, "every family once");
        assert_eq!(page.matches("flowd_open_flows 1\n").count(), 1, "{page}");
    }
    promtool_check(&scrape(port));
    drop((client, server));
}

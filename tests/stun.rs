//! Public-address discovery and ongoing fireflies end to end, with the real binary.
//!
//! Fake STUN servers run on loopback inside the test (answering, silent, malformed):
//! no test ever contacts the default public servers. Ongoing fireflies with tcp_info are
//! checked on real TCP connections in fresh network namespaces (root only).

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::np_api::validate_externally;
use crate::require_root;
use crate::util::netns::NsPair;
use crate::util::{json_of, run, Flowd, Sink, TempDir};

const T: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
enum Mode {
    /// Answers with XOR-MAPPED-ADDRESS = this address.
    Answer(SocketAddr),
    /// Never answers.
    Silent,
    /// Answers with a truncated message.
    Malformed,
}

/// A STUN server on 127.0.0.1 in a thread; stops when dropped.
struct FakeStun {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl FakeStun {
    fn new(mode: Mode) -> FakeStun {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = 0;
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let Some(tid) = flowd::wire::stun::request_transaction(&buf[..n]) else { continue };
                seen += 1;
                let reply = match mode {
                    Mode::Answer(a) => flowd::wire::stun::success_response(&tid, a, true, Some("fake")),
                    Mode::Silent => continue,
                    Mode::Malformed => flowd::wire::stun::success_response(&tid, "203.0.113.250:1".parse().unwrap(), true, None)[..26].to_vec(),
                };
                let _ = sock.send_to(&reply, from);
            }
            seen
        });
        FakeStun { addr, stop, thread: Some(thread) }
    }

    /// Stops the server; returns how many requests it saw.
    fn requests(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map(|t| t.join().unwrap()).unwrap_or(0)
    }
}

impl Drop for FakeStun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn servers(list: &[&FakeStun]) -> String {
    let v: Vec<String> = list.iter().map(|s| format!("'{}'", s.addr)).collect();
    format!("({},)", v.join(", "))
}

#[test]
fn discovered_public_address_replaces_the_internal_one_in_src_and_dst() {
    let silent = FakeStun::new(Mode::Silent);
    let bad = FakeStun::new(Mode::Malformed);
    let good = FakeStun::new(Mode::Answer("203.0.113.7:40000".parse().unwrap()));
    let sink = Sink::v4();
    let f = Flowd::start(&format!(
        "UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nIP_DISCOVERY_ENABLED=True\nIP_DISCOVERY_TIMEOUT=0.05\nIP_DISCOVERY_STUN_SERVERS={}\n\
         IP_DISCOVERY_MAP=('192.0.2.55=198.51.100.55',)",
        sink.addr(),
        servers(&[&silent, &bad, &good])
    ));
    f.wait_log("ip discovery: public ipv4 address 203.0.113.7 (internal 127.0.0.1", T);
    let log = f.stderr();
    assert!(log.contains("no answer after 3 tries"), "{log}");
    assert!(log.contains("malformed reply"), "{log}");
    f.write("start tcp 127.0.0.1 1094 198.51.100.1 5000 2 9\nstart tcp 198.51.100.1 5000 127.0.0.1 1094 2 9\nstart udp 192.0.2.55 1 192.0.2.9 2 2 9\n");
    let got = sink.recv(3, T);
    assert_eq!(got.len(), 3, "{}", f.stderr());
    validate_externally(&got);
    let ips: Vec<(String, String)> =
        got.iter().map(|d| json_of(d)["flow-id"].clone()).map(|j| (j["src-ip"].as_str().unwrap().into(), j["dst-ip"].as_str().unwrap().into())).collect();
    assert_eq!(ips[0], ("203.0.113.7".into(), "198.51.100.1".into()));
    assert_eq!(ips[1], ("198.51.100.1".into(), "203.0.113.7".into()), "dst is rewritten too, as the Python flowd does");
    assert_eq!(ips[2], ("198.51.100.55".into(), "192.0.2.9".into()), "manual pair");
    assert_eq!(silent.requests(), 3, "three tries to the silent server");
    assert!(good.requests() >= 1);
}

#[test]
fn src_override_wins_over_discovery_and_failures_do_not_block_startup() {
    let silent = FakeStun::new(Mode::Silent);
    let sink = Sink::v4();
    // Only a silent server: flowd is ready at once and sends fireflies unchanged meanwhile.
    let f = Flowd::start(&format!(
        "UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nIP_DISCOVERY_ENABLED=True\nIP_DISCOVERY_TIMEOUT=5\nIP_DISCOVERY_STUN_SERVERS={}\nUDP_FIREFLY_IP4_SRC='192.0.2.200'",
        sink.addr(),
        servers(&[&silent])
    ));
    f.write("start tcp 127.0.0.1 1 127.0.0.1 2 2 9\n");
    let got = sink.recv(1, T);
    assert_eq!(got.len(), 1, "{}", f.stderr());
    let j = json_of(&got[0]);
    assert_eq!((j["flow-id"]["src-ip"].as_str(), j["flow-id"]["dst-ip"].as_str()), (Some("192.0.2.200"), Some("127.0.0.1")));
}

fn stun_cfg(dir: &TempDir, list: &str) -> String {
    let p = dir.path().join("stun.cfg");
    std::fs::write(&p, format!("IP_DISCOVERY_STUN_SERVERS={list}\nIP_DISCOVERY_TIMEOUT=0.05\n")).unwrap();
    p.display().to_string()
}

#[test]
fn flowd_stun_prints_each_server_and_the_chosen_address() {
    let dir = TempDir::new("stun");
    let silent = FakeStun::new(Mode::Silent);
    let good = FakeStun::new(Mode::Answer("[2001:db8::7]:1".parse().unwrap()));
    let right = FakeStun::new(Mode::Answer("203.0.113.8:1".parse().unwrap()));
    let cfg = stun_cfg(&dir, &servers(&[&silent, &good, &right]));
    let (st, out, err) = run(&["stun", "-c", &cfg]);
    assert!(st.success(), "{out}{err}");
    assert!(out.contains(&format!("  {} ({}): no answer after 3 tries", silent.addr, silent.addr)), "{out}");
    // An IPv6 answer to an IPv4 request is refused; the next server is asked.
    assert!(out.contains(&format!("  {} ({}): malformed reply: mapped address of the wrong family", good.addr, good.addr)), "{out}");
    assert!(out.contains(&format!("  {} ({}): public 203.0.113.8, internal 127.0.0.1", right.addr, right.addr)), "{out}");
    assert!(out.contains("public IPv6: none"), "{out}");
    let bad = FakeStun::new(Mode::Malformed);
    let (st, out, _) = run(&["stun", "-c", &cfg, &bad.addr.to_string()]);
    assert_eq!(st.code(), Some(1), "nothing found: {out}");
    assert!(out.contains("malformed reply") && out.contains("public IPv4: none"), "{out}");
    let answer = FakeStun::new(Mode::Answer("203.0.113.9:7".parse().unwrap()));
    let (st, out, _) = run(&["stun", "-c", &cfg, &answer.addr.to_string()]);
    assert!(st.success(), "{out}");
    assert!(out.contains("public IPv4: 203.0.113.9 (internal 127.0.0.1, from 127.0.0.1:"), "{out}");
    let (st, _, _) = run(&["stun", "--timeout"]);
    assert_eq!(st.code(), Some(2));
}

#[test]
fn ongoing_fireflies_without_netlink_repeat_for_open_flows_only() {
    let sink = Sink::v4();
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nUDP_FIREFLY_ONGOING_INTERVAL=1", sink.addr()));
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 2 9\nstart udp 192.0.2.1 3 198.51.100.1 4 2 9\nend udp 192.0.2.1 3 198.51.100.1 4 2 9\n");
    let mut got = sink.recv(5, T);
    assert_eq!(got.len(), 5, "start, start, end, then two ongoing: {}", f.stderr());
    validate_externally(&got);
    let js: Vec<Value> = got.drain(..).map(|d| json_of(&d)).collect();
    let start = js[0]["flow-lifecycle"]["start-time"].clone();
    for o in &js[3..] {
        assert_eq!(o["flow-lifecycle"]["state"], "ongoing");
        assert_eq!(o["flow-id"]["protocol"], "tcp", "the ended UDP flow gets no ongoing");
        assert_eq!(o["flow-lifecycle"]["start-time"], start);
        assert!(o.get("netlink").is_none() && o.get("usage").is_none());
    }
}

fn usage_sent(j: &Value) -> u64 {
    j["usage"]["sent"].as_u64().unwrap()
}

#[test]
fn ongoing_fireflies_carry_tcp_info_of_real_connections_in_a_namespace() {
    require_root!();
    let ns = NsPair::new();
    let sink = NsPair::udp(&ns.a, "127.0.0.1:0");
    sink.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let f = NsPair::flowd(
        &ns.a,
        &format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nUDP_FIREFLY_NETLINK=True\nUDP_FIREFLY_ONGOING_INTERVAL=1", sink.local_addr().unwrap()),
    );
    let l = NsPair::listen(&ns.b, "100.64.0.2:0");
    let mut c = NsPair::connect(&ns.a, l.local_addr().unwrap());
    let (mut s, _) = l.accept().unwrap();
    let reader = std::thread::spawn(move || {
        s.write_all(&[7u8; 1000]).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut n = 0u64;
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    let (cl, sv) = (c.local_addr().unwrap(), l.local_addr().unwrap());
    f.write(&format!("start tcp {} {} {} {} 2 9\n", cl.ip(), cl.port(), sv.ip(), sv.port()));
    c.write_all(&vec![1u8; 64 * 1024]).unwrap();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut first: Option<u64> = None;
    let mut grown: Option<Value> = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while grown.is_none() && Instant::now() < deadline {
        let Ok(k) = sink.recv(&mut buf) else { continue };
        let d = String::from_utf8_lossy(&buf[..k]).into_owned();
        let j = json_of(&d);
        all.push(d);
        if j["flow-lifecycle"]["state"] != "ongoing" {
            continue;
        }
        match first {
            None => {
                first = Some(usage_sent(&j));
                c.write_all(&vec![2u8; 256 * 1024]).unwrap();
            }
            Some(s1) if usage_sent(&j) >= 64 * 1024 + 256 * 1024 => {
                assert!(usage_sent(&j) > s1);
                grown = Some(j);
            }
            Some(_) => {}
        }
    }
    let j = grown.unwrap_or_else(|| panic!("no growing ongoing fireflies: {all:?}\n{}", f.stderr()));
    let rtt = j["netlink"]["rtt"].as_f64().unwrap();
    assert!(rtt > 0.0 && rtt < 1000.0, "plausible rtt in ms: {rtt}");
    assert_eq!(j["netlink"]["state"], "established");
    assert!(usage_sent(&j) >= 64 * 1024 + 256 * 1024, "{j}");
    assert_eq!(j["usage"]["received"].as_u64(), Some(1000));
    f.write(&format!("end tcp {} {} {} {} 2 9\n", cl.ip(), cl.port(), sv.ip(), sv.port()));
    drop(c);
    let mut end = None;
    let deadline = Instant::now() + T;
    while end.is_none() && Instant::now() < deadline {
        let Ok(k) = sink.recv(&mut buf) else { continue };
        let d = String::from_utf8_lossy(&buf[..k]).into_owned();
        if json_of(&d)["flow-lifecycle"]["state"] == "end" {
            end = Some(json_of(&d));
        }
        all.push(d);
    }
    let end = end.unwrap_or_else(|| panic!("no end firefly: {}", f.stderr()));
    assert!(usage_sent(&end) >= usage_sent(&j), "end carries the last usage seen: {end}");
    assert!(end["netlink"]["rtt"].as_f64().is_some());
    assert!(json_of(&all[0]).get("netlink").is_none(), "start fireflies carry no tcp_info yet");
    validate_externally(&all);
    assert_eq!(reader.join().unwrap(), 64 * 1024 + 256 * 1024);
}

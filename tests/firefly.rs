//! firefly listener → udp_firefly relay end to end on loopback (no privileges needed):
//! the faithful relay of every producer's dialect, the allow-list, forwarding as received,
//! and the enrichment of relayed flows with an end on this host.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use serde_json::Value;

use crate::hardening::totals;
use crate::util::{json_of, Flowd, Sink};

const T: Duration = Duration::from_secs(5);

fn data(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The datagrams of a vector file, each with the comment line above it.
fn commented(path: &str) -> Vec<(String, String)> {
    let mut why = String::new();
    let mut out = Vec::new();
    for l in data(path).lines().filter(|l| !l.is_empty()) {
        match l.strip_prefix('#') {
            Some(c) => why = c.to_string(),
            None => out.push((why.clone(), l.to_string())),
        }
    }
    out
}

fn vectors(path: &str) -> Vec<String> {
    commented(path).into_iter().map(|(_, l)| l).collect()
}

/// The one invalid vector flowd accepts since issue 20: an unknown key inside a closed
/// object (`flow-lifecycle`), which a relay passes on like any unknown key.
fn extra_key_vector(why: &str) -> bool {
    why.contains("additionalProperties")
}

/// A UDP port that was free a moment ago (on both families).
fn free_port() -> u16 {
    let s = UdpSocket::bind("[::]:0").unwrap();
    s.local_addr().unwrap().port()
}

/// Starts flowd with the firefly plugin relaying to the `sink` collector.
fn relay(sink: &Sink, port: u16, extra: &str) -> Flowd {
    Flowd::start(&format!("PLUGIN='firefly'\nFIREFLY_LISTENER_PORT={port}\nUDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\n{extra}", sink.addr()))
}

/// Every key in the order it appears (top level and the objects flowd reads), as flowd's
/// own decoder walks the text.
fn key_order(d: &str) -> Vec<String> {
    let r = flowd::wire::firefly::decode(d.as_bytes(), flowd::wire::firefly::Strictness::Lenient).unwrap().received;
    r.members.iter().map(|m| format!("{}{}", if m.nested { "  " } else { "" }, r.text(m.key))).collect()
}

fn accepted(d: &str) -> bool {
    flowd::wire::firefly::decode(d.as_bytes(), flowd::wire::firefly::Strictness::Lenient).is_ok()
}

/// Datagrams until one satisfies `done` (returned last), or the timeout.
fn recv_until(sink: &Sink, done: impl Fn(&str) -> bool, timeout: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline {
        for d in sink.recv(1, Duration::from_millis(100)) {
            let last = done(&d);
            out.push(d);
            if last {
                return out;
            }
        }
    }
    out
}

fn instant(v: &Value) -> Option<i64> {
    v.as_str().and_then(flowd::wire::time::parse_rfc3339).map(|t| t.0)
}

/// The relayed JSON `out` has every member of the received `input`, at any depth, with the
/// same value (times: the same instant), and nothing else except the members listed in
/// `added` (top-level keys flowd may add: its own `usage`/`netlink`).
fn assert_faithful(input: &Value, out: &Value, added: &[&str], what: &str) {
    fn walk(a: &Value, b: &Value, path: &str, what: &str) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, v) in x {
                    let w = y.get(k).unwrap_or_else(|| panic!("{what}: {path}.{k} was not relayed"));
                    walk(v, w, &format!("{path}.{k}"), what);
                }
                if let Some(k) = y.keys().find(|k| !x.contains_key(*k)) {
                    panic!("{what}: {path}.{k} was invented");
                }
            }
            _ if path.starts_with(".flow-lifecycle.") && path.ends_with("-time") => {
                assert!(instant(a).is_some() && instant(a) == instant(b), "{what}: {path}: {a} became {b}");
            }
            _ => assert_eq!(a, b, "{what}: {path}"),
        }
    }
    let mut out = out.clone();
    for k in added {
        if input.get(*k).is_none() {
            out.as_object_mut().unwrap().remove(*k);
        }
    }
    walk(input, &out, "", what);
}

#[test]
fn valid_vectors_are_relayed_faithfully_and_invalid_ones_are_not() {
    let sink = Sink::v4();
    let port = free_port();
    let f = relay(&sink, port, "");
    let mut valid = vectors("spec/fireflies-valid.txt");
    valid.extend(vectors("spec/fireflies-xrootd-5.5.3.txt"));
    let all_invalid = commented("spec/fireflies-invalid.txt");
    let extra: Vec<String> = all_invalid.iter().filter(|(w, _)| extra_key_vector(w)).map(|(_, l)| l.clone()).collect();
    let invalid: Vec<String> = all_invalid.iter().filter(|(w, _)| !extra_key_vector(w)).map(|(_, l)| l.clone()).collect();
    assert_eq!(extra.len(), 1);
    valid.extend(extra);
    let tx4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx6 = UdpSocket::bind("[::1]:0").unwrap();
    // Invalid first, then valid, alternating families: only the valid ones come out, in order.
    let bare: Vec<&String> = invalid.iter().filter(|l| !l.starts_with('<')).collect();
    let send = |i: usize, d: &str| {
        let (tx, to) = if i % 2 == 0 { (&tx4, format!("127.0.0.1:{port}")) } else { (&tx6, format!("[::1]:{port}")) };
        tx.send_to(d.as_bytes(), to).unwrap();
    };
    for (i, d) in invalid.iter().enumerate() {
        send(i, d);
    }
    for (i, d) in valid.iter().enumerate() {
        send(i, d);
    }
    let want = valid.len() + bare.len();
    let got = sink.recv(want, T);
    assert_eq!(got.len(), want, "{}", f.stderr());
    assert!(sink.drain(Duration::from_millis(300)).is_empty(), "nothing else is relayed");
    // Bare JSON (no syslog header) is accepted in lenient mode; it arrives first.
    for (o, b) in got.iter().zip(&bare) {
        assert_faithful(&json_of(b), &json_of(o), &[], b);
    }
    for (o, d) in got[bare.len()..].iter().zip(&valid) {
        assert_faithful(&json_of(d), &json_of(o), &[], d);
    }
    // The XRootD captures carry usage and netlink: they really were compared above, with
    // the producer's own number text.
    assert!(got.iter().filter(|o| json_of(o).get("usage").is_some() && json_of(o).get("netlink").is_some()).count() >= 5);
    assert!(got.iter().any(|o| o.contains(r#""netlink": {"rtt":0.480}"#)));
    assert!(got.iter().any(|o| o.contains(r#""duration": 5}"#)), "the unknown key inside flow-lifecycle");
    // The header is flowd's own.
    assert!(got.iter().all(|d| d.contains(" flowd - firefly-json - ")));
    let log = f.stderr();
    assert_eq!(log.matches("firefly: rejected datagram").count().min(10), (invalid.len() - bare.len()).min(10), "{log}");
    let (st, _) = f.stop();
    assert!(st.success());
}

/// Each producer's dialect, relayed as received: dCache (Z times with 0/3/6/9 digits,
/// `usage: {}` on start, `storage-stats` with string durations, Java's key order) and
/// flowd-go (bare JSON, trimmed fractions, local offsets, no `current-time` on start/end,
/// `netlink` of its own shape).
#[test]
fn dcache_and_flowd_go_fireflies_are_relayed_faithfully() {
    let sink = Sink::v4();
    let port = free_port();
    let f = relay(&sink, port, "");
    let dcache = vectors("producers/fireflies-dcache.txt");
    let go = vectors("producers/fireflies-flowd-go.txt");
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in dcache.iter().chain(&go) {
        tx.send_to(d.as_bytes(), ("127.0.0.1", port)).unwrap();
    }
    let got = sink.recv(dcache.len() + go.len(), T);
    assert_eq!(got.len(), dcache.len() + go.len(), "{}", f.stderr());
    for (o, d) in got.iter().zip(dcache.iter().chain(&go)) {
        assert_faithful(&json_of(d), &json_of(o), &[], d);
        // The producer's key order is kept, at the top and inside the objects.
        assert_eq!(key_order(o), key_order(d), "{o}");
        assert!(o.starts_with("<134>1 ") && o.contains(" flowd - firefly-json - {"), "{o}");
    }
    // dCache: nothing invented on start, storage statistics and the producer's own times kept.
    assert!(got[0].contains(r#", "usage": {}, "#), "{}", got[0]);
    assert!(got[1].contains(r#""storage-stats": {"read-active":"PT2M31.224S","#), "{}", got[1]);
    assert!(got[1].contains(r#""current-time": "2026-03-02T09:16:41.077190321Z""#), "nanoseconds: as received: {}", got[1]);
    assert!(got[0].contains(r#""start-time": "2026-03-02T09:14:07.511904+00:00""#), "{}", got[0]);
    // flowd-go: no current-time on start and end, its netlink object untouched.
    let g = &got[dcache.len()..];
    assert!(!g[0].contains("current-time") && !g[2].contains("current-time"), "{}", g[0]);
    assert!(g[1].contains(r#""netlink": {"cong":{"algorithm":"cubic"},"tcpInfo":{"Retransmits":0,"#), "{}", g[1]);
    assert!(f.stderr().matches("rejected").count() == 0, "{}", f.stderr());
}

#[test]
fn unknown_keys_at_any_depth_survive_the_relay() {
    let sink = Sink::v4();
    let port = free_port();
    let f = relay(&sink, port, "");
    let d = concat!(
        r#"<134>1 2026-03-02T09:00:00Z h app - firefly-json - {"version":1,"flow-lifecycle":{"state":"end","start-time":"2026-03-02T08:00:00Z","#,
        r#""end-time":"2026-03-02T09:00:00Z","x-lifecycle":{"paused":[1,2]}},"flow-id":{"afi":"ipv6","src-ip":"2001:db8::1","dst-ip":"2001:db8::2","#,
        r#""protocol":"tcp","src-port":1094,"dst-port":2000,"flow-id":"0f2a"},"context":{"experiment-id":2,"activity-id":9,"application":"a","#,
        r#""vo":"atlas"},"usage":{"received":1,"sent":2,"retransmitted":3},"storage-stats":{"read-active":"PT1S"},"x-top":null}"#
    );
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(d.as_bytes(), ("127.0.0.1", port)).unwrap();
    let got = sink.recv(1, T);
    assert_eq!(got.len(), 1, "{}", f.stderr());
    assert_faithful(&json_of(d), &json_of(&got[0]), &[], d);
}

#[test]
fn relayed_firefly_is_not_sent_back_to_this_hosts_listener() {
    let sink = Sink::v4();
    let port = free_port();
    // Peer fireflies go to dst-ip:UDP_FIREFLY_PORT = this host's own listener: a loop.
    let f = relay(&sink, port, &format!("UDP_FIREFLY_TO_PEER=True\nUDP_FIREFLY_PORT={port}\n"));
    let d = r#"{"version":1,"flow-lifecycle":{"state":"start","start-time":"2025-03-25T10:00:00.100000+00:00"},"flow-id":{"afi":"ipv4","src-ip":"100.64.0.1","dst-ip":"127.0.0.1","protocol":"tcp","src-port":1094,"dst-port":53012},"context":{"experiment-id":2,"activity-id":9}}"#;
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(d.as_bytes(), ("127.0.0.1", port)).unwrap();
    let got = sink.recv(1, T);
    assert_eq!(got.len(), 1, "{}", f.stderr());
    assert!(sink.drain(Duration::from_millis(500)).is_empty(), "relayed exactly once, no loop:\n{}", f.stderr());
}

#[test]
fn a_burst_is_drained_completely() {
    let sink = Sink::v4();
    // The test's own socket must not be the one that overflows.
    nix::sys::socket::setsockopt(&sink.sock, nix::sys::socket::sockopt::RcvBuf, &(8 << 20)).unwrap();
    let port = free_port();
    let f = relay(&sink, port, "");
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let n = 2000;
    for i in 0..n {
        let d = format!(
            r#"{{"version":1,"flow-lifecycle":{{"state":"start","start-time":"2025-03-25T10:00:00.100000+00:00"}},"flow-id":{{"afi":"ipv4","src-ip":"100.64.0.1","dst-ip":"100.64.0.2","protocol":"tcp","src-port":{},"dst-port":5000}},"context":{{"experiment-id":2,"activity-id":9}}}}"#,
            1 + i
        );
        tx.send_to(d.as_bytes(), ("127.0.0.1", port)).unwrap();
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let got = sink.recv(n, T);
    assert_eq!(got.len(), n, "{}", f.stderr());
}

/// Only the allowed networks get in; the others are dropped unread and counted; an IPv4
/// sender on the dual-stack socket (`::ffff:127.0.0.1`) matches an IPv4 network.
#[test]
fn the_allow_list_drops_other_senders_before_parsing() {
    let sink = Sink::v4();
    let port = free_port();
    let mut f = relay(&sink, port, "FIREFLY_LISTENER_HOST='::'\nFIREFLY_LISTENER_ALLOW=('127.0.0.0/8', '2001:db8::/32')\n");
    assert!(!f.stderr().contains("accepting fireflies from everyone"), "{}", f.stderr());
    let valid = vectors("spec/fireflies-valid.txt");
    let tx4 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx6 = UdpSocket::bind("[::1]:0").unwrap();
    for d in &valid {
        tx6.send_to(d.as_bytes(), ("::1", port)).unwrap();
        tx6.send_to(b"garbage from a stranger", ("::1", port)).unwrap();
    }
    tx4.send_to(valid[0].as_bytes(), ("127.0.0.1", port)).unwrap();
    tx4.send_to(b"garbage from a friend", ("127.0.0.1", port)).unwrap();
    let got = sink.recv(2, Duration::from_secs(2));
    assert_eq!(got.len(), 1, "only the IPv4 sender's valid firefly: {got:?}\n{}", f.stderr());
    assert_faithful(&json_of(&valid[0]), &json_of(&got[0]), &[], "ipv4-mapped sender");
    f.stop_keep();
    let log = f.stderr();
    let bad = totals(&log, "flowd_bad_input_total");
    assert_eq!(bad.get("firefly/not_allowed"), Some(&(2 * valid.len() as u64)), "{log}");
    assert_eq!(bad.get("firefly/bad_json"), Some(&1), "the friend's garbage was read: {log}");
    assert!(log.contains("not in FIREFLY_LISTENER_ALLOW"), "{log}");
}

#[test]
fn an_open_listener_warns_once_at_start() {
    let sink = Sink::v4();
    let open = relay(&sink, free_port(), "FIREFLY_LISTENER_HOST='::'\n");
    assert_eq!(open.stderr().matches("accepting fireflies from everyone").count(), 1, "{}", open.stderr());
    let lo = relay(&sink, free_port(), "FIREFLY_LISTENER_HOST='127.0.0.1'\n");
    assert!(!lo.stderr().contains("accepting fireflies from everyone"), "{}", lo.stderr());
}

/// Every valid datagram reaches every forward receiver byte for byte, header included,
/// besides the relay; invalid ones go nowhere; a dead receiver and one that is this host's
/// own listener cost the others nothing.
#[test]
fn forward_receivers_get_each_valid_datagram_as_received() {
    let sink = Sink::v4();
    let (a, b) = (Sink::v4(), Sink::v6());
    let dead = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let port = free_port();
    let receivers = [a.addr(), b.addr(), format!("127.0.0.1:{dead}"), format!("127.0.0.1:{port}")];
    let list = receivers.iter().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(", ");
    let mut f = relay(&sink, port, &format!("FIREFLY_FORWARD=({list})\n"));
    assert!(f.stderr().contains("is this host's own listener"), "{}", f.stderr());
    let mut valid = vectors("spec/fireflies-xrootd-5.5.3.txt");
    valid.extend(vectors("producers/fireflies-dcache.txt"));
    valid.extend(vectors("producers/fireflies-flowd-go.txt"));
    let invalid = vectors("spec/fireflies-invalid.txt");
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Each valid datagram after an invalid-vector line: the ones flowd accepts (bare JSON,
    // an unknown key) are forwarded too, the others are not.
    let mut want: Vec<Vec<u8>> = Vec::new();
    for (i, d) in valid.iter().enumerate() {
        let bad = &invalid[i % invalid.len()];
        tx.send_to(bad.as_bytes(), ("127.0.0.1", port)).unwrap();
        tx.send_to(d.as_bytes(), ("127.0.0.1", port)).unwrap();
        if accepted(bad) {
            want.push(bad.clone().into_bytes());
        }
        want.push(d.clone().into_bytes());
    }
    assert!(want.len() > valid.len() && want.len() < 2 * valid.len());
    let n = want.len();
    let bytes = |s: &Sink| {
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + T;
        while out.len() <= n && std::time::Instant::now() < deadline {
            if let Ok(k) = s.sock.recv(&mut buf) {
                out.push(buf[..k].to_vec());
            }
            if out.len() == n {
                // Anything more within a moment would be one forwarded wrongly.
                s.sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            }
        }
        out
    };
    let (got_a, got_b) = (bytes(&a), bytes(&b));
    assert!(got_a == want, "byte for byte, in order, header included\n{}", f.stderr());
    assert!(got_b == want, "the IPv6 receiver too\n{}", f.stderr());
    assert_eq!(sink.recv(n, T).len(), n, "and each was relayed too");
    f.stop_keep();
    let log = f.stderr();
    let fwd: HashMap<String, u64> = totals(&log, "flowd_fireflies_forwarded_total");
    let k = n as u64;
    assert_eq!(fwd.get(&format!("{}/sent", receivers[0])), Some(&k), "{log}");
    assert_eq!(fwd.get(&format!("{}/sent", receivers[1])), Some(&k), "{log}");
    assert_eq!(fwd.get(&format!("{}/sent", receivers[2])), Some(&k), "a dead receiver is not an error on UDP: {log}");
    assert_eq!(fwd.get(&format!("{}/own_address", receivers[3])), Some(&k), "{log}");
}

/// UDP_FIREFLY_NETLINK with a relayed TCP flow that has an end on this host (a transfer
/// service next to flowd): `ongoing` fireflies with netlink and usage, and flowd's
/// measurements on the relayed end where the producer sent none; they obey the loop rules
/// (peer = this host's listener: skipped). A relayed flow between two other hosts gets none.
#[test]
fn relayed_flows_with_a_local_end_are_enriched() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut s, _) = l.accept().unwrap();
    std::io::Write::write_all(&mut s, &[7u8; 100_000]).unwrap();
    let (src, dst) = (l.local_addr().unwrap(), c.local_addr().unwrap());
    let sink = Sink::v4();
    let port = free_port();
    let f = relay(&sink, port, &format!("UDP_FIREFLY_NETLINK=True\nUDP_FIREFLY_ONGOING_INTERVAL=1\nUDP_FIREFLY_TO_PEER=True\nUDP_FIREFLY_PORT={port}\n"));
    let ff = |state: &str, src: &str, sport: u16, dst: &str, dport: u16| {
        let end = if state == "end" { r#","end-time":"2026-03-02T10:16:41.06+01:00""# } else { "" };
        format!(
            r#"{{"version":1,"flow-lifecycle":{{"state":"{state}","start-time":"2026-03-02T10:14:07.511904+01:00"{end}}},"flow-id":{{"afi":"ipv4","src-ip":"{src}","dst-ip":"{dst}","protocol":"tcp","src-port":{sport},"dst-port":{dport}}},"context":{{"experiment-id":3,"activity-id":14,"application":"flowd-go-2.4.2"}}}}"#
        )
    };
    let local = ff("start", "127.0.0.1", src.port(), "127.0.0.1", dst.port());
    // Two addresses that are not this host's (the build machine has 192.0.2.2 itself).
    let own = flowd::sys::local_addresses().unwrap();
    let (ra, rb) = ("203.0.113.1", "203.0.113.2");
    assert!(![ra, rb].iter().any(|a| own.contains(&a.parse().unwrap())), "{own:?}");
    let remote = ff("start", ra, 1094, rb, 2000);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(local.as_bytes(), ("127.0.0.1", port)).unwrap();
    tx.send_to(remote.as_bytes(), ("127.0.0.1", port)).unwrap();
    let starts = sink.recv(2, T);
    assert_eq!(starts.len(), 2, "{}", f.stderr());
    assert!(starts.iter().all(|d| !d.contains("\"usage\"")), "no usage on start: {starts:?}");
    // Ongoing events: the local flow only, with netlink and usage (flowd's own firefly).
    let ongoing = sink.recv(3, Duration::from_millis(3500));
    assert!(!ongoing.is_empty(), "{}", f.stderr());
    assert!(ongoing.len() >= 2, "{ongoing:?}\n{}", f.stderr());
    for o in &ongoing {
        let v = json_of(o);
        assert_eq!(v["flow-lifecycle"]["state"], "ongoing", "{o}");
        assert_eq!(v["flow-id"]["src-port"], src.port(), "only the flow with an end here: {o}");
        assert!(v["netlink"]["rtt"].is_number(), "{o}");
        assert!(v["usage"]["sent"].as_u64().unwrap_or(0) >= 100_000, "the src (the writer) sent 100,000 bytes: {o}");
        assert_eq!(instant(&v["flow-lifecycle"]["start-time"]), instant(&json_of(&local)["flow-lifecycle"]["start-time"]));
    }
    // The relayed end: as received, plus flowd's own usage and netlink (the producer sent none).
    let end_in = ff("end", "127.0.0.1", src.port(), "127.0.0.1", dst.port());
    tx.send_to(end_in.as_bytes(), ("127.0.0.1", port)).unwrap();
    let end = recv_until(&sink, |d| d.contains(r#""state": "end""#), T).pop().unwrap_or_default();
    let e = json_of(&end);
    assert_faithful(&json_of(&end_in), &e, &["usage", "netlink"], &end);
    assert!(e["usage"]["sent"].as_u64().unwrap_or(0) >= 100_000 && e["netlink"]["rtt"].is_number(), "{end}");
    let mut f = f;
    f.stop_keep();
    let log = f.stderr();
    // Nothing came back through the listener: every peer copy (dst = this host's listener)
    // was skipped, the ongoing ones included.
    let ev = totals(&log, "flowd_events_total");
    assert_eq!(ev.get("firefly/ongoing"), None, "{log}");
    assert_eq!(ev.get("firefly/start"), Some(&2), "{log}");
    let skipped = totals(&log, "flowd_firefly_relay_skipped_total");
    assert_eq!(skipped.get("peer/own_address").copied(), Some(2 + ev["enrich/ongoing"]), "start, end and every ongoing of the local flow: {log}");
}

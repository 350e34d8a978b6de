//! firefly listener → udp_firefly relay end to end on loopback (no privileges needed).

use std::net::UdpSocket;
use std::time::Duration;

use serde_json::Value;

use crate::util::{json_of, Flowd, Sink};

const T: Duration = Duration::from_secs(5);

fn vectors(name: &str) -> Vec<String> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/spec").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// A UDP port that was free a moment ago (on both families).
fn free_port() -> u16 {
    let s = UdpSocket::bind("[::]:0").unwrap();
    s.local_addr().unwrap().port()
}

fn body(d: &str) -> Value {
    json_of(d)
}

/// Starts flowd with the firefly plugin relaying to the `sink` collector.
fn relay(sink: &Sink, port: u16, extra: &str) -> Flowd {
    Flowd::start(&format!("PLUGIN='firefly'\nFIREFLY_LISTENER_PORT={port}\nUDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\n{extra}", sink.addr()))
}

#[test]
fn valid_vectors_are_relayed_with_their_fields_and_invalid_ones_are_not() {
    let sink = Sink::v4();
    let port = free_port();
    let f = relay(&sink, port, "");
    let mut valid = vectors("fireflies-valid.txt");
    valid.extend(vectors("fireflies-xrootd-5.5.3.txt"));
    let invalid = vectors("fireflies-invalid.txt");
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
    let out: Vec<Value> = got.iter().map(|d| body(d)).collect();
    // Bare JSON (no syslog header) is accepted in lenient mode; it arrives first.
    for (o, b) in out.iter().zip(&bare) {
        assert_eq!(o["flow-id"], json_of(b)["flow-id"]);
    }
    for (o, d) in out[bare.len()..].iter().zip(&valid) {
        let i = json_of(d);
        assert_eq!(o["flow-id"], i["flow-id"], "{d}");
        assert_eq!(o["context"]["experiment-id"], i["context"]["experiment-id"]);
        assert_eq!(o["context"]["activity-id"], i["context"]["activity-id"]);
        assert_eq!(o["flow-lifecycle"]["state"], i["flow-lifecycle"]["state"]);
        // The relay keeps what it did not produce (SPEC §6).
        let ts = |v: &Value, k: &str| v["flow-lifecycle"].get(k).and_then(Value::as_str).map(|s| flowd::wire::time::parse_rfc3339(s).unwrap());
        assert_eq!(ts(o, "start-time"), ts(&i, "start-time"), "{d}");
        assert_eq!(ts(o, "end-time"), ts(&i, "end-time"), "{d}");
        assert_eq!(o["context"].get("application"), i["context"].get("application"), "{d}");
        assert_eq!(o.get("usage"), i.get("usage"), "{d}");
        assert_eq!(o.get("netlink"), i.get("netlink"), "{d}");
    }
    // The XRootD captures carry usage and netlink: they really were compared above.
    assert!(out.iter().filter(|o| o.get("usage").is_some() && o.get("netlink").is_some()).count() >= 5);
    // Header is flowd's own.
    assert!(got.iter().all(|d| d.contains(" flowd - firefly-json - ")));
    let log = f.stderr();
    assert_eq!(log.matches("firefly: rejected datagram").count().min(10), (invalid.len() - bare.len()).min(10), "{log}");
    let (st, _) = f.stop();
    assert!(st.success());
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

//! Loop-level tests of the discovery state machine: a real `mio::Poll`, fake STUN
//! servers on loopback, and a clock that the test advances (no sleeping for timeouts).

use std::net::UdpSocket as StdUdp;

use super::*;
use crate::wire::stun::{error_response, request_transaction, success_response};

struct Rig {
    poll: mio::Poll,
    events: mio::Events,
    waker: Arc<Waker>,
    m: Metrics,
    now: Instant,
}

impl Rig {
    fn new() -> Rig {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
        Rig { poll, events: mio::Events::with_capacity(8), waker, m: Metrics::new(), now: Instant::now() }
    }

    fn discovery(&self, servers: &[String], extra: impl FnOnce(&mut Config)) -> Discovery {
        let mut cfg = Config::default();
        cfg.discovery.enabled = true;
        extra(&mut cfg);
        let mut d = Discovery::with_servers(&cfg, true, servers);
        d.start(Token(0), Arc::clone(&self.waker), self.now);
        d
    }

    /// Waits (really) for readiness and hands it to the state machine.
    fn pump(&mut self, d: &mut Discovery) {
        self.poll.poll(&mut self.events, Some(Duration::from_secs(5))).unwrap();
        let ready = self.events.iter().any(|e| e.token() == Token(0));
        let woken = self.events.iter().any(|e| e.token() == Token(1));
        if ready {
            d.on_ready(self.poll.registry(), self.now, &mut self.m);
        }
        if woken {
            d.on_wake(self.poll.registry(), self.now, &mut self.m);
        }
    }

    fn tick(&mut self, d: &mut Discovery, advance: Duration) {
        self.now += advance;
        d.on_timeout(self.poll.registry(), self.now, &mut self.m);
    }
}

fn server() -> (StdUdp, String) {
    let s = StdUdp::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let a = s.local_addr().unwrap().to_string();
    (s, a)
}

/// Receives one Binding request; returns its transaction id and the client address.
fn request(s: &StdUdp) -> (TransactionId, SocketAddr) {
    let mut b = [0u8; 1500];
    let (n, from) = s.recv_from(&mut b).unwrap();
    (request_transaction(&b[..n]).unwrap(), from)
}

#[test]
fn test_answering_server_gives_the_public_address_and_rewrites_the_internal_one() {
    let mut r = Rig::new();
    let (srv, addr) = server();
    let mut d = r.discovery(&[addr], |_| {});
    r.tick(&mut d, Duration::ZERO);
    let (tid, from) = request(&srv);
    // A reply with another transaction id is ignored; the real one is taken.
    srv.send_to(&success_response(&[9; 12], "198.51.100.66:1".parse().unwrap(), true, None), from).unwrap();
    srv.send_to(&success_response(&tid, "203.0.113.7:40000".parse().unwrap(), true, Some("fake")), from).unwrap();
    while d.found(false).is_none() {
        r.pump(&mut d);
    }
    let f = d.found(false).unwrap();
    assert_eq!((f.public, f.internal), ("203.0.113.7".parse().unwrap(), Some("127.0.0.1".parse().unwrap())));
    assert_eq!(d.public_for("127.0.0.1".parse().unwrap()), Some("203.0.113.7".parse().unwrap()));
    assert_eq!(d.public_for("127.0.0.2".parse().unwrap()), None);
    assert!(d.settled(), "IPv6 has no server: its round ends at once");
    assert_eq!(r.m.get(&PUBLIC_ADDRESS, &["ipv4", "203.0.113.7", "127.0.0.1", "stun"]), Some(1.0));
    // Re-discovery after the interval: the address changes.
    assert_eq!(d.poll_at(), Some(r.now + Duration::from_secs(600)));
    r.tick(&mut d, Duration::from_secs(600));
    let (tid, from) = request(&srv);
    srv.send_to(&success_response(&tid, "203.0.113.8:40000".parse().unwrap(), false, None), from).unwrap();
    while d.found(false).map(|f| f.public) != Some("203.0.113.8".parse().unwrap()) {
        r.pump(&mut d);
    }
    assert_eq!(r.m.get(&PUBLIC_ADDRESS, &["ipv4", "203.0.113.7", "127.0.0.1", "stun"]), None);
}

#[test]
fn test_silent_server_is_retried_with_backoff_then_the_next_one_answers() {
    let mut r = Rig::new();
    let (silent, a1) = server();
    let (good, a2) = server();
    let mut d = r.discovery(&[a1, a2], |c| c.discovery.timeout = Duration::from_millis(100));
    r.tick(&mut d, Duration::ZERO);
    let (t0, _) = request(&silent);
    assert_eq!(d.poll_at(), Some(r.now + Duration::from_millis(100)));
    r.tick(&mut d, Duration::from_millis(100));
    let (t1, _) = request(&silent);
    assert_eq!(t0, t1, "a retransmission repeats the transaction id");
    assert_eq!(d.poll_at(), Some(r.now + Duration::from_millis(200)), "the timeout doubles");
    r.tick(&mut d, Duration::from_millis(200));
    request(&silent);
    r.tick(&mut d, Duration::from_millis(400));
    assert_eq!(r.m.get(&FAILURES, &["ipv4", "timeout"]), Some(1.0));
    let (tid, from) = request(&good);
    good.send_to(&success_response(&tid, "192.0.2.99:1".parse().unwrap(), true, None), from).unwrap();
    while d.found(false).is_none() {
        r.pump(&mut d);
    }
    assert!(d.outcomes()[0].result.as_ref().unwrap_err().contains("no answer after 3 tries"));
    assert_eq!(d.found(false).unwrap().public, "192.0.2.99".parse::<IpAddr>().unwrap());
}

#[test]
fn test_malformed_and_error_replies_move_on_and_a_failed_round_keeps_the_old_address() {
    let mut r = Rig::new();
    let (bad, a1) = server();
    let (err, a2) = server();
    let mut d = r.discovery(&[a1, a2], |c| c.discovery.map = vec![("10.9.9.9".parse().unwrap(), "192.0.2.9".parse().unwrap())]);
    d.fams[0].found = Some(Found { internal: Some("127.0.0.1".parse().unwrap()), public: "203.0.113.1".parse().unwrap(), source: "old".into() });
    r.tick(&mut d, Duration::ZERO);
    let (tid, from) = request(&bad);
    let mut junk = success_response(&tid, "203.0.113.7:1".parse().unwrap(), true, None);
    junk.truncate(junk.len() - 2);
    bad.send_to(&junk, from).unwrap();
    while r.m.get(&FAILURES, &["ipv4", "malformed"]).is_none() {
        r.pump(&mut d);
    }
    let (tid, from) = request(&err);
    err.send_to(&error_response(&tid, 400, "Bad Request"), from).unwrap();
    while r.m.get(&FAILURES, &["ipv4", "no_answer"]).is_none() {
        r.pump(&mut d);
    }
    let texts: Vec<String> = d.outcomes().iter().map(|o| o.result.clone().unwrap_err()).collect();
    assert!(texts[0].starts_with("malformed reply"), "{texts:?}");
    assert_eq!(texts[1], "error response 400 Bad Request");
    assert_eq!(d.public_for("127.0.0.1".parse().unwrap()), Some("203.0.113.1".parse().unwrap()), "kept");
    assert_eq!(d.public_for("10.9.9.9".parse().unwrap()), Some("192.0.2.9".parse().unwrap()), "manual pair");
    assert_eq!(d.poll_at(), Some(r.now + Duration::from_secs(60)), "a failed round retries sooner");
}

#[test]
fn test_refused_port_is_unreachable_at_once() {
    let mut r = Rig::new();
    let (s, a) = server();
    drop(s);
    let mut d = r.discovery(&[a], |_| {});
    r.tick(&mut d, Duration::ZERO);
    while r.m.get(&FAILURES, &["ipv4", "no_answer"]).is_none() {
        r.pump(&mut d);
    }
    assert!(d.outcomes()[0].result.as_ref().unwrap_err().starts_with("unreachable"), "{:?}", d.outcomes());
}

#[test]
fn test_names_resolve_on_a_helper_thread_and_a_bad_one_is_not_fatal() {
    let mut r = Rig::new();
    let (srv, a) = server();
    // `localhost` resolves from /etc/hosts: no packet leaves the host.
    let port = a.rsplit(':').next().unwrap();
    let mut d = r.discovery(&["bad name:1".to_string(), format!("localhost:{port}")], |_| {});
    assert_eq!(d.poll_at(), None, "waiting for the resolver thread");
    while d.poll_at().is_none() {
        r.pump(&mut d);
    }
    let (tid, from) = request(&srv);
    srv.send_to(&success_response(&tid, "203.0.113.5:1".parse().unwrap(), true, None), from).unwrap();
    while d.found(false).is_none() {
        r.pump(&mut d);
    }
    assert!(d.outcomes()[0].result.as_ref().unwrap_err().starts_with("cannot resolve"));
    assert_eq!(r.m.get(&FAILURES, &["any", "resolve"]), Some(1.0));
}

#[test]
fn test_disabled_discovery_only_applies_the_manual_map() {
    let r = Rig::new();
    let mut cfg = Config::default();
    cfg.discovery.map = vec![("fd00::1".parse().unwrap(), "2001:db8::1".parse().unwrap())];
    let mut d = Discovery::new(&cfg);
    d.start(Token(0), Arc::clone(&r.waker), r.now);
    assert_eq!(d.poll_at(), None);
    assert!(d.settled());
    assert_eq!(d.public_for("fd00::1".parse().unwrap()), Some("2001:db8::1".parse().unwrap()));
    assert_eq!(d.public_for("fd00::2".parse().unwrap()), None);
}

//! Open flows of the udp_firefly backend with their latest `tcp_info`, and the periodic
//! `ongoing` fireflies (UDP_FIREFLY_NETLINK, UDP_FIREFLY_ONGOING_INTERVAL).
//!
//! One period is an explicit state machine (`Phase`): `Idle { next }` → `Dumping`
//! (one sock_diag dump per family on a non-blocking netlink socket registered in the
//! loop's `Poll`; replies are parsed as they arrive, never waited for) → `Emitting`
//! (the `ongoing` fireflies, at most [`EMIT_PER_TURN`] per loop turn so a period with
//! 10,000 open flows never holds the loop for long) → `Idle`. One dump serves every
//! flow: each socket is looked up by its 4-tuple in both orientations (the flow's src is
//! normally the local side; a socket whose local side is the flow's src wins over the
//! reverse one, which matters when both ends are on this host). A dump that misses its
//! deadline is abandoned (late replies carry an old sequence number and are skipped)
//! and the period goes on with the tcp_info already known.
//!
//! An `end` firefly uses the last tcp_info seen for its flow: when the end is announced
//! the socket may already be gone. Nothing here waits on a consumer: fireflies are
//! produced and sent by the same backend in the same turn, so there is no queue that a
//! slow or absent reader could fill (the way flowd-go's enrichment deadlocks).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::config::Config;
use crate::flow::{FlowEvent, FlowKey, FlowState, Micros, Proto};
use crate::metrics::{Desc, Kind, Metrics};
use crate::netaddr::canonical;
use crate::sys::netlink::{DiagSocket, RECV_BUF};
use crate::wire::sock_diag::{self, Family, Filter, TcpInfo};

/// tcp_info dumps of the udp_firefly backend, by result.
pub static DUMPS: Desc = Desc {
    name: "flowd_firefly_tcp_info_dumps_total",
    help: "sock_diag dumps made for fireflies' netlink/usage data, by result (ok, error, timeout, skipped = no open TCP flow).",
    kind: Kind::Counter,
    labels: &["result"],
};

/// Ongoing fireflies produced.
pub static ONGOING: Desc = Desc {
    name: "flowd_fireflies_ongoing_total",
    help: "Periodic ongoing fireflies produced (UDP_FIREFLY_ONGOING_INTERVAL).",
    kind: Kind::Counter,
    labels: &[],
};

/// Ongoing fireflies encoded per loop turn at most.
pub const EMIT_PER_TURN: usize = 2048;

/// TCP states worth asking for: every connected one (not LISTEN, TIME_WAIT, CLOSE).
const CONNECTED: u32 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);

/// The tcp_info of a flow, from the socket's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// As the kernel sent it.
    pub info: TcpInfo,
    /// True when the socket's local side is the flow's dst (usage is then swapped so
    /// that it is always seen from the flow's src).
    pub reversed: bool,
}

impl Sample {
    /// `usage` (received, sent) from the flow's src side.
    pub fn usage(&self) -> Option<(u64, u64)> {
        let (rx, tx) = crate::wire::netlink_json::usage(&self.info)?;
        Some(if self.reversed { (tx, rx) } else { (rx, tx) })
    }
}

struct Tracked {
    exp: u32,
    act: u32,
    start: Micros,
    sample: Option<Sample>,
    /// Dump generation that last set `sample`.
    gen: u32,
}

enum Phase {
    /// Neither netlink data nor ongoing fireflies are wanted.
    Off,
    /// Waiting for the next period.
    Idle { next: Instant },
    /// A dump of `family` with sequence `seq` is in flight.
    Dumping { family: Family, seq: u32, deadline: Instant, next: Instant },
    /// Ongoing fireflies of this period are being produced (from `since`).
    Emitting { since: Instant, next: Instant },
}

/// Open flows, their tcp_info, and the period state machine.
pub struct TcpStats {
    flows: HashMap<FlowKey, Tracked>,
    cap: usize,
    netlink: bool,
    ongoing: bool,
    period: Duration,
    sock: Option<DiagSocket>,
    buf: Vec<u8>,
    phase: Phase,
    seq: u32,
    gen: u32,
    emit: Vec<FlowKey>,
    emit_pos: usize,
}

impl TcpStats {
    /// Tracking as configured; inactive (and free) unless netlink or ongoing is on.
    pub fn new(cfg: &Config) -> TcpStats {
        let ongoing = cfg.enrich.ongoing_interval;
        TcpStats {
            flows: HashMap::new(),
            cap: cfg.daemon.flow_table_size,
            netlink: cfg.enrich.netlink,
            ongoing: ongoing.is_some(),
            period: ongoing.unwrap_or(cfg.enrich.netlink_interval),
            sock: None,
            buf: Vec::new(),
            phase: Phase::Off,
            seq: 0,
            gen: 0,
            emit: Vec::new(),
            emit_pos: 0,
        }
    }

    /// True when flows are tracked (netlink or ongoing enabled).
    pub fn active(&self) -> bool {
        self.netlink || self.ongoing
    }

    /// Opens the sock_diag socket and registers it under `token`; starts the periods.
    /// Without a socket (no permission, old kernel) fireflies go out without netlink data.
    pub fn register(&mut self, reg: &mio::Registry, token: Token, now: Instant) {
        if !self.active() {
            return;
        }
        if self.netlink {
            let opened = DiagSocket::open().and_then(|s| {
                reg.register(&mut SourceFd(&s.as_raw_fd()), token, Interest::READABLE)?;
                Ok(s)
            });
            match opened {
                Ok(s) => {
                    self.sock = Some(s);
                    self.buf = vec![0u8; RECV_BUF];
                }
                Err(e) => log::error!("udp_firefly: cannot open a sock_diag socket, fireflies carry no netlink data: {e}"),
            }
        }
        self.phase = Phase::Idle { next: now + self.period };
    }

    /// Removes the netlink socket from the poll.
    pub fn deregister(&mut self, reg: &mio::Registry) {
        if let Some(s) = &self.sock {
            let _ = reg.deregister(&mut SourceFd(&s.as_raw_fd()));
        }
    }

    /// Number of open flows tracked.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Follows one of this host's flow events; returns the tcp_info to put in its firefly
    /// (`end`: the last one seen before the flow ended).
    pub fn observe(&mut self, ev: &FlowEvent) -> Option<Sample> {
        if !self.active() {
            return None;
        }
        match ev.state {
            FlowState::Start | FlowState::Ongoing => {
                if let Some(t) = self.flows.get_mut(&ev.key) {
                    return t.sample;
                }
                if self.flows.len() < self.cap {
                    let start = ev.start_time.unwrap_or(ev.at);
                    self.flows.insert(ev.key, Tracked { exp: ev.exp, act: ev.act, start, sample: None, gen: 0 });
                }
                None
            }
            FlowState::End => self.flows.remove(&ev.key).and_then(|t| t.sample),
        }
    }

    /// The next deadline (`Emitting` is due at once).
    pub fn poll_at(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Off => None,
            Phase::Idle { next } => Some(*next),
            Phase::Dumping { deadline, .. } => Some(*deadline),
            Phase::Emitting { since, .. } => Some(*since),
        }
    }

    /// Starts a period, or abandons a dump that missed its deadline.
    pub fn on_timeout(&mut self, now: Instant, metrics: &mut Metrics) {
        match self.phase {
            Phase::Idle { next } if next <= now => {
                let next = (next + self.period).max(now);
                let tcp = self.flows.keys().any(|k| k.proto == Proto::Tcp);
                if self.sock.is_some() && tcp {
                    self.gen = self.gen.wrapping_add(1);
                    self.send_dump(Family::V4, now, next, metrics);
                } else {
                    if self.netlink {
                        metrics.inc(&DUMPS, &["skipped"]);
                    }
                    self.end_period(now, next);
                }
            }
            Phase::Dumping { deadline, next, .. } if deadline <= now => {
                metrics.inc(&DUMPS, &["timeout"]);
                log::warn!("udp_firefly: tcp_info dump did not finish in time; using the tcp_info already known");
                if let Some(s) = &self.sock {
                    s.drain(&mut self.buf);
                }
                self.end_period(now, next);
            }
            _ => {}
        }
    }

    fn send_dump(&mut self, family: Family, now: Instant, next: Instant, metrics: &mut Metrics) {
        self.seq = self.seq.wrapping_add(1);
        let req = sock_diag::request(family, Filter { states: CONNECTED, info: true }, self.seq);
        match self.sock.as_ref().map(|s| s.send(&req)) {
            Some(Ok(())) => {
                let deadline = now + self.period.min(Duration::from_secs(10));
                self.phase = Phase::Dumping { family, seq: self.seq, deadline, next };
            }
            Some(Err(e)) => {
                metrics.inc(&DUMPS, &["error"]);
                log::warn!("udp_firefly: cannot request a tcp_info dump: {e}");
                self.end_period(now, next);
            }
            None => self.end_period(now, next),
        }
    }

    fn end_period(&mut self, now: Instant, next: Instant) {
        if self.ongoing && !self.flows.is_empty() {
            self.emit.clear();
            self.emit.extend(self.flows.keys().copied());
            self.emit_pos = 0;
            self.phase = Phase::Emitting { since: now, next };
        } else {
            self.phase = Phase::Idle { next };
        }
    }

    /// Reads dump replies until `WouldBlock` (the owner's token became readable).
    pub fn on_ready(&mut self, now: Instant, metrics: &mut Metrics) {
        loop {
            let Some(sock) = &self.sock else { return };
            let Phase::Dumping { family, seq, next, .. } = self.phase else {
                // Nothing in flight: discard leftovers of an abandoned dump.
                sock.drain(&mut self.buf);
                return;
            };
            let n = match sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    metrics.inc(&DUMPS, &["error"]);
                    log::warn!("udp_firefly: tcp_info dump failed: {e}");
                    self.end_period(now, next);
                    continue;
                }
            };
            let (flows, gen) = (&mut self.flows, self.gen);
            let parsed = sock_diag::parse(self.buf.get(..n).unwrap_or(&[]), seq, |c| match_conn(flows, gen, c.src, c.dst, c.tcp_info));
            match parsed {
                Ok(p) if p.done => match family {
                    Family::V4 => self.send_dump(Family::V6, now, next, metrics),
                    Family::V6 => {
                        metrics.inc(&DUMPS, &["ok"]);
                        self.end_period(now, next);
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    metrics.inc(&DUMPS, &["error"]);
                    log::warn!("udp_firefly: tcp_info dump failed: {e}");
                    self.end_period(now, next);
                }
            }
        }
    }

    /// The next `ongoing` event of this period, if any is left for this turn.
    /// `None` ends the turn's share; the phase stays `Emitting` while flows remain.
    pub fn next_ongoing(&mut self, turn_budget: &mut usize, wall: Micros, metrics: &mut Metrics) -> Option<FlowEvent> {
        let Phase::Emitting { next, .. } = self.phase else { return None };
        while *turn_budget > 0 {
            let Some(key) = self.emit.get(self.emit_pos).copied() else {
                self.phase = Phase::Idle { next };
                return None;
            };
            self.emit_pos += 1;
            if let Some(t) = self.flows.get(&key) {
                *turn_budget -= 1;
                metrics.inc(&ONGOING, &[]);
                let mut ev = FlowEvent::new(FlowState::Ongoing, key, t.exp, t.act, wall);
                ev.start_time = Some(t.start);
                return Some(ev);
            }
        }
        None
    }
}

/// Gives one dumped socket's tcp_info to the flow it belongs to, if any.
fn match_conn(flows: &mut HashMap<FlowKey, Tracked>, gen: u32, local: SocketAddr, remote: SocketAddr, info: Option<TcpInfo>) {
    let Some(info) = info else { return };
    let local = SocketAddr::new(canonical(local.ip()), local.port());
    let remote = SocketAddr::new(canonical(remote.ip()), remote.port());
    let key = FlowKey { proto: Proto::Tcp, src: local, dst: remote };
    if let Some(t) = flows.get_mut(&key) {
        t.sample = Some(Sample { info, reversed: false });
        t.gen = gen;
    } else if let Some(t) = flows.get_mut(&key.reversed()) {
        // The socket whose local side is the flow's src wins within one dump.
        if t.gen != gen || t.sample.is_some_and(|s| s.reversed) {
            t.sample = Some(Sample { info, reversed: true });
            t.gen = gen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(netlink: bool, ongoing: Option<u64>) -> Config {
        let mut c = Config::default();
        c.enrich.netlink = netlink;
        c.enrich.ongoing_interval = ongoing.map(Duration::from_secs);
        c
    }

    fn key(s: &str, d: &str) -> FlowKey {
        FlowKey::new(Proto::Tcp, s.parse().unwrap(), d.parse().unwrap()).unwrap()
    }

    fn info(rtt: u32) -> TcpInfo {
        let mut raw = [0u8; 248];
        raw[0] = 1;
        raw[68..72].copy_from_slice(&rtt.to_ne_bytes());
        raw[120..128].copy_from_slice(&100u64.to_ne_bytes());
        raw[128..136].copy_from_slice(&7u64.to_ne_bytes());
        TcpInfo::from_bytes(&raw)
    }

    #[test]
    fn test_matching_prefers_the_src_side_and_maps_v4_in_v6() {
        let mut t = TcpStats::new(&cfg(true, None));
        let k = key("127.0.0.1:1000", "127.0.0.1:2000");
        t.observe(&FlowEvent::new(FlowState::Start, k, 2, 9, Micros(1)));
        // Reverse socket first, then the exact one: the exact one wins.
        match_conn(&mut t.flows, 1, k.dst, k.src, Some(info(5000)));
        match_conn(&mut t.flows, 1, "[::ffff:127.0.0.1]:1000".parse().unwrap(), "[::ffff:127.0.0.1]:2000".parse().unwrap(), Some(info(1234)));
        match_conn(&mut t.flows, 1, k.dst, k.src, Some(info(9999)));
        let s = t.flows[&k].sample.unwrap();
        assert_eq!((s.info.rtt(), s.reversed), (Some(1234), false));
        assert_eq!(s.usage(), Some((7, 100)));
        // Only the reverse socket exists in the next dump: usage is swapped to the src's view.
        match_conn(&mut t.flows, 2, k.dst, k.src, Some(info(42)));
        let s = t.flows[&k].sample.unwrap();
        assert_eq!((s.info.rtt(), s.reversed, s.usage()), (Some(42), true, Some((100, 7))));
        // The end event gets the last sample and forgets the flow.
        let got = t.observe(&FlowEvent::new(FlowState::End, k, 2, 9, Micros(2)));
        assert_eq!(got.map(|s| s.info.rtt()), Some(Some(42)));
        assert!(t.is_empty());
    }

    #[test]
    fn test_inactive_tracks_nothing() {
        let mut t = TcpStats::new(&cfg(false, None));
        assert!(!t.active());
        t.observe(&FlowEvent::new(FlowState::Start, key("127.0.0.1:1", "127.0.0.1:2"), 1, 1, Micros(1)));
        assert!(t.is_empty() && t.poll_at().is_none());
    }

    #[test]
    fn test_ongoing_without_netlink_emits_every_open_flow_in_bounded_turns() {
        let poll = mio::Poll::new().unwrap();
        let mut m = Metrics::new();
        let mut t = TcpStats::new(&cfg(false, Some(5)));
        let now = Instant::now();
        t.register(poll.registry(), Token(0), now);
        for p in 1..=(EMIT_PER_TURN as u16 + 10) {
            t.observe(&FlowEvent::new(FlowState::Start, key("192.0.2.1:1", &format!("198.51.100.1:{p}")), 2, 9, Micros(5)));
        }
        let udp = FlowKey::new(Proto::Udp, "192.0.2.1:1".parse().unwrap(), "198.51.100.1:1".parse().unwrap()).unwrap();
        t.observe(&FlowEvent::new(FlowState::Start, udp, 2, 9, Micros(5)));
        assert_eq!(t.poll_at(), Some(now + Duration::from_secs(5)));
        let at = now + Duration::from_secs(5);
        t.on_timeout(at, &mut m);
        let mut turns = Vec::new();
        while t.poll_at().is_some_and(|p| p <= at) {
            let mut budget = EMIT_PER_TURN;
            let mut n = 0;
            while let Some(ev) = t.next_ongoing(&mut budget, Micros(99), &mut m) {
                assert_eq!((ev.state, ev.start_time, ev.at), (FlowState::Ongoing, Some(Micros(5)), Micros(99)));
                n += 1;
            }
            turns.push(n);
        }
        assert_eq!(turns, vec![EMIT_PER_TURN, 11]);
        assert_eq!(t.poll_at(), Some(at + Duration::from_secs(5)));
        assert_eq!(m.get(&ONGOING, &[]), Some((EMIT_PER_TURN + 11) as f64));
    }

    #[test]
    fn test_dump_through_the_state_machine_finds_a_real_loopback_connection() {
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(8);
        let mut m = Metrics::new();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, _) = l.accept().unwrap();
        let k = key(&c.local_addr().unwrap().to_string(), &l.local_addr().unwrap().to_string());
        let mut t = TcpStats::new(&cfg(true, Some(2)));
        let now = Instant::now();
        t.register(poll.registry(), Token(7), now);
        t.observe(&FlowEvent::new(FlowState::Start, k, 2, 9, Micros(5)));
        t.on_timeout(now + Duration::from_secs(2), &mut m);
        while matches!(t.phase, Phase::Dumping { .. }) {
            poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
            t.on_ready(now, &mut m);
        }
        assert_eq!(m.get(&DUMPS, &["ok"]), Some(1.0));
        let s = t.flows[&k].sample.unwrap();
        assert!(!s.reversed && s.info.rtt().is_some());
        let mut budget = 10;
        assert!(t.next_ongoing(&mut budget, Micros(6), &mut m).is_some());
        assert!(t.next_ongoing(&mut budget, Micros(6), &mut m).is_none());
        assert!(matches!(t.phase, Phase::Idle { .. }));
    }
}

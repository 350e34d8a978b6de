//! The enrichment layer: what the daemon adds to the events plugins report, before they
//! reach the backends. Data path: plugin → `FlowEvent` → flow table → [`Enricher::enrich`]
//! → every backend; the enricher's own `ongoing` events enter the same path at the front
//! (as events of origin `enrich`), so they are counted in `flowd_events_total` and seen by
//! every backend like any other.
//!
//! - [`Enricher`] (this file) owns the tcp_info cache ([`tcp`]), the period that refreshes
//!   it and produces `ongoing` events, and public-address discovery. It attaches to each
//!   event of this host's own flows an [`Enriched`]: the key with the public address, the
//!   socket's tcp_info. Relayed events (from the firefly listener) are followed the same
//!   way when the flow is TCP and one of its ends is this host's (a transfer service next
//!   to flowd sending it fireflies); other relayed events are left alone.
//! - [`dump`]: THE sock_diag dump machine, shared by this layer's period, the netlink
//!   plugin's scan and the prometheus backend's scrape.
//! - [`local`]: THE cache of this host's own addresses (lent through `Context::local`).
//!
//! One period is an explicit state machine (`Phase`): `Idle { next }` → `Dumping` (one
//! dump of the TCP sockets in connected states, IPv4 then IPv6, on the machine's
//! non-blocking socket registered under the enricher's token; replies are matched to the
//! cache as they arrive) → `Emitting` (the `ongoing` events, at most [`EMIT_PER_TURN`]
//! per loop turn, so a period with 10,000 open flows never holds the loop for long) →
//! `Idle`. A dump that fails or misses its deadline is abandoned, counted, and the period
//! goes on with the tcp_info already known. Nothing waits on a consumer: the events go to
//! the loop's pending list, fanned out in the same turn, so there is no queue that a slow
//! or absent reader could fill (the way flowd-go's enrichment deadlocks).
//!
//! Config: read once in [`Settings::from_config`] (and `Discovery::new`). The keys are
//! udp_firefly's (UDP_FIREFLY_NETLINK, UDP_FIREFLY_ONGOING_INTERVAL,
//! UDP_FIREFLY_NETLINK_INTERVAL, IP_DISCOVERY_*): without that backend the layer is off,
//! as these features were before it became the daemon's.
//!
//! May depend on `wire`, `sys`, `flow`, `metrics`, `config`, `context`, `netaddr` and
//! `discovery`; never on plugins, backends or the daemon (they depend on it).

pub(crate) mod dump;
pub mod local;
pub(crate) mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token, Waker};

use crate::config::{BackendKind, Config};
use crate::context::Context;
use crate::discovery::{self, Discovery};
use crate::flow::{Enriched, FlowEvent, FlowKey, FlowState, Origin, Proto, Relayed};
use crate::metrics::{Desc, Kind, Metrics};
use crate::wire::sock_diag::Filter;
use dump::{Dump, Step};
use tcp::TcpCache;

/// tcp_info dumps of the enrichment layer, by result.
pub(crate) static DUMPS: Desc = Desc {
    name: "flowd_firefly_tcp_info_dumps_total",
    help: "sock_diag dumps made for fireflies' netlink/usage data (enrichment layer), by result (ok, error, timeout, skipped = no open TCP flow).",
    kind: Kind::Counter,
    labels: &["result"],
};

/// `ongoing` events produced.
pub(crate) static ONGOING: Desc = Desc {
    name: "flowd_fireflies_ongoing_total",
    help: "Periodic ongoing events produced (UDP_FIREFLY_ONGOING_INTERVAL); also counted in flowd_events_total{plugin=\"enrich\"}.",
    kind: Kind::Counter,
    labels: &[],
};

/// `ongoing` events produced per loop turn at most.
pub(crate) const EMIT_PER_TURN: usize = 2048;
/// Dump reply datagrams read per loop turn before yielding to other sources.
const TURN_CAP: usize = 64;
/// Longest a dump may take (at most one period).
const DUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP states worth asking for: every connected one (not LISTEN, TIME_WAIT, CLOSE).
const CONNECTED: u32 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);

/// What the enrichment layer does (the only place it reads the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Public-address discovery and manual pairs (IP_DISCOVERY_*) are in force.
    pub discovery: bool,
    /// Attach tcp_info from periodic dumps (UDP_FIREFLY_NETLINK).
    pub netlink: bool,
    /// Period of `ongoing` events (UDP_FIREFLY_ONGOING_INTERVAL).
    pub ongoing_interval: Option<Duration>,
    /// Period of the dumps when there are no `ongoing` events (UDP_FIREFLY_NETLINK_INTERVAL).
    pub netlink_interval: Duration,
    /// Most flows followed (FLOW_TABLE_SIZE).
    pub max_flows: usize,
}

impl Settings {
    /// From the config: on only with the udp_firefly backend, whose keys these are.
    pub(crate) fn from_config(cfg: &Config) -> Settings {
        let on = cfg.backends.contains(&BackendKind::UdpFirefly);
        Settings {
            discovery: on,
            netlink: on && cfg.enrich.netlink,
            ongoing_interval: cfg.enrich.ongoing_interval.filter(|_| on),
            netlink_interval: cfg.enrich.netlink_interval,
            max_flows: cfg.daemon.flow_table_size,
        }
    }

    /// True when open flows are followed (tcp_info or `ongoing` wanted).
    pub(crate) fn tracks_flows(&self) -> bool {
        self.netlink || self.ongoing_interval.is_some()
    }

    fn period(&self) -> Duration {
        self.ongoing_interval.unwrap_or(self.netlink_interval)
    }
}

/// Declares the layer's metric families that this config uses.
pub(crate) fn declare(m: &mut Metrics, cfg: &Config) {
    let e = Settings::from_config(cfg);
    if e.discovery && cfg.discovery.enabled {
        m.declare(&discovery::PUBLIC_ADDRESS);
        m.declare(&discovery::FAILURES);
    }
    if e.netlink {
        m.declare(&DUMPS);
    }
    if e.ongoing_interval.is_some() {
        m.declare(&ONGOING);
    }
}

enum Phase {
    /// Neither tcp_info nor `ongoing` events are wanted.
    Off,
    /// Waiting for the next period.
    Idle { next: Instant },
    /// The period's dump is in flight (the machine holds its deadline).
    Dumping { next: Instant },
    /// `ongoing` events of this period are being produced (from `since`).
    Emitting { since: Instant, next: Instant },
}

/// The enrichment layer: tcp_info cache, `ongoing` period, public-address discovery.
pub(crate) struct Enricher {
    cfg: Settings,
    discovery: Option<Discovery>,
    tcp: TcpCache,
    dump: Option<Dump>,
    phase: Phase,
    /// The flows of this period's `ongoing` events, and how many are done.
    emit: Vec<FlowKey>,
    emit_pos: usize,
    /// Set (to the turn's time) when a dump read stopped at the per-turn cap.
    backlog: Option<Instant>,
}

impl Enricher {
    /// As configured; nothing runs before [`Enricher::start`].
    pub(crate) fn new(cfg: &Config) -> Enricher {
        let e = Settings::from_config(cfg);
        let discovery = e.discovery.then(|| Discovery::new(cfg));
        Enricher { tcp: TcpCache::new(e.max_flows), cfg: e, discovery, dump: None, phase: Phase::Off, emit: Vec::new(), emit_pos: 0, backlog: None }
    }

    /// Starts discovery and the period; sockets are registered under `token` and helper
    /// threads wake the loop with `waker`. Without a sock_diag socket (no permission, old
    /// kernel) events get no tcp_info; `ongoing` events still run.
    pub(crate) fn start(&mut self, reg: &Registry, token: Token, waker: &Arc<Waker>, now: Instant) {
        if let Some(d) = &mut self.discovery {
            d.start(token, Arc::clone(waker), now);
        }
        if !self.cfg.tracks_flows() {
            return;
        }
        if self.cfg.netlink {
            match Dump::open().and_then(|mut d| d.register(reg, token).map(|()| d)) {
                Ok(d) => self.dump = Some(d),
                Err(e) => log::error!("enrich: cannot open a sock_diag socket, fireflies carry no netlink data: {e}"),
            }
        }
        self.phase = Phase::Idle { next: now + self.cfg.period() };
    }

    /// Removes every socket from the poll (before the enricher is dropped).
    pub(crate) fn deregister(&mut self, reg: &Registry) {
        if let Some(d) = &mut self.discovery {
            d.deregister(reg);
        }
        if let Some(d) = &mut self.dump {
            d.deregister(reg);
        }
    }

    /// True when open flows are followed (the loop gives them to a new enricher on reload).
    pub(crate) fn tracks_flows(&self) -> bool {
        self.cfg.tracks_flows()
    }

    /// Number of open flows followed.
    #[cfg(test)]
    pub(crate) fn flows(&self) -> usize {
        self.tcp.len()
    }

    /// Attaches what is known about one of this host's flows to its event (after the
    /// flow table gave it its times); follows the flow's start and end.
    pub(crate) fn enrich(&mut self, ev: &mut FlowEvent) {
        if !follows(ev) {
            return;
        }
        let sample = if self.cfg.tracks_flows() { self.tcp.observe(ev) } else { None };
        let sample = sample.filter(|_| self.cfg.netlink);
        let public = self.discovery.as_ref().map(|d| public_key(d, &ev.key)).filter(|k| *k != ev.key);
        if sample.is_none() && public.is_none() {
            return;
        }
        ev.enriched = Some(Box::new(Enriched { public, tcp_info: sample.map(|s| s.info.as_bytes().to_vec()), reversed: sample.is_some_and(|s| s.reversed) }));
    }

    /// A flow open before this enricher was created (reload): follow it again.
    pub(crate) fn adopt(&mut self, ev: &FlowEvent) {
        if self.cfg.tracks_flows() && follows(ev) {
            self.tcp.observe(ev);
        }
    }

    /// The earliest deadline: discovery's, the period's, now while emitting or after a
    /// capped read.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        let period = match &self.phase {
            Phase::Off => None,
            Phase::Idle { next } => Some(*next),
            Phase::Dumping { .. } => [self.dump.as_ref().and_then(Dump::deadline), self.backlog].into_iter().flatten().min(),
            Phase::Emitting { since, .. } => Some(*since),
        };
        [self.discovery.as_ref().and_then(Discovery::poll_at), period].into_iter().flatten().min()
    }

    /// Due timers: discovery, the start of a period, an overdue dump or a capped read,
    /// and this turn's share of `ongoing` events (pushed into `cx.out`).
    pub(crate) fn on_timeout(&mut self, cx: &mut Context<'_>) {
        let now = cx.now;
        if let Some(d) = self.discovery.as_mut().filter(|d| d.poll_at().is_some_and(|t| t <= now)) {
            d.on_timeout(cx.poll, now, cx.metrics);
        }
        match self.phase {
            Phase::Idle { next } if next <= now => {
                let next = (next + self.cfg.period()).max(now);
                match self.dump.as_mut().filter(|_| self.tcp.has_tcp()) {
                    Some(d) => {
                        self.tcp.next_generation();
                        let step = d.start(Filter { states: CONNECTED, info: true, ext: 0 }, now + self.cfg.period().min(DUMP_TIMEOUT), cx.poll, &mut self.tcp);
                        self.phase = Phase::Dumping { next };
                        self.step(step, cx);
                    }
                    None => {
                        if self.cfg.netlink {
                            cx.metrics.inc(&DUMPS, &["skipped"]);
                        }
                        self.end_period(now, next);
                    }
                }
            }
            Phase::Dumping { next } => match self.dump.as_mut().and_then(|d| d.expire(now, cx.poll)) {
                Some(_) => {
                    cx.metrics.inc(&DUMPS, &["timeout"]);
                    log::warn!("enrich: tcp_info dump did not finish in time; using the tcp_info already known");
                    self.end_period(now, next);
                }
                None if self.backlog.is_some() => self.read(cx),
                None => {}
            },
            _ => {}
        }
        self.emit_ongoing(cx);
    }

    /// The enricher's token is ready: STUN replies, dump replies.
    pub(crate) fn on_ready(&mut self, cx: &mut Context<'_>) {
        if let Some(d) = &mut self.discovery {
            d.on_ready(cx.poll, cx.now, cx.metrics);
        }
        self.read(cx);
    }

    /// The loop's waker fired: a discovery helper thread may have finished.
    pub(crate) fn on_wake(&mut self, cx: &mut Context<'_>) {
        if let Some(d) = &mut self.discovery {
            d.on_wake(cx.poll, cx.now, cx.metrics);
        }
    }

    fn read(&mut self, cx: &mut Context<'_>) {
        if let Some(d) = &mut self.dump {
            let step = d.read(TURN_CAP, cx.poll, &mut self.tcp);
            self.step(step, cx);
        }
    }

    fn step(&mut self, step: Step, cx: &mut Context<'_>) {
        self.backlog = None;
        let Phase::Dumping { next } = self.phase else { return };
        match step {
            Step::Idle | Step::Pending => {}
            Step::Capped => self.backlog = Some(cx.now),
            Step::Done { .. } => {
                cx.metrics.inc(&DUMPS, &["ok"]);
                self.end_period(cx.now, next);
            }
            Step::Failed(e) => {
                cx.metrics.inc(&DUMPS, &["error"]);
                log::warn!("enrich: tcp_info dump failed: {e}");
                self.end_period(cx.now, next);
            }
        }
    }

    fn end_period(&mut self, now: Instant, next: Instant) {
        if self.cfg.ongoing_interval.is_some() && !self.tcp.is_empty() {
            self.emit.clear();
            self.emit.extend(self.tcp.keys().copied());
            self.emit_pos = 0;
            self.phase = Phase::Emitting { since: now, next };
        } else {
            self.phase = Phase::Idle { next };
        }
    }

    /// Pushes up to [`EMIT_PER_TURN`] of this period's `ongoing` events into `cx.out`;
    /// flows that ended meanwhile are skipped. The period ends with the last one.
    fn emit_ongoing(&mut self, cx: &mut Context<'_>) {
        let Phase::Emitting { next, .. } = self.phase else { return };
        let mut budget = EMIT_PER_TURN;
        while budget > 0 {
            let Some(key) = self.emit.get(self.emit_pos).copied() else {
                self.phase = Phase::Idle { next };
                return;
            };
            self.emit_pos += 1;
            if let Some(t) = self.tcp.get(&key) {
                budget -= 1;
                cx.metrics.inc(&ONGOING, &[]);
                let mut ev = FlowEvent::new(FlowState::Ongoing, key, t.exp, t.act, cx.wall);
                ev.start_time = Some(t.start);
                ev.origin = Origin::Enricher;
                ev.relayed = t.relay.map(|origin| Box::new(Relayed { origin, received: None }));
                cx.out.push(ev);
            }
        }
        if self.emit_pos >= self.emit.len() {
            self.phase = Phase::Idle { next };
        }
    }
}

/// True for the events this layer follows: this host's own flows, and relayed TCP flows
/// with an end on this host (their socket is here to be dumped).
fn follows(ev: &FlowEvent) -> bool {
    match &ev.relayed {
        None => true,
        Some(r) => ev.key.proto == Proto::Tcp && r.origin.has_local_end(),
    }
}

/// The key with private addresses replaced by public ones (src and dst, as the Python
/// flowd does); UDP_FIREFLY_IP4_SRC/IP6_SRC are the backend's and applied after this.
fn public_key(d: &Discovery, key: &FlowKey) -> FlowKey {
    let map = |a: SocketAddr| match d.public_for(a.ip()) {
        Some(p) => SocketAddr::new(p, a.port()),
        None => a,
    };
    FlowKey { proto: key.proto, src: map(key.src), dst: map(key.dst) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Micros, RelayOrigin};
    use crate::registry::ScitagsRegistry;
    use local::LocalAddrs;

    fn cfg(backends: &[BackendKind], netlink: bool, ongoing: Option<u64>) -> Config {
        Config {
            backends: backends.to_vec(),
            enrich: crate::config::model::EnrichConfig { netlink, ongoing_interval: ongoing.map(Duration::from_secs), ..Default::default() },
            ..Config::default()
        }
    }

    fn key(s: &str, d: &str) -> FlowKey {
        FlowKey::new(Proto::Tcp, s.parse().unwrap(), d.parse().unwrap()).unwrap()
    }

    /// What a loop turn lends: the parts of a `Context`.
    struct Turn {
        poll: mio::Poll,
        waker: Arc<Waker>,
        out: Vec<FlowEvent>,
        rejected: Vec<crate::decision::Rejection>,
        metrics: Metrics,
        registry: ScitagsRegistry,
        local: LocalAddrs,
    }

    impl Turn {
        fn new() -> Turn {
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
            Turn { poll, waker, out: Vec::new(), rejected: Vec::new(), metrics: Metrics::new(), registry: ScitagsRegistry::bundled(), local: LocalAddrs::new() }
        }

        fn cx(&mut self, now: Instant) -> Context<'_> {
            let Turn { poll, out, rejected, metrics, registry, local, .. } = self;
            Context { now, wall: Micros(99), out, rejected, metrics, registry, poll: poll.registry(), local, render: None }
        }
    }

    #[test]
    fn test_off_without_udp_firefly_and_inactive_without_netlink_or_ongoing() {
        let t = Turn::new();
        let now = Instant::now();
        for c in [cfg(&[BackendKind::Dummy], true, Some(1)), cfg(&[BackendKind::UdpFirefly], false, None)] {
            let mut e = Enricher::new(&c);
            e.start(t.poll.registry(), Token(3), &t.waker, now);
            let mut ev = FlowEvent::new(FlowState::Start, key("192.0.2.1:1", "198.51.100.1:2"), 2, 9, Micros(1));
            e.enrich(&mut ev);
            assert!(ev.enriched.is_none() && e.flows() == 0 && e.poll_at().is_none() && !e.tracks_flows());
        }
        assert_eq!(Settings::from_config(&cfg(&[BackendKind::Dummy], true, Some(1))).ongoing_interval, None);
    }

    #[test]
    fn test_public_addresses_are_attached_to_own_events_only() {
        let t = Turn::new();
        let mut c = cfg(&[BackendKind::UdpFirefly, BackendKind::Dummy], false, None);
        c.discovery.map = vec![("10.0.0.5".parse().unwrap(), "192.0.2.5".parse().unwrap())];
        let mut e = Enricher::new(&c);
        e.start(t.poll.registry(), Token(3), &t.waker, Instant::now());
        let k = key("10.0.0.5:1094", "10.0.0.5:2000");
        let mut ev = FlowEvent::new(FlowState::Start, k, 2, 9, Micros(1));
        e.enrich(&mut ev);
        assert_eq!(ev.enriched.as_ref().and_then(|x| x.public), Some(key("192.0.2.5:1094", "192.0.2.5:2000")), "src and dst");
        assert!(ev.enriched.as_ref().is_some_and(|x| x.tcp_info.is_none()));
        let mut relayed = FlowEvent::new(FlowState::Start, k, 2, 9, Micros(1));
        relayed.relayed = Some(Box::new(Relayed::default()));
        e.enrich(&mut relayed);
        assert!(relayed.enriched.is_none());
        let mut other = FlowEvent::new(FlowState::Start, key("10.0.0.6:1", "10.0.0.7:2"), 2, 9, Micros(1));
        e.enrich(&mut other);
        assert!(other.enriched.is_none(), "nothing to attach");
    }

    /// A relayed TCP flow with an end on this host is followed like an own flow, and its
    /// `ongoing` events carry its origin (so the relay's loop rules apply to them); other
    /// relayed flows, and relayed UDP flows, are not followed.
    #[test]
    fn test_relayed_tcp_flows_with_an_end_here_are_followed_and_keep_their_origin() {
        let mut t = Turn::new();
        let mut e = Enricher::new(&cfg(&[BackendKind::UdpFirefly], false, Some(5)));
        let now = Instant::now();
        e.start(t.poll.registry(), Token(3), &t.waker, now);
        let here = RelayOrigin { from: Some("192.0.2.9".parse().unwrap()), src_local: false, dst_local: true };
        let relayed = |k: FlowKey, origin: RelayOrigin| {
            let mut ev = FlowEvent::new(FlowState::Start, k, 2, 9, Micros(5));
            ev.relayed = Some(Box::new(Relayed { origin, received: None }));
            ev
        };
        e.enrich(&mut relayed(key("198.51.100.1:2", "192.0.2.1:1"), here));
        e.enrich(&mut relayed(key("198.51.100.1:4", "198.51.100.2:3"), RelayOrigin { from: here.from, ..RelayOrigin::default() }));
        let udp = FlowKey::new(Proto::Udp, "198.51.100.1:2".parse().unwrap(), "192.0.2.1:1".parse().unwrap()).unwrap();
        e.enrich(&mut relayed(udp, here));
        assert_eq!(e.flows(), 1, "only the TCP flow with an end here");
        e.on_timeout(&mut t.cx(now + Duration::from_secs(5)));
        assert_eq!(t.out.len(), 1);
        assert_eq!(t.out[0].key, key("198.51.100.1:2", "192.0.2.1:1"));
        assert_eq!(t.out[0].relayed.as_deref(), Some(&Relayed { origin: here, received: None }));
    }

    #[test]
    fn test_ongoing_without_netlink_emits_every_open_flow_in_bounded_turns() {
        let mut t = Turn::new();
        let mut e = Enricher::new(&cfg(&[BackendKind::UdpFirefly], false, Some(5)));
        let now = Instant::now();
        e.start(t.poll.registry(), Token(3), &t.waker, now);
        for p in 1..=(EMIT_PER_TURN as u16 + 10) {
            let mut ev = FlowEvent::new(FlowState::Start, key("192.0.2.1:1", &format!("198.51.100.1:{p}")), 2, 9, Micros(5));
            e.enrich(&mut ev);
        }
        let udp = FlowKey::new(Proto::Udp, "192.0.2.1:1".parse().unwrap(), "198.51.100.1:1".parse().unwrap()).unwrap();
        let mut ended = FlowEvent::new(FlowState::Start, udp, 2, 9, Micros(5));
        e.enrich(&mut ended);
        e.enrich(&mut FlowEvent::new(FlowState::End, udp, 2, 9, Micros(6)));
        assert_eq!(e.poll_at(), Some(now + Duration::from_secs(5)));
        let at = now + Duration::from_secs(5);
        let mut turns = Vec::new();
        while e.poll_at().is_some_and(|p| p <= at) {
            t.out.clear();
            e.on_timeout(&mut t.cx(at));
            for ev in &t.out {
                assert_eq!((ev.state, ev.start_time, ev.at, ev.origin), (FlowState::Ongoing, Some(Micros(5)), Micros(99), Origin::Enricher));
                assert_eq!(ev.key.proto, Proto::Tcp, "the ended flow gets none");
            }
            turns.push(t.out.len());
        }
        assert_eq!(turns, vec![EMIT_PER_TURN, 10]);
        assert_eq!(e.poll_at(), Some(at + Duration::from_secs(5)));
        assert_eq!(t.metrics.get(&ONGOING, &[]), Some((EMIT_PER_TURN + 10) as f64));
    }

    #[test]
    fn test_a_period_dumps_real_tcp_info_and_attaches_it_to_ongoing_and_end() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, _) = l.accept().unwrap();
        let k = key(&c.local_addr().unwrap().to_string(), &l.local_addr().unwrap().to_string());
        let mut t = Turn::new();
        let mut events = mio::Events::with_capacity(8);
        let mut e = Enricher::new(&cfg(&[BackendKind::UdpFirefly], true, Some(2)));
        let now = Instant::now();
        e.start(t.poll.registry(), Token(3), &t.waker, now);
        let mut start = FlowEvent::new(FlowState::Start, k, 2, 9, Micros(5));
        e.enrich(&mut start);
        assert!(start.enriched.is_none(), "no dump yet");
        let at = now + Duration::from_secs(2);
        e.on_timeout(&mut t.cx(at));
        assert!(matches!(e.phase, Phase::Dumping { .. }));
        while matches!(e.phase, Phase::Dumping { .. }) {
            t.poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
            e.on_ready(&mut t.cx(at));
        }
        assert_eq!(t.metrics.get(&DUMPS, &["ok"]), Some(1.0));
        assert!(matches!(e.phase, Phase::Emitting { .. }));
        e.on_timeout(&mut t.cx(at));
        assert_eq!(t.out.len(), 1);
        let mut ongoing = t.out.pop().unwrap();
        e.enrich(&mut ongoing);
        let x = ongoing.enriched.as_deref().unwrap();
        assert!(!x.reversed && x.public.is_none());
        let info = crate::wire::sock_diag::TcpInfo::from_bytes(x.tcp_info.as_deref().unwrap());
        assert!(info.rtt().is_some());
        let mut end = FlowEvent::new(FlowState::End, k, 2, 9, Micros(7));
        e.enrich(&mut end);
        assert_eq!(end.enriched.and_then(|x| x.tcp_info), ongoing.enriched.and_then(|x| x.tcp_info), "end takes the last sample");
        assert_eq!(e.flows(), 0);
    }
}

//! What the udp_firefly backend adds to the fireflies of this host's own flows: the
//! public address (discovery, manual pairs) and the `netlink`/`usage` data and periodic
//! `ongoing` fireflies (tcp_stats). Kept apart from `udp_firefly.rs`, which only encodes
//! and sends; this file owns the extra event sources and their loop hooks.
//!
//! Every source is registered under the backend's one token: on readiness each is read
//! until `WouldBlock` (a few non-blocking `recv`s that find nothing are cheaper than a
//! token per socket). Relayed fireflies (from the firefly plugin) are never touched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::{Token, Waker};

use super::tcp_stats::{Sample, TcpStats};
use crate::config::Config;
use crate::discovery::Discovery;
use crate::flow::{FlowEvent, FlowKey, Micros};
use crate::metrics::Metrics;
use crate::wire::netlink_json;

/// Discovery, tcp_info tracking and the scratch buffer for the `netlink` object.
pub struct Extras {
    discovery: Discovery,
    stats: TcpStats,
    netlink: bool,
    json: String,
    budget: usize,
}

impl Extras {
    /// As configured; nothing starts before [`Extras::register`].
    pub fn new(cfg: &Config) -> Extras {
        Extras { discovery: Discovery::new(cfg), stats: TcpStats::new(cfg), netlink: cfg.enrich.netlink, json: String::with_capacity(1024), budget: 0 }
    }

    /// Registers the sockets under `token` and starts discovery and the periods.
    pub fn register(&mut self, reg: &mio::Registry, token: Token, waker: Arc<Waker>, now: Instant) {
        self.discovery.start(token, waker, now);
        self.stats.register(reg, token, now);
    }

    /// Removes every socket from the poll.
    pub fn deregister(&mut self, reg: &mio::Registry) {
        self.discovery.deregister(reg);
        self.stats.deregister(reg);
    }

    /// True when open flows are followed (the loop replays them after a reload).
    pub fn tracks_flows(&self) -> bool {
        self.stats.active()
    }

    /// The earliest deadline of discovery and of the tcp_info/ongoing period.
    pub fn poll_at(&self) -> Option<Instant> {
        [self.discovery.poll_at(), self.stats.poll_at()].into_iter().flatten().min()
    }

    /// Runs the due timers; afterwards the caller drains [`Extras::next_ongoing`].
    pub fn on_timeout(&mut self, reg: &mio::Registry, now: Instant, metrics: &mut Metrics) {
        if self.discovery.poll_at().is_some_and(|t| t <= now) {
            self.discovery.on_timeout(reg, now, metrics);
        }
        if self.stats.poll_at().is_some_and(|t| t <= now) {
            self.stats.on_timeout(now, metrics);
        }
        self.budget = super::tcp_stats::EMIT_PER_TURN;
    }

    /// Readiness of the backend's token.
    pub fn on_ready(&mut self, reg: &mio::Registry, now: Instant, metrics: &mut Metrics) {
        self.discovery.on_ready(reg, now, metrics);
        self.stats.on_ready(now, metrics);
    }

    /// The loop's waker fired (a helper thread may have finished).
    pub fn on_wake(&mut self, reg: &mio::Registry, now: Instant, metrics: &mut Metrics) {
        self.discovery.on_wake(reg, now, metrics);
    }

    /// The next `ongoing` event to send this turn (bounded per turn).
    pub fn next_ongoing(&mut self, wall: Micros, metrics: &mut Metrics) -> Option<FlowEvent> {
        self.stats.next_ongoing(&mut self.budget, wall, metrics)
    }

    /// A flow that was open before a reload re-created the backend: follow it again.
    pub fn adopt(&mut self, ev: &FlowEvent) {
        self.stats.observe(ev);
    }

    /// Follows an event of this host and returns its `usage` and `netlink` object
    /// (the latter borrowed from a scratch buffer until the next call).
    pub fn enrich(&mut self, ev: &FlowEvent) -> (Option<(u64, u64)>, Option<&str>) {
        let sample: Option<Sample> = self.stats.observe(ev);
        let Some(s) = sample.filter(|_| self.netlink) else { return (None, None) };
        self.json.clear();
        netlink_json::write_netlink(&mut self.json, &s.info);
        let usage = if ev.state == crate::flow::FlowState::Start { None } else { s.usage() };
        (usage, Some(self.json.as_str()))
    }

    /// The key with private addresses replaced by public ones (src and dst, as the
    /// Python flowd does); UDP_FIREFLY_IP4_SRC/IP6_SRC are applied after this.
    pub fn public_key(&self, key: &FlowKey) -> FlowKey {
        let map = |a: SocketAddr| match self.discovery.public_for(a.ip()) {
            Some(p) => SocketAddr::new(p, a.port()),
            None => a,
        };
        FlowKey { proto: key.proto, src: map(key.src), dst: map(key.dst) }
    }
}

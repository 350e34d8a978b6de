//! The udp_firefly backend: one firefly datagram per flow event, to the flow's peer and
//! to every configured collector (SPEC §1).
//!
//! Datagrams are encoded into an arena as events arrive and sent at the end of the loop
//! turn (`flush`) with non-blocking `sendmmsg` on two unconnected sockets (IPv4 and
//! IPv6): one system call per 64 datagrams instead of one each. A failed or would-block
//! send is counted and logged (rate-limited), never retried, so the loop never waits on
//! the network. Collector host names are resolved once at start (and at each reload).
//!
//! It only encodes what the event carries: the daemon's enrichment layer (`enrich`) has
//! attached the public-address key and the socket's tcp_info to events of this host's
//! flows (encoded here as `netlink` and, except on `start`, `usage`), and its periodic
//! `ongoing` events arrive through the same fan-out as every other event. A relayed event
//! carries the received firefly's JSON, which is sent on as received
//! (`wire::firefly::encode_relayed`: flowd's header, times in flowd's form, this host's
//! rewritten address, and its own `netlink`/`usage` only where the producer sent none);
//! relayed events and the `ongoing` events of relayed flows never go back to their sender
//! or to this host's own listener (SPEC §6, `netaddr::relay_blocked`). The backend keeps no flow state and has no timer or
//! socket in the loop besides its two send sockets.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::backend::BackendError;
use crate::config::Config;
use crate::context::Context;
use crate::decision::Decision;
use crate::flow::{FlowEvent, FlowKey, FlowState};
use crate::logger::{RateLimit, Suppressed};
use crate::metrics::{Desc, Kind};
use crate::netaddr::relay_blocked;
use crate::sys::udp;
use crate::wire::firefly::{self, Firefly};
use crate::wire::netlink_json;
use crate::wire::sock_diag::TcpInfo;

/// Fireflies sent, by recipient kind (`peer` or `collector`).
pub(crate) static SENT: Desc = Desc {
    name: "flowd_fireflies_sent_total",
    help: "Firefly datagrams sent, by recipient (peer = the flow's destination, collector = UDP_FIREFLY_DST).",
    kind: Kind::Counter,
    labels: &["to"],
};

/// Fireflies that could not be sent, by recipient kind and reason.
pub(crate) static SEND_ERRORS: Desc = Desc {
    name: "flowd_firefly_send_errors_total",
    help: "Firefly datagrams that could not be sent, by recipient and reason.",
    kind: Kind::Counter,
    labels: &["to", "reason"],
};

/// Relayed fireflies not sent because they would loop (SPEC §6), by recipient and reason.
pub(crate) static RELAY_SKIPPED: Desc = Desc {
    name: "flowd_firefly_relay_skipped_total",
    help: "Relayed fireflies not sent because they would loop (back to their sender, or to this host's own listener), by recipient and reason.",
    kind: Kind::Counter,
    labels: &["to", "reason"],
};

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// No UDP socket could be opened.
    #[error("cannot open a UDP socket: {0}")]
    Socket(#[source] io::Error),
    /// A collector name did not resolve.
    #[error("cannot resolve collector {dst:?} (UDP_FIREFLY_DST): {source}")]
    Resolve {
        /// The collector as configured.
        dst: String,
        /// The resolver error.
        #[source]
        source: io::Error,
    },
}

/// The running udp_firefly backend.
pub(crate) struct Sender {
    sock4: Option<UdpSocket>,
    sock6: Option<UdpSocket>,
    collectors: Vec<SocketAddr>,
    peer_port: u16,
    to_peer: bool,
    ip4_src: Option<Ipv4Addr>,
    ip6_src: Option<Ipv6Addr>,
    hostname: String,
    /// UDP_FIREFLY_SYSLOG: the syslog header before the JSON.
    syslog: bool,
    application: String,
    /// Encoded datagrams of this turn, back to back.
    arena: Vec<u8>,
    /// Queued sends: (destination, arena range, recipient kind).
    queue: Vec<(SocketAddr, std::ops::Range<usize>, &'static str)>,
    warn: RateLimit,
    /// Scratch buffer for the `netlink` object of the event being encoded.
    json: String,
    listen_port: u16,
}

/// Queued datagrams that trigger an early flush (bounds memory within one turn).
const MAX_QUEUED: usize = 1024;

impl Sender {
    /// Opens the sockets and resolves the collectors.
    pub(crate) fn new(cfg: &Config) -> Result<Sender, InitError> {
        let sock4 = udp::sender(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let sock6 = udp::sender(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)));
        if let (Err(e), Err(_)) = (&sock4, &sock6) {
            return Err(InitError::Socket(io::Error::new(e.kind(), e.to_string())));
        }
        let mut collectors = Vec::new();
        for dst in &cfg.udp_firefly.dst {
            let addr = udp::resolve(dst, cfg.udp_firefly.port).map_err(|source| InitError::Resolve { dst: dst.clone(), source })?;
            log::info!("udp_firefly: collector {dst} = {addr}");
            collectors.push(addr);
        }
        Ok(Sender {
            sock4: sock4.ok(),
            sock6: sock6.ok(),
            collectors,
            peer_port: cfg.udp_firefly.port,
            to_peer: cfg.udp_firefly.to_peer,
            ip4_src: cfg.udp_firefly.ip4_src,
            ip6_src: cfg.udp_firefly.ip6_src,
            hostname: firefly::syslog_hostname(&crate::sys::hostname()),
            syslog: cfg.udp_firefly.syslog,
            application: format!("flowd {}", env!("CARGO_PKG_VERSION")),
            arena: Vec::with_capacity(64 * 1024),
            queue: Vec::with_capacity(MAX_QUEUED),
            warn: RateLimit::new(10, Duration::from_secs(10)),
            json: String::with_capacity(1024),
            listen_port: cfg.firefly.port,
        })
    }

    /// The key as it appears in the firefly: the public-address key the enrichment layer
    /// attached (own flows, and relayed ones with an end on this host), then
    /// UDP_FIREFLY_IP4_SRC/IP6_SRC replace `src-ip` when the src is this host's (always
    /// for own flows: their src is this host by convention; a relayed flow's src may be a
    /// remote client, whose address is never replaced).
    fn wire_key(&self, ev: &FlowEvent) -> FlowKey {
        let mut k = ev.enriched.as_ref().and_then(|e| e.public).unwrap_or(ev.key);
        let src_is_ours = match &ev.relayed {
            Some(r) => r.origin.src_local,
            None => true,
        };
        if src_is_ours {
            match (k.src.ip(), self.ip4_src, self.ip6_src) {
                (IpAddr::V4(_), Some(a), _) => k.src.set_ip(IpAddr::V4(a)),
                (IpAddr::V6(_), _, Some(a)) => k.src.set_ip(IpAddr::V6(a)),
                _ => {}
            }
        }
        k
    }

    /// Encodes the event and queues it for the peer and the collectors: `Fireflied` when
    /// at least one recipient gets it, else why none does.
    pub(crate) fn handle(&mut self, ev: &FlowEvent, cx: &mut Context<'_>) -> Result<Decision, BackendError> {
        let relayed = ev.relayed.as_deref();
        let end_time = match ev.state {
            FlowState::End => Some(ev.end_time.unwrap_or(ev.at)),
            _ => None,
        };
        let key = self.wire_key(ev);
        let mut usage = None;
        let mut netlink = None;
        if let Some(e) = ev.enriched.as_deref() {
            if let Some(raw) = e.tcp_info.as_deref() {
                let info = TcpInfo::from_bytes(raw);
                self.json.clear();
                netlink_json::write_netlink(&mut self.json, &info);
                netlink = Some(self.json.as_str());
                usage = if ev.state == FlowState::Start { None } else { src_usage(&info, e.reversed) };
            }
        }
        let start = self.arena.len();
        match relayed.and_then(|r| r.received.as_ref()) {
            // A received firefly: passed on as received, with what flowd owns (SPEC §6).
            Some(received) => {
                let changed = |new: SocketAddr, old: SocketAddr| (new.ip() != old.ip()).then_some(new.ip());
                let relay =
                    firefly::Relay { sent_at: cx.wall, received, src_ip: changed(key.src, ev.key.src), dst_ip: changed(key.dst, ev.key.dst), usage, netlink };
                firefly::encode_relayed(&mut self.arena, self.syslog.then_some(self.hostname.as_str()), &relay);
            }
            // flowd's own: the pipe's flows, and every `ongoing` of the enrichment layer.
            None => {
                let ff = Firefly {
                    state: ev.state,
                    current_time: cx.wall,
                    start_time: ev.start_time.unwrap_or(ev.at),
                    end_time,
                    key,
                    exp: ev.exp,
                    act: ev.act,
                    application: &self.application,
                    usage,
                    netlink,
                };
                if self.syslog {
                    firefly::encode(&mut self.arena, &self.hostname, &ff);
                } else {
                    firefly::encode_json(&mut self.arena, &ff);
                }
            }
        }
        let range = start..self.arena.len();
        let peer = self.to_peer.then(|| (SocketAddr::new(ev.key.dst.ip(), self.peer_port), "peer"));
        let to = peer.into_iter().chain(self.collectors.iter().map(|c| (*c, "collector")));
        let queued = self.queue.len();
        let mut blocked = false;
        match relayed {
            None => self.queue.extend(to.map(|(to, kind)| (to, range.clone(), kind))),
            Some(r) => {
                // SPEC §6: never relay in a loop.
                let own = cx.local.list(cx.now);
                for (to, kind) in to {
                    match relay_blocked(to, r.origin.from, own, self.listen_port) {
                        None => self.queue.push((to, range.clone(), kind)),
                        Some(reason) => {
                            blocked = true;
                            cx.metrics.inc(&RELAY_SKIPPED, &[kind, reason]);
                            log::debug!("udp_firefly: not relaying to {to} ({kind}): {reason}");
                        }
                    }
                }
            }
        }
        let decision = if self.queue.len() > queued {
            Decision::Fireflied
        } else if blocked {
            Decision::RelayLoop
        } else {
            Decision::NoRecipient
        };
        if decision != Decision::Fireflied {
            // Nothing refers to the encoded bytes.
            self.arena.truncate(range.start);
        }
        if self.queue.len() >= MAX_QUEUED {
            self.flush(cx);
        }
        Ok(decision)
    }

    /// Sends everything queued this turn.
    pub(crate) fn flush(&mut self, cx: &mut Context<'_>) {
        if self.queue.is_empty() {
            return;
        }
        let queue = std::mem::take(&mut self.queue);
        for v6 in [false, true] {
            let msgs: Vec<(SocketAddr, &[u8])> = queue.iter().filter(|(to, _, _)| to.is_ipv6() == v6).map(|(to, r, _)| (*to, &self.arena[r.clone()])).collect();
            if msgs.is_empty() {
                continue;
            }
            let kinds: Vec<&'static str> = queue.iter().filter(|(to, _, _)| to.is_ipv6() == v6).map(|(_, _, k)| *k).collect();
            let sock = if v6 { self.sock6.as_ref() } else { self.sock4.as_ref() };
            let (metrics, warn, now) = (&mut *cx.metrics, &mut self.warn, cx.now);
            // Successes are added up and counted once per batch (a relay sends 100,000s a second).
            let (mut to_peer, mut to_collector) = (0u64, 0u64);
            let mut report = |i: usize, r: io::Result<()>| {
                let kind = kinds.get(i).copied().unwrap_or("peer");
                match r {
                    Ok(()) if kind == "peer" => to_peer += 1,
                    Ok(()) => to_collector += 1,
                    Err(e) => {
                        let reason = match e.kind() {
                            io::ErrorKind::WouldBlock => "would_block",
                            io::ErrorKind::Unsupported => "no_socket",
                            _ => "send_failed",
                        };
                        metrics.inc(&SEND_ERRORS, &[kind, reason]);
                        if let Some(n) = warn.allow(now) {
                            let to = msgs.get(i).map(|m| m.0.to_string()).unwrap_or_default();
                            log::warn!("udp_firefly: send to {to} ({kind}) failed: {e}{}", Suppressed(n));
                        }
                    }
                }
            };
            match sock {
                Some(s) => udp::send_batch(s, &msgs, &mut report),
                None => {
                    for i in 0..msgs.len() {
                        report(i, Err(io::Error::new(io::ErrorKind::Unsupported, "address family not available")));
                    }
                }
            }
            for (kind, n) in [("peer", to_peer), ("collector", to_collector)] {
                if n > 0 {
                    cx.metrics.add(&SENT, &[kind], n);
                }
            }
        }
        self.arena.clear();
        let mut queue = queue;
        queue.clear();
        self.queue = queue;
    }
}

/// `usage` (received, sent) from the flow's src side: swapped when the socket's local
/// side is the flow's dst.
fn src_usage(info: &TcpInfo, reversed: bool) -> Option<(u64, u64)> {
    let (rx, tx) = netlink_json::usage(info)?;
    Some(if reversed { (tx, rx) } else { (rx, tx) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_usage_is_seen_from_the_flow_src() {
        let mut raw = [0u8; 248];
        raw[0] = 1;
        raw[120..128].copy_from_slice(&100u64.to_ne_bytes());
        raw[128..136].copy_from_slice(&7u64.to_ne_bytes());
        let info = TcpInfo::from_bytes(&raw);
        assert_eq!(src_usage(&info, false), Some((7, 100)));
        assert_eq!(src_usage(&info, true), Some((100, 7)));
        assert_eq!(src_usage(&TcpInfo::from_bytes(&raw[..100]), false), None);
    }

    /// UDP_FIREFLY_IP4_SRC replaces the src of own flows, and of relayed flows only when
    /// the src is this host's: a relayed flow's src may be a remote client.
    #[test]
    fn test_src_override_applies_to_relayed_flows_only_when_the_src_is_ours() {
        let mut cfg = Config::default();
        cfg.udp_firefly.ip4_src = Some("203.0.113.7".parse().unwrap());
        let s = Sender::new(&cfg).unwrap();
        let k = FlowKey::new(crate::flow::Proto::Tcp, "192.0.2.1:1094".parse().unwrap(), "198.51.100.1:2000".parse().unwrap()).unwrap();
        let mut ev = FlowEvent::new(FlowState::Start, k, 2, 9, crate::flow::Micros(1));
        assert_eq!(s.wire_key(&ev).src.ip(), "203.0.113.7".parse::<IpAddr>().unwrap(), "own flow");
        let mut origin = crate::flow::RelayOrigin { from: Some("192.0.2.1".parse().unwrap()), src_local: false, dst_local: true };
        ev.relayed = Some(Box::new(crate::flow::Relayed { origin, received: None }));
        assert_eq!(s.wire_key(&ev), k, "relayed, src is a remote client");
        origin.src_local = true;
        ev.relayed = Some(Box::new(crate::flow::Relayed { origin, received: None }));
        assert_eq!(s.wire_key(&ev).src.ip(), "203.0.113.7".parse::<IpAddr>().unwrap(), "relayed, src is this host");
    }

    #[test]
    fn test_local_addresses_include_loopback() {
        let a = crate::sys::local_addresses().unwrap();
        assert!(a.iter().any(|a| a.is_loopback()), "{a:?}");
    }
}

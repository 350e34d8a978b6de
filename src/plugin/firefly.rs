//! The firefly plugin: a UDP listener for fireflies sent by transfer services (XRootD,
//! dCache, flowd-go, another flowd), turned into flow events for the backends, and
//! optionally forwarded as received to more receivers.
//!
//! Listens on FIREFLY_LISTENER_HOST:FIREFLY_LISTENER_PORT (default `[::]:10514`,
//! dual-stack) and receives up to [`BATCH`] datagrams per `recvmmsg` call. For each:
//!
//! 1. **Who may send** (FIREFLY_LISTENER_ALLOW): a datagram from outside the allowed
//!    networks is dropped before it is read, and counted as
//!    `flowd_bad_input_total{source="firefly",reason="not_allowed"}` (IPv4-mapped senders
//!    on the dual-stack socket match IPv4 networks).
//! 2. **Decode**: `wire::firefly::decode` in lenient mode (the syslog header is optional),
//!    every field flowd reads checked as the schema says. An invalid one is counted by
//!    reason and logged, rate-limited, and goes nowhere.
//! 3. **Event**: a valid one becomes a `FlowEvent` with the received state, ids, start and
//!    end times, and a [`Relayed`]: the sender, which ends of the flow are this host's,
//!    and the received JSON, which a relaying backend passes on faithfully (SPEC §6).
//! 4. **Forward** (FIREFLY_FORWARD): a valid datagram is also sent, byte for byte with its
//!    header, to every forward receiver, from the receive buffers with `sendmmsg` (one
//!    socket per address family), never to this host's own listener or back to its
//!    sender (`netaddr::relay_blocked`); each send is counted per receiver in
//!    `flowd_fireflies_forwarded_total{receiver,result}`. Sends never block, so a dead
//!    receiver costs a counted failure and nothing else.
//!
//! The socket is drained until `WouldBlock`, at most [`TURN_CAP`] datagrams per loop turn;
//! after the cap `poll_at()` asks the loop to come back at once.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use super::PluginError;
use crate::config::Config;
use crate::context::Context;
use crate::decision::{self, Decision};
use crate::flow::{FlowEvent, RelayOrigin, Relayed};
use crate::logger::{RateLimit, Suppressed};
use crate::metrics::{Desc, Kind, BAD_INPUT};
use crate::netaddr::{canonical, relay_blocked};
use crate::policy::ranges::Ranges;
use crate::sys::udp::{recv_batch, send_batch, Datagram};
use crate::wire::firefly::{decode, Strictness};

/// Datagrams handled per loop turn before yielding to other sources.
pub const TURN_CAP: usize = 256;
/// Datagrams received per `recvmmsg` call.
pub const BATCH: usize = 32;
/// Receive slot per datagram. Fireflies fit in one MTU (XRootD formats into 1 KiB,
/// flowd-go's receiver takes 4 KiB); a longer datagram is dropped as `too_long`.
pub const SLOT: usize = 16 * 1024;
/// Kernel receive buffer asked for (absorbs bursts between loop turns).
const RCVBUF: usize = 4 << 20;
/// Default port of a FIREFLY_FORWARD receiver.
pub const FORWARD_PORT: u16 = 10514;

/// Forwarded datagrams, by receiver and result.
pub static FORWARDED: Desc = Desc {
    name: "flowd_fireflies_forwarded_total",
    help: "Received fireflies forwarded as received (FIREFLY_FORWARD), by receiver and result (sent, would_block, send_failed, \
           own_address = the receiver is this host's listener, sender = the receiver sent the datagram).",
    kind: Kind::Counter,
    labels: &["receiver", "result"],
};

/// The results counted per receiver, in `FORWARDED`'s `result` label.
const RESULTS: [&str; 5] = ["sent", "would_block", "send_failed", "own_address", "sender"];

/// The position of `result` in [`RESULTS`].
fn result(name: &str) -> usize {
    RESULTS.iter().position(|r| *r == name).unwrap_or(2)
}

/// One FIREFLY_FORWARD receiver and its counts since the last report to the metrics.
struct Receiver {
    /// As configured (the metrics label).
    name: String,
    addr: SocketAddr,
    counts: [u64; RESULTS.len()],
}

/// Sends valid datagrams, as received, to the FIREFLY_FORWARD receivers.
struct Forwarder {
    receivers: Vec<Receiver>,
    sock4: Option<std::net::UdpSocket>,
    sock6: Option<std::net::UdpSocket>,
    /// (receiver, datagram slot) pairs of the batch being handled.
    queue: Vec<(usize, usize)>,
    warn: RateLimit,
}

/// A non-blocking, unconnected UDP socket to send from.
fn send_socket(bind: SocketAddr) -> Result<std::net::UdpSocket, PluginError> {
    let open = |source| PluginError::Open { plugin: "firefly", what: "cannot open a UDP socket to forward fireflies".into(), source };
    crate::sys::udp::sender(bind).map_err(open)
}

impl Forwarder {
    /// Resolves the receivers; opens a socket for each address family in use.
    fn new(cfg: &Config, listen: SocketAddr) -> Result<Forwarder, PluginError> {
        let mut receivers = Vec::new();
        for dst in &cfg.firefly.forward {
            let addr = crate::sys::udp::resolve(dst, FORWARD_PORT).map_err(|source| PluginError::Open {
                plugin: "firefly",
                what: format!("cannot resolve FIREFLY_FORWARD receiver {dst:?}"),
                source,
            })?;
            if relay_blocked(addr, None, &crate::sys::local_addresses().unwrap_or_default(), listen.port()).is_some() {
                log::warn!("firefly: FIREFLY_FORWARD receiver {dst} = {addr} is this host's own listener: nothing is forwarded to it");
            } else {
                log::info!("firefly: forwarding every valid firefly as received to {dst} = {addr}");
            }
            receivers.push(Receiver { name: dst.clone(), addr, counts: [0; RESULTS.len()] });
        }
        let family = |v6: bool| receivers.iter().any(|r| r.addr.is_ipv6() == v6);
        let sock4 = if family(false) { Some(send_socket(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?) } else { None };
        let sock6 = if family(true) { Some(send_socket(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))?) } else { None };
        Ok(Forwarder { receivers, sock4, sock6, queue: Vec::with_capacity(BATCH * 4), warn: RateLimit::new(10, Duration::from_secs(10)) })
    }

    /// Queues datagram `slot` (from `from`) for every receiver the loop rules allow.
    fn queue(&mut self, slot: usize, from: IpAddr, own: &[IpAddr], listen_port: u16) {
        for (i, r) in self.receivers.iter_mut().enumerate() {
            match relay_blocked(r.addr, Some(from), own, listen_port) {
                None => self.queue.push((i, slot)),
                Some(reason) => r.counts[result(reason)] += 1,
            }
        }
    }

    /// Sends what is queued (datagram i is `bufs[slot i]`), then adds the counts to the
    /// metrics. A failed send is counted and logged (rate-limited), never retried.
    fn flush(&mut self, bufs: &[u8], batch: &[Datagram], cx: &mut Context<'_>) {
        for v6 in [false, true] {
            let sock = if v6 { self.sock6.as_ref() } else { self.sock4.as_ref() };
            let Some(sock) = sock else { continue };
            let mine: Vec<(usize, usize)> = self.queue.iter().copied().filter(|(r, _)| self.receivers[*r].addr.is_ipv6() == v6).collect();
            if mine.is_empty() {
                continue;
            }
            let msgs: Vec<(SocketAddr, &[u8])> = mine.iter().map(|(r, s)| (self.receivers[*r].addr, &bufs[s * SLOT..][..batch[*s].len])).collect();
            let (receivers, warn, now) = (&mut self.receivers, &mut self.warn, cx.now);
            send_batch(sock, &msgs, |i, res| {
                let Some(r) = mine.get(i).and_then(|(r, _)| receivers.get_mut(*r)) else { return };
                let k = match &res {
                    Ok(()) => result("sent"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => result("would_block"),
                    Err(_) => result("send_failed"),
                };
                r.counts[k] += 1;
                if let (Err(e), Some(n)) = (res, (k != 0).then(|| warn.allow(now)).flatten()) {
                    log::warn!("firefly: forwarding to {} ({}) failed: {e}{}", r.name, r.addr, Suppressed(n));
                }
            });
        }
        self.queue.clear();
        for r in &mut self.receivers {
            for (k, n) in r.counts.iter_mut().enumerate() {
                if *n > 0 {
                    cx.metrics.add_labels(&FORWARDED, &[r.name.as_str(), RESULTS[k]], *n);
                    *n = 0;
                }
            }
        }
    }
}

/// The running firefly listener.
pub struct Listener {
    sock: UdpSocket,
    local: SocketAddr,
    /// BATCH receive slots of SLOT bytes.
    bufs: Vec<u8>,
    batch: Vec<Datagram>,
    /// FIREFLY_LISTENER_ALLOW as a lookup table (empty: everyone may send).
    allow: Ranges,
    forward: Option<Forwarder>,
    backlog: Option<Instant>,
    warn: RateLimit,
}

impl Listener {
    /// Binds the listening socket, or takes the one systemd handed over (`inherited`)
    /// when it is bound to the configured address and port; resolves the forward receivers.
    pub fn new(cfg: &Config, inherited: Option<std::net::UdpSocket>) -> Result<Listener, PluginError> {
        let addr = SocketAddr::new(cfg.firefly.host, cfg.firefly.port);
        let bind = |source: io::Error| PluginError::Open {
            plugin: "firefly",
            what: format!("cannot listen on UDP [{}]:{}", cfg.firefly.host, cfg.firefly.port),
            source,
        };
        let std = match inherited {
            Some(s) if s.local_addr().is_ok_and(|a| crate::sys::same_listen_address(a, addr)) => {
                s.set_nonblocking(true).map_err(bind)?;
                crate::sys::set_rcvbuf(&s, RCVBUF);
                log::info!("firefly: using the UDP socket handed over by systemd");
                s
            }
            Some(s) => {
                log::warn!(
                    "firefly: the UDP socket handed over by systemd is bound to {}, not FIREFLY_LISTENER_HOST/PORT {addr}; binding {addr} instead",
                    s.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string())
                );
                crate::sys::udp_listener(addr, RCVBUF).map_err(bind)?
            }
            None => crate::sys::udp_listener(addr, RCVBUF).map_err(bind)?,
        };
        let local = std.local_addr().map_err(bind)?;
        log::info!("firefly: listening on {local}");
        let allow = &cfg.firefly.allow;
        if allow.is_empty() && !canonical(local.ip()).is_loopback() {
            log::warn!(
                "firefly: listening on {local} and accepting fireflies from everyone: set FIREFLY_LISTENER_ALLOW to the networks of the hosts that send them"
            );
        } else if !allow.is_empty() {
            log::info!("firefly: accepting fireflies from {}", allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
        }
        let forward = if cfg.firefly.forward.is_empty() { None } else { Some(Forwarder::new(cfg, local)?) };
        Ok(Listener {
            sock: UdpSocket::from_std(std),
            local,
            bufs: vec![0; BATCH * SLOT],
            batch: Vec::with_capacity(BATCH),
            allow: Ranges::new(allow),
            forward,
            backlog: None,
            warn: RateLimit::new(10, Duration::from_secs(10)),
        })
    }

    /// Registers the socket for readability.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.sock, token, Interest::READABLE)
    }

    /// Deregisters the socket.
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sock);
    }

    /// Now, when the last turn stopped at the cap with datagrams left.
    pub fn poll_at(&self) -> Option<Instant> {
        self.backlog
    }

    /// Resumes a capped drain.
    pub fn on_timeout(&mut self, cx: &mut Context<'_>) {
        if self.backlog.is_some() {
            self.on_ready(cx);
        }
    }

    /// Receives until `WouldBlock` or the per-turn cap.
    pub fn on_ready(&mut self, cx: &mut Context<'_>) {
        self.backlog = None;
        let mut handled = 0;
        while handled < TURN_CAP {
            let room = BATCH.min(TURN_CAP - handled);
            match recv_batch(&self.sock, &mut self.bufs[..room * SLOT], SLOT, &mut self.batch) {
                Ok(()) if self.batch.is_empty() => return,
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here on some kernels; nothing to do but go on.
                    if let Some(n) = self.warn.allow(cx.now) {
                        log::warn!("firefly: receive failed: {e}{}", Suppressed(n));
                    }
                    return;
                }
            }
            handled += self.batch.len();
            self.handle_batch(cx);
        }
        self.backlog = Some(cx.now);
    }

    /// Handles the datagrams of one `recvmmsg` call, then forwards the valid ones.
    fn handle_batch(&mut self, cx: &mut Context<'_>) {
        let listen_port = self.local.port();
        for slot in 0..self.batch.len() {
            let d = self.batch[slot];
            let Some(from) = d.from else { continue };
            let ip = canonical(from.ip());
            if !self.allow.is_empty() && self.allow.find(ip).is_none() {
                cx.metrics.inc(&BAD_INPUT, &["firefly", "not_allowed"]);
                if let Some(k) = self.warn.allow(cx.now) {
                    log::warn!("firefly: dropped a datagram from {from}: not in FIREFLY_LISTENER_ALLOW{}", Suppressed(k));
                }
                continue;
            }
            let data = &self.bufs[slot * SLOT..][..d.len];
            if d.truncated {
                cx.metrics.inc(&BAD_INPUT, &["firefly", "too_long"]);
                if let Some(k) = self.warn.allow(cx.now) {
                    log::warn!("firefly: rejected a datagram from {from}: longer than {SLOT} bytes{}", Suppressed(k));
                }
                continue;
            }
            let dec = match decode(data, Strictness::Lenient) {
                Ok(dec) => dec,
                Err(e) => {
                    cx.metrics.inc(&BAD_INPUT, &["firefly", e.reason()]);
                    decision::count(cx.metrics, "firefly", Decision::BadDatagram);
                    if let Some(k) = self.warn.allow(cx.now) {
                        let shown: String = String::from_utf8_lossy(&data[..d.len.min(200)]).escape_debug().collect();
                        log::warn!("firefly: rejected datagram from {from}: {e}: \"{shown}\"{}", Suppressed(k));
                    }
                    continue;
                }
            };
            let own = cx.local.list(cx.now);
            // The interfaces' addresses are never IPv4-mapped; the flow's may be.
            let mine = |a: IpAddr| {
                let a = canonical(a);
                a.is_loopback() || own.contains(&a)
            };
            let origin = RelayOrigin { from: Some(ip), src_local: mine(dec.key.src.ip()), dst_local: mine(dec.key.dst.ip()) };
            if let Some(f) = &mut self.forward {
                f.queue(slot, ip, own, listen_port);
            }
            let mut ev = FlowEvent::new(dec.state, dec.key, dec.exp, dec.act, cx.wall);
            ev.start_time = Some(dec.start_time);
            ev.end_time = dec.end_time;
            ev.relayed = Some(Box::new(Relayed { origin, received: Some(dec.received) }));
            cx.out.push(ev);
        }
        if let Some(f) = &mut self.forward {
            f.flush(&self.bufs, &self.batch, cx);
        }
    }
}

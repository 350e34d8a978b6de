//! The firefly plugin: a UDP listener for fireflies sent by transfer services (XRootD,
//! dCache, another flowd), turned into flow events for the backends.
//!
//! Listens on FIREFLY_LISTENER_HOST:FIREFLY_LISTENER_PORT (default `[::]:10514`,
//! dual-stack). Each datagram is decoded with `wire::firefly::decode` in lenient mode
//! (the syslog header is optional) and everything flowd reads is checked as the firefly
//! schema says; a valid one becomes a `FlowEvent` carrying the received state, ids, start
//! and end times, and a [`Relayed`] with the sender's address and the received JSON,
//! which a relaying backend passes on faithfully (SPEC §6). An invalid datagram is counted by
//! reason (`flowd_bad_input_total{source="firefly"}`) and logged, rate-limited, and is
//! never passed on. The socket is drained until `WouldBlock`, at most `TURN_CAP`
//! datagrams per loop turn; after the cap `poll_at()` asks the loop to come back at once.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use crate::config::Config;
use crate::context::Context;
use crate::flow::{FlowEvent, RelayOrigin, Relayed};
use crate::logger::RateLimit;
use crate::metrics::BAD_INPUT;
use crate::netaddr;
use crate::wire::firefly::{decode, Strictness};

/// Datagrams handled per loop turn before yielding to other sources.
const TURN_CAP: usize = 256;
/// Kernel receive buffer asked for (absorbs bursts between loop turns).
const RCVBUF: usize = 4 << 20;

/// The running firefly listener.
pub struct Listener {
    sock: UdpSocket,
    local: SocketAddr,
    buf: Vec<u8>,
    backlog: Option<Instant>,
    warn: RateLimit,
}

impl Listener {
    /// Binds the listening socket, or takes the one systemd handed over (`inherited`)
    /// when it is bound to the configured address and port.
    pub fn new(cfg: &Config, inherited: Option<std::net::UdpSocket>) -> io::Result<Listener> {
        let addr = SocketAddr::new(cfg.firefly.host, cfg.firefly.port);
        let std = match inherited {
            Some(s) if s.local_addr().is_ok_and(|a| crate::sys::same_listen_address(a, addr)) => {
                s.set_nonblocking(true)?;
                crate::sys::set_rcvbuf(&s, RCVBUF);
                log::info!("firefly: using the UDP socket handed over by systemd");
                s
            }
            Some(s) => {
                log::warn!(
                    "firefly: the UDP socket handed over by systemd is bound to {}, not FIREFLY_LISTENER_HOST/PORT {addr}; binding {addr} instead",
                    s.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string())
                );
                crate::sys::udp_listener(addr, RCVBUF)?
            }
            None => crate::sys::udp_listener(addr, RCVBUF)?,
        };
        let local = std.local_addr()?;
        log::info!("firefly: listening on {local}");
        Ok(Listener { sock: UdpSocket::from_std(std), local, buf: vec![0; 65536], backlog: None, warn: RateLimit::new(10, Duration::from_secs(10)) })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
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
        for _ in 0..TURN_CAP {
            match self.sock.recv_from(&mut self.buf) {
                Ok((n, from)) => self.datagram(n, from, cx),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors surface here on some kernels; nothing to do but go on.
                    if let Some(n) = self.warn.allow(cx.now) {
                        log::warn!("firefly: receive failed: {e} ({n} similar messages suppressed)");
                    }
                    return;
                }
            }
        }
        self.backlog = Some(cx.now);
    }

    fn datagram(&mut self, n: usize, from: SocketAddr, cx: &mut Context<'_>) {
        let data = &self.buf[..n];
        let d = match decode(data, Strictness::Lenient) {
            Ok(d) => d,
            Err(e) => {
                cx.metrics.inc(&BAD_INPUT, &["firefly", e.reason()]);
                if let Some(k) = self.warn.allow(cx.now) {
                    let shown: String = String::from_utf8_lossy(&data[..n.min(200)]).escape_debug().collect();
                    let more = if k > 0 { format!(" ({k} similar messages suppressed)") } else { String::new() };
                    log::warn!("firefly: rejected datagram from {from}: {e}: \"{shown}\"{more}");
                }
                return;
            }
        };
        let mut ev = FlowEvent::new(d.state, d.key, d.exp, d.act, cx.wall);
        ev.start_time = Some(d.start_time);
        ev.end_time = d.end_time;
        let origin = RelayOrigin { from: Some(netaddr::canonical(from.ip())), ..RelayOrigin::default() };
        ev.relayed = Some(Box::new(Relayed { origin, received: Some(d.received) }));
        cx.out.push(ev);
    }
}

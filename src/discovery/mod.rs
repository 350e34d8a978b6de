//! Public-address discovery: STUN Binding requests inside the loop, an optional HTTP
//! "what is my IP" fallback on a helper thread, and manual private → public pairs.
//!
//! Each address family (IPv4, IPv6) has its own explicit state machine (`Phase`):
//! `Resolving` (server names are being resolved on a helper thread) → `Idle { next }` →
//! `Probing` (one non-blocking UDP socket connected to one server, one request in
//! flight, a deadline) → back to `Idle`. A request is retransmitted unchanged after
//! `timeout`, `2×timeout`, `4×timeout`; then the next server is tried. A reply counts
//! only if it carries our transaction id. Connecting the socket to the server makes the
//! kernel pick the source address it would use to reach it: that is the *internal*
//! address, and the server's answer is the *public* one. Fireflies then show the public
//! address wherever a flow's src or dst is the internal one (as the Python flowd does).
//!
//! Nothing here blocks: sockets are registered in the loop's `Poll` (under the owner's
//! token: the daemon's enrichment layer, `enrich::Enricher`, which attaches the public
//! address to events; or `flowd stun`'s own loop), timers go through
//! `poll_at`/`on_timeout`, name resolution and HTTP run on helper threads that wake the
//! loop through its `Waker`. A failure is logged, counted and retried later; the last good
//! address stays in force meanwhile.

pub mod command;
mod helper;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Token, Waker};

use crate::config::Config;
use crate::metrics::{Desc, Kind, Metrics};
use crate::wire::stun::{self, Reply, StunError, TransactionId};

/// The public address in force, per family (value 1).
pub(crate) static PUBLIC_ADDRESS: Desc = Desc {
    name: "flowd_public_address",
    help: "Public address in force for fireflies, by family, address, internal address and source (value is always 1).",
    kind: Kind::Gauge,
    labels: &["family", "address", "internal", "source"],
};

/// Failed discovery steps, by family and reason.
pub(crate) static FAILURES: Desc = Desc {
    name: "flowd_ip_discovery_failures_total",
    help: "Public-address discovery failures, by family and reason (timeout, error_response, malformed, unreachable, resolve, http, no_answer).",
    kind: Kind::Counter,
    labels: &["family", "reason"],
};

/// Tries per server (the timeout doubles each time).
pub(crate) const TRIES: u32 = 3;
/// Upper bound of the wait before retrying after a failed round.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// Outcomes kept for `flowd stun` and the log.
const OUTCOMES_KEPT: usize = 64;

/// What one server (or URL) answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The server as configured, or the URL.
    pub server: String,
    /// The address asked (for STUN).
    pub addr: Option<SocketAddr>,
    /// `(internal, public)` on success, else what went wrong.
    pub result: Result<(Option<IpAddr>, IpAddr), String>,
}

/// A public address in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    /// The local address the host uses towards the server (`None` if unknown).
    pub internal: Option<IpAddr>,
    /// The address the outside sees.
    pub public: IpAddr,
    /// Which server or URL said so.
    pub source: String,
}

struct Server {
    name: String,
    addrs: Vec<SocketAddr>,
}

/// The state of one family's discovery.
enum Phase {
    /// Waiting for server names to resolve (helper thread).
    Resolving,
    /// Nothing in flight; the next round starts at `next`.
    Idle { next: Instant },
    /// One request in flight to `cands[i]`.
    Probing { cands: Vec<(usize, SocketAddr)>, i: usize, attempt: u32, sock: UdpSocket, tid: TransactionId, deadline: Instant, internal: IpAddr },
}

struct FamilyState {
    v6: bool,
    phase: Phase,
    found: Option<Found>,
    rounds: u32,
}

impl FamilyState {
    fn label(&self) -> &'static str {
        if self.v6 {
            "ipv6"
        } else {
            "ipv4"
        }
    }
}

/// Public-address discovery for the enrichment layer (or for `flowd stun`).
pub(crate) struct Discovery {
    enabled: bool,
    servers: Vec<Server>,
    timeout: Duration,
    interval: Duration,
    http_urls: Vec<String>,
    manual: Vec<(IpAddr, IpAddr)>,
    fams: [FamilyState; 2],
    resolving: Option<Receiver<helper::Resolved>>,
    http: Option<Receiver<helper::HttpResults>>,
    waker: Option<Arc<Waker>>,
    token: Token,
    outcomes: Vec<Outcome>,
    buf: Vec<u8>,
}

fn random_tid() -> TransactionId {
    let mut t = [0u8; 12];
    if crate::sys::bpf::fill_random(&mut t).is_err() {
        // Without getrandom: still unique per request, only less unpredictable.
        let n = crate::flow::Micros::now().0.to_ne_bytes();
        t[..8].copy_from_slice(&n);
        t[8..].copy_from_slice(&std::process::id().to_ne_bytes());
    }
    t
}

impl Discovery {
    /// Discovery as configured (IP_DISCOVERY_*). Nothing starts before [`Discovery::start`].
    pub(crate) fn new(cfg: &Config) -> Discovery {
        Discovery::with_servers(cfg, cfg.discovery.enabled, &cfg.discovery.stun_servers)
    }

    /// Discovery with an explicit server list (for `flowd stun SERVER…`).
    pub(crate) fn with_servers(cfg: &Config, enabled: bool, servers: &[String]) -> Discovery {
        let servers = servers.iter().map(|s| Server { name: s.clone(), addrs: helper::literal(s).into_iter().collect() }).collect();
        let fam = |v6| FamilyState { v6, phase: Phase::Resolving, found: None, rounds: 0 };
        Discovery {
            enabled,
            servers,
            timeout: cfg.discovery.timeout,
            interval: cfg.discovery.interval,
            http_urls: cfg.discovery.http_urls.clone(),
            manual: cfg.discovery.map.clone(),
            fams: [fam(false), fam(true)],
            resolving: None,
            http: None,
            waker: None,
            token: Token(usize::MAX),
            outcomes: Vec::new(),
            buf: vec![0u8; 2048],
        }
    }

    /// Starts discovery: sockets will be registered under `token`; helper threads wake `waker`.
    pub(crate) fn start(&mut self, token: Token, waker: Arc<Waker>, now: Instant) {
        self.token = token;
        self.waker = Some(Arc::clone(&waker));
        if !self.enabled {
            return;
        }
        let names: Vec<(usize, String)> = self.servers.iter().enumerate().filter(|(_, s)| s.addrs.is_empty()).map(|(i, s)| (i, s.name.clone())).collect();
        if names.is_empty() {
            self.fams.iter_mut().for_each(|f| f.phase = Phase::Idle { next: now });
            return;
        }
        match helper::resolve(names, waker) {
            Ok(rx) => self.resolving = Some(rx),
            Err(e) => {
                log::warn!("ip discovery: cannot start the resolver thread: {e}; using the literal servers only");
                self.fams.iter_mut().for_each(|f| f.phase = Phase::Idle { next: now });
            }
        }
    }

    /// The earliest deadline.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.fams
            .iter()
            .filter_map(|f| match &f.phase {
                Phase::Resolving => None,
                Phase::Idle { next } => Some(*next),
                Phase::Probing { deadline, .. } => Some(*deadline),
            })
            .min()
    }

    /// The public address to show instead of `ip`, if any (manual pairs first).
    pub(crate) fn public_for(&self, ip: IpAddr) -> Option<IpAddr> {
        if let Some((_, p)) = self.manual.iter().find(|(a, _)| *a == ip) {
            return Some(*p);
        }
        let f = self.fams[usize::from(ip.is_ipv6())].found.as_ref()?;
        (f.internal == Some(ip) && f.public != ip && f.public.is_ipv6() == ip.is_ipv6()).then_some(f.public)
    }

    /// The public address in force for a family.
    pub(crate) fn found(&self, v6: bool) -> Option<&Found> {
        self.fams[usize::from(v6)].found.as_ref()
    }

    /// Everything servers and URLs answered so far (most recent last, bounded).
    pub(crate) fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    /// True once every family finished at least one round and no helper is running.
    pub(crate) fn settled(&self) -> bool {
        !self.enabled || (self.fams.iter().all(|f| f.rounds > 0) && self.http.is_none() && self.resolving.is_none())
    }

    /// Removes the probe sockets from the poll (before the owner is dropped).
    pub(crate) fn deregister(&mut self, reg: &mio::Registry) {
        for f in self.fams.iter_mut() {
            if let Phase::Probing { sock, .. } = &mut f.phase {
                let _ = reg.deregister(sock);
            }
        }
    }

    /// Deadlines: start rounds, retransmit, give up on a server.
    pub(crate) fn on_timeout(&mut self, reg: &mio::Registry, now: Instant, metrics: &mut Metrics) {
        for k in 0..2 {
            match &mut self.fams[k].phase {
                Phase::Idle { next } if *next <= now => {
                    let v6 = self.fams[k].v6;
                    let cands: Vec<(usize, SocketAddr)> =
                        self.servers.iter().enumerate().flat_map(|(i, s)| s.addrs.iter().filter(|a| a.is_ipv6() == v6).map(move |a| (i, *a))).collect();
                    self.probe(k, cands, 0, reg, now, metrics);
                }
                Phase::Probing { deadline, attempt, sock, tid, .. } if *deadline <= now => {
                    if *attempt + 1 < TRIES {
                        *attempt += 1;
                        *deadline = now + self.timeout * (1 << *attempt);
                        // A lost retransmission is just another timeout.
                        let _ = sock.send(&stun::binding_request(tid));
                    } else {
                        metrics.inc(&FAILURES, &[self.fams[k].label(), "timeout"]);
                        self.next_server(k, format!("no answer after {TRIES} tries"), reg, now, metrics);
                    }
                }
                _ => {}
            }
        }
    }

    /// Readiness of a probe socket (the owner's token): read replies until `WouldBlock`.
    pub(crate) fn on_ready(&mut self, reg: &mio::Registry, now: Instant, metrics: &mut Metrics) {
        for k in 0..2 {
            while let Phase::Probing { sock, tid, internal, cands, i, .. } = &self.fams[k].phase {
                let (internal, tid, server) = (*internal, *tid, cands.get(*i).copied());
                let n = match sock.recv(&mut self.buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        metrics.inc(&FAILURES, &[self.fams[k].label(), "unreachable"]);
                        self.next_server(k, format!("unreachable: {e}"), reg, now, metrics);
                        continue;
                    }
                };
                match stun::parse_response(self.buf.get(..n).unwrap_or(&[]), &tid) {
                    Ok(Reply::Mapped { addr, .. }) if addr.is_ipv6() != self.fams[k].v6 => {
                        metrics.inc(&FAILURES, &[self.fams[k].label(), "malformed"]);
                        self.next_server(k, "malformed reply: mapped address of the wrong family".into(), reg, now, metrics);
                    }
                    Ok(Reply::Mapped { addr, .. }) => {
                        let (idx, to) = server.unwrap_or((0, addr));
                        let name = self.servers.get(idx).map(|s| s.name.clone()).unwrap_or_default();
                        self.succeed(k, Outcome { server: name, addr: Some(to), result: Ok((Some(internal), addr.ip())) }, reg, now, metrics);
                    }
                    Ok(Reply::Error { code, reason }) => {
                        metrics.inc(&FAILURES, &[self.fams[k].label(), "error_response"]);
                        let msg = format!("error response {code} {reason}");
                        self.next_server(k, msg, reg, now, metrics);
                    }
                    Err(StunError::WrongTransaction) => log::debug!("ip discovery: ignoring a reply to another request"),
                    Err(e) => {
                        metrics.inc(&FAILURES, &[self.fams[k].label(), "malformed"]);
                        self.next_server(k, format!("malformed reply: {e}"), reg, now, metrics);
                    }
                }
            }
        }
    }

    /// A helper thread finished (the loop's waker fired).
    pub(crate) fn on_wake(&mut self, reg: &mio::Registry, now: Instant, metrics: &mut Metrics) {
        if let Some(rx) = &self.resolving {
            let res = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Vec::new()),
            };
            if let Some(res) = res {
                self.resolving = None;
                for (i, r) in res {
                    let Some(s) = self.servers.get_mut(i) else { continue };
                    match r {
                        Ok(a) => s.addrs = a,
                        Err(e) => {
                            log::warn!("ip discovery: cannot resolve STUN server {}: {e}", s.name);
                            metrics.inc(&FAILURES, &["any", "resolve"]);
                            let server = s.name.clone();
                            self.record(Outcome { server, addr: None, result: Err(format!("cannot resolve: {e}")) });
                        }
                    }
                }
                self.fams.iter_mut().for_each(|f| f.phase = Phase::Idle { next: now });
                self.on_timeout(reg, now, metrics);
            }
        }
        if let Some(rx) = &self.http {
            let res = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Vec::new()),
            };
            if let Some(res) = res {
                self.http = None;
                self.http_results(res, metrics);
            }
        }
    }

    fn record(&mut self, o: Outcome) {
        if self.outcomes.len() >= OUTCOMES_KEPT {
            self.outcomes.remove(0);
        }
        self.outcomes.push(o);
    }

    /// Sends the first request to `cands[i]` (or the next one that works).
    fn probe(&mut self, k: usize, cands: Vec<(usize, SocketAddr)>, mut i: usize, reg: &mio::Registry, now: Instant, metrics: &mut Metrics) {
        while let Some(&(idx, addr)) = cands.get(i) {
            let name = self.servers.get(idx).map(|s| s.name.clone()).unwrap_or_default();
            match self.open(addr, reg) {
                Ok((sock, internal, tid)) => {
                    self.fams[k].phase = Phase::Probing { cands, i, attempt: 0, sock, tid, deadline: now + self.timeout, internal };
                    return;
                }
                Err(e) => {
                    metrics.inc(&FAILURES, &[self.fams[k].label(), "unreachable"]);
                    log::debug!("ip discovery: {name} ({addr}): {e}");
                    self.record(Outcome { server: name, addr: Some(addr), result: Err(format!("unreachable: {e}")) });
                    i += 1;
                }
            }
        }
        self.round_failed(k, now, metrics);
    }

    fn open(&self, addr: SocketAddr, reg: &mio::Registry) -> std::io::Result<(UdpSocket, IpAddr, TransactionId)> {
        let any: IpAddr = if addr.is_ipv6() { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
        let mut sock = UdpSocket::bind(SocketAddr::new(any, 0))?;
        sock.connect(addr)?;
        let internal = sock.local_addr()?.ip();
        let tid = random_tid();
        sock.send(&stun::binding_request(&tid))?;
        reg.register(&mut sock, self.token, Interest::READABLE)?;
        Ok((sock, internal, tid))
    }

    /// The current server failed (`why`): try the next one.
    fn next_server(&mut self, k: usize, why: String, reg: &mio::Registry, now: Instant, metrics: &mut Metrics) {
        let old = std::mem::replace(&mut self.fams[k].phase, Phase::Idle { next: now });
        let Phase::Probing { cands, i, mut sock, .. } = old else { return };
        let _ = reg.deregister(&mut sock);
        if let Some(&(idx, addr)) = cands.get(i) {
            let name = self.servers.get(idx).map(|s| s.name.clone()).unwrap_or_default();
            log::info!("ip discovery: STUN server {name} ({addr}): {why}");
            self.record(Outcome { server: name, addr: Some(addr), result: Err(why) });
        }
        self.probe(k, cands, i + 1, reg, now, metrics);
    }

    fn succeed(&mut self, k: usize, o: Outcome, reg: &mio::Registry, now: Instant, metrics: &mut Metrics) {
        if let Phase::Probing { sock, .. } = &mut self.fams[k].phase {
            let _ = reg.deregister(sock);
        }
        self.fams[k].phase = Phase::Idle { next: now + self.interval };
        self.fams[k].rounds += 1;
        if let Ok((internal, public)) = o.result {
            self.set_found(k, Found { internal, public, source: o.server.clone() }, metrics);
        }
        self.record(o);
    }

    fn set_found(&mut self, k: usize, f: Found, metrics: &mut Metrics) {
        if self.fams[k].found.as_ref() != Some(&f) {
            let internal = f.internal.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
            log::info!("ip discovery: public {} address {} (internal {internal}, from {})", self.fams[k].label(), f.public, f.source);
        }
        self.fams[k].found = Some(f);
        metrics.clear(&PUBLIC_ADDRESS);
        for fam in &self.fams {
            if let Some(f) = &fam.found {
                let internal = f.internal.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
                let source = if f.source.starts_with("http") { "http" } else { "stun" };
                metrics.set(&PUBLIC_ADDRESS, vec![fam.label().into(), f.public.to_string().into(), internal.into(), source.into()], 1.0);
            }
        }
    }

    fn round_failed(&mut self, k: usize, now: Instant, metrics: &mut Metrics) {
        let label = self.fams[k].label();
        let any_server = self.servers.iter().any(|s| s.addrs.iter().any(|a| a.is_ipv6() == self.fams[k].v6));
        if any_server {
            metrics.inc(&FAILURES, &[label, "no_answer"]);
            log::warn!(
                "ip discovery: no STUN server answered for {label}; keeping {}",
                self.fams[k].found.as_ref().map(|f| f.public.to_string()).unwrap_or_else(|| "no public address".into())
            );
        }
        self.fams[k].phase = Phase::Idle { next: now + if any_server { self.interval.min(RETRY_AFTER_FAILURE) } else { self.interval } };
        self.fams[k].rounds += 1;
        if !self.http_urls.is_empty() && self.http.is_none() {
            if let Some(w) = &self.waker {
                match helper::http(self.http_urls.clone(), self.timeout.max(Duration::from_secs(5)), Arc::clone(w)) {
                    Ok(rx) => self.http = Some(rx),
                    Err(e) => log::warn!("ip discovery: cannot start the HTTP fallback thread: {e}"),
                }
            }
        }
    }

    fn http_results(&mut self, res: helper::HttpResults, metrics: &mut Metrics) {
        for (url, r) in res {
            match r {
                Ok(public) => {
                    let k = usize::from(public.is_ipv6());
                    // STUN has priority: only fill a family whose last STUN round failed.
                    let stun_ok = self.fams[k].found.as_ref().is_some_and(|f| !f.source.starts_with("http"));
                    let internal = helper::route_source(public.is_ipv6(), self.servers.iter().flat_map(|s| s.addrs.iter().copied()));
                    if !stun_ok {
                        self.set_found(k, Found { internal, public, source: url.clone() }, metrics);
                    }
                    self.record(Outcome { server: url, addr: None, result: Ok((internal, public)) });
                }
                Err(e) => {
                    metrics.inc(&FAILURES, &["any", "http"]);
                    log::info!("ip discovery: {url}: {e}");
                    self.record(Outcome { server: url, addr: None, result: Err(e) });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The netlink plugin: finds TCP flows with NETLINK_SOCK_DIAG dumps every NETLINK_TIMEOUT.
//!
//! An explicit state machine on one non-blocking netlink socket registered in the loop:
//! `Idle { next }` waits for the timer; at `next` it sends the IPv4 dump request and
//! becomes `Dumping`. Replies are read as the socket becomes readable (never in a
//! blocking loop), at most `TURN_CAP` datagrams per turn (then `poll_at()` is now), and
//! each connection goes straight into the shared [`ConnTable`]. On the IPv4 dump's
//! `NLMSG_DONE` the IPv6 request is sent; on the IPv6 `NLMSG_DONE` the table produces
//! `end` events and the phase returns to `Idle`. A dump that fails, or is still running
//! at its deadline (NETLINK_DUMP_TIMEOUT), is logged, counted and abandoned: the socket
//! is replaced (a half-read dump would make the kernel refuse the next request) and the
//! next scan happens at the usual time. The kernel filters by state (established only),
//! and tcp_info is not requested: the diff needs only addresses and inodes.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::conn_table::{ConnFilter, ConnTable, SCANS, SCAN_FAILURES, SCAN_SECONDS, TRACKED};
use super::netstat::{unknown, warn};
use crate::config::validate::ScanConfig;
use crate::config::Config;
use crate::context::Context;
use crate::logger::RateLimit;
use crate::metrics::BAD_INPUT;
use crate::registry::IdOrName;
use crate::sys::netlink::{DiagSocket, RECV_BUF};
use crate::wire::sock_diag::{self, Family, Filter};

/// Datagrams read per loop turn before yielding to other sources (each up to 64 KiB).
const TURN_CAP: usize = 64;
const NAME: &str = "netlink";

/// Where the scanner is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the next scan at `next`.
    Idle { next: Instant },
    /// Dump request `seq` for `family` in flight; replies arrive on the socket.
    Dumping {
        /// Sequence number of the request in flight.
        seq: u32,
        /// The family being dumped (IPv4 first, then IPv6).
        family: Family,
        /// The scan is abandoned if not finished by then.
        deadline: Instant,
        /// When the scan started (for the duration metric and the next period).
        started: Instant,
        /// Connections received so far in this scan.
        seen: usize,
    },
}

/// The running netlink scanner.
pub struct Scanner {
    sock: DiagSocket,
    token: Option<Token>,
    phase: Phase,
    seq: u32,
    interval: Duration,
    dump_timeout: Duration,
    experiment: IdOrName,
    activity: IdOrName,
    ids: (u32, u32),
    table: ConnTable,
    buf: Vec<u8>,
    /// Set (to the turn's time) when a read stopped at the per-turn cap.
    backlog: Option<Instant>,
    warn: RateLimit,
}

impl Scanner {
    /// Opens the sock_diag socket; the first scan runs at once.
    pub fn new(cfg: &Config) -> io::Result<Scanner> {
        let s: &ScanConfig = &cfg.netlink.scan;
        Ok(Scanner {
            sock: DiagSocket::open()?,
            token: None,
            phase: Phase::Idle { next: Instant::now() },
            seq: 0,
            interval: s.interval,
            dump_timeout: cfg.netlink.dump_timeout,
            experiment: s.experiment.clone().unwrap_or(IdOrName::Id(0)),
            activity: s.activity.clone().unwrap_or(IdOrName::Id(0)),
            ids: (0, 0),
            table: ConnTable::new(ConnFilter::from_scan(s)),
            buf: vec![0; RECV_BUF],
            backlog: None,
            warn: RateLimit::new(10, Duration::from_secs(60)),
        })
    }

    /// Registers the socket for readability.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.token = Some(token);
        registry.register(&mut SourceFd(&self.sock.as_raw_fd()), token, Interest::READABLE)
    }

    /// Deregisters the socket.
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut SourceFd(&self.sock.as_raw_fd()));
    }

    /// Next deadline: the next scan, the dump deadline, or now after hitting the cap.
    pub fn poll_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle { next } => Some(next),
            Phase::Dumping { deadline, .. } => Some(self.backlog.map_or(deadline, |at| at.min(deadline))),
        }
    }

    /// Starts a scan, resumes a capped read, or abandons an overdue dump.
    pub fn on_timeout(&mut self, cx: &mut Context<'_>) {
        match self.phase {
            Phase::Idle { next } if cx.now >= next => self.start(cx),
            Phase::Idle { .. } => {}
            Phase::Dumping { deadline, .. } if cx.now >= deadline => self.abandon("timeout", "dump did not finish in time", cx),
            Phase::Dumping { .. } if self.backlog.is_some() => self.on_ready(cx),
            Phase::Dumping { .. } => {}
        }
    }

    fn start(&mut self, cx: &mut Context<'_>) {
        match cx.registry.resolve(&self.experiment, &self.activity) {
            Ok(ids) => self.ids = ids,
            Err(e) => {
                cx.metrics.inc(&BAD_INPUT, &[NAME, unknown(e)]);
                let (x, a) = (&self.experiment, &self.activity);
                warn(&mut self.warn, cx.now, NAME, format_args!("NETLINK_EXPERIMENT/NETLINK_ACTIVITY ({x}/{a}) not in the registry; scan skipped"));
                self.phase = Phase::Idle { next: cx.now + self.interval };
                return;
            }
        }
        self.table.begin();
        self.send(Family::V4, cx.now, 0, cx);
    }

    fn send(&mut self, family: Family, started: Instant, seen: usize, cx: &mut Context<'_>) {
        self.seq = self.seq.wrapping_add(1);
        let req = sock_diag::request(family, Filter::established(false), self.seq);
        match self.sock.send(&req) {
            Ok(()) => {
                let deadline = started + self.dump_timeout;
                self.phase = Phase::Dumping { seq: self.seq, family, deadline, started, seen };
                // Replies are usually queued already: read them in this turn.
                self.on_ready(cx);
            }
            Err(e) => {
                self.phase = Phase::Dumping { seq: self.seq, family, deadline: started, started, seen };
                self.abandon("send_failed", &format!("cannot send the dump request: {e}"), cx);
            }
        }
    }

    /// The socket is readable: read replies until `WouldBlock` or the per-turn cap.
    pub fn on_ready(&mut self, cx: &mut Context<'_>) {
        self.backlog = None;
        for _ in 0..TURN_CAP {
            let Phase::Dumping { seq, family, deadline, started, seen } = self.phase else {
                // Nothing in flight: discard stray datagrams.
                self.sock.drain(&mut self.buf);
                return;
            };
            let n = match self.sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.abandon("recv_failed", &format!("recv failed: {e}"), cx),
            };
            let (table, ids, out, wall) = (&mut self.table, self.ids, &mut *cx.out, cx.wall);
            let parsed = sock_diag::parse(&self.buf[..n], seq, |c| {
                table.observe(c.src, c.dst, c.inode, wall, out, |_| ids);
            });
            match parsed {
                Ok(p) if !p.done => self.phase = Phase::Dumping { seq, family, deadline, started, seen: seen + p.conns },
                Ok(p) => match family {
                    Family::V4 => return self.send(Family::V6, started, seen + p.conns, cx),
                    Family::V6 => return self.complete(started, seen + p.conns, cx),
                },
                Err(e) => return self.abandon(e.reason(), &format!("bad {family:?} reply: {e}"), cx),
            }
        }
        self.backlog = Some(cx.now);
    }

    fn complete(&mut self, started: Instant, seen: usize, cx: &mut Context<'_>) {
        let ended = self.table.finish(cx.wall, cx.out);
        let took = Instant::now().saturating_duration_since(started);
        cx.metrics.inc(&SCANS, &[NAME]);
        cx.metrics.set(&TRACKED, vec![NAME.into()], self.table.len() as f64);
        cx.metrics.set(&SCAN_SECONDS, vec![NAME.into()], took.as_secs_f64());
        log::debug!("netlink: scan of {seen} established sockets in {took:?}: {} tracked, {ended} ended", self.table.len());
        self.phase = Phase::Idle { next: next_scan(started, self.interval, cx.now) };
    }

    fn abandon(&mut self, reason: &'static str, why: &str, cx: &mut Context<'_>) {
        cx.metrics.inc(&SCAN_FAILURES, &[NAME, reason]);
        warn(&mut self.warn, cx.now, NAME, format_args!("scan abandoned: {why}"));
        let started = match self.phase {
            Phase::Dumping { started, .. } => started,
            Phase::Idle { .. } => cx.now,
        };
        self.backlog = None;
        self.phase = Phase::Idle { next: next_scan(started, self.interval, cx.now) };
        // A half-read dump keeps the kernel's dump state busy: start over on a new socket.
        match DiagSocket::open() {
            Ok(sock) => {
                self.deregister(cx.poll);
                self.sock = sock;
                if let Some(t) = self.token {
                    if let Err(e) = cx.poll.register(&mut SourceFd(&self.sock.as_raw_fd()), t, Interest::READABLE) {
                        log::error!("netlink: cannot register the new sock_diag socket: {e}");
                    }
                }
            }
            Err(e) => {
                self.sock.drain(&mut self.buf);
                log::error!("netlink: cannot open a new sock_diag socket, keeping the old one: {e}");
            }
        }
    }
}

/// The next scan: one interval after the last one started, never in the past.
fn next_scan(started: Instant, interval: Duration, now: Instant) -> Instant {
    (started + interval).max(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::registry::Registry;

    #[test]
    fn test_scan_completes_and_an_overdue_dump_is_abandoned_and_counted() {
        let mut cfg = Config::default();
        cfg.netlink.scan.experiment = Some(IdOrName::Id(2));
        cfg.netlink.scan.activity = Some(IdOrName::Id(9));
        let poll = mio::Poll::new().unwrap();
        let mut s = Scanner::new(&cfg).unwrap();
        s.register(poll.registry(), Token(7)).unwrap();
        let (mut out, mut metrics, registry) = (Vec::new(), Metrics::new(), Registry::bundled());
        let t0 = Instant::now();
        let mut cx = Context { now: t0, wall: crate::flow::Micros(1), out: &mut out, metrics: &mut metrics, registry: &registry, poll: poll.registry() };
        s.on_timeout(&mut cx);
        assert_eq!(s.phase, Phase::Idle { next: t0 + cfg.netlink.scan.interval }, "a loopback-only host finishes both dumps at once");
        assert_eq!(cx.metrics.get(&SCANS, &["netlink"]), Some(1.0));
        // A dump still in flight at its deadline is abandoned, counted, and the next scan works.
        s.phase = Phase::Dumping { seq: 999, family: Family::V4, deadline: t0, started: t0, seen: 0 };
        cx.now = t0 + Duration::from_millis(1);
        s.on_timeout(&mut cx);
        assert_eq!(cx.metrics.get(&SCAN_FAILURES, &["netlink", "timeout"]), Some(1.0));
        assert!(matches!(s.phase, Phase::Idle { .. }));
        cx.now = t0 + cfg.netlink.scan.interval;
        s.on_timeout(&mut cx);
        assert_eq!(cx.metrics.get(&SCANS, &["netlink"]), Some(2.0));
        // Unknown registry names skip the scan and are counted.
        s.experiment = IdOrName::Name("nosuch".into());
        cx.now += cfg.netlink.scan.interval;
        s.on_timeout(&mut cx);
        assert_eq!(cx.metrics.get(&BAD_INPUT, &["netlink", "unknown_experiment"]), Some(1.0));
        assert_eq!(cx.metrics.get(&SCANS, &["netlink"]), Some(2.0));
    }
}

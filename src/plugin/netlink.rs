//! The netlink plugin: finds TCP flows with NETLINK_SOCK_DIAG dumps every NETLINK_TIMEOUT.
//!
//! The dump itself is the daemon's one sock_diag machine (`enrich::dump`), driven
//! asynchronously on its socket registered in the loop: `Idle { next }` waits for the
//! timer; at `next` the scan starts (IPv4, then IPv6) and the phase is `Scanning`.
//! Replies are read as the socket becomes readable (never in a blocking loop), at most
//! `TURN_CAP` datagrams per turn (then `poll_at()` is now), and each connection goes
//! straight into the shared [`ConnTable`] (this plugin's [`Sink`]). When both families
//! are complete the table produces `end` events and the phase returns to `Idle`. A dump
//! that fails, or is still running at its deadline (NETLINK_DUMP_TIMEOUT), is logged,
//! counted and abandoned by the machine, and the next scan happens at the usual time.
//! The kernel filters by state (established only), and tcp_info is not requested: the
//! diff needs only addresses and inodes.

use std::io;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::conn_table::{ConnFilter, ConnTable, SCANS, SCAN_FAILURES, SCAN_SECONDS, TRACKED};
use super::netstat::{unknown, warn};
use crate::config::validate::ScanConfig;
use crate::config::Config;
use crate::context::Context;
use crate::enrich::dump::{Dump, DumpError, Sink, Step};
use crate::flow::{FlowEvent, Micros};
use crate::logger::RateLimit;
use crate::metrics::BAD_INPUT;
use crate::registry::IdOrName;
use crate::wire::sock_diag::{Conn, Filter};

/// Datagrams read per loop turn before yielding to other sources (each up to 64 KiB).
const TURN_CAP: usize = 64;
const NAME: &str = "netlink";

/// Where the scanner is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the next scan at `next`.
    Idle { next: Instant },
    /// A scan is in flight (the dump machine holds its deadline).
    Scanning {
        /// When the scan started (for the duration metric and the next period).
        started: Instant,
    },
}

/// The scan's side of the dump: every established connection goes into the table,
/// which pushes `start` events for new ones into `out`.
pub(crate) struct Scan<'a> {
    table: &'a mut ConnTable,
    ids: (u32, u32),
    wall: Micros,
    out: &'a mut Vec<FlowEvent>,
}

impl<'a> Scan<'a> {
    /// New flows get the (experiment, activity) `ids` and start at `wall`.
    pub(crate) fn new(table: &'a mut ConnTable, ids: (u32, u32), wall: Micros, out: &'a mut Vec<FlowEvent>) -> Scan<'a> {
        Scan { table, ids, wall, out }
    }
}

impl Sink for Scan<'_> {
    fn conn(&mut self, c: Conn) {
        let ids = self.ids;
        self.table.observe(c.src, c.dst, c.inode, self.wall, self.out, |_| ids);
    }
}

/// The running netlink scanner.
pub(crate) struct Scanner {
    dump: Dump,
    phase: Phase,
    interval: Duration,
    dump_timeout: Duration,
    experiment: IdOrName,
    activity: IdOrName,
    ids: (u32, u32),
    table: ConnTable,
    /// Set (to the turn's time) when a read stopped at the per-turn cap.
    backlog: Option<Instant>,
    warn: RateLimit,
}

impl Scanner {
    /// Opens the sock_diag socket; the first scan runs at once.
    pub(crate) fn new(cfg: &Config) -> io::Result<Scanner> {
        let s: &ScanConfig = &cfg.netlink.scan;
        Ok(Scanner {
            dump: Dump::open()?,
            phase: Phase::Idle { next: Instant::now() },
            interval: s.interval,
            dump_timeout: cfg.netlink.dump_timeout,
            experiment: s.experiment.clone().unwrap_or(IdOrName::Id(0)),
            activity: s.activity.clone().unwrap_or(IdOrName::Id(0)),
            ids: (0, 0),
            table: ConnTable::new(ConnFilter::from_scan(s)),
            backlog: None,
            warn: RateLimit::new(10, Duration::from_secs(60)),
        })
    }

    /// Registers the socket for readability.
    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.dump.register(registry, token)
    }

    /// Deregisters the socket.
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        self.dump.deregister(registry);
    }

    /// Next deadline: the next scan, the dump deadline, or now after hitting the cap.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle { next } => Some(next),
            Phase::Scanning { .. } => [self.dump.deadline(), self.backlog].into_iter().flatten().min(),
        }
    }

    /// Starts a scan, resumes a capped read, or abandons an overdue dump.
    pub(crate) fn on_timeout(&mut self, cx: &mut Context<'_>) {
        match self.phase {
            Phase::Idle { next } if cx.now >= next => self.start(cx),
            Phase::Idle { .. } => {}
            Phase::Scanning { .. } => match self.dump.expire(cx.now, cx.poll) {
                Some(e) => self.failed(e, cx),
                None if self.backlog.is_some() => self.on_ready(cx),
                None => {}
            },
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
        self.phase = Phase::Scanning { started: cx.now };
        let mut scan = Scan::new(&mut self.table, self.ids, cx.wall, cx.out);
        let step = self.dump.start(Filter::established(false), cx.now + self.dump_timeout, cx.poll, &mut scan);
        // Replies are usually queued already: read them in this turn.
        match step {
            Step::Pending => self.on_ready(cx),
            other => self.step(other, cx),
        }
    }

    /// The socket is readable: read replies until `WouldBlock` or the per-turn cap.
    pub(crate) fn on_ready(&mut self, cx: &mut Context<'_>) {
        let mut scan = Scan::new(&mut self.table, self.ids, cx.wall, cx.out);
        let step = self.dump.read(TURN_CAP, cx.poll, &mut scan);
        self.step(step, cx);
    }

    fn step(&mut self, step: Step, cx: &mut Context<'_>) {
        self.backlog = None;
        match step {
            Step::Idle | Step::Pending => {}
            Step::Capped => self.backlog = Some(cx.now),
            Step::Done { conns } => self.complete(conns, cx),
            Step::Failed(e) => self.failed(e, cx),
        }
    }

    fn complete(&mut self, seen: usize, cx: &mut Context<'_>) {
        let Phase::Scanning { started } = self.phase else { return };
        let ended = self.table.finish(cx.wall, cx.out);
        let took = Instant::now().saturating_duration_since(started);
        cx.metrics.inc(&SCANS, &[NAME]);
        cx.metrics.set(&TRACKED, vec![NAME.into()], self.table.len() as f64);
        cx.metrics.set(&SCAN_SECONDS, vec![NAME.into()], took.as_secs_f64());
        log::debug!("netlink: scan of {seen} established sockets in {took:?}: {} tracked, {ended} ended", self.table.len());
        self.phase = Phase::Idle { next: next_scan(started, self.interval, cx.now) };
    }

    /// The machine abandoned the dump: count it; the next scan happens at the usual time.
    fn failed(&mut self, e: DumpError, cx: &mut Context<'_>) {
        cx.metrics.inc(&SCAN_FAILURES, &[NAME, e.reason()]);
        warn(&mut self.warn, cx.now, NAME, format_args!("scan abandoned: {e}"));
        let started = match self.phase {
            Phase::Scanning { started } => started,
            Phase::Idle { .. } => cx.now,
        };
        self.backlog = None;
        self.phase = Phase::Idle { next: next_scan(started, self.interval, cx.now) };
    }
}

/// The next scan: one interval after the last one started, never in the past.
fn next_scan(started: Instant, interval: Duration, now: Instant) -> Instant {
    (started + interval).max(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::local::LocalAddrs;
    use crate::metrics::Metrics;
    use crate::registry::ScitagsRegistry;

    #[test]
    fn test_scan_completes_and_an_overdue_dump_is_abandoned_and_counted() {
        let mut cfg = Config::default();
        cfg.netlink.scan.experiment = Some(IdOrName::Id(2));
        cfg.netlink.scan.activity = Some(IdOrName::Id(9));
        let poll = mio::Poll::new().unwrap();
        let mut s = Scanner::new(&cfg).unwrap();
        s.register(poll.registry(), Token(7)).unwrap();
        let (mut out, mut metrics, registry, mut local) = (Vec::new(), Metrics::new(), ScitagsRegistry::bundled(), LocalAddrs::new());
        let mut rejected = Vec::new();
        let t0 = Instant::now();
        let mut cx = Context::new(t0, &mut out, &mut rejected, &mut metrics, &registry, poll.registry(), &mut local);
        s.on_timeout(&mut cx);
        assert_eq!(s.phase, Phase::Idle { next: t0 + cfg.netlink.scan.interval }, "a loopback-only host finishes both dumps at once");
        assert_eq!(cx.metrics.get(&SCANS, &["netlink"]), Some(1.0));
        // A dump still in flight at its deadline is abandoned, counted, and the next scan works.
        let mut scan = Scan::new(&mut s.table, (2, 9), cx.wall, cx.out);
        assert!(matches!(s.dump.start(Filter::established(false), t0, cx.poll, &mut scan), Step::Pending));
        s.phase = Phase::Scanning { started: t0 };
        cx.now = t0 + Duration::from_millis(1);
        assert_eq!(s.poll_at(), Some(t0), "the dump's deadline");
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

//! The netstat plugin: finds TCP flows by reading `/proc/net/tcp` and `/proc/net/tcp6`
//! every NETSTAT_TIMEOUT.
//!
//! Timer-only (no fd in the loop): at each deadline both files are read with `std::fs`
//! into one reused buffer (no process is spawned, unlike the Python plugin's psutil),
//! parsed by `wire::proc_net`, and every established connection goes into the shared
//! [`ConnTable`], which produces the `start`/`end` events. A file that cannot be read
//! fails the scan (logged, counted, no events: a half scan would end every flow in the
//! missing family). Reading procfs is synchronous, but it is one bounded read per file
//! per period (about 1.5 MB for 10,000 connections).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::conn_table::{record_scan, ConnFilter, ConnTable, ScanTimer, SCAN_FAILURES};
use crate::config::Config;
use crate::context::Context;
use crate::logger::{RateLimit, Suppressed};
use crate::metrics::BAD_INPUT;
use crate::registry::{IdOrName, UnknownName};
use crate::wire::proc_net;
use crate::wire::sock_diag::{state, Conn};

const NAME: &str = "netstat";
/// The files read, in order.
pub(crate) const PROC_NET: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// Reads both `/proc/net` files into `buf` (one at a time) and hands every established
/// connection to `each`. Returns the number of unparsable lines.
pub(crate) fn read_established(buf: &mut Vec<u8>, mut each: impl FnMut(Conn)) -> io::Result<usize> {
    let mut bad = 0;
    for path in PROC_NET {
        buf.clear();
        match std::fs::File::open(path) {
            Ok(mut f) => {
                f.read_to_end(buf)?;
            }
            // A kernel without IPv6 has no tcp6: that family simply has no connections.
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.ends_with('6') => continue,
            Err(e) => return Err(e),
        }
        bad += proc_net::parse(buf, |c| {
            if c.state == state::ESTABLISHED {
                each(c);
            }
        });
    }
    Ok(bad)
}

/// Logs at warn level through a rate limiter.
pub(crate) fn warn(limit: &mut RateLimit, now: Instant, name: &str, msg: std::fmt::Arguments<'_>) {
    if let Some(n) = limit.allow(now) {
        log::warn!("{name}: {msg}{}", Suppressed(n));
    }
}

/// Counts and logs an unknown registry name; the metrics reason for it.
pub(crate) fn unknown(e: UnknownName) -> &'static str {
    match e {
        UnknownName::Experiment => "unknown_experiment",
        UnknownName::Activity => "unknown_activity",
    }
}

/// The running netstat scanner.
pub(crate) struct Scanner {
    timer: ScanTimer,
    experiment: IdOrName,
    activity: IdOrName,
    table: ConnTable,
    conns: Vec<(SocketAddr, SocketAddr, u32)>,
    buf: Vec<u8>,
    warn: RateLimit,
}

impl Scanner {
    /// Checks that `/proc/net/tcp` is readable; the first scan runs at once.
    pub(crate) fn new(cfg: &Config) -> io::Result<Scanner> {
        std::fs::File::open(PROC_NET[0])?;
        let s = &cfg.netstat;
        Ok(Scanner {
            timer: ScanTimer::new(s.interval),
            experiment: s.experiment.clone().unwrap_or(IdOrName::Id(0)),
            activity: s.activity.clone().unwrap_or(IdOrName::Id(0)),
            table: ConnTable::new(ConnFilter::from_scan(s)),
            conns: Vec::new(),
            buf: Vec::with_capacity(256 * 1024),
            warn: RateLimit::new(10, Duration::from_secs(60)),
        })
    }

    /// The next scan.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        Some(self.timer.next())
    }

    /// Scans when due.
    pub(crate) fn on_timeout(&mut self, cx: &mut Context<'_>) {
        let Some(started) = self.timer.start(cx.now) else { return };
        let ids = match cx.registry.resolve(&self.experiment, &self.activity) {
            Ok(ids) => ids,
            Err(e) => {
                cx.metrics.inc(&BAD_INPUT, &[NAME, unknown(e)]);
                let (x, a) = (&self.experiment, &self.activity);
                warn(&mut self.warn, cx.now, NAME, format_args!("NETSTAT_EXPERIMENT/NETSTAT_ACTIVITY ({x}/{a}) not in the registry; scan skipped"));
                return;
            }
        };
        // Parse everything first: a failed read must not end the flows it did not see.
        self.conns.clear();
        let conns = &mut self.conns;
        match read_established(&mut self.buf, |c| conns.push((c.src, c.dst, c.inode))) {
            Ok(0) => {}
            Ok(bad) => {
                cx.metrics.add(&BAD_INPUT, &[NAME, "bad_proc_line"], bad as u64);
                warn(&mut self.warn, cx.now, NAME, format_args!("{bad} unparsable lines in /proc/net/tcp*"));
            }
            Err(e) => {
                cx.metrics.inc(&SCAN_FAILURES, &[NAME, "read_failed"]);
                warn(&mut self.warn, cx.now, NAME, format_args!("cannot read /proc/net/tcp*: {e}; scan skipped"));
                return;
            }
        }
        self.table.begin();
        for &(src, dst, inode) in &self.conns {
            self.table.observe(src, dst, inode, cx.wall, cx.out, |_| ids);
        }
        let ended = self.table.finish(cx.wall, cx.out);
        let took = record_scan(NAME, started, &self.table, cx.metrics);
        log::debug!("netstat: scan in {took:?}: {} tracked, {ended} ended", self.table.len());
    }
}

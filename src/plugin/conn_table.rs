//! Snapshot diff for the scanning plugins (netlink, netstat, iperf): the one place that
//! turns "the established connections seen now" into `start`/`end` flow events.
//!
//! A scan calls [`ConnTable::begin`], then [`ConnTable::observe`] for every established
//! connection (in any order, as a dump streams in), then [`ConnTable::finish`]. A
//! connection seen for the first time gives `start` (connections open when flowd starts
//! are reported at the first scan: a restarted daemon must not forget a long transfer);
//! one that is gone at `finish` gives `end` with its real start time. Connections are
//! marked with a scan generation instead of building a second set, so a scan of 10,000
//! connections allocates nothing once the table has grown. A scan that is abandoned
//! (failed dump) simply never calls `finish`, so it cannot produce false `end`s.
//!
//! Orientation: `src` is the local side, `dst` the remote peer. IPv4-mapped IPv6
//! addresses (dual-stack sockets) are reported as IPv4, which is what is on the wire.
//! Filters, applied to the destination: loopback, link-local, unspecified and multicast
//! are always skipped; `*_INTERNAL_NETWORKS` are skipped; private addresses (Python
//! 3.11's `is_private` table) are skipped unless `*_INCLUDE_PRIVATE`. No I/O, no clock.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::validate::ScanConfig;
use crate::flow::{FlowEvent, FlowKey, FlowState, Micros, Proto};
use crate::metrics::{Desc, Kind};
use crate::netaddr::{self, Cidr};

/// Scans that failed or were abandoned, by plugin and reason.
pub(crate) static SCAN_FAILURES: Desc = Desc {
    name: "flowd_scan_failures_total",
    help: "Connection scans that failed or overran their deadline and were abandoned, by plugin and reason.",
    kind: Kind::Counter,
    labels: &["plugin", "reason"],
};

/// Completed scans, by plugin.
pub(crate) static SCANS: Desc = Desc { name: "flowd_scans_total", help: "Connection scans completed, by plugin.", kind: Kind::Counter, labels: &["plugin"] };

/// Connections tracked after the last scan, by plugin.
pub(crate) static TRACKED: Desc = Desc {
    name: "flowd_scan_tracked_connections",
    help: "Established connections that passed the filters at the last completed scan, by plugin.",
    kind: Kind::Gauge,
    labels: &["plugin"],
};

/// Duration of the last completed scan, by plugin.
pub(crate) static SCAN_SECONDS: Desc = Desc {
    name: "flowd_scan_duration_seconds",
    help: "Wall time of the last completed connection scan (request to last reply), by plugin.",
    kind: Kind::Gauge,
    labels: &["plugin"],
};

/// Which destinations a scanner reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ConnFilter {
    /// Destinations in these networks are skipped.
    pub internal: Vec<Cidr>,
    /// Report private destinations too.
    pub include_private: bool,
}

impl ConnFilter {
    /// The filter of a `NETSTAT_*`/`NETLINK_*` key group.
    pub(crate) fn from_scan(s: &ScanConfig) -> ConnFilter {
        ConnFilter { internal: s.internal_networks.clone(), include_private: s.include_private }
    }

    /// True when a connection to `dst` is reported.
    pub(crate) fn accepts(&self, dst: SocketAddr) -> bool {
        let ip = dst.ip();
        if dst.port() == 0 || netaddr::is_local_scope(ip) {
            return false;
        }
        if !self.include_private && netaddr::is_private(ip) {
            return false;
        }
        !self.internal.iter().any(|n| n.contains(ip))
    }
}

#[derive(Clone, Copy, Debug)]
struct Open {
    start: Micros,
    exp: u32,
    act: u32,
    inode: u32,
    seen: u32,
}

/// The established connections a scanner knows about, with their start times and ids.
#[derive(Debug, Default)]
pub(crate) struct ConnTable {
    open: HashMap<FlowKey, Open>,
    generation: u32,
    filter: ConnFilter,
}

/// The TCP flow key of a connection, with IPv4-mapped addresses turned into IPv4.
pub(crate) fn tcp_key(src: SocketAddr, dst: SocketAddr) -> Option<FlowKey> {
    let c = |a: SocketAddr| SocketAddr::new(netaddr::canonical(a.ip()), a.port());
    FlowKey::new(Proto::Tcp, c(src), c(dst))
}

impl ConnTable {
    /// An empty table with `filter`.
    pub(crate) fn new(filter: ConnFilter) -> ConnTable {
        ConnTable { open: HashMap::new(), generation: 0, filter }
    }

    /// Number of connections known.
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    /// True when no connection is known.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Starts a scan.
    pub(crate) fn begin(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Records one established connection of the current scan. A new one (or the same
    /// 5-tuple with a different socket inode: closed and reopened between scans) pushes
    /// events into `out`; `ids` gives the (experiment, activity) of a new flow.
    /// Returns false when the filter rejected it.
    pub(crate) fn observe(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        inode: u32,
        wall: Micros,
        out: &mut Vec<FlowEvent>,
        ids: impl FnOnce(&FlowKey) -> (u32, u32),
    ) -> bool {
        let Some(key) = tcp_key(src, dst) else { return false };
        if !self.filter.accepts(key.dst) {
            return false;
        }
        let generation = self.generation;
        if let Some(o) = self.open.get_mut(&key) {
            if o.inode == inode || o.inode == 0 || inode == 0 {
                o.seen = generation;
                if o.inode == 0 {
                    o.inode = inode;
                }
                return true;
            }
            // Same 5-tuple, different socket: the old flow ended.
            let old = *o;
            out.push(end_event(key, old, wall));
        }
        let (exp, act) = ids(&key);
        self.open.insert(key, Open { start: wall, exp, act, inode, seen: generation });
        let mut ev = FlowEvent::new(FlowState::Start, key, exp, act, wall);
        ev.start_time = Some(wall);
        out.push(ev);
        true
    }

    /// Ends the scan: every connection not observed since `begin` gives `end`.
    /// Returns the number of `end` events pushed.
    pub(crate) fn finish(&mut self, wall: Micros, out: &mut Vec<FlowEvent>) -> usize {
        let generation = self.generation;
        let before = out.len();
        self.open.retain(|key, o| {
            if o.seen == generation {
                true
            } else {
                out.push(end_event(*key, *o, wall));
                false
            }
        });
        out.len() - before
    }
}

fn end_event(key: FlowKey, o: Open, wall: Micros) -> FlowEvent {
    let mut ev = FlowEvent::new(FlowState::End, key, o.exp, o.act, wall);
    ev.start_time = Some(o.start);
    ev.end_time = Some(wall);
    ev
}

/// The period of a timer-driven scanner (netstat, iperf).
#[derive(Debug)]
pub(crate) struct ScanTimer {
    next: std::time::Instant,
    interval: std::time::Duration,
}

impl ScanTimer {
    /// A timer whose first scan is due at once.
    pub(crate) fn new(interval: std::time::Duration) -> ScanTimer {
        ScanTimer { next: std::time::Instant::now(), interval }
    }

    /// When the next scan is due.
    pub(crate) fn next(&self) -> std::time::Instant {
        self.next
    }

    /// `Some(started)` when a scan is due at `now`; the next one is then scheduled an
    /// interval later (never in the past, however long this one takes).
    pub(crate) fn start(&mut self, now: std::time::Instant) -> Option<std::time::Instant> {
        if now < self.next {
            return None;
        }
        let started = std::time::Instant::now();
        self.next = (now + self.interval).max(started);
        Some(started)
    }
}

/// Records a finished scan in the metrics; returns how long it took.
pub(crate) fn record_scan(name: &'static str, started: std::time::Instant, table: &ConnTable, metrics: &mut crate::metrics::Metrics) -> std::time::Duration {
    let took = std::time::Instant::now().saturating_duration_since(started);
    metrics.inc(&SCANS, &[name]);
    metrics.set(&TRACKED, vec![name.into()], table.len() as f64);
    metrics.set(&SCAN_SECONDS, vec![name.into()], took.as_secs_f64());
    took
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn scan(t: &mut ConnTable, conns: &[(&str, &str, u32)], at: i64) -> Vec<FlowEvent> {
        let mut out = Vec::new();
        t.begin();
        for (s, d, ino) in conns {
            t.observe(sa(s), sa(d), *ino, Micros(at), &mut out, |_| (2, 9));
        }
        t.finish(Micros(at), &mut out);
        out
    }

    fn states(v: &[FlowEvent]) -> Vec<(FlowState, u16)> {
        v.iter().map(|e| (e.state, e.key.dst.port())).collect()
    }

    #[test]
    fn test_first_scan_reports_open_connections_then_diffs() {
        let mut t = ConnTable::new(ConnFilter::default());
        let a = ("100.64.0.1:40000", "100.64.1.1:1", 11);
        let b = ("[3fff::1]:40001", "[3fff:1::1]:2", 12);
        let c = ("100.64.0.1:40002", "100.64.1.1:3", 13);
        let e = scan(&mut t, &[a, b], 100);
        assert_eq!(states(&e), vec![(FlowState::Start, 1), (FlowState::Start, 2)]);
        assert!(e.iter().all(|e| e.start_time == Some(Micros(100)) && (e.exp, e.act) == (2, 9)));
        assert!(scan(&mut t, &[b, a], 200).is_empty(), "no change, no events");
        let e = scan(&mut t, &[b, c], 300);
        assert_eq!(states(&e), vec![(FlowState::Start, 3), (FlowState::End, 1)]);
        let end = &e[1];
        assert_eq!((end.start_time, end.end_time), (Some(Micros(100)), Some(Micros(300))));
        assert_eq!(end.key.src, sa("100.64.0.1:40000"), "src is the local side");
        assert_eq!(t.len(), 2);
        let e = scan(&mut t, &[], 400);
        assert_eq!(e.len(), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn test_filters() {
        let f = ConnFilter { internal: vec!["100.64.9.0/24".parse().unwrap(), "3fff:9::/32".parse().unwrap()], include_private: false };
        for d in [
            "127.0.0.1:1",
            "[::1]:1",
            "[fe80::1]:1",
            "169.254.1.1:1",
            "192.0.2.1:1",
            "198.51.100.1:1",
            "10.0.0.1:1",
            "[2001:db8::1]:1",
            "[fd00::1]:1",
            "100.64.9.9:1",
            "[3fff:9::1]:1",
            "[::ffff:10.0.0.1]:1",
            "100.64.0.1:0",
        ] {
            assert!(!f.accepts(sa(d)), "{d}");
        }
        for d in ["100.64.0.1:1", "[3fff::1]:1", "8.8.8.8:53", "[::ffff:100.64.0.1]:1", "[2a00:1450::1]:443"] {
            assert!(f.accepts(sa(d)), "{d}");
        }
        let p = ConnFilter { include_private: true, ..f.clone() };
        for d in ["192.0.2.1:1", "[2001:db8::1]:1", "[fd00::1]:1", "10.0.0.1:1"] {
            assert!(p.accepts(sa(d)), "{d}");
        }
        assert!(!p.accepts(sa("127.0.0.1:1")) && !p.accepts(sa("[fe80::1]:1")), "loopback/link-local never");
        assert!(!p.accepts(sa("100.64.9.1:1")), "internal networks still skipped");
    }

    #[test]
    fn test_mapped_addresses_become_ipv4_and_filtered_conns_are_not_tracked() {
        let mut t = ConnTable::new(ConnFilter::default());
        let e = scan(&mut t, &[("[::ffff:100.64.0.1]:5003", "[::ffff:100.64.0.2]:40000", 5), ("192.168.1.1:1", "192.168.1.2:2", 6)], 1);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key.afi(), "ipv4");
        assert_eq!(e[0].key.src, sa("100.64.0.1:5003"));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn test_reused_tuple_with_new_inode_is_end_then_start() {
        let mut t = ConnTable::new(ConnFilter::default());
        scan(&mut t, &[("100.64.0.1:1", "100.64.0.2:2", 7)], 1);
        let e = scan(&mut t, &[("100.64.0.1:1", "100.64.0.2:2", 8)], 2);
        assert_eq!(states(&e), vec![(FlowState::End, 2), (FlowState::Start, 2)]);
        assert_eq!(e[0].start_time, Some(Micros(1)));
        assert_eq!(e[1].start_time, Some(Micros(2)));
    }

    #[test]
    fn test_abandoned_scan_ends_nothing_and_ids_are_per_flow() {
        let mut t = ConnTable::new(ConnFilter::default());
        let mut out = Vec::new();
        t.begin();
        let mut n = 0;
        for p in 1..=3 {
            t.observe(sa("100.64.0.1:1"), sa(&format!("100.64.0.2:{p}")), p, Micros(1), &mut out, |_| {
                n += 1;
                (n, n * 10)
            });
        }
        assert_eq!(out.iter().map(|e| (e.exp, e.act)).collect::<Vec<_>>(), vec![(1, 10), (2, 20), (3, 30)]);
        // A scan that sees only one connection and is abandoned (no finish).
        out.clear();
        t.begin();
        t.observe(sa("100.64.0.1:1"), sa("100.64.0.2:1"), 1, Micros(2), &mut out, |_| (0, 0));
        assert!(out.is_empty());
        assert_eq!(t.len(), 3);
        // The next complete scan ends the others with their own ids.
        let e = scan(&mut t, &[("100.64.0.1:1", "100.64.0.2:1", 1)], 3);
        let mut got: Vec<(FlowState, u32, u32)> = e.iter().map(|e| (e.state, e.exp, e.act)).collect();
        got.sort();
        assert_eq!(got, vec![(FlowState::End, 2, 20), (FlowState::End, 3, 30)]);
    }
}

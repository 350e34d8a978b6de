//! The iperf plugin: like netstat, but only for connections of iperf3 processes (or on
//! IPERF_PORTS, optionally narrowed to IPERF_LOCAL_PORTS/IPERF_REMOTE_PORTS as flowd-go's
//! iperf3 plugin narrows by source and destination port range), each new flow tagged with an (experiment, activity) pair from
//! IPERF_FLOW_ID, chosen at random (as the Python plugin does) or round-robin
//! (IPERF_ROUND_ROBIN, or PLUGIN='iperf_rr').
//!
//! A connection belongs to iperf3 when its socket inode is one of the `socket:[N]`
//! links in `/proc/<pid>/fd/` of a process whose `/proc/<pid>/comm` is `iperf3`; the
//! inode set is rebuilt at each scan from `/proc` (no process is spawned). Destination
//! filters are the netstat plugin's (NETSTAT_INTERNAL_NETWORKS, NETSTAT_INCLUDE_PRIVATE),
//! as in the Python flowd. The random choice uses a small xorshift generator seeded
//! from `/dev/urandom` (or the clock); it is for spreading test traffic, not for secrets.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::conn_table::{record_scan, ConnFilter, ConnTable, ScanTimer, SCAN_FAILURES};
use super::netstat::{read_established, unknown, warn};
use crate::config::model::PortRange;
use crate::config::Config;
use crate::context::Context;
use crate::logger::RateLimit;
use crate::metrics::BAD_INPUT;
use crate::registry::IdOrName;

const NAME: &str = "iperf";
/// The process name (`/proc/<pid>/comm`) whose sockets are iperf flows.
const COMM: &[u8] = b"iperf3";

/// xorshift64* (Vigna): tiny, fast, good enough to pick list items.
#[derive(Clone, Debug)]
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator seeded with `seed` (0 is replaced by a fixed odd constant).
    pub(crate) fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// Seeded from `/dev/urandom`, or from the clock if that cannot be read.
    pub(crate) fn from_entropy() -> XorShift {
        let mut b = [0u8; 8];
        let seed = match std::fs::File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut b)) {
            Ok(()) => u64::from_ne_bytes(b),
            Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
        };
        XorShift::new(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0; 0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Socket inodes of every process named `comm` (read from `/proc`).
pub(crate) fn process_socket_inodes(comm: &[u8], out: &mut HashSet<u32>) {
    out.clear();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let name = p.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let dir = p.path();
        // Processes come and go during the walk: any error just skips that process.
        match std::fs::read(dir.join("comm")) {
            Ok(c) if c.strip_suffix(b"\n").unwrap_or(&c) == comm => {}
            _ => continue,
        }
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.as_os_str().as_encoded_bytes();
                if let Some(n) = t.strip_prefix(b"socket:[").and_then(|r| r.strip_suffix(b"]")) {
                    if let Some(ino) = std::str::from_utf8(n).ok().and_then(|s| s.parse::<u32>().ok()) {
                        out.insert(ino);
                    }
                }
            }
        }
    }
}

/// The (experiment, activity) pairs the Python flowd's `iperf` plugin picks from at random
/// (its built-in `FLOW_IDS`), used when IPERF_FLOW_ID is not set.
pub(crate) const PYTHON_RANDOM_IDS: [(u32, u32); 8] = [(2, 9), (2, 19), (3, 3), (3, 4), (4, 3), (4, 4), (5, 10), (5, 14)];
/// The pairs the Python flowd's `iperf_rr` plugin hands out in turn, used when
/// IPERF_FLOW_ID is not set and round robin is on.
pub(crate) const PYTHON_ROUND_ROBIN_IDS: [(u32, u32); 8] = [(2, 19), (2, 19), (3, 3), (3, 3), (4, 3), (4, 3), (5, 10), (5, 10)];

/// IPERF_FLOW_ID, or the Python flowd's built-in list for the mode when it is not set.
pub(crate) fn flow_ids(cfg: &Config) -> Vec<(IdOrName, IdOrName)> {
    if !cfg.iperf.flow_id.is_empty() {
        return cfg.iperf.flow_id.clone();
    }
    let builtin: &[(u32, u32)] = if cfg.iperf.round_robin { &PYTHON_ROUND_ROBIN_IDS } else { &PYTHON_RANDOM_IDS };
    builtin.iter().map(|&(e, a)| (IdOrName::Id(e), IdOrName::Id(a))).collect()
}

/// Whether a connection (local port `local`, remote port `remote`) is an iperf flow: it
/// belongs to an iperf3 process or has a port in `ports`, and its ports are within
/// `local_ports`/`remote_ports` where those are set.
pub(crate) fn is_iperf(
    inodes: &HashSet<u32>,
    ports: &[PortRange],
    local_ports: &[PortRange],
    remote_ports: &[PortRange],
    inode: u32,
    local: u16,
    remote: u16,
) -> bool {
    let chosen = inodes.contains(&inode) || PortRange::any(ports, local) || PortRange::any(ports, remote);
    let within = |ranges: &[PortRange], p: u16| ranges.is_empty() || PortRange::any(ranges, p);
    chosen && within(local_ports, local) && within(remote_ports, remote)
}

/// The running iperf scanner.
pub(crate) struct Scanner {
    timer: ScanTimer,
    pairs: Vec<(IdOrName, IdOrName)>,
    ports: Vec<PortRange>,
    local_ports: Vec<PortRange>,
    remote_ports: Vec<PortRange>,
    round_robin: bool,
    rr_next: usize,
    rng: XorShift,
    table: ConnTable,
    inodes: HashSet<u32>,
    conns: Vec<(SocketAddr, SocketAddr, u32)>,
    buf: Vec<u8>,
    warn: RateLimit,
}

impl Scanner {
    /// Checks that `/proc/net/tcp` is readable; the first scan runs at once.
    pub(crate) fn new(cfg: &Config) -> io::Result<Scanner> {
        std::fs::File::open(super::netstat::PROC_NET[0])?;
        Ok(Scanner {
            timer: ScanTimer::new(cfg.netstat.interval),
            pairs: flow_ids(cfg),
            ports: cfg.iperf.ports.clone(),
            local_ports: cfg.iperf.local_ports.clone(),
            remote_ports: cfg.iperf.remote_ports.clone(),
            round_robin: cfg.iperf.round_robin,
            rr_next: 0,
            rng: XorShift::from_entropy(),
            table: ConnTable::new(ConnFilter::from_scan(&cfg.netstat)),
            inodes: HashSet::new(),
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
        let mut ids = Vec::with_capacity(self.pairs.len());
        for (x, a) in &self.pairs {
            match cx.registry.resolve(x, a) {
                Ok(p) => ids.push(p),
                Err(e) => {
                    cx.metrics.inc(&BAD_INPUT, &[NAME, unknown(e)]);
                    warn(&mut self.warn, cx.now, NAME, format_args!("IPERF_FLOW_ID ({x}, {a}) is not in the registry; skipped"));
                }
            }
        }
        if ids.is_empty() {
            return;
        }
        process_socket_inodes(COMM, &mut self.inodes);
        self.conns.clear();
        let Scanner { inodes, ports, local_ports, remote_ports, conns, buf, .. } = &mut *self;
        let read = read_established(buf, |c| {
            if is_iperf(inodes, ports, local_ports, remote_ports, c.inode, c.src.port(), c.dst.port()) {
                conns.push((c.src, c.dst, c.inode));
            }
        });
        match read {
            Ok(0) => {}
            Ok(bad) => cx.metrics.add(&BAD_INPUT, &[NAME, "bad_proc_line"], bad as u64),
            Err(e) => {
                cx.metrics.inc(&SCAN_FAILURES, &[NAME, "read_failed"]);
                warn(&mut self.warn, cx.now, NAME, format_args!("cannot read /proc/net/tcp*: {e}; scan skipped"));
                return;
            }
        }
        let Scanner { table, conns, rng, rr_next, round_robin, .. } = self;
        table.begin();
        for &(src, dst, inode) in conns.iter() {
            table.observe(src, dst, inode, cx.wall, cx.out, |_| {
                let i = if *round_robin {
                    let i = *rr_next % ids.len();
                    *rr_next = rr_next.wrapping_add(1);
                    i
                } else {
                    rng.below(ids.len())
                };
                ids[i]
            });
        }
        let ended = self.table.finish(cx.wall, cx.out);
        let took = record_scan(NAME, started, &self.table, cx.metrics);
        log::debug!("iperf: scan in {took:?}: {} iperf3 sockets, {} tracked, {ended} ended", self.inodes.len(), self.table.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Python flowd iperf config has no IPERF_FLOW_ID: it validates, and the plugin
    /// hands out the Python flowd's built-in pairs for its mode.
    #[test]
    fn test_python_iperf_configs_without_flow_ids_use_the_builtin_lists() {
        let load = |text: &str| crate::config::from_text(text, std::path::Path::new("t.cfg")).unwrap().config;
        let random = load("PLUGIN='iperf'\n");
        let ids: Vec<(IdOrName, IdOrName)> = PYTHON_RANDOM_IDS.iter().map(|&(e, a)| (IdOrName::Id(e), IdOrName::Id(a))).collect();
        assert_eq!(flow_ids(&random), ids);
        let rr = load("PLUGIN='iperf_rr'\n");
        assert_eq!(flow_ids(&rr)[..3], [(IdOrName::Id(2), IdOrName::Id(19)), (IdOrName::Id(2), IdOrName::Id(19)), (IdOrName::Id(3), IdOrName::Id(3))]);
        let own = load("PLUGIN='iperf'\nIPERF_FLOW_ID=[(7, 1)]\n");
        assert_eq!(flow_ids(&own), [(IdOrName::Id(7), IdOrName::Id(1))]);
    }

    /// flowd-go's iperf3 plugin as mapped from its YAML: every connection (`1-65535`),
    /// narrowed to local ports 2340-2350 and remote ports 5200-5210.
    #[test]
    fn test_port_ranges_choose_and_narrow() {
        let load = |text: &str| crate::config::from_text(text, std::path::Path::new("t.cfg")).unwrap().config.iperf;
        let none = HashSet::new();
        let c = load("IPERF_PORTS=('1-65535',)\nIPERF_LOCAL_PORTS='2340-2350'\nIPERF_REMOTE_PORTS=('5200-5210',)\n");
        let f = |local, remote| is_iperf(&none, &c.ports, &c.local_ports, &c.remote_ports, 1, local, remote);
        assert!(f(2340, 5200) && f(2350, 5210) && f(2345, 5205));
        assert!(!f(2339, 5205) && !f(2351, 5205) && !f(2345, 5199) && !f(2345, 5211) && !f(5205, 2345));
        // The default: 5201 on either side, or any socket of an iperf3 process.
        let d = load("");
        let iperf3: HashSet<u32> = [7].into();
        assert!(is_iperf(&none, &d.ports, &d.local_ports, &d.remote_ports, 1, 5201, 40000));
        assert!(is_iperf(&none, &d.ports, &d.local_ports, &d.remote_ports, 1, 40000, 5201));
        assert!(!is_iperf(&none, &d.ports, &d.local_ports, &d.remote_ports, 1, 40000, 5202));
        assert!(is_iperf(&iperf3, &d.ports, &d.local_ports, &d.remote_ports, 7, 40000, 5202));
        // Ranges mixed with single ports; a bad range is an error.
        let m = load("IPERF_PORTS=(5201, '6000-6002')\n");
        assert_eq!(m.ports.iter().map(ToString::to_string).collect::<Vec<_>>(), ["5201", "6000-6002"]);
        assert!(crate::config::from_text("IPERF_PORTS='6002-6000'\n", std::path::Path::new("t.cfg")).is_err());
        assert!(crate::config::from_text("IPERF_REMOTE_PORTS=(0,)\n", std::path::Path::new("t.cfg")).is_err());
    }

    #[test]
    fn test_xorshift_spreads_and_is_deterministic_per_seed() {
        let mut a = XorShift::new(42);
        let mut b = XorShift::new(42);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            let i = a.below(4);
            assert_eq!(i, b.below(4));
            counts[i] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(XorShift::new(0).below(0), 0);
    }

    #[test]
    fn test_own_sockets_are_found_by_comm() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let comm = std::fs::read("/proc/self/comm").unwrap();
        let comm = comm.strip_suffix(b"\n").unwrap();
        let mut set = HashSet::new();
        process_socket_inodes(comm, &mut set);
        let mut ours = HashSet::new();
        // The listener's inode, from our own fd table.
        for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if let Ok(t) = std::fs::read_link(fd.path()) {
                if let Some(n) = t.to_str().and_then(|s| s.strip_prefix("socket:[")).and_then(|s| s.strip_suffix(']')) {
                    ours.insert(n.parse::<u32>().unwrap());
                }
            }
        }
        assert!(!ours.is_empty());
        assert!(ours.is_subset(&set));
        drop(l);
        process_socket_inodes(b"no-such-process-name", &mut set);
        assert!(set.is_empty());
    }
}

//! The daemon's own resource usage, read from `/proc/self` at scrape time.
//!
//! Cheap (three small reads and one directory listing); used for the standard
//! `process_*` metrics. Parsing is split from reading so it can be tested on fixtures.

use std::io;

use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
use nix::unistd::SysconfVar;

/// One sample of the process's resource usage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ProcessStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Start time, seconds since the Unix epoch (0 if unknown).
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Soft limit on file descriptors (0 if unlimited or unknown).
    pub max_fds: u64,
}

/// The fields of `/proc/self/stat` flowd uses, in clock ticks and pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StatFields {
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, clock ticks.
    pub start_ticks: u64,
    /// vsize, bytes.
    pub vsize: u64,
    /// rss, pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may contain spaces and parentheses, so the
/// fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<StatFields> {
    let after = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; utime is field 14.
    let f: Vec<&str> = after.split_ascii_whitespace().collect();
    let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(StatFields { cpu_ticks: num(14)? + num(15)?, start_ticks: num(22)?, vsize: num(23)?, rss_pages: num(24)? })
}

/// Parses the `btime` line of `/proc/stat` (boot time, seconds since the epoch).
pub(crate) fn parse_btime(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

fn sysconf(var: SysconfVar) -> u64 {
    match nix::unistd::sysconf(var) {
        Ok(Some(v)) => u64::try_from(v).unwrap_or(0),
        _ => 0,
    }
}

/// The soft limit on open files; 0 when unlimited or unknown.
fn max_fds() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != RLIM_INFINITY => soft,
        _ => 0,
    }
}

/// Reads the current usage of this process.
pub(crate) fn sample() -> io::Result<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let f = parse_stat(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/stat format"))?;
    let ticks = sysconf(SysconfVar::CLK_TCK).max(1) as f64;
    let page = sysconf(SysconfVar::PAGE_SIZE).max(1);
    let btime = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(parse_btime);
    let open_fds = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(ProcessStats {
        cpu_seconds: f.cpu_ticks as f64 / ticks,
        resident_bytes: f.rss_pages.saturating_mul(page),
        virtual_bytes: f.vsize,
        start_time_seconds: btime.map_or(0.0, |b| b as f64 + f.start_ticks as f64 / ticks),
        // The listing itself holds one descriptor.
        open_fds: open_fds.saturating_sub(1),
        max_fds: max_fds(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_stat_with_odd_command_name() {
        let text = "4242 (fl (o) wd) S 1 4242 4242 0 -1 4194560 2222 0 0 0 150 25 0 0 20 0 1 0 98765 12345678 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(parse_stat(text), Some(StatFields { cpu_ticks: 175, start_ticks: 98765, vsize: 12345678, rss_pages: 2048 }));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn test_parse_btime_and_live_sample() {
        assert_eq!(parse_btime("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000));
        assert_eq!(parse_btime("cpu 1\n"), None);
        let s = sample().unwrap();
        assert!(s.resident_bytes > 0 && s.open_fds > 0);
    }
}

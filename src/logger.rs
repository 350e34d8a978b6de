//! The log sink: stderr (with `<N>` priority prefixes under systemd) or syslog.
//!
//! A small `log::Log` of our own instead of a logging framework (ripgrep's reason: no
//! extra dependency). Also owns [`RateLimit`], used for per-input warnings so that a
//! flood of bad input cannot flood the log.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// stderr with a timestamp (interactive / foreground).
    Stderr,
    /// stderr with `<N>` prefixes that journald turns into priorities.
    Journal,
    /// The local syslog daemon (`/dev/log`), falling back to stderr.
    Syslog,
}

impl Target {
    /// Picks the target: journald when started by systemd with stderr connected to the
    /// journal (`$JOURNAL_STREAM` names stderr's device and inode), stderr when
    /// `foreground` or stderr is a terminal, syslog otherwise.
    pub fn detect(foreground: bool) -> Target {
        if crate::sys::notify::stderr_is_journal() {
            Target::Journal
        } else if foreground || nix::unistd::isatty(std::io::stderr()).unwrap_or(false) {
            Target::Stderr
        } else {
            Target::Syslog
        }
    }
}

type SyslogLogger = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

struct Logger {
    target: Target,
    syslog: Mutex<SyslogSink>,
}

/// A connection to the local syslog daemon that survives a syslog restart.
///
/// The `syslog` crate connects once and then fails every send after the daemon
/// re-creates its socket (a connected datagram socket keeps pointing at the old one).
/// `send` therefore drops a failed connection, reconnects and retries once; while
/// syslog is down it returns false (the caller falls back to stderr) and the next
/// message tries to connect again.
#[derive(Default)]
pub(crate) struct SyslogSink {
    path: Option<PathBuf>,
    conn: Option<SyslogLogger>,
}

impl SyslogSink {
    /// A sink for `path`, or for `/dev/log` (and the other standard places) when `None`.
    /// Does not connect yet.
    pub(crate) fn new(path: Option<PathBuf>) -> SyslogSink {
        SyslogSink { path, conn: None }
    }

    /// Connects if not connected; true when connected.
    pub(crate) fn connect(&mut self) -> bool {
        if self.conn.is_none() {
            let f = syslog::Formatter3164 { facility: syslog::Facility::LOG_DAEMON, hostname: None, process: "flowd".into(), pid: std::process::id() };
            self.conn = match &self.path {
                Some(p) => syslog::unix_custom(f, p).ok(),
                None => syslog::unix(f).ok(),
            };
        }
        self.conn.is_some()
    }

    /// Sends one message at `level`, reconnecting once if the connection is stale.
    /// False when syslog cannot be reached.
    pub(crate) fn send(&mut self, level: Level, msg: &str) -> bool {
        for _attempt in 0..2 {
            if !self.connect() {
                return false;
            }
            let Some(l) = self.conn.as_mut() else { return false };
            let res = match level {
                Level::Error => l.err(msg),
                Level::Warn => l.warning(msg),
                Level::Info => l.info(msg),
                Level::Debug | Level::Trace => l.debug(msg),
            };
            if res.is_ok() {
                return true;
            }
            self.conn = None;
        }
        false
    }
}

fn prefix(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let msg = r.args().to_string();
        if self.target == Target::Syslog {
            if let Ok(mut sink) = self.syslog.lock() {
                if sink.send(r.level(), &msg) {
                    return;
                }
            }
        }
        let mut err = std::io::stderr().lock();
        let _ = match self.target {
            Target::Journal => writeln!(err, "<{}>{}", prefix(r.level()), msg),
            _ => {
                let ts = crate::wire::time::rfc3339(crate::flow::Micros::now());
                writeln!(err, "{} {:<5} {}", &ts[..23], r.level(), msg)
            }
        };
    }

    fn flush(&self) {}
}

/// Installs the logger. Safe to call more than once (later calls only change the level).
pub fn init(target: Target, level: LevelFilter) {
    let mut syslog = SyslogSink::new(None);
    let target = if target == Target::Syslog && !syslog.connect() { Target::Stderr } else { target };
    let _ = log::set_boxed_logger(Box::new(Logger { target, syslog: Mutex::new(syslog) }));
    log::set_max_level(level);
}

/// Lets `burst` events through per `period`, then counts the rest.
#[derive(Debug)]
pub(crate) struct RateLimit {
    burst: u32,
    period: Duration,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

/// What follows a rate-limited log line: ` (N similar messages suppressed)`, or nothing
/// when none were (`N` from [`RateLimit::allow`]).
pub(crate) struct Suppressed(pub(crate) u64);

impl std::fmt::Display for Suppressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 > 0 {
            write!(f, " ({} similar messages suppressed)", self.0)
        } else {
            Ok(())
        }
    }
}

impl RateLimit {
    /// A limiter allowing `burst` messages per `period`.
    pub(crate) fn new(burst: u32, period: Duration) -> RateLimit {
        RateLimit { burst, period, window_start: None, used: 0, suppressed: 0 }
    }

    /// `Some(n)` when a message may be logged now (`n` = messages suppressed since the
    /// last one logged), `None` when it must be suppressed.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) < self.period => {}
            _ => {
                self.window_start = Some(now);
                self.used = 0;
            }
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Once the window in which messages were suppressed is over: how many (taken, so
    /// the next allowed message does not repeat them). Lets a caller log a summary
    /// without waiting for a next message that may never come.
    pub(crate) fn flush(&mut self, now: Instant) -> Option<u64> {
        match self.window_start {
            Some(s) if self.suppressed > 0 && now.saturating_duration_since(s) >= self.period => Some(std::mem::take(&mut self.suppressed)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_suppressed_suffix_only_when_messages_were_suppressed() {
        assert_eq!(Suppressed(0).to_string(), "");
        assert_eq!(Suppressed(3).to_string(), " (3 similar messages suppressed)");
    }

    #[test]
    fn test_syslog_sink_reconnects_after_syslog_restart() {
        use std::os::unix::net::UnixDatagram;
        let dir = std::env::temp_dir().join(format!("flowd-syslog-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
        let recv = |s: &UnixDatagram| {
            let mut buf = [0u8; 1024];
            let n = s.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let mut sink = SyslogSink::new(Some(path.clone()));
        assert!(!sink.send(Level::Info, "nobody listens"), "no syslog: caller falls back to stderr");

        let first = UnixDatagram::bind(&path).unwrap();
        first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(sink.send(Level::Error, "one"));
        let m = recv(&first);
        // LOG_DAEMON (3) * 8 + LOG_ERR (3) = 27.
        assert!(m.starts_with("<27>") && m.contains(&format!("flowd[{}]", std::process::id())) && m.ends_with("one"), "{m}");

        // syslogd restarts: its socket is unlinked and re-created at the same path.
        drop(first);
        std::fs::remove_file(&path).unwrap();
        assert!(!sink.send(Level::Info, "while down"));
        let second = UnixDatagram::bind(&path).unwrap();
        second.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(sink.send(Level::Warn, "two"));
        let m = recv(&second);
        assert!(m.starts_with("<28>") && m.ends_with("two"), "{m}");

        // Restart while connected: the stale connection is detected on send and replaced.
        drop(second);
        std::fs::remove_file(&path).unwrap();
        let third = UnixDatagram::bind(&path).unwrap();
        third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(sink.send(Level::Info, "three"));
        let m = recv(&third);
        assert!(m.starts_with("<30>") && m.ends_with("three"), "{m}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn test_journal_priorities() {
        assert_eq!([Level::Error, Level::Warn, Level::Info, Level::Debug, Level::Trace].map(prefix), [3, 4, 6, 7, 7]);
    }

    #[test]
    fn test_rate_limit_bursts_then_reports_suppressed() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(2, Duration::from_secs(10));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(11)), Some(2));
    }

    #[test]
    fn test_flush_reports_suppressed_once_the_window_is_over() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(1, Duration::from_secs(10));
        assert_eq!(r.flush(t0), None);
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0), None);
        assert_eq!(r.allow(t0), None);
        assert_eq!(r.flush(t0 + Duration::from_secs(5)), None, "window still open");
        assert_eq!(r.flush(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(r.flush(t0 + Duration::from_secs(11)), None);
        assert_eq!(r.allow(t0 + Duration::from_secs(12)), Some(0), "not reported twice");
    }
}

//! systemd integration without libsystemd: the `sd_notify(3)` readiness protocol and the
//! `JOURNAL_STREAM` check.
//!
//! `sd_notify` is one datagram of `KEY=VALUE` lines sent to the `AF_UNIX` socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for a Linux abstract socket). flowd sends
//! `READY=1` once every plugin and backend is up, `RELOADING=1` + `MONOTONIC_USEC=` when a
//! SIGHUP reload starts and `READY=1` when it is done, `STOPPING=1` on shutdown, and
//! `STATUS=` lines that `systemctl status` shows. Without `$NOTIFY_SOCKET` (not run by
//! systemd, or `Type=simple`) every call is a no-op. A failed send is logged once and
//! never stops the daemon: readiness is advisory, the loop is not.
//!
//! This module owns no policy: the daemon decides what to say and when.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::time::{clock_gettime, ClockId};

/// Environment variable naming the notification socket.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Parses a `$NOTIFY_SOCKET` value: `@name` is an abstract socket, `/path` a filesystem one.
/// Anything else (empty, relative path, `vsock:` addresses) is not supported.
pub(crate) fn parse_addr(value: &str) -> io::Result<SocketAddr> {
    if let Some(name) = value.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value)
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unsupported {NOTIFY_SOCKET} address {value:?}")))
    }
}

/// A handle for sending notifications to the service manager.
#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub(crate) fn disabled() -> Notifier {
        Notifier { target: None, warned: AtomicBool::new(false) }
    }

    /// A notifier for `$NOTIFY_SOCKET`, or a disabled one when it is unset. An unusable
    /// value is logged and yields a disabled notifier.
    pub(crate) fn from_env() -> Notifier {
        match std::env::var(NOTIFY_SOCKET) {
            Ok(v) if !v.is_empty() => Notifier::new(&v).unwrap_or_else(|e| {
                log::warn!("{NOTIFY_SOCKET}={v}: {e}; not notifying systemd");
                Notifier::disabled()
            }),
            _ => Notifier::disabled(),
        }
    }

    /// A notifier sending to the socket `addr` (same syntax as `$NOTIFY_SOCKET`).
    pub(crate) fn new(addr: &str) -> io::Result<Notifier> {
        let addr = parse_addr(addr)?;
        let sock = UnixDatagram::unbound()?;
        Ok(Notifier { target: Some((sock, addr)), warned: AtomicBool::new(false) })
    }

    /// True when notifications are actually sent somewhere.
    #[cfg(test)]
    pub(crate) fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines) as one datagram.
    pub(crate) fn send(&self, state: &str) -> io::Result<()> {
        let Some((sock, addr)) = &self.target else { return Ok(()) };
        match sock.send_to_addr(state.as_bytes(), addr) {
            Ok(_) => Ok(()),
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    log::warn!("cannot notify systemd: {e}");
                }
                Err(e)
            }
        }
    }

    /// `READY=1` with a status line: startup (or a reload) is complete.
    pub(crate) fn ready(&self, status: &str) {
        let _ = self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with the current `CLOCK_MONOTONIC` time, as systemd (≥ 253) requires
    /// for reloads; older versions ignore `MONOTONIC_USEC`.
    pub(crate) fn reloading(&self) {
        let _ = self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading configuration", monotonic_usec()));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub(crate) fn stopping(&self, status: &str) {
        let _ = self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// A `STATUS=` line alone.
    #[cfg(test)]
    pub(crate) fn status(&self, status: &str) {
        let _ = self.send(&format!("STATUS={}", one_line(status)));
    }
}

/// Status text must stay on one line: a newline would start a new assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds (0 if the clock cannot be read, which Linux never does).
pub(crate) fn monotonic_usec() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec() as u64 / 1_000),
        Err(_) => 0,
    }
}

/// Parses `$JOURNAL_STREAM` (`<device>:<inode>`, decimal).
pub(crate) fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// True when stderr is the journal stream named by `$JOURNAL_STREAM` (systemd sets it for
/// the service's own stdout/stderr; a child whose stderr was redirected inherits the
/// variable but must not use journal `<N>` prefixes).
pub(crate) fn stderr_is_journal() -> bool {
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM").ok().as_deref().and_then(parse_journal_stream) else {
        return false;
    };
    match nix::sys::stat::fstat(std::io::stderr()) {
        #[allow(clippy::unnecessary_cast, reason = "dev_t and ino_t are not u64 on every target")]
        Ok(st) => st.st_dev as u64 == dev && st.st_ino as u64 == ino,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn test_path_socket_gets_the_protocol_messages() {
        let dir = std::env::temp_dir().join(format!("flowd-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        assert!(n.enabled());

        n.ready("running: plugins [np_api]\nsecond line");
        assert_eq!(recv(&server), "READY=1\nSTATUS=running: plugins [np_api] second line");

        let before = monotonic_usec();
        n.reloading();
        let msg = recv(&server);
        let mut lines = msg.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = lines.next().unwrap().strip_prefix("MONOTONIC_USEC=").unwrap().parse().unwrap();
        assert!(usec >= before && usec <= monotonic_usec(), "{usec} not in [{before}, now]");
        assert_eq!(lines.next(), Some("STATUS=reloading configuration"));

        n.stopping("stopping");
        assert_eq!(recv(&server), "STOPPING=1\nSTATUS=stopping");
        n.status("idle");
        assert_eq!(recv(&server), "STATUS=idle");

        drop(server);
        let _ = std::fs::remove_file(&path);
        assert!(n.send("STATUS=gone").is_err(), "a missing socket is reported");
        n.ready("no panic, no block");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn test_abstract_socket() {
        let name = format!("flowd-test-notify-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.ready("up");
        assert_eq!(recv(&server), "READY=1\nSTATUS=up");
    }

    #[test]
    fn test_disabled_and_bad_addresses() {
        let n = Notifier::disabled();
        assert!(!n.enabled());
        assert!(n.send("READY=1").is_ok());
        assert!(parse_addr("relative/path").is_err());
        assert!(parse_addr("").is_err());
        assert!(parse_addr("vsock:2:1234").is_err());
        assert!(parse_addr("/run/systemd/notify").is_ok());
        assert!(parse_addr("@x").is_ok());
    }

    #[test]
    fn test_journal_stream_parsing() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8:"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
        assert_eq!(parse_journal_stream(""), None);
    }
}

//! Socket activation: the fds systemd hands over (`sd_listen_fds(3)` protocol).
//!
//! With `flowd.socket` (`ListenFIFO=`, `ListenDatagram=`, `ListenStream=`), systemd opens
//! the named pipe, the firefly UDP socket and the metrics listener, keeps them open while
//! flowd restarts, and passes them to flowd as fds 3, 4, … with `LISTEN_PID` (must be our
//! pid: the variables may have leaked from a parent), `LISTEN_FDS` (how many) and
//! `LISTEN_FDNAMES` (`FileDescriptorName=`, colon-separated). Lines written into the pipe
//! while flowd is down wait in the pipe.
//!
//! Each fd is recognised by its type, and by its name where the unit gives one: a FIFO is
//! the pipe (`np_api`), a UDP socket the firefly listener (`firefly`), a listening TCP
//! socket the metrics listener (`metrics`); other names (systemd's default is the unit's
//! name) say nothing. An fd that fits nothing, whose role name contradicts its type, or
//! that repeats a role is logged and closed. The variables are
//! removed from the environment once read, so no child process inherits them.

use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub(crate) const FIRST_FD: RawFd = 3;

/// More than this many fds is not a plausible hand-over (a corrupted variable).
const MAX_FDS: usize = 64;

/// The names (`FileDescriptorName=`) that assign a role.
pub(crate) const ROLES: [&str; 3] = ["np_api", "firefly", "metrics"];

/// What an inherited fd is, by `fstat`/`getsockopt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A named pipe (FIFO).
    Fifo,
    /// A UDP (datagram) socket.
    Udp,
    /// A TCP (stream) socket in the listening state.
    TcpListener,
    /// Anything else (regular file, connected socket, netlink, …).
    Other,
}

impl Kind {
    /// The role name systemd units give this kind (`FileDescriptorName=`).
    pub(crate) fn role(self) -> Option<&'static str> {
        match self {
            Kind::Fifo => Some("np_api"),
            Kind::Udp => Some("firefly"),
            Kind::TcpListener => Some("metrics"),
            Kind::Other => None,
        }
    }
}

/// The fds handed over by systemd, by role.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    /// The named pipe (`ListenFIFO=`).
    pub pipe: Option<OwnedFd>,
    /// The firefly listener (`ListenDatagram=`).
    pub firefly: Option<UdpSocket>,
    /// The metrics listener (`ListenStream=`).
    pub metrics: Option<TcpListener>,
    /// One line per fd that was logged and closed (for the log and for tests).
    pub rejected: Vec<String>,
}

impl Inherited {}

/// How many fds the environment hands to process `pid`, with their names; `None` when the
/// variables are absent, meant for another process, or malformed.
pub(crate) fn parse_env(listen_pid: Option<&str>, listen_fds: Option<&str>, names: Option<&str>, pid: u32) -> Option<(usize, Vec<String>)> {
    if listen_pid?.trim().parse::<u32>().ok()? != pid {
        return None;
    }
    let n = listen_fds?.trim().parse::<usize>().ok().filter(|n| *n <= MAX_FDS)?;
    let mut names: Vec<String> = names.map(|s| s.split(':').map(String::from).collect()).unwrap_or_default();
    // A short or missing list names nothing. Only the role names mean something: systemd
    // names every fd of a unit after the unit (`flowd.socket`) unless told otherwise.
    names.resize(n, String::new());
    for name in names.iter_mut() {
        if !ROLES.contains(&name.as_str()) {
            name.clear();
        }
    }
    Some((n, names))
}

/// The kind of an open fd.
pub(crate) fn classify<F: AsFd>(fd: &F) -> Kind {
    let Ok(st) = nix::sys::stat::fstat(fd.as_fd()) else { return Kind::Other };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFSOCK => {
            let family = getsockname::<SockaddrStorage>(fd.as_fd().as_raw_fd()).ok().and_then(|a| a.family());
            let inet = matches!(family, Some(AddressFamily::Inet | AddressFamily::Inet6));
            match getsockopt(fd, sockopt::SockType) {
                Ok(SockType::Datagram) if inet => Kind::Udp,
                Ok(SockType::Stream) if inet && getsockopt(fd, sockopt::AcceptConn).unwrap_or(false) => Kind::TcpListener,
                _ => Kind::Other,
            }
        }
        _ => Kind::Other,
    }
}

/// Sorts `fds` (with their names) into roles. Pure apart from `classify`.
pub(crate) fn sort(fds: Vec<(OwnedFd, String)>) -> Inherited {
    let mut out = Inherited::default();
    for (i, (fd, name)) in fds.into_iter().enumerate() {
        let kind = classify(&fd);
        let label = if name.is_empty() { format!("fd {}", FIRST_FD as usize + i) } else { format!("fd {} ({name})", FIRST_FD as usize + i) };
        let role = match kind.role() {
            None => {
                out.rejected.push(format!("{label}: not a FIFO, UDP socket or listening TCP socket; closed"));
                continue;
            }
            Some(r) if !name.is_empty() && name != r => {
                out.rejected.push(format!("{label}: named {name:?} but it is a {kind:?} (expected name {r:?}); closed"));
                continue;
            }
            Some(r) => r,
        };
        let taken = match kind {
            Kind::Fifo => out.pipe.is_some(),
            Kind::Udp => out.firefly.is_some(),
            Kind::TcpListener => out.metrics.is_some(),
            Kind::Other => true,
        };
        if taken {
            out.rejected.push(format!("{label}: a second {role} fd; closed"));
            continue;
        }
        match kind {
            Kind::Fifo => out.pipe = Some(fd),
            Kind::Udp => out.firefly = Some(UdpSocket::from(fd)),
            Kind::TcpListener => out.metrics = Some(TcpListener::from(fd)),
            Kind::Other => {}
        }
    }
    out
}

/// Takes the fds systemd passed to this process (none without socket activation) and
/// removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from the environment. Call it
/// once, at startup, before any thread exists.
pub(crate) fn take() -> Inherited {
    let var = |k: &str| std::env::var(k).ok();
    let parsed = parse_env(var("LISTEN_PID").as_deref(), var("LISTEN_FDS").as_deref(), var("LISTEN_FDNAMES").as_deref(), std::process::id());
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    let Some((n, names)) = parsed else { return Inherited::default() };
    let mut fds = Vec::with_capacity(n);
    for (i, name) in names.into_iter().enumerate() {
        let raw = FIRST_FD + i as RawFd;
        // A number that is not an open fd (a wrong LISTEN_FDS) is skipped, never adopted.
        if std::fs::symlink_metadata(format!("/proc/self/fd/{raw}")).is_err() {
            continue;
        }
        // SAFETY: by the sd_listen_fds protocol, fds FIRST_FD..FIRST_FD+n are open, belong
        // to this process (LISTEN_PID matched) and nothing else in flowd refers to them;
        // each is adopted exactly once here (/proc/self/fd above showed it is open).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // systemd passes them without FD_CLOEXEC; helper processes must not inherit them.
        let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        fds.push((fd, name));
    }
    sort(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_env_for_us_only() {
        assert_eq!(parse_env(Some("42"), Some("2"), Some("np_api:metrics"), 42), Some((2, vec!["np_api".into(), "metrics".into()])));
        assert_eq!(parse_env(Some("41"), Some("2"), None, 42), None, "meant for another process");
        assert_eq!(parse_env(None, Some("2"), None, 42), None);
        assert_eq!(parse_env(Some("42"), None, None, 42), None);
        assert_eq!(parse_env(Some("42"), Some("x"), None, 42), None);
        assert_eq!(parse_env(Some("42"), Some("100000"), None, 42), None);
        assert_eq!(parse_env(Some("42"), Some("3"), Some("np_api"), 42), Some((3, vec!["np_api".into(), String::new(), String::new()])));
        assert_eq!(parse_env(Some("42"), Some("2"), Some("flowd.socket:firefly"), 42), Some((2, vec![String::new(), "firefly".into()])));
        assert_eq!(parse_env(Some("42"), Some("0"), None, 42), Some((0, vec![])));
    }

    fn fifo() -> (std::path::PathBuf, OwnedFd) {
        let dir = std::env::temp_dir().join(format!("flowd-lfd-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("pipe");
        let _ = std::fs::remove_file(&p);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
        (dir, OwnedFd::from(f))
    }

    #[test]
    fn test_fds_are_sorted_by_type_and_name() {
        let (dir, pipe) = fifo();
        let udp = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
        let tcp = OwnedFd::from(TcpListener::bind("127.0.0.1:0").unwrap());
        let file = OwnedFd::from(std::fs::File::open("/proc/self/stat").unwrap());
        assert_eq!((classify(&pipe), classify(&udp), classify(&tcp), classify(&file)), (Kind::Fifo, Kind::Udp, Kind::TcpListener, Kind::Other));
        let got = sort(vec![(tcp, "metrics".into()), (file, String::new()), (pipe, String::new()), (udp, "firefly".into())]);
        assert!(got.pipe.is_some() && got.firefly.is_some() && got.metrics.is_some());
        assert_eq!(got.rejected.len(), 1, "{:?}", got.rejected);
        assert!(got.rejected[0].contains("not a FIFO"), "{:?}", got.rejected);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn test_a_name_that_contradicts_the_type_or_a_second_role_is_closed() {
        let (dir, pipe) = fifo();
        let udp = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
        let udp2 = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
        let connected = std::net::TcpStream::connect(TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()).unwrap();
        let got = sort(vec![(pipe, "metrics".into()), (udp, String::new()), (udp2, "firefly".into()), (OwnedFd::from(connected), String::new())]);
        assert!(got.pipe.is_none() && got.metrics.is_none());
        assert!(got.firefly.is_some());
        assert_eq!(got.rejected.len(), 3, "{:?}", got.rejected);
        assert!(got.rejected[0].contains("named \"metrics\""));
        assert!(got.rejected[1].contains("second firefly"));
        let _ = std::fs::remove_dir_all(dir);
    }
}

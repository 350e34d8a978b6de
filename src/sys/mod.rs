//! Thin wrappers over the system calls flowd needs (named pipe, PID file, signals, host).
//!
//! All OS-specific code that is not a plain `std` call lives here. The wrappers use
//! `nix`'s safe API; where `unsafe` is unavoidable it carries a `// SAFETY:` comment.

pub mod bpf;
pub mod listen_fds;
pub mod process;
pub mod udp;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Group, Uid, User};

pub mod netlink;
pub mod notify;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Device and inode of a file: identifies "the same pipe" across renames and re-creation.
pub type FileId = (u64, u64);

/// Creates the FIFO at `path` if missing (an existing FIFO is kept), opens it
/// `O_RDWR|O_NONBLOCK|O_CLOEXEC` (so writers closing never produce EOF), and returns the
/// fd with the pipe's identity. An existing non-FIFO file is an error.
///
/// Nothing here follows a symbolic link or acts on the path after opening: the open is
/// `O_NOFOLLOW`, the opened file must be a FIFO (`fstat`), and mode and owner are set on
/// the fd. So whoever can write to the pipe's directory cannot swap in a link between
/// the checks and make flowd open, chmod or chown another file.
pub fn open_fifo(path: &Path, mode: u32, owner: Option<Uid>, group: Option<Gid>) -> io::Result<(OwnedFd, FileId)> {
    let created = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => false,
        Ok(_) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a named pipe")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // mkfifo never follows a link: a name that appeared meanwhile gives EEXIST.
            nix::unistd::mkfifo(path, Mode::from_bits_truncate(mode)).map_err(errno)?;
            true
        }
        Err(e) => return Err(e),
    };
    let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| match e {
        nix::Error::ELOOP => io::Error::new(io::ErrorKind::AlreadyExists, "is a symbolic link, not a named pipe"),
        e => errno(e),
    })?;
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(errno)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a named pipe"));
    }
    // A larger pipe buffer absorbs writers' bursts (best effort: capped by
    // /proc/sys/fs/pipe-max-size for unprivileged users).
    let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    if created {
        // mkfifo honours the umask; set the configured mode exactly, on what we opened.
        nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(errno)?;
        if owner.is_some() || group.is_some() {
            nix::unistd::fchown(fd.as_fd(), owner, group).map_err(errno)?;
        }
    }
    Ok((fd, (st.st_dev as u64, st.st_ino as u64)))
}

/// Requested capacity of the named pipe's kernel buffer.
pub const PIPE_SIZE: nix::libc::c_int = 1 << 20;

/// Identity of the FIFO now at `path` (`None` if missing or not a FIFO).
pub fn fifo_id(path: &Path) -> Option<FileId> {
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type().is_fifo().then(|| (m.dev(), m.ino()))
}

/// `read(2)` on a raw fd (the pipe), without taking ownership.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd, buf).map_err(errno)
}

/// Resolves a user given as a name or a numeric uid.
pub fn lookup_user(s: &str) -> io::Result<Uid> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    match User::from_name(s).map_err(errno)? {
        Some(u) => Ok(u.uid),
        None => Err(io::Error::new(io::ErrorKind::NotFound, format!("no such user {s:?}"))),
    }
}

/// Resolves a group given as a name or a numeric gid.
pub fn lookup_group(s: &str) -> io::Result<Gid> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(s).map_err(errno)? {
        Some(g) => Ok(g.gid),
        None => Err(io::Error::new(io::ErrorKind::NotFound, format!("no such group {s:?}"))),
    }
}

/// The host name (`gethostname`).
pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default()
}

/// A locked PID file; the lock is held (and the file removed) until drop.
#[derive(Debug)]
pub struct PidFile {
    path: std::path::PathBuf,
    _lock: Flock<File>,
}

impl PidFile {
    /// Creates or takes over `path`, locks it, and writes `<pid>\n`. Fails if another
    /// live process holds the lock (its PID is in the message). The path must be a
    /// regular file or absent: a symbolic link is refused (`O_NOFOLLOW`), so a link
    /// planted in the PID file's directory cannot make flowd truncate another file.
    /// If the PID cannot be written (disk full), the file is removed again.
    pub fn create(path: &Path) -> io::Result<PidFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .mode(0o644)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => io::Error::new(io::ErrorKind::InvalidInput, "is a symbolic link; refusing to follow it"),
                _ => e,
            })?;
        if !file.metadata()?.file_type().is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "is not a regular file"));
        }
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::Error::EWOULDBLOCK)) => {
                let other = std::fs::read_to_string(path).unwrap_or_default();
                return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("another flowd (pid {}) holds it", other.trim())));
            }
            Err((_, e)) => return Err(errno(e)),
        };
        let written = lock.set_len(0).and_then(|()| writeln!(&mut *lock, "{}", std::process::id())).and_then(|()| lock.flush());
        if let Err(e) = written {
            // We hold the lock, so the file is ours (or a stale one): do not leave it empty.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(PidFile { path: path.to_path_buf(), _lock: lock })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The signals the daemon handles through its signalfd.
pub const HANDLED_SIGNALS: [Signal; 4] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR1];

/// Blocks the handled signals for this thread and returns a non-blocking signalfd for them.
pub fn signal_fd() -> io::Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in HANDLED_SIGNALS {
        set.add(s);
    }
    set.thread_block().map_err(errno)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(errno)
}

/// Binds a non-blocking, close-on-exec UDP socket to `addr` with a receive buffer of
/// about `rcvbuf` bytes. On the IPv6 wildcard `::` IPV6_V6ONLY is cleared, so IPv4
/// datagrams arrive too (from IPv4-mapped addresses) whatever the system default is.
pub fn udp_listener(addr: std::net::SocketAddr, rcvbuf: usize) -> io::Result<std::net::UdpSocket> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Datagram, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None).map_err(errno)?;
    if addr.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false).map_err(errno)?;
    }
    // A bigger buffer absorbs bursts; failing to get it is harmless.
    let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &rcvbuf);
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(errno)?;
    Ok(std::net::UdpSocket::from(fd))
}

/// Every address configured on this host's interfaces (loopback included).
pub fn local_addresses() -> io::Result<Vec<std::net::IpAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(errno)? {
        let Some(a) = ifa.address else { continue };
        if let Some(v4) = a.as_sockaddr_in() {
            out.push(std::net::IpAddr::V4(v4.ip()));
        } else if let Some(v6) = a.as_sockaddr_in6() {
            out.push(std::net::IpAddr::V6(v6.ip()));
        }
    }
    Ok(out)
}

/// Ignores SIGPIPE (writes to closed sockets return EPIPE instead of killing flowd).
pub fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE has no preconditions and no handler code runs.
    // (nix marks every `signal`/`sigaction` unsafe because a handler could be unsound;
    // there is no safe API for SIG_IGN, hence the one unsafe call here.)
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fifo_created_with_exact_mode_and_reopened() {
        let dir = std::env::temp_dir().join(format!("flowd-sys-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("np");
        let _ = std::fs::remove_file(&p);
        let (_fd, id) = open_fifo(&p, 0o620, None, None).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o777, 0o620);
        assert_eq!(fifo_id(&p), Some(id));
        let (_fd2, id2) = open_fifo(&p, 0o600, None, None).unwrap();
        assert_eq!(id, id2, "an existing FIFO is reused");
        let reg = dir.join("regular");
        std::fs::write(&reg, b"x").unwrap();
        assert!(open_fifo(&reg, 0o600, None, None).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn test_pid_file_is_exclusive_and_removed() {
        let p = std::env::temp_dir().join(format!("flowd-pid-{}", std::process::id()));
        let a = PidFile::create(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{}\n", std::process::id()));
        // flock is per open file description, so a second open in this process conflicts.
        let e = PidFile::create(&p).unwrap_err();
        assert!(e.to_string().contains("another flowd"), "{e}");
        drop(a);
        assert!(!p.exists());
    }

    #[test]
    fn test_links_at_the_pipe_or_pid_path_are_refused_and_their_target_untouched() {
        let dir = std::env::temp_dir().join(format!("flowd-sys-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious\n").unwrap();
        std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let pipe = dir.join("np");
        std::os::unix::fs::symlink(&victim, &pipe).unwrap();
        let e = open_fifo(&pipe, 0o666, None, None).unwrap_err();
        assert!(e.to_string().contains("not a named pipe"), "{e}");
        // A link to a FIFO is refused as well (the open does not follow it).
        let real = dir.join("real-fifo");
        nix::unistd::mkfifo(&real, Mode::from_bits_truncate(0o600)).unwrap();
        let via = dir.join("via-link");
        std::os::unix::fs::symlink(&real, &via).unwrap();
        assert!(open_fifo(&via, 0o666, None, None).is_err());
        let pid = dir.join("flowd.pid");
        std::os::unix::fs::symlink(&victim, &pid).unwrap();
        let e = PidFile::create(&pid).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
        assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o777, 0o600);
        assert!(PidFile::create(&dir).is_err(), "a directory is not a PID file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

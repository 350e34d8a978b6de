//! Thin wrappers over the system calls flowd needs (named pipe, PID file, signals, host).
//!
//! All OS-specific code that is not a plain `std` call lives here. The wrappers use
//! `nix`'s safe API; where `unsafe` is unavoidable it carries a `// SAFETY:` comment.

pub(crate) mod bpf;
pub(crate) mod listen_fds;
pub(crate) mod process;
pub(crate) mod udp;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Group, Uid, User};

pub(crate) mod netlink;
pub(crate) mod notify;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Device and inode of a file: identifies "the same pipe" across renames and re-creation.
pub(crate) type FileId = (u64, u64);

/// The named pipe, opened.
#[derive(Debug)]
pub(crate) struct Fifo {
    /// Open `O_RDWR|O_NONBLOCK` (writers closing never produce EOF).
    pub fd: OwnedFd,
    /// Its identity, to notice when the path is deleted or replaced.
    pub id: FileId,
    /// A regular file that stood at the path and was moved here (a producer such as
    /// StoRM WebDAV opens the path with `O_CREAT` while flowd is down): its lines are
    /// flowd's to read and report.
    pub aside: Option<PathBuf>,
}

/// Why the path cannot become the pipe (never followed, never deleted).
fn refused(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::AlreadyExists, format!("is {what}, not a named pipe; flowd neither uses nor removes it"))
}

/// Puts a FIFO at `path` and opens it `O_RDWR|O_NONBLOCK|O_CLOEXEC`:
/// - an existing FIFO is reused (a writer that kept it open, such as nginx, goes on);
/// - a regular file is renamed aside atomically (`Fifo::aside`) and a FIFO created;
/// - a symbolic link, directory, socket or device is refused;
/// - a missing parent directory is created (0755).
///
/// Mode, owner and group are then set to the configured ones on the opened fd, also for
/// a reused FIFO. Nothing here follows a symbolic link or acts on the path after opening:
/// the open is `O_NOFOLLOW` and the opened file must be a FIFO (`fstat`), so whoever can
/// write to the pipe's directory cannot swap in a link and make flowd open, chmod or
/// chown another file.
pub(crate) fn open_fifo(path: &Path, mode: u32, owner: Option<Uid>, group: Option<Gid>) -> io::Result<Fifo> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    let mut aside = None;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(m) if m.file_type().is_file() => {
            let to = aside_name(path);
            // rename(2) is atomic: a producer's next open(O_CREAT) creates a new file or
            // finds the FIFO, and nothing it wrote before is lost.
            std::fs::rename(path, &to)?;
            aside = Some(to);
            mkfifo(path, mode)?;
        }
        Ok(m) if m.file_type().is_symlink() => return Err(refused("a symbolic link")),
        Ok(m) if m.is_dir() => return Err(refused("a directory")),
        Ok(m) if m.file_type().is_socket() => return Err(refused("a socket")),
        Ok(_) => return Err(refused("a device")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => mkfifo(path, mode)?,
        Err(e) => return Err(e),
    }
    let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| match e {
        nix::Error::ELOOP => refused("a symbolic link"),
        e => errno(e),
    })?;
    let fifo = adopt_fifo(fd, mode, owner, group)?;
    Ok(Fifo { aside, ..fifo })
}

/// Takes an already open FIFO (systemd's `ListenFIFO=`, or one just opened): checks it is
/// a FIFO, makes it non-blocking, enlarges its buffer and sets mode, owner and group.
pub(crate) fn adopt_fifo(fd: OwnedFd, mode: u32, owner: Option<Uid>, group: Option<Gid>) -> io::Result<Fifo> {
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(errno)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(refused("not a FIFO"));
    }
    let fl = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(errno)?;
    let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(fl)).map_err(errno)?;
    // A larger pipe buffer absorbs writers' bursts (best effort: capped by
    // /proc/sys/fs/pipe-max-size for unprivileged users).
    let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    // mkfifo honours the umask and an old FIFO may have other bits: set them exactly.
    if st.st_mode & 0o7777 != mode {
        nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(errno)?;
    }
    let (want_uid, want_gid) = (owner.filter(|u| u.as_raw() != st.st_uid), group.filter(|g| g.as_raw() != st.st_gid));
    if want_uid.is_some() || want_gid.is_some() {
        nix::unistd::fchown(fd.as_fd(), want_uid, want_gid).map_err(errno)?;
    }
    Ok(Fifo { fd, id: (st.st_dev as u64, st.st_ino as u64), aside: None })
}

/// Mode, uid and gid of an open file.
pub(crate) fn owner_and_mode<F: AsFd>(fd: &F) -> io::Result<(u32, u32, u32)> {
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(errno)?;
    Ok((st.st_mode & 0o7777, st.st_uid, st.st_gid))
}

fn mkfifo(path: &Path, mode: u32) -> io::Result<()> {
    // mkfifo never follows a link: a name that appeared meanwhile gives EEXIST.
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(mode)).map_err(errno)
}

/// `PATH.recovered-SECONDS-NANOS` next to `path` (same directory, so the rename is atomic).
fn aside_name(path: &Path) -> PathBuf {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".recovered-{}-{:09}", t.as_secs(), t.subsec_nanos()));
    path.with_file_name(name)
}

/// Requested capacity of the named pipe's kernel buffer.
pub(crate) const PIPE_SIZE: nix::libc::c_int = 1 << 20;

/// Identity of an open file.
pub(crate) fn file_id<F: AsFd>(fd: &F) -> io::Result<FileId> {
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(errno)?;
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// Identity of the FIFO now at `path` (`None` if missing or not a FIFO).
pub(crate) fn fifo_id(path: &Path) -> Option<FileId> {
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type().is_fifo().then(|| (m.dev(), m.ino()))
}

/// `read(2)` on a raw fd (the pipe), without taking ownership.
pub(crate) fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd, buf).map_err(errno)
}

/// Resolves a user given as a name or a numeric uid.
pub(crate) fn lookup_user(s: &str) -> io::Result<Uid> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    match User::from_name(s).map_err(errno)? {
        Some(u) => Ok(u.uid),
        None => Err(io::Error::new(io::ErrorKind::NotFound, format!("no such user {s:?}"))),
    }
}

/// Resolves a group given as a name or a numeric gid.
pub(crate) fn lookup_group(s: &str) -> io::Result<Gid> {
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
pub(crate) struct PidFile {
    path: std::path::PathBuf,
    _lock: Flock<File>,
}

impl PidFile {
    /// Creates or takes over `path`, locks it, and writes `<pid>\n`. Fails if another
    /// live process holds the lock (its PID is in the message). The path must be a
    /// regular file or absent: a symbolic link is refused (`O_NOFOLLOW`), so a link
    /// planted in the PID file's directory cannot make flowd truncate another file.
    /// If the PID cannot be written (disk full), the file is removed again.
    pub(crate) fn create(path: &Path) -> io::Result<PidFile> {
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
pub(crate) const HANDLED_SIGNALS: [Signal; 4] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR1];

/// Blocks the handled signals for this thread and returns a non-blocking signalfd for them.
pub(crate) fn signal_fd() -> io::Result<SignalFd> {
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
pub(crate) fn udp_listener(addr: std::net::SocketAddr, rcvbuf: usize) -> io::Result<std::net::UdpSocket> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Datagram, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None).map_err(errno)?;
    if addr.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false).map_err(errno)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(errno)?;
    let sock = std::net::UdpSocket::from(fd);
    set_rcvbuf(&sock, rcvbuf);
    Ok(sock)
}

/// Asks for a bigger receive buffer (absorbs bursts); failing to get it is harmless.
pub(crate) fn set_rcvbuf<F: AsFd>(sock: &F, bytes: usize) {
    let _ = nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::RcvBuf, &bytes);
}

/// True when a socket bound to `bound` serves the configured `want`: same port, and the
/// same address, where `[::]` and `0.0.0.0` stand for each other (systemd binds
/// `ListenDatagram=10514` to `[::]` with IPV6_V6ONLY off, which also takes IPv4).
pub(crate) fn same_listen_address(bound: std::net::SocketAddr, want: std::net::SocketAddr) -> bool {
    bound.port() == want.port() && (bound.ip() == want.ip() || (bound.ip().is_unspecified() && want.ip().is_unspecified()))
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

/// The host name of `ip` from the system resolver (reverse DNS, `/etc/hosts`), lower
/// case without a trailing dot; `Ok(None)` when it has none. Blocks for as long as the
/// resolver takes (DNS timeouts): call it on a helper thread only.
pub(crate) fn reverse_name(ip: std::net::IpAddr) -> io::Result<Option<String>> {
    use nix::sys::socket::{SockaddrLike, SockaddrStorage};
    let sa = SockaddrStorage::from(std::net::SocketAddr::new(ip, 0));
    let mut host = [0 as libc::c_char; 1025];
    // SAFETY: `sa` is an initialised sockaddr of `sa.len()` bytes that outlives the call;
    // `host` is a writable buffer of exactly the length passed, which getnameinfo
    // NUL-terminates on success; no service name is asked for (null buffer, length 0).
    let rc = unsafe { libc::getnameinfo(sa.as_ptr(), sa.len(), host.as_mut_ptr(), host.len() as libc::socklen_t, std::ptr::null_mut(), 0, libc::NI_NAMEREQD) };
    match rc {
        0 => {
            // SAFETY: on success `host` holds a NUL-terminated string within its bounds.
            let name = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) };
            let name = name.to_string_lossy().trim_end_matches('.').to_ascii_lowercase();
            Ok((!name.is_empty()).then_some(name))
        }
        libc::EAI_NONAME => Ok(None),
        libc::EAI_AGAIN => Err(io::Error::new(io::ErrorKind::TimedOut, "the name server did not answer")),
        libc::EAI_SYSTEM => Err(io::Error::last_os_error()),
        // SAFETY: gai_strerror returns a pointer to a static NUL-terminated message.
        other => Err(io::Error::other(unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(other)) }.to_string_lossy().into_owned())),
    }
}

/// Ignores SIGPIPE (writes to closed sockets return EPIPE instead of killing flowd).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE has no preconditions and no handler code runs.
    // (nix marks every `signal`/`sigaction` unsafe because a handler could be unsound;
    // there is no safe API for SIG_IGN, hence the one unsafe call here.)
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reverse_name_of_loopback() {
        // /etc/hosts names 127.0.0.1 on every system flowd runs on.
        let name = reverse_name("127.0.0.1".parse().unwrap()).unwrap();
        assert!(name.as_deref().is_some_and(|n| !n.is_empty() && n == n.to_ascii_lowercase()), "{name:?}");
    }

    #[test]
    fn test_fifo_created_with_exact_mode_and_reopened() {
        let dir = std::env::temp_dir().join(format!("flowd-sys-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("np");
        let _ = std::fs::remove_file(&p);
        let first = open_fifo(&p, 0o620, None, None).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o777, 0o620);
        assert_eq!(fifo_id(&p), Some(first.id));
        let again = open_fifo(&p, 0o600, None, None).unwrap();
        assert_eq!(first.id, again.id, "an existing FIFO is reused");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600, "and its mode set to the configured one");
        assert!(again.aside.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn test_regular_file_is_moved_aside_and_parent_created() {
        let dir = std::env::temp_dir().join(format!("flowd-sys-aside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = dir.join("sub/np");
        let f = open_fifo(&p, 0o660, None, None).unwrap();
        assert!(fifo_id(&p).is_some(), "parent directory created, FIFO in place");
        assert_eq!(std::fs::metadata(dir.join("sub")).unwrap().mode() & 0o777, 0o755);
        drop(f);
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"start tcp 192.0.2.1 1 192.0.2.2 2 1 1\n").unwrap();
        let f = open_fifo(&p, 0o660, None, None).unwrap();
        let aside = f.aside.expect("the regular file is moved aside");
        assert_eq!(aside.parent(), p.parent());
        assert!(aside.file_name().unwrap().to_string_lossy().starts_with("np.recovered-"));
        assert_eq!(std::fs::read(&aside).unwrap(), b"start tcp 192.0.2.1 1 192.0.2.2 2 1 1\n");
        assert_eq!(fifo_id(&p), Some(f.id));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn test_directory_socket_and_device_are_refused_and_left_alone() {
        let dir = std::env::temp_dir().join(format!("flowd-sys-refuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("d")).unwrap();
        let e = open_fifo(&dir.join("d"), 0o660, None, None).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert!(dir.join("d").is_dir());
        let _sock = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        let e = open_fifo(&dir.join("s"), 0o660, None, None).unwrap_err();
        assert!(e.to_string().contains("is a socket"), "{e}");
        assert!(std::fs::symlink_metadata(dir.join("s")).unwrap().file_type().is_socket());
        let e = open_fifo(Path::new("/dev/null"), 0o660, None, None).unwrap_err();
        assert!(e.to_string().contains("is a device"), "{e}");
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

//! A non-blocking NETLINK_SOCK_DIAG socket, and a one-shot blocking dump with a deadline.
//!
//! [`DiagSocket`] is what the netlink scanner registers in the loop (`SourceFd`): it
//! sends dump requests and receives reply datagrams without ever blocking. The kernel
//! produces the next part of a dump while we `recv` the previous one, so the reader
//! drains until `WouldBlock` and parses each datagram with `wire::sock_diag::parse`.
//! [`dump_blocking`] is for callers outside the loop's state machines (the Prometheus
//! backend's per-scrape dump): it waits with `poll(2)` up to a deadline, never longer,
//! and hands sockets over one by one, so a dump of 20,000 sockets is never collected.
//! Everything goes through nix's safe wrappers: no `unsafe` here.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

use crate::wire::sock_diag::{self, Conn, DiagError, Family, Filter};

/// Receive buffer for one reply datagram (the kernel sends at most ~32 KiB per message batch).
pub const RECV_BUF: usize = 64 * 1024;
/// Socket receive buffer requested from the kernel.
const SO_RCVBUF_BYTES: usize = 1 << 20;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A non-blocking, close-on-exec NETLINK_SOCK_DIAG socket bound to the kernel.
#[derive(Debug)]
pub struct DiagSocket {
    fd: OwnedFd,
}

impl DiagSocket {
    /// Opens and binds the socket (non-blocking).
    pub fn open() -> io::Result<DiagSocket> {
        let fd = socket::socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkSockDiag)
            .map_err(errno)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(errno)?;
        // A bigger buffer only reduces wake-ups; failing to get it is harmless.
        let _ = socket::setsockopt(&fd, socket::sockopt::RcvBuf, &SO_RCVBUF_BYTES);
        Ok(DiagSocket { fd })
    }

    /// Sends one dump request (non-blocking; a full socket buffer is `WouldBlock`).
    pub fn send(&self, request: &[u8]) -> io::Result<()> {
        loop {
            match socket::sendto(self.fd.as_raw_fd(), request, &NetlinkAddr::new(0, 0), MsgFlags::empty()) {
                Ok(n) if n == request.len() => return Ok(()),
                Ok(_) => return Err(io::Error::new(io::ErrorKind::WriteZero, "short netlink send")),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(errno(e)),
            }
        }
    }

    /// Receives one reply datagram into `buf`. A datagram larger than `buf` is an
    /// `InvalidData` error (it would have been cut). `WouldBlock` when nothing is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT) {
                Ok(n) if n > buf.len() => return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink datagram larger than the buffer")),
                Ok(n) => return Ok(n),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(errno(e)),
            }
        }
    }

    /// Discards every queued datagram (left over from an abandoned dump).
    pub fn drain(&self, buf: &mut [u8]) {
        while let Ok(n) = self.recv(buf) {
            if n == 0 {
                break;
            }
        }
    }
}

impl AsRawFd for DiagSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for DiagSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Why a blocking dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// A socket call failed.
    #[error("sock_diag {op} failed: {source}")]
    Io {
        /// Which call (`socket`, `send`, `recv`, `poll`).
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The reply was malformed or the kernel reported an error.
    #[error("sock_diag {family:?} dump: {source}")]
    Reply {
        /// The family being dumped.
        family: Family,
        /// What went wrong.
        #[source]
        source: DiagError,
    },
    /// The dump did not finish before the deadline.
    #[error("sock_diag dump did not finish within {0:?}")]
    Timeout(Duration),
}

/// Dumps the TCP sockets of `families` matching `filter`, waiting at most `timeout` in
/// all, handing each socket to `each` as its reply is parsed (nothing is collected).
/// `next(family)` is asked before each family's dump and may skip it. On an error, `each`
/// may already have seen part of the dump.
pub fn dump_blocking(
    filter: Filter,
    families: &[Family],
    timeout: Duration,
    mut next: impl FnMut(Family) -> bool,
    mut each: impl FnMut(Conn),
) -> Result<(), DumpError> {
    let deadline = Instant::now() + timeout;
    let sock = DiagSocket::open().map_err(|source| DumpError::Io { op: "socket", source })?;
    let mut buf = vec![0u8; RECV_BUF];
    for (seq, &family) in (1u32..).zip(families) {
        if !next(family) {
            continue;
        }
        sock.send(&sock_diag::request(family, filter, seq)).map_err(|source| DumpError::Io { op: "send", source })?;
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let p = sock_diag::parse(&buf[..n], seq, &mut each).map_err(|source| DumpError::Reply { family, source })?;
                    if p.done {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_readable(&sock, deadline, timeout)?,
                Err(source) => return Err(DumpError::Io { op: "recv", source }),
            }
        }
    }
    Ok(())
}

fn wait_readable(sock: &DiagSocket, deadline: Instant, timeout: Duration) -> Result<(), DumpError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DumpError::Timeout(timeout));
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(DumpError::Io { op: "poll", source: errno(e) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn test_blocking_dump_sees_a_loopback_connection_with_tcp_info() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let mut conns = Vec::new();
        dump_blocking(Filter::established(true), &Family::BOTH, Duration::from_secs(5), |_| true, |c| conns.push(c)).unwrap();
        let mine = conns.iter().find(|x| x.src == c.local_addr().unwrap() && x.dst == s.local_addr().unwrap()).expect("client side in dump");
        assert_eq!(mine.state, sock_diag::state::ESTABLISHED);
        assert!(mine.tcp_info.is_some_and(|t| t.rtt().is_some()));
        assert!(conns.iter().all(|x| x.state == sock_diag::state::ESTABLISHED), "the kernel filters by state");
        assert!(!conns.iter().any(|x| x.src == l.local_addr().unwrap() && x.dst.port() == 0), "no listeners");
    }
}

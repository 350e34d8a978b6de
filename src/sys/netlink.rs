//! A non-blocking NETLINK_SOCK_DIAG socket: the system calls under `enrich::dump`.
//!
//! [`DiagSocket`] sends dump requests and receives reply datagrams without ever
//! blocking; the loop registers it (`SourceFd`) and the kernel produces the next part of
//! a dump while the previous one is read. [`DiagSocket::wait_readable`] is the one
//! blocking call, for the dump machine's blocking driver (a `/metrics` scrape), always
//! with a timeout. What to send and how to read the replies is `enrich::dump`'s business.
//! Everything goes through nix's safe wrappers: no `unsafe` here.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

/// Receive buffer for one reply datagram (the kernel sends at most ~32 KiB per message batch).
pub(crate) const RECV_BUF: usize = 64 * 1024;
/// Socket receive buffer requested from the kernel.
const SO_RCVBUF_BYTES: usize = 1 << 20;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A non-blocking, close-on-exec NETLINK_SOCK_DIAG socket bound to the kernel.
#[derive(Debug)]
pub(crate) struct DiagSocket {
    fd: OwnedFd,
}

impl DiagSocket {
    /// Opens and binds the socket (non-blocking).
    pub(crate) fn open() -> io::Result<DiagSocket> {
        let fd = socket::socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkSockDiag)
            .map_err(errno)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(errno)?;
        // A bigger buffer only reduces wake-ups; failing to get it is harmless.
        let _ = socket::setsockopt(&fd, socket::sockopt::RcvBuf, &SO_RCVBUF_BYTES);
        Ok(DiagSocket { fd })
    }

    /// Sends one dump request (non-blocking; a full socket buffer is `WouldBlock`).
    pub(crate) fn send(&self, request: &[u8]) -> io::Result<()> {
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
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT) {
                Ok(n) if n > buf.len() => return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink datagram larger than the buffer")),
                Ok(n) => return Ok(n),
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(errno(e)),
            }
        }
    }

    /// Waits up to `timeout` (at most about a minute per call) until a datagram is
    /// queued. `Ok(false)` when the time ran out; an interrupted wait counts as such.
    pub(crate) fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let ms = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => Ok(n > 0),
            Err(nix::Error::EINTR) => Ok(false),
            Err(e) => Err(errno(e)),
        }
    }

    /// Discards every queued datagram (left over from an abandoned dump).
    pub(crate) fn drain(&self, buf: &mut [u8]) {
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

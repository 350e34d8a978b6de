//! Batched UDP: `sendmmsg(2)` and `recvmmsg(2)`, many datagrams per system call.
//!
//! The udp_firefly backend queues the datagrams of a loop turn and sends them here at
//! the end of the turn; the firefly listener receives a batch at a time and forwards
//! the valid ones as received. Sockets are non-blocking; the result says, per datagram,
//! whether it went out, so failures are counted exactly.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage};

/// A non-blocking, unconnected UDP socket to send from, bound to `bind`.
pub(crate) fn sender(bind: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(bind)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A `host[:port]` receiver (`default_port` when it names none) resolved to its first
/// address. Resolving may block on DNS: for startup only.
pub(crate) fn resolve(dst: &str, default_port: u16) -> io::Result<SocketAddr> {
    let (host, port) = crate::netaddr::split_host_port(dst, default_port).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    (host.as_str(), port).to_socket_addrs()?.next().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

/// At most this many datagrams per `sendmmsg` call (the kernel's UIO_MAXIOV is 1024).
pub(crate) const BATCH: usize = 64;

/// Sends `msgs` (destination, payload) on `sock`, in order. Calls `done(i, result)` once
/// per message. Never blocks (the socket is non-blocking) and never retries a failure.
pub(crate) fn send_batch<S: AsRawFd>(sock: &S, msgs: &[(SocketAddr, &[u8])], mut done: impl FnMut(usize, io::Result<()>)) {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH.min(msgs.len()), None);
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let mut next = 0;
    while next < msgs.len() {
        let chunk = &msgs[next..msgs.len().min(next + BATCH)];
        let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(_, p)| [IoSlice::new(p)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = chunk.iter().map(|(a, _)| Some(SockaddrStorage::from(*a))).collect();
        match sendmmsg(sock.as_raw_fd(), &mut headers, &iovs, &addrs, no_cmsgs, MsgFlags::MSG_DONTWAIT) {
            Err(Errno::EINTR) => continue,
            Err(e) => {
                // The first message of the chunk failed: report it and go on with the next.
                done(next, Err(io::Error::from(e)));
                next += 1;
            }
            Ok(sent) => {
                let n = sent.count();
                for i in 0..n {
                    done(next + i, Ok(()));
                }
                if n == 0 {
                    done(next, Err(io::Error::new(io::ErrorKind::WriteZero, "sendmmsg sent nothing")));
                    next += 1;
                } else {
                    next += n;
                }
            }
        }
    }
}

/// One datagram received by [`recv_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes received (at most the slot size).
    pub len: usize,
    /// The sender, if the kernel reported one.
    pub from: Option<SocketAddr>,
    /// The datagram was longer than its slot (`MSG_TRUNC`): the rest is lost.
    pub truncated: bool,
}

fn std_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
        (Some(v4), _) => Some(SocketAddr::from(*v4)),
        (_, Some(v6)) => Some(SocketAddr::from(*v6)),
        _ => None,
    }
}

/// Receives, with one `recvmmsg(2)` call, up to `bufs.len() / slot` datagrams into
/// consecutive `slot`-byte slots of `bufs` (datagram i is `bufs[i * slot..][..out[i].len]`),
/// replacing `out`. Never blocks: `WouldBlock` when nothing is waiting (and `Interrupted`
/// after a signal: call again).
pub fn recv_batch<S: AsRawFd>(sock: &S, bufs: &mut [u8], slot: usize, out: &mut Vec<Datagram>) -> io::Result<()> {
    out.clear();
    let n = bufs.len() / slot.max(1);
    if n == 0 {
        return Ok(());
    }
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(n, None);
    let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs.chunks_exact_mut(slot).map(|c| [IoSliceMut::new(c)]).collect();
    let got = recvmmsg(sock.as_raw_fd(), &mut headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None).map_err(io::Error::from)?;
    out.extend(got.map(|m| Datagram {
        len: m.bytes,
        from: m.address.as_ref().filter(|a| a.len() > 0).and_then(std_addr),
        truncated: m.flags.contains(MsgFlags::MSG_TRUNC),
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn test_batch_larger_than_one_call_arrives_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let payloads: Vec<String> = (0..150).map(|i| format!("msg {i}")).collect();
        let msgs: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, p.as_bytes())).collect();
        let mut ok = 0;
        send_batch(&tx, &msgs, |_, r| ok += usize::from(r.is_ok()));
        assert_eq!(ok, 150);
        let mut buf = [0u8; 64];
        for i in 0..150 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], format!("msg {i}").as_bytes());
        }
    }

    #[test]
    fn test_failures_are_reported_per_message() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_nonblocking(true).unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let good = rx.local_addr().unwrap();
        // An IPv6 destination on an IPv4 socket fails with EAFNOSUPPORT/EINVAL.
        let bad: SocketAddr = "[::1]:9".parse().unwrap();
        let msgs: Vec<(SocketAddr, &[u8])> = vec![(good, b"a"), (bad, b"b"), (good, b"c")];
        let mut res = vec![];
        send_batch(&tx, &msgs, |i, r| res.push((i, r.is_ok())));
        assert_eq!(res, vec![(0, true), (1, false), (2, true)]);
    }

    #[test]
    fn test_recv_batch_reads_many_with_senders_and_flags_truncation() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut bufs = vec![0u8; 4 * 16];
        let mut out = Vec::new();
        assert_eq!(recv_batch(&rx, &mut bufs, 16, &mut out).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        for p in [&b"one"[..], b"two", b"a datagram longer than sixteen bytes", b"four", b"five"] {
            tx.send_to(p, rx.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        recv_batch(&rx, &mut bufs, 16, &mut out).unwrap();
        assert_eq!(out.len(), 4, "one call fills every slot");
        assert!(out.iter().all(|d| d.from == Some(tx.local_addr().unwrap())));
        assert_eq!(&bufs[16..16 + out[1].len], b"two");
        assert_eq!((out[2].len, out[2].truncated, out[1].truncated), (16, true, false));
        recv_batch(&rx, &mut bufs, 16, &mut out).unwrap();
        assert_eq!((out.len(), &bufs[..out[0].len]), (1, &b"five"[..]));
    }
}

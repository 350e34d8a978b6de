//! Batched UDP sends with `sendmmsg(2)`: many datagrams, one system call.
//!
//! The udp_firefly backend queues the datagrams of a loop turn and sends them here at
//! the end of the turn. Sockets are non-blocking; the result says, per datagram, whether
//! it went out, so failures are counted exactly.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// At most this many datagrams per `sendmmsg` call (the kernel's UIO_MAXIOV is 1024).
pub const BATCH: usize = 64;

fn sockaddr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage, which is suitably aligned for it.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            (ss, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage, which is suitably aligned for it.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// Sends `msgs` (destination, payload) on `sock`, in order. Calls `done(i, result)` once
/// per message. Never blocks (the socket is non-blocking) and never retries a failure.
pub fn send_batch<S: AsRawFd>(sock: &S, msgs: &[(SocketAddr, &[u8])], mut done: impl FnMut(usize, io::Result<()>)) {
    let mut next = 0;
    while next < msgs.len() {
        let chunk = &msgs[next..msgs.len().min(next + BATCH)];
        let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> = chunk.iter().map(|(a, _)| sockaddr(a)).collect();
        let mut iovs: Vec<libc::iovec> = chunk.iter().map(|(_, p)| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() }).collect();
        let mut hdrs: Vec<libc::mmsghdr> = addrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .map(|((ss, len), iov)| {
                // SAFETY: msghdr is plain old data; all-zero is valid (no control data, no flags).
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_name = ss as *mut _ as *mut libc::c_void;
                h.msg_namelen = *len;
                h.msg_iov = iov as *mut libc::iovec;
                h.msg_iovlen = 1;
                libc::mmsghdr { msg_hdr: h, msg_len: 0 }
            })
            .collect();
        // SAFETY: `hdrs` holds `chunk.len()` valid mmsghdr entries whose name/iov pointers
        // point into `addrs`, `iovs` and the caller's payloads, all alive for this call.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), hdrs.len() as libc::c_uint, libc::MSG_DONTWAIT as _) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first message of the chunk failed: report it and go on with the next.
            done(next, Err(e));
            next += 1;
        } else {
            let n = n as usize;
            for i in 0..n {
                done(next + i, Ok(()));
            }
            next += n.max(if n == 0 { 1 } else { 0 });
            if n == 0 {
                done(next - 1, Err(io::Error::new(io::ErrorKind::WriteZero, "sendmmsg sent nothing")));
            }
        }
    }
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
}

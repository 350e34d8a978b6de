//! The blocking parts of discovery, kept off the loop thread: DNS resolution of STUN
//! server names and the HTTP "what is my IP" fallback, each on a short-lived thread that
//! sends its result through a channel and wakes the loop (as `daemon::refresh` does).
//! Also the kernel's choice of source address towards a destination (no packet sent).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Duration;

use mio::Waker;

use crate::netaddr::split_host_port;

/// Default STUN port (RFC 8489).
pub(crate) const STUN_PORT: u16 = 3478;

/// Resolution results: (server index, addresses or error).
pub(crate) type Resolved = Vec<(usize, Result<Vec<SocketAddr>, String>)>;
/// HTTP results: (URL, public address or error).
pub(crate) type HttpResults = Vec<(String, Result<IpAddr, String>)>;

/// The server as a socket address when it is an IP literal (no DNS needed).
pub(crate) fn literal(server: &str) -> Option<SocketAddr> {
    let (host, port) = split_host_port(server, STUN_PORT).ok()?;
    Some(SocketAddr::new(host.parse().ok()?, port))
}

/// Resolves `names` on a helper thread.
pub(crate) fn resolve(names: Vec<(usize, String)>, waker: Arc<Waker>) -> io::Result<Receiver<Resolved>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new().name("flowd-stun-dns".into()).spawn(move || {
        let out: Resolved = names
            .into_iter()
            .map(|(i, name)| {
                let r = split_host_port(&name, STUN_PORT)
                    .and_then(|(h, p)| (h.as_str(), p).to_socket_addrs().map(|a| a.collect::<Vec<_>>()).map_err(|e| e.to_string()));
                (i, r)
            })
            .collect();
        let _ = tx.send(out);
        let _ = waker.wake();
    })?;
    Ok(rx)
}

/// Fetches every URL on a helper thread; each body must be an IP address.
pub(crate) fn http(urls: Vec<String>, timeout: Duration, waker: Arc<Waker>) -> io::Result<Receiver<HttpResults>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new().name("flowd-whatismyip".into()).spawn(move || {
        let out: HttpResults = urls.into_iter().map(|u| (u.clone(), fetch(&u, timeout))).collect();
        let _ = tx.send(out);
        let _ = waker.wake();
    })?;
    Ok(rx)
}

fn fetch(url: &str, timeout: Duration) -> Result<IpAddr, String> {
    let resp = minreq::get(url).with_timeout(timeout.as_secs().max(1)).send().map_err(|e| format!("GET {url}: {e}"))?;
    if resp.status_code != 200 {
        return Err(format!("GET {url}: HTTP {} {}", resp.status_code, resp.reason_phrase));
    }
    parse_body(resp.as_bytes()).ok_or_else(|| format!("GET {url}: the body is not an IP address"))
}

/// A "what is my IP" body: one address, surrounding white space allowed.
pub(crate) fn parse_body(b: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(b).ok()?.trim();
    (s.len() <= 64).then_some(())?;
    s.parse().ok()
}

/// The local address the kernel would use towards the first of `towards` in the
/// family (or a private documentation address, as the Python flowd does). A UDP
/// `connect` sends nothing.
pub(crate) fn route_source(v6: bool, towards: impl Iterator<Item = SocketAddr>) -> Option<IpAddr> {
    let mut dst: Vec<SocketAddr> = towards.filter(|a| a.is_ipv6() == v6).take(1).collect();
    dst.push(if v6 {
        SocketAddr::new(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0).into(), 1)
    } else {
        SocketAddr::new(Ipv4Addr::new(10, 255, 255, 255).into(), 1)
    });
    let any: IpAddr = if v6 { Ipv6Addr::UNSPECIFIED.into() } else { Ipv4Addr::UNSPECIFIED.into() };
    dst.into_iter().find_map(|d| {
        let s = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
        s.connect(d).ok()?;
        s.local_addr().ok().map(|a| a.ip())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_literals_and_bodies() {
        assert_eq!(literal("127.0.0.1:5"), Some("127.0.0.1:5".parse().unwrap()));
        assert_eq!(literal("[::1]"), Some("[::1]:3478".parse().unwrap()));
        assert_eq!(literal("stun.example.org:3478"), None);
        assert_eq!(parse_body(b" 203.0.113.7\n"), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(parse_body(b"2001:db8::1"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse_body(b"<html>"), None);
        assert_eq!(parse_body(b"\xff"), None);
    }

    #[test]
    fn test_route_source_towards_loopback() {
        assert_eq!(route_source(false, std::iter::once("127.0.0.1:9".parse().unwrap())), Some("127.0.0.1".parse().unwrap()));
    }
}

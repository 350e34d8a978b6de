//! Address helpers shared by plugins, backends, discovery and config: CIDR networks,
//! address classification, `host[:port]` splitting and the relay's loop rule (SPEC §6,
//! [`relay_blocked`], used by the udp_firefly backend's relay and the firefly listener's
//! forwarding).
//!
//! Pure functions only. `is_private` reproduces Python 3.11's `ipaddress` `is_private`
//! tables, because the Python flowd's scanners skip exactly those destinations.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or a bare address = /32, /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// Network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// True when `ip` lies in this network (an IPv4-mapped IPv6 address matches IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask_v4(u32::from(a), self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask_v6(u128::from(a), self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

fn mask_v4(a: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(prefix.min(32))))
    }
}

fn mask_v6(a: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(prefix.min(128))))
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| format!("{s:?} is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
        };
        let addr = match addr {
            IpAddr::V4(v) => IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(v), prefix))),
            IpAddr::V6(v) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(v), prefix))),
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as IPv4; anything else unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

const PRIVATE_V4: &[(&str, u8)] = &[
    ("0.0.0.0", 8),
    ("10.0.0.0", 8),
    ("127.0.0.0", 8),
    ("169.254.0.0", 16),
    ("172.16.0.0", 12),
    ("192.0.0.0", 29),
    ("192.0.0.170", 31),
    ("192.0.2.0", 24),
    ("192.168.0.0", 16),
    ("198.18.0.0", 15),
    ("198.51.100.0", 24),
    ("203.0.113.0", 24),
    ("240.0.0.0", 4),
    ("255.255.255.255", 32),
];

const PRIVATE_V6: &[(&str, u8)] =
    &[("::1", 128), ("::", 128), ("::ffff:0:0", 96), ("100::", 64), ("2001::", 23), ("2001:db8::", 32), ("2001:10::", 28), ("fc00::", 7), ("fe80::", 10)];

fn in_table(ip: IpAddr, table: &[(&str, u8)]) -> bool {
    table.iter().any(|(a, p)| a.parse::<IpAddr>().map(|addr| Cidr { addr, prefix: *p }.contains(ip)).unwrap_or(false))
}

/// Python 3.11 `ipaddress.ip_address(ip).is_private` (IPv4-mapped addresses use the IPv4 table).
pub(crate) fn is_private(ip: IpAddr) -> bool {
    match canonical(ip) {
        v4 @ IpAddr::V4(_) => in_table(v4, PRIVATE_V4),
        v6 @ IpAddr::V6(_) => in_table(v6, PRIVATE_V6),
    }
}

/// Loopback, link-local, unspecified or multicast: never a flow peer worth labelling.
pub(crate) fn is_local_scope(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v) => v.is_loopback() || v.is_link_local() || v.is_unspecified() || v.is_multicast(),
        IpAddr::V6(v) => v.is_loopback() || v.is_unspecified() || v.is_multicast() || (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Splits `host`, `host:port`, `a.b.c.d:port`, `[v6]:port` or a bare IPv6 address.
pub(crate) fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not host[:port]");
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(bad)?;
        h.parse::<Ipv6Addr>().map_err(|_| bad())?;
        let port = match tail {
            "" => default_port,
            t => t.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0).ok_or_else(bad)?,
        };
        return Ok((h.to_string(), port));
    }
    if s.matches(':').count() > 1 {
        s.parse::<Ipv6Addr>().map_err(|_| bad())?;
        return Ok((s.to_string(), default_port));
    }
    match s.split_once(':') {
        Some((h, p)) if !h.is_empty() => Ok((h.to_string(), p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?)),
        Some(_) => Err(bad()),
        None => Ok((s.to_string(), default_port)),
    }
}

/// SPEC §6: may a firefly received from `from` be relayed (or forwarded) to `to`? `None` = yes, else
/// the reason it may not: never to one of this host's own addresses (`own`, plus
/// loopback and unspecified) on the port the firefly listener uses (`own_address`),
/// which would feed it back into this flowd forever; and never back to a remote sender
/// (`sender`), which may be a relay itself. A sender on this host (XRootD next to flowd)
/// may still get copies on other ports, e.g. a local collector: the first rule already
/// covers the only loop through this host.
pub fn relay_blocked(to: SocketAddr, from: Option<IpAddr>, own: &[IpAddr], listen_port: u16) -> Option<&'static str> {
    let is_local = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified() || own.iter().any(|o| canonical(*o) == ip);
    let ip = canonical(to.ip());
    if to.port() == listen_port && is_local(ip) {
        return Some("own_address");
    }
    let from = from.map(canonical);
    (from == Some(ip) && !from.is_some_and(is_local)).then_some("sender")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn test_cidr_parse_and_contains() {
        let n: Cidr = "192.168.1.7/16".parse().unwrap();
        assert_eq!(n.to_string(), "192.168.0.0/16");
        assert!(n.contains(ip("192.168.200.1")));
        assert!(n.contains(ip("::ffff:192.168.0.1")));
        assert!(!n.contains(ip("192.169.0.1")));
        let h: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(h.prefix, 128);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("bogus".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn test_private_table_matches_python_311() {
        for p in ["10.1.2.3", "172.31.0.1", "192.168.0.1", "192.0.2.1", "198.18.0.1", "127.0.0.1", "fd00::1", "2001:db8::1", "fe80::1"] {
            assert!(is_private(ip(p)), "{p}");
        }
        for p in ["100.64.0.1", "8.8.8.8", "3fff::1", "2a00:1450::1", "172.32.0.1"] {
            assert!(!is_private(ip(p)), "{p}");
        }
    }

    #[test]
    fn test_local_scope() {
        assert!(is_local_scope(ip("127.0.0.2")));
        assert!(is_local_scope(ip("fe80::1")));
        assert!(is_local_scope(ip("::1")));
        assert!(!is_local_scope(ip("2001:db8::1")));
    }

    #[test]
    fn test_split_host_port_forms() {
        assert_eq!(split_host_port("collector.example.org", 10514), Ok(("collector.example.org".into(), 10514)));
        assert_eq!(split_host_port("c.example.org:9999", 10514), Ok(("c.example.org".into(), 9999)));
        assert_eq!(split_host_port("192.0.2.1:1", 10514), Ok(("192.0.2.1".into(), 1)));
        assert_eq!(split_host_port("[2001:db8::1]:77", 10514), Ok(("2001:db8::1".into(), 77)));
        assert_eq!(split_host_port("[2001:db8::1]", 10514), Ok(("2001:db8::1".into(), 10514)));
        assert_eq!(split_host_port("2001:db8::1", 10514), Ok(("2001:db8::1".into(), 10514)));
        for bad in ["", "h:0", "h:x", ":5", "[::1", "[zz]:1", "a b", "h:70000", "1:2:zz"] {
            assert!(split_host_port(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_relay_loop_rules() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let own = [ip("100.64.0.1"), ip("3fff::1"), ip("127.0.0.1")];
        // Back to the sender, on any port, whatever the family spelling.
        assert_eq!(relay_blocked(sa("100.64.7.7:10514"), Some(ip("::ffff:100.64.7.7")), &own, 10514), Some("sender"));
        assert_eq!(relay_blocked(sa("100.64.7.7:9999"), Some(ip("100.64.7.7")), &own, 10514), Some("sender"));
        // To this host's own listener.
        for to in ["100.64.0.1:10514", "[3fff::1]:10514", "127.0.0.1:10514", "127.0.0.9:10514", "[::1]:10514", "0.0.0.0:10514", "[::ffff:100.64.0.1]:10514"] {
            assert_eq!(relay_blocked(sa(to), Some(ip("100.64.7.7")), &own, 10514), Some("own_address"), "{to}");
        }
        // Own address on another port (a local collector), or somebody else: allowed,
        // also when the sender is a local service.
        assert_eq!(relay_blocked(sa("127.0.0.1:9999"), Some(ip("100.64.7.7")), &own, 10514), None);
        assert_eq!(relay_blocked(sa("127.0.0.1:9999"), Some(ip("127.0.0.1")), &own, 10514), None);
        assert_eq!(relay_blocked(sa("[3fff::1]:9999"), Some(ip("3fff::1")), &own, 10514), None);
        assert_eq!(relay_blocked(sa("100.64.8.8:10514"), Some(ip("100.64.7.7")), &own, 10514), None);
        assert_eq!(relay_blocked(sa("[3fff::2]:10514"), None, &own, 10514), None);
    }
}

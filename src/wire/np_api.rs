//! One named-pipe line → a flow announcement (SPEC §1.6).
//!
//! Format: `state prot src_ip src_port dst_ip dst_port exp act`, fields separated by
//! spaces or tabs. `state` is start/end/ongoing and `prot` tcp/udp (any case); the
//! addresses are IPv4 or IPv6 literals of the same family; ports are 1..65535; `exp`
//! and `act` are numeric ids or registry names. Registry activity names may contain
//! spaces (`Analysis Input`), so everything after the experiment is the activity.
//! A trailing CR is ignored (CRLF writers). Addresses are accepted as producers write
//! them: Java's uncompressed IPv6, brackets, zone indexes and IPv4-mapped IPv6 ([`addr`]).

use std::net::{IpAddr, SocketAddr};

use crate::flow::{FlowKey, FlowState, IdOrName, Proto};

/// Longest line accepted (bytes, without the newline).
pub const MAX_LINE: usize = 1024;

/// Why a line was rejected. `reason()` is the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineError {
    /// Fewer than 8 fields.
    FieldCount,
    /// Not start/end/ongoing.
    State,
    /// Not tcp/udp.
    Protocol,
    /// Not an IP address.
    Address,
    /// Not a port 1..65535.
    Port,
    /// Source and destination families differ.
    Family,
    /// Longer than [`MAX_LINE`].
    TooLong,
    /// Not UTF-8.
    Encoding,
}

impl LineError {
    /// Short, fixed label for metrics and logs.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            LineError::FieldCount => "field_count",
            LineError::State => "bad_state",
            LineError::Protocol => "bad_protocol",
            LineError::Address => "bad_address",
            LineError::Port => "bad_port",
            LineError::Family => "family_mismatch",
            LineError::TooLong => "line_too_long",
            LineError::Encoding => "not_utf8",
        }
    }

    /// A sentence for the log.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            LineError::FieldCount => "expected 8 fields: state prot src_ip src_port dst_ip dst_port exp act",
            LineError::State => "state must be start, end or ongoing",
            LineError::Protocol => "protocol must be tcp or udp",
            LineError::Address => "not an IPv4 or IPv6 address",
            LineError::Port => "port must be an integer 1..65535",
            LineError::Family => "source and destination are of different address families",
            LineError::TooLong => "line too long",
            LineError::Encoding => "line is not UTF-8",
        }
    }
}

/// A parsed pipe line; experiment and activity still to be resolved against the registry.
#[derive(Clone, Debug, PartialEq)]
pub struct Announcement {
    /// Lifecycle state.
    pub state: FlowState,
    /// The 5-tuple.
    pub key: FlowKey,
    /// Experiment as written.
    pub exp: IdOrName,
    /// Activity as written.
    pub act: IdOrName,
}

fn port(b: &str) -> Result<u16, LineError> {
    if b.is_empty() || b.len() > 5 || !b.bytes().all(|c| c.is_ascii_digit()) {
        return Err(LineError::Port);
    }
    match b.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(LineError::Port),
    }
}

/// An address as producers write it: IPv4, IPv6 compressed or not (Java writes
/// `0:0:0:0:0:0:0:1`), in brackets (`[2001:db8::1]`), with a zone index (`fe80::1%eth0`,
/// dropped: the flow is the same on the wire), or IPv4-mapped (`::ffff:192.0.2.1`, as a
/// dual-stack listener reports an IPv4 peer: taken as the IPv4 address it is on the wire).
fn addr(b: &str) -> Result<IpAddr, LineError> {
    let b = b.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(b);
    let b = match b.split_once('%') {
        Some((a, zone)) if a.contains(':') && !zone.is_empty() => a,
        _ => b,
    };
    b.parse::<IpAddr>().map(|a| a.to_canonical()).map_err(|_| LineError::Address)
}

/// Parses one line (without its `\n`; a trailing `\r` is allowed).
pub fn parse_line(line: &[u8]) -> Result<Announcement, LineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong);
    }
    let line = std::str::from_utf8(line).map_err(|_| LineError::Encoding)?;
    let mut rest = line;
    let mut field = || -> Result<&str, LineError> {
        let t = rest.trim_start_matches([' ', '\t']);
        let end = t.find([' ', '\t']).unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        if f.is_empty() {
            Err(LineError::FieldCount)
        } else {
            Ok(f)
        }
    };
    let (state, proto, sip, sport, dip, dport, exp) = (field()?, field()?, field()?, field()?, field()?, field()?, field()?);
    let act_text = rest.trim_matches([' ', '\t']);
    if act_text.is_empty() {
        return Err(LineError::FieldCount);
    }
    let state = FlowState::parse(state.as_bytes()).ok_or(LineError::State)?;
    let proto = Proto::parse(proto.as_bytes()).ok_or(LineError::Protocol)?;
    let src = SocketAddr::new(addr(sip)?, port(sport)?);
    let dst = SocketAddr::new(addr(dip)?, port(dport)?);
    let key = FlowKey::new(proto, src, dst).ok_or(LineError::Family)?;
    let act = if act_text.contains(['\t', ' ']) {
        // A multi-word activity name: normalise inner whitespace to single spaces.
        IdOrName::Name(act_text.split([' ', '\t']).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" "))
    } else {
        IdOrName::parse(act_text)
    };
    Ok(Announcement { state, key, exp: IdOrName::parse(exp), act })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_spec_example_line() {
        let a = parse_line(b"start tcp 192.168.0.1 2345 192.168.0.2 5777 1 2").unwrap();
        assert_eq!(a.state, FlowState::Start);
        assert_eq!(a.key.proto, Proto::Tcp);
        assert_eq!(a.key.src, "192.168.0.1:2345".parse().unwrap());
        assert_eq!(a.key.dst, "192.168.0.2:5777".parse().unwrap());
        assert_eq!((a.exp, a.act), (IdOrName::Id(1), IdOrName::Id(2)));
    }

    #[test]
    fn test_ipv6_names_crlf_tabs_and_case() {
        let a = parse_line(b"END\tUDP 2001:db8::1  1094 2001:db8:1::2 53012 cms Analysis Input\r").unwrap();
        assert_eq!(a.state, FlowState::End);
        assert_eq!(a.key.proto, Proto::Udp);
        assert!(a.key.is_ipv6());
        assert_eq!(a.exp, IdOrName::Name("cms".into()));
        assert_eq!(a.act, IdOrName::Name("Analysis Input".into()));
    }

    #[test]
    fn test_addresses_as_java_and_nginx_write_them() {
        let cases: &[(&[u8], &str, &str)] = &[
            (b"start tcp 0:0:0:0:0:0:0:1 1094 0:0:0:0:0:0:0:1 53012 2 9", "[::1]:1094", "[::1]:53012"),
            (b"start tcp fe80::1%eth0 1094 fe80::2%2 53012 2 9", "[fe80::1]:1094", "[fe80::2]:53012"),
            (b"start tcp [2001:db8::1] 1094 [2001:db8:1::2] 53012 2 9", "[2001:db8::1]:1094", "[2001:db8:1::2]:53012"),
            (b"end tcp ::ffff:192.0.2.1 443 198.51.100.2 53012 2 9 ", "192.0.2.1:443", "198.51.100.2:53012"),
            (b"end  tcp\t2001:db8::1 \t 443   2001:db8::2\t53012  9\t 2  ", "[2001:db8::1]:443", "[2001:db8::2]:53012"),
        ];
        for (line, src, dst) in cases {
            let a = parse_line(line).unwrap_or_else(|e| panic!("{:?}: {}", e, String::from_utf8_lossy(line)));
            assert_eq!((a.key.src, a.key.dst), (src.parse().unwrap(), dst.parse().unwrap()), "{}", String::from_utf8_lossy(line));
        }
        for bad in [&b"start tcp [2001:db8::1 1 ::2 2 1 1"[..], b"start tcp 192.0.2.1%eth0 1 192.0.2.2 2 1 1", b"start tcp fe80::1% 1 ::2 2 1 1"] {
            assert_eq!(parse_line(bad), Err(LineError::Address), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn test_each_error_has_its_reason() {
        let cases: &[(&[u8], LineError)] = &[
            (b"", LineError::FieldCount),
            (b"start tcp 1.2.3.4 1 5.6.7.8 2 1", LineError::FieldCount),
            (b"begin tcp 1.2.3.4 1 5.6.7.8 2 1 1", LineError::State),
            (b"start sctp 1.2.3.4 1 5.6.7.8 2 1 1", LineError::Protocol),
            (b"start tcp 1.2.3.400 1 5.6.7.8 2 1 1", LineError::Address),
            (b"start tcp 1.2.3.4 0 5.6.7.8 2 1 1", LineError::Port),
            (b"start tcp 1.2.3.4 65536 5.6.7.8 2 1 1", LineError::Port),
            (b"start tcp 1.2.3.4 -1 5.6.7.8 2 1 1", LineError::Port),
            (b"start tcp 1.2.3.4 1 ::1 2 1 1", LineError::Family),
            (b"start tcp \xff 1 ::1 2 1 1", LineError::Encoding),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line), Err(*want), "{}", String::from_utf8_lossy(line));
        }
        let long = vec![b'a'; MAX_LINE + 1];
        assert_eq!(parse_line(&long), Err(LineError::TooLong));
    }
}

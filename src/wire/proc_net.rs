//! `/proc/net/tcp` and `/proc/net/tcp6` lines → [`Conn`] (the netstat and iperf plugins).
//!
//! Each line after the header is
//! `sl: LOCAL REMOTE ST TX:RX TR:WHEN RETRNSMT UID TIMEOUT INODE …`, where an address is
//! `HEX:PORT`: the IPv4 address as one `%08X` of the 32-bit word as the kernel holds it
//! in memory (so byte order is the host's), the IPv6 address as four such words, and the
//! port as `%04X` in host order. Converting each word back with native byte order gives
//! the address bytes. `ST` is the TCP state in hex (`01` = established). Pure: no I/O,
//! no panics on any input; a bad line is an error for that line only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::sock_diag::Conn;

/// Why a line could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProcNetError {
    /// Too few fields.
    #[error("too few fields")]
    Short,
    /// An address field is not `HEX:PORT` of 8 or 32 hex digits.
    #[error("bad address")]
    Address,
    /// The state, uid or inode field is not a number.
    #[error("bad number")]
    Number,
}

fn hex_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &c| Some(acc << 4 | (c as char).to_digit(16)?))
}

fn dec_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let n = s.iter().try_fold(0u64, |acc, &c| Some(acc * 10 + u64::from((c as char).to_digit(10)?)))?;
    u32::try_from(n).ok()
}

fn address(f: &[u8]) -> Result<SocketAddr, ProcNetError> {
    let colon = f.iter().position(|&c| c == b':').ok_or(ProcNetError::Address)?;
    let (a, p) = (&f[..colon], &f[colon + 1..]);
    if p.len() != 4 {
        return Err(ProcNetError::Address);
    }
    let port = hex_u32(p).ok_or(ProcNetError::Address)? as u16;
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(hex_u32(a).ok_or(ProcNetError::Address)?.to_ne_bytes())),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in a.chunks(8).enumerate() {
                let w = hex_u32(chunk).ok_or(ProcNetError::Address)?;
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err(ProcNetError::Address),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parses one line. `Ok(None)` for the header line and blank lines.
pub fn parse_line(line: &[u8]) -> Result<Option<Conn>, ProcNetError> {
    let mut f = line.split(|c| c.is_ascii_whitespace()).filter(|s| !s.is_empty());
    let Some(sl) = f.next() else { return Ok(None) };
    if sl == b"sl" {
        return Ok(None);
    }
    let src = address(f.next().ok_or(ProcNetError::Short)?)?;
    let dst = address(f.next().ok_or(ProcNetError::Short)?)?;
    if src.is_ipv4() != dst.is_ipv4() {
        // The kernel writes both ends in one format (tcp: 8 digits, tcp6: 32); a mix is corrupt.
        return Err(ProcNetError::Address);
    }
    let st = hex_u32(f.next().ok_or(ProcNetError::Short)?).and_then(|n| u8::try_from(n).ok()).ok_or(ProcNetError::Number)?;
    // tx:rx queue, tr:when, retrnsmt
    let mut rest = f.skip(3);
    let uid = dec_u32(rest.next().ok_or(ProcNetError::Short)?).ok_or(ProcNetError::Number)?;
    let _timeout = rest.next().ok_or(ProcNetError::Short)?;
    let inode = dec_u32(rest.next().ok_or(ProcNetError::Short)?).ok_or(ProcNetError::Number)?;
    Ok(Some(Conn { src, dst, state: st, inode, uid, tcp_info: None, ext: Default::default() }))
}

/// Parses a whole file, handing each connection to `each`; returns the number of bad lines.
pub fn parse(text: &[u8], mut each: impl FnMut(Conn)) -> usize {
    let mut bad = 0;
    for line in text.split(|&c| c == b'\n') {
        match parse_line(line) {
            Ok(Some(c)) => each(c),
            Ok(None) => {}
            Err(_) => bad += 1,
        }
    }
    bad
}

#[cfg(test)]
// The fixtures are little-endian /proc text (addresses in host byte order).
#[cfg(target_endian = "little")]
mod tests {
    use super::*;
    use crate::wire::sock_diag::state;

    const TCP: &[u8] = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     \n\
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1665 1 000000008a5aec99 100 0 0 10 0                      \n\
   1: 010040640:1389 020040640:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 424242 1 0000000000000000 20 4 30 10 -1                  \n\
   2: 01004064:1389 02004064:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 424242 1 0000000000000000 20 4 30 10 -1                  \n\
   3: 0100007F:A1B2 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000\n";

    const TCP6: &[u8] = b"  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0000FF3F000000000000000001000000:138A 0000FF3F000000000000000002000000:9C41 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 29 10 -1\n\
   1: 0000000000000000FFFF000001004064:138B 0000000000000000FFFF000002004064:9C42 01 00000000:00000000 00:00000000 00000000     0        0 78 1 0000000000000000 20 4 29 10 -1\n\
   2: 00000000000000000000000000000000:1389 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 79 1 0000000000000000 100 0 0 10 0\n";

    fn all(t: &[u8]) -> (Vec<Conn>, usize) {
        let mut v = Vec::new();
        let bad = parse(t, |c| v.push(c));
        (v, bad)
    }

    #[test]
    fn test_ipv4_lines() {
        let (v, bad) = all(TCP);
        assert_eq!(bad, 1, "the line with 9-digit addresses is rejected, its neighbours kept");
        assert_eq!(v.len(), 3);
        assert_eq!((v[0].state, v[0].dst.port(), v[0].src.to_string()), (state::LISTEN, 0, "0.0.0.0:2024".to_string()));
        let c = v[1];
        assert_eq!(c.src, "100.64.0.1:5001".parse().unwrap());
        assert_eq!(c.dst, "100.64.0.2:40000".parse().unwrap());
        assert_eq!((c.state, c.uid, c.inode), (state::ESTABLISHED, 1000, 424242));
        assert!(c.tcp_info.is_none());
        assert_eq!((v[2].state, v[2].inode), (state::TIME_WAIT, 0));
        assert_eq!(v[2].src, "127.0.0.1:41394".parse().unwrap());
    }

    #[test]
    fn test_ipv6_and_mapped_lines() {
        let (v, bad) = all(TCP6);
        assert_eq!((v.len(), bad), (3, 0));
        assert_eq!(v[0].src, "[3fff::1]:5002".parse().unwrap());
        assert_eq!(v[0].dst, "[3fff::2]:40001".parse().unwrap());
        assert_eq!(v[0].inode, 77);
        assert_eq!(v[1].src, "[::ffff:100.64.0.1]:5003".parse().unwrap());
        assert_eq!(v[1].dst, "[::ffff:100.64.0.2]:40002".parse().unwrap());
        assert_eq!(v[2].state, state::LISTEN);
    }

    #[test]
    fn test_live_files_parse_without_errors() {
        for p in ["/proc/net/tcp", "/proc/net/tcp6"] {
            if let Ok(t) = std::fs::read(p) {
                assert_eq!(all(&t).1, 0, "{p}");
            }
        }
    }

    #[test]
    fn test_bad_lines() {
        assert_eq!(parse_line(b"   0: 0100007F:A1B2"), Err(ProcNetError::Short));
        assert_eq!(parse_line(b"   0: 0100007G:A1B2 0100007F:1F90 01 0:0 0:0 0 0 0 1"), Err(ProcNetError::Address));
        assert_eq!(parse_line(b"   0: 0100007F:A1B2 0100007F:1F90 ZZ 0:0 0:0 0 0 0 1"), Err(ProcNetError::Number));
        assert_eq!(parse_line(b"   0: 0100007F:A1B2 0100007F:1F90 01 0:0 0:0 0 x 0 1"), Err(ProcNetError::Number));
        assert_eq!(parse_line(b"   0: 0100007F:A1B2 0100007F:1F90 01 0:0 0:0 0 0 0 99999999999"), Err(ProcNetError::Number));
        assert_eq!(parse_line(b""), Ok(None));
        // Found by fuzzing: an IPv4 local and an IPv6 remote address on one line.
        let mixed = b"   2: 0100007F:0CEA 00000000000000000000000001000000:D431 01 0:0 0:0 0 4294467296 0 1";
        assert_eq!(parse_line(mixed), Err(ProcNetError::Address));
        for cut in 0..TCP6.len() {
            let _ = parse(&TCP6[..cut], |_| {});
        }
        let _ = parse(b"\xff\xfe:\x00 : : :", |_| {});
    }
}

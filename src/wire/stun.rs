//! STUN Binding (RFC 8489, formerly RFC 5389): the request and the response parser.
//!
//! flowd asks a STUN server "which address do you see me as" to learn the host's public
//! address behind NAT. Only what that needs is here: a Binding request without
//! attributes (20 bytes: type, length 0, magic cookie, the caller's 96-bit transaction
//! id), and the parse of a Binding success response (XOR-MAPPED-ADDRESS, or the older
//! MAPPED-ADDRESS of RFC 3489 servers) or error response (ERROR-CODE).
//!
//! Checks, in order: header length, the two leading zero bits, the magic cookie, the
//! length field against the datagram (which must be a multiple of 4), the transaction
//! id, the message type, then every attribute's length and padding. Unknown attributes
//! are skipped, including comprehension-required ones: old RFC 3489 servers send
//! SOURCE-ADDRESS/CHANGED-ADDRESS, and nothing in a Binding response changes the
//! meaning of the mapped address. Pure: no I/O, no clock, no logging, no panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The fixed value in bytes 4..8 of every RFC 5389/8489 message.
pub(crate) const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub(crate) const HEADER_LEN: usize = 20;
/// Binding request message type.
pub(crate) const BINDING_REQUEST: u16 = 0x0001;
/// Binding success response message type.
pub(crate) const BINDING_SUCCESS: u16 = 0x0101;
/// Binding error response message type.
pub(crate) const BINDING_ERROR: u16 = 0x0111;
/// MAPPED-ADDRESS attribute.
pub(crate) const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// ERROR-CODE attribute.
pub(crate) const ATTR_ERROR_CODE: u16 = 0x0009;
/// XOR-MAPPED-ADDRESS attribute.
pub(crate) const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// SOFTWARE attribute.
pub(crate) const ATTR_SOFTWARE: u16 = 0x8022;

/// The 96-bit transaction id chosen by the client (random, per request).
pub type TransactionId = [u8; 12];

/// Builds a Binding request with no attributes.
pub(crate) fn binding_request(tid: &TransactionId) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Message length 0: no attributes.
    b[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    b[8..20].copy_from_slice(tid);
    b
}

/// A well-formed answer to our Binding request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// Success: the address and port the server saw the request come from.
    Mapped {
        /// The reflexive transport address.
        addr: SocketAddr,
        /// True when it came from XOR-MAPPED-ADDRESS, false for plain MAPPED-ADDRESS.
        xor: bool,
        /// The server's SOFTWARE attribute, if any (valid UTF-8 only).
        software: Option<&'a str>,
    },
    /// Error response: ERROR-CODE (300..699) and its reason phrase.
    Error {
        /// Class × 100 + number, e.g. 400.
        code: u16,
        /// Reason phrase ("" when not valid UTF-8).
        reason: &'a str,
    },
}

/// Why a datagram is not a usable answer to our request. `reason()` is a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Shorter than the 20-byte header.
    #[error("shorter than a STUN header")]
    Short,
    /// Not a STUN message (leading bits or magic cookie wrong).
    #[error("not a STUN message")]
    NotStun,
    /// The length field disagrees with the datagram, or is not a multiple of 4.
    #[error("message length field does not match the datagram")]
    Length,
    /// Answer to some other request (a late or forged reply).
    #[error("transaction id does not match the request")]
    WrongTransaction,
    /// Neither a Binding success nor a Binding error response.
    #[error("unexpected message type {0:#06x}")]
    UnexpectedType(u16),
    /// An attribute's length runs past the end, or an address attribute is malformed.
    #[error("malformed attribute {0:#06x}")]
    BadAttribute(u16),
    /// A success response without (XOR-)MAPPED-ADDRESS, or an error response without ERROR-CODE.
    #[error("response lacks the {0} attribute")]
    Missing(&'static str),
}

impl StunError {}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Decodes a (XOR-)MAPPED-ADDRESS value; `xor_key` is cookie ‖ transaction id when XORed.
fn address(ty: u16, v: &[u8], xor_key: Option<&[u8; 16]>) -> Result<SocketAddr, StunError> {
    let bad = StunError::BadAttribute(ty);
    let family = *v.get(1).ok_or(bad)?;
    let mut port = be16(v, 2).ok_or(bad)?;
    if let Some(k) = xor_key {
        port ^= u16::from_be_bytes([k[0], k[1]]);
    }
    let ip = match (family, v.len()) {
        (0x01, 8) => {
            let mut a = [v[4], v[5], v[6], v[7]];
            if let Some(k) = xor_key {
                a.iter_mut().zip(k).for_each(|(b, k)| *b ^= k);
            }
            IpAddr::V4(Ipv4Addr::from(a))
        }
        (0x02, 20) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&v[4..20]);
            if let Some(k) = xor_key {
                a.iter_mut().zip(k).for_each(|(b, k)| *b ^= k);
            }
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Err(bad),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Parses a datagram received in answer to the Binding request with id `tid`.
pub fn parse_response<'a>(d: &'a [u8], tid: &TransactionId) -> Result<Reply<'a>, StunError> {
    if d.len() < HEADER_LEN {
        return Err(StunError::Short);
    }
    let ty = be16(d, 0).ok_or(StunError::Short)?;
    let len = usize::from(be16(d, 2).ok_or(StunError::Short)?);
    if ty & 0xC000 != 0 || be32(d, 4) != Some(MAGIC_COOKIE) {
        return Err(StunError::NotStun);
    }
    if len % 4 != 0 || HEADER_LEN + len != d.len() {
        return Err(StunError::Length);
    }
    if d.get(8..20) != Some(&tid[..]) {
        return Err(StunError::WrongTransaction);
    }
    if ty != BINDING_SUCCESS && ty != BINDING_ERROR {
        return Err(StunError::UnexpectedType(ty));
    }
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(tid);

    let (mut xor_mapped, mut mapped, mut software, mut error) = (None, None, None, None);
    let mut rest = &d[HEADER_LEN..];
    while !rest.is_empty() {
        let aty = be16(rest, 0).ok_or(StunError::BadAttribute(0))?;
        let alen = usize::from(be16(rest, 2).ok_or(StunError::BadAttribute(aty))?);
        let value = rest.get(4..4 + alen).ok_or(StunError::BadAttribute(aty))?;
        let padded = 4 + alen.div_ceil(4) * 4;
        rest = rest.get(padded..).ok_or(StunError::BadAttribute(aty))?;
        match aty {
            // The first occurrence counts (RFC 8489 §14: later duplicates are ignored).
            ATTR_XOR_MAPPED_ADDRESS if xor_mapped.is_none() => xor_mapped = Some(address(aty, value, Some(&key))?),
            ATTR_MAPPED_ADDRESS if mapped.is_none() => mapped = Some(address(aty, value, None)?),
            ATTR_SOFTWARE if software.is_none() => software = std::str::from_utf8(value).ok(),
            ATTR_ERROR_CODE if error.is_none() => {
                if value.len() < 4 {
                    return Err(StunError::BadAttribute(aty));
                }
                let class = u16::from(value[2] & 0x07);
                let number = u16::from(value[3]);
                if !(3..=6).contains(&class) || number > 99 {
                    return Err(StunError::BadAttribute(aty));
                }
                error = Some((class * 100 + number, std::str::from_utf8(&value[4..]).unwrap_or("")));
            }
            _ => {}
        }
    }
    if ty == BINDING_ERROR {
        let (code, reason) = error.ok_or(StunError::Missing("ERROR-CODE"))?;
        return Ok(Reply::Error { code, reason });
    }
    match (xor_mapped, mapped) {
        (Some(addr), _) => Ok(Reply::Mapped { addr, xor: true, software }),
        (None, Some(addr)) => Ok(Reply::Mapped { addr, xor: false, software }),
        (None, None) => Err(StunError::Missing("XOR-MAPPED-ADDRESS")),
    }
}

/// Builds a Binding success response (for tests and fake servers): XOR-MAPPED-ADDRESS
/// when `xor`, else MAPPED-ADDRESS, preceded by a SOFTWARE attribute when given.
pub fn success_response(tid: &TransactionId, mapped: SocketAddr, xor: bool, software: Option<&str>) -> Vec<u8> {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(tid);
    let mut attrs = Vec::new();
    if let Some(s) = software {
        push_attr(&mut attrs, ATTR_SOFTWARE, s.as_bytes());
    }
    let k = if xor { key } else { [0u8; 16] };
    let port = (mapped.port() ^ u16::from_be_bytes([k[0], k[1]])).to_be_bytes();
    let mut v = vec![0, 0, port[0], port[1]];
    match mapped.ip() {
        IpAddr::V4(a) => {
            v[1] = 0x01;
            v.extend(a.octets().iter().zip(&k).map(|(b, k)| b ^ k));
        }
        IpAddr::V6(a) => {
            v[1] = 0x02;
            v.extend(a.octets().iter().zip(&k).map(|(b, k)| b ^ k));
        }
    }
    push_attr(&mut attrs, if xor { ATTR_XOR_MAPPED_ADDRESS } else { ATTR_MAPPED_ADDRESS }, &v);
    message(BINDING_SUCCESS, tid, &attrs)
}

/// Builds a Binding error response with ERROR-CODE `code` (300..699) and `reason`.
#[cfg(test)]
pub(crate) fn error_response(tid: &TransactionId, code: u16, reason: &str) -> Vec<u8> {
    let mut v = vec![0, 0, (code / 100) as u8 & 0x07, (code % 100) as u8];
    v.extend_from_slice(reason.as_bytes());
    let mut attrs = Vec::new();
    push_attr(&mut attrs, ATTR_ERROR_CODE, &v);
    message(BINDING_ERROR, tid, &attrs)
}

/// The transaction id of a Binding request (for fake servers); `None` if it is not one.
pub fn request_transaction(d: &[u8]) -> Option<TransactionId> {
    if d.len() < HEADER_LEN || be16(d, 0) != Some(BINDING_REQUEST) || be32(d, 4) != Some(MAGIC_COOKIE) {
        return None;
    }
    d.get(8..20)?.try_into().ok()
}

fn push_attr(out: &mut Vec<u8>, ty: u16, v: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    out.extend_from_slice(v);
    out.resize(out.len() + (4 - v.len() % 4) % 4, 0);
}

fn message(ty: u16, tid: &TransactionId, attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER_LEN + attrs.len());
    m.extend_from_slice(&ty.to_be_bytes());
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m.extend_from_slice(tid);
    m.extend_from_slice(attrs);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.1-2.3 transaction id.
    const TID: TransactionId = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

    /// RFC 5769 §2.2 IPv4 response, with MESSAGE-INTEGRITY and FINGERPRINT (skipped here).
    const RFC5769_V4: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, //
        0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, //
        0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, //
        0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, //
        0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    /// RFC 5769 §2.3 IPv6 response.
    const RFC5769_V6: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, //
        0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, //
        0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, //
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, //
        0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
    ];

    #[test]
    fn test_request_bytes() {
        let r = binding_request(&TID);
        assert_eq!(&r[..8], &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(&r[8..], &TID);
        assert_eq!(request_transaction(&r), Some(TID));
        assert_eq!(request_transaction(&r[..19]), None);
    }

    #[test]
    fn test_rfc5769_vectors() {
        let want = Reply::Mapped { addr: "192.0.2.1:32853".parse().unwrap(), xor: true, software: Some("test vector") };
        assert_eq!(parse_response(&RFC5769_V4, &TID), Ok(want));
        let want6 = Reply::Mapped { addr: "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap(), xor: true, software: Some("test vector") };
        assert_eq!(parse_response(&RFC5769_V6, &TID), Ok(want6));
    }

    #[test]
    fn test_built_responses_round_trip() {
        for a in ["203.0.113.7:4242", "[2001:db8::7]:1"] {
            let addr: SocketAddr = a.parse().unwrap();
            for xor in [true, false] {
                let m = success_response(&TID, addr, xor, Some("fake"));
                assert_eq!(parse_response(&m, &TID), Ok(Reply::Mapped { addr, xor, software: Some("fake") }));
            }
        }
        let e = error_response(&TID, 420, "Unknown Attribute");
        assert_eq!(parse_response(&e, &TID), Ok(Reply::Error { code: 420, reason: "Unknown Attribute" }));
    }

    #[test]
    fn test_xor_mapped_is_preferred_and_mapped_is_a_fallback() {
        let x = success_response(&TID, "198.51.100.1:1".parse().unwrap(), true, None);
        let m = success_response(&TID, "10.0.0.1:2".parse().unwrap(), false, None);
        // MAPPED first, then XOR-MAPPED: XOR wins.
        let mut both = m.clone();
        both.extend_from_slice(&x[HEADER_LEN..]);
        let n = (both.len() - HEADER_LEN) as u16;
        both[2..4].copy_from_slice(&n.to_be_bytes());
        assert!(matches!(parse_response(&both, &TID), Ok(Reply::Mapped { xor: true, .. })));
    }

    #[test]
    fn test_rejections() {
        let good = success_response(&TID, "203.0.113.7:4242".parse().unwrap(), true, None);
        assert_eq!(parse_response(&good[..19], &TID), Err(StunError::Short));
        assert_eq!(parse_response(&good[..good.len() - 4], &TID), Err(StunError::Length));
        let mut other = TID;
        other[11] ^= 1;
        assert_eq!(parse_response(&good, &other), Err(StunError::WrongTransaction));
        let mut bad = good.clone();
        bad[4] = 0;
        assert_eq!(parse_response(&bad, &TID), Err(StunError::NotStun));
        let mut bad = good.clone();
        bad[0] = 0x80;
        assert_eq!(parse_response(&bad, &TID), Err(StunError::NotStun));
        let req = binding_request(&TID);
        assert_eq!(parse_response(&req, &TID), Err(StunError::UnexpectedType(BINDING_REQUEST)));
        // An attribute length that runs past the message.
        let mut bad = good.clone();
        bad[HEADER_LEN + 3] = 0x40;
        assert_eq!(parse_response(&bad, &TID), Err(StunError::BadAttribute(ATTR_XOR_MAPPED_ADDRESS)));
        // Wrong address family / length.
        let mut bad = good.clone();
        bad[HEADER_LEN + 5] = 0x02;
        assert_eq!(parse_response(&bad, &TID), Err(StunError::BadAttribute(ATTR_XOR_MAPPED_ADDRESS)));
        // Success without a mapped address; error without ERROR-CODE.
        let empty = message(BINDING_SUCCESS, &TID, &[]);
        assert_eq!(parse_response(&empty, &TID), Err(StunError::Missing("XOR-MAPPED-ADDRESS")));
        let empty = message(BINDING_ERROR, &TID, &[]);
        assert_eq!(parse_response(&empty, &TID), Err(StunError::Missing("ERROR-CODE")));
        // ERROR-CODE with an impossible class.
        let e = error_response(&TID, 900, "x");
        assert_eq!(parse_response(&e, &TID), Err(StunError::BadAttribute(ATTR_ERROR_CODE)));
    }

    #[test]
    fn test_unknown_attributes_and_padding_are_skipped() {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, 0x0004, &[0, 1, 0, 80, 10, 0, 0, 1]); // SOURCE-ADDRESS (RFC 3489)
        push_attr(&mut attrs, 0xC057, &[1, 2, 3]); // odd length, padded
        let x = success_response(&TID, "203.0.113.7:4242".parse().unwrap(), true, None);
        attrs.extend_from_slice(&x[HEADER_LEN..]);
        let m = message(BINDING_SUCCESS, &TID, &attrs);
        assert!(matches!(parse_response(&m, &TID), Ok(Reply::Mapped { xor: true, .. })));
        // Padding missing at the end of the message.
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&x[HEADER_LEN..]);
        attrs.extend_from_slice(&[0xC0, 0x57, 0x00, 0x01, 0xAA]);
        let mut m = message(BINDING_SUCCESS, &TID, &attrs);
        m.extend_from_slice(&[0, 0, 0]);
        let n = (m.len() - HEADER_LEN) as u16;
        m[2..4].copy_from_slice(&n.to_be_bytes());
        assert!(parse_response(&m, &TID).is_ok(), "padding inside the length is fine");
        m.truncate(m.len() - 3);
        assert!(parse_response(&m, &TID).is_err());
    }

    #[test]
    fn test_every_truncation_and_byte_flip_is_handled() {
        for base in [&RFC5769_V4[..], &RFC5769_V6[..], &error_response(&TID, 401, "Unauthorized")[..]] {
            for n in 0..=base.len() {
                let _ = parse_response(&base[..n], &TID);
            }
            for i in 0..base.len() {
                for bit in 0..8 {
                    let mut m = base.to_vec();
                    m[i] ^= 1 << bit;
                    let _ = parse_response(&m, &TID);
                }
            }
        }
    }
}

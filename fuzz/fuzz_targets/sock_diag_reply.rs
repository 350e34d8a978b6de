//! Fuzz target: a NETLINK_SOCK_DIAG dump reply buffer (`wire::sock_diag::parse`, and
//! `parse_with_ext`, which must give the same connections and the same result).
//! The first 4 bytes choose the sequence number, the rest is the `recv` buffer.
#![no_main]

use flowd::wire::sock_diag::{parse, parse_with_ext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let seq = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
    let buf = &data[4..];
    let mut conns = Vec::new();
    let plain = parse(buf, seq, |c| {
        assert_eq!(c.src.is_ipv4(), c.dst.is_ipv4());
        conns.push(c);
    });
    if let Ok(p) = plain {
        assert_eq!(p.conns, conns.len());
    }
    let mut with_ext = Vec::new();
    let ext = parse_with_ext(buf, seq, |c, x| {
        if let Some(n) = x.cong {
            assert!(!n.as_str().is_empty() && n.as_str().len() < 16);
        }
        with_ext.push(c);
    });
    // Both walk the same attributes: a buffer one rejects, the other rejects too.
    assert_eq!(plain, ext);
    assert_eq!(conns, with_ext);
});

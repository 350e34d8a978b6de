//! Fuzz target: a NETLINK_SOCK_DIAG dump reply buffer (`wire::sock_diag::parse`).
//! The first 4 bytes choose the sequence number, the rest is the `recv` buffer.
#![no_main]

use flowd::wire::sock_diag::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let seq = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
    let buf = &data[4..];
    let mut n = 0;
    if let Ok(p) = parse(buf, seq, |c| {
        n += 1;
        assert_eq!(c.src.is_ipv4(), c.dst.is_ipv4());
    }) {
        assert_eq!(p.conns, n);
    }
});

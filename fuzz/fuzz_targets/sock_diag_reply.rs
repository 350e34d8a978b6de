//! Fuzz target: a NETLINK_SOCK_DIAG dump reply buffer (`wire::sock_diag::parse`, with
//! the extension attributes: socket memory, congestion-control name, BBR state).
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
    let mut conns = 0;
    let plain = parse(buf, seq, |c| {
        assert_eq!(c.src.is_ipv4(), c.dst.is_ipv4());
        if let Some(n) = c.ext.cong {
            assert!(!n.as_str().is_empty() && n.as_str().len() < 16);
        }
        if let Some(m) = c.ext.skmem {
            assert!(m.len() <= 9);
        }
        conns += 1;
    });
    if let Ok(p) = plain {
        assert_eq!(p.conns, conns);
    }
});

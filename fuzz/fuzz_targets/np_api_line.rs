//! Fuzz target: one named-pipe line (`wire::np_api::parse_line`).
//!
//! Besides "never panics", checks what an accepted line must satisfy: it fitted in
//! MAX_LINE, its ports are non-zero and both ends are of one address family.
#![no_main]

use flowd::wire::np_api::{parse_line, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = parse_line(data) {
        assert!(data.strip_suffix(b"\r").unwrap_or(data).len() <= MAX_LINE);
        assert!(a.key.src.port() != 0 && a.key.dst.port() != 0);
        assert_eq!(a.key.src.is_ipv4(), a.key.dst.is_ipv4());
        assert!(std::str::from_utf8(data).is_ok());
    }
});

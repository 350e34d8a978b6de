//! Fuzz target: RFC 3339 timestamps (`wire::time::parse_rfc3339`).
//!
//! An accepted timestamp re-formats to flowd's canonical form, which parses back to the
//! same instant (within years 0..=9999, which the formatter can express).
#![no_main]

use flowd::wire::time::{parse_rfc3339, rfc3339};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(t) = parse_rfc3339(s) {
        let canon = rfc3339(t);
        assert_eq!(canon.len(), 32);
        if (-62_135_596_800_000_000..253_402_300_799_000_000).contains(&t.0) {
            assert_eq!(parse_rfc3339(&canon), Some(t), "{s:?} -> {canon}");
        }
    }
});

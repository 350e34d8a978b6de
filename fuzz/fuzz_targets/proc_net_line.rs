//! Fuzz target: /proc/net/tcp{,6} text (`wire::proc_net::parse` and `parse_line`).
#![no_main]

use flowd::wire::proc_net::{parse, parse_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut good = 0;
    let bad = parse(data, |c| {
        good += 1;
        assert_eq!(c.src.is_ipv4(), c.dst.is_ipv4());
    });
    assert!(good + bad <= data.split(|&c| c == b'\n').count());
    let _ = parse_line(data);
});

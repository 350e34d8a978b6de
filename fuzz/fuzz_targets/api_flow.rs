//! Fuzz target: an api plugin request as it arrives (`wire::http::parse_with` with the
//! plugin's body cap), then its body through `wire::api::parse_flow` and the echo writer.
#![no_main]

use flowd::wire::api::{parse_flow, write_flow, write_message};
use flowd::wire::http::{parse_with, Parsed, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    match parse_with(data, MAX_BODY) {
        Parsed::Request { req, used } => {
            assert!(used <= data.len() && req.body.len() <= MAX_BODY);
            let _ = parse_flow(req.body);
        }
        Parsed::Incomplete => assert!(data.len() <= MAX_HEAD + MAX_BODY + 4, "an over-long request must be refused, not awaited"),
        Parsed::Error(_) => {}
    }
    // The bytes as a body on their own.
    let mut out = Vec::new();
    match parse_flow(data) {
        Ok(f) => {
            write_flow(&mut out, &f, 1, 1);
            assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok(), "the echo is JSON");
        }
        Err(m) => write_message(&mut out, &m),
    }
});

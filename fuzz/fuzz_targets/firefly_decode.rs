//! Fuzz target: a firefly datagram (`wire::firefly::decode`), strict and lenient.
//!
//! A datagram that decodes is re-encoded with `encode` (what flowd relays) and decoded
//! again: the flow, ids and times must survive the round trip.
#![no_main]

use flowd::wire::firefly::{decode, encode, syslog_hostname, Firefly, Strictness};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict = decode(data, Strictness::Strict);
    let lenient = decode(data, Strictness::Lenient);
    if let Ok(s) = &strict {
        assert_eq!(Some(s), lenient.as_ref().ok(), "strict accepts a subset of lenient");
    }
    if let Ok(d) = lenient {
        let app = d.application.clone().unwrap_or_default();
        let ff = Firefly {
            state: d.state,
            current_time: d.current_time.unwrap_or(d.start_time),
            start_time: d.start_time,
            end_time: d.end_time,
            key: d.key,
            exp: d.exp,
            act: d.act,
            application: &app,
            usage: d.usage,
            netlink: d.netlink.as_deref(),
        };
        let mut out = Vec::new();
        encode(&mut out, &syslog_hostname("fuzz.example"), &ff);
        let again = decode(&out, Strictness::Strict).expect("flowd's own encoding decodes");
        assert_eq!((again.state, again.key, again.exp, again.act), (d.state, d.key, d.exp, d.act));
        assert_eq!(again.usage, d.usage);
        // Times outside years 0..=9999 are clamped by the encoder, so compare only sane ones.
        let sane = |t: flowd::flow::Micros| (-62_135_596_800_000_000..253_402_300_799_000_000).contains(&t.0);
        if sane(d.start_time) {
            assert_eq!(again.start_time, d.start_time);
        }
    }
});

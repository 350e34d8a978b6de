//! Fuzz target: a firefly datagram (`wire::firefly::decode`), strict and lenient.
//!
//! A datagram that decodes is re-encoded twice, as flowd's own firefly (`encode`) and as
//! the relay sends it (`encode_relayed`), and each is decoded again: the flow, ids and
//! times must survive both, and the relayed one must keep every member it received.
#![no_main]

use flowd::wire::firefly::{decode, encode, encode_relayed, syslog_hostname, Firefly, Relay, Strictness};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict = decode(data, Strictness::Strict);
    let lenient = decode(data, Strictness::Lenient);
    if let Ok(s) = &strict {
        assert_eq!(Some(s), lenient.as_ref().ok(), "strict accepts a subset of lenient");
    }
    if let Ok(d) = lenient {
        let ff = Firefly {
            state: d.state,
            current_time: d.current_time.unwrap_or(d.start_time),
            start_time: d.start_time,
            end_time: d.end_time,
            key: d.key,
            exp: d.exp,
            act: d.act,
            application: "fuzz",
            usage: Some((1, 2)),
            netlink: None,
        };
        let mut out = Vec::new();
        encode(&mut out, &syslog_hostname("fuzz.example"), &ff);
        let again = decode(&out, Strictness::Strict).expect("flowd's own encoding decodes");
        assert_eq!((again.state, again.key, again.exp, again.act), (d.state, d.key, d.exp, d.act));
        // Times outside years 0..=9999 are clamped by the encoder, so compare only sane ones.
        let sane = |t: flowd::flow::Micros| (-62_135_596_800_000_000..253_402_300_799_000_000).contains(&t.0);
        if sane(d.start_time) {
            assert_eq!(again.start_time, d.start_time);
        }
        let relay = Relay { sent_at: d.start_time, received: &d.received, src_ip: None, dst_ip: None, usage: Some((1, 2)), netlink: Some("{}") };
        let mut out = Vec::new();
        encode_relayed(&mut out, Some("fuzz.example"), &relay);
        let relayed = decode(&out, Strictness::Strict).expect("a relayed firefly decodes");
        assert_eq!((relayed.state, relayed.key, relayed.exp, relayed.act), (d.state, d.key, d.exp, d.act));
        let keys = |r: &flowd::flow::Received| r.members.iter().map(|m| (m.nested, r.text(m.key).to_string())).collect::<Vec<_>>();
        let (before, after) = (keys(&d.received), keys(&relayed.received));
        assert_eq!(&after[..before.len()], &before[..], "every member kept, in order");
        if sane(d.start_time) {
            assert_eq!(relayed.start_time, d.start_time);
        }
    }
});

//! Fuzz target: a STUN Binding response from the network (`wire::stun::parse_response`).
//! The transaction id is taken from the datagram itself, so the parser gets past the id
//! check; a mapped address that parses is encoded again and must parse the same.
#![no_main]

use flowd::wire::stun::{parse_response, request_transaction, success_response, Reply, TransactionId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tid: TransactionId = [0; 12];
    if let Some(t) = data.get(8..20) {
        tid.copy_from_slice(t);
    }
    let _ = request_transaction(data);
    if let Ok(Reply::Mapped { addr, xor, software }) = parse_response(data, &tid) {
        let again = success_response(&tid, addr, xor, software);
        match parse_response(&again, &tid) {
            Ok(Reply::Mapped { addr: a2, xor: x2, software: s2 }) => assert_eq!((a2, x2, s2), (addr, xor, software)),
            other => panic!("own encoding does not parse back: {other:?}"),
        }
    }
});

//! Fuzz target: an HTTP request head as the metrics listener receives it
//! (`wire::http::parse`, then `route`), fed whole and in two pieces as a slow client would.
#![no_main]

use flowd::wire::http::{parse, route, Parsed, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

fn check(buf: &[u8]) -> Parsed<'_> {
    let p = parse(buf);
    match p {
        Parsed::Request { req, used } => {
            assert!(used <= buf.len() && used <= MAX_HEAD + 4);
            let _ = route(req.method, req.path);
        }
        Parsed::Incomplete => assert!(buf.len() <= MAX_HEAD + 4, "an over-long head must be refused, not awaited"),
        Parsed::Error(_) => {}
    }
    p
}

fuzz_target!(|data: &[u8]| {
    let whole = check(data);
    // A prefix is either still incomplete or already decided the same way.
    if let Some(&cut) = data.first() {
        let cut = usize::from(cut) % (data.len() + 1);
        if let Parsed::Request { used, .. } = check(&data[..cut]) {
            assert!(matches!(whole, Parsed::Request { used: u, .. } if u == used));
        }
    }
});

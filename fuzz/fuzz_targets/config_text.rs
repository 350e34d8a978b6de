//! Fuzz target: a whole flowd.cfg text through both stages (`config::raw::parse` and
//! `config::from_text`, which validates), plus `raw::parse_value` on the same bytes.
#![no_main]

use std::path::Path;

use flowd::config::{from_text, raw, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (entries, errors) = raw::parse(&text);
    for e in &entries {
        assert!(e.line >= 1);
    }
    for e in &errors {
        assert!(e.line >= 1 && e.to_string().starts_with("line "));
    }
    let _ = raw::parse_value(&text);
    match from_text(&text, Path::new("fuzz.cfg")) {
        Ok(_) => {}
        Err(ConfigError::Invalid { problems, .. }) => assert!(!problems.is_empty()),
        Err(ConfigError::Read { .. }) => unreachable!("from_text does no I/O"),
    }
});

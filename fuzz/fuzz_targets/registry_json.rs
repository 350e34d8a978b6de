//! Fuzz target: a registry document (`registry::ScitagsRegistry::parse`), then lookups of
//! every name it contains.
#![no_main]

use flowd::registry::{IdOrName, ScitagsRegistry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = ScitagsRegistry::parse(data, "fuzz") {
        assert!(!r.experiments.is_empty());
        for e in &r.experiments {
            let id = r.exp_id(&IdOrName::Name(e.name.clone())).expect("listed name resolves");
            for (a, _) in &e.activities {
                let _ = r.act_id(id, &IdOrName::Name(a.clone()));
            }
            let _ = r.names(e.id, 0);
        }
    }
});

//! What a plugin, backend or other loop participant may touch besides itself during one
//! loop turn.
//!
//! Modelled on smoltcp's `iface::Context`: the loop builds one per turn with the time it
//! read once, and handlers get it by `&mut`. Handlers never read the clock themselves.
//! Shared services that belong to the daemon rather than to one participant are reached
//! through it (this host's own addresses). This module sits low in the crate (plugins,
//! backends and the enrichment layer all use it), so it names services by the traits
//! below and depends on nothing above it.

use std::net::IpAddr;
use std::time::Instant;

use crate::flow::{FlowEvent, Micros};
use crate::metrics::Metrics;
use crate::registry::Registry;

/// This host's own addresses, from the daemon's one cache (`enrich::local::LocalAddrs`).
pub trait OwnAddresses {
    /// The addresses, re-read first when the list is older than the cache's time to live.
    fn list(&mut self, now: Instant) -> &[IpAddr];

    /// The addresses, re-read first unless they were read moments ago: for a caller that
    /// met an address it did not expect and suspects it was configured just now.
    fn recheck(&mut self, now: Instant) -> &[IpAddr];
}

/// Per-turn context handed to plugins, backends and the other loop participants.
pub struct Context<'a> {
    /// Monotonic time of this turn (for deadlines).
    pub now: Instant,
    /// Wall-clock time of this turn (for timestamps on events).
    pub wall: Micros,
    /// Events produced this turn; the loop fans them out to every backend.
    pub out: &'a mut Vec<FlowEvent>,
    /// The daemon's metrics.
    pub metrics: &'a mut Metrics,
    /// The flow registry in force (experiment/activity names ↔ ids).
    pub registry: &'a Registry,
    /// The loop's `mio` registry, for sources that must re-register (e.g. a re-created pipe).
    pub poll: &'a mio::Registry,
    /// This host's own addresses.
    pub local: &'a mut dyn OwnAddresses,
}

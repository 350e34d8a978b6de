//! What a plugin or backend may touch besides itself during one loop turn.
//!
//! Modelled on smoltcp's `iface::Context`: the loop builds one per turn with the time it
//! read once, and handlers get it by `&mut`. Handlers never read the clock themselves.

use std::time::Instant;

use crate::flow::{FlowEvent, Micros};
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Per-turn context handed to plugins and backends.
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
}

//! What a plugin, backend or other loop participant may touch besides itself during one
//! loop turn.
//!
//! Modelled on smoltcp's `iface::Context`: the loop builds one per turn with the time it
//! read once, and handlers get it by `&mut`. Handlers never read the clock themselves.
//! Shared services that belong to the daemon rather than to one participant are reached
//! through it (this host's own addresses, the `/metrics` page renderer). Every loop
//! participant (plugins, backends, the enrichment layer, the registry refresher, the
//! metrics listener) has the same timer signature, `poll_at(&self) -> Option<Instant>`
//! and `on_timeout(&mut self, cx: &mut Context)`. This module sits low in the crate
//! (plugins, backends and the enrichment layer all use it), so it names services by the
//! traits below and depends on nothing above it.

use std::net::IpAddr;
use std::time::Instant;

use crate::decision::{Decision, Rejection};
use crate::flow::{FlowEvent, FlowKey, FlowState, Micros};
use crate::metrics::Metrics;
use crate::registry::{IdOrName, ScitagsRegistry, UnknownName};
use crate::wire::http::{Route, Status};
use crate::wire::prom::Page;

/// Renders the page of `route` (`/metrics`, `/flows`, `/flows/…`) into an empty [`Page`]
/// and returns its status; may update the store first (process metrics, the backends'
/// scrape).
pub(crate) type Render<'r> = dyn FnMut(Route<'_>, &mut Metrics, &mut Page) -> Status + 'r;

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
    /// Flow announcements rejected this turn (registry misses, [`Context::reject`]); the loop keeps
    /// them in its memory of recent flows for `flowd explain`.
    pub rejected: &'a mut Vec<Rejection>,
    /// The daemon's metrics.
    pub metrics: &'a mut Metrics,
    /// The flow registry in force (experiment/activity names ↔ ids).
    pub registry: &'a ScitagsRegistry,
    /// The loop's `mio` registry, for sources that must re-register (e.g. a re-created pipe).
    pub poll: &'a mio::Registry,
    /// This host's own addresses.
    pub local: &'a mut dyn OwnAddresses,
    /// The `/metrics` page (the daemon's backends and flow table), lent only to the
    /// metrics listener; without it the listener serves the daemon's own metrics.
    pub render: Option<&'a mut Render<'a>>,
}

impl<'a> Context<'a> {
    /// Notes an announcement of `source` whose names the registry does not know, for the
    /// loop's memory of recent flows (`/flows`, `flowd explain`); returns its decision
    /// (`UnknownExperiment` or `UnknownActivity`) for the caller to count.
    pub(crate) fn reject(&mut self, source: &'static str, key: FlowKey, state: FlowState, miss: UnknownName, exp: &IdOrName, act: &IdOrName) -> Decision {
        let (decision, what) = match miss {
            UnknownName::Experiment => (Decision::UnknownExperiment, format!("experiment {:?}", exp.to_string())),
            UnknownName::Activity => (Decision::UnknownActivity, format!("activity {:?} of experiment {:?}", act.to_string(), exp.to_string())),
        };
        self.rejected.push(Rejection { key, source, state, decision, what, at: self.wall });
        decision
    }

    /// One turn's context at monotonic time `now` (the wall clock is read here once),
    /// without the page renderer.
    pub fn new(
        now: Instant,
        out: &'a mut Vec<FlowEvent>,
        rejected: &'a mut Vec<Rejection>,
        metrics: &'a mut Metrics,
        registry: &'a ScitagsRegistry,
        poll: &'a mio::Registry,
        local: &'a mut dyn OwnAddresses,
    ) -> Context<'a> {
        Context { now, wall: Micros::now(), out, rejected, metrics, registry, poll, local, render: None }
    }

    /// The same context with the page renderer lent, for one call of the metrics listener.
    pub(crate) fn with_render<'b>(&'b mut self, render: &'b mut Render<'_>) -> Context<'b> {
        Context {
            now: self.now,
            wall: self.wall,
            out: &mut *self.out,
            rejected: &mut *self.rejected,
            metrics: &mut *self.metrics,
            registry: self.registry,
            poll: self.poll,
            local: &mut *self.local,
            render: Some(render),
        }
    }
}

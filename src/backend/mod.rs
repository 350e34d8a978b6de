//! Backends: the marking methods. **Add a new marking method here.**
//!
//! Like plugins, backends are a closed enum chosen by config (BACKEND=…); this file is
//! the only place that matches on the variants. The enum offers what every backend needs
//! and nothing that only one does:
//!
//! - `handle(ev, cx) -> Result<Option<Decision>, BackendError>`: act on one flow event,
//!   synchronously, without blocking (a would-block is an error that is counted), and say
//!   what was done: `Some(decision)` from the vocabulary in `crate::decision` (fireflied,
//!   marked, not marked because IPv4, …), `None` when the event asked nothing of this
//!   backend (the marker and an `ongoing` event, prometheus, dummy). The loop counts it in
//!   `flowd_decisions_total` and notes it on the flow (`/flows`, `flowd explain`); an
//!   `Err` is counted as decision `failed` and in `flowd_backend_errors_total`. Events
//!   arrive already past the site policy and enriched (public address, tcp_info:
//!   `FlowEvent::enriched`), and `ongoing` events of the enrichment layer arrive like any
//!   other; a backend reads what the event carries.
//! - `flush(cx)`: end of the loop turn (send what `handle` queued).
//! - `poll_at()` / `on_timeout(cx)`: periodic work, the same timer signature as every
//!   other loop participant.
//! - `scrape(flows, metrics)` / `write_metrics(registry, page)`: the `/metrics` page.
//! - `keeps_flow_state()`: a re-created stateful backend is given the open flows again
//!   (as `start` events through `handle`) after a reload.
//!
//! Backends own no sockets in the loop's `Poll`: daemon-level services (tcp_info,
//! `ongoing` events, public-address discovery, this host's addresses) live in the
//! enrichment layer and `Context`. An error from `handle` is logged (rate-limited) and
//! counted by the loop; it never stops the loop or the other backends.

pub(crate) mod dummy;
#[cfg(feature = "ebpf")]
pub mod marker;
pub mod prometheus;
pub(crate) mod udp_firefly;

use std::time::Instant;

use crate::config::{BackendKind, Config};
use crate::context::Context;
use crate::decision::Decision;
use crate::flow::{FlowEvent, FlowKey};
use crate::flow_table::FlowTable;
use crate::metrics::Metrics;
use crate::registry::ScitagsRegistry;
use crate::wire::prom::Page;

/// Why a backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendInitError {
    /// The udp_firefly backend could not start.
    #[error("udp_firefly: {0}")]
    UdpFirefly(#[from] udp_firefly::InitError),
    /// The eBPF marker could not load or attach.
    #[cfg(feature = "ebpf")]
    #[error("ebpf marker: {0}")]
    Marker(#[from] marker::MarkerError),
    /// The backend is not part of this build.
    #[error("backend {0} is not yet supported by this flowd")]
    NotBuilt(&'static str),
}

/// Why a backend could not handle one event. `reason()` is the metrics label.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A datagram could not be sent.
    #[error("send to {to} failed: {source}")]
    Send {
        /// Destination.
        to: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The event cannot be represented by this backend.
    #[error("{0}")]
    Refused(&'static str),
}

impl BackendError {
    /// A short, fixed label for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            BackendError::Send { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock => "would_block",
            BackendError::Send { .. } => "send_failed",
            BackendError::Refused(r) => r,
        }
    }
}

/// One running marking method.
pub(crate) enum Backend {
    /// UDP fireflies.
    UdpFirefly(Box<udp_firefly::Sender>),
    /// Logs events.
    Dummy(dummy::Dummy),
    /// Per-flow TCP metrics on the metrics page.
    Prometheus(prometheus::FlowMetrics),
    /// eBPF IPv6 flow-label marker.
    #[cfg(feature = "ebpf")]
    Marker(Box<marker::Marker>),
}

impl Backend {
    /// Builds the backend `kind` from the config.
    pub(crate) fn new(kind: BackendKind, cfg: &Config) -> Result<Backend, BackendInitError> {
        match kind {
            BackendKind::UdpFirefly => Ok(Backend::UdpFirefly(Box::new(udp_firefly::Sender::new(cfg)?))),
            BackendKind::Dummy => Ok(Backend::Dummy(dummy::Dummy)),
            BackendKind::Prometheus => Ok(Backend::Prometheus(prometheus::FlowMetrics::new())),
            #[cfg(feature = "ebpf")]
            BackendKind::Ebpf => Ok(Backend::Marker(Box::new(marker::Marker::new(cfg)?))),
            #[cfg(not(feature = "ebpf"))]
            BackendKind::Ebpf => Err(BackendInitError::NotBuilt(BackendKind::Ebpf.name())),
        }
    }

    /// The config name of this backend (also its metrics label).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::UdpFirefly(_) => "udp_firefly",
            Backend::Dummy(_) => "dummy",
            Backend::Prometheus(_) => "prometheus",
            #[cfg(feature = "ebpf")]
            Backend::Marker(_) => "ebpf",
        }
    }

    /// Acts on one event and says what it did (`None`: nothing asked of it). Each call may
    /// fail on its own; decisions and failures are counted by the loop.
    pub(crate) fn handle(&mut self, ev: &FlowEvent, cx: &mut Context<'_>) -> Result<Option<Decision>, BackendError> {
        match self {
            Backend::UdpFirefly(b) => b.handle(ev, cx).map(Some),
            Backend::Dummy(b) => b.handle(ev, cx).map(|()| None),
            // The flow table already holds what it needs; the work happens at scrape time.
            Backend::Prometheus(_) => Ok(None),
            #[cfg(feature = "ebpf")]
            Backend::Marker(b) => b.handle(ev, cx),
        }
    }

    /// The flow label this backend puts on `key`'s packets now (the eBPF marker), for
    /// `/flows` and `flowd explain`.
    pub(crate) fn label_of(&self, key: &FlowKey) -> Option<u32> {
        match self {
            #[cfg(feature = "ebpf")]
            Backend::Marker(b) => b.label_of(key),
            _ => {
                let _ = key;
                None
            }
        }
    }

    /// True for backends that keep per-flow state: after they are re-created on reload,
    /// the loop hands them the open flows again as `start` events (stateless ones must not
    /// see them again: a firefly would be sent twice).
    pub(crate) fn keeps_flow_state(&self) -> bool {
        match self {
            #[cfg(feature = "ebpf")]
            Backend::Marker(_) => true,
            _ => false,
        }
    }

    /// End of a loop turn: send whatever was queued while handling this turn's events.
    pub(crate) fn flush(&mut self, cx: &mut Context<'_>) {
        if let Backend::UdpFirefly(b) = self {
            b.flush(cx);
        }
    }

    /// The backend's next deadline, if it has periodic work.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        match self {
            Backend::UdpFirefly(_) | Backend::Dummy(_) | Backend::Prometheus(_) => None,
            #[cfg(feature = "ebpf")]
            Backend::Marker(b) => b.poll_at(),
        }
    }

    /// A scrape of `/metrics` is about to be rendered: gather per-flow data (and count
    /// any failure in `metrics`, which is rendered next).
    pub(crate) fn scrape(&mut self, flows: &FlowTable, metrics: &mut Metrics) {
        match self {
            Backend::UdpFirefly(_) | Backend::Dummy(_) => {}
            Backend::Prometheus(b) => b.scrape(flows, metrics),
            // Fresh kernel counters for the page, not the ones from the last period.
            #[cfg(feature = "ebpf")]
            Backend::Marker(b) => b.export(metrics),
        }
    }

    /// Adds this backend's own metric families (after the store's) to the page.
    pub(crate) fn write_metrics(&mut self, registry: &ScitagsRegistry, out: &mut Page) {
        match self {
            Backend::UdpFirefly(_) | Backend::Dummy(_) => {}
            Backend::Prometheus(b) => b.write(registry, out),
            #[cfg(feature = "ebpf")]
            Backend::Marker(_) => {}
        }
    }

    /// The deadline from `poll_at` has passed.
    #[cfg_attr(not(feature = "ebpf"), allow(unused_variables, reason = "only the marker has timers"))]
    pub(crate) fn on_timeout(&mut self, cx: &mut Context<'_>) {
        match self {
            Backend::UdpFirefly(_) | Backend::Dummy(_) | Backend::Prometheus(_) => {}
            #[cfg(feature = "ebpf")]
            Backend::Marker(b) => b.on_timeout(cx),
        }
    }
}

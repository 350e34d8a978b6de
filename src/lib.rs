//! flowd: the Scitags network flow and packet marking daemon (library part).
//!
//! The binary (`src/main.rs`) is a thin wrapper; everything else lives here so that
//! integration tests and benchmarks can reach it.

pub mod context;
pub mod flow;
pub mod label;
pub mod metrics;
pub mod netaddr;
pub mod registry;
pub mod sys;

/// Interim backend seam for the `ebpf` branch until the core (`src/backend/mod.rs`) lands.
pub mod backend {
    #[cfg(feature = "ebpf")]
    pub mod marker;

    /// Why a backend could not handle one event.
    #[derive(Debug, thiserror::Error)]
    pub enum BackendError {
        /// The event cannot be represented by this backend.
        #[error("{0}")]
        Refused(&'static str),
    }
}

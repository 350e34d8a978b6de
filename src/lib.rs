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

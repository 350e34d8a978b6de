//! The enrichment layer: daemon-level services that add to what plugins report.
//!
//! - `dump`: THE sock_diag dump machine, shared by the netlink plugin's scan, the
//!   udp_firefly backend's tcp_info period and the prometheus backend's scrape.
//! - `local`: THE cache of this host's own addresses (lent to everyone through
//!   `Context::local`).
//!
//! May depend on `wire`, `sys`, `flow`, `metrics`, `config` and `context`; never on
//! plugins, backends or the daemon (they depend on it).

pub mod dump;
pub mod local;

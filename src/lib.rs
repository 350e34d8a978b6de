//! flowd: the Scitags network flow and packet marking daemon (library part).
//!
//! The binary (`src/main.rs`) is a thin wrapper; everything else lives here so that
//! integration tests and benchmarks can reach it. Map of the crate:
//!
//! - `plugin/`: flow sources (np_api, …) — add a new source there.
//! - `backend/`: marking methods (udp_firefly, …) — add a new method there.
//! - `daemon/`: the single-threaded mio loop that connects them.
//! - `enrich/`: what the daemon adds to events before the backends see them (tcp_info,
//!   periodic `ongoing` events, public addresses), the one sock_diag dump machine and the
//!   one cache of this host's addresses.
//! - `wire/`: pure parsers/encoders (pipe lines, fireflies, timestamps).
//! - `config/`: flowd.cfg (Python-compatible) → typed `Config`.
//! - `sys/`: the thin layer of system calls.
//! - `discovery/`: public-address discovery (STUN, HTTP fallback, run by `enrich`) and `flowd stun`.
//! - `label`: the Scitags IPv6 flow label (pure) and the `flowd label` command.
//! - `policy/`: the site policy (EXCLUDE_NETWORKS, EXCLUDE_DOMAINS) applied to every event.
//! - `decision`: the vocabulary of what flowd decided (`flowd_decisions_total`, explain).
//! - `explain`: the `/flows` pages and the explanations of `flowd explain` (pure);
//!   `client`: `flowd flows` and `flowd explain`, which ask the running daemon.

pub mod backend;
pub mod cli;
pub mod client;
pub mod config;
pub mod context;
pub mod daemon;
pub mod decision;
pub mod discovery;
pub mod enrich;
pub mod explain;
pub mod flow;
pub mod flow_table;
pub mod http;
pub mod label;
pub mod logger;
pub mod metrics;
pub mod netaddr;
pub mod plugin;
pub mod policy;
pub mod registry;
pub mod sys;
pub mod wire;

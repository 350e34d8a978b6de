//! The one integration-test binary: runs the real `flowd` binary against temp configs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test helpers fail the test loudly")]

mod util;

mod api;
mod cli;
mod dashboard;
mod ebpf_object;
mod firefly;
mod flowdgo;
mod hardening;
mod manpage;
mod marker;
mod metrics;
mod modules;
mod np_api;
mod packaging;
mod policy;
mod producers;
mod readme;
mod scan;
mod stun;
mod systemd;

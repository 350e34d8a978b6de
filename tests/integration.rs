//! The one integration-test binary: runs the real `flowd` binary against temp configs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test helpers fail the test loudly")]

mod util;

mod cli;
mod firefly;
mod metrics;
mod np_api;
mod marker;
mod hardening;
mod scan;
mod manpage;
mod packaging;
mod stun;
mod systemd;

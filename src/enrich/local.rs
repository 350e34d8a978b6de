//! THE cache of this host's own addresses (every address on its interfaces, loopback
//! included, in the daemon's network namespace), for everyone who asks "is this address
//! mine?": the udp_firefly backend's relay-loop check (SPEC §6), the firefly listener
//! (which end of a relayed flow is this host's; its forwarding's loop check) and the eBPF
//! marker's orientation of a flow. The daemon owns one and lends it through
//! `Context::local` ([`OwnAddresses`]).
//!
//! The list is re-read (`getifaddrs`, `sys::local_addresses`) when it is older than
//! [`TTL`], or, for a caller that met an unknown address, when it is older than
//! [`RECHECK`]. A failed read keeps the last list. Time is a parameter; nothing here
//! reads the clock.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::context::OwnAddresses;

/// How long a list is used before it is read again.
pub(crate) const TTL: Duration = Duration::from_secs(10);
/// How old a list may be and still not be re-read for an unknown address.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

/// This host's addresses and when they were read.
#[derive(Debug, Default)]
pub struct LocalAddrs {
    addrs: Vec<IpAddr>,
    read_at: Option<Instant>,
}

impl LocalAddrs {
    /// An empty cache; the first question reads the list.
    pub fn new() -> LocalAddrs {
        LocalAddrs::default()
    }

    fn read_if_older(&mut self, now: Instant, age: Duration) -> &[IpAddr] {
        if self.read_at.is_some_and(|at| now.saturating_duration_since(at) < age) {
            return &self.addrs;
        }
        self.read_at = Some(now);
        match crate::sys::local_addresses() {
            Ok(a) => self.addrs = a,
            Err(e) => log::warn!("cannot list this host's addresses (keeping {} known): {e}", self.addrs.len()),
        }
        &self.addrs
    }
}

impl OwnAddresses for LocalAddrs {
    fn list(&mut self, now: Instant) -> &[IpAddr] {
        self.read_if_older(now, TTL)
    }

    fn recheck(&mut self, now: Instant) -> &[IpAddr] {
        self.read_if_older(now, RECHECK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_addresses_include_loopback_and_are_reread_after_their_age() {
        let mut l = LocalAddrs::new();
        let t0 = Instant::now();
        assert!(l.list(t0).iter().any(|a| a.is_loopback()), "{:?}", l.addrs);
        // Planted: what a later read would replace.
        l.addrs = vec!["192.0.2.77".parse().unwrap()];
        assert_eq!(l.list(t0 + TTL - Duration::from_millis(1)).len(), 1, "young enough: not re-read");
        assert_eq!(l.recheck(t0 + RECHECK - Duration::from_millis(1)).len(), 1);
        assert!(l.recheck(t0 + RECHECK).iter().any(|a| a.is_loopback()), "an unknown address re-reads after RECHECK");
        l.addrs.clear();
        assert!(l.list(t0 + RECHECK + TTL - Duration::from_millis(1)).is_empty());
        assert!(!l.list(t0 + RECHECK + TTL).is_empty(), "re-read after TTL");
    }
}

//! EXCLUDE_DOMAINS: which addresses belong to the listed DNS domains, learnt without ever
//! blocking the loop.
//!
//! An address belongs to domain `example.org` when it is one of the addresses of the
//! name `example.org` itself (forward lookup, A and AAAA) or when its reverse name (PTR,
//! or `/etc/hosts`) is `example.org` or ends in `.example.org`. Both kinds of lookup run
//! in batches on a short-lived helper thread, which hands its answers back through a
//! channel and wakes the loop (as `daemon::refresh` does). The names are looked up at
//! start and every EXCLUDE_DOMAINS_REFRESH; an address is looked up in reverse the first
//! time an event shows it, and again once its answer is older than the same period.
//! Until its first answer is in, an address is `Pending`: the policy does not wait for
//! it (see `Decision::PassedLookupPending`).
//!
//! Bounded: at most [`MAX_HOSTS`] addresses remembered, [`BATCH`] reverse lookups per
//! helper thread, one helper thread at a time.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;

use crate::metrics::{Desc, Kind, Metrics};
use crate::netaddr::canonical;

/// Most addresses remembered (answers and pending lookups).
pub(crate) const MAX_HOSTS: usize = 65_536;
/// Most reverse lookups per helper thread.
pub(crate) const BATCH: usize = 64;

/// `flowd_policy_lookups_total{kind, result}`.
pub(crate) static LOOKUPS: Desc = Desc {
    name: "flowd_policy_lookups_total",
    help: "EXCLUDE_DOMAINS lookups, by kind (forward = the domain names, reverse = flow endpoints) and result (matched, unmatched, failed, dropped = too many addresses pending).",
    kind: Kind::Counter,
    labels: &["kind", "result"],
};

/// What is known about one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Host {
    /// Its first reverse lookup is queued or running.
    Pending,
    /// It belongs to domain number `domain` (or to none); looked up again after `until`.
    /// `forward` answers come from the names' own addresses and are replaced at each
    /// forward round.
    Known { domain: Option<u32>, until: Instant, forward: bool },
}

/// The answer for one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// It belongs to domain number n (position in EXCLUDE_DOMAINS).
    Domain(u32),
    /// It belongs to no listed domain.
    None,
    /// Not known yet.
    Pending,
}

/// What a helper thread found.
#[derive(Debug, Default)]
struct Answers {
    /// Per domain number: its own addresses, or why they could not be found.
    forward: Option<Vec<Result<Vec<IpAddr>, String>>>,
    /// Per address: its reverse name (`None` = it has none), or the error.
    reverse: Vec<(IpAddr, Result<Option<String>, String>)>,
}

/// The domains and what is known about addresses.
pub(crate) struct Domains {
    /// The domains, lower case, without leading or trailing dots.
    names: Vec<Arc<str>>,
    refresh: Duration,
    hosts: HashMap<IpAddr, Host>,
    queue: VecDeque<IpAddr>,
    /// When the queue got work while no lookup ran (the loop starts one at once).
    queued_at: Option<Instant>,
    next_forward: Instant,
    inflight: Option<Receiver<Answers>>,
    waker: Option<Arc<Waker>>,
    /// Addresses found for each name at the last forward round (for the log).
    found: Vec<Vec<IpAddr>>,
}

/// `Example.ORG.` → `example.org`; `None` for an empty name.
pub(crate) fn normalize(name: &str) -> Option<String> {
    let n = name.trim().trim_matches('.').to_ascii_lowercase();
    (!n.is_empty()).then_some(n)
}

/// The number of the first domain `name` lies in (equal, or a sub-domain).
pub(crate) fn domain_of(names: &[Arc<str>], name: &str) -> Option<u32> {
    let name = name.trim_end_matches('.');
    names
        .iter()
        .position(|d| {
            name.eq_ignore_ascii_case(d)
                || (name.len() > d.len() && name.as_bytes()[name.len() - d.len() - 1] == b'.' && name[name.len() - d.len()..].eq_ignore_ascii_case(d))
        })
        .and_then(|i| u32::try_from(i).ok())
}

impl Domains {
    /// The domains `names` (normalized), answers kept for `refresh`; lookups wake the
    /// loop through `waker` (none in unit tests: answers are then only polled).
    pub(crate) fn new(names: &[String], refresh: Duration, waker: Option<Arc<Waker>>, now: Instant) -> Domains {
        let names: Vec<Arc<str>> = names.iter().filter_map(|n| normalize(n)).map(Arc::from).collect();
        let found = vec![Vec::new(); names.len()];
        Domains { names, refresh, hosts: HashMap::new(), queue: VecDeque::new(), queued_at: None, next_forward: now, inflight: None, waker, found }
    }

    /// True without any domain.
    pub(crate) fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Number of domains.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// The domain called number `i`.
    pub(crate) fn name(&self, i: u32) -> Option<&Arc<str>> {
        self.names.get(i as usize)
    }

    /// Which domain `ip` belongs to, as far as known now; an address never seen is queued
    /// for a reverse lookup, one whose answer is older than the refresh period is looked
    /// up again (its old answer stays in force meanwhile).
    pub(crate) fn lookup(&mut self, ip: IpAddr, now: Instant, metrics: &mut Metrics) -> Lookup {
        let ip = canonical(ip);
        let full = self.hosts.len() >= MAX_HOSTS;
        match self.hosts.get_mut(&ip) {
            Some(Host::Pending) => Lookup::Pending,
            Some(Host::Known { domain, until, forward }) => {
                let d = *domain;
                if *until <= now && !*forward {
                    *until = now + self.refresh;
                    Self::enqueue(&mut self.queue, &mut self.queued_at, ip, now);
                }
                d.map_or(Lookup::None, Lookup::Domain)
            }
            None if full => {
                metrics.inc(&LOOKUPS, &["reverse", "dropped"]);
                Lookup::None
            }
            None => {
                self.hosts.insert(ip, Host::Pending);
                Self::enqueue(&mut self.queue, &mut self.queued_at, ip, now);
                Lookup::Pending
            }
        }
    }

    /// What is known about `ip` now, without queueing a lookup (`flowd explain`).
    pub(crate) fn peek(&self, ip: IpAddr) -> Lookup {
        match self.hosts.get(&canonical(ip)) {
            Some(Host::Known { domain: Some(d), .. }) => Lookup::Domain(*d),
            Some(Host::Known { domain: None, .. }) => Lookup::None,
            Some(Host::Pending) | None => Lookup::Pending,
        }
    }

    fn enqueue(queue: &mut VecDeque<IpAddr>, queued_at: &mut Option<Instant>, ip: IpAddr, now: Instant) {
        queue.push_back(ip);
        queued_at.get_or_insert(now);
    }

    /// Looks `addrs` up ahead of any event (this host's own addresses, at start).
    pub(crate) fn warm(&mut self, addrs: &[IpAddr], now: Instant, metrics: &mut Metrics) {
        if self.is_empty() {
            return;
        }
        for a in addrs {
            self.lookup(*a, now, metrics);
        }
    }

    /// The next moment work is due: a forward round, or queued reverse lookups. Nothing
    /// while a helper thread runs (its answers wake the loop).
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        if self.is_empty() || self.inflight.is_some() {
            return None;
        }
        Some(self.queued_at.map_or(self.next_forward, |q| q.min(self.next_forward)))
    }

    /// Starts a helper thread with the forward round (when due) and the next reverse
    /// lookups, unless one runs already.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        if self.is_empty() || self.inflight.is_some() {
            return;
        }
        let forward = (now >= self.next_forward).then(|| self.names.clone());
        if forward.is_some() {
            self.next_forward = now + self.refresh;
        }
        let n = self.queue.len().min(BATCH);
        let reverse: Vec<IpAddr> = self.queue.drain(..n).collect();
        self.queued_at = None;
        if forward.is_none() && reverse.is_empty() {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new().name("flowd-policy-dns".into()).spawn(move || {
            let _ = tx.send(resolve(forward, reverse));
            if let Some(w) = waker {
                let _ = w.wake();
            }
        });
        match spawned {
            Ok(_) => self.inflight = Some(rx),
            Err(e) => {
                log::warn!("policy: cannot start a lookup thread for EXCLUDE_DOMAINS: {e}; retrying at the next period");
                self.next_forward = now + self.refresh;
            }
        }
    }

    /// Takes the helper thread's answers when they are in. Returns true when it did.
    pub(crate) fn on_wake(&mut self, now: Instant, metrics: &mut Metrics) -> bool {
        let Some(rx) = &self.inflight else { return false };
        let answers = match rx.try_recv() {
            Ok(a) => a,
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => {
                self.inflight = None;
                return false;
            }
        };
        self.inflight = None;
        self.apply(answers, now, metrics);
        if !self.queue.is_empty() {
            self.queued_at = Some(now);
        }
        true
    }

    /// Waits for the running helper thread (tests and benchmarks only: blocks).
    #[cfg(test)]
    pub(crate) fn wait(&mut self, now: Instant, metrics: &mut Metrics) {
        if let Some(rx) = self.inflight.take() {
            if let Ok(a) = rx.recv() {
                self.apply(a, now, metrics);
            }
        }
    }

    fn apply(&mut self, a: Answers, now: Instant, metrics: &mut Metrics) {
        if let Some(forward) = a.forward {
            // Forward answers are replaced as a whole.
            self.hosts.retain(|_, h| !matches!(h, Host::Known { forward: true, .. }));
            let until = now + self.refresh * 2;
            for (i, r) in forward.into_iter().enumerate() {
                let name = self.names.get(i).cloned().unwrap_or_else(|| Arc::from(""));
                match r {
                    Ok(mut addrs) => {
                        addrs.sort();
                        addrs.dedup();
                        metrics.inc(&LOOKUPS, &["forward", if addrs.is_empty() { "unmatched" } else { "matched" }]);
                        for ip in &addrs {
                            self.hosts.insert(*ip, Host::Known { domain: u32::try_from(i).ok(), until, forward: true });
                        }
                        if self.found.get(i) != Some(&addrs) {
                            let shown: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
                            log::info!("policy: EXCLUDE_DOMAINS {name}: its own addresses are [{}]", shown.join(", "));
                            if let Some(f) = self.found.get_mut(i) {
                                *f = addrs;
                            }
                        }
                    }
                    Err(e) => {
                        metrics.inc(&LOOKUPS, &["forward", "failed"]);
                        log::debug!("policy: EXCLUDE_DOMAINS {name}: forward lookup failed: {e}");
                    }
                }
            }
        }
        for (ip, r) in a.reverse {
            let (domain, result) = match &r {
                Ok(Some(name)) => match domain_of(&self.names, name) {
                    Some(d) => (Some(d), "matched"),
                    None => (None, "unmatched"),
                },
                Ok(None) => (None, "unmatched"),
                Err(_) => (None, "failed"),
            };
            metrics.inc(&LOOKUPS, &["reverse", result]);
            if let Ok(Some(name)) = &r {
                log::debug!("policy: {ip} is {name}{}", if domain.is_some() { " (in EXCLUDE_DOMAINS)" } else { "" });
            }
            // A forward answer (the domain's own address) stands over a reverse one.
            if !matches!(self.hosts.get(&ip), Some(Host::Known { forward: true, .. })) {
                self.hosts.insert(ip, Host::Known { domain, until: now + self.refresh, forward: false });
            }
        }
    }

    /// Addresses known to be in a listed domain.
    pub(crate) fn matched(&self) -> usize {
        self.hosts.values().filter(|h| matches!(h, Host::Known { domain: Some(_), .. })).count()
    }
}

/// The blocking part, on the helper thread.
fn resolve(forward: Option<Vec<Arc<str>>>, reverse: Vec<IpAddr>) -> Answers {
    let forward = forward.map(|names| {
        names.iter().map(|n| (n.as_ref(), 0u16).to_socket_addrs().map(|it| it.map(|a| canonical(a.ip())).collect()).map_err(|e| e.to_string())).collect()
    });
    let reverse = reverse.into_iter().map(|ip| (ip, crate::sys::reverse_name(ip).map_err(|e| e.to_string()))).collect();
    Answers { forward, reverse }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().filter_map(|n| normalize(n)).map(Arc::from).collect()
    }

    #[test]
    fn test_suffix_rules() {
        let d = names(&["Example.ORG.", ".cern.ch", " "]);
        assert_eq!(d.len(), 2);
        assert_eq!(domain_of(&d, "example.org"), Some(0));
        assert_eq!(domain_of(&d, "se01.example.org."), Some(0));
        assert_eq!(domain_of(&d, "SE01.EXAMPLE.ORG"), Some(0));
        assert_eq!(domain_of(&d, "badexample.org"), None, "a label boundary, not a string suffix");
        assert_eq!(domain_of(&d, "org"), None);
        assert_eq!(domain_of(&d, "eosatlas.cern.ch"), Some(1));
        assert_eq!(domain_of(&d, ""), None);
    }

    /// The real resolver through the helper thread: `localhost` resolves forward (from
    /// /etc/hosts) and 127.0.0.1 backward; a pending address is answered after the wait.
    #[test]
    fn test_lookups_through_the_helper_thread() {
        let t0 = Instant::now();
        let mut m = Metrics::new();
        let mut d = Domains::new(&["localhost".into()], Duration::from_secs(60), None, t0);
        assert_eq!(d.poll_at(), Some(t0), "the names are looked up at once");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "192.0.2.77".parse().unwrap();
        assert_eq!(d.lookup(other, t0, &mut m), Lookup::Pending);
        d.on_timeout(t0);
        assert_eq!(d.poll_at(), None, "nothing more while the thread runs");
        d.wait(t0, &mut m);
        assert_eq!(d.lookup(lo, t0, &mut m), Lookup::Domain(0), "localhost's own address");
        assert_eq!(d.lookup("::ffff:127.0.0.1".parse().unwrap(), t0, &mut m), Lookup::Domain(0), "IPv4-mapped is IPv4");
        assert_eq!(d.lookup(other, t0, &mut m), Lookup::None, "answered: in no domain");
        assert_eq!(m.get(&LOOKUPS, &["forward", "matched"]), Some(1.0));
        assert_eq!(m.total(&LOOKUPS), 2.0);
        assert!(d.matched() >= 1);
        // After the refresh period the answer is kept while it is looked up again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(d.lookup(other, later, &mut m), Lookup::None);
        assert_eq!(d.poll_at(), Some(t0 + Duration::from_secs(60)), "the forward round and the re-lookup are due");
        assert_eq!(d.lookup(other, later, &mut m), Lookup::None, "queued once");
        assert_eq!(d.queue.len(), 1);
    }
}

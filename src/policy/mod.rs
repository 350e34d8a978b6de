//! The site policy: the flows flowd leaves alone, whatever plugin reports them.
//!
//! EXCLUDE_NETWORKS (CIDR networks) and EXCLUDE_DOMAINS (DNS domains, see [`domains`])
//! say which addresses are excluded; EXCLUDE_MATCH says whether a flow is skipped when
//! `both` of its endpoints are (the default, as dCache's `pool.firefly.excludes`) or
//! when `either` is. The daemon asks [`Policy::decide`] in its fan-out, for every event
//! of every plugin, before the flow table, the enrichment layer and any backend see it:
//! an excluded flow takes no room in the flow table, gets no tcp_info and no `ongoing`
//! event, and no backend ever hears of it. A flow's first event decides; the daemon
//! makes its later events follow that decision (`Decision::PassedOpenFlow`, or the
//! exclusion remembered in `flow_table::Recent`), so a flow is never half marked.
//!
//! Networks are looked up in [`ranges::Ranges`] (a bucket index and a search among a few
//! ranges per endpoint: about 10 ns per address and 50 ns per event with 1,000 networks,
//! `examples/bench_policy.rs`). Domains are learnt on a helper
//! thread; until an address's domain is known the policy does not wait for it.

pub(crate) mod domains;
pub mod ranges;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::Waker;

use crate::config::{ExcludeMatch, PolicyConfig};
use crate::decision::{Decision, RuleRef};
use crate::flow::FlowKey;
use crate::metrics::{Desc, Kind, Metrics};
use domains::{Domains, Lookup};
use ranges::Ranges;

/// `flowd_policy_rules{kind}`.
pub(crate) static RULES: Desc = Desc {
    name: "flowd_policy_rules",
    help: "Exclusion rules in force, by kind (networks, domains, domain_addresses = addresses found to be in EXCLUDE_DOMAINS).",
    kind: Kind::Gauge,
    labels: &["kind"],
};

/// The config key of network rules.
pub(crate) const NETWORKS_KEY: &str = "EXCLUDE_NETWORKS";
/// The config key of domain rules.
pub(crate) const DOMAINS_KEY: &str = "EXCLUDE_DOMAINS";

/// What the policy says about a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the backends, for this reason (an outcome `passed` decision).
    Pass(Decision),
    /// Leave it alone: `decision` is `ExcludedNetwork` or `ExcludedDomain`; the rules
    /// that matched each endpoint.
    Exclude {
        /// The decision counted.
        decision: Decision,
        /// The rule that matched the src, if one did.
        src: Option<RuleRef>,
        /// The rule that matched the dst, if one did.
        dst: Option<RuleRef>,
    },
}

/// One endpoint against the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Network(u32),
    Domain(u32),
    Pending,
    Clear,
}

impl Side {
    fn matched(self) -> bool {
        matches!(self, Side::Network(_) | Side::Domain(_))
    }

    fn of(l: Lookup) -> Side {
        match l {
            Lookup::Domain(i) => Side::Domain(i),
            Lookup::None => Side::Clear,
            Lookup::Pending => Side::Pending,
        }
    }
}

/// The rules in force and what the domains' lookups found.
pub struct Policy {
    either: bool,
    networks: Vec<Arc<str>>,
    ranges: Ranges,
    domains: Domains,
}

impl Policy {
    /// The policy of `cfg`; domain lookups wake the loop with `waker`.
    pub fn new(cfg: &PolicyConfig, waker: Option<Arc<Waker>>, now: Instant) -> Policy {
        Policy {
            either: cfg.exclude_match == ExcludeMatch::Either,
            networks: cfg.networks.iter().map(|n| Arc::from(n.to_string())).collect(),
            ranges: Ranges::new(&cfg.networks),
            domains: Domains::new(&cfg.domains, cfg.domains_refresh, waker, now),
        }
    }

    /// True without any rule: every flow passes.
    pub(crate) fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.domains.is_empty()
    }

    /// Declares the policy's families and sets the rule counts.
    pub(crate) fn declare(&self, m: &mut Metrics) {
        m.declare(&domains::LOOKUPS);
        m.set(&RULES, vec!["networks".into()], self.networks.len() as f64);
        m.set(&RULES, vec!["domains".into()], self.domains.len() as f64);
        m.set(&RULES, vec!["domain_addresses".into()], self.domains.matched() as f64);
    }

    /// Looks this host's own addresses up ahead of the first event (domains only).
    pub(crate) fn warm(&mut self, own: &[IpAddr], now: Instant, metrics: &mut Metrics) {
        self.domains.warm(own, now, metrics);
    }

    /// One endpoint against the rules; `lookup` asks the domains (and may queue a lookup).
    fn side(&mut self, ip: IpAddr, now: Instant, metrics: &mut Metrics) -> Side {
        if let Some(i) = self.ranges.find(ip) {
            return Side::Network(i);
        }
        if self.domains.is_empty() {
            return Side::Clear;
        }
        Side::of(self.domains.lookup(ip, now, metrics))
    }

    fn rule(&self, s: Side) -> Option<RuleRef> {
        match s {
            Side::Network(i) => self.networks.get(i as usize).map(|r| RuleRef { key: NETWORKS_KEY, rule: Arc::clone(r) }),
            Side::Domain(i) => self.domains.name(i).map(|r| RuleRef { key: DOMAINS_KEY, rule: Arc::clone(r) }),
            Side::Pending | Side::Clear => None,
        }
    }

    /// What the rules say about a flow between `key`'s endpoints, now.
    pub fn decide(&mut self, key: &FlowKey, now: Instant, metrics: &mut Metrics) -> Verdict {
        if self.is_empty() {
            return Verdict::Pass(Decision::PassedNoMatch);
        }
        let (s, d) = (self.side(key.src.ip(), now, metrics), self.side(key.dst.ip(), now, metrics));
        self.verdict(s, d)
    }

    /// As [`Policy::decide`] with what is known now, looking nothing up (`flowd explain`
    /// for a flow flowd has not seen).
    pub(crate) fn peek(&self, key: &FlowKey) -> Verdict {
        let side = |ip: IpAddr| match self.ranges.find(ip) {
            Some(i) => Side::Network(i),
            None if self.domains.is_empty() => Side::Clear,
            None => Side::of(self.domains.peek(ip)),
        };
        self.verdict(side(key.src.ip()), side(key.dst.ip()))
    }

    fn verdict(&self, s: Side, d: Side) -> Verdict {
        let excluded = if self.either { s.matched() || d.matched() } else { s.matched() && d.matched() };
        if excluded {
            // The kind of the src's rule when it matched (`either`), else the dst's; with
            // `both`, `domain` as soon as one endpoint matched only by its domain.
            let kind = if self.either {
                if s.matched() {
                    s
                } else {
                    d
                }
            } else if matches!(s, Side::Domain(_)) {
                s
            } else {
                d
            };
            let decision = if matches!(kind, Side::Domain(_)) { Decision::ExcludedDomain } else { Decision::ExcludedNetwork };
            return Verdict::Exclude { decision, src: self.rule(s), dst: self.rule(d) };
        }
        let pending = s == Side::Pending || d == Side::Pending;
        // With `both`, a pending side matters only if the other matched or is pending too.
        let could = if self.either { pending } else { (s.matched() || s == Side::Pending) && (d.matched() || d == Side::Pending) };
        Verdict::Pass(if could {
            Decision::PassedLookupPending
        } else if s.matched() || d.matched() {
            Decision::PassedOneEndpoint
        } else {
            Decision::PassedNoMatch
        })
    }

    /// When the domain lookups need the loop next.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.domains.poll_at()
    }

    /// Starts due domain lookups.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        self.domains.on_timeout(now);
    }

    /// Takes finished domain lookups.
    pub(crate) fn on_wake(&mut self, now: Instant, metrics: &mut Metrics) {
        if self.domains.on_wake(now, metrics) {
            metrics.set(&RULES, vec!["domain_addresses".into()], self.domains.matched() as f64);
        }
    }

    /// Waits for running domain lookups (tests and benchmarks only: blocks).
    #[cfg(test)]
    pub(crate) fn wait(&mut self, now: Instant, metrics: &mut Metrics) {
        self.domains.wait(now, metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Proto;
    use std::time::Duration;

    fn policy(nets: &[&str], domains: &[&str], m: ExcludeMatch) -> Policy {
        let cfg = PolicyConfig {
            networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            exclude_match: m,
            domains_refresh: Duration::from_secs(300),
        };
        Policy::new(&cfg, None, Instant::now())
    }

    fn key(src: &str, dst: &str) -> FlowKey {
        FlowKey::new(Proto::Tcp, src.parse().unwrap(), dst.parse().unwrap()).unwrap()
    }

    fn decide(p: &mut Policy, src: &str, dst: &str) -> Verdict {
        p.decide(&key(src, dst), Instant::now(), &mut Metrics::new())
    }

    #[test]
    fn test_both_and_either() {
        let mut both = policy(&["10.0.0.0/8", "2001:db8::/32"], &[], ExcludeMatch::Both);
        let r = |s: &str| Some(RuleRef { key: NETWORKS_KEY, rule: Arc::from(s) });
        assert_eq!(
            decide(&mut both, "10.1.1.1:1094", "10.2.2.2:5000"),
            Verdict::Exclude { decision: Decision::ExcludedNetwork, src: r("10.0.0.0/8"), dst: r("10.0.0.0/8") }
        );
        assert_eq!(decide(&mut both, "10.1.1.1:1094", "192.0.2.1:5000"), Verdict::Pass(Decision::PassedOneEndpoint));
        assert_eq!(decide(&mut both, "192.0.2.9:1094", "192.0.2.1:5000"), Verdict::Pass(Decision::PassedNoMatch));
        assert!(matches!(decide(&mut both, "[2001:db8::1]:1", "[2001:db8:5::1]:2"), Verdict::Exclude { .. }));
        assert_eq!(decide(&mut both, "[2001:db8::1]:1", "[3fff::1]:2"), Verdict::Pass(Decision::PassedOneEndpoint));
        let mut either = policy(&["10.0.0.0/8", "2001:db8::/32"], &[], ExcludeMatch::Either);
        assert_eq!(
            decide(&mut either, "192.0.2.1:1094", "10.2.2.2:5000"),
            Verdict::Exclude { decision: Decision::ExcludedNetwork, src: None, dst: r("10.0.0.0/8") }
        );
        assert!(matches!(decide(&mut either, "[3fff::1]:1", "[2001:db8::1]:2"), Verdict::Exclude { .. }));
        assert_eq!(decide(&mut either, "192.0.2.1:1094", "192.0.2.2:5000"), Verdict::Pass(Decision::PassedNoMatch));
        let mut none = policy(&[], &[], ExcludeMatch::Both);
        assert!(none.is_empty());
        assert_eq!(decide(&mut none, "10.1.1.1:1", "10.1.1.2:2"), Verdict::Pass(Decision::PassedNoMatch));
    }

    #[test]
    fn test_domains_match_after_their_lookup() {
        let mut p = policy(&["192.0.2.0/24"], &["localhost"], ExcludeMatch::Both);
        let mut m = Metrics::new();
        let t0 = Instant::now();
        let k = key("127.0.0.1:1094", "127.0.0.1:5000");
        assert_eq!(p.decide(&k, t0, &mut m), Verdict::Pass(Decision::PassedLookupPending), "not known yet: never waited for");
        p.on_timeout(t0);
        p.wait(t0, &mut m);
        let dom = Some(RuleRef { key: DOMAINS_KEY, rule: Arc::from("localhost") });
        assert_eq!(p.decide(&k, t0, &mut m), Verdict::Exclude { decision: Decision::ExcludedDomain, src: dom.clone(), dst: dom.clone() });
        // One endpoint by network, the other by domain: excluded, reason domain.
        let mixed = p.decide(&key("192.0.2.5:1094", "127.0.0.1:5000"), t0, &mut m);
        let net = Some(RuleRef { key: NETWORKS_KEY, rule: Arc::from("192.0.2.0/24") });
        assert_eq!(mixed, Verdict::Exclude { decision: Decision::ExcludedDomain, src: net, dst: dom });
        p.declare(&mut m);
        assert_eq!(m.get(&RULES, &["networks"]), Some(1.0));
        assert_eq!(m.get(&RULES, &["domains"]), Some(1.0));
    }
}

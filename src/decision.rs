//! What flowd decided about each input and each flow event, and why: the one vocabulary
//! of `flowd_decisions_total{source, outcome, reason}`, of `/flows` and of `flowd explain`.
//!
//! Every input that reaches the daemon gets exactly one decision of the daemon: a pipe
//! line or datagram that does not become an event is `rejected`; an event is `excluded`
//! by the site policy or `passed` to the backends. Each backend that acts on a passed
//! event then reports its own decision as the return value of `Backend::handle`
//! (`fireflied`, `marked`, …). `source` is the plugin's name, or `enrich` for the
//! enrichment layer's periodic `ongoing` events. Pure data, no I/O.

use std::sync::Arc;

use crate::flow::{FlowKey, FlowState, Micros};
use crate::metrics::{Desc, Kind, Metrics};

/// `flowd_decisions_total{source, outcome, reason}`.
pub(crate) static DECISIONS: Desc = Desc {
    name: "flowd_decisions_total",
    help: "What flowd decided, by source (plugin or enrich), outcome and reason: one daemon decision per input (rejected, excluded, passed), then one per backend acting on a passed event.",
    kind: Kind::Counter,
    labels: &["source", "outcome", "reason"],
};

/// One decision: an (outcome, reason) pair of the vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// A pipe line that is not a flow event (syntax, address, port, …; details in
    /// `flowd_bad_input_total`).
    BadLine,
    /// A received firefly that is not valid (details in `flowd_bad_input_total`).
    BadDatagram,
    /// An np_api line naming an experiment the registry does not know.
    UnknownExperiment,
    /// An np_api line naming an activity the registry does not know for its experiment.
    UnknownActivity,
    /// Excluded by EXCLUDE_NETWORKS.
    ExcludedNetwork,
    /// Excluded by EXCLUDE_DOMAINS.
    ExcludedDomain,
    /// Passed: no exclusion rule matched either endpoint.
    PassedNoMatch,
    /// Passed: only one endpoint matched and EXCLUDE_MATCH is `both`.
    PassedOneEndpoint,
    /// Passed: an endpoint's domain was not known yet (reverse lookup in progress).
    PassedLookupPending,
    /// Passed: an `end` or `ongoing` event of a flow whose start was passed.
    PassedOpenFlow,
    /// udp_firefly queued a firefly for the peer and/or the collectors.
    Fireflied,
    /// udp_firefly sent nothing: every recipient would have fed the firefly back in a
    /// loop (relayed fireflies).
    RelayLoop,
    /// udp_firefly sent nothing: no peer (UDP_FIREFLY_TO_PEER=False) and no collector.
    NoRecipient,
    /// The eBPF marker put the flow into its map: its packets carry the label.
    Marked,
    /// Marked, but the map was full (EBPF_MAP_SIZE): the kernel dropped the least
    /// recently used flow's entry to make room.
    MarkedMapFull,
    /// The eBPF marker removed the flow from its map (`end`).
    Unmarked,
    /// Not marked: an IPv4 flow has no flow label.
    NotMarkedIpv4,
    /// A backend failed on the event (details in `flowd_backend_errors_total`).
    Failed,
}

impl Decision {
    /// Every decision, in the order of the docs.
    #[cfg(test)]
    pub(crate) const ALL: [Decision; 18] = [
        Decision::BadLine,
        Decision::BadDatagram,
        Decision::UnknownExperiment,
        Decision::UnknownActivity,
        Decision::ExcludedNetwork,
        Decision::ExcludedDomain,
        Decision::PassedNoMatch,
        Decision::PassedOneEndpoint,
        Decision::PassedLookupPending,
        Decision::PassedOpenFlow,
        Decision::Fireflied,
        Decision::RelayLoop,
        Decision::NoRecipient,
        Decision::Marked,
        Decision::MarkedMapFull,
        Decision::Unmarked,
        Decision::NotMarkedIpv4,
        Decision::Failed,
    ];

    /// The `outcome` label.
    pub(crate) fn outcome(self) -> &'static str {
        match self {
            Decision::BadLine | Decision::BadDatagram | Decision::UnknownExperiment | Decision::UnknownActivity => "rejected",
            Decision::ExcludedNetwork | Decision::ExcludedDomain => "excluded",
            Decision::PassedNoMatch | Decision::PassedOneEndpoint | Decision::PassedLookupPending | Decision::PassedOpenFlow => "passed",
            Decision::Fireflied => "fireflied",
            Decision::RelayLoop | Decision::NoRecipient => "not_fireflied",
            Decision::Marked | Decision::MarkedMapFull => "marked",
            Decision::Unmarked => "unmarked",
            Decision::NotMarkedIpv4 => "not_marked",
            Decision::Failed => "failed",
        }
    }

    /// The `reason` label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Decision::BadLine => "bad_line",
            Decision::BadDatagram => "bad_datagram",
            Decision::UnknownExperiment => "unknown_experiment",
            Decision::UnknownActivity => "unknown_activity",
            Decision::ExcludedNetwork => "network",
            Decision::ExcludedDomain => "domain",
            Decision::PassedNoMatch => "no_match",
            Decision::PassedOneEndpoint => "one_endpoint",
            Decision::PassedLookupPending => "lookup_pending",
            Decision::PassedOpenFlow => "open_flow",
            Decision::Fireflied => "sent",
            Decision::RelayLoop => "relay_loop",
            Decision::NoRecipient => "no_recipient",
            Decision::Marked => "label_set",
            Decision::MarkedMapFull => "map_full",
            Decision::Unmarked => "end",
            Decision::NotMarkedIpv4 => "ipv4",
            Decision::Failed => "backend_error",
        }
    }

    /// Who takes this decision: `daemon` (one per input) or the backend's name.
    #[cfg(test)]
    pub(crate) fn taken_by(self) -> &'static str {
        match self {
            Decision::Fireflied | Decision::RelayLoop | Decision::NoRecipient => "udp_firefly",
            Decision::Marked | Decision::MarkedMapFull | Decision::Unmarked | Decision::NotMarkedIpv4 => "ebpf",
            Decision::Failed => "any backend",
            _ => "daemon",
        }
    }

    /// One line for people (docs, `flowd explain`).
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Decision::BadLine => "the pipe line is not a valid flow event (see flowd_bad_input_total)",
            Decision::BadDatagram => "the received firefly is not valid (see flowd_bad_input_total)",
            Decision::UnknownExperiment => "the experiment is not in the registry",
            Decision::UnknownActivity => "the activity is not in the registry for its experiment",
            Decision::ExcludedNetwork => "excluded by EXCLUDE_NETWORKS",
            Decision::ExcludedDomain => "excluded by EXCLUDE_DOMAINS",
            Decision::PassedNoMatch => "no exclusion rule matched",
            Decision::PassedOneEndpoint => "only one endpoint matched an exclusion rule (EXCLUDE_MATCH='both')",
            Decision::PassedLookupPending => "an endpoint's domain was still being looked up",
            Decision::PassedOpenFlow => "end or ongoing event of a flow whose start was passed",
            Decision::Fireflied => "firefly sent to the peer and/or the collectors",
            Decision::RelayLoop => "not relayed: every recipient would have sent it back in a loop",
            Decision::NoRecipient => "no firefly: no peer (UDP_FIREFLY_TO_PEER=False) and no collector",
            Decision::Marked => "the eBPF marker sets the flow label on its packets",
            Decision::MarkedMapFull => "marked; the marker's map was full, so the kernel dropped the least recently used flow",
            Decision::Unmarked => "the eBPF marker stopped marking the flow",
            Decision::NotMarkedIpv4 => "not marked: IPv4 packets have no flow label",
            Decision::Failed => "a backend failed on the event (see flowd_backend_errors_total)",
        }
    }

    /// True for the policy's exclusions.
    #[cfg(test)]
    pub(crate) fn is_excluded(self) -> bool {
        self.outcome() == "excluded"
    }
}

/// Counts `d` for `source` in `flowd_decisions_total`.
pub(crate) fn count(metrics: &mut Metrics, source: &'static str, d: Decision) {
    metrics.inc(&DECISIONS, &[source, d.outcome(), d.reason()]);
}

/// Decisions of one fan-out batch, added to the store once per distinct (source,
/// decision) at its end: a batch holds a handful of distinct pairs, so this replaces one
/// store lookup per event and backend (about 100 ns each with every series present) by
/// a scan of a few entries.
#[derive(Debug, Default)]
pub(crate) struct Tally(Vec<(&'static str, Decision, u64)>);

impl Tally {
    /// Counts one `d` for `source`.
    pub(crate) fn add(&mut self, source: &'static str, d: Decision) {
        match self.0.iter_mut().find(|(s, x, _)| *x == d && *s == source) {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((source, d, 1)),
        }
    }

    /// Adds what was counted to `flowd_decisions_total` and starts over.
    pub(crate) fn flush(&mut self, metrics: &mut Metrics) {
        for (source, d, n) in self.0.drain(..) {
            metrics.add(&DECISIONS, &[source, d.outcome(), d.reason()], n);
        }
    }
}

/// A flow whose announcement was rejected before it became an event (an np_api registry
/// miss): handed to the daemon through `Context::rejected` for its memory of recent flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The flow announced.
    pub key: FlowKey,
    /// The plugin.
    pub source: &'static str,
    /// The state announced.
    pub state: FlowState,
    /// Why: `UnknownExperiment` or `UnknownActivity`.
    pub decision: Decision,
    /// What was not found, e.g. `experiment "atlsa"`.
    pub what: String,
    /// When.
    pub at: Micros,
}

/// An exclusion rule as the admin wrote it, e.g. `EXCLUDE_NETWORKS 10.0.0.0/8`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    /// The key: `EXCLUDE_NETWORKS` or `EXCLUDE_DOMAINS`.
    pub key: &'static str,
    /// The rule: a network or a domain.
    pub rule: Arc<str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_vocabulary_is_closed_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for d in Decision::ALL {
            assert!(seen.insert((d.outcome(), d.reason())), "{d:?} repeats an (outcome, reason) pair");
            assert!(d.reason().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{d:?}");
            assert!(!d.describe().is_empty());
        }
        assert!(Decision::ExcludedDomain.is_excluded() && !Decision::PassedOneEndpoint.is_excluded());
        let mut m = Metrics::new();
        count(&mut m, "np_api", Decision::UnknownExperiment);
        assert_eq!(m.get(&DECISIONS, &["np_api", "rejected", "unknown_experiment"]), Some(1.0));
        let mut t = Tally::default();
        for d in [Decision::Fireflied, Decision::PassedNoMatch, Decision::Fireflied] {
            t.add("np_api", d);
        }
        t.add("firefly", Decision::Fireflied);
        t.flush(&mut m);
        t.flush(&mut m);
        assert_eq!(m.get(&DECISIONS, &["np_api", "fireflied", "sent"]), Some(2.0));
        assert_eq!(m.get(&DECISIONS, &["np_api", "passed", "no_match"]), Some(1.0));
        assert_eq!(m.get(&DECISIONS, &["firefly", "fireflied", "sent"]), Some(1.0));
    }

    /// docs/metrics.md documents exactly this vocabulary, row by row.
    #[test]
    fn test_the_metrics_page_lists_every_decision() {
        let doc = include_str!("../docs/metrics.md");
        let rows: Vec<(String, String, String)> = doc
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let tick = |c: &str| c.strip_prefix('`').and_then(|c| c.strip_suffix('`')).map(str::to_string);
                match cells.as_slice() {
                    ["", o, r, by, _, ""] => Some((tick(o)?, tick(r)?, by.to_string())),
                    _ => None,
                }
            })
            .collect();
        let want: Vec<(String, String, String)> = Decision::ALL.iter().map(|d| (d.outcome().into(), d.reason().into(), d.taken_by().into())).collect();
        assert_eq!(rows, want);
    }
}

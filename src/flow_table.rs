//! The flow table: what the daemon remembers about open flows between their events, and
//! [`Recent`], what it remembers about flows after they left the table.
//!
//! Sits between the site policy and the backends. It gives `end` and `ongoing` events the
//! real start time of their flow (the Python flowd sends `null` there), lets stateful
//! backends see every open flow, and keeps what `/flows` and `flowd explain` show: the
//! source, the policy's decision, the fireflies sent, the marker's decision. It is
//! bounded (FLOW_TABLE_SIZE): when full, new flows are still passed on but not
//! remembered, and that is counted. [`Recent`] is bounded too ([`RECENT_FLOWS`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::decision::{Decision, RuleRef};
use crate::flow::{FlowEvent, FlowKey, FlowState, Micros, RelayOrigin};
use crate::metrics::{Desc, Kind, Metrics};
use crate::registry::ScitagsRegistry;

/// Flows not remembered because the table was full.
pub(crate) static UNTRACKED: Desc = Desc {
    name: "flowd_flows_untracked_total",
    help: "Flows passed on without being remembered because the flow table was full (FLOW_TABLE_SIZE).",
    kind: Kind::Counter,
    labels: &[],
};

/// Open flows.
pub(crate) static OPEN: Desc = Desc { name: "flowd_open_flows", help: "Flows currently open (started and not yet ended).", kind: Kind::Gauge, labels: &[] };

/// Open flows by source, experiment and activity (computed at scrape time).
pub(crate) static BY_ACTIVITY: Desc = Desc {
    name: "flowd_open_flows_by_activity",
    help: "Flows currently open in the flow table, by source plugin, experiment and activity (registry names, else ids).",
    kind: Kind::Gauge,
    labels: &["source", "experiment", "activity"],
};

/// What is remembered about an open flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFlow {
    /// When the flow started.
    pub start: Micros,
    /// Experiment id.
    pub exp: u32,
    /// Activity id.
    pub act: u32,
    /// The plugin that announced it (`enrich` never starts a flow).
    pub source: &'static str,
    /// The state of its latest event.
    pub state: FlowState,
    /// When its latest event was seen.
    pub last: Micros,
    /// The policy's decision on its first event.
    pub policy: Decision,
    /// Firefly events udp_firefly emitted for it (each to the peer and the collectors).
    pub fireflies: u32,
    /// What the eBPF marker decided at its start.
    pub marker: Option<Decision>,
    /// Where a relayed flow's fireflies come from (`None`: announced on this host), so
    /// that what is made of an open flow later (a reload's replay, `ongoing` events) knows.
    pub relay: Option<RelayOrigin>,
}

impl OpenFlow {
    /// A flow first seen at `at` in an event of `state` from `source`.
    pub(crate) fn new(source: &'static str, exp: u32, act: u32, at: Micros, state: FlowState, policy: Decision) -> OpenFlow {
        OpenFlow { start: at, exp, act, source, state, last: at, policy, fireflies: 0, marker: None, relay: None }
    }

    /// Takes note of a backend's decision on one of its events.
    pub fn note(&mut self, d: Decision) {
        match d {
            Decision::Fireflied => self.fireflies = self.fireflies.saturating_add(1),
            Decision::Marked | Decision::MarkedMapFull | Decision::NotMarkedIpv4 => self.marker = Some(d),
            _ => {}
        }
    }
}

/// Open flows by 5-tuple.
#[derive(Debug)]
pub struct FlowTable {
    map: HashMap<FlowKey, OpenFlow>,
    cap: usize,
}

impl FlowTable {
    /// An empty table holding at most `cap` flows.
    pub fn new(cap: usize) -> FlowTable {
        FlowTable { map: HashMap::new(), cap }
    }

    /// Changes the capacity (on reload); existing flows are kept.
    pub(crate) fn set_capacity(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Number of open flows.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no flow is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The open flow with this key.
    pub(crate) fn get(&self, key: &FlowKey) -> Option<&OpenFlow> {
        self.map.get(key)
    }

    /// The open flow with this key, to update.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut OpenFlow> {
        self.map.get_mut(key)
    }

    /// Every open flow.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&FlowKey, &OpenFlow)> {
        self.map.iter()
    }

    /// Sets `flowd_open_flows_by_activity` from the open flows (one pass; for a scrape).
    pub(crate) fn count_by_activity(&self, registry: &ScitagsRegistry, metrics: &mut Metrics) {
        let mut groups: HashMap<(&'static str, u32, u32), u64> = HashMap::new();
        for f in self.map.values() {
            *groups.entry((f.source, f.exp, f.act)).or_default() += 1;
        }
        metrics.clear(&BY_ACTIVITY);
        let mut rows: Vec<_> = groups.into_iter().collect();
        rows.sort_unstable();
        for ((source, exp, act), n) in rows {
            let (e, a) = registry.names(exp, act);
            let (e, a) = (e.map_or_else(|| exp.to_string(), str::to_string), a.map_or_else(|| act.to_string(), str::to_string));
            metrics.set(&BY_ACTIVITY, vec![source.into(), e.into(), a.into()], n as f64);
        }
    }

    /// Updates the table with an event and completes the event's times.
    pub fn track(&mut self, ev: &mut FlowEvent, metrics: &mut Metrics) {
        self.track_as(ev, "", Decision::PassedNoMatch, metrics);
    }

    /// As [`FlowTable::track`], for an event of `source` the policy passed with
    /// `policy`. An `end` returns what was known about the flow (a flow not in the table
    /// is described by the event alone).
    pub fn track_as(&mut self, ev: &mut FlowEvent, source: &'static str, policy: Decision, metrics: &mut Metrics) -> Option<OpenFlow> {
        let mut ended = None;
        match ev.state {
            FlowState::Start | FlowState::Ongoing => {
                let full = self.map.len() >= self.cap;
                let known = self.map.get_mut(&ev.key);
                let start = match (ev.state, &known) {
                    (FlowState::Start, _) | (_, None) => ev.start_time.unwrap_or(ev.at),
                    (_, Some(f)) => ev.start_time.unwrap_or(f.start),
                };
                ev.start_time = Some(start);
                match known {
                    Some(f) => {
                        (f.start, f.exp, f.act, f.state, f.last) = (start, ev.exp, ev.act, ev.state, ev.at);
                        f.relay = ev.relayed.as_ref().map(|r| r.origin);
                    }
                    None if !full => {
                        let mut f = OpenFlow::new(source, ev.exp, ev.act, start, ev.state, policy);
                        f.last = ev.at;
                        f.relay = ev.relayed.as_ref().map(|r| r.origin);
                        self.map.insert(ev.key, f);
                    }
                    None => metrics.inc(&UNTRACKED, &[]),
                }
            }
            FlowState::End => {
                let known = self.map.remove(&ev.key);
                ev.start_time = Some(ev.start_time.or(known.map(|f| f.start)).unwrap_or(ev.at));
                ev.end_time = Some(ev.end_time.unwrap_or(ev.at));
                let mut f = known.unwrap_or_else(|| OpenFlow::new(source, ev.exp, ev.act, ev.start_time.unwrap_or(ev.at), ev.state, policy));
                (f.state, f.last) = (FlowState::End, ev.at);
                ended = Some(f);
            }
        }
        metrics.set(&OPEN, Vec::new(), self.map.len() as f64);
        ended
    }
}

/// What happened to a flow that is not (or no longer) open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Its `end` event was passed at this time.
    Ended(Micros),
    /// The policy excluded its events; the rules that matched its src and dst.
    Excluded {
        /// Rule matching the src, if any.
        src: Option<RuleRef>,
        /// Rule matching the dst, if any.
        dst: Option<RuleRef>,
    },
    /// Its line was rejected (a registry miss); what was not found.
    Rejected(Arc<str>),
}

/// A flow the daemon remembers after it left the flow table (or never entered it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Gone {
    /// What was known while the flow was open (or about its last event).
    pub flow: OpenFlow,
    /// Why it is not open.
    pub fate: Fate,
}

/// Most flows [`Recent`] remembers.
pub(crate) const RECENT_FLOWS: usize = 4096;

/// The bounded memory of recently ended, excluded and rejected flows, oldest forgotten
/// first. Updating a flow that is remembered already moves it to the young end.
#[derive(Debug)]
pub struct Recent {
    map: HashMap<FlowKey, (u64, Gone)>,
    order: VecDeque<(FlowKey, u64)>,
    seq: u64,
    cap: usize,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent::new(RECENT_FLOWS)
    }
}

impl Recent {
    /// An empty memory of at most `cap` flows.
    pub(crate) fn new(cap: usize) -> Recent {
        Recent { map: HashMap::new(), order: VecDeque::new(), seq: 0, cap: cap.max(1) }
    }

    /// Remembers `g` for `key` (replacing what was known).
    pub(crate) fn remember(&mut self, key: FlowKey, g: Gone) {
        self.seq += 1;
        self.map.insert(key, (self.seq, g));
        self.order.push_back((key, self.seq));
        while self.map.len() > self.cap {
            let Some((k, s)) = self.order.pop_front() else { break };
            if self.map.get(&k).is_some_and(|(seq, _)| *seq == s) {
                self.map.remove(&k);
            }
        }
        // Entries replaced later leave stale (key, seq) pairs behind: sweep them out once
        // they are as many as the live ones (amortised O(1) per call).
        if self.order.len() > 2 * self.cap {
            let map = &self.map;
            self.order.retain(|(k, s)| map.get(k).is_some_and(|(seq, _)| seq == s));
        }
    }

    /// Forgets `key` (the flow is open again).
    pub(crate) fn forget(&mut self, key: &FlowKey) {
        self.map.remove(key);
    }

    /// What is remembered about `key`.
    pub(crate) fn get(&self, key: &FlowKey) -> Option<&Gone> {
        self.map.get(key).map(|(_, g)| g)
    }

    /// Every remembered flow, oldest first.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&FlowKey, &Gone)> + '_ {
        self.order.iter().filter_map(|(k, s)| self.map.get(k).filter(|(seq, _)| seq == s).map(|(_, g)| (k, g)))
    }

    /// Number of flows remembered.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is remembered.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Notes a line rejected by a registry miss (np_api): the flow never became an event.
    pub(crate) fn rejected(&mut self, key: FlowKey, source: &'static str, state: FlowState, d: Decision, what: &str, at: Micros) {
        let flow = OpenFlow::new(source, 0, 0, at, state, d);
        self.remember(key, Gone { flow, fate: Fate::Rejected(Arc::from(what)) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Proto;

    fn key(port: u16) -> FlowKey {
        FlowKey::new(Proto::Tcp, "192.0.2.1:1094".parse().unwrap(), format!("192.0.2.2:{port}").parse().unwrap()).unwrap()
    }

    fn ev(state: FlowState, port: u16, at: i64) -> FlowEvent {
        let key = FlowKey::new(Proto::Tcp, "[2001:db8::1]:1094".parse().unwrap(), format!("[2001:db8::2]:{port}").parse().unwrap()).unwrap();
        FlowEvent::new(state, key, 2, 9, Micros(at))
    }

    #[test]
    fn test_end_and_ongoing_carry_the_real_start_time() {
        let mut t = FlowTable::new(10);
        let mut m = Metrics::new();
        let mut s = ev(FlowState::Start, 1, 100);
        t.track(&mut s, &mut m);
        assert_eq!(s.start_time, Some(Micros(100)));
        let mut o = ev(FlowState::Ongoing, 1, 200);
        t.track(&mut o, &mut m);
        assert_eq!(o.start_time, Some(Micros(100)));
        assert_eq!(m.get(&OPEN, &[]), Some(1.0));
        let mut e = ev(FlowState::End, 1, 300);
        t.track(&mut e, &mut m);
        assert_eq!((e.start_time, e.end_time), (Some(Micros(100)), Some(Micros(300))));
        assert!(t.is_empty());
        let mut e2 = ev(FlowState::End, 2, 400);
        t.track(&mut e2, &mut m);
        assert_eq!(e2.start_time, Some(Micros(400)), "unknown flow: start = end, never null");
    }

    #[test]
    fn test_recent_is_bounded_and_keeps_the_youngest() {
        let mut r = Recent::new(3);
        let g = |port: u16| Gone {
            flow: OpenFlow::new("np_api", 2, 9, Micros(i64::from(port)), FlowState::End, Decision::PassedNoMatch),
            fate: Fate::Ended(Micros(9)),
        };
        for p in 1..=3 {
            r.remember(key(p), g(p));
        }
        // Touching 1 makes it the youngest; 4 then pushes out 2, the oldest.
        r.remember(key(1), g(1));
        r.remember(key(4), g(4));
        assert_eq!(r.len(), 3);
        assert!(r.get(&key(2)).is_none() && r.get(&key(1)).is_some());
        let order: Vec<u16> = r.iter().map(|(k, _)| k.dst.port()).collect();
        assert_eq!(order, [3, 1, 4]);
        // Many updates of one key never grow the queue without bound.
        for _ in 0..100 {
            r.remember(key(4), g(4));
        }
        assert!(r.order.len() <= 6 && r.len() == 3);
        assert!(r.get(&key(3)).is_some(), "updates of one key evict nobody");
        r.forget(&key(4));
        assert_eq!(r.iter().count(), 2);
    }

    #[test]
    fn test_open_flows_are_counted_by_activity_with_registry_names() {
        let mut t = FlowTable::new(10);
        let mut m = Metrics::new();
        for (p, exp, act, source) in [(1, 2, 9, "np_api"), (2, 2, 9, "np_api"), (3, 2, 9, "firefly"), (4, 300, 1, "np_api")] {
            t.track_as(&mut ev(FlowState::Start, p, 1), source, Decision::PassedNoMatch, &mut m);
            if let Some(f) = t.get_mut(&ev(FlowState::Start, p, 1).key) {
                (f.exp, f.act) = (exp, act);
            }
        }
        t.count_by_activity(&ScitagsRegistry::bundled(), &mut m);
        assert_eq!(m.get(&BY_ACTIVITY, &["np_api", "atlas", "Debug"]), Some(2.0));
        assert_eq!(m.get(&BY_ACTIVITY, &["firefly", "atlas", "Debug"]), Some(1.0));
        assert_eq!(m.get(&BY_ACTIVITY, &["np_api", "300", "1"]), Some(1.0));
        t.track(&mut ev(FlowState::End, 4, 2), &mut m);
        t.count_by_activity(&ScitagsRegistry::bundled(), &mut m);
        assert_eq!(m.get(&BY_ACTIVITY, &["np_api", "300", "1"]), None, "gone with its last flow");
    }

    #[test]
    fn test_table_is_bounded() {
        let mut t = FlowTable::new(2);
        let mut m = Metrics::new();
        for p in 1..=5 {
            t.track(&mut ev(FlowState::Start, p, 1), &mut m);
        }
        assert_eq!(t.len(), 2);
        assert_eq!(m.get(&UNTRACKED, &[]), Some(3.0));
        t.track(&mut ev(FlowState::Start, 1, 7), &mut m);
        assert_eq!(t.get(&ev(FlowState::Start, 1, 0).key).map(|f| f.start), Some(Micros(7)));
    }
}

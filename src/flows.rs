//! The flow table: what the daemon remembers about open flows between their events.
//!
//! Sits between plugins and backends. It gives `end` and `ongoing` events the real start
//! time of their flow (the Python flowd sends `null` there) and lets stateful backends
//! see every open flow. It is bounded (FLOW_TABLE_SIZE): when full, new flows are still
//! passed on but not remembered, and that is counted.

use std::collections::HashMap;

use crate::flow::{FlowEvent, FlowKey, FlowState, Micros, RelayOrigin};
use crate::metrics::{Desc, Kind, Metrics};

/// Flows not remembered because the table was full.
pub static UNTRACKED: Desc = Desc {
    name: "flowd_flows_untracked_total",
    help: "Flows passed on without being remembered because the flow table was full (FLOW_TABLE_SIZE).",
    kind: Kind::Counter,
    labels: &[],
};

/// Open flows.
pub static OPEN: Desc = Desc { name: "flowd_open_flows", help: "Flows currently open (started and not yet ended).", kind: Kind::Gauge, labels: &[] };

/// What is remembered about an open flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFlow {
    /// When the flow started.
    pub start: Micros,
    /// Experiment id.
    pub exp: u32,
    /// Activity id.
    pub act: u32,
    /// Where a relayed flow's fireflies come from (`None`: announced on this host), so
    /// that what is made of an open flow later (a reload's replay, `ongoing` events) knows.
    pub relay: Option<RelayOrigin>,
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
    pub fn set_capacity(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Number of open flows.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no flow is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The open flow with this key.
    pub fn get(&self, key: &FlowKey) -> Option<&OpenFlow> {
        self.map.get(key)
    }

    /// Every open flow.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &OpenFlow)> {
        self.map.iter()
    }

    /// Updates the table with an event and completes the event's times.
    pub fn track(&mut self, ev: &mut FlowEvent, metrics: &mut Metrics) {
        match ev.state {
            FlowState::Start => {
                let start = ev.start_time.unwrap_or(ev.at);
                ev.start_time = Some(start);
                self.remember(ev.key, OpenFlow { start, exp: ev.exp, act: ev.act, relay: ev.relayed.as_ref().map(|r| r.origin) }, metrics);
            }
            FlowState::Ongoing => {
                let known = self.map.get(&ev.key).map(|f| f.start);
                let start = ev.start_time.or(known).unwrap_or(ev.at);
                ev.start_time = Some(start);
                self.remember(ev.key, OpenFlow { start, exp: ev.exp, act: ev.act, relay: ev.relayed.as_ref().map(|r| r.origin) }, metrics);
            }
            FlowState::End => {
                let known = self.map.remove(&ev.key).map(|f| f.start);
                ev.start_time = Some(ev.start_time.or(known).unwrap_or(ev.at));
                ev.end_time = Some(ev.end_time.unwrap_or(ev.at));
            }
        }
        metrics.set(&OPEN, Vec::new(), self.map.len() as f64);
    }

    fn remember(&mut self, key: FlowKey, f: OpenFlow, metrics: &mut Metrics) {
        if self.map.len() < self.cap || self.map.contains_key(&key) {
            self.map.insert(key, f);
        } else {
            metrics.inc(&UNTRACKED, &[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Proto;

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

//! The fan-out: what each event goes through after its source (site policy, flow table,
//! enrichment, every backend), in order, with the decisions counted.

use crate::backend::Backend;
use crate::context::Context;
use crate::decision::{Decision, Tally};
use crate::enrich::Enricher;
use crate::flow::{FlowEvent, FlowState, Origin};
use crate::flow_table::{Fate, FlowTable, Gone, OpenFlow, Recent};
use crate::logger::{RateLimit, Suppressed};
use crate::metrics::{BACKEND_ERRORS, EVENTS};
use crate::plugin::Plugin;
use crate::policy::{Policy, Verdict};

/// What an event goes through after its source, in order (borrowed from the daemon for
/// one fan-out).
pub(super) struct Stages<'a> {
    pub(super) plugins: &'a [Plugin],
    pub(super) backends: &'a mut [Backend],
    pub(super) enricher: &'a mut Enricher,
    pub(super) flows: &'a mut FlowTable,
    pub(super) policy: &'a mut Policy,
    pub(super) recent: &'a mut Recent,
    pub(super) warn: &'a mut RateLimit,
}

impl Stages<'_> {
    /// What the policy says about `ev`. A flow's first event decides; its later events
    /// follow: an open flow's events pass, and an `end` or `ongoing` of a flow excluded
    /// earlier is excluded by the same rules (even if a reload changed them since).
    fn judge(&mut self, ev: &FlowEvent, cx: &mut Context<'_>) -> Verdict {
        if self.flows.get(&ev.key).is_some() {
            return Verdict::Pass(Decision::PassedOpenFlow);
        }
        if ev.state != FlowState::Start {
            if let Some(Gone { flow, fate: Fate::Excluded { src, dst } }) = self.recent.get(&ev.key) {
                return Verdict::Exclude { decision: flow.policy, src: src.clone(), dst: dst.clone() };
            }
        }
        self.policy.decide(&ev.key, cx.now, cx.metrics)
    }

    /// Hands every pending event to the site policy, then (unless it excludes it) to the
    /// flow table, the enrichment layer and every backend, in order. Each event is counted
    /// in `flowd_events_total` by its origin (the plugin's name, or `enrich` for the
    /// enrichment layer's `ongoing` events) and gets one daemon decision (`excluded` or
    /// `passed`) plus each backend's decision in `flowd_decisions_total`, which are also
    /// noted on the flow (`/flows`, `flowd explain`).
    pub(super) fn fan_out(&mut self, cx: &mut Context<'_>) {
        for r in cx.rejected.drain(..) {
            self.recent.rejected(r.key, r.source, r.state, r.decision, &r.what, r.at);
        }
        if cx.out.is_empty() {
            return;
        }
        let mut batch = std::mem::take(cx.out);
        let mut tally = Tally::default();
        for ev in batch.iter_mut() {
            let origin = match ev.origin {
                Origin::Plugin(i) => self.plugins.get(i).map(Plugin::name).unwrap_or("unknown"),
                Origin::Enricher => "enrich",
            };
            cx.metrics.inc(&EVENTS, &[origin, ev.state.as_str()]);
            let passed = match self.judge(ev, cx) {
                Verdict::Pass(d) => d,
                Verdict::Exclude { decision: d, src, dst } => {
                    tally.add(origin, d);
                    log::debug!("event from {origin}: {} {} excluded ({})", ev.state, ev.key, d.reason());
                    let mut f = OpenFlow::new(origin, ev.exp, ev.act, ev.start_time.unwrap_or(ev.at), ev.state, d);
                    f.last = ev.at;
                    self.recent.remember(ev.key, Gone { flow: f, fate: Fate::Excluded { src, dst } });
                    continue;
                }
            };
            tally.add(origin, passed);
            let mut ended = self.flows.track_as(ev, origin, passed, cx.metrics);
            if ev.state == FlowState::Start && !self.recent.is_empty() {
                self.recent.forget(&ev.key);
            }
            self.enricher.enrich(ev);
            log::debug!("event from {origin}: {} {} exp={} act={}", ev.state, ev.key, ev.exp, ev.act);
            for b in self.backends.iter_mut() {
                let d = match b.handle(ev, cx) {
                    Ok(Some(d)) => d,
                    Ok(None) => continue,
                    Err(e) => {
                        cx.metrics.inc(&BACKEND_ERRORS, &[b.name(), e.reason()]);
                        if let Some(n) = self.warn.allow(cx.now) {
                            log::warn!("backend {}: flow {}: {e}{}", b.name(), ev.key, Suppressed(n));
                        }
                        Decision::Failed
                    }
                };
                tally.add(origin, d);
                match ended.as_mut() {
                    Some(f) => f.note(d),
                    None => {
                        if let Some(f) = self.flows.get_mut(&ev.key) {
                            f.note(d);
                        }
                    }
                }
            }
            if let Some(f) = ended {
                self.recent.remember(ev.key, Gone { flow: f, fate: Fate::Ended(ev.end_time.unwrap_or(ev.at)) });
            }
        }
        tally.flush(cx.metrics);
        for b in self.backends.iter_mut() {
            b.flush(cx);
        }
        batch.clear();
        // Keep the allocation; anything pushed by backends meanwhile is kept as well.
        batch.append(cx.out);
        *cx.out = batch;
    }
}

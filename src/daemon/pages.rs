//! The HTTP listener's pages (`/metrics`, `/flows`, `/flows/<tuple>`) and the metric
//! families the daemon declares up front.

use super::{refresh, BUILD_INFO, RELOADS};
use crate::backend::Backend;
use crate::config::{Config, PluginKind};
use crate::decision::DECISIONS;
use crate::explain::{self, View};
use crate::flow::Micros;
use crate::flow_table::{FlowTable, Recent};
use crate::metrics::{Metrics, BACKEND_ERRORS, BAD_INPUT, EVENTS};
use crate::policy::Policy;
use crate::registry::ScitagsRegistry;
use crate::sys;
use crate::wire::http::{Route, Status};
use crate::wire::prom::Page;

/// The daemon's state a page is rendered from (borrowed for one request).
pub(super) struct Pages<'a> {
    pub(super) backends: &'a mut [Backend],
    pub(super) flows: &'a FlowTable,
    pub(super) recent: &'a Recent,
    pub(super) policy: &'a Policy,
    pub(super) registry: &'a ScitagsRegistry,
}

impl Pages<'_> {
    /// Renders the page of `route`: `/metrics`, `/flows` or `/flows/<tuple>`.
    pub(super) fn render(&mut self, route: Route<'_>, metrics: &mut Metrics, out: &mut Page) -> Status {
        let backends = &*self.backends;
        let label_of = |k: &crate::flow::FlowKey| backends.iter().find_map(|b| b.label_of(k));
        let view = View { flows: self.flows, recent: self.recent, registry: self.registry, policy: self.policy, label_of: &label_of };
        match route {
            Route::Metrics => {
                render_page(metrics, self.backends, self.flows, self.registry, out);
                Status::Ok
            }
            Route::Flows => {
                explain::write_flows(&view, explain::MAX_FLOWS, out.add_part());
                Status::Ok
            }
            Route::Flow(tuple) => explain::write_flow(&view, tuple, out.add_part()),
            Route::Index | Route::Error(_) => Status::NotFound,
        }
    }
}

/// Renders the `/metrics` page: process usage, then the flow backends' scrape (which may
/// count its own errors), then the whole store, then the per-flow families.
pub(super) fn render_page(metrics: &mut Metrics, backends: &mut [Backend], flows: &FlowTable, registry: &ScitagsRegistry, out: &mut Page) {
    match sys::process::sample() {
        Ok(p) => metrics.set_process(&p),
        Err(e) => log::debug!("process metrics unavailable: {e}"),
    }
    if let Some(loaded) = metrics.max(&refresh::LAST_SUCCESS) {
        let age = (Micros::now().0 as f64 / 1e6 - loaded).max(0.0);
        metrics.set(&crate::metrics::REGISTRY_AGE, Vec::new(), (age * 1000.0).round() / 1000.0);
    }
    for b in backends.iter_mut() {
        b.scrape(flows, metrics);
    }
    flows.count_by_activity(registry, metrics);
    metrics.render(out.add_part());
    for b in backends.iter_mut() {
        b.write_metrics(registry, out);
    }
}

pub(super) fn declare_metrics(m: &mut Metrics, cfg: &Config) {
    for d in [
        &EVENTS,
        &DECISIONS,
        &BAD_INPUT,
        &BACKEND_ERRORS,
        &RELOADS,
        &refresh::FAILURES,
        &crate::flow_table::OPEN,
        &crate::flow_table::BY_ACTIVITY,
        &crate::flow_table::UNTRACKED,
    ] {
        m.declare(d);
    }
    // Declared whatever the config, so dashboards always find them.
    for d in [&crate::backend::udp_firefly::SENT, &crate::backend::udp_firefly::SEND_ERRORS, &crate::plugin::np_api::RECREATED] {
        m.declare(d);
    }
    if cfg.backends.contains(&crate::config::BackendKind::Prometheus) {
        crate::backend::prometheus::FlowMetrics::declare(m);
    }
    if cfg.plugins.contains(&PluginKind::Api) {
        crate::plugin::api::declare(m);
    }
    if cfg.plugins.contains(&PluginKind::Firefly) && !cfg.firefly.forward.is_empty() {
        m.declare(&crate::plugin::firefly::FORWARDED);
    }
    crate::enrich::declare(m, cfg);
    m.clear(&BUILD_INFO);
    let join = |v: Vec<&str>| v.join(",");
    m.set(
        &BUILD_INFO,
        vec![
            env!("CARGO_PKG_VERSION").into(),
            join(cfg.plugins.iter().map(|p| p.name()).collect()).into(),
            join(cfg.backends.iter().map(|b| b.name()).collect()).into(),
        ],
        1.0,
    );
}

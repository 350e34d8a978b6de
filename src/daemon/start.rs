//! Building the daemon's parts from a config: plugins (each registered under its own
//! token), backends, the site policy, the enrichment layer and the metrics listener, and
//! swapping plugins and backends over on reload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::{Poll, Waker};

use super::{http, token, Error};
use crate::backend::Backend;
use crate::config::reload::Instances;
use crate::config::{BackendKind, Config, PluginKind};
use crate::context::OwnAddresses;
use crate::enrich::local::LocalAddrs;
use crate::enrich::Enricher;
use crate::metrics::Metrics;
use crate::plugin::Plugin;
use crate::policy::Policy;
use crate::sys;
use crate::sys::listen_fds::Inherited;

pub(super) fn build_plugins(cfg: &Config, poll: &Poll, handed: &Inherited) -> Result<Vec<Plugin>, Error> {
    cfg.plugins.iter().enumerate().map(|(i, kind)| start_plugin(*kind, cfg, poll, handed, i)).collect()
}

/// Builds plugin `kind` and registers it as the plugin at position `i`.
pub(super) fn start_plugin(kind: PluginKind, cfg: &Config, poll: &Poll, handed: &Inherited, i: usize) -> Result<Plugin, Error> {
    let mut p = Plugin::new(kind, cfg, handed)?;
    p.register(poll.registry(), token::plugin(i), token::plugin_conn_base(token::plugin(i)))?;
    log::info!("plugin {} started", p.name());
    Ok(p)
}

pub(super) fn build_backends(cfg: &Config) -> Result<Vec<Backend>, Error> {
    cfg.backends.iter().map(|kind| start_backend(*kind, cfg)).collect()
}

/// Builds backend `kind` (backends own no event sources: the loop only calls them).
pub(super) fn start_backend(kind: BackendKind, cfg: &Config) -> Result<Backend, Error> {
    let b = Backend::new(kind, cfg)?;
    log::info!("backend {} started", b.name());
    Ok(b)
}

/// The site policy as configured; EXCLUDE_DOMAINS lookups start with this host's own
/// addresses and wake the loop with `waker`.
pub(super) fn start_policy(cfg: &Config, waker: &Arc<Waker>, local: &mut LocalAddrs, metrics: &mut Metrics) -> Policy {
    let now = Instant::now();
    let mut p = Policy::new(&cfg.policy, Some(Arc::clone(waker)), now);
    let own = local.list(now).to_vec();
    p.warm(&own, now, metrics);
    p.declare(metrics);
    if !p.is_empty() {
        log::info!(
            "site policy: {} excluded network(s), {} excluded domain(s); a flow is skipped when {}",
            cfg.policy.networks.len(),
            cfg.policy.domains.len(),
            if cfg.policy.exclude_match == crate::config::ExcludeMatch::Either { "either endpoint matches" } else { "both endpoints match" }
        );
    }
    p
}

/// The enrichment layer as configured, started (its sockets under `token::ENRICH`).
pub(super) fn start_enricher(cfg: &Config, poll: &Poll, waker: &Arc<Waker>) -> Enricher {
    let mut e = Enricher::new(cfg);
    e.start(poll.registry(), token::ENRICH, waker, Instant::now());
    e
}
/// Moves `running` instances (plugins or backends) into `out` as `plan` says: first
/// stops every instance not kept (so a new one can take over the same pipe or port),
/// then keeps or starts one per position. On error, the instances not yet moved over
/// are stopped too and `out` holds those kept or started so far.
pub(super) fn swap<K: Copy + PartialEq, T>(
    running: Vec<T>,
    plan: &Instances<K>,
    mut stop: impl FnMut(&mut T),
    mut start: impl FnMut(K, usize) -> Result<T, Error>,
    out: &mut Vec<T>,
) -> Result<(), Error> {
    let mut old: Vec<Option<T>> = running.into_iter().map(Some).collect();
    for (i, slot) in old.iter_mut().enumerate() {
        if let Some(mut x) = slot.take_if(|_| !plan.kept(i)) {
            stop(&mut x);
        }
    }
    for (i, &(kind, _)) in plan.new.iter().enumerate() {
        let x = match old.get_mut(i).and_then(Option::take) {
            Some(x) => x,
            None => match start(kind, i) {
                Ok(x) => x,
                Err(e) => {
                    old.iter_mut().filter_map(Option::take).for_each(|mut x| stop(&mut x));
                    return Err(e);
                }
            },
        };
        out.push(x);
    }
    Ok(())
}

/// Starts the metrics listener unless PROMETHEUS_SRV_PORT is 0, on the listening socket
/// systemd handed over when it is bound to the configured address.
pub(super) fn start_http(cfg: &Config, poll: &Poll, handed: &Inherited, metrics: &mut Metrics) -> Result<Option<http::Http>, http::BindError> {
    if cfg.http.port == 0 {
        return Ok(None);
    }
    let addr = SocketAddr::new(cfg.http.host, cfg.http.port);
    let inherited = handed.metrics.as_ref().and_then(|l| match l.local_addr() {
        Ok(a) if sys::same_listen_address(a, addr) => l.try_clone().ok(),
        a => {
            log::warn!("metrics: the TCP listener handed over by systemd is bound to {a:?}, not PROMETHEUS_SRV_HOST/PORT {addr}; binding {addr} instead");
            None
        }
    });
    let h = http::bind(poll.registry(), addr, inherited, metrics)?;
    log::info!("metrics listener on http://{}/metrics", h.local_addr());
    Ok(Some(h))
}

//! The daemon: one `mio::Poll` that owns every source, and the fan-out to backends.
//!
//! Single-threaded. Each turn: sleep until an fd is ready or the earliest deadline
//! (`poll_at`) passes; let ready sources and due timers push `FlowEvent`s into `pending`
//! (plugins, and the enrichment layer's periodic `ongoing` events); then hand each event,
//! in order, to the site policy (which may exclude it), the flow table, the enrichment
//! layer (which attaches the public address and tcp_info) and every backend, counting
//! each decision in `flowd_decisions_total`. Signals
//! arrive through a signalfd in the same `Poll`: SIGTERM/SIGINT stop the loop after the
//! events already read are handled; SIGHUP/SIGUSR1 reload the config and the registry.
//! Only startup failures and `Poll::poll` failures are fatal.
//!
//! The loop and reload are here; building the parts is `start`, the fan-out `fanout`,
//! the HTTP pages and the declared metric families `pages`.

mod error;
mod fanout;
pub(crate) mod http;
mod pages;
pub(crate) mod refresh;
mod start;
pub(crate) mod token;

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Waker};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::backend::Backend;
use crate::config::reload::{Changes, Instances};
use crate::config::{self, BackendKind, Config, PluginKind};
use crate::context::Context;
use crate::decision::Rejection;
use crate::enrich::local::LocalAddrs;
use crate::enrich::Enricher;
use crate::flow::{FlowEvent, Origin};
use crate::flow_table::{FlowTable, Recent};
use crate::logger::RateLimit;
use crate::metrics::{Desc, Kind, Metrics, BACKEND_ERRORS};
use crate::plugin::Plugin;
use crate::policy::Policy;
use crate::registry::ScitagsRegistry;
use crate::sys::listen_fds::Inherited;
use crate::sys::notify::Notifier;
use crate::sys::{self, PidFile};
use crate::wire::http::Route;
use crate::wire::prom::Page;
use fanout::Stages;
use pages::{declare_metrics, Pages};
use refresh::Refresher;
use start::{build_backends, build_plugins, start_backend, start_enricher, start_http, start_plugin, start_policy, swap};
use token::Slot;

pub use error::Error;

/// Build information (constant 1).
pub(crate) static BUILD_INFO: Desc = Desc {
    name: "flowd_build_info",
    help: "flowd version and enabled plugins/backends (value is always 1).",
    kind: Kind::Gauge,
    labels: &["version", "plugins", "backends"],
};

/// Config reloads, by result.
pub(crate) static RELOADS: Desc =
    Desc { name: "flowd_config_reloads_total", help: "Configuration reloads (SIGHUP), by result.", kind: Kind::Counter, labels: &["result"] };

/// Where the configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file (reloaded from the same path on SIGHUP).
    File(PathBuf),
    /// Built-in defaults because the default path did not exist; a reload checks again.
    Defaults(PathBuf),
}

/// What a signal asks the loop to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Stop(Signal),
    Reload,
}

/// The running daemon.
pub struct Daemon {
    poll: Poll,
    events: Events,
    signals: SignalFd,
    waker: Arc<Waker>,
    source: ConfigSource,
    config: Config,
    registry: ScitagsRegistry,
    refresher: Refresher,
    plugins: Vec<Plugin>,
    backends: Vec<Backend>,
    /// tcp_info, `ongoing` events and public addresses for every backend.
    enricher: Enricher,
    flows: FlowTable,
    /// The site policy (EXCLUDE_*), asked about every event before the flow table.
    policy: Policy,
    /// Recently ended, excluded and rejected flows (`flowd explain`).
    recent: Recent,
    /// Announcements plugins rejected this turn (registry misses), for `recent`.
    rejected: Vec<Rejection>,
    /// This host's own addresses (lent to every participant through `Context::local`).
    local: LocalAddrs,
    metrics: Metrics,
    /// The metrics listener (`None` when PROMETHEUS_SRV_PORT is 0).
    http: Option<http::Http>,
    pending: Vec<FlowEvent>,
    backend_warn: RateLimit,
    _pid: Option<PidFile>,
    /// The fds systemd handed over (socket activation), kept for rebuilds on reload.
    handed: Inherited,
}

impl Daemon {
    /// Sets everything up: PID file, signals, registry, plugins, backends.
    pub fn new(config: Config, source: ConfigSource) -> Result<Daemon, Error> {
        sys::ignore_sigpipe();
        let pid = match &config.daemon.pid_file {
            Some(p) => Some(PidFile::create(p).map_err(|source| Error::PidFile { path: p.clone(), source })?),
            None => None,
        };
        // Block signals before any helper thread exists, so threads inherit the mask.
        let signals = sys::signal_fd().map_err(Error::Setup)?;
        let poll = Poll::new().map_err(Error::Setup)?;
        poll.registry().register(&mut SourceFd(&signals.as_raw_fd()), token::SIGNALS, Interest::READABLE).map_err(Error::Setup)?;
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER).map_err(Error::Setup)?);
        let mut metrics = Metrics::new();
        declare_metrics(&mut metrics, &config);
        let state = refresh::state_dir();
        let (registry, fetch_now) = refresh::initial(config.registry.api.as_deref(), config.registry.timeout, &state, &mut metrics);
        log::info!("registry: {} experiments from {}", registry.experiments.len(), registry.origin);
        let refresher =
            Refresher::new(config.registry.api.clone(), config.registry.refresh, config.registry.timeout, state, fetch_now, Arc::clone(&waker), Instant::now());
        let handed = sys::listen_fds::take();
        for r in &handed.rejected {
            log::warn!("socket activation: {r}");
        }
        let plugins = build_plugins(&config, &poll, &handed)?;
        let backends = build_backends(&config)?;
        let enricher = start_enricher(&config, &poll, &waker);
        let http = start_http(&config, &poll, &handed, &mut metrics)?;
        let mut local = LocalAddrs::new();
        let policy = start_policy(&config, &waker, &mut local, &mut metrics);
        Ok(Daemon {
            poll,
            events: Events::with_capacity(256),
            signals,
            waker,
            source,
            flows: FlowTable::new(config.daemon.flow_table_size),
            policy,
            recent: Recent::default(),
            rejected: Vec::new(),
            local,
            config,
            registry,
            refresher,
            plugins,
            backends,
            enricher,
            metrics,
            http,
            pending: Vec::with_capacity(1024),
            backend_warn: RateLimit::new(10, Duration::from_secs(10)),
            _pid: pid,
            handed,
        })
    }

    /// The earliest deadline of any source.
    fn next_deadline(&self) -> Option<Instant> {
        let p = self.plugins.iter().filter_map(Plugin::poll_at);
        let b = self.backends.iter().filter_map(Backend::poll_at);
        let h = self.http.as_ref().and_then(http::Http::poll_at);
        p.chain(b).chain(self.enricher.poll_at()).chain(self.refresher.poll_at()).chain(h).chain(self.policy.poll_at()).min()
    }

    /// Runs until SIGTERM/SIGINT. Returns an error only if polling itself fails.
    pub fn run(&mut self) -> Result<(), Error> {
        log::info!("flowd {} ready: {}", env!("CARGO_PKG_VERSION"), self.summary());
        // Every plugin and backend is up (Daemon::new built them): tell systemd (Type=notify).
        let notify = Notifier::from_env();
        notify.ready(&format!("running: {}", self.summary()));
        loop {
            let timeout = self.next_deadline().map(|at| at.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut self.events, timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Poll(e)),
                Ok(()) => {}
            }
            let control = self.turn();
            match control {
                Some(Control::Stop(sig)) => {
                    log::info!("received {sig}, shutting down");
                    notify.stopping(&format!("stopping ({sig})"));
                    self.shutdown();
                    return Ok(());
                }
                Some(Control::Reload) => {
                    notify.reloading();
                    self.reload();
                    notify.ready(&format!("running: {}", self.summary()));
                }
                None => {}
            }
        }
    }

    /// `plugins [a, b], backends [c]`: for the log and systemd's STATUS line.
    fn summary(&self) -> String {
        format!(
            "plugins [{}], backends [{}]",
            self.plugins.iter().map(Plugin::name).collect::<Vec<_>>().join(", "),
            self.backends.iter().map(Backend::name).collect::<Vec<_>>().join(", ")
        )
    }

    /// One loop turn after `poll` returned: ready sources, due timers, fan-out.
    fn turn(&mut self) -> Option<Control> {
        let Daemon {
            poll,
            events,
            signals,
            refresher,
            registry,
            plugins,
            backends,
            enricher,
            flows,
            policy,
            recent,
            rejected,
            local,
            metrics,
            http,
            pending,
            backend_warn,
            ..
        } = self;
        let now = Instant::now();
        let mut control = None;
        let mut new_registry = None;
        {
            let mut cx = Context::new(now, &mut *pending, &mut *rejected, &mut *metrics, &*registry, poll.registry(), local);
            for ev in events.iter() {
                match Slot::from(ev.token()) {
                    Slot::Signals => control = drain_signals(signals).or(control),
                    Slot::Waker => {
                        new_registry = refresher.on_wake(&mut cx);
                        enricher.on_wake(&mut cx);
                        policy.on_wake(now, cx.metrics);
                    }
                    Slot::Enrich => enricher.on_ready(&mut cx),
                    Slot::Plugin(i) => {
                        if let Some(p) = plugins.get_mut(i) {
                            let before = cx.out.len();
                            p.on_ready(&mut cx);
                            cx.out[before..].iter_mut().for_each(|e| e.origin = Origin::Plugin(i));
                        }
                    }
                    Slot::PluginConn(i, slot) => {
                        if let Some(p) = plugins.get_mut(i) {
                            let before = cx.out.len();
                            p.on_conn_ready(slot, &mut cx);
                            cx.out[before..].iter_mut().for_each(|e| e.origin = Origin::Plugin(i));
                        }
                    }
                    Slot::HttpListener | Slot::HttpConn(_) => {
                        if let Some(h) = http.as_mut() {
                            let conn = if let Slot::HttpConn(i) = Slot::from(ev.token()) { Some(i) } else { None };
                            let mut pages = Pages { backends, flows, recent, policy, registry: cx.registry };
                            let mut render = |r: Route<'_>, m: &mut Metrics, out: &mut Page| pages.render(r, m, out);
                            h.on_ready(conn, &mut cx.with_render(&mut render));
                        }
                    }
                    Slot::Unknown => {
                        log::debug!("event for unused token {:?}", ev.token());
                    }
                }
            }
            // Due timers: every participant has the same signature, checked in this order.
            let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
            for (i, p) in plugins.iter_mut().enumerate() {
                if due(p.poll_at()) {
                    let before = cx.out.len();
                    p.on_timeout(&mut cx);
                    cx.out[before..].iter_mut().for_each(|e| e.origin = Origin::Plugin(i));
                }
            }
            for b in backends.iter_mut().filter(|b| due(b.poll_at())) {
                b.on_timeout(&mut cx);
            }
            if due(enricher.poll_at()) {
                enricher.on_timeout(&mut cx);
            }
            if due(refresher.poll_at()) {
                refresher.on_timeout(&mut cx);
            }
            if due(policy.poll_at()) {
                policy.on_timeout(now);
            }
            if let Some(h) = http.as_mut().filter(|h| due(h.poll_at())) {
                let mut pages = Pages { backends, flows, recent, policy, registry: cx.registry };
                let mut render = |r: Route<'_>, m: &mut Metrics, out: &mut Page| pages.render(r, m, out);
                h.on_timeout(&mut cx.with_render(&mut render));
            }
            let mut stages = Stages { plugins, backends, enricher, flows, policy, recent, warn: backend_warn };
            stages.fan_out(&mut cx);
        }
        if let Some(r) = new_registry {
            *registry = r;
        }
        control
    }

    /// Re-reads the config file; a bad one is rejected and the running one kept.
    fn reload(&mut self) {
        let path = match &self.source {
            ConfigSource::File(p) | ConfigSource::Defaults(p) => p.clone(),
        };
        let loaded = if matches!(self.source, ConfigSource::Defaults(_)) && !path.exists() {
            log::info!("reload: {} still does not exist; keeping built-in defaults", path.display());
            Ok(config::Loaded { config: Config::default(), warnings: Vec::new() })
        } else {
            config::load(&path)
        };
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                self.metrics.inc(&RELOADS, &["rejected"]);
                log::error!("reload rejected, keeping the running configuration: {e}");
                if let config::ConfigError::Invalid { problems, warnings, .. } = &e {
                    for p in problems {
                        log::error!("  {p}");
                    }
                    for w in warnings {
                        log::warn!("  {w}");
                    }
                }
                return;
            }
        };
        for w in &loaded.warnings {
            log::warn!("config: {w}");
        }
        let new = loaded.config;
        let changes = Changes::between(&self.config, &new);
        if changes.pid_file {
            log::warn!("reload: PID_FILE changes take effect at the next restart");
        }
        if let Err(e) = self.swap_plugins(&new, &changes.plugins) {
            log::error!("reload: {}; restoring the previous plugins", e.chain());
            return self.restore(false);
        }
        if let Err(e) = self.swap_backends(&new, &changes.backends) {
            log::error!("reload: {}; restoring the previous backends", e.chain());
            return self.restore(true);
        }
        if changes.enrich {
            self.enricher.deregister(self.poll.registry());
            self.enricher = start_enricher(&new, &self.poll, &self.waker);
        }
        self.replay_open_flows(&changes.backends.built(), changes.enrich);
        if changes.http {
            self.restart_http(&new);
        }
        if changes.flow_table {
            self.flows.set_capacity(new.daemon.flow_table_size);
        }
        if changes.policy {
            self.policy = start_policy(&new, &self.waker, &mut self.local, &mut self.metrics);
        }
        if changes.registry {
            let state = refresh::state_dir();
            let (registry, fetch_now) = refresh::initial(new.registry.api.as_deref(), new.registry.timeout, &state, &mut self.metrics);
            self.registry = registry;
            self.refresher =
                Refresher::new(new.registry.api.clone(), new.registry.refresh, new.registry.timeout, state, fetch_now, Arc::clone(&self.waker), Instant::now());
        }
        declare_metrics(&mut self.metrics, &new);
        self.config = new;
        self.metrics.inc(&RELOADS, &["applied"]);
        log::info!("configuration reloaded from {} ({})", path.display(), changes.summary());
    }

    /// Swaps the running plugins for those of `cfg` as `plan` says (kept ones stay).
    fn swap_plugins(&mut self, cfg: &Config, plan: &Instances<PluginKind>) -> Result<(), Error> {
        let (running, poll, handed) = (std::mem::take(&mut self.plugins), &self.poll, &self.handed);
        swap(running, plan, |p| p.deregister(poll.registry()), |k, i| start_plugin(k, cfg, poll, handed, i), &mut self.plugins)
    }

    /// Swaps the running backends for those of `cfg` as `plan` says (kept ones stay).
    fn swap_backends(&mut self, cfg: &Config, plan: &Instances<BackendKind>) -> Result<(), Error> {
        let running = std::mem::take(&mut self.backends);
        swap(running, plan, |_| {}, |k, _| start_backend(k, cfg), &mut self.backends)
    }

    /// Moves the metrics listener to the new address; if that fails, back to the old one.
    fn restart_http(&mut self, new: &Config) {
        // Close first: the new address may be the same port on another host address.
        if let Some(h) = self.http.take() {
            h.close(self.poll.registry());
        }
        match start_http(new, &self.poll, &self.handed, &mut self.metrics) {
            Ok(h) => self.http = h,
            Err(e) => {
                log::error!("reload: {e}; keeping the previous metrics address");
                match start_http(&self.config, &self.poll, &self.handed, &mut self.metrics) {
                    Ok(h) => self.http = h,
                    Err(e) => log::error!("reload: {e}; metrics listener stopped"),
                }
            }
        }
    }

    /// Gives the flows that are still open to the re-created stateful backends at
    /// positions `rebuilt` (e.g. the marker's map is new and empty) and, when
    /// `enricher_rebuilt`, to the new enrichment layer, as `start` events with their
    /// original start time. What kept running is not given them again.
    fn replay_open_flows(&mut self, rebuilt: &[usize], enricher_rebuilt: bool) {
        let Daemon { poll, registry, backends, enricher, flows, local, metrics, pending, rejected, .. } = self;
        let fresh: Vec<usize> = rebuilt.iter().copied().filter(|i| backends.get(*i).is_some_and(Backend::keeps_flow_state)).collect();
        let adopt = enricher_rebuilt && enricher.tracks_flows();
        if (fresh.is_empty() && !adopt) || flows.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut cx = Context::new(now, &mut *pending, &mut *rejected, &mut *metrics, &*registry, poll.registry(), local);
        let mut n = 0usize;
        for (key, f) in flows.iter() {
            let mut ev = FlowEvent::new(crate::flow::FlowState::Start, *key, f.exp, f.act, f.start);
            ev.start_time = Some(f.start);
            ev.relayed = f.relay.map(|origin| Box::new(crate::flow::Relayed { origin, received: None }));
            if adopt {
                enricher.adopt(&ev);
            }
            for &i in &fresh {
                let Some(b) = backends.get_mut(i) else { continue };
                if let Err(e) = b.handle(&ev, &mut cx) {
                    cx.metrics.inc(&BACKEND_ERRORS, &[b.name(), e.reason()]);
                }
            }
            n += 1;
        }
        log::info!("reload: replayed {n} open flows to the re-created backends and enrichment layer");
    }

    /// Rebuilds the plugins, and the backends too when `backends` (their swap failed),
    /// from the running config after a failed reload.
    fn restore(&mut self, backends: bool) {
        self.metrics.inc(&RELOADS, &["failed"]);
        for p in self.plugins.iter_mut() {
            p.deregister(self.poll.registry());
        }
        self.plugins.clear();
        match build_plugins(&self.config, &self.poll, &self.handed) {
            Ok(p) => self.plugins = p,
            Err(e) => log::error!("reload: cannot restore plugins: {}", e.chain()),
        }
        if backends {
            self.backends.clear();
            match build_backends(&self.config) {
                Ok(b) => {
                    self.backends = b;
                    self.replay_open_flows(&(0..self.backends.len()).collect::<Vec<_>>(), false);
                }
                Err(e) => log::error!("reload: cannot restore backends: {}", e.chain()),
            }
        }
    }

    /// Clean exit: stop sources, remove the pipe (as the Python flowd does).
    fn shutdown(&mut self) {
        for p in self.plugins.iter_mut() {
            p.deregister(self.poll.registry());
            p.shutdown();
        }
        self.plugins.clear();
        self.backends.clear();
        self.enricher.deregister(self.poll.registry());
        log_totals(&self.metrics);
        log::info!("flowd stopped");
    }
}

/// Logs every non-zero counter once (at shutdown), one line per family:
/// `totals: flowd_bad_input_total np_api/bad_state=12 np_api/bad_port=3`, so that
/// what was received, sent and rejected is on record even without a metrics scrape.
fn log_totals(metrics: &Metrics) {
    for (desc, series) in metrics.families() {
        if desc.kind != Kind::Counter {
            continue;
        }
        let parts: Vec<String> = series.iter().filter(|(_, v)| *v > 0.0).map(|(labels, v)| format!("{}={v}", labels.join("/"))).collect();
        if !parts.is_empty() {
            log::info!("totals: {} {}", desc.name, parts.join(" "));
        }
    }
}

fn drain_signals(signals: &mut SignalFd) -> Option<Control> {
    let mut control = None;
    loop {
        match signals.read_signal() {
            Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => control = Some(Control::Stop(s)),
                Ok(Signal::SIGHUP | Signal::SIGUSR1) if control.is_none() => control = Some(Control::Reload),
                _ => {}
            },
            Ok(None) => return control,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                log::error!("reading signals failed: {e}");
                return control;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::prometheus::{self, FlowMetrics};
    use crate::enrich::dump::replay_recorded;
    use crate::enrich::tcp::TcpCache;
    use crate::flow::{FlowState, Micros};
    use crate::plugin::conn_table::{ConnFilter, ConnTable};
    use crate::plugin::netlink::Scan;
    use crate::wire::sock_diag::{Family, Filter};

    /// The netlink plugin's scan, the enrichment layer's tcp_info cache and the prometheus
    /// scrape are three sinks of the one dump machine: the same recorded replies go
    /// through it for each, and each gets what it needs from them.
    #[test]
    fn test_scan_enrichment_and_scrape_run_on_one_dump_machine() {
        let mut metrics = Metrics::new();
        // The scan: every established connection of the recording is a new flow.
        let mut table = ConnTable::new(ConnFilter::default());
        let mut found = Vec::new();
        table.begin();
        let (asked, conns) = replay_recorded(Filter::established(false), &mut Scan::new(&mut table, (2, 9), Micros(1), &mut found));
        assert_eq!((asked, conns, found.len()), (Family::BOTH.to_vec(), 6, 6));
        assert!(found.iter().all(|e| e.state == FlowState::Start && (e.exp, e.act) == (2, 9)));
        assert_eq!(found.iter().filter(|e| e.key.is_ipv6()).count(), 2, "the IPv4-mapped socket is an IPv4 flow");
        // Enrichment: each of those flows gets the tcp_info of its own socket.
        let mut cache = TcpCache::new(100);
        found.iter().for_each(|e| assert!(cache.observe(e).is_none()));
        cache.next_generation();
        assert_eq!(replay_recorded(Filter::established(true), &mut cache), (Family::BOTH.to_vec(), 6));
        for e in &found {
            let s = cache.observe(&FlowEvent::new(FlowState::Ongoing, e.key, 2, 9, Micros(2))).expect("a tcp_info sample");
            assert!(!s.reversed && s.info.rtt().is_some(), "{}: its own socket", e.key);
        }
        // The scrape: every flow gets its series; IPv6 is dumped only when it can matter.
        let mut flows = FlowTable::new(100);
        for e in found.iter_mut() {
            flows.track(e, &mut metrics);
        }
        let registry = ScitagsRegistry::bundled();
        let mut p = FlowMetrics::new();
        let rows = |p: &mut FlowMetrics| {
            let mut page = Page::new();
            p.write(&registry, &mut page);
            String::from_utf8(page.to_vec()).unwrap_or_default().lines().filter(|l| l.starts_with("flow_tcp_rtt{")).count()
        };
        assert_eq!(replay_recorded(prometheus::FILTER, &mut p.sink(&flows)).0, Family::BOTH);
        assert_eq!(rows(&mut p), 6);
        // Only the flows of the IPv4 sockets, each matched by its own socket in the IPv4
        // dump: the IPv6 dump cannot change the page and is not asked for.
        let mut v4_only = FlowTable::new(100);
        for e in found.iter_mut().take(3) {
            v4_only.track(e, &mut metrics);
        }
        assert_eq!(replay_recorded(prometheus::FILTER, &mut p.sink(&v4_only)), (vec![Family::V4], 3));
        assert_eq!(rows(&mut p), 3);
    }
}

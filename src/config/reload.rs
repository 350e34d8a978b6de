//! What a reload must redo, decided per component: which running plugins and backends
//! are kept, which are built anew, and whether the metrics listener, the flow table and
//! the registry change.
//!
//! Each plugin and backend kind states here which parts of [`Config`] it is built from
//! (`reads_same`); a running instance is kept exactly when those parts are equal in the
//! old and the new configuration (and the list still has its kind at its position, so
//! it keeps its poll token). Pure: the daemon acts on the [`Changes`].

use super::keys::Component;
use super::model::{BackendKind, Config, PluginKind};

impl PluginKind {
    /// True when `a` and `b` are the same to this plugin (everything `Plugin::new`
    /// reads for it is equal): a reload keeps it running.
    pub(crate) fn reads_same(self, a: &Config, b: &Config) -> bool {
        match self {
            PluginKind::NpApi => a.np_api == b.np_api,
            PluginKind::Netlink => a.netlink == b.netlink,
            PluginKind::Netstat => a.netstat == b.netstat,
            // The iperf scanner scans with the netstat plugin's period and filter.
            PluginKind::Iperf => (&a.iperf, &a.netstat) == (&b.iperf, &b.netstat),
            PluginKind::Firefly => a.firefly == b.firefly,
            // It only configures the marker (whose decision below covers its keys).
            PluginKind::Perfsonar => true,
            PluginKind::Api => a.api == b.api,
        }
    }
}

impl BackendKind {
    /// True when `a` and `b` are the same to this backend (everything `Backend::new`
    /// reads for it is equal): a reload keeps it running.
    pub(crate) fn reads_same(self, a: &Config, b: &Config) -> bool {
        match self {
            // Its own keys and the firefly listener's port (no relaying back to it).
            BackendKind::UdpFirefly => (&a.udp_firefly, a.firefly.port) == (&b.udp_firefly, b.firefly.port),
            // Its own keys, and whether (and with what) the perfsonar plugin asks it to
            // mark every packet no flow claims.
            BackendKind::Ebpf => (&a.marker, a.match_all()) == (&b.marker, b.match_all()),
            // Built from nothing in the configuration.
            BackendKind::Prometheus | BackendKind::Dummy => true,
        }
    }
}

/// The instances of one list (plugins or backends) across a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Instances<K> {
    /// The new list, in order: each kind, and `true` when a new instance is built
    /// (`false`: the running instance at the same position is kept).
    pub new: Vec<(K, bool)>,
    /// The kinds that ran before the reload, in order.
    pub old: Vec<K>,
}

impl<K: Copy + PartialEq> Instances<K> {
    /// Keeps the instance at position `i` when the old list has the same kind there and
    /// `same(kind)` says its settings did not change.
    fn decide(old: &[K], new: &[K], same: impl Fn(K) -> bool) -> Instances<K> {
        let new = new.iter().enumerate().map(|(i, &k)| (k, !(old.get(i) == Some(&k) && same(k)))).collect();
        Instances { new, old: old.to_vec() }
    }

    /// True when the running instance at position `i` stays (same position afterwards).
    pub(crate) fn kept(&self, i: usize) -> bool {
        self.new.get(i).is_some_and(|(_, build)| !build)
    }

    /// The positions (in the new list) of the instances that are built anew.
    pub(crate) fn built(&self) -> Vec<usize> {
        self.new.iter().enumerate().filter(|(_, (_, build))| *build).map(|(i, _)| i).collect()
    }

    /// `plugins unchanged`, or e.g. `plugins restarted [netlink], started [firefly],
    /// stopped [netstat]`.
    pub(crate) fn describe(&self, what: &str, name: fn(K) -> &'static str) -> String {
        let built = || self.new.iter().filter(|(_, build)| *build).map(|(k, _)| *k);
        let restarted: Vec<K> = built().filter(|k| self.old.contains(k)).collect();
        let started: Vec<K> = built().filter(|k| !self.old.contains(k)).collect();
        let stopped: Vec<K> = self.old.iter().copied().filter(|k| !self.new.iter().any(|(n, _)| n == k)).collect();
        let parts: Vec<String> = [("restarted", restarted), ("started", started), ("stopped", stopped)]
            .into_iter()
            .filter(|(_, ks)| !ks.is_empty())
            .map(|(verb, ks)| format!("{verb} [{}]", ks.into_iter().map(name).collect::<Vec<_>>().join(", ")))
            .collect();
        if parts.is_empty() {
            format!("{what} unchanged")
        } else {
            format!("{what} {}", parts.join(", "))
        }
    }
}

/// What a reload from one configuration to the next redoes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Plugins kept and built.
    pub plugins: Instances<PluginKind>,
    /// Backends kept and built.
    pub backends: Instances<BackendKind>,
    /// The enrichment layer is rebuilt: its keys (tcp_info, ongoing, discovery) or its
    /// flow capacity (FLOW_TABLE_SIZE) changed, or udp_firefly, which it serves, came or went.
    pub enrich: bool,
    /// The metrics listener moves (PROMETHEUS_SRV_HOST/PORT).
    pub http: bool,
    /// The flow table's capacity changes (FLOW_TABLE_SIZE).
    pub flow_table: bool,
    /// The registry is fetched again and its refresher restarted (FLOW_MAP_*).
    pub registry: bool,
    /// PID_FILE changed (this takes effect at the next restart only).
    pub pid_file: bool,
    /// The site policy is rebuilt (EXCLUDE_*): new rules, domain lookups started over.
    pub policy: bool,
}

impl Changes {
    /// Compares `old` and `new` component by component.
    pub(crate) fn between(old: &Config, new: &Config) -> Changes {
        Changes {
            plugins: Instances::decide(&old.plugins, &new.plugins, |k| k.reads_same(old, new)),
            backends: Instances::decide(&old.backends, &new.backends, |k| k.reads_same(old, new)),
            enrich: !Component::Enrich.same(old, new)
                || !Component::Discovery.same(old, new)
                || old.daemon.flow_table_size != new.daemon.flow_table_size
                || old.backends.contains(&BackendKind::UdpFirefly) != new.backends.contains(&BackendKind::UdpFirefly),
            http: !Component::Http.same(old, new),
            flow_table: old.daemon.flow_table_size != new.daemon.flow_table_size,
            registry: !Component::Registry.same(old, new),
            pid_file: old.daemon.pid_file != new.daemon.pid_file,
            policy: !Component::Policy.same(old, new),
        }
    }

    /// What was redone, for the log: `plugins unchanged; backends restarted
    /// [udp_firefly]; metrics listener restarted`.
    pub(crate) fn summary(&self) -> String {
        let mut parts = vec![self.plugins.describe("plugins", PluginKind::name), self.backends.describe("backends", BackendKind::name)];
        for (changed, what) in [
            (self.enrich, "enrichment restarted"),
            (self.http, "metrics listener restarted"),
            (self.flow_table, "flow table resized"),
            (self.registry, "registry reloaded"),
            (self.policy, "site policy rebuilt"),
        ] {
            if changed {
                parts.push(what.to_string());
            }
        }
        parts.join("; ")
    }
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;

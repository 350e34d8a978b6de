//! Tests of the reload decision: each setting restarts exactly what reads it.
use super::*;
use crate::config::from_text;
use crate::config::keys::{self, Component};
use std::path::Path;

/// Every plugin and every backend running.
const ALL: &str = "PLUGIN='np_api,netlink,netstat,iperf,firefly,perfsonar,api'\nBACKEND='udp_firefly,ebpf,prometheus,dummy'\n\
                   NETSTAT_EXPERIMENT=1\nNETSTAT_ACTIVITY=1\nNETLINK_EXPERIMENT=1\nNETLINK_ACTIVITY=1\nIPERF_FLOW_ID=[(1, 1)]\n\
                   PERFSONAR_EXPERIMENT=1\nPERFSONAR_ACTIVITY=1\n";

fn cfg(text: &str) -> Config {
    match from_text(text, Path::new("t.cfg")) {
        Ok(l) => l.config,
        Err(e) => panic!("{text}: {e:?}"),
    }
}

fn built_plugins(c: &Changes) -> Vec<&'static str> {
    c.plugins.built().into_iter().map(|i| c.plugins.new[i].0.name()).collect()
}

fn built_backends(c: &Changes) -> Vec<&'static str> {
    c.backends.built().into_iter().map(|i| c.backends.new[i].0.name()).collect()
}

/// Bug: the backends were rebuilt (the eBPF marker re-attached) when only the metrics
/// listener moved, though no backend reads PROMETHEUS_SRV_*.
#[test]
fn test_only_the_metrics_port_changed_rebuilds_no_backend() {
    let old = cfg(ALL);
    let new = cfg(&format!("{ALL}PROMETHEUS_SRV_PORT=9100\n"));
    let c = Changes::between(&old, &new);
    assert!(c.http);
    assert_eq!(built_backends(&c), Vec::<&str>::new());
    assert_eq!(built_plugins(&c), Vec::<&str>::new());
    assert_eq!(c.summary(), "plugins unchanged; backends unchanged; metrics listener restarted");
}

/// Bug: udp_firefly kept the old FIREFLY_LISTENER_PORT for its relay-loop check.
#[test]
fn test_listener_port_change_rebuilds_udp_firefly() {
    let old = cfg(ALL);
    let new = cfg(&format!("{ALL}FIREFLY_LISTENER_PORT=10600\n"));
    let c = Changes::between(&old, &new);
    assert_eq!(built_backends(&c), ["udp_firefly"]);
    assert_eq!(built_plugins(&c), ["firefly"]);
    // Without the firefly plugin, the port still matters to udp_firefly (and to nothing else).
    let c = Changes::between(&Config::default(), &cfg("FIREFLY_LISTENER_PORT=10600\n"));
    assert_eq!((built_plugins(&c), built_backends(&c)), (vec![], vec!["udp_firefly"]));
    assert_eq!(c.summary(), "plugins unchanged; backends restarted [udp_firefly]");
}

/// Bug: the tcp_info/ongoing flow map (now the enrichment layer's) kept the old
/// FLOW_TABLE_SIZE.
#[test]
fn test_flow_table_size_change_resizes_the_table_and_rebuilds_the_enrichment_layer() {
    let old = cfg(ALL);
    let new = cfg(&format!("{ALL}FLOW_TABLE_SIZE=1000\n"));
    let c = Changes::between(&old, &new);
    assert!(c.flow_table && c.enrich);
    assert_eq!(built_backends(&c), Vec::<&str>::new());
    assert_eq!(built_plugins(&c), Vec::<&str>::new());
    assert!(!c.http && !c.registry && !c.pid_file);
    assert_eq!(c.summary(), "plugins unchanged; backends unchanged; enrichment restarted; flow table resized");
}

#[test]
fn test_enrichment_follows_its_keys_and_the_udp_firefly_backend() {
    let c = Changes::between(&cfg(ALL), &cfg(&format!("{ALL}UDP_FIREFLY_ONGOING_INTERVAL=30\n")));
    assert!(c.enrich && built_backends(&c).is_empty());
    let c = Changes::between(&cfg("BACKEND='udp_firefly'\n"), &cfg("BACKEND='dummy'\n"));
    assert!(c.enrich, "udp_firefly went: the layer it serves is rebuilt (off)");
    let c = Changes::between(&cfg("BACKEND='udp_firefly'\n"), &cfg("BACKEND='udp_firefly,dummy'\n"));
    assert!(!c.enrich);
}

/// What a reload must redo when only `name` changes, everything running:
/// (plugins built, backends built, [enrich, http, flow_table, registry, pid_file, policy]).
fn expected(name: &str) -> (Vec<&'static str>, Vec<&'static str>, [bool; 6]) {
    let none = [false; 6];
    match keys::find(name).map(|k| k.component) {
        Some(Component::Registry) => (vec![], vec![], [false, false, false, true, false, false]),
        Some(Component::NpApi) => (vec!["np_api"], vec![], none),
        _ if name == "PID_FILE" => (vec![], vec![], [false, false, false, false, true, false]),
        _ if name == "FLOW_TABLE_SIZE" => (vec![], vec![], [true, false, true, false, false, false]),
        Some(Component::UdpFirefly) => (vec![], vec!["udp_firefly"], none),
        Some(Component::Enrich | Component::Discovery) => (vec![], vec![], [true, false, false, false, false, false]),
        Some(Component::Netstat) => (vec!["netstat", "iperf"], vec![], none),
        Some(Component::Netlink) => (vec!["netlink"], vec![], none),
        Some(Component::Iperf) => (vec!["iperf"], vec![], none),
        _ if name == "FIREFLY_LISTENER_PORT" => (vec!["firefly"], vec!["udp_firefly"], none),
        Some(Component::Firefly) => (vec!["firefly"], vec![], none),
        Some(Component::Api) => (vec!["api"], vec![], none),
        Some(Component::Marker) => (vec![], vec!["ebpf"], none),
        _ if name == "PROMETHEUS_SS_PATH" => (vec![], vec![], none),
        Some(Component::Http) => (vec![], vec![], [false, true, false, false, false, false]),
        Some(Component::Policy) => (vec![], vec![], [false, false, false, false, false, true]),
        other => panic!("{name}: no expectation for {other:?}"),
    }
}

#[test]
fn test_each_key_restarts_exactly_what_reads_it() {
    let old = cfg(ALL);
    for name in keys::names().filter(|n| !["PLUGIN", "BACKEND"].contains(n)) {
        let new = cfg(&format!("{ALL}{name}={}\n", keys::tests::sample(name)));
        let c = Changes::between(&old, &new);
        let got = (built_plugins(&c), built_backends(&c), [c.enrich, c.http, c.flow_table, c.registry, c.pid_file, c.policy]);
        assert_eq!(got, expected(name), "{name}");
    }
    let same = Changes::between(&old, &cfg(ALL));
    assert_eq!(same.summary(), "plugins unchanged; backends unchanged", "nothing changed, nothing restarts");
}

#[test]
fn test_list_changes_keep_instances_at_their_positions() {
    let old = cfg("BACKEND='udp_firefly,ebpf'\n");
    // Appended: only the new one starts.
    let c = Changes::between(&old, &cfg("BACKEND='udp_firefly,ebpf,dummy'\n"));
    assert_eq!(built_backends(&c), ["dummy"]);
    assert!(c.backends.kept(0) && c.backends.kept(1) && !c.backends.kept(2));
    assert_eq!(c.backends.describe("backends", BackendKind::name), "backends started [dummy]");
    // Dropped from the end: the others stay.
    let c = Changes::between(&old, &cfg("BACKEND='udp_firefly'\n"));
    assert_eq!(built_backends(&c), Vec::<&str>::new());
    assert_eq!(c.backends.describe("backends", BackendKind::name), "backends stopped [ebpf]");
    // Reordered: every moved instance is rebuilt under its new position's token.
    let c = Changes::between(&old, &cfg("BACKEND='ebpf,udp_firefly'\n"));
    assert_eq!(built_backends(&c), ["ebpf", "udp_firefly"]);
    assert_eq!(c.backends.describe("backends", BackendKind::name), "backends restarted [ebpf, udp_firefly]");
    // Replaced in place.
    let c = Changes::between(&cfg("PLUGIN='np_api,netstat'\nNETSTAT_EXPERIMENT=1\nNETSTAT_ACTIVITY=1\n"), &cfg("PLUGIN='np_api,firefly'\n"));
    assert_eq!(built_plugins(&c), ["firefly"]);
    assert!(c.plugins.kept(0));
    assert_eq!(c.plugins.describe("plugins", PluginKind::name), "plugins started [firefly], stopped [netstat]");
}

#[test]
fn test_registry_and_pid_file() {
    let c = Changes::between(&Config::default(), &cfg("FLOW_MAP_TIMEOUT=3\nPID_FILE=''\n"));
    assert!(c.registry && c.pid_file && !c.http && !c.flow_table);
    assert_eq!(c.summary(), "plugins unchanged; backends unchanged; registry reloaded");
}

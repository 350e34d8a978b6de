//! Tests of the key table: it is consistent with itself and with `Config`.
use super::*;
use crate::config::from_text;
use std::collections::HashSet;
use std::path::Path;

fn load(text: &str) -> Result<(Config, Vec<String>), Vec<String>> {
    match from_text(text, Path::new("t.cfg")) {
        Ok(l) => Ok((l.config, l.warnings)),
        Err(crate::config::ConfigError::Invalid { problems, .. }) => Err(problems),
        Err(e) => Err(vec![e.to_string()]),
    }
}

/// A valid value other than the default, for every name (aliases too).
pub(crate) fn sample(name: &str) -> &'static str {
    match name {
        "PLUGIN" => "'np_api,firefly'",
        "BACKEND" => "'udp_firefly,dummy'",
        "FLOW_MAP_API" => "'/etc/flowd/api.json'",
        "FLOW_MAP_REFRESH" => "0",
        "FLOW_MAP_TIMEOUT" => "3",
        "NP_API_FILE" => "'/run/flowd.pipe'",
        "NP_API_FILE_MODE" => "0o620",
        "NP_API_FILE_OWNER" => "'flowd'",
        "NP_API_FILE_GROUP" => "'xrootd'",
        "PID_FILE" => "''",
        "FLOW_TABLE_SIZE" => "1000",
        "UDP_FIREFLY_PORT" => "10515",
        "UDP_FIREFLY_TO_PEER" => "False",
        "UDP_FIREFLY_DST" => "'collector.example.org'",
        "UDP_FIREFLY_IP4_SRC" => "'192.0.2.1'",
        "UDP_FIREFLY_IP6_SRC" => "'2001:db8::1'",
        "UDP_FIREFLY_NETLINK" | "UDP_FIREFLY_WITH_NETLINK" => "True",
        "UDP_FIREFLY_ONGOING_INTERVAL" => "5",
        "UDP_FIREFLY_NETLINK_INTERVAL" => "3",
        "IP_DISCOVERY_ENABLED" => "True",
        "IP_DISCOVERY_STUN_SERVERS" => "'127.0.0.1:3478'",
        "IP_DISCOVERY_INTERVAL" => "60",
        "IP_DISCOVERY_TIMEOUT" => "0.1",
        "IP_DISCOVERY_HTTP_URLS" => "'https://api4.my-ip.io/ip'",
        "IP_DISCOVERY_MAP" => "'10.0.0.5=192.0.2.5'",
        "NETSTAT_EXPERIMENT" | "NETLINK_EXPERIMENT" => "'atlas'",
        "NETSTAT_ACTIVITY" | "NETLINK_ACTIVITY" => "2",
        "NETSTAT_INTERNAL_NETWORKS" | "NETLINK_INTERNAL_NETWORKS" => "'10.0.0.0/8'",
        "NETSTAT_TIMEOUT" | "NETLINK_TIMEOUT" => "1",
        "NETSTAT_INCLUDE_PRIVATE" | "NETLINK_INCLUDE_PRIVATE" => "True",
        "NETLINK_DUMP_TIMEOUT" => "1",
        "IPERF_FLOW_ID" => "[(2, 2)]",
        "IPERF_PORTS" => "(5202, '6000-6010')",
        "IPERF_LOCAL_PORTS" => "('2340-2350',)",
        "IPERF_REMOTE_PORTS" => "5201",
        "UDP_FIREFLY_SYSLOG" => "False",
        "API_HOST" => "'::1'",
        "API_PORT" => "7778",
        "IPERF_ROUND_ROBIN" => "True",
        "FIREFLY_LISTENER_HOST" => "'0.0.0.0'",
        "FIREFLY_LISTENER_PORT" => "10515",
        "FIREFLY_LISTENER_ALLOW" => "('192.0.2.0/24', '::1')",
        "FIREFLY_FORWARD" => "'127.0.0.1:10600'",
        "NETWORK_INTERFACE" => "'eth0'",
        "EBPF_MAP_SIZE" => "1024",
        "EBPF_MARKING" => "'hopByHopDestination'",
        "PERFSONAR_EXPERIMENT" => "'cms'",
        "PERFSONAR_ACTIVITY" => "2",
        "PROMETHEUS_SRV_HOST" => "'::1'",
        "PROMETHEUS_SRV_PORT" => "9100",
        "PROMETHEUS_SS_PATH" => "'/usr/sbin/ss'",
        "EXCLUDE_NETWORKS" => "('10.0.0.0/8', '2001:db8::/32')",
        "EXCLUDE_DOMAINS" => "'example.org'",
        "EXCLUDE_MATCH" => "'either'",
        "EXCLUDE_DOMAINS_REFRESH" => "60",
        other => panic!("no sample value for {other}: add one to keys_tests.rs"),
    }
}

#[test]
fn test_names_are_unique_and_found() {
    let mut seen = HashSet::new();
    for n in names() {
        assert!(seen.insert(n), "{n} is declared twice");
        assert!(n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'), "{n}");
        assert!(find(n).is_some_and(|k| k.all_names().any(|m| m == n)));
    }
    assert_eq!(find("UDP_FIREFLY_WITH_NETLINK").map(|k| k.name), Some("UDP_FIREFLY_NETLINK"));
    assert!(find("udp_firefly_port").is_none(), "names are case-sensitive");
}

#[test]
fn test_components_are_grouped_in_order() {
    let order: Vec<Component> = TABLE.iter().map(|k| k.component).fold(Vec::new(), |mut v, c| {
        if v.last() != Some(&c) {
            v.push(c);
        }
        v
    });
    assert_eq!(order, Component::ALL.to_vec(), "each component's keys must form one run, in Component::ALL order");
}

#[test]
fn test_every_key_is_documented_and_shows_a_value() {
    for k in TABLE {
        assert!(!k.doc.is_empty() && k.doc.ends_with('.'), "{}: doc must be one sentence ending in '.'", k.name);
        assert!(k.long.is_empty() || k.long.ends_with('.'), "{}", k.name);
        assert!(!k.means.ends_with('.'), "{}: means is a phrase", k.name);
        assert!(k.shown_value().is_some(), "{}: needs a default or an example", k.name);
        assert!(k.default.is_some() || k.means.is_empty(), "{}: means explains a default", k.name);
        for text in [k.doc, k.long, k.means] {
            assert_eq!(text.matches('`').count() % 2, 0, "{}: unbalanced backticks", k.name);
        }
    }
    assert_eq!(TABLE.iter().filter(|k| k.active).map(|k| k.name).collect::<Vec<_>>(), ["PLUGIN", "BACKEND"]);
}

#[test]
fn test_default_values_give_the_default_config() {
    for k in TABLE {
        for n in k.all_names() {
            let Some(d) = k.default else { continue };
            let (c, w) = load(&format!("{n}={d}\n")).unwrap_or_else(|p| panic!("{n}={d}: {p:?}"));
            assert_eq!(c, Config::default(), "{n}={d} is not the default");
            assert_eq!(w.len(), usize::from(k.unused.is_some() || n == "PROMETHEUS_SRV_PORT"), "{n}={d}: {w:?}");
        }
    }
}

#[test]
fn test_examples_are_valid() {
    for k in TABLE {
        if let Some(x) = k.example {
            assert!(load(&format!("{}={x}\n", k.name)).is_ok(), "{}={x}", k.name);
            assert_ne!(Some(x), k.default, "{}: an example equal to the default is not one", k.name);
        }
    }
}

/// Each key writes into its own component's struct and nowhere else: the component
/// declared in the table is the one a reload compares.
#[test]
fn test_each_key_sets_only_its_component() {
    let d = Config::default();
    for k in TABLE {
        for n in k.all_names() {
            let v = sample(n);
            assert_ne!(Some(v), k.default, "{n}: the sample must differ from the default");
            let (c, w) = load(&format!("{n}={v}\n")).unwrap_or_else(|p| panic!("{n}={v}: {p:?}"));
            // The port alone draws the Python flowd migration notice (loopback only).
            let notices = usize::from(k.unused.is_some() || (n == "PROMETHEUS_SRV_PORT" && c.http.port != 0));
            assert_eq!(w.len(), notices, "{n}={v}: {w:?}");
            let changed: Vec<Component> = Component::ALL.into_iter().filter(|x| !x.same(&c, &d)).collect();
            let expect = if k.unused.is_some() { vec![] } else { vec![k.component] };
            assert_eq!(changed, expect, "{n}={v} changed {changed:?}, the table says {:?}", k.component);
        }
    }
}

#[test]
fn test_type_texts_state_the_ranges() {
    let ty = |n: &str| find(n).map(|k| k.parse.type_text()).unwrap_or_default();
    assert_eq!(ty("UDP_FIREFLY_PORT"), "integer from 1 to 65535");
    assert_eq!(ty("FLOW_MAP_TIMEOUT"), "seconds, at least 0.1");
    assert_eq!(ty("FLOW_MAP_REFRESH"), "seconds");
    assert_eq!(ty("UDP_FIREFLY_TO_PEER"), "True/False");
    assert_eq!(ty("NETSTAT_EXPERIMENT"), "id or registry name");
    // The range in the docs is the range enforced.
    let p = load("IP_DISCOVERY_INTERVAL=9.5\n").unwrap_err();
    assert!(p[0].contains("(at least 10)"), "{p:?}");
}

#[test]
fn test_policy_keys_check_their_values() {
    let (c, _) = load("EXCLUDE_NETWORKS='10.1.2.3/8, fd00::/8'\nEXCLUDE_MATCH='Either'\nEXCLUDE_DOMAINS=('example.org', '.cern.ch')\n").unwrap();
    assert_eq!(c.policy.networks.iter().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.0.0.0/8", "fd00::/8"]);
    assert_eq!(c.policy.exclude_match, crate::config::ExcludeMatch::Either);
    assert_eq!(c.policy.domains, ["example.org", ".cern.ch"]);
    for bad in ["EXCLUDE_NETWORKS='10.0.0.0/33'", "EXCLUDE_MATCH='any'", "EXCLUDE_DOMAINS='bad domain'", "EXCLUDE_DOMAINS_REFRESH=1"] {
        assert!(load(&format!("{bad}\n")).is_err(), "{bad} must be refused");
    }
}

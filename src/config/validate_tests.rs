//! Unit tests of config validation (kept apart to keep validate.rs readable).
use super::super::from_text;
use super::*;
use std::path::{Path, PathBuf};

fn load(text: &str) -> Result<(Config, Vec<String>), Vec<String>> {
    match from_text(text, Path::new("t.cfg")) {
        Ok(l) => Ok((l.config, l.warnings)),
        Err(crate::config::ConfigError::Invalid { problems, .. }) => Err(problems),
        Err(e) => Err(vec![e.to_string()]),
    }
}

#[test]
fn test_empty_config_gives_python_defaults() {
    let (c, w) = load("").unwrap();
    assert!(w.is_empty());
    assert_eq!(c, Config::default());
    assert_eq!(c.np_api.file, PathBuf::from("/var/run/flowd"));
    assert_eq!(c.udp_firefly.port, 10514);
    assert_eq!(c.netstat.interval, Duration::from_secs(2));
}

#[test]
fn test_python_style_config_loads() {
    let text = "PLUGIN='netstat'\nBACKEND='udp_firefly'\nNETSTAT_EXPERIMENT='atlas'\nNETSTAT_ACTIVITY=2\n\
                NETSTAT_INTERNAL_NETWORKS=('192.168.0.0/16', 'fd00::/8')\nFLOW_MAP_API='https://scitags.org/api.json'\n\
                IP_DISCOVERY_ENABLED = False\nUDP_FIREFLY_DST='collector.example.org'\nUDP_FIREFLY_IP4_SRC=''\n\
                NP_API_FILE_MODE=0o620\nPLUGIN='np_api,firefly'\nPROMETHEUS_SS_PATH='/usr/bin/ss'\n";
    let (c, w) = load(text).unwrap();
    assert_eq!(c.plugins, vec![PluginKind::NpApi, PluginKind::Firefly]);
    assert_eq!(c.netstat.experiment, Some(IdOrName::Name("atlas".into())));
    assert_eq!(c.netstat.activity, Some(IdOrName::Id(2)));
    assert_eq!(c.netstat.internal_networks.len(), 2);
    assert_eq!(c.udp_firefly.dst, vec!["collector.example.org".to_string()]);
    assert_eq!(c.udp_firefly.ip4_src, None);
    assert_eq!(c.np_api.mode, 0o620);
    assert!(!w.iter().any(|w| w.contains("not yet supported")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("PLUGIN is set again")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("PROMETHEUS_SS_PATH is accepted but unused")), "{w:?}");
}

#[test]
fn test_all_problems_reported_at_once_in_line_order() {
    let text = "PLUGIN='nosuch'\nUDP_FIREFLY_PORT=70000\nFOO=1\nUDP_FIREFLY_IP6_SRC='1.2.3.4'\nBACKEND=3\nbad line\n";
    let p = load(text).unwrap_err();
    assert_eq!(p.len(), 5, "{p:?}");
    assert!(p[0].starts_with("line 1: PLUGIN: unknown plugin \"nosuch\""));
    assert!(p[1].starts_with("line 2: UDP_FIREFLY_PORT: 70000 is out of range"));
    assert!(p[2].starts_with("line 4: UDP_FIREFLY_IP6_SRC"));
    assert!(p[3].starts_with("line 5: BACKEND: expected a string"));
    assert!(p[4].starts_with("line 6: expected KEY = VALUE"));
}

#[test]
fn test_unknown_key_is_a_warning() {
    let (_, w) = load("SOMETHING_NEW = 1\n").unwrap();
    assert_eq!(w, vec!["line 1: unknown key SOMETHING_NEW is ignored".to_string()]);
}

#[test]
fn test_scanner_needs_experiment_and_activity() {
    let p = load("PLUGIN='netlink'\n").unwrap_err();
    assert_eq!(p.len(), 2);
    assert!(p[0].contains("needs NETLINK_EXPERIMENT"));
    let p = load("PLUGIN='netstat'\nNETSTAT_EXPERIMENT='<exp>'\nNETSTAT_ACTIVITY=1\n").unwrap_err();
    assert!(p.iter().any(|p| p.starts_with("line 2: NETSTAT_EXPERIMENT") && p.contains("registry name")), "{p:?}");
}

#[test]
fn test_iperf_flow_ids_and_aliases() {
    let (c, _) = load("PLUGIN='iperf'\nIPERF_FLOW_ID=[(2, 1), ('cms', 'Analysis Input')]\nBACKEND='ebpf_el9, udp_firefly'\n").unwrap();
    assert_eq!(c.iperf.flow_id.len(), 2);
    assert_eq!(c.backends, vec![BackendKind::Ebpf, BackendKind::UdpFirefly]);
    let (c, _) = load("PLUGIN='iperf'\nIPERF_FLOW_ID=(2, 1)\n").unwrap();
    assert_eq!(c.iperf.flow_id, vec![(IdOrName::Id(2), IdOrName::Id(1))]);
}

#[test]
fn test_int_forms() {
    assert_eq!(parse_int("0660"), Some(0o660));
    assert_eq!(parse_int("0o17"), Some(15));
    assert_eq!(parse_int("0x10"), Some(16));
    assert_eq!(parse_int("12"), Some(12));
    assert_eq!(parse_int("x"), None);
}

#[test]
fn test_shipped_config_documents_every_key_with_its_default() {
    let text = include_str!("../../etc/flowd.cfg");
    let (c, w) = load(text).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c, Config::default(), "the active lines of etc/flowd.cfg must be the defaults");
    for key in keys::names() {
        assert!(
            text.contains(&format!("{key}=")) || text.contains(&format!("{key} is an alias")) || text.contains(&format!("({key} is an alias")),
            "{key} missing from etc/flowd.cfg"
        );
    }
    // Every commented setting is itself valid when uncommented.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.split('=').next().is_some_and(|k| keys::find(k.trim()).is_some()) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let (_, w) = load(&uncommented.replace("PLUGIN='np_api'", "PLUGIN='np_api,netstat,netlink,iperf,firefly'")).unwrap();
    assert!(w.iter().all(|w| !w.contains("unknown key")), "{w:?}");
}

#[test]
fn test_scanner_keys_and_dump_timeout() {
    let (c, w) = load(
        "PLUGIN='netlink,netstat,iperf_rr,firefly'\nNETLINK_EXPERIMENT=2\nNETLINK_ACTIVITY='Debug'\nNETSTAT_EXPERIMENT='cms'\nNETSTAT_ACTIVITY=1\n\
         IPERF_FLOW_ID=[(2, 2)]\nNETLINK_INCLUDE_PRIVATE=True\nNETLINK_DUMP_TIMEOUT=0.5\nNETLINK_TIMEOUT=1\n\
         NETLINK_INTERNAL_NETWORKS=('100.64.9.0/24', '3fff:9::/32')\nFIREFLY_LISTENER_HOST='0.0.0.0'\n",
    )
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.plugins, vec![PluginKind::Netlink, PluginKind::Netstat, PluginKind::Iperf, PluginKind::Firefly]);
    assert!(c.iperf.round_robin, "iperf_rr means round robin");
    assert!(c.netlink.scan.include_private && !c.netstat.include_private);
    assert_eq!(c.netlink.dump_timeout, Duration::from_millis(500));
    assert_eq!(c.netlink.scan.interval, Duration::from_secs(1));
    assert_eq!(c.netlink.scan.internal_networks.len(), 2);
    assert_eq!(Config::default().netlink.dump_timeout, Duration::from_secs(5));
    assert!(PLUGINS_NOT_BUILT.is_empty());
    let p = load("NETLINK_DUMP_TIMEOUT=0\n").unwrap_err();
    assert!(p[0].contains("NETLINK_DUMP_TIMEOUT"), "{p:?}");
}

#[test]
fn test_discovery_and_netlink_keys() {
    let text = "IP_DISCOVERY_ENABLED=True\nIP_DISCOVERY_STUN_SERVERS=('127.0.0.1:3478', '[::1]:5', 'stun.example.org')\n\
                IP_DISCOVERY_INTERVAL=60\nIP_DISCOVERY_TIMEOUT=0.1\nIP_DISCOVERY_HTTP_URLS='https://api4.my-ip.io/ip'\n\
                IP_DISCOVERY_MAP=('10.0.0.5=192.0.2.5', '[fd00::5]=2001:db8::5')\nUDP_FIREFLY_WITH_NETLINK=True\n\
                UDP_FIREFLY_ONGOING_INTERVAL=5\nUDP_FIREFLY_NETLINK_INTERVAL=3\n";
    let (c, w) = load(text).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert!(c.discovery.enabled && c.enrich.netlink);
    assert_eq!(c.discovery.stun_servers.len(), 3);
    assert_eq!(c.discovery.interval, Duration::from_secs(60));
    assert_eq!(c.discovery.timeout, Duration::from_millis(100));
    assert_eq!(c.discovery.http_urls, vec!["https://api4.my-ip.io/ip".to_string()]);
    assert_eq!(c.discovery.map[1], ("fd00::5".parse().unwrap(), "2001:db8::5".parse().unwrap()));
    assert_eq!(c.enrich.ongoing_interval, Some(Duration::from_secs(5)));
    assert_eq!(c.enrich.netlink_interval, Duration::from_secs(3));
    let p = load("IP_DISCOVERY_MAP='10.0.0.5=2001:db8::5'\nIP_DISCOVERY_STUN_SERVERS='h:0'\nIP_DISCOVERY_HTTP_URLS='ftp://x'\nIP_DISCOVERY_INTERVAL=1\n")
        .unwrap_err();
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p[0].contains("same family"));
}

#[test]
fn test_a_python_config_setting_only_the_metrics_port_is_told_it_is_loopback_now() {
    let (_, w) = load("PLUGIN='np_api'\nPROMETHEUS_SRV_PORT=9100\n").unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("line 2: PROMETHEUS_SRV_PORT is set without PROMETHEUS_SRV_HOST: metrics are served on 127.0.0.1:9100 only"), "{w:?}");
    assert!(w[0].contains("PROMETHEUS_SRV_HOST='0.0.0.0'"));
    for quiet in ["PROMETHEUS_SRV_PORT=9100\nPROMETHEUS_SRV_HOST='127.0.0.1'\n", "PROMETHEUS_SRV_PORT=0\n", "PLUGIN='np_api'\n"] {
        let (_, w) = load(quiet).unwrap();
        assert!(w.is_empty(), "{quiet:?}: {w:?}");
    }
}

#[test]
fn test_perfsonar_needs_the_ebpf_backend_and_both_ids() {
    let p = load("PLUGIN='perfsonar'\nPERFSONAR_EXPERIMENT=1\nPERFSONAR_ACTIVITY=2\n").unwrap_err();
    assert_eq!(p, ["line 1: PLUGIN: the perfsonar plugin needs BACKEND to include ebpf (it marks packets through the eBPF marker)"]);
    let p = load("PLUGIN='perfsonar'\nBACKEND='ebpf'\n").unwrap_err();
    assert_eq!(p, ["line 1: PLUGIN: the perfsonar plugin needs PERFSONAR_EXPERIMENT", "line 1: PLUGIN: the perfsonar plugin needs PERFSONAR_ACTIVITY"]);
    let (c, w) = load("PLUGIN='np_api,perfsonar'\nBACKEND='ebpf'\nPERFSONAR_EXPERIMENT='atlas'\nPERFSONAR_ACTIVITY='perfSONAR'\n").unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.plugins, vec![PluginKind::NpApi, PluginKind::Perfsonar]);
    assert_eq!(c.match_all(), Some((IdOrName::parse("atlas"), IdOrName::parse("perfSONAR"))));
    // Without the plugin the keys configure nothing.
    let (c, _) = load("BACKEND='ebpf'\nPERFSONAR_EXPERIMENT=1\nPERFSONAR_ACTIVITY=2\n").unwrap();
    assert_eq!(c.match_all(), None);
}

#[test]
fn test_perfsonar_ids_must_fit_the_marking() {
    let base = "PLUGIN='perfsonar'\nBACKEND='ebpf'\n";
    let p = load(&format!("{base}PERFSONAR_EXPERIMENT=512\nPERFSONAR_ACTIVITY=64\n")).unwrap_err();
    assert_eq!(
        p,
        [
            "line 3: PERFSONAR_EXPERIMENT: 512 does not fit EBPF_MARKING='label' (at most 511)",
            "line 4: PERFSONAR_ACTIVITY: 64 does not fit EBPF_MARKING='label' (at most 63)"
        ]
    );
    // The extension-header tag exp<<8 | act has room for more.
    let (c, _) = load(&format!("{base}PERFSONAR_EXPERIMENT=512\nPERFSONAR_ACTIVITY=64\nEBPF_MARKING='destination'\n")).unwrap();
    assert_eq!(c.marker.marking, Marking::Destination);
    let p = load(&format!("{base}PERFSONAR_EXPERIMENT=1\nPERFSONAR_ACTIVITY=256\nEBPF_MARKING='destination'\n")).unwrap_err();
    assert_eq!(p, ["line 4: PERFSONAR_ACTIVITY: 256 does not fit EBPF_MARKING='destination' (at most 255)"]);
}

#[test]
fn test_ebpf_marking_spellings() {
    for (text, want) in [
        ("label", Marking::Label),
        ("hop-by-hop", Marking::HopByHop),
        ("hopByHop", Marking::HopByHop),
        ("destination", Marking::Destination),
        ("Destination", Marking::Destination),
        ("hop-by-hop-destination", Marking::HopByHopDestination),
        ("hopByHopDestination", Marking::HopByHopDestination),
        ("hop_by_hop_destination", Marking::HopByHopDestination),
    ] {
        let (c, _) = load(&format!("EBPF_MARKING='{text}'\n")).unwrap();
        assert_eq!(c.marker.marking, want, "{text}");
    }
    assert_eq!(Config::default().marker.marking, Marking::Label);
    let p = load("EBPF_MARKING='flowLabelMatchAll'\n").unwrap_err();
    assert_eq!(p, ["line 1: EBPF_MARKING: unknown marking \"flowLabelMatchAll\" (known: label, hop-by-hop, destination, hop-by-hop-destination)"]);
}

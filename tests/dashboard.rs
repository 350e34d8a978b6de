//! The Grafana dashboard `etc/grafana/flowd-dashboard.json` asks only for what flowd
//! exports: its PromQL expressions pass `promtool check rules`, and every metric name
//! they use is on a real scrape of the running binary (all backends, flows announced,
//! as root in a network namespace for the eBPF marker). The same run checks what the
//! marker saw: only the IPv6 flow the site policy passed is in its map and marked.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::require_root;
use crate::util::netns::NsPair;
use crate::util::{free_tcp_port, free_udp_port, http_get, metric, scrape_until, Flowd, TempDir};

const T: Duration = Duration::from_secs(10);
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/grafana/flowd-dashboard.json");

/// Families that have series only once something failed: on a healthy scrape they are
/// declared (`# TYPE`) without samples.
const ONLY_ON_ERROR: &[&str] = &["flowd_backend_errors_total"];

/// (where, expression) of every query in the dashboard: panel targets and the
/// template variables' `label_values(metric, label)`.
fn queries() -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((format!("panel {:?} target {}", p["title"].as_str().unwrap(), t["refId"]), t["expr"].as_str().unwrap().to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q.strip_prefix("label_values(").and_then(|r| r.split(',').next()).unwrap_or_else(|| panic!("variable {}: {q}", v["name"]));
            out.push((format!("variable {}", v["name"]), inner.trim().to_string()));
        }
    }
    out
}

/// The expression with Grafana's variables replaced by values PromQL accepts.
fn promql(e: &str) -> String {
    e.replace("$__rate_interval", "5m").replace("$instance", ".+").replace("$topn", "10")
}

const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
];

/// The metric names an expression reads: identifiers left after string literals, label
/// matchers, ranges, grouping clauses, functions and keywords are taken out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut s = String::new();
    let (mut quoted, mut depth_brace, mut depth_bracket) = (false, 0, 0);
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            c => s.push(c),
        }
    }
    let chars: Vec<char> = s.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' {
            // A Grafana variable, not a metric.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if skip_group {
                continue;
            }
            if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word.as_str()) {
                skip_group = next == Some(&'(');
            } else if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
            continue;
        }
        if c == ')' {
            skip_group = false;
        }
        i += 1;
    }
    names
}

#[test]
fn metric_names_are_found_in_promql() {
    let n = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        n(r#"sum by (outcome, reason) (rate(flowd_decisions_total{instance=~"$instance",outcome="excluded"}[$__rate_interval]))"#),
        ["flowd_decisions_total"]
    );
    assert_eq!(n("topk($topn, rate(flow_tcp_bytes_acked_total[5m]) * 8)"), ["flow_tcp_bytes_acked_total"]);
    assert_eq!(n("a / on (x) group_left (y) b_total"), ["a", "b_total"]);
    assert_eq!(n("max(flowd_registry_age_seconds) + $topn"), ["flowd_registry_age_seconds"]);
    // The dashboard's names: the families it is about, and nothing that is not a name.
    let all: BTreeSet<String> = queries().iter().flat_map(|(_, e)| metric_names(e)).collect();
    for want in ["flowd_decisions_total", "flowd_open_flows_by_activity", "flowd_fireflies_sent_total", "flowd_marker_packets_marked_total", "flow_tcp_rtt"] {
        assert!(all.contains(want), "{want} not in {all:?}");
    }
    for name in &all {
        assert!(["flowd_", "flow_tcp_", "process_"].iter().any(|p| name.starts_with(p)), "{name:?} is not a flowd metric (extraction bug or typo)");
    }
}

#[test]
fn dashboard_expressions_pass_promtool() {
    if Command::new("promtool").arg("--version").output().is_err() {
        crate::util::skip("promtool not installed (apt-get install prometheus)");
        return;
    }
    let dir = TempDir::new("dash");
    let mut rules = String::from("groups:\n  - name: flowd-dashboard\n    rules:\n");
    let q = queries();
    assert!(q.len() >= 20, "{} queries", q.len());
    for (i, (_, e)) in q.iter().enumerate() {
        rules.push_str(&format!("      - record: flowd_dashboard:q{i}\n        expr: {}\n", serde_json::to_string(&promql(e)).unwrap()));
    }
    let path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&path, &rules).unwrap();
    let out = Command::new("promtool").args(["check", "rules"]).arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains(&format!("SUCCESS: {} rules found", q.len())), "promtool check rules:\n{text}\n{rules}");
    // And a broken expression does fail (the check is not vacuous).
    std::fs::write(&path, "groups:\n  - name: x\n    rules:\n      - record: x:y\n        expr: \"sum by (a (rate(x[5m]))\"\n").unwrap();
    assert!(!Command::new("promtool").args(["check", "rules"]).arg(&path).output().unwrap().status.success());
}

/// flowd in namespace A with every backend, and flows over the veth pair to B: IPv6
/// 3fff:: (passed, marked), IPv6 fd00:: (excluded by EXCLUDE_NETWORKS), IPv4 100.64/24
/// (passed, not markable), plus an unknown experiment, a bad line and a relayed firefly.
struct Scenario {
    ns: NsPair,
    flowd: Flowd,
    port: u16,
    sink: UdpSocket,
    conns: Vec<(TcpStream, TcpStream)>,
    keys: Vec<(String, u16, String, u16)>,
}

impl Scenario {
    fn start() -> Scenario {
        let ns = NsPair::new();
        let sink = NsPair::udp(&ns.a, "127.0.0.1:0");
        let (port, ff) = (free_tcp_port(), free_udp_port());
        let flowd = NsPair::flowd(
            &ns.a,
            &format!(
                "PLUGIN='np_api,firefly'\nBACKEND='udp_firefly,ebpf,prometheus'\nNETWORK_INTERFACE='{}'\nFIREFLY_LISTENER_PORT={ff}\n\
                 UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST=('{}', '203.0.113.9:9', '127.0.0.1:{ff}')\nPROMETHEUS_SRV_PORT={port}\n\
                 EXCLUDE_NETWORKS=('fd00::/64',)\nEXCLUDE_DOMAINS=('localhost',)\n",
                ns.dev_a,
                sink.local_addr().unwrap()
            ),
        );
        let mut conns = Vec::new();
        let mut keys = Vec::new();
        for (to, _) in [("[3fff::2]:0", "3fff"), ("[fd00::2]:0", "fd00"), ("100.64.0.2:0", "v4")] {
            let l: TcpListener = NsPair::listen(&ns.b, to);
            let c = NsPair::connect(&ns.a, l.local_addr().unwrap());
            let (s, _) = l.accept().unwrap();
            let (a, b) = (c.local_addr().unwrap(), c.peer_addr().unwrap());
            keys.push((a.ip().to_string(), a.port(), b.ip().to_string(), b.port()));
            conns.push((c, s));
        }
        let mut lines: String = keys.iter().map(|(s, sp, d, dp)| format!("start tcp {s} {sp} {d} {dp} atlas Debug\n")).collect();
        lines.push_str("start tcp 100.64.0.1 1 100.64.0.2 2 nosuchexp Debug\nnot a flow\n");
        flowd.write(&lines);
        let relayed = r#"{"version":1,"flow-lifecycle":{"state":"start","start-time":"2026-03-25T10:00:00.100000+00:00"},"flow-id":{"afi":"ipv4","src-ip":"100.64.0.1","dst-ip":"100.64.0.9","protocol":"tcp","src-port":1094,"dst-port":7000},"context":{"experiment-id":3,"activity-id":14}}"#;
        let tx = NsPair::udp(&ns.a, "127.0.0.1:0");
        tx.send_to(relayed.as_bytes(), ("127.0.0.1", ff)).unwrap();
        Scenario { ns, flowd, port, sink, conns, keys }
    }

    /// Sends data on the IPv6 flows (B reads it) so the marker has packets to mark.
    fn traffic(&mut self) {
        let chunk = vec![0x5Au8; 64 << 10];
        for (c, srv) in self.conns.iter_mut().take(2) {
            let mut rx = srv.try_clone().unwrap();
            let reader = std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                let mut n = 0;
                while n < 16 * (64 << 10) {
                    match rx.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
            });
            for _ in 0..16 {
                c.write_all(&chunk).unwrap();
            }
            reader.join().unwrap();
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let (addr, path) = (format!("127.0.0.1:{}", self.port), path.to_string());
        NsPair::run_in(&self.ns.a, move || http_get(&addr, &path))
    }

    /// Scrapes until the marker has exported packets marked and the per-flow series are in.
    fn scrape(&self) -> String {
        let addr = format!("127.0.0.1:{}", self.port);
        NsPair::run_in(&self.ns.a, move || {
            scrape_until(&addr, T, |p| {
                metric(p, "flowd_marker_packets_marked_total", &[]) > 0.0
                    && p.contains("flow_tcp_rtt{")
                    && metric(p, "flowd_firefly_send_errors_total", &[]) > 0.0
            })
        })
    }
}

#[test]
fn every_metric_the_dashboard_uses_is_exported() {
    require_root!();
    let mut s = Scenario::start();
    s.traffic();
    let page = s.scrape();
    let sampled: BTreeSet<&str> = page.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let declared: BTreeSet<&str> = page.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
    let mut missing = Vec::new();
    for (at, e) in queries() {
        for name in metric_names(&e) {
            let ok = sampled.contains(name.as_str()) || (ONLY_ON_ERROR.contains(&name.as_str()) && declared.contains(name.as_str()));
            if !ok {
                missing.push(format!("{at}: {name}"));
            }
        }
    }
    assert!(missing.is_empty(), "the dashboard uses metrics this scrape does not export:\n{}\n---\n{page}\n{}", missing.join("\n"), s.flowd.stderr());
    // The fireflies of the passed flows reached the collector on A's loopback.
    let mut buf = [0u8; 4096];
    assert!(s.sink.recv(&mut buf).is_ok(), "no firefly at the collector");
}

#[test]
fn the_marker_sees_only_the_ipv6_flow_the_policy_passed() {
    require_root!();
    let mut s = Scenario::start();
    s.traffic();
    let page = s.scrape();
    let d = |source: &str, outcome: &str, reason: &str| metric(&page, "flowd_decisions_total", &[("source", source), ("outcome", outcome), ("reason", reason)]);
    assert_eq!(d("np_api", "excluded", "network"), 1.0, "{page}");
    assert_eq!(d("np_api", "marked", "label_set"), 1.0, "{page}");
    assert_eq!(d("np_api", "not_marked", "ipv4"), 1.0);
    assert_eq!(d("np_api", "rejected", "unknown_experiment") + d("np_api", "rejected", "bad_line"), 2.0);
    assert_eq!(metric(&page, "flowd_marker_flows", &[]), 1.0, "only the passed IPv6 flow is in the marker's map");
    let (marked, seen) = (
        metric(&page, "flowd_marker_packets_marked_total", &[("interface", s.ns.dev_a.as_str())]),
        metric(&page, "flowd_marker_packets_seen_total", &[("interface", s.ns.dev_a.as_str())]),
    );
    assert!(marked > 0.0 && seen > marked, "marked {marked} of {seen} IPv6 packets: the excluded fd00:: flow's are seen, not marked");
    // /flows and explain show the marker's label on the passed flow, nothing for the excluded one.
    let (_, body) = s.get("/flows");
    let j: Value = serde_json::from_str(&body).unwrap();
    let v6 = j["flows"].as_array().unwrap().iter().find(|f| f["dst"] == "3fff::2").expect("the passed IPv6 flow");
    let label = v6["marker"]["label"].as_str().expect("the marker's label").to_string();
    assert_eq!(v6["marker"]["outcome"], "marked");
    let v = u32::from_str_radix(label.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flowd::label::decode(v), (2, 9), "the label carries atlas/Debug: {label}");
    let v4 = j["flows"].as_array().unwrap().iter().find(|f| f["dst"] == "100.64.0.2").expect("the IPv4 flow");
    assert_eq!((v4["marker"]["outcome"].as_str(), v4["marker"]["reason"].as_str()), (Some("not_marked"), Some("ipv4")));
    assert!(!body.contains("fd00::2"), "the excluded flow is not tracked");
    let (src, sport, dst, dport) = &s.keys[0];
    let (_, body) = s.get(&format!("/flows/{src}/{sport}/{dst}/{dport}"));
    let e: Value = serde_json::from_str(&body).unwrap();
    assert!(e["explanation"].to_string().contains(&format!("ebpf marker: marked with flow label {label}")), "{e}");
    let (src, sport, dst, dport) = &s.keys[1];
    let (_, body) = s.get(&format!("/flows/{src}/{sport}/{dst}/{dport}"));
    assert!(body.contains("excluded by the site policy (network: src fd00::1 matches EXCLUDE_NETWORKS fd00::/64, dst fd00::2 matches"), "{body}");
}

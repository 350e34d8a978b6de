//! The site policy (EXCLUDE_NETWORKS, EXCLUDE_DOMAINS, EXCLUDE_MATCH), the decision
//! counters, `/flows`, `flowd flows` and `flowd explain`, end to end with the real
//! binary: flows from the pipe, the firefly listener and the scanners (netns, as root),
//! inside and outside excluded networks, IPv4 and IPv6, with unknown experiments; what
//! the collector sink received must agree with what flowd says it decided.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::Duration;

use serde_json::Value;

use crate::require_root;
use crate::util::netns::NsPair;
use crate::util::{free_tcp_port, free_udp_port, http_get, json_of, metric, run, scrape_until, Flowd, Sink};

const T: Duration = Duration::from_secs(5);

/// (src, sport, dst, dport) of a firefly datagram.
fn tuple(d: &str) -> (String, u64, String, u64) {
    let j = json_of(d);
    let f = &j["flow-id"];
    (f["src-ip"].as_str().unwrap().to_string(), f["src-port"].as_u64().unwrap(), f["dst-ip"].as_str().unwrap().to_string(), f["dst-port"].as_u64().unwrap())
}

fn state(d: &str) -> String {
    json_of(d)["flow-lifecycle"]["state"].as_str().unwrap().to_string()
}

fn decisions(page: &str, source: &str, outcome: &str, reason: &str) -> f64 {
    metric(page, "flowd_decisions_total", &[("source", source), ("outcome", outcome), ("reason", reason)])
}

/// `flowd ARGS -c CFG`: (exit status, stdout, stderr).
fn cli(f: &Flowd, args: &[&str]) -> (i32, String, String) {
    let cfg = f.cfg.to_string_lossy().into_owned();
    let mut a: Vec<&str> = args[..1].to_vec();
    a.extend(["-c", cfg.as_str()]);
    a.extend(&args[1..]);
    let (st, out, err) = run(&a);
    (st.code().unwrap_or(-1), out, err)
}

/// A firefly for the listener.
fn firefly(state: &str, src: &str, dst: &str, sport: u16, dport: u16) -> String {
    let afi = if src.contains(':') { "ipv6" } else { "ipv4" };
    format!(
        r#"{{"version":1,"flow-lifecycle":{{"state":"{state}","start-time":"2026-03-25T10:00:00.100000+00:00"}},"flow-id":{{"afi":"{afi}","src-ip":"{src}","dst-ip":"{dst}","protocol":"tcp","src-port":{sport},"dst-port":{dport}}},"context":{{"experiment-id":2,"activity-id":9}}}}"#
    )
}

/// Every decision balances the events: per source, `excluded` + `passed` = events.
fn assert_every_event_decided(page: &str, source: &str) {
    let events = metric(page, "flowd_events_total", &[("plugin", source)]);
    let decided = metric(page, "flowd_decisions_total", &[("source", source), ("outcome", "excluded")])
        + metric(page, "flowd_decisions_total", &[("source", source), ("outcome", "passed")]);
    assert!(events > 0.0 && events == decided, "{source}: {events} events, {decided} daemon decisions\n{page}");
}

#[test]
fn both_mode_excludes_pipe_and_firefly_flows_and_every_view_agrees() {
    let sink = Sink::v4();
    let (port, ff) = (free_tcp_port(), free_udp_port());
    let addr = format!("127.0.0.1:{port}");
    let mut f = Flowd::start(&format!(
        "PLUGIN='np_api,firefly'\nFIREFLY_LISTENER_PORT={ff}\nUDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nPROMETHEUS_SRV_PORT={port}\n\
         EXCLUDE_NETWORKS=('10.0.0.0/8', 'fd00:1::/32')\n",
        sink.addr()
    ));
    f.write(
        "start tcp 10.1.0.1 1094 10.2.0.2 5001 atlas Debug\n\
         start tcp 10.1.0.1 1094 198.51.100.7 5002 atlas Debug\n\
         start tcp fd00:1::1 1094 fd00:1::2 5003 cms 1\n\
         start tcp fd00:1::1 1094 2001:db8::7 5004 cms 1\n\
         start tcp 192.0.2.1 1094 198.51.100.7 5005 nosuchexp Debug\n\
         start tcp 192.0.2.1 1094 198.51.100.7 5006 atlas nosuchact\n\
         this is not a flow\n\
         ongoing tcp 10.1.0.1 1094 10.2.0.2 5001 atlas Debug\n\
         end tcp 10.1.0.1 1094 10.2.0.2 5001 atlas Debug\n\
         end tcp 10.1.0.1 1094 198.51.100.7 5002 atlas Debug\n",
    );
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(firefly("start", "10.5.5.5", "10.6.6.6", 1094, 6001).as_bytes(), ("127.0.0.1", ff)).unwrap();
    tx.send_to(firefly("start", "100.64.0.1", "100.64.0.2", 1094, 6002).as_bytes(), ("127.0.0.1", ff)).unwrap();

    // The sink gets exactly the fireflies of the flows the policy passed.
    let got = sink.recv(4, T);
    assert!(sink.drain(Duration::from_millis(300)).is_empty(), "nothing else is sent");
    let seen: BTreeSet<(String, String)> = got.iter().map(|d| (format!("{:?}", tuple(d)), state(d))).collect();
    let want: BTreeSet<(String, String)> = [
        (("10.1.0.1", 1094, "198.51.100.7", 5002), "start"),
        (("fd00:1::1", 1094, "2001:db8::7", 5004), "start"),
        (("10.1.0.1", 1094, "198.51.100.7", 5002), "end"),
        (("100.64.0.1", 1094, "100.64.0.2", 6002), "start"),
    ]
    .into_iter()
    .map(|((a, b, c, d), s)| (format!("{:?}", (a.to_string(), b as u64, c.to_string(), d as u64)), s.to_string()))
    .collect();
    assert_eq!(seen, want, "{}", f.stderr());

    // The counters say the same, reason by reason, and account for every event.
    let page = scrape_until(&addr, T, |p| metric(p, "flowd_events_total", &[]) >= 9.0);
    for (source, outcome, reason, n) in [
        ("np_api", "excluded", "network", 4.0),
        ("np_api", "passed", "one_endpoint", 2.0),
        ("np_api", "passed", "open_flow", 1.0),
        ("np_api", "rejected", "unknown_experiment", 1.0),
        ("np_api", "rejected", "unknown_activity", 1.0),
        ("np_api", "rejected", "bad_line", 1.0),
        ("np_api", "fireflied", "sent", 3.0),
        ("firefly", "excluded", "network", 1.0),
        ("firefly", "passed", "no_match", 1.0),
        ("firefly", "fireflied", "sent", 1.0),
    ] {
        assert_eq!(decisions(&page, source, outcome, reason), n, "{source} {outcome} {reason}\n{page}");
    }
    assert_eq!(metric(&page, "flowd_decisions_total", &[("outcome", "fireflied")]), got.len() as f64, "one fireflied decision per firefly the sink saw");
    assert_eq!(metric(&page, "flowd_fireflies_sent_total", &[]), got.len() as f64);
    assert_every_event_decided(&page, "np_api");
    assert_every_event_decided(&page, "firefly");
    assert_eq!(metric(&page, "flowd_policy_rules", &[("kind", "networks")]), 2.0);
    assert_eq!(metric(&page, "flowd_open_flows", &[]), 2.0);
    assert_eq!(metric(&page, "flowd_open_flows_by_activity", &[("source", "np_api"), ("experiment", "cms"), ("activity", "default")]), 1.0);
    assert_eq!(metric(&page, "flowd_open_flows_by_activity", &[("source", "firefly"), ("experiment", "atlas"), ("activity", "Debug")]), 1.0);

    // /flows: the two open flows, with names, label, source and fireflies.
    let (code, body) = http_get(&addr, "/flows");
    assert_eq!(code, 200);
    let j: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((j["open"].as_u64(), j["shown"].as_u64(), j["truncated"].as_bool()), (Some(2), Some(2), Some(false)), "{j}");
    let flows = j["flows"].as_array().unwrap();
    let v6 = flows.iter().find(|x| x["dst"] == "2001:db8::7").expect("the passed IPv6 flow");
    assert_eq!((v6["source"].as_str(), v6["experiment"]["name"].as_str(), v6["activity"]["name"].as_str()), (Some("np_api"), Some("cms"), Some("default")));
    assert_eq!((v6["label"].as_str(), v6["fireflies"].as_u64(), v6["policy"]["reason"].as_str()), (Some("0x30004"), Some(1), Some("one_endpoint")));
    let relayed = flows.iter().find(|x| x["dst"] == "100.64.0.2").expect("the relayed flow");
    assert_eq!((relayed["source"].as_str(), relayed["dport"].as_u64()), (Some("firefly"), Some(6002)));
    assert!(!body.contains("10.2.0.2") && !body.contains("fd00:1::2") && !body.contains("10.6.6.6"), "excluded flows are not tracked: {body}");

    // flowd flows: the same two, in a table.
    let (st, out, err) = cli(&f, &["flows"]);
    assert_eq!(st, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("PROTO") && lines.len() == 5, "{out}");
    assert!(
        out.contains("2001:db8::7") && out.contains("cms(3)") && out.contains("default(1)") && out.contains("100.64.0.2") && out.contains("atlas(2)"),
        "{out}"
    );
    assert!(out.contains("2 flows open"), "{out}");
    let (st, out, _) = cli(&f, &["flows", "--json"]);
    assert_eq!((st, serde_json::from_str::<Value>(&out).unwrap()["open"].as_u64()), (0, Some(2)));

    // flowd explain: excluded (reversed on the command line), ended, rejected, unseen.
    let (st, out, _) = cli(&f, &["explain", "10.2.0.2", "5001", "10.1.0.1", "1094"]);
    assert_eq!(st, 0);
    assert!(
        out.contains("excluded by the site policy (network: src 10.1.0.1 matches EXCLUDE_NETWORKS 10.0.0.0/8, dst 10.2.0.2 matches EXCLUDE_NETWORKS 10.0.0.0/8) at its end event"),
        "{out}"
    );
    let (st, out, _) = cli(&f, &["explain", "10.1.0.1", "1094", "198.51.100.7", "5002", "tcp"]);
    assert_eq!(st, 0);
    assert!(out.contains("experiment 2 (atlas), activity 9 (Debug); started ") && out.contains(", ended "), "{out}");
    assert!(out.contains("site policy: passed (one_endpoint") && out.contains("udp_firefly: 2 firefly event(s)"), "{out}");
    let (st, out, _) = cli(&f, &["explain", "192.0.2.1", "1094", "198.51.100.7", "5005"]);
    assert_eq!(st, 0);
    assert!(out.contains("rejected at ") && out.contains("experiment \"nosuchexp\" is not in the registry"), "{out}");
    let (st, out, _) = cli(&f, &["explain", "10.6.6.6", "6001", "10.5.5.5", "1094"]);
    assert!(st == 0 && out.contains("from firefly: excluded by the site policy"), "{out}");
    let (st, out, _) = cli(&f, &["explain", "10.7.7.7", "1", "10.8.8.8", "2"]);
    assert_eq!(st, 1, "unseen");
    assert!(out.contains("flowd has not seen") && out.contains("would exclude it (network: src 10.7.7.7 matches EXCLUDE_NETWORKS 10.0.0.0/8"), "{out}");
    let (code, body) = http_get(&addr, "/flows/not/a/flow");
    assert_eq!(code, 400, "{body}");

    // Without flowd: one line, exit 1.
    let (st, _) = f.stop_keep();
    assert!(st.success());
    let (st, out, err) = cli(&f, &["flows"]);
    assert_eq!((st, out.as_str()), (1, ""));
    assert!(err.starts_with("flowd: flowd is not running: nothing listens on 127.0.0.1:") && err.lines().count() == 1, "{err}");
    let (st, _, err) = cli(&f, &["explain", "10.2.0.2", "5001", "10.1.0.1", "1094"]);
    assert!(st == 1 && err.lines().count() == 1, "{err}");
}

#[test]
fn either_mode_after_a_reload_excludes_one_matching_endpoint_and_open_flows_keep_their_decision() {
    let sink = Sink::v4();
    let port = free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let base =
        format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nPROMETHEUS_SRV_PORT={port}\nEXCLUDE_NETWORKS=('10.0.0.0/8', 'fd00:1::/32')\n", sink.addr());
    let f = Flowd::start(&base);
    // Both (the default): one endpoint inside is not enough, IPv4 and IPv6.
    f.write("start tcp 10.1.0.1 1094 198.51.100.7 5001 2 9\nstart tcp fd00:1::1 1094 2001:db8::7 5002 2 9\n");
    assert_eq!(sink.recv(2, T).len(), 2, "{}", f.stderr());
    let text = Flowd::config_text(f.dir.path(), &format!("{base}EXCLUDE_MATCH='either'\n"));
    std::fs::write(&f.cfg, text).unwrap();
    f.signal(1);
    f.wait_log("site policy rebuilt", T);
    // Either: the same kind of flows are now excluded, from either side, in both families.
    f.write(
        "start tcp 10.1.0.1 1094 198.51.100.7 5003 2 9\nstart tcp 198.51.100.7 5004 10.1.0.1 1094 2 9\n\
         start tcp 2001:db8::7 5005 fd00:1::1 1094 2 9\nstart tcp 192.0.2.1 1094 198.51.100.7 5006 2 9\n",
    );
    // The flows opened before the reload end as they started: passed.
    f.write("end tcp 10.1.0.1 1094 198.51.100.7 5001 2 9\nend tcp fd00:1::1 1094 2001:db8::7 5002 2 9\n");
    let got = sink.recv(3, T);
    assert!(sink.drain(Duration::from_millis(300)).is_empty());
    let mut ports: Vec<u64> = got.iter().map(|d| tuple(d).3).collect();
    ports.sort_unstable();
    assert_eq!(ports, [5001, 5002, 5006], "{}", f.stderr());
    let page = scrape_until(&addr, T, |p| metric(p, "flowd_events_total", &[]) >= 8.0);
    assert_eq!(decisions(&page, "np_api", "excluded", "network"), 3.0, "{page}");
    assert_eq!(decisions(&page, "np_api", "passed", "one_endpoint"), 2.0);
    assert_eq!(decisions(&page, "np_api", "passed", "open_flow"), 2.0);
    assert_eq!(decisions(&page, "np_api", "passed", "no_match"), 1.0);
    assert_every_event_decided(&page, "np_api");
    let (_, out, _) = cli(&f, &["explain", "2001:db8::7", "5005", "fd00:1::1", "1094"]);
    assert!(out.contains("excluded by the site policy (network: dst fd00:1::1 matches EXCLUDE_NETWORKS fd00:1::/32)"), "{out}");
}

#[test]
fn excluded_domains_are_learnt_in_the_background() {
    let sink = Sink::v4();
    let port = free_tcp_port();
    let addr = format!("127.0.0.1:{port}");
    let f =
        Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nPROMETHEUS_SRV_PORT={port}\nEXCLUDE_DOMAINS=('LOCALHOST.',)\n", sink.addr()));
    // The name's own addresses come from the resolver (/etc/hosts) on a helper thread.
    f.wait_log("policy: EXCLUDE_DOMAINS localhost: its own addresses are [127.0.0.1", T);
    f.write("start tcp 127.0.0.1 1094 127.0.0.1 5001 atlas Debug\n");
    let page = scrape_until(&addr, T, |p| decisions(p, "np_api", "excluded", "domain") == 1.0);
    assert_eq!(decisions(&page, "np_api", "excluded", "domain"), 1.0, "{page}\n{}", f.stderr());
    // One endpoint in the domain: with `both`, passed (the other one's reverse lookup
    // may still be running: lookup_pending, else one_endpoint).
    f.write("start tcp 127.0.0.1 1094 192.0.2.55 5002 atlas Debug\n");
    let got = sink.recv(1, T);
    assert_eq!(got.len(), 1);
    assert_eq!(tuple(&got[0]).3, 5002);
    assert!(sink.drain(Duration::from_millis(300)).is_empty(), "the localhost flow was not sent");
    let page = scrape_until(&addr, T, |p| metric(p, "flowd_decisions_total", &[("outcome", "passed")]) == 1.0);
    assert_eq!(decisions(&page, "np_api", "passed", "one_endpoint") + decisions(&page, "np_api", "passed", "lookup_pending"), 1.0, "{page}");
    assert!(metric(&page, "flowd_policy_lookups_total", &[("kind", "forward"), ("result", "matched")]) >= 1.0);
    assert!(metric(&page, "flowd_policy_rules", &[("kind", "domain_addresses")]) >= 1.0);
    let (_, out, _) = cli(&f, &["explain", "127.0.0.1", "1094", "127.0.0.1", "5001"]);
    assert!(
        out.contains("excluded by the site policy (domain: src 127.0.0.1 matches EXCLUDE_DOMAINS localhost, dst 127.0.0.1 matches EXCLUDE_DOMAINS localhost)"),
        "{out}"
    );
}

/// Config for a scanner plugin in namespace A, reporting to a collector on A's loopback.
fn scan_cfg(plugin: &str, sink: &UdpSocket, port: u16, extra: &str) -> String {
    let p = plugin.to_uppercase();
    format!(
        "PLUGIN='{plugin}'\nUDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\n{p}_EXPERIMENT='cms'\n{p}_ACTIVITY=1\n{p}_TIMEOUT=0.2\nPROMETHEUS_SRV_PORT={port}\n{extra}",
        sink.local_addr().unwrap()
    )
}

/// Datagrams on a namespace's sink until `n` arrived or `timeout` passed.
fn collect(sink: &UdpSocket, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Ok(k) = sink.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..k]).into_owned());
        }
    }
    out
}

/// A scanner's flows in namespace A: connections inside the excluded networks (IPv4 and
/// IPv6) are never reported; `/flows` and the counters agree with the sink.
fn scanner_flows_are_filtered(plugin: &str) {
    let ns = NsPair::new();
    let sink = NsPair::udp(&ns.a, "127.0.0.1:0");
    let port = free_tcp_port();
    let f = NsPair::flowd(&ns.a, &scan_cfg(plugin, &sink, port, "EXCLUDE_NETWORKS=('100.65.0.0/16', '3fff::/64')\n"));
    let ls = [NsPair::listen(&ns.b, "100.64.0.2:0"), NsPair::listen(&ns.b, "100.65.0.2:0"), NsPair::listen(&ns.b, "[3fff::2]:0")];
    let mut conns = Vec::new();
    for l in &ls {
        let c = NsPair::connect(&ns.a, l.local_addr().unwrap());
        let (s, _) = l.accept().unwrap();
        conns.push((c, s));
    }
    let got = collect(&sink, 1, T);
    assert!(collect(&sink, 1, Duration::from_millis(800)).is_empty(), "only the flow outside the excluded networks");
    assert_eq!(got.len(), 1, "{}", f.stderr());
    assert_eq!(tuple(&got[0]).2, "100.64.0.2");
    let addr = format!("127.0.0.1:{port}");
    let page = NsPair::run_in(&ns.a, move || scrape_until(&addr, T, |p| metric(p, "flowd_decisions_total", &[("outcome", "excluded")]) == 2.0));
    assert_eq!(decisions(&page, plugin, "excluded", "network"), 2.0, "{page}");
    assert_eq!(decisions(&page, plugin, "passed", "no_match"), 1.0);
    assert_eq!(decisions(&page, plugin, "fireflied", "sent"), 1.0);
    assert_every_event_decided(&page, plugin);
    let addr = format!("127.0.0.1:{port}");
    let (_, body) = NsPair::run_in(&ns.a, move || http_get(&addr, "/flows"));
    let j: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["open"], 1, "{j}");
    assert_eq!((j["flows"][0]["dst"].as_str(), j["flows"][0]["source"].as_str()), (Some("100.64.0.2"), Some(plugin)));
    assert_eq!(j["flows"][0]["experiment"]["name"], "cms");
    drop(conns);
    let ends = collect(&sink, 1, T);
    assert_eq!(ends.len(), 1);
    assert_eq!((state(&ends[0]), tuple(&ends[0]).2), ("end".to_string(), "100.64.0.2".to_string()));
    assert!(collect(&sink, 1, Duration::from_millis(800)).is_empty(), "the excluded flows end silently too");
}

#[test]
fn netlink_flows_in_excluded_networks_are_skipped() {
    require_root!();
    scanner_flows_are_filtered("netlink");
}

#[test]
fn netstat_flows_in_excluded_networks_are_skipped() {
    require_root!();
    scanner_flows_are_filtered("netstat");
}

//! What the metrics listener's `/flows` and `/flows/<tuple>` pages say (JSON), and the
//! one-line explanations `flowd explain` prints: built from the flow table, the memory
//! of recent flows, the registry, the site policy and the marker's labels.
//!
//! Pure: the daemon lends a [`View`] of its state for one page; nothing here does I/O
//! or reads the clock. Bounded: `/flows` lists at most [`MAX_FLOWS`] flows (the most
//! recently started ones) and says so in the page.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::decision::{Decision, RuleRef};
use crate::flow::{FlowKey, Proto};
use crate::flows::{Fate, FlowTable, Gone, OpenFlow, Recent, RECENT_FLOWS};
use crate::label;
use crate::policy::{Policy, Verdict};
use crate::registry::Registry;
use crate::wire::http::Status;
use crate::wire::time::rfc3339;

/// Most flows on one `/flows` page.
pub const MAX_FLOWS: usize = 10_000;

/// What a page is built from: the daemon's state, lent for one request.
pub struct View<'a> {
    /// Open flows.
    pub flows: &'a FlowTable,
    /// Recently ended, excluded and rejected flows.
    pub recent: &'a Recent,
    /// Names of experiments and activities.
    pub registry: &'a Registry,
    /// The rules in force (for flows flowd has not seen).
    pub policy: &'a Policy,
    /// The label a backend (the eBPF marker) puts on a flow's packets now.
    pub label_of: &'a dyn Fn(&FlowKey) -> Option<u32>,
}

#[derive(Serialize)]
struct Named<'a> {
    id: u32,
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct DecisionOut {
    outcome: &'static str,
    reason: &'static str,
}

impl From<Decision> for DecisionOut {
    fn from(d: Decision) -> DecisionOut {
        DecisionOut { outcome: d.outcome(), reason: d.reason() }
    }
}

#[derive(Serialize)]
struct MarkerOut {
    outcome: &'static str,
    reason: &'static str,
    /// The label on its packets now (with its entropy bits).
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
}

#[derive(Serialize)]
struct RulesOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst: Option<String>,
}

/// One flow as `/flows` and `/flows/<tuple>` show it.
#[derive(Serialize)]
struct FlowOut<'a> {
    proto: &'static str,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    /// `open`, `ended`, `excluded` or `rejected`.
    state: &'static str,
    last_event: &'static str,
    source: &'static str,
    experiment: Named<'a>,
    activity: Named<'a>,
    /// The Scitags label of (experiment, activity), entropy bits 0 (`label::encode`).
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    start: String,
    last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
    fireflies: u32,
    policy: DecisionOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    marker: Option<MarkerOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<RulesOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<&'a str>,
}

fn hex(l: u32) -> String {
    format!("0x{l:05X}")
}

fn rule_text(r: &RuleRef) -> String {
    format!("{} {}", r.key, r.rule)
}

impl View<'_> {
    fn flow_out<'v>(&'v self, key: &FlowKey, f: &OpenFlow, fate: Option<&'v Fate>) -> FlowOut<'v> {
        let (e, a) = self.registry.names(f.exp, f.act);
        let rejected = matches!(fate, Some(Fate::Rejected(_)));
        let state = match fate {
            None => "open",
            Some(Fate::Ended(_)) => "ended",
            Some(Fate::Excluded { .. }) => "excluded",
            Some(Fate::Rejected(_)) => "rejected",
        };
        let marker =
            f.marker.map(|d| MarkerOut { outcome: d.outcome(), reason: d.reason(), label: if fate.is_none() { (self.label_of)(key).map(hex) } else { None } });
        let (rules, what) = match fate {
            Some(Fate::Excluded { src, dst }) => (Some(RulesOut { src: src.as_ref().map(rule_text), dst: dst.as_ref().map(rule_text) }), None),
            Some(Fate::Rejected(what)) => (None, Some(what.as_ref())),
            _ => (None, None),
        };
        FlowOut {
            proto: key.proto.as_str(),
            src: key.src.ip(),
            sport: key.src.port(),
            dst: key.dst.ip(),
            dport: key.dst.port(),
            state,
            last_event: f.state.as_str(),
            source: f.source,
            experiment: Named { id: f.exp, name: if rejected { None } else { e } },
            activity: Named { id: f.act, name: if rejected { None } else { a } },
            label: if rejected { None } else { label::encode(f.exp, f.act, 0).ok().map(hex) },
            start: rfc3339(f.start),
            last_seen: rfc3339(f.last),
            end: match fate {
                Some(Fate::Ended(t)) => Some(rfc3339(*t)),
                _ => None,
            },
            fireflies: f.fireflies,
            policy: f.policy.into(),
            marker,
            rules,
            rejected: what,
        }
    }

    /// What is known about `key`: open, else remembered.
    fn find(&self, key: &FlowKey) -> Option<(FlowKey, OpenFlow, Option<&Fate>)> {
        if let Some(f) = self.flows.get(key) {
            return Some((*key, *f, None));
        }
        self.recent.get(key).map(|Gone { flow, fate }| (*key, *flow, Some(fate)))
    }
}

#[derive(Serialize)]
struct FlowsPage<'a> {
    /// Flows open now.
    open: usize,
    /// Flows on this page.
    shown: usize,
    /// Most flows on a page.
    limit: usize,
    /// True when `open > shown`: the page holds the most recently started ones.
    truncated: bool,
    /// Ended, excluded and rejected flows remembered for `/flows/<tuple>`.
    recent: usize,
    flows: Vec<FlowOut<'a>>,
}

/// Writes the `/flows` page: the open flows, the most recently started first, at most
/// `limit` of them.
pub fn write_flows(v: &View<'_>, limit: usize, out: &mut Vec<u8>) {
    let mut all: Vec<(&FlowKey, &OpenFlow)> = v.flows.iter().collect();
    let newest_first = |a: &(&FlowKey, &OpenFlow), b: &(&FlowKey, &OpenFlow)| b.1.start.cmp(&a.1.start).then_with(|| a.0.cmp(b.0));
    if all.len() > limit && limit > 0 {
        all.select_nth_unstable_by(limit - 1, newest_first);
    }
    all.truncate(limit);
    all.sort_unstable_by(newest_first);
    let flows: Vec<FlowOut<'_>> = all.iter().map(|(k, f)| v.flow_out(k, f, None)).collect();
    let page = FlowsPage { open: v.flows.len(), shown: flows.len(), limit, truncated: v.flows.len() > flows.len(), recent: v.recent.len(), flows };
    // Serializing plain structs into a Vec cannot fail; an empty page would be noticed.
    if serde_json::to_writer(&mut *out, &page).is_err() {
        out.clear();
    }
    out.push(b'\n');
}

/// A flow as `flowd explain` and `/flows/<tuple>` name it: addresses and ports, and the
/// protocol when given (else both TCP and UDP are looked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    /// Transport protocol, when given.
    pub proto: Option<Proto>,
    /// One endpoint.
    pub src: SocketAddr,
    /// The other endpoint.
    pub dst: SocketAddr,
}

impl Tuple {
    /// The flow keys the tuple may name: each protocol, as given and reversed.
    pub fn keys(&self) -> Vec<FlowKey> {
        let protos = match self.proto {
            Some(p) => vec![p],
            None => vec![Proto::Tcp, Proto::Udp],
        };
        protos.into_iter().filter_map(|p| FlowKey::new(p, self.src, self.dst)).flat_map(|k| [k, k.reversed()]).collect()
    }

    /// The path of `/flows/<tuple>` for it.
    pub fn path(&self) -> String {
        let p = self.proto.map(|p| format!("/{p}")).unwrap_or_default();
        format!("/flows/{}/{}/{}/{}{p}", self.src.ip(), self.src.port(), self.dst.ip(), self.dst.port())
    }
}

fn percent_decode(b: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads `SRC SPORT DST DPORT [PROTO]` (words of the command line, or the `/`-separated
/// segments of `/flows/<tuple>`). Addresses may be in brackets; IPv4-mapped IPv6 is IPv4.
pub fn parse_tuple<S: AsRef<str>>(words: &[S]) -> Result<Tuple, String> {
    let w: Vec<&str> = words.iter().map(AsRef::as_ref).filter(|s| !s.is_empty()).collect();
    let (src, sport, dst, dport, proto) = match w.as_slice() {
        [a, b, c, d] => (a, b, c, d, None),
        [a, b, c, d, p] => (a, b, c, d, Some(*p)),
        _ => return Err(format!("expected SRC SPORT DST DPORT [tcp|udp], got {} words", w.len())),
    };
    let ip = |s: &str| {
        let t = s.trim_start_matches('[').trim_end_matches(']');
        let t = t.split('%').next().unwrap_or(t);
        t.parse::<IpAddr>().map(crate::netaddr::canonical).map_err(|_| format!("{s:?} is not an IP address"))
    };
    let port = |s: &str| s.parse::<u16>().map_err(|_| format!("{s:?} is not a port"));
    let proto = match proto {
        None => None,
        Some(p) => Some(Proto::parse(p.as_bytes()).ok_or_else(|| format!("{p:?} is not tcp or udp"))?),
    };
    let (s, d) = (SocketAddr::new(ip(src)?, port(sport)?), SocketAddr::new(ip(dst)?, port(dport)?));
    if s.is_ipv4() != d.is_ipv4() {
        return Err("the two addresses are of different families".into());
    }
    Ok(Tuple { proto, src: s, dst: d })
}

#[derive(Serialize)]
struct FlowPage<'a> {
    /// True when flowd knows the flow (open or remembered).
    found: bool,
    /// One sentence per fact, for people.
    explanation: Vec<String>,
    /// Every flow the tuple names (both orientations, each protocol).
    flows: Vec<FlowOut<'a>>,
}

/// The sentences explaining one flow.
fn explain_one(v: &View<'_>, key: &FlowKey, f: &OpenFlow, fate: Option<&Fate>) -> Vec<String> {
    let (e, a) = v.registry.names(f.exp, f.act);
    let ids = format!("experiment {} ({}), activity {} ({})", f.exp, e.unwrap_or("not in registry"), f.act, a.unwrap_or("not in registry"));
    let mut out = Vec::new();
    let head = format!("{key} from {}", f.source);
    match fate {
        Some(Fate::Rejected(what)) => {
            out.push(format!("{head}: rejected at {}: {what} is not in the registry ({}); no backend saw it", rfc3339(f.last), f.policy.reason()));
            return out;
        }
        Some(Fate::Excluded { src, dst }) => {
            let by = |side: &str, r: &Option<RuleRef>| {
                r.as_ref().map(|r| format!("{side} {} matches {}", if side == "src" { key.src.ip() } else { key.dst.ip() }, rule_text(r)))
            };
            let why: Vec<String> = [by("src", src), by("dst", dst)].into_iter().flatten().collect();
            out.push(format!(
                "{head}: excluded by the site policy ({}: {}) at its {} event at {}; no backend saw it",
                f.policy.reason(),
                why.join(", "),
                f.state,
                rfc3339(f.last)
            ));
            return out;
        }
        Some(Fate::Ended(t)) => out.push(format!("{head}: {ids}; started {}, ended {}", rfc3339(f.start), rfc3339(*t))),
        None => out.push(format!("{head}: {ids}; open since {} (last event: {} at {})", rfc3339(f.start), f.state, rfc3339(f.last))),
    }
    out.push(format!("site policy: passed ({}: {})", f.policy.reason(), f.policy.describe()));
    if f.fireflies > 0 {
        out.push(format!("udp_firefly: {} firefly event(s) sent for it", f.fireflies));
    }
    match (f.marker, fate) {
        (Some(d @ (Decision::Marked | Decision::MarkedMapFull)), None) => {
            let now = (v.label_of)(key).map(|l| format!(" with flow label {}", hex(l))).unwrap_or_default();
            out.push(format!("ebpf marker: marked{now} ({})", d.describe()));
        }
        (Some(Decision::Marked | Decision::MarkedMapFull), Some(_)) => out.push("ebpf marker: was marked until it ended".into()),
        (Some(d), _) => out.push(format!("ebpf marker: {} ({})", d.outcome().replace('_', " "), d.describe())),
        (None, _) => {}
    }
    if let Ok(l) = label::encode(f.exp, f.act, 0) {
        out.push(format!("its Scitags label is {} (entropy bits 0; `flowd label decode {}`)", hex(l), hex(l)));
    }
    out
}

/// Writes the `/flows/<tuple>` page for `segments` (the path after `/flows/`): every
/// flow the tuple names, and the explanation. 400 for a tuple that does not parse, 404
/// when flowd knows no such flow (the explanation then says what the policy would decide).
pub fn write_flow(v: &View<'_>, segments: &[u8], out: &mut Vec<u8>) -> Status {
    let tuple = percent_decode(segments).ok_or_else(|| "the path is not UTF-8".to_string()).and_then(|s| parse_tuple(&s.split('/').collect::<Vec<_>>()));
    let tuple = match tuple {
        Ok(t) => t,
        Err(e) => {
            let body = serde_json::json!({"found": false, "error": format!("{e} (use /flows/SRC/SPORT/DST/DPORT[/tcp|udp])")});
            out.extend_from_slice(body.to_string().as_bytes());
            out.push(b'\n');
            return Status::BadRequest;
        }
    };
    let found: Vec<(FlowKey, OpenFlow, Option<&Fate>)> = tuple.keys().iter().filter_map(|k| v.find(k)).collect();
    let mut explanation = Vec::new();
    for (k, f, fate) in &found {
        explanation.extend(explain_one(v, k, f, *fate));
    }
    if found.is_empty() {
        let k = tuple.keys().first().copied();
        explanation.push(format!(
            "flowd has not seen {}:{} <-> {}:{} (it remembers the last {RECENT_FLOWS} ended, excluded or rejected flows)",
            tuple.src.ip(),
            tuple.src.port(),
            tuple.dst.ip(),
            tuple.dst.port()
        ));
        if let Some(k) = k {
            explanation.push(match v.policy.peek(&k) {
                Verdict::Exclude { decision, src, dst } => {
                    let r: Vec<String> = [("src", k.src.ip(), src), ("dst", k.dst.ip(), dst)]
                        .iter()
                        .filter_map(|(side, ip, r)| r.as_ref().map(|r| format!("{side} {ip} matches {}", rule_text(r))))
                        .collect();
                    format!("if it started now, the site policy would exclude it ({}: {})", decision.reason(), r.join(", "))
                }
                Verdict::Pass(d) => format!("if it started now, the site policy would pass it ({}: {})", d.reason(), d.describe()),
            });
        }
    }
    let flows = found.iter().map(|(k, f, fate)| v.flow_out(k, f, *fate)).collect();
    let page = FlowPage { found: !found.is_empty(), explanation, flows };
    if serde_json::to_writer(&mut *out, &page).is_err() {
        out.clear();
    }
    out.push(b'\n');
    if found.is_empty() {
        Status::NotFound
    } else {
        Status::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyConfig;
    use crate::flow::{FlowEvent, FlowState, Micros};
    use crate::metrics::Metrics;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn key(s: &str, d: &str) -> FlowKey {
        FlowKey::new(Proto::Tcp, s.parse().unwrap(), d.parse().unwrap()).unwrap()
    }

    struct World {
        flows: FlowTable,
        recent: Recent,
        registry: Registry,
        policy: Policy,
    }

    fn world() -> World {
        let mut m = Metrics::new();
        let mut flows = FlowTable::new(100);
        let mut ev = FlowEvent::new(FlowState::Start, key("[2001:db8::1]:1094", "[2001:db8::2]:5000"), 2, 9, Micros(1_000_000));
        flows.track_as(&mut ev, "np_api", Decision::PassedNoMatch, &mut m);
        let f = flows.get_mut(&ev.key).unwrap();
        f.note(Decision::Marked);
        f.note(Decision::Fireflied);
        let mut recent = Recent::new(10);
        let ex = key("10.0.0.1:1", "10.0.0.2:2");
        let mut of = OpenFlow::new("firefly", 3, 14, Micros(2_000_000), FlowState::Start, Decision::ExcludedNetwork);
        of.last = Micros(2_000_000);
        let rule = Some(RuleRef { key: "EXCLUDE_NETWORKS", rule: Arc::from("10.0.0.0/8") });
        recent.remember(ex, Gone { flow: of, fate: Fate::Excluded { src: rule.clone(), dst: rule } });
        let cfg = PolicyConfig {
            networks: vec!["10.0.0.0/8".parse().unwrap()],
            domains: vec![],
            exclude_match: crate::config::ExcludeMatch::Both,
            domains_refresh: Duration::from_secs(300),
        };
        World { flows, recent, registry: Registry::bundled(), policy: Policy::new(&cfg, None, Instant::now()) }
    }

    fn view<'a>(w: &'a World, label_of: &'a dyn Fn(&FlowKey) -> Option<u32>) -> View<'a> {
        View { flows: &w.flows, recent: &w.recent, registry: &w.registry, policy: &w.policy, label_of }
    }

    #[test]
    fn test_flows_page_lists_open_flows_with_names_label_and_decisions() {
        let w = world();
        let marked = |_: &FlowKey| Some(0xD0127);
        let mut out = Vec::new();
        write_flows(&view(&w, &marked), MAX_FLOWS, &mut out);
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((j["open"].as_u64(), j["shown"].as_u64(), j["truncated"].as_bool(), j["recent"].as_u64()), (Some(1), Some(1), Some(false), Some(1)));
        let f = &j["flows"][0];
        assert_eq!(f["src"], "2001:db8::1");
        assert_eq!(f["dport"], 5000);
        assert_eq!(f["source"], "np_api");
        assert_eq!(f["experiment"]["name"], "atlas");
        assert_eq!(f["activity"]["name"], "Debug");
        assert_eq!(f["label"], "0x10024");
        assert_eq!(f["state"], "open");
        assert_eq!(f["fireflies"], 1);
        assert_eq!(f["policy"]["reason"], "no_match");
        assert_eq!(f["marker"]["outcome"], "marked");
        assert_eq!(f["marker"]["label"], "0xD0127");
        assert_eq!(f["start"], "1970-01-01T00:00:01.000000+00:00");
        // Capped: the page says so.
        let mut out = Vec::new();
        write_flows(&view(&w, &marked), 0, &mut out);
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((j["shown"].as_u64(), j["truncated"].as_bool()), (Some(0), Some(true)));
    }

    #[test]
    fn test_a_page_holds_the_newest_flows_when_capped() {
        let mut w = world();
        let mut m = Metrics::new();
        for p in 1..=50u16 {
            let mut ev = FlowEvent::new(FlowState::Start, key("192.0.2.1:1094", &format!("192.0.2.2:{p}")), 2, 9, Micros(i64::from(p) * 1_000_000));
            w.flows.track_as(&mut ev, "netlink", Decision::PassedNoMatch, &mut m);
        }
        let none = |_: &FlowKey| None;
        let mut out = Vec::new();
        write_flows(&view(&w, &none), 5, &mut out);
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let ports: Vec<u64> = j["flows"].as_array().unwrap().iter().map(|f| f["dport"].as_u64().unwrap()).collect();
        assert_eq!(ports, [50, 49, 48, 47, 46]);
        assert_eq!((j["open"].as_u64(), j["truncated"].as_bool()), (Some(51), Some(true)));
    }

    #[test]
    fn test_explain_open_excluded_and_unseen() {
        let w = world();
        let marked = |_: &FlowKey| Some(0xD0127);
        let v = view(&w, &marked);
        let mut out = Vec::new();
        // Reversed and with brackets: still the open flow.
        assert_eq!(write_flow(&v, b"[2001:db8::2]/5000/2001:db8::1/1094", &mut out), Status::Ok);
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let text = j["explanation"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect::<Vec<_>>().join("\n");
        assert!(text.contains("experiment 2 (atlas), activity 9 (Debug); open since 1970-01-01T00:00:01"), "{text}");
        assert!(text.contains("ebpf marker: marked with flow label 0xD0127"), "{text}");
        assert!(text.contains("1 firefly event(s)"), "{text}");
        let mut out = Vec::new();
        assert_eq!(write_flow(&v, b"10.0.0.1/1/10.0.0.2/2/tcp", &mut out), Status::Ok);
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["flows"][0]["state"], "excluded");
        assert_eq!(j["flows"][0]["rules"]["dst"], "EXCLUDE_NETWORKS 10.0.0.0/8");
        assert!(
            j["explanation"][0].as_str().unwrap().contains("excluded by the site policy (network: src 10.0.0.1 matches EXCLUDE_NETWORKS 10.0.0.0/8"),
            "{j}"
        );
        let mut out = Vec::new();
        assert_eq!(write_flow(&v, b"10.9.9.9/7/10.8.8.8", &mut out), Status::BadRequest, "three words");
        assert!(String::from_utf8_lossy(&out).contains("expected SRC SPORT DST DPORT"));
        let mut out = Vec::new();
        assert_eq!(write_flow(&v, b"10.9.9.9/7/10.8.8.8%2F8", &mut out), Status::NotFound, "percent-encoded");
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["found"], false);
        assert!(j["explanation"][1].as_str().unwrap().contains("would exclude it (network: src 10.9.9.9 matches EXCLUDE_NETWORKS 10.0.0.0/8, dst"), "{j}");
        let mut out = Vec::new();
        write_flow(&v, b"192.0.2.1/7/10.8.8.8/8", &mut out);
        assert!(String::from_utf8_lossy(&out).contains("would pass it (one_endpoint"), "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn test_parse_tuple() {
        let t = parse_tuple(&["::ffff:192.0.2.1", "1094", "192.0.2.2", "5000"]).unwrap();
        assert_eq!((t.src.to_string(), t.dst.to_string(), t.proto), ("192.0.2.1:1094".into(), "192.0.2.2:5000".into(), None));
        assert_eq!(t.keys().len(), 4);
        assert_eq!(t.path(), "/flows/192.0.2.1/1094/192.0.2.2/5000");
        let t = parse_tuple(&["fe80::1%eth0", "1", "fe80::2", "2", "UDP"]).unwrap();
        assert_eq!((t.proto, t.keys().len()), (Some(Proto::Udp), 2));
        assert_eq!(t.path(), "/flows/fe80::1/1/fe80::2/2/udp");
        for bad in [
            &["a", "1", "b", "2"][..],
            &["192.0.2.1", "1", "::1", "2"],
            &["192.0.2.1", "x", "192.0.2.2", "2"],
            &["1.1.1.1", "1", "2.2.2.2"],
            &["1.1.1.1", "1", "2.2.2.2", "2", "sctp"],
        ] {
            assert!(parse_tuple(bad).is_err(), "{bad:?}");
        }
    }
}

//! What the metrics listener's `/flows` and `/flows/<tuple>` pages say (JSON), and the
//! one-line explanations `flowd explain` prints: built from the flow table, the memory
//! of recent flows, the registry, the site policy and the marker's labels.
//!
//! Pure: the daemon lends a [`View`] of its state for one page; nothing here does I/O
//! or reads the clock. Bounded: `/flows` lists at most [`MAX_FLOWS`] flows (the most
//! recently started ones) and says so in the page.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use crate::decision::{Decision, RuleRef};
use crate::flow::{FlowKey, Micros, Proto};
use crate::flow_table::{Fate, FlowTable, Gone, OpenFlow, Recent, RECENT_FLOWS};
use crate::label;
use crate::policy::{Policy, Verdict};
use crate::registry::ScitagsRegistry;
use crate::wire::http::Status;
use crate::wire::prom::write_u64;
use crate::wire::time::{rfc3339, write_rfc3339};

/// Most flows on one `/flows` page.
pub const MAX_FLOWS: usize = 10_000;

/// What a page is built from: the daemon's state, lent for one request.
pub struct View<'a> {
    /// Open flows.
    pub flows: &'a FlowTable,
    /// Recently ended, excluded and rejected flows.
    pub recent: &'a Recent,
    /// Names of experiments and activities.
    pub registry: &'a ScitagsRegistry,
    /// The rules in force (for flows flowd has not seen).
    pub policy: &'a Policy,
    /// The label a backend (the eBPF marker) puts on a flow's packets now.
    pub label_of: &'a dyn Fn(&FlowKey) -> Option<u32>,
}

/// Appends `s` as a JSON string (quotes, backslashes and control characters escaped).
fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &c in s.as_bytes() {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]),
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

/// `"name":` (names are plain ASCII constants).
fn json_key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn json_time(out: &mut Vec<u8>, t: Micros) {
    out.push(b'"');
    write_rfc3339(out, t);
    out.push(b'"');
}

/// An address as a JSON string (IPv4 written digit by digit: the common case, and
/// `Display` is the slow part of a page of 10,000 flows).
fn json_ip(out: &mut Vec<u8>, ip: IpAddr) {
    out.push(b'"');
    match ip {
        IpAddr::V4(a) => {
            for (i, o) in a.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_u64(out, u64::from(*o));
            }
        }
        IpAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
    out.push(b'"');
}

/// A flow label as `"0x10024"`.
fn json_label(out: &mut Vec<u8>, l: u32) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(b"\"0x");
    for shift in [16, 12, 8, 4, 0] {
        out.push(HEX[((l >> shift) & 15) as usize]);
    }
    out.push(b'"');
}

/// `{"outcome":"…","reason":"…"` (the caller closes the object).
fn json_decision(out: &mut Vec<u8>, d: Decision) {
    out.extend_from_slice(b"{\"outcome\":\"");
    out.extend_from_slice(d.outcome().as_bytes());
    out.extend_from_slice(b"\",\"reason\":\"");
    out.extend_from_slice(d.reason().as_bytes());
    out.push(b'"');
}

/// `{"id":…,"name":…}` (`null` without a registry name).
fn json_named(out: &mut Vec<u8>, id: u32, name: Option<&str>) {
    out.extend_from_slice(b"{\"id\":");
    write_u64(out, u64::from(id));
    out.extend_from_slice(b",\"name\":");
    match name {
        Some(n) => json_str(out, n),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

fn hex(l: u32) -> String {
    format!("0x{l:05X}")
}

fn rule_text(r: &RuleRef) -> String {
    format!("{} {}", r.key, r.rule)
}

impl View<'_> {
    /// Appends one flow as a JSON object: the 5-tuple, `state` (`open`, `ended`,
    /// `excluded`, `rejected`), `last_event`, `source`, `experiment` and `activity` (id
    /// and registry name; not for a rejected line), `label` (entropy bits 0), `start`, `last_seen`, `end`,
    /// `fireflies`, `policy`, `marker` (with the label on its packets now), `rules`
    /// (excluded) and `rejected` (what was not found).
    fn write_flow(&self, out: &mut Vec<u8>, key: &FlowKey, f: &OpenFlow, fate: Option<&Fate>) {
        let rejected = matches!(fate, Some(Fate::Rejected(_)));
        let (e, a) = self.registry.names(f.exp, f.act);
        out.extend_from_slice(b"{\"proto\":\"");
        out.extend_from_slice(key.proto.as_str().as_bytes());
        out.extend_from_slice(b"\",\"src\":");
        json_ip(out, key.src.ip());
        out.extend_from_slice(b",\"sport\":");
        write_u64(out, u64::from(key.src.port()));
        out.extend_from_slice(b",\"dst\":");
        json_ip(out, key.dst.ip());
        out.extend_from_slice(b",\"dport\":");
        write_u64(out, u64::from(key.dst.port()));
        let state = match fate {
            None => "open",
            Some(Fate::Ended(_)) => "ended",
            Some(Fate::Excluded { .. }) => "excluded",
            Some(Fate::Rejected(_)) => "rejected",
        };
        for (k, v) in [("state", state), ("last_event", f.state.as_str()), ("source", f.source)] {
            out.push(b',');
            json_key(out, k);
            json_str(out, v);
        }
        // A rejected line's experiment or activity is what the registry did not know:
        // no ids to show (`rejected` says what it was).
        if !rejected {
            out.push(b',');
            json_key(out, "experiment");
            json_named(out, f.exp, e);
            out.push(b',');
            json_key(out, "activity");
            json_named(out, f.act, a);
            if let Ok(l) = label::encode(f.exp, f.act, 0) {
                out.push(b',');
                json_key(out, "label");
                json_label(out, l);
            }
        }
        out.push(b',');
        json_key(out, "start");
        json_time(out, f.start);
        out.push(b',');
        json_key(out, "last_seen");
        json_time(out, f.last);
        if let Some(Fate::Ended(t)) = fate {
            out.push(b',');
            json_key(out, "end");
            json_time(out, *t);
        }
        out.push(b',');
        json_key(out, "fireflies");
        write_u64(out, u64::from(f.fireflies));
        out.push(b',');
        json_key(out, "policy");
        json_decision(out, f.policy);
        out.push(b'}');
        if let Some(d) = f.marker {
            out.push(b',');
            json_key(out, "marker");
            json_decision(out, d);
            if let Some(l) = (self.label_of)(key).filter(|_| fate.is_none()) {
                out.push(b',');
                json_key(out, "label");
                json_label(out, l);
            }
            out.push(b'}');
        }
        match fate {
            Some(Fate::Excluded { src, dst }) => {
                out.push(b',');
                json_key(out, "rules");
                out.push(b'{');
                let sides: Vec<(&str, &RuleRef)> = [("src", src), ("dst", dst)].into_iter().filter_map(|(s, r)| r.as_ref().map(|r| (s, r))).collect();
                for (i, (side, r)) in sides.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_key(out, side);
                    json_str(out, &rule_text(r));
                }
                out.push(b'}');
            }
            Some(Fate::Rejected(what)) => {
                out.push(b',');
                json_key(out, "rejected");
                json_str(out, what);
            }
            _ => {}
        }
        out.push(b'}');
    }

    /// What is known about `key`: open, else remembered.
    fn find(&self, key: &FlowKey) -> Option<(FlowKey, OpenFlow, Option<&Fate>)> {
        if let Some(f) = self.flows.get(key) {
            return Some((*key, *f, None));
        }
        self.recent.get(key).map(|Gone { flow, fate }| (*key, *flow, Some(fate)))
    }
}

/// Writes the `/flows` page: `open` (flows open), `shown` (on this page), `limit`,
/// `truncated` (more are open than shown: the page holds the most recently started),
/// `recent` (ended, excluded and rejected flows remembered for `/flows/<tuple>`) and
/// `flows`, the most recently started first, at most `limit` of them. Written straight
/// into `out`, without a value tree or a string per field.
pub fn write_flows(v: &View<'_>, limit: usize, out: &mut Vec<u8>) {
    let mut all: Vec<(&FlowKey, &OpenFlow)> = v.flows.iter().collect();
    let newest_first = |a: &(&FlowKey, &OpenFlow), b: &(&FlowKey, &OpenFlow)| b.1.start.cmp(&a.1.start).then_with(|| a.0.cmp(b.0));
    if all.len() > limit && limit > 0 {
        all.select_nth_unstable_by(limit - 1, newest_first);
    }
    all.truncate(limit);
    all.sort_unstable_by(newest_first);
    out.reserve(all.len() * 480 + 128);
    out.extend_from_slice(b"{\"open\":");
    write_u64(out, v.flows.len() as u64);
    out.extend_from_slice(b",\"shown\":");
    write_u64(out, all.len() as u64);
    out.extend_from_slice(b",\"limit\":");
    write_u64(out, limit as u64);
    out.extend_from_slice(if v.flows.len() > all.len() { b",\"truncated\":true" } else { b",\"truncated\":false" });
    out.extend_from_slice(b",\"recent\":");
    write_u64(out, v.recent.len() as u64);
    out.extend_from_slice(b",\"flows\":[");
    for (i, (k, f)) in all.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'\n');
        v.write_flow(out, k, f, None);
    }
    out.extend_from_slice(b"]}\n");
}

/// A flow as `flowd explain` and `/flows/<tuple>` name it: addresses and ports, and the
/// protocol when given (else both TCP and UDP are looked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tuple {
    /// Transport protocol, when given.
    pub proto: Option<Proto>,
    /// One endpoint.
    pub src: SocketAddr,
    /// The other endpoint.
    pub dst: SocketAddr,
}

impl Tuple {
    /// The flow keys the tuple may name: each protocol, as given and reversed.
    pub(crate) fn keys(&self) -> Vec<FlowKey> {
        let protos = match self.proto {
            Some(p) => vec![p],
            None => vec![Proto::Tcp, Proto::Udp],
        };
        protos.into_iter().filter_map(|p| FlowKey::new(p, self.src, self.dst)).flat_map(|k| [k, k.reversed()]).collect()
    }

    /// The path of `/flows/<tuple>` for it.
    pub(crate) fn path(&self) -> String {
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
pub(crate) fn parse_tuple<S: AsRef<str>>(words: &[S]) -> Result<Tuple, String> {
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
pub(crate) fn write_flow(v: &View<'_>, segments: &[u8], out: &mut Vec<u8>) -> Status {
    let tuple = percent_decode(segments).ok_or_else(|| "the path is not UTF-8".to_string()).and_then(|s| parse_tuple(&s.split('/').collect::<Vec<_>>()));
    let tuple = match tuple {
        Ok(t) => t,
        Err(e) => {
            out.extend_from_slice(b"{\"found\":false,\"error\":");
            json_str(out, &format!("{e} (use /flows/SRC/SPORT/DST/DPORT[/tcp|udp])"));
            out.extend_from_slice(b"}\n");
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
    // {"found": …, "explanation": [sentences], "flows": [every flow the tuple names]}
    out.extend_from_slice(if found.is_empty() { b"{\"found\":false" } else { b"{\"found\":true" });
    out.extend_from_slice(b",\"explanation\":[");
    for (i, l) in explanation.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, l);
    }
    out.extend_from_slice(b"],\"flows\":[");
    for (i, (k, f, fate)) in found.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        v.write_flow(out, k, f, *fate);
    }
    out.extend_from_slice(b"]}\n");
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
    use crate::flow::{FlowEvent, FlowState};
    use crate::metrics::Metrics;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn key(s: &str, d: &str) -> FlowKey {
        FlowKey::new(Proto::Tcp, s.parse().unwrap(), d.parse().unwrap()).unwrap()
    }

    struct World {
        flows: FlowTable,
        recent: Recent,
        registry: ScitagsRegistry,
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
        World { flows, recent, registry: ScitagsRegistry::bundled(), policy: Policy::new(&cfg, None, Instant::now()) }
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
    fn test_strings_are_escaped() {
        let mut w = world();
        let k = key("192.0.2.1:1", "192.0.2.2:2");
        w.recent.rejected(k, "np_api", FlowState::Start, Decision::UnknownExperiment, "experiment \"a\\b\u{1}\n\"", Micros(5));
        let none = |_: &FlowKey| None;
        let mut out = Vec::new();
        assert_eq!(write_flow(&view(&w, &none), b"192.0.2.1/1/192.0.2.2/2", &mut out), Status::Ok);
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(j["flows"][0]["rejected"], "experiment \"a\\b\u{1}\n\"");
        assert!(j["flows"][0].get("experiment").is_none() && j["flows"][0].get("label").is_none(), "{j}");
        let mut out = Vec::new();
        assert_eq!(write_flow(&view(&w, &none), b"x", &mut out), Status::BadRequest);
        let e = serde_json::from_slice::<serde_json::Value>(&out).unwrap()["error"].as_str().unwrap().to_string();
        assert!(e.starts_with("expected SRC SPORT DST DPORT [tcp|udp], got 1 words"), "{e}");
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

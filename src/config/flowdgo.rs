//! flowd-go's configuration (its YAML or JSON file, as `flowd-go --conf` reads it) → flowd's.
//!
//! Owns the mapping, written as data: [`RULES`] names every flowd-go key (its path, e.g.
//! `backends.firefly.destinationPort`) and what it becomes in flowd: a flowd key with a
//! value conversion, part of a setting derived from several keys, flowd's behaviour as it
//! is, or unsupported (with why). Converting yields ordinary flowd config entries (key,
//! value, the YAML line), which are validated by the key table like any `flowd.cfg`
//! line; an entry whose key this build does not know yet (keys of other work in
//! progress, e.g. the perfsonar plugin) is reported as "not yet supported" instead of
//! failing, and takes effect once the key exists.
//!
//! flowd-go's rules hold: a plugin, backend or enricher runs only when its key is present;
//! `{}` means its defaults, and flowd-go's defaults apply where they differ from flowd's
//! (e.g. the firefly listener on 127.0.0.1, the marker on `lo`, the collector
//! 127.0.0.1:10514). Keys flowd-go ignores (unknown or misspelt: its YAML decoder is
//! case-sensitive and lenient) are ignored here too, with a warning saying what to write.
//! `flowd config convert` prints the equivalent flowd.cfg ([`convert_to_cfg`]).
//! Pure: no I/O.

use std::path::Path;

use super::keys;
use super::raw::{Entry, Value};
use super::validate;
use super::yaml::{self, Kind, Node};
use super::{ConfigError, Loaded};

#[path = "flowdgo_rules.rs"]
mod rules;
use rules::{int_in, ints, port, strings, GO_HTTP_URLS, GO_STUN_SERVERS, STALE, WALKED};
pub(crate) use rules::{Rule, To, RULES};

/// One flowd config entry made from flowd-go's file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Mapped {
    /// The entry (its line is the flowd-go key's line).
    pub entry: Entry,
    /// The flowd-go key(s) it comes from.
    pub from: String,
    /// False when this flowd does not know the key (or the plugin/backend) yet.
    pub supported: bool,
}

/// flowd-go's file, converted.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    /// The flowd entries, in the order of flowd-go's keys.
    pub entries: Vec<Mapped>,
    /// Findings that do not stop flowd: (line, message).
    pub warnings: Vec<(usize, String)>,
    /// Errors: (line, message).
    pub problems: Vec<(usize, String)>,
}

impl Converted {
    fn warn(&mut self, line: usize, path: &str, msg: impl std::fmt::Display) {
        self.warnings.push((line, format!("line {line}: {path}: {msg}")));
    }

    fn bad(&mut self, line: usize, path: &str, msg: impl std::fmt::Display) {
        self.problems.push((line, format!("line {line}: {path}: {msg}")));
    }

    fn set(&mut self, key: &str, value: Value, line: usize, from: &str) {
        let supported = keys::find(key).is_some();
        self.entries.push(Mapped { entry: Entry { key: key.to_string(), value, line }, from: from.to_string(), supported });
    }
}

/// True when `text` is flowd-go's YAML or JSON rather than flowd.cfg: its first line that
/// is not blank or a comment opens a JSON object or a YAML document, or has a `:` before
/// any `=` (`plugins:` against `PLUGIN='np_api'`).
pub fn looks_like(text: &str) -> bool {
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('{') || t.starts_with("---") || t.starts_with("%YAML") {
            return true;
        }
        return t.find([':', '=']).is_some_and(|i| t.as_bytes()[i] == b':');
    }
    false
}

fn rule(path: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.path == path)
}

/// Finds `key` under `node` and its line.
fn child<'a>(node: Option<&'a Node>, key: &str) -> Option<(&'a Node, usize)> {
    node?.get(key).map(|e| (&e.value, e.line))
}

/// A section's node when it is present as a mapping (`{}` included).
fn section<'a>(root: &'a Node, path: &str) -> Option<(&'a Node, usize)> {
    let mut cur = Some((root, 1));
    for part in path.split('.') {
        cur = child(cur.map(|c| c.0), part);
    }
    cur.filter(|(n, _)| n.entries().is_some())
}

/// Converts flowd-go's file into flowd entries, warnings and problems.
pub(crate) fn convert(text: &str) -> Converted {
    let mut out = Converted::default();
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => Node { line: 1, kind: Kind::Map(Vec::new()) },
        Err(e) => {
            out.problems.push((e.line, format!("line {}: YAML: {}", e.line, e.msg)));
            return out;
        }
    };
    if root.entries().is_none() {
        out.bad(root.line, "(top level)", format_args!("expected a mapping of flowd-go settings, found {}", root.describe()));
        return out;
    }
    walk(&root, "", &mut out);
    defaults("", &root, 1, &mut out);
    derive(&root, &mut out);
    super::sort_by_line(&mut out.warnings);
    super::sort_by_line(&mut out.problems);
    out
}

/// Visits every key: simple keys become entries, the rest is checked and reported.
fn walk(node: &Node, prefix: &str, out: &mut Converted) {
    let Some(entries) = node.entries() else { return };
    for e in entries {
        let path = if prefix.is_empty() { e.key.clone() } else { format!("{prefix}.{}", e.key) };
        let Some(rule) = rule(&path) else {
            unknown(&path, e.line, entries, prefix, out);
            continue;
        };
        let is_section = matches!(rule.to, To::Plugin(_) | To::Backend(_) | To::Section) || WALKED.contains(&path.as_str());
        if is_section && e.value.is_null() {
            out.warn(e.line, &path, "is empty (null): flowd-go runs nothing for it, and neither does flowd; write `{}` for its defaults");
            continue;
        }
        if is_section && e.value.entries().is_none() {
            out.bad(e.line, &path, format_args!("expected a mapping, found {}", e.value.describe()));
            continue;
        }
        match rule.to {
            To::Key(key, conv) => match conv(&e.value) {
                Ok(v) => out.set(key, v, e.line, &path),
                Err(m) => out.bad(e.line, &path, m),
            },
            To::Unsupported(why) => out.warn(e.line, &path, format_args!("unsupported, ignored: {why}")),
            To::WarnIf(test, why) if test(&e.value) => out.warn(e.line, &path, format_args!("unsupported, ignored: {why}")),
            To::Plugin(_) | To::Backend(_) | To::Section => {
                walk(&e.value, &path, out);
                defaults(&path, &e.value, e.line, out);
            }
            To::Derived(_) if WALKED.contains(&path.as_str()) => walk(&e.value, &path, out),
            To::Derived(_) | To::Same(_) | To::WarnIf(..) => {}
        }
    }
}

/// flowd-go's defaults for the keys of the present section `path` that it leaves out.
fn defaults(path: &str, node: &Node, line: usize, out: &mut Converted) {
    for rule in RULES.iter().filter(|r| r.go_default.is_some() && r.path.rsplit_once('.').map_or(path.is_empty(), |(p, _)| p == path)) {
        let key = rule.path.rsplit('.').next().unwrap_or(rule.path);
        if node.get(key).is_some() {
            continue;
        }
        if let (To::Key(k, conv), Some(Ok(Some(v)))) = (rule.to, rule.go_default.map(yaml::parse)) {
            if let Ok(v) = conv(&v) {
                out.set(k, v, line, &format!("{} (flowd-go's default)", rule.path));
            }
        }
    }
}

/// A key flowd-go does not have: a stale one with its suggestion, a misspelling of a
/// sibling (flowd-go's keys are case-sensitive), or simply unknown; all ignored, as flowd-go does.
fn unknown(path: &str, line: usize, siblings: &[yaml::MapEntry], prefix: &str, out: &mut Converted) {
    if let Some((_, why)) = STALE.iter().find(|(p, _)| *p == path) {
        return out.warn(line, path, why);
    }
    let name = path.rsplit('.').next().unwrap_or(path);
    let known = RULES
        .iter()
        .filter_map(|r| r.path.strip_prefix(prefix).map(|rest| rest.trim_start_matches('.')))
        .find(|k| !k.contains('.') && k.eq_ignore_ascii_case(name));
    match known {
        Some(k) if !siblings.iter().any(|s| s.key == k) => out.warn(
            line,
            path,
            format_args!(
                "flowd-go's key is `{k}` (its keys are case-sensitive): flowd-go ignores `{name}` and uses the default, and so does flowd; rename it to `{k}`"
            ),
        ),
        Some(k) => out.warn(line, path, format_args!("ignored (flowd-go reads `{k}`, which is also set)")),
        None => out.warn(line, path, "unknown key, ignored (flowd-go ignores it too)"),
    }
}

/// The settings made from several keys, and the component lists.
fn derive(root: &Node, out: &mut Converted) {
    // PLUGIN and BACKEND: the present sections, in flowd-go's order.
    for (list, flowd_key, kinds) in [("plugins", "PLUGIN", true), ("backends", "BACKEND", false)] {
        let line = child(Some(root), list).map_or(1, |c| c.1);
        let mut names = Vec::new();
        for rule in RULES.iter().filter(|r| r.path.strip_prefix(list).is_some_and(|p| p.starts_with('.') && !p[1..].contains('.'))) {
            let name = match (rule.to, kinds) {
                (To::Plugin(n), true) | (To::Backend(n), false) => n,
                _ => continue,
            };
            let Some((_, l)) = section(root, rule.path) else { continue };
            let known = if kinds { super::model::PluginKind::parse(name).is_some() } else { super::model::BackendKind::parse(name).is_some() };
            if known {
                names.push(Value::Str(name.to_string()));
            } else {
                out.warn(l, rule.path, format_args!("the {name} {} is not yet supported by this flowd; ignored", if kinds { "plugin" } else { "backend" }));
            }
        }
        out.set(flowd_key, Value::List(names), line, list);
    }
    if let Some((_, line)) = section(root, "plugins.namedPipe") {
        // flowd-go creates the pipe with mode 0666 (umask cleared), so any local user may write.
        out.set("NP_API_FILE_MODE", Value::Int(0o666), line, "plugins.namedPipe (flowd-go creates the pipe 0666)");
    }
    if let Some((fb, _)) = section(root, "backends.firefly") {
        collector(fb, out);
        stun(fb, out);
    }
    enrichment(root, out);
    if let Some((ip, line)) = section(root, "plugins.iperf3") {
        iperf(ip, line, out);
    }
    if let Some((m, line)) = section(root, "backends.marker") {
        interfaces(m, line, out);
    }
    if section(root, "backends.prometheus").is_none() {
        // flowd-go serves no HTTP without its prometheus backend; flowd's own metrics
        // listener is off too (PROMETHEUS_SRV_PORT turns it on in a converted flowd.cfg).
        out.set("PROMETHEUS_SRV_PORT", Value::Int(0), 1, "(no backends.prometheus)");
    }
}

/// UDP_FIREFLY_DST from sendToCollector, collectorAddress and collectorPort.
fn collector(fb: &Node, out: &mut Converted) {
    let send = child(Some(fb), "sendToCollector");
    let addr = child(Some(fb), "collectorAddress");
    let port_node = child(Some(fb), "collectorPort");
    match send.map(|(n, l)| (n.as_bool(), l)) {
        Some((Some(true), l)) => {
            let host = match addr.map(|(n, al)| (n.text(), al)) {
                None => "127.0.0.1".to_string(),
                Some((Some(h), _)) if !h.trim().is_empty() => h.trim().to_string(),
                Some((_, al)) => return out.bad(al, "backends.firefly.collectorAddress", "expected a host name or address"),
            };
            let p = match port_node.map(|(n, pl)| (port(n), pl)) {
                None => 10514,
                Some((Ok(Value::Int(p)), _)) => p,
                Some((Err(m), pl)) => return out.bad(pl, "backends.firefly.collectorPort", m),
                Some((Ok(_), _)) => 10514,
            };
            let host = if host.parse::<std::net::Ipv6Addr>().is_ok() { format!("[{host}]") } else { host };
            out.set(
                "UDP_FIREFLY_DST",
                Value::List(vec![Value::Str(format!("{host}:{p}"))]),
                l,
                "backends.firefly.sendToCollector, collectorAddress, collectorPort",
            );
        }
        Some((None, l)) => {
            out.bad(l, "backends.firefly.sendToCollector", format_args!("expected true or false, found {}", send.map_or(String::new(), |s| s.0.describe())))
        }
        _ => {
            for (n, what) in [(addr, "collectorAddress"), (port_node, "collectorPort")] {
                if let Some((_, l)) = n {
                    out.warn(l, &format!("backends.firefly.{what}"), "has no effect without `sendToCollector: true` (as in flowd-go)");
                }
            }
        }
    }
}

/// IP_DISCOVERY_* from `stun` (present = discovery on, with flowd-go's servers and services).
fn stun(fb: &Node, out: &mut Converted) {
    let Some((st, line)) = child(Some(fb), "stun").filter(|(n, _)| n.entries().is_some()) else { return };
    const FROM: &str = "backends.firefly.stun";
    out.set("IP_DISCOVERY_ENABLED", Value::Bool(true), line, FROM);
    let servers = match child(Some(st), "stunServers") {
        Some((n, l)) => match strings(n) {
            Ok(v) => (v, l),
            Err(m) => return out.bad(l, "backends.firefly.stun.stunServers", m),
        },
        None => (GO_STUN_SERVERS.iter().map(|s| s.to_string()).collect(), line),
    };
    out.set("IP_DISCOVERY_STUN_SERVERS", Value::List(servers.0.into_iter().map(Value::Str).collect()), servers.1, "backends.firefly.stun.stunServers");
    out.set(
        "IP_DISCOVERY_HTTP_URLS",
        Value::List(GO_HTTP_URLS.iter().map(|u| Value::Str(u.to_string())).collect()),
        line,
        "backends.firefly.stun (flowd-go's HTTP services)",
    );
    if let Some((m, l)) = child(Some(st), "manualMapping") {
        match &m.kind {
            Kind::Map(pairs) => {
                let v = pairs.iter().map(|p| Value::Str(format!("{}={}", p.key, p.value.text().unwrap_or("?")))).collect();
                out.set("IP_DISCOVERY_MAP", Value::List(v), l, "backends.firefly.stun.manualMapping");
            }
            _ if m.is_null() => {}
            _ => out.bad(l, "backends.firefly.stun.manualMapping", "expected a mapping of private: public addresses"),
        }
    }
}

/// UDP_FIREFLY_NETLINK and UDP_FIREFLY_ONGOING_INTERVAL: flowd-go sends a periodic
/// (ongoing) firefly per enricher period when `backends.firefly.enrich` is on and an
/// enricher runs; flowd does it with its sock_diag enrichment.
fn enrichment(root: &Node, out: &mut Converted) {
    let enrich = child(section(root, "backends.firefly").map(|s| s.0), "enrich");
    let on = match enrich {
        Some((n, l)) => match n.as_bool() {
            Some(b) => b,
            None => return out.bad(l, "backends.firefly.enrich", format_args!("expected true or false, found {}", n.describe())),
        },
        None => false,
    };
    let enrichers = section(root, "enrichers");
    let source = section(root, "enrichers.netlink").or_else(|| section(root, "enrichers.skops"));
    let period = match child(enrichers.map(|e| e.0), "period") {
        Some((n, l)) => match int_in(n, 1, 86_400_000) {
            Ok(ms) => Some((ms, l)),
            Err(m) => return out.bad(l, "enrichers.period", format_args!("milliseconds: {m}")),
        },
        None => None,
    };
    match (on, enrich, source) {
        (true, Some((_, l)), Some(_)) => {
            let (ms, pl) = period.unwrap_or((1000, l));
            out.set("UDP_FIREFLY_NETLINK", Value::Bool(true), l, "backends.firefly.enrich + enrichers.netlink");
            if ms < 1000 {
                out.warn(pl, "enrichers.period", format_args!("{ms} ms: flowd sends ongoing fireflies at most once a second; 1 s is used"));
            }
            let secs = if ms % 1000 == 0 { Value::Int(ms / 1000) } else { Value::Float(ms as f64 / 1000.0) };
            out.set("UDP_FIREFLY_ONGOING_INTERVAL", secs, pl, "enrichers.period (ms -> s)");
        }
        (true, Some((_, l)), None) => out.warn(l, "backends.firefly.enrich", "no enricher is configured, so there are no periodic fireflies (as in flowd-go)"),
        _ => {
            if let Some((ms, l)) = period {
                out.warn(
                    l,
                    "enrichers.period",
                    format_args!("{ms} ms has no effect without `backends.firefly.enrich: true` (flowd reads tcp_info for metrics when scraped)"),
                );
            }
        }
    }
}

/// The iperf plugin: flowd-go's port ranges and id lists.
fn iperf(ip: &Node, line: usize, out: &mut Converted) {
    const P: &str = "plugins.iperf3";
    let bound = |key: &str, out: &mut Converted| -> Option<(i64, usize)> {
        let (n, l) = child(Some(ip), key)?;
        match int_in(n, 0, 65535) {
            Ok(v) => Some((v, l)),
            Err(m) => {
                out.bad(l, &format!("{P}.{key}"), m);
                None
            }
        }
    };
    // flowd-go matches every TCP connection whose local and remote ports are in range
    // (0 = unbounded), whatever the process: every port counts, the ranges narrow.
    out.set("IPERF_PORTS", Value::List(vec![Value::Str("1-65535".into())]), line, P);
    out.set("NETSTAT_INCLUDE_PRIVATE", Value::Bool(true), line, "plugins.iperf3 (flowd-go reports every destination)");
    for (lo, hi, key) in [("minSourcePort", "maxSourcePort", "IPERF_LOCAL_PORTS"), ("minDestinationPort", "maxDestinationPort", "IPERF_REMOTE_PORTS")] {
        let (a, b) = (bound(lo, out), bound(hi, out));
        let l = a.or(b).map_or(line, |x| x.1);
        let (a, b) = (a.map_or(0, |x| x.0), b.map_or(0, |x| x.0));
        if a == 0 && b == 0 {
            continue;
        }
        let (a, b) = (a.max(1), if b == 0 { 65535 } else { b });
        if a > b {
            out.bad(l, &format!("{P}.{lo}"), format_args!("{a} is above {hi} {b}: no connection would match"));
            continue;
        }
        out.set(key, Value::List(vec![Value::Str(format!("{a}-{b}"))]), l, &format!("{P}.{lo}, {hi}"));
    }
    let list = |key: &str, out: &mut Converted| -> Option<(Vec<i64>, usize)> {
        match child(Some(ip), key) {
            None => Some((vec![0, 1, 2], line)),
            Some((n, l)) => match ints(n) {
                Ok(v) => Some((v, l)),
                Err(m) => {
                    out.bad(l, &format!("{P}.{key}"), m);
                    None
                }
            },
        }
    };
    if let (Some((exps, el)), Some((acts, al))) = (list("experimentIDs", out), list("activityIDs", out)) {
        if exps.len() != acts.len() {
            out.bad(
                el.max(al),
                &format!("{P}.experimentIDs"),
                format_args!("has {} ids and activityIDs {}: they must be the same length (flowd-go refuses to start too)", exps.len(), acts.len()),
            );
        } else if exps.is_empty() {
            out.bad(el, &format!("{P}.experimentIDs"), "is empty (flowd-go refuses to start too)");
        } else {
            let pairs = exps.iter().zip(&acts).map(|(e, a)| Value::List(vec![Value::Int(*e), Value::Int(*a)])).collect();
            out.set("IPERF_FLOW_ID", Value::List(pairs), el.min(al), &format!("{P}.experimentIDs, activityIDs"));
        }
    }
    match child(Some(ip), "randomIDs") {
        Some((n, l)) => match n.as_bool() {
            Some(random) => out.set("IPERF_ROUND_ROBIN", Value::Bool(!random), l, &format!("{P}.randomIDs (negated)")),
            None => out.bad(l, &format!("{P}.randomIDs"), format_args!("expected true or false, found {}", n.describe())),
        },
        // flowd-go hands the ids out in turn by default.
        None => out.set("IPERF_ROUND_ROBIN", Value::Bool(true), line, &format!("{P}.randomIDs (flowd-go's default: false)")),
    }
}

/// NETWORK_INTERFACE from targetInterfaces (flowd-go's default: lo) or discoverInterfaces.
fn interfaces(m: &Node, line: usize, out: &mut Converted) {
    const P: &str = "backends.marker";
    let discover = match child(Some(m), "discoverInterfaces") {
        Some((n, l)) => match n.as_bool() {
            Some(b) => b.then_some(l),
            None => return out.bad(l, &format!("{P}.discoverInterfaces"), format_args!("expected true or false, found {}", n.describe())),
        },
        None => None,
    };
    let target = child(Some(m), "targetInterfaces");
    if let Some(l) = discover {
        // flowd's automatic choice is flowd-go's discovery: interfaces with a global IPv6 address.
        out.set("NETWORK_INTERFACE", Value::Str(String::new()), l, &format!("{P}.discoverInterfaces"));
        if let Some((_, tl)) = target {
            out.warn(tl, &format!("{P}.targetInterfaces"), "ignored because discoverInterfaces is true (as in flowd-go)");
        }
        return;
    }
    let (list, l) = match target {
        Some((n, l)) => match strings(n) {
            Ok(v) => (v, l),
            Err(msg) => return out.bad(l, &format!("{P}.targetInterfaces"), msg),
        },
        None => (vec!["lo".to_string()], line),
    };
    out.set("NETWORK_INTERFACE", Value::List(list.into_iter().map(Value::Str).collect()), l, &format!("{P}.targetInterfaces"));
}

/// Rewrites `line N: KEY: msg` (a key-table problem) as `line N: go.path (KEY): msg`.
fn name_origin(msg: String, mapped: &[Mapped]) -> String {
    for m in mapped {
        let prefix = format!("line {}: {}: ", m.entry.line, m.entry.key);
        if let Some(rest) = msg.strip_prefix(&prefix) {
            return format!("line {}: {} ({}): {rest}", m.entry.line, m.from, m.entry.key);
        }
    }
    msg
}

/// Validates flowd-go's `text` into a flowd [`Config`](super::Config) (`path` for messages).
pub(crate) fn from_text(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let c = convert(text);
    let mut warnings: Vec<(usize, String)> = c.warnings.clone();
    let mut problems = c.problems.clone();
    for m in c.entries.iter().filter(|m| !m.supported) {
        warnings.push((m.entry.line, format!("line {}: {}: {} is not yet supported by this flowd; ignored", m.entry.line, m.from, m.entry.key)));
    }
    let entries: Vec<Entry> = c.entries.iter().filter(|m| m.supported).map(|m| m.entry.clone()).collect();
    let mut key_problems = Vec::new();
    let mut key_warnings = Vec::new();
    let config = validate::build(&entries, &mut key_problems, &mut key_warnings);
    problems.extend(key_problems.into_iter().map(|(l, m)| (l, name_origin(m, &c.entries))));
    warnings.extend(key_warnings.into_iter().map(|m| (0, name_origin(m, &c.entries))));
    super::sort_by_line(&mut warnings);
    super::sort_by_line(&mut problems);
    let warnings = warnings.into_iter().map(|(_, m)| m).collect();
    if problems.is_empty() {
        Ok(Loaded { config, warnings })
    } else {
        Err(ConfigError::Invalid { path: path.to_path_buf(), problems: problems.into_iter().map(|(_, m)| m).collect(), warnings })
    }
}

/// A value in flowd.cfg's (Python) syntax.
fn python(key: &str, v: &Value) -> String {
    match v {
        Value::Int(n) if key.ends_with("_MODE") => format!("0o{n:o}"),
        Value::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Int(n) => n.to_string(),
        Value::Float(f) => format!("{f}"),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::None => "None".to_string(),
        Value::List(items) if items.len() == 1 && !matches!(items[0], Value::List(_)) => format!("({},)", python(key, &items[0])),
        Value::List(items) if items.iter().any(|i| matches!(i, Value::List(_))) => {
            format!("[{}]", items.iter().map(|i| python(key, i)).collect::<Vec<_>>().join(", "))
        }
        Value::List(items) => format!("({})", items.iter().map(|i| python(key, i)).collect::<Vec<_>>().join(", ")),
    }
}

/// `flowd config convert`: the flowd.cfg equivalent to flowd-go's `text` (named `source`
/// in its header): only the settings that differ from flowd's defaults, each with the
/// flowd-go key it comes from; keys this flowd does not support yet are written as
/// comments. `Err` holds the problems (and warnings) when the file is not usable.
pub fn convert_to_cfg(text: &str, source: &str) -> Result<String, ConfigError> {
    let loaded = from_text(text, Path::new(source))?;
    let c = convert(text);
    let default = super::Config::default();
    let mut out = format!(
        "# flowd.cfg converted from the flowd-go configuration {source}\n\
         # by `flowd config convert` (flowd {}). It runs the same components with the same\n\
         # settings; only settings that differ from flowd's defaults are written (every key\n\
         # and its default: man 8 flowd, CONFIGURATION). Check it with `flowd --check -c FILE`.\n",
        env!("CARGO_PKG_VERSION")
    );
    if !loaded.warnings.is_empty() {
        out.push_str("#\n# Notes from the conversion (line numbers are those of the flowd-go file):\n");
        for w in &loaded.warnings {
            out.push_str(&format!("#   {w}\n"));
        }
    }
    out.push('\n');
    for m in &c.entries {
        let line = format!("{}={}", m.entry.key, python(&m.entry.key, &m.entry.value));
        if !m.supported {
            out.push_str(&format!("# {line}  # {} (line {}): not yet supported by this flowd\n", m.from, m.entry.line));
            continue;
        }
        let alone = validate::build(std::slice::from_ref(&m.entry), &mut Vec::new(), &mut Vec::new());
        if alone == default {
            continue;
        }
        out.push_str(&format!("{line}  # {} (line {})\n", m.from, m.entry.line));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "flowdgo_tests.rs"]
mod tests;

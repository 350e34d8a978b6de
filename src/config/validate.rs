//! Stage two of config loading: raw entries → typed [`Config`], with defaults.
//!
//! Owns the list of every key flowd knows (including all keys of the Python flowd),
//! their types and defaults, and checks across keys. Unknown keys are warnings, so an
//! existing `/etc/flowd/flowd.cfg` keeps loading. Pure: no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{Entry, Value};
use crate::netaddr::Cidr;
use crate::registry::IdOrName;

pub use super::model::{BackendKind, Config, PluginKind, ScanConfig};

/// Keys accepted and understood but whose feature this build does not have yet.
/// Reported once at startup as "not yet supported" (never silently ignored).
pub const NOT_YET_SUPPORTED: &[&str] = &[];

/// Keys accepted for compatibility that have no effect in flowd (with the reason).
pub const UNUSED: &[(&str, &str)] = &[("PROMETHEUS_SS_PATH", "flowd reads tcp_info from sock_diag, it never runs ss")];

/// Plugins whose implementation this build lacks (requesting one is a startup error).
pub const PLUGINS_NOT_BUILT: &[PluginKind] = &[];
/// Backends whose implementation this build lacks (requesting one is a startup error).
#[cfg(feature = "ebpf")]
pub const BACKENDS_NOT_BUILT: &[BackendKind] = &[];
/// Backends whose implementation this build lacks (built without feature `ebpf`).
#[cfg(not(feature = "ebpf"))]
pub const BACKENDS_NOT_BUILT: &[BackendKind] = &[BackendKind::Ebpf];

/// Every key flowd knows. Keep in the order of `etc/flowd.cfg`.
pub const KEYS: &[&str] = &[
    "PLUGIN",
    "BACKEND",
    "FLOW_MAP_API",
    "FLOW_MAP_REFRESH",
    "FLOW_MAP_TIMEOUT",
    "NP_API_FILE",
    "NP_API_FILE_MODE",
    "NP_API_FILE_OWNER",
    "NP_API_FILE_GROUP",
    "PID_FILE",
    "FLOW_TABLE_SIZE",
    "UDP_FIREFLY_PORT",
    "UDP_FIREFLY_TO_PEER",
    "UDP_FIREFLY_DST",
    "UDP_FIREFLY_IP4_SRC",
    "UDP_FIREFLY_IP6_SRC",
    "UDP_FIREFLY_NETLINK",
    "UDP_FIREFLY_WITH_NETLINK",
    "UDP_FIREFLY_ONGOING_INTERVAL",
    "UDP_FIREFLY_NETLINK_INTERVAL",
    "IP_DISCOVERY_ENABLED",
    "IP_DISCOVERY_STUN_SERVERS",
    "IP_DISCOVERY_INTERVAL",
    "IP_DISCOVERY_TIMEOUT",
    "IP_DISCOVERY_HTTP_URLS",
    "IP_DISCOVERY_MAP",
    "NETSTAT_EXPERIMENT",
    "NETSTAT_ACTIVITY",
    "NETSTAT_INTERNAL_NETWORKS",
    "NETSTAT_TIMEOUT",
    "NETSTAT_INCLUDE_PRIVATE",
    "NETLINK_EXPERIMENT",
    "NETLINK_ACTIVITY",
    "NETLINK_INTERNAL_NETWORKS",
    "NETLINK_TIMEOUT",
    "NETLINK_INCLUDE_PRIVATE",
    "NETLINK_DUMP_TIMEOUT",
    "IPERF_FLOW_ID",
    "IPERF_PORTS",
    "IPERF_ROUND_ROBIN",
    "FIREFLY_LISTENER_HOST",
    "FIREFLY_LISTENER_PORT",
    "NETWORK_INTERFACE",
    "EBPF_MAP_SIZE",
    "PROMETHEUS_SRV_HOST",
    "PROMETHEUS_SRV_PORT",
    "PROMETHEUS_SS_PATH",
];

struct Ctx<'a> {
    problems: &'a mut Vec<(usize, String)>,
}

impl Ctx<'_> {
    fn bad(&mut self, e: &Entry, msg: impl std::fmt::Display) {
        self.problems.push((e.line, format!("line {}: {}: {}", e.line, e.key, msg)));
    }

    fn string(&mut self, e: &Entry) -> Option<String> {
        match &e.value {
            Value::Str(s) => Some(s.clone()),
            v => {
                self.bad(e, format_args!("expected a quoted string, found {}", v.type_name()));
                None
            }
        }
    }

    /// A string, or `None`/'' meaning "unset".
    fn opt_string(&mut self, e: &Entry) -> Option<Option<String>> {
        match &e.value {
            Value::None => Some(None),
            Value::Str(s) if s.trim().is_empty() => Some(None),
            Value::Str(s) => Some(Some(s.trim().to_string())),
            v => {
                self.bad(e, format_args!("expected a quoted string, found {}", v.type_name()));
                None
            }
        }
    }

    fn boolean(&mut self, e: &Entry) -> Option<bool> {
        match &e.value {
            Value::Bool(b) => Some(*b),
            Value::Int(0) => Some(false),
            Value::Int(1) => Some(true),
            v => {
                self.bad(e, format_args!("expected True or False, found {}", v.type_name()));
                None
            }
        }
    }

    fn int(&mut self, e: &Entry, min: i64, max: i64) -> Option<i64> {
        let n = match &e.value {
            Value::Int(n) => *n,
            Value::Str(s) => match parse_int(s) {
                Some(n) => n,
                None => {
                    self.bad(e, format_args!("{s:?} is not an integer"));
                    return None;
                }
            },
            v => {
                self.bad(e, format_args!("expected an integer, found {}", v.type_name()));
                return None;
            }
        };
        if n < min || n > max {
            self.bad(e, format_args!("{n} is out of range {min}..={max}"));
            return None;
        }
        Some(n)
    }

    fn seconds(&mut self, e: &Entry, min: f64) -> Option<Duration> {
        let s = match &e.value {
            Value::Int(n) => *n as f64,
            Value::Float(f) => *f,
            v => {
                self.bad(e, format_args!("expected a number of seconds, found {}", v.type_name()));
                return None;
            }
        };
        if !(s.is_finite() && s >= min && s <= 86_400.0 * 365.0) {
            self.bad(e, format_args!("{s} seconds is out of range (at least {min})"));
            return None;
        }
        Some(Duration::from_secs_f64(s))
    }

    /// A list of strings; a single string is split on commas.
    fn strings(&mut self, e: &Entry) -> Option<Vec<String>> {
        match &e.value {
            Value::None => Some(Vec::new()),
            Value::Str(s) => Some(s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()),
            Value::List(items) => {
                let mut out = Vec::new();
                for it in items {
                    match it {
                        Value::Str(s) => out.push(s.trim().to_string()),
                        v => {
                            self.bad(e, format_args!("list items must be quoted strings, found {}", v.type_name()));
                            return None;
                        }
                    }
                }
                Some(out)
            }
            v => {
                self.bad(e, format_args!("expected a string or a list of strings, found {}", v.type_name()));
                None
            }
        }
    }

    fn id_or_name(&mut self, e: &Entry, v: &Value) -> Option<IdOrName> {
        match v {
            Value::Int(n) if (0..=i64::from(u32::MAX)).contains(n) => Some(IdOrName::Id(*n as u32)),
            Value::Str(s) if !s.trim().is_empty() && !s.contains('<') => Some(IdOrName::parse(s.trim())),
            v => {
                self.bad(e, format_args!("expected an id (integer) or a registry name, found {}", describe(v)));
                None
            }
        }
    }

    fn networks(&mut self, e: &Entry) -> Option<Vec<Cidr>> {
        let list = self.strings(e)?;
        let mut out = Vec::new();
        for s in list {
            match s.parse::<Cidr>() {
                Ok(c) => out.push(c),
                Err(m) => {
                    self.bad(e, m);
                    return None;
                }
            }
        }
        Some(out)
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        Value::Int(n) => n.to_string(),
        v => v.type_name().to_string(),
    }
}

/// Integers as Python writes them: `660`, `0o660`, `0x1f`, and (for modes) `'0660'`.
fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        i64::from_str_radix(s, 8).ok()
    } else {
        s.parse().ok()
    }
}

/// Builds the Config from entries; problems and warnings are appended.
pub(crate) fn build(entries: &[Entry], problems: &mut Vec<(usize, String)>, warnings: &mut Vec<String>) -> Config {
    let mut c = Config::default();
    let mut cx = Ctx { problems };
    let mut seen: Vec<&str> = Vec::new();
    for e in entries {
        let key = e.key.as_str();
        if seen.contains(&key) {
            warnings.push(format!("line {}: {} is set again; the last value wins", e.line, key));
        }
        seen.push(key);
        if NOT_YET_SUPPORTED.contains(&key) {
            warnings.push(format!("line {}: {} is not yet supported by this flowd and has no effect", e.line, key));
        }
        if let Some((_, why)) = UNUSED.iter().find(|(k, _)| *k == key) {
            warnings.push(format!("line {}: {} is accepted but unused: {}", e.line, key, why));
        }
        apply(&mut c, &mut cx, e, key, warnings);
    }
    cross_checks(&c, entries, &mut cx);
    c
}

fn apply(c: &mut Config, cx: &mut Ctx<'_>, e: &Entry, key: &str, warnings: &mut Vec<String>) {
    match key {
        "PLUGIN" => {
            if let Some(list) = cx.strings(e) {
                let mut out = Vec::new();
                let had_error = list.iter().any(|n| PluginKind::parse(n).is_none());
                if list.iter().any(|n| n == "iperf_rr") {
                    // The Python flowd's round-robin variant of the iperf plugin.
                    c.iperf.round_robin = true;
                }
                for name in list {
                    match PluginKind::parse(&name) {
                        Some(k) if out.contains(&k) => cx.bad(e, format_args!("plugin {name:?} is listed twice")),
                        Some(k) => out.push(k),
                        None => cx.bad(e, format_args!("unknown plugin {name:?} (known: np_api, netlink, netstat, iperf, firefly)")),
                    }
                }
                if out.is_empty() && !had_error {
                    cx.bad(e, "names no plugin");
                }
                c.plugins = out;
            }
        }
        "BACKEND" => {
            if let Some(list) = cx.strings(e) {
                let mut out = Vec::new();
                let had_error = list.iter().any(|n| BackendKind::parse(n).is_none());
                for name in list {
                    match BackendKind::parse(&name) {
                        Some(k) if out.contains(&k) => cx.bad(e, format_args!("backend {name:?} is listed twice")),
                        Some(k) => out.push(k),
                        None => cx.bad(e, format_args!("unknown backend {name:?} (known: udp_firefly, ebpf, prometheus, dummy)")),
                    }
                }
                if out.is_empty() && !had_error {
                    cx.bad(e, "names no backend");
                }
                c.backends = out;
            }
        }
        "FLOW_MAP_API" => {
            if let Some(v) = cx.opt_string(e) {
                c.registry.api = v;
            }
        }
        "FLOW_MAP_REFRESH" => {
            if let Some(d) = cx.seconds(e, 0.0) {
                c.registry.refresh = (!d.is_zero()).then_some(d.max(Duration::from_secs(1)));
            }
        }
        "FLOW_MAP_TIMEOUT" => {
            if let Some(d) = cx.seconds(e, 0.1) {
                c.registry.timeout = d;
            }
        }
        "NP_API_FILE" => {
            if let Some(s) = cx.string(e) {
                if s.trim().is_empty() {
                    cx.bad(e, "must not be empty");
                } else {
                    c.np_api.file = PathBuf::from(s);
                }
            }
        }
        "NP_API_FILE_MODE" => {
            if let Some(n) = cx.int(e, 0, 0o777) {
                c.np_api.mode = n as u32;
            }
        }
        "NP_API_FILE_OWNER" => {
            if let Some(v) = cx.opt_string(e) {
                c.np_api.owner = v;
            }
        }
        "NP_API_FILE_GROUP" => {
            if let Some(v) = cx.opt_string(e) {
                c.np_api.group = v;
            }
        }
        "PID_FILE" => {
            if let Some(v) = cx.opt_string(e) {
                c.daemon.pid_file = v.map(PathBuf::from);
            }
        }
        "FLOW_TABLE_SIZE" => {
            if let Some(n) = cx.int(e, 1, 100_000_000) {
                c.daemon.flow_table_size = n as usize;
            }
        }
        "UDP_FIREFLY_PORT" => {
            if let Some(n) = cx.int(e, 1, 65535) {
                c.udp_firefly.port = n as u16;
            }
        }
        "UDP_FIREFLY_TO_PEER" => {
            if let Some(b) = cx.boolean(e) {
                c.udp_firefly.to_peer = b;
            }
        }
        "UDP_FIREFLY_DST" => {
            if let Some(list) = cx.strings(e) {
                for d in &list {
                    if let Err(m) = crate::netaddr::split_host_port(d, 1) {
                        cx.bad(e, m);
                    }
                }
                c.udp_firefly.dst = list;
            }
        }
        "UDP_FIREFLY_IP4_SRC" => {
            if let Some(v) = cx.opt_string(e) {
                match v.map(|s| s.parse::<Ipv4Addr>()) {
                    None => c.udp_firefly.ip4_src = None,
                    Some(Ok(a)) => c.udp_firefly.ip4_src = Some(a),
                    Some(Err(_)) => cx.bad(e, "is not an IPv4 address"),
                }
            }
        }
        "UDP_FIREFLY_IP6_SRC" => {
            if let Some(v) = cx.opt_string(e) {
                match v.map(|s| s.parse::<Ipv6Addr>()) {
                    None => c.udp_firefly.ip6_src = None,
                    Some(Ok(a)) => c.udp_firefly.ip6_src = Some(a),
                    Some(Err(_)) => cx.bad(e, "is not an IPv6 address"),
                }
            }
        }
        "UDP_FIREFLY_NETLINK" | "UDP_FIREFLY_WITH_NETLINK" => {
            if let Some(b) = cx.boolean(e) {
                c.enrich.netlink = b;
            }
        }
        "UDP_FIREFLY_ONGOING_INTERVAL" => {
            if let Some(d) = cx.seconds(e, 0.0) {
                c.enrich.ongoing_interval = (!d.is_zero()).then_some(d.max(Duration::from_secs(1)));
            }
        }
        "IP_DISCOVERY_ENABLED" => {
            if let Some(b) = cx.boolean(e) {
                c.discovery.enabled = b;
            }
        }
        "IP_DISCOVERY_STUN_SERVERS" => {
            if let Some(l) = cx.strings(e) {
                for d in &l {
                    if let Err(m) = crate::netaddr::split_host_port(d, 3478) {
                        cx.bad(e, m);
                    }
                }
                c.discovery.stun_servers = l;
            }
        }
        "IP_DISCOVERY_INTERVAL" => {
            if let Some(d) = cx.seconds(e, 10.0) {
                c.discovery.interval = d;
            }
        }
        "IP_DISCOVERY_TIMEOUT" => {
            if let Some(d) = cx.seconds(e, 0.01) {
                c.discovery.timeout = d.min(Duration::from_secs(30));
            }
        }
        "IP_DISCOVERY_HTTP_URLS" => {
            if let Some(l) = cx.strings(e) {
                for u in &l {
                    if !(u.starts_with("http://") || u.starts_with("https://")) {
                        cx.bad(e, format_args!("{u:?} is not an http(s) URL"));
                    }
                }
                c.discovery.http_urls = l;
            }
        }
        "IP_DISCOVERY_MAP" => {
            if let Some(l) = cx.strings(e) {
                let mut out = Vec::new();
                for pair in &l {
                    match parse_mapping(pair) {
                        Ok(p) => out.push(p),
                        Err(m) => cx.bad(e, m),
                    }
                }
                c.discovery.map = out;
            }
        }
        "UDP_FIREFLY_NETLINK_INTERVAL" => {
            if let Some(d) = cx.seconds(e, 1.0) {
                c.enrich.netlink_interval = d;
            }
        }
        "NETSTAT_EXPERIMENT" | "NETLINK_EXPERIMENT" => {
            let v = cx.id_or_name(e, &e.value);
            scan_of(c, key).experiment = v;
        }
        "NETSTAT_ACTIVITY" | "NETLINK_ACTIVITY" => {
            let v = cx.id_or_name(e, &e.value);
            scan_of(c, key).activity = v;
        }
        "NETSTAT_INTERNAL_NETWORKS" | "NETLINK_INTERNAL_NETWORKS" => {
            if let Some(n) = cx.networks(e) {
                scan_of(c, key).internal_networks = n;
            }
        }
        "NETSTAT_TIMEOUT" | "NETLINK_TIMEOUT" => {
            if let Some(d) = cx.seconds(e, 0.1) {
                scan_of(c, key).interval = d;
            }
        }
        "NETSTAT_INCLUDE_PRIVATE" | "NETLINK_INCLUDE_PRIVATE" => {
            if let Some(b) = cx.boolean(e) {
                scan_of(c, key).include_private = b;
            }
        }
        "NETLINK_DUMP_TIMEOUT" => {
            if let Some(d) = cx.seconds(e, 0.01) {
                c.netlink.dump_timeout = d;
            }
        }
        "IPERF_FLOW_ID" => {
            let mut out = Vec::new();
            let items = match &e.value {
                Value::List(items) if items.iter().all(|i| matches!(i, Value::List(_))) => items.clone(),
                Value::List(items) => vec![Value::List(items.clone())],
                v => {
                    cx.bad(e, format_args!("expected a list of (experiment, activity) tuples, found {}", v.type_name()));
                    return;
                }
            };
            for it in &items {
                match it {
                    Value::List(pair) if pair.len() == 2 => {
                        if let (Some(x), Some(a)) = (cx.id_or_name(e, &pair[0]), cx.id_or_name(e, &pair[1])) {
                            out.push((x, a));
                        }
                    }
                    _ => cx.bad(e, "each item must be an (experiment, activity) tuple"),
                }
            }
            c.iperf.flow_id = out;
        }
        "IPERF_PORTS" => {
            let items = match &e.value {
                Value::List(items) => items.clone(),
                v => vec![v.clone()],
            };
            let mut out = Vec::new();
            for it in items {
                match it {
                    Value::Int(n) if (1..=65535).contains(&n) => out.push(n as u16),
                    v => cx.bad(e, format_args!("{} is not a port", describe(&v))),
                }
            }
            c.iperf.ports = out;
        }
        "IPERF_ROUND_ROBIN" => {
            if let Some(b) = cx.boolean(e) {
                c.iperf.round_robin = b;
            }
        }
        "FIREFLY_LISTENER_HOST" => {
            if let Some(s) = cx.string(e) {
                match s.trim().trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                    Ok(a) => c.firefly.host = a,
                    Err(_) => cx.bad(e, format_args!("{s:?} is not an IP address")),
                }
            }
        }
        "FIREFLY_LISTENER_PORT" => {
            if let Some(n) = cx.int(e, 1, 65535) {
                c.firefly.port = n as u16;
            }
        }
        "NETWORK_INTERFACE" => {
            if let Some(l) = cx.strings(e) {
                for i in &l {
                    if i.len() >= 16 || i.contains('/') || i.contains(char::is_whitespace) {
                        cx.bad(e, format_args!("{i:?} is not an interface name"));
                    }
                }
                c.marker.interfaces = l;
            }
        }
        "EBPF_MAP_SIZE" => {
            if let Some(n) = cx.int(e, 16, 16_777_216) {
                c.marker.map_size = n as u32;
            }
        }
        "PROMETHEUS_SRV_HOST" => {
            if let Some(s) = cx.string(e) {
                match s.trim().trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                    Ok(a) => c.http.host = a,
                    Err(_) => cx.bad(e, format_args!("{s:?} is not an IP address")),
                }
            }
        }
        "PROMETHEUS_SRV_PORT" => {
            if let Some(n) = cx.int(e, 0, 65535) {
                c.http.port = n as u16;
            }
        }
        "PROMETHEUS_SS_PATH" => {
            let _ = cx.opt_string(e);
        }
        other => warnings.push(format!("line {}: unknown key {} is ignored", e.line, other)),
    }
}

/// One `private=public` pair of IP_DISCOVERY_MAP (both of the same family).
pub fn parse_mapping(s: &str) -> Result<(IpAddr, IpAddr), String> {
    let bad = || format!("{s:?} is not 'private=public' (two IP addresses of the same family)");
    let (a, b) = s.split_once('=').ok_or_else(bad)?;
    let strip = |x: &str| x.trim().trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
    match (strip(a), strip(b)) {
        (Ok(a), Ok(b)) if a.is_ipv4() == b.is_ipv4() => Ok((a, b)),
        _ => Err(bad()),
    }
}

fn scan_of<'c>(c: &'c mut Config, key: &str) -> &'c mut ScanConfig {
    if key.starts_with("NETLINK") {
        &mut c.netlink.scan
    } else {
        &mut c.netstat
    }
}

fn cross_checks(c: &Config, entries: &[Entry], cx: &mut Ctx<'_>) {
    let line_of = |k: &str| entries.iter().rev().find(|e| e.key == k).map(|e| e.line).unwrap_or(0);
    let mut need = |plugin: PluginKind, keys: [&str; 2], scan: &ScanConfig| {
        if c.plugins.contains(&plugin) {
            let line = line_of("PLUGIN");
            if scan.experiment.is_none() {
                cx.problems.push((line, format!("line {line}: PLUGIN: the {} plugin needs {}", plugin.name(), keys[0])));
            }
            if scan.activity.is_none() {
                cx.problems.push((line, format!("line {line}: PLUGIN: the {} plugin needs {}", plugin.name(), keys[1])));
            }
        }
    };
    need(PluginKind::Netstat, ["NETSTAT_EXPERIMENT", "NETSTAT_ACTIVITY"], &c.netstat);
    need(PluginKind::Netlink, ["NETLINK_EXPERIMENT", "NETLINK_ACTIVITY"], &c.netlink.scan);
    if c.plugins.contains(&PluginKind::Iperf) && c.iperf.flow_id.is_empty() {
        let line = line_of("PLUGIN");
        cx.problems.push((line, format!("line {line}: PLUGIN: the iperf plugin needs IPERF_FLOW_ID")));
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;

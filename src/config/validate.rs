//! Stage two of config loading: raw entries → typed [`Config`], with defaults.
//!
//! Owns the conversion of raw values (strings, integers, seconds, lists, ids) as the
//! key table (`keys.rs`) asks for them, warnings about unknown, repeated and unused
//! keys, and checks across keys. Unknown keys are warnings, so an existing
//! `/etc/flowd/flowd.cfg` keeps loading. Pure: no I/O.

use std::net::IpAddr;
use std::time::Duration;

use super::keys::{self, Parse};
use super::raw::{Entry, Value};
use crate::registry::IdOrName;

pub use super::model::{BackendKind, Config, ExcludeMatch, Marking, PluginKind, PolicyConfig, ScanConfig};

/// Plugins whose implementation this build lacks (requesting one is a startup error).
pub const PLUGINS_NOT_BUILT: &[PluginKind] = &[];
/// Backends whose implementation this build lacks (requesting one is a startup error).
#[cfg(feature = "ebpf")]
pub const BACKENDS_NOT_BUILT: &[BackendKind] = &[];
/// Backends whose implementation this build lacks (built without feature `ebpf`).
#[cfg(not(feature = "ebpf"))]
pub const BACKENDS_NOT_BUILT: &[BackendKind] = &[BackendKind::Ebpf];

/// Collects the problems found while keys are applied (see `keys::Parse`).
pub struct Ctx<'a> {
    problems: &'a mut Vec<(usize, String)>,
}

impl Ctx<'_> {
    /// Checks `e`'s value as `parse` says and stores it into `c`, or reports a problem.
    fn apply(&mut self, parse: &Parse, c: &mut Config, e: &Entry) {
        match *parse {
            Parse::Bool(set) => {
                if let Some(b) = self.boolean(e) {
                    set(c, b);
                }
            }
            Parse::Int { min, max, set } => {
                if let Some(n) = self.int(e, min, max) {
                    set(c, n);
                }
            }
            Parse::Seconds { min, set } => {
                if let Some(d) = self.seconds(e, min) {
                    set(c, d);
                }
            }
            Parse::Str { set, .. } => {
                if let Some(Err(m)) = self.string(e).map(|s| set(c, s)) {
                    self.bad(e, m);
                }
            }
            Parse::OptStr { set, .. } => {
                if let Some(Err(m)) = self.opt_string(e).map(|v| set(c, v)) {
                    self.bad(e, m);
                }
            }
            Parse::List { set, .. } => {
                for m in self.strings(e).map(|l| set(c, l)).unwrap_or_default() {
                    self.bad(e, m);
                }
            }
            Parse::IdOrName(set) => {
                let v = self.id_or_name(e, &e.value);
                set(c, v);
            }
            Parse::Custom { apply, .. } => apply(c, self, e),
        }
    }

    pub(crate) fn bad(&mut self, e: &Entry, msg: impl std::fmt::Display) {
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
    pub(crate) fn strings(&mut self, e: &Entry) -> Option<Vec<String>> {
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

    pub(crate) fn id_or_name(&mut self, e: &Entry, v: &Value) -> Option<IdOrName> {
        match v {
            Value::Int(n) if (0..=i64::from(u32::MAX)).contains(n) => Some(IdOrName::Id(*n as u32)),
            Value::Str(s) if !s.trim().is_empty() && !s.contains('<') => Some(IdOrName::parse(s.trim())),
            v => {
                self.bad(e, format_args!("expected an id (integer) or a registry name, found {}", describe(v)));
                None
            }
        }
    }
}

pub(crate) fn describe(v: &Value) -> String {
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
        let name = e.key.as_str();
        if seen.contains(&name) {
            warnings.push(format!("line {}: {} is set again; the last value wins", e.line, name));
        }
        seen.push(name);
        match keys::find(name) {
            Some(key) => {
                if let Some(why) = key.unused {
                    warnings.push(format!("line {}: {} is accepted but unused: {}", e.line, name, why));
                }
                cx.apply(&key.parse, &mut c, e);
            }
            None => warnings.push(format!("line {}: unknown key {} is ignored", e.line, name)),
        }
    }
    cross_checks(&c, entries, &mut cx);
    if let Some(w) = loopback_only_notice(&c, entries) {
        warnings.push(w);
    }
    c
}

/// The Python flowd had no PROMETHEUS_SRV_HOST and served its metrics on every address;
/// flowd serves loopback unless told otherwise. A file that sets the port but not the
/// host (a Python flowd config) gets one plain warning naming the key that opens it up.
fn loopback_only_notice(c: &Config, entries: &[Entry]) -> Option<String> {
    let port = entries.iter().rev().find(|e| e.key == "PROMETHEUS_SRV_PORT")?;
    if c.http.port == 0 || entries.iter().any(|e| e.key == "PROMETHEUS_SRV_HOST") {
        return None;
    }
    Some(format!(
        "line {}: PROMETHEUS_SRV_PORT is set without PROMETHEUS_SRV_HOST: metrics are served on {}:{} only (loopback), \
         not on every address as the Python flowd did; set PROMETHEUS_SRV_HOST='0.0.0.0' (or '::') to let a Prometheus server \
         on another host scrape them",
        port.line, c.http.host, c.http.port
    ))
}

/// One `private=public` pair of IP_DISCOVERY_MAP (both of the same family).
pub(crate) fn parse_mapping(s: &str) -> Result<(IpAddr, IpAddr), String> {
    let bad = || format!("{s:?} is not 'private=public' (two IP addresses of the same family)");
    let (a, b) = s.split_once('=').ok_or_else(bad)?;
    let strip = |x: &str| x.trim().trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
    match (strip(a), strip(b)) {
        (Ok(a), Ok(b)) if a.is_ipv4() == b.is_ipv4() => Ok((a, b)),
        _ => Err(bad()),
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
    if c.plugins.contains(&PluginKind::Perfsonar) {
        perfsonar_checks(c, &line_of, cx);
    }
}

/// The perfsonar plugin marks through the eBPF marker: it needs that backend, both ids,
/// and numeric ids that fit the marking (names are resolved at run time).
fn perfsonar_checks(c: &Config, line_of: &dyn Fn(&str) -> usize, cx: &mut Ctx<'_>) {
    let line = line_of("PLUGIN");
    if !c.backends.contains(&BackendKind::Ebpf) {
        cx.problems.push((line, format!("line {line}: PLUGIN: the perfsonar plugin needs BACKEND to include ebpf (it marks packets through the eBPF marker)")));
    }
    let (max_exp, max_act) = c.marker.marking.max_ids();
    let marking = c.marker.marking.name();
    for (key, value, max) in [("PERFSONAR_EXPERIMENT", &c.marker.perfsonar_experiment, max_exp), ("PERFSONAR_ACTIVITY", &c.marker.perfsonar_activity, max_act)]
    {
        match value {
            None => cx.problems.push((line, format!("line {line}: PLUGIN: the perfsonar plugin needs {key}"))),
            Some(IdOrName::Id(n)) if *n > max => {
                let l = line_of(key);
                cx.problems.push((l, format!("line {l}: {key}: {n} does not fit EBPF_MARKING='{marking}' (at most {max})")));
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;

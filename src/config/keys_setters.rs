//! The key table's hand-written setters: the `set`/`apply` functions of keys whose value
//! needs more than its type checked (plugin and backend names, host:port lists, networks,
//! port ranges, addresses). Each stores into [`Config`] and says what is wrong, if anything.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::config::model::{Config, PortRange, ScanConfig};
use crate::config::raw::Entry;
use crate::config::validate::{self, Ctx};
use crate::netaddr::{split_host_port, Cidr};

pub(super) fn plugins(c: &mut Config, cx: &mut Ctx<'_>, e: &Entry) {
    use crate::config::model::PluginKind;
    if no_items(e) {
        c.plugins = Vec::new();
        return;
    }
    let Some(list) = cx.strings(e) else { return };
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
            None => cx.bad(e, format_args!("unknown plugin {name:?} (known: np_api, netlink, netstat, iperf, firefly, perfsonar, api)")),
        }
    }
    if out.is_empty() && !had_error {
        cx.bad(e, "names no plugin");
    }
    c.plugins = out;
}

pub(super) fn backends(c: &mut Config, cx: &mut Ctx<'_>, e: &Entry) {
    use crate::config::model::BackendKind;
    if no_items(e) {
        c.backends = Vec::new();
        return;
    }
    let Some(list) = cx.strings(e) else { return };
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

/// `()` or `None`: deliberately nothing (a string naming nothing, `''`, is still a mistake).
fn no_items(e: &Entry) -> bool {
    use crate::config::raw::Value;
    matches!(&e.value, Value::None) || matches!(&e.value, Value::List(v) if v.is_empty())
}

pub(super) fn np_api_file(c: &mut Config, s: String) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    c.np_api.file = PathBuf::from(s);
    Ok(())
}

/// Each item is `host[:port]`; the problems are the items that are not.
fn host_ports(list: &[String], default_port: u16) -> Vec<String> {
    list.iter().filter_map(|d| split_host_port(d, default_port).err()).collect()
}

pub(super) fn udp_firefly_dst(c: &mut Config, list: Vec<String>) -> Vec<String> {
    let bad = host_ports(&list, 1);
    c.udp_firefly.dst = list;
    bad
}

pub(super) fn firefly_forward(c: &mut Config, list: Vec<String>) -> Vec<String> {
    let bad = host_ports(&list, 10514);
    c.firefly.forward = list;
    bad
}

/// CIDR networks; the first bad one is the problem (and nothing is stored).
pub(super) fn firefly_allow(c: &mut Config, list: Vec<String>) -> Vec<String> {
    match list.iter().map(|s| s.parse::<Cidr>()).collect::<Result<Vec<_>, _>>() {
        Ok(n) => {
            c.firefly.allow = n;
            Vec::new()
        }
        Err(m) => vec![m],
    }
}

pub(super) fn stun_servers(c: &mut Config, list: Vec<String>) -> Vec<String> {
    let bad = host_ports(&list, 3478);
    c.discovery.stun_servers = list;
    bad
}

pub(super) fn ip4_src(c: &mut Config, v: Option<String>) -> Result<(), String> {
    c.udp_firefly.ip4_src = v.map(|s| s.parse::<Ipv4Addr>()).transpose().map_err(|_| "is not an IPv4 address".to_string())?;
    Ok(())
}

pub(super) fn ip6_src(c: &mut Config, v: Option<String>) -> Result<(), String> {
    c.udp_firefly.ip6_src = v.map(|s| s.parse::<Ipv6Addr>()).transpose().map_err(|_| "is not an IPv6 address".to_string())?;
    Ok(())
}

pub(super) fn http_urls(c: &mut Config, list: Vec<String>) -> Vec<String> {
    let bad = list.iter().filter(|u| !(u.starts_with("http://") || u.starts_with("https://"))).map(|u| format!("{u:?} is not an http(s) URL")).collect();
    c.discovery.http_urls = list;
    bad
}

pub(super) fn discovery_map(c: &mut Config, list: Vec<String>) -> Vec<String> {
    let (ok, bad): (Vec<_>, Vec<_>) = list.iter().map(|p| validate::parse_mapping(p)).partition(Result::is_ok);
    c.discovery.map = ok.into_iter().flatten().collect();
    bad.into_iter().filter_map(Result::err).collect()
}

/// CIDR networks; the first bad one is the problem (and nothing is stored).
pub(super) fn networks(list: Vec<String>, scan: &mut ScanConfig) -> Vec<String> {
    match list.iter().map(|s| s.parse::<Cidr>()).collect::<Result<Vec<_>, _>>() {
        Ok(n) => {
            scan.internal_networks = n;
            Vec::new()
        }
        Err(m) => vec![m],
    }
}

pub(super) fn exclude_networks(c: &mut Config, list: Vec<String>) -> Vec<String> {
    match list.iter().map(|s| s.parse::<Cidr>()).collect::<Result<Vec<_>, _>>() {
        Ok(n) => {
            c.policy.networks = n;
            Vec::new()
        }
        Err(m) => vec![m],
    }
}

pub(super) fn exclude_domains(c: &mut Config, list: Vec<String>) -> Vec<String> {
    let bad = list
        .iter()
        .filter(|d| {
            let n = d.trim().trim_matches('.');
            n.is_empty() || n.len() > 253 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        })
        .map(|d| format!("{d:?} is not a DNS domain"))
        .collect();
    c.policy.domains = list;
    bad
}

pub(super) fn iperf_flow_id(c: &mut Config, cx: &mut Ctx<'_>, e: &Entry) {
    use crate::config::raw::Value;
    let items = match &e.value {
        Value::List(items) if items.iter().all(|i| matches!(i, Value::List(_))) => items.clone(),
        Value::List(items) => vec![Value::List(items.clone())],
        v => return cx.bad(e, format_args!("expected a list of (experiment, activity) tuples, found {}", v.type_name())),
    };
    let mut out = Vec::new();
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

/// Ports (`5201`) and inclusive ranges (`'5200-5210'`), alone or in a list; `()` is none.
pub(super) fn port_ranges(cx: &mut Ctx<'_>, e: &Entry, to: &mut Vec<PortRange>) {
    use crate::config::raw::Value;
    let items = match &e.value {
        Value::List(items) => items.clone(),
        Value::None => Vec::new(),
        v => vec![v.clone()],
    };
    let mut out = Vec::new();
    for it in items {
        match parse_port_range(&it) {
            Some(r) => out.push(r),
            None => cx.bad(e, format_args!("{} is not a port or a 'lo-hi' port range", validate::describe(&it))),
        }
    }
    *to = out;
}

/// One port or `lo-hi` range (1..=65535, lo ≤ hi).
pub(crate) fn parse_port_range(v: &crate::config::raw::Value) -> Option<PortRange> {
    use crate::config::raw::Value;
    let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let (lo, hi) = match v {
        Value::Int(n) => (u16::try_from(*n).ok().filter(|p| *p > 0)?, u16::try_from(*n).ok()?),
        Value::Str(s) => match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        },
        _ => return None,
    };
    (lo <= hi).then_some(PortRange { lo, hi })
}

/// An IP address, also in brackets (`'[::]'`).
pub(super) fn ip_addr(s: String, to: &mut IpAddr) -> Result<(), String> {
    *to = s.trim().trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().map_err(|_| format!("{s:?} is not an IP address"))?;
    Ok(())
}

pub(super) fn marking(c: &mut Config, s: String) -> Result<(), String> {
    use crate::config::model::Marking;
    let known = Marking::ALL.map(Marking::name).join(", ");
    c.marker.marking = Marking::parse(&s).ok_or_else(|| format!("unknown marking {s:?} (known: {known})"))?;
    Ok(())
}

pub(super) fn interfaces(c: &mut Config, list: Vec<String>) -> Vec<String> {
    let bad = list
        .iter()
        .filter(|i| i.len() >= 16 || i.contains('/') || i.contains(char::is_whitespace))
        .map(|i| format!("{i:?} is not an interface name"))
        .collect();
    c.marker.interfaces = list;
    bad
}

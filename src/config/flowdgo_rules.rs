//! flowd-go's keys as data: [`RULES`] (every flowd-go 2.4 key and what it becomes in
//! flowd), the keys seen in the field that flowd-go ignores, flowd-go's own defaults, and
//! the value conversions the rules name. `flowdgo.rs` walks a file with them.

use crate::config::raw::Value;
use crate::config::yaml::{Kind, Node};

/// Turns a YAML value into a flowd config value, or says what is wrong with it.
type Conv = fn(&Node) -> Result<Value, String>;

/// What one flowd-go key becomes. The texts of `Derived` and `Same` are read only by the
/// test that checks the migration guide's table against these rules.
#[derive(Clone, Copy)]
#[allow(dead_code, reason = "the Derived/Same texts document each rule in the source; nothing prints them")]
pub(crate) enum To {
    /// The flowd key, set from the value by the conversion.
    Key(&'static str, Conv),
    /// Part of a setting made from several keys (the text names the flowd keys).
    Derived(&'static str),
    /// flowd behaves so already; nothing to set (why).
    Same(&'static str),
    /// Has no equivalent in flowd: a warning (why).
    Unsupported(&'static str),
    /// A warning when the value is one flowd cannot honour (the test, why); else as `Same`.
    WarnIf(fn(&Node) -> bool, &'static str),
    /// A plugin section: present (a mapping, `{}` for defaults) = flowd runs this plugin.
    Plugin(&'static str),
    /// A backend section, likewise.
    Backend(&'static str),
    /// A section grouping other keys.
    Section,
}

/// One flowd-go key and its flowd counterpart.
#[derive(Clone, Copy)]
pub(crate) struct Rule {
    /// The key's path in flowd-go's file, dot-separated.
    pub path: &'static str,
    /// What it becomes.
    pub to: To,
    /// flowd-go's default (YAML text), applied when the key's section is present and the
    /// key is not, because it differs from flowd's own default.
    pub go_default: Option<&'static str>,
}

const fn r(path: &'static str, to: To) -> Rule {
    Rule { path, to, go_default: None }
}

const fn d(path: &'static str, to: To, go_default: &'static str) -> Rule {
    Rule { path, to, go_default: Some(go_default) }
}

/// Every flowd-go 2.4 key (its `yaml:` struct tags) and what flowd makes of it.
pub(crate) static RULES: &[Rule] = &[
    d("pidPath", To::Key("PID_FILE", string), "/var/run/flowd-go.pid"),
    r("workDir", To::Same("flowd keeps no cache files (its registry copy goes to systemd's StateDirectory)")),
    r("plugins", To::Section),
    r("plugins.namedPipe", To::Plugin("np_api")),
    r("plugins.namedPipe.maxReaders", To::Same("flowd reads the pipe in its event loop: there is no notification queue to size")),
    r("plugins.namedPipe.buffSize", To::Same("flowd reassembles lines of any length across reads")),
    d("plugins.namedPipe.pipePath", To::Key("NP_API_FILE", string), "/var/run/flowd-go/np"),
    r("plugins.api", To::Plugin("api")),
    r("plugins.api.bindAddress", To::Key("API_HOST", string)),
    r("plugins.api.bindPort", To::Key("API_PORT", port)),
    r("plugins.firefly", To::Plugin("firefly")),
    d("plugins.firefly.bindAddress", To::Key("FIREFLY_LISTENER_HOST", string), "127.0.0.1"),
    r("plugins.firefly.bindPort", To::Key("FIREFLY_LISTENER_PORT", port)),
    r("plugins.firefly.bufferSize", To::Same("flowd reads datagrams of any size up to 64 KiB")),
    r("plugins.firefly.deadline", To::Same("flowd's socket never blocks: no deadline is needed")),
    r("plugins.firefly.hasSyslogHeader", To::Same("flowd accepts fireflies with and without the syslog header")),
    r("plugins.perfsonar", To::Plugin("perfsonar")),
    d("plugins.perfsonar.experimentId", To::Key("PERFSONAR_EXPERIMENT", id), "0"),
    d("plugins.perfsonar.activityId", To::Key("PERFSONAR_ACTIVITY", id), "0"),
    r("plugins.iperf3", To::Plugin("iperf")),
    r("plugins.iperf3.minSourcePort", To::Derived("IPERF_LOCAL_PORTS")),
    r("plugins.iperf3.maxSourcePort", To::Derived("IPERF_LOCAL_PORTS")),
    r("plugins.iperf3.minDestinationPort", To::Derived("IPERF_REMOTE_PORTS")),
    r("plugins.iperf3.maxDestinationPort", To::Derived("IPERF_REMOTE_PORTS")),
    r("plugins.iperf3.cgroupPath", To::Unsupported("flowd finds connections by polling every NETSTAT_TIMEOUT, without an eBPF sock_ops program")),
    r("plugins.iperf3.programPath", To::Unsupported("flowd loads no eBPF program for the iperf plugin")),
    r("plugins.iperf3.debugMode", To::WarnIf(is_true, "flowd loads no eBPF program for the iperf plugin")),
    r("plugins.iperf3.randomIDs", To::Derived("IPERF_ROUND_ROBIN")),
    r("plugins.iperf3.activityIDs", To::Derived("IPERF_FLOW_ID")),
    r("plugins.iperf3.experimentIDs", To::Derived("IPERF_FLOW_ID")),
    r("backends", To::Section),
    r("backends.firefly", To::Backend("udp_firefly")),
    r("backends.firefly.destinationPort", To::Key("UDP_FIREFLY_PORT", port)),
    r("backends.firefly.prependSyslog", To::Key("UDP_FIREFLY_SYSLOG", boolean)),
    r("backends.firefly.sendToCollector", To::Derived("UDP_FIREFLY_DST")),
    r("backends.firefly.collectorAddress", To::Derived("UDP_FIREFLY_DST")),
    r("backends.firefly.collectorPort", To::Derived("UDP_FIREFLY_DST")),
    r("backends.firefly.enrich", To::Derived("UDP_FIREFLY_NETLINK, UDP_FIREFLY_ONGOING_INTERVAL")),
    r(
        "backends.firefly.enrichmentMode",
        To::WarnIf(
            |n| n.text() != Some("compatible"),
            "flowd's periodic fireflies always carry the Python flowd's `netlink` object (flowd-go's \"compatible\" mode)",
        ),
    ),
    r("backends.firefly.stun", To::Derived("IP_DISCOVERY_ENABLED, IP_DISCOVERY_STUN_SERVERS, IP_DISCOVERY_HTTP_URLS")),
    r("backends.firefly.stun.manualMapping", To::Derived("IP_DISCOVERY_MAP")),
    r("backends.firefly.stun.stunServers", To::Derived("IP_DISCOVERY_STUN_SERVERS")),
    r("backends.marker", To::Backend("ebpf")),
    r("backends.marker.targetInterfaces", To::Derived("NETWORK_INTERFACE")),
    r("backends.marker.discoverInterfaces", To::Derived("NETWORK_INTERFACE")),
    r(
        "backends.marker.removeQdisc",
        To::WarnIf(is_false, "flowd always removes its own filter on exit and leaves the clsact qdisc in place (with TCX there is no qdisc)"),
    ),
    r("backends.marker.programPath", To::Unsupported("flowd embeds its marker program; another object cannot be loaded")),
    r("backends.marker.markingStrategy", To::Key("EBPF_MARKING", lower)),
    r("backends.marker.debugMode", To::WarnIf(is_true, "flowd's marker has no debug build; see flowd_marker_* metrics instead")),
    r(
        "backends.marker.matchAll",
        To::WarnIf(is_true, "flowd marks announced flows only; marking all traffic is what the perfsonar plugin does (flowd-go forces matchAll with it too)"),
    ),
    r("backends.prometheus", To::Backend("prometheus")),
    r("backends.prometheus.log", To::Same("flowd logs as the rest of the daemon (-d for debug)")),
    d("backends.prometheus.bindAddress", To::Key("PROMETHEUS_SRV_HOST", string), "127.0.0.1"),
    d("backends.prometheus.netlinkPort", To::Key("PROMETHEUS_SRV_PORT", port0), "8080"),
    r("backends.prometheus.skopsPort", To::Unsupported("there is no skops enricher: every series is on netlinkPort (PROMETHEUS_SRV_PORT)")),
    r("enrichers", To::Section),
    r("enrichers.period", To::Derived("UDP_FIREFLY_ONGOING_INTERVAL")),
    r("enrichers.netlink", To::Derived("UDP_FIREFLY_NETLINK (with backends.firefly.enrich)")),
    r("enrichers.netlink.protocol", To::Same("flowd asks sock_diag for TCP sockets, the flows it marks")),
    r("enrichers.netlink.ext", To::Same("flowd asks sock_diag for what it reports (tcp_info)")),
    r("enrichers.netlink.state", To::Same("flowd asks sock_diag for established sockets")),
    r(
        "enrichers.skops",
        To::Unsupported("the eBPF sock_ops enricher is not implemented: flowd reads the same tcp_info with sock_diag (as enrichers.netlink does)"),
    ),
];

/// Keys seen in the field that flowd-go 2.4 ignores, and what to write instead.
pub(super) const STALE: &[(&str, &str)] = &[
    (
        "backends.marker.forceHookRemoval",
        "not a key of flowd-go 2.4, which ignores it; flowd replaces a stale filter of its own at start and removes it on exit: drop the key (removeQdisc is flowd-go 2.4's key for the qdisc)",
    ),
    ("plugins.fireflyp", "flowd-go's key is `plugins.firefly` (fireflyp is its Go package name); flowd-go ignores `fireflyp`, so no firefly listener runs: rename it to run one"),
    ("plugins.np", "flowd-go's key is `plugins.namedPipe`; flowd-go ignores `np`, so no named pipe is read: rename it to read one"),
    ("stunServers", "flowd-go reads STUN servers from `backends.firefly.stun.stunServers` only; ignored here"),
];

/// Derived keys that are mappings of further keys (checked like sections).
pub(super) const WALKED: [&str; 2] = ["backends.firefly.stun", "enrichers.netlink"];

/// flowd-go's STUN servers (`internal/stun` defaults).
pub(super) const GO_STUN_SERVERS: [&str; 5] =
    ["stun.l.google.com:3478", "stun1.l.google.com:3478", "stun2.l.google.com:3478", "stun3.l.google.com:3478", "stun4.l.google.com:3478"];
/// flowd-go's HTTP address services (ipify, ipconfig.io), as the plain-text URLs flowd reads.
pub(super) const GO_HTTP_URLS: [&str; 2] = ["https://api64.ipify.org", "https://ipconfig.io/ip"];

fn is_true(n: &Node) -> bool {
    n.as_bool() == Some(true)
}

fn is_false(n: &Node) -> bool {
    n.as_bool() == Some(false)
}

fn string(n: &Node) -> Result<Value, String> {
    match &n.kind {
        Kind::Scalar { text, .. } => Ok(Value::Str(text.clone())),
        _ => Err(format!("expected a string, found {}", n.describe())),
    }
}

fn lower(n: &Node) -> Result<Value, String> {
    string(n).map(|v| match v {
        Value::Str(s) => Value::Str(s.to_ascii_lowercase()),
        v => v,
    })
}

fn boolean(n: &Node) -> Result<Value, String> {
    n.as_bool().map(Value::Bool).ok_or_else(|| format!("expected true or false, found {}", n.describe()))
}

pub(super) fn int_in(n: &Node, min: i64, max: i64) -> Result<i64, String> {
    match n.as_int() {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(v) => Err(format!("{v} is out of range {min}..={max}")),
        None => Err(format!("expected an integer, found {}", n.describe())),
    }
}

pub(super) fn port(n: &Node) -> Result<Value, String> {
    int_in(n, 1, 65535).map(Value::Int)
}

fn port0(n: &Node) -> Result<Value, String> {
    int_in(n, 0, 65535).map(Value::Int)
}

fn id(n: &Node) -> Result<Value, String> {
    int_in(n, 0, i64::from(u32::MAX)).map(Value::Int)
}

pub(super) fn strings(n: &Node) -> Result<Vec<String>, String> {
    match &n.kind {
        Kind::Seq(items) => {
            items.iter().map(|i| i.text().map(str::to_string).ok_or_else(|| format!("expected a list of strings, found {}", i.describe()))).collect()
        }
        Kind::Scalar { text, .. } => Ok(vec![text.clone()]),
        Kind::Map(_) => Err("expected a list of strings, found a mapping".into()),
    }
}

pub(super) fn ints(n: &Node) -> Result<Vec<i64>, String> {
    match &n.kind {
        Kind::Seq(items) => items.iter().map(|i| int_in(i, 0, i64::from(u32::MAX))).collect(),
        _ => Err(format!("expected a list of integers, found {}", n.describe())),
    }
}

//! The key table: every config key flowd knows, each declared once.
//!
//! A [`Key`] names the key (and its aliases), the component it configures, its default,
//! its documentation, and how its value is checked and stored into [`Config`] (its
//! [`Parse`]). Everything else is derived from [`TABLE`]: validation (`validate.rs`
//! looks keys up here), the list of known keys ([`names`]), and the generated files
//! (`render.rs`: `etc/flowd.cfg`, the CONFIGURATION section of `etc/flowd.8` and
//! `docs/configuration.md`, which tests compare with the table).
//!
//! To add a key: add its field to the component's struct in `model.rs` (with the default
//! in that struct's `Default`), add one entry here (in its component's run of entries),
//! then `make gen-config`. A setter that needs more than a line goes in `keys_setters.rs`.
//!
//! Doc texts use one markup: `backticks` around literals (bold in the man page, code in
//! Markdown, plain in flowd.cfg).

use std::path::PathBuf;
use std::time::Duration;

use super::model::Config;
use super::raw::Entry;
use super::validate::Ctx;
use crate::registry::IdOrName;

#[path = "keys_setters.rs"]
mod setters;
use setters::{
    backends, discovery_map, exclude_domains, exclude_networks, firefly_allow, firefly_forward, http_urls, interfaces, ip4_src, ip6_src, ip_addr,
    iperf_flow_id, marking, networks, np_api_file, plugins, port_ranges, stun_servers, udp_firefly_dst,
};

/// The part of flowd a key configures: one struct (field) of [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    /// `plugins`, `backends`: what flowd runs.
    Flowd,
    /// `registry`: the flow registry.
    Registry,
    /// `np_api`: the named-pipe plugin.
    NpApi,
    /// `daemon`: PID file and flow table.
    Daemon,
    /// `udp_firefly`: the udp_firefly backend.
    UdpFirefly,
    /// `enrich`: tcp_info and ongoing fireflies.
    Enrich,
    /// `discovery`: public-address discovery.
    Discovery,
    /// `netstat`: the netstat plugin.
    Netstat,
    /// `netlink`: the netlink plugin.
    Netlink,
    /// `iperf`: the iperf plugin.
    Iperf,
    /// `firefly`: the firefly listener plugin.
    Firefly,
    /// `api`: the HTTP API plugin.
    Api,
    /// `marker`: the ebpf backend.
    Marker,
    /// `http`: the metrics listener.
    Http,
    /// `policy`: the site policy (exclusions).
    Policy,
}

impl Component {
    /// Every component, in the order of the generated files.
    pub(crate) const ALL: [Component; 15] = [
        Component::Flowd,
        Component::Registry,
        Component::NpApi,
        Component::Daemon,
        Component::UdpFirefly,
        Component::Enrich,
        Component::Discovery,
        Component::Netstat,
        Component::Netlink,
        Component::Iperf,
        Component::Firefly,
        Component::Api,
        Component::Marker,
        Component::Http,
        Component::Policy,
    ];

    /// A short name (the component column of `docs/configuration.md`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Component::Flowd => "flowd",
            Component::Registry => "registry",
            Component::NpApi => "np_api plugin",
            Component::Daemon => "daemon",
            Component::UdpFirefly => "udp_firefly backend",
            Component::Enrich => "enrichment",
            Component::Discovery => "discovery",
            Component::Netstat => "netstat plugin",
            Component::Netlink => "netlink plugin",
            Component::Iperf => "iperf plugin",
            Component::Firefly => "firefly plugin",
            Component::Api => "api plugin",
            Component::Marker => "ebpf backend",
            Component::Http => "metrics listener",
            Component::Policy => "site policy",
        }
    }

    /// The section title in flowd.cfg and the man page.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Component::Flowd => "What flowd does",
            Component::Registry => "Flow registry (experiment/activity names <-> ids)",
            Component::NpApi => "np_api plugin (named pipe)",
            Component::Daemon => "Daemon",
            Component::UdpFirefly => "udp_firefly backend",
            Component::Enrich => "tcp_info and ongoing fireflies (udp_firefly backend)",
            Component::Discovery => "Public IP discovery (STUN)",
            Component::Netstat => "netstat plugin (scans /proc/net/tcp{,6})",
            Component::Netlink => "netlink plugin (scans sockets with NETLINK_SOCK_DIAG)",
            Component::Iperf => "iperf plugin",
            Component::Firefly => "firefly plugin (receives fireflies from XRootD, dCache, other flowds)",
            Component::Api => "api plugin (HTTP API in flowd-go's JSON dialect)",
            Component::Marker => "ebpf backend (IPv6 flow label)",
            Component::Http => "Metrics listener and prometheus backend",
            Component::Policy => "Site policy: flows flowd leaves alone (every plugin)",
        }
    }

    /// True when `a` and `b` configure this component alike (its `Config` struct is equal).
    pub(crate) fn same(self, a: &Config, b: &Config) -> bool {
        match self {
            Component::Flowd => (&a.plugins, &a.backends) == (&b.plugins, &b.backends),
            Component::Registry => a.registry == b.registry,
            Component::NpApi => a.np_api == b.np_api,
            Component::Daemon => a.daemon == b.daemon,
            Component::UdpFirefly => a.udp_firefly == b.udp_firefly,
            Component::Enrich => a.enrich == b.enrich,
            Component::Discovery => a.discovery == b.discovery,
            Component::Netstat => a.netstat == b.netstat,
            Component::Netlink => a.netlink == b.netlink,
            Component::Iperf => a.iperf == b.iperf,
            Component::Firefly => a.firefly == b.firefly,
            Component::Api => a.api == b.api,
            Component::Marker => a.marker == b.marker,
            Component::Http => a.http == b.http,
            Component::Policy => a.policy == b.policy,
        }
    }
}

/// How a key's value is checked and stored. The variant fixes the accepted value type
/// (and range); the function stores the checked value into the component's struct.
#[derive(Clone, Copy)]
pub enum Parse {
    /// `True`/`False` (or 1/0).
    Bool(fn(&mut Config, bool)),
    /// An integer in `min..=max` (Python forms: `660`, `0o660`, `0x1f`, `'0660'`).
    Int {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
        /// Stores the value.
        set: fn(&mut Config, i64),
    },
    /// A number of seconds, at least `min` (and at most a year).
    Seconds {
        /// Smallest accepted value.
        min: f64,
        /// Stores the value.
        set: fn(&mut Config, Duration),
    },
    /// A quoted string; `set` may refuse it (the message follows `KEY: `).
    Str {
        /// What the string is, for the docs.
        what: &'static str,
        /// Stores the value or says what is wrong with it.
        set: fn(&mut Config, String) -> Result<(), String>,
    },
    /// A quoted string, `''` or `None` meaning unset (trimmed); `set` may refuse it.
    OptStr {
        /// What the string is, for the docs.
        what: &'static str,
        /// Stores the value or says what is wrong with it.
        set: fn(&mut Config, Option<String>) -> Result<(), String>,
    },
    /// A string (split on commas), a list of strings, or `None` (empty); `set` returns
    /// one problem per bad item.
    List {
        /// What the list holds, for the docs.
        what: &'static str,
        /// Stores the value; returns the problems found.
        set: fn(&mut Config, Vec<String>) -> Vec<String>,
    },
    /// An id (integer) or a registry name; `None` when the value is neither.
    IdOrName(fn(&mut Config, Option<IdOrName>)),
    /// Anything else: `apply` reads the raw value and reports its own problems.
    Custom {
        /// The value type, for the docs.
        what: &'static str,
        /// Checks and stores the value.
        apply: fn(&mut Config, &mut Ctx<'_>, &Entry),
    },
}

impl Parse {
    /// The value type as the docs state it (with the accepted range).
    pub(crate) fn type_text(&self) -> String {
        match self {
            Parse::Bool(_) => "True/False".into(),
            Parse::Int { min, max, .. } => format!("integer from {min} to {max}"),
            Parse::Seconds { min, .. } if *min > 0.0 => format!("seconds, at least {min}"),
            Parse::Seconds { .. } => "seconds".into(),
            Parse::Str { what, .. } | Parse::OptStr { what, .. } | Parse::List { what, .. } | Parse::Custom { what, .. } => (*what).into(),
            Parse::IdOrName(_) => "id or registry name".into(),
        }
    }
}

/// One config key.
#[derive(Clone, Copy)]
pub struct Key {
    /// The name, as written in flowd.cfg.
    pub name: &'static str,
    /// Other names accepted for the same key (the Python flowd's spellings).
    pub aliases: &'static [&'static str],
    /// The component (`Config` struct) this key configures.
    pub component: Component,
    /// The default as a value in the file: `NAME=<default>` gives `Config::default()`.
    /// `None`: there is no default value (e.g. required with some plugin).
    pub default: Option<&'static str>,
    /// What the default means, when the value alone does not say it.
    pub means: &'static str,
    /// A value shown in flowd.cfg and the docs instead of the default.
    pub example: Option<&'static str>,
    /// What the key does, in one sentence.
    pub doc: &'static str,
    /// More detail (may be empty).
    pub long: &'static str,
    /// For keys accepted for compatibility that have no effect: why (a warning names it).
    pub unused: Option<&'static str>,
    /// Written uncommented in the shipped flowd.cfg (with its default).
    pub active: bool,
    /// How the value is checked and stored.
    pub parse: Parse,
}

/// A key of `component` named `name`, checked and stored by `parse`; the builder
/// methods below fill in the rest.
const fn key(name: &'static str, component: Component, parse: Parse) -> Key {
    Key { name, aliases: &[], component, default: None, means: "", example: None, doc: "", long: "", unused: None, active: false, parse }
}

impl Key {
    const fn aliases(mut self, aliases: &'static [&'static str]) -> Key {
        self.aliases = aliases;
        self
    }
    const fn default(mut self, value: &'static str) -> Key {
        self.default = Some(value);
        self
    }
    const fn means(mut self, means: &'static str) -> Key {
        self.means = means;
        self
    }
    const fn example(mut self, value: &'static str) -> Key {
        self.example = Some(value);
        self
    }
    const fn doc(mut self, doc: &'static str) -> Key {
        self.doc = doc;
        self
    }
    const fn long(mut self, long: &'static str) -> Key {
        self.long = long;
        self
    }
    const fn unused(mut self, why: &'static str) -> Key {
        self.unused = Some(why);
        self
    }
    const fn active(mut self) -> Key {
        self.active = true;
        self
    }

    /// The name and the aliases.
    pub(crate) fn all_names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.aliases.iter().copied())
    }

    /// The value written on the key's line in flowd.cfg: the example, else the default.
    pub(crate) fn shown_value(&self) -> Option<&'static str> {
        self.example.or(self.default)
    }
}

use Component as C;

/// Every key, grouped by component in the order of [`Component::ALL`].
pub(crate) static TABLE: &[Key] = &[
    // What flowd does
    key("PLUGIN", C::Flowd, Parse::Custom { what: "plugin names", apply: plugins })
        .default("'np_api'")
        .active()
        .doc("Flow sources, comma-separated: `np_api`, `netlink`, `netstat`, `iperf`, `firefly`, `perfsonar`, `api`.")
        .long(
            "`iperf_rr` is the iperf plugin with IPERF_ROUND_ROBIN set. \
             `perfsonar` announces no flows: with the `ebpf` backend it marks every egress IPv6 TCP packet that no announced flow claims (PERFSONAR_EXPERIMENT, PERFSONAR_ACTIVITY). \
             `()` runs no flow source (as a flowd-go config without plugins).",
        ),
    key("BACKEND", C::Flowd, Parse::Custom { what: "backend names", apply: backends })
        .default("'udp_firefly'")
        .active()
        .doc("Marking methods, comma-separated: `udp_firefly`, `ebpf` (aliases `ebpf_el8`, `ebpf_el9`), `prometheus`, `dummy` (logs every event).")
        .long("`()` runs no marking method (as a flowd-go config without backends)."),
    // Flow registry
    key(
        "FLOW_MAP_API",
        C::Registry,
        Parse::OptStr {
            what: "URL or path",
            set: |c, v| {
                c.registry.api = v;
                Ok(())
            },
        },
    )
    .default("''")
    .means("the registry bundled into flowd")
    .example("'https://www.scitags.org/api.json'")
    .doc("http(s) URL or file path of the registry (api.json) that maps experiment and activity names to ids.")
    .long("https uses the system CA store; the environment variable `SSL_CERT_FILE` names a private CA bundle."),
    key("FLOW_MAP_REFRESH", C::Registry, Parse::Seconds { min: 0.0, set: |c, d| c.registry.refresh = (!d.is_zero()).then_some(d.max(Duration::from_secs(1))) })
        .default("600")
        .doc("Refresh period of the registry in seconds, 0 = never.")
        .long("On failure the last good registry is kept."),
    key("FLOW_MAP_TIMEOUT", C::Registry, Parse::Seconds { min: 0.1, set: |c, d| c.registry.timeout = d })
        .default("10")
        .doc("Timeout of one registry fetch, in seconds."),
    // np_api plugin
    key("NP_API_FILE", C::NpApi, Parse::Str { what: "path", set: np_api_file })
        .default("'/var/run/flowd'")
        .doc("The named pipe that transfer services write flow events to.")
        .long(
            "Each line announces a flow: `state proto src_ip src_port dst_ip dst_port exp act`, with state one of `start`, `end`, `ongoing`, \
             proto `tcp` or `udp`, and exp, act ids or registry names, e.g. `start tcp 192.0.2.1 1000 198.51.100.1 2000 2 9`.",
        ),
    key("NP_API_FILE_MODE", C::NpApi, Parse::Int { min: 0, max: 0o777, set: |c, n| c.np_api.mode = n as u32 })
        .default("0o660")
        .doc("Permission bits given to the pipe when flowd creates it."),
    key(
        "NP_API_FILE_OWNER",
        C::NpApi,
        Parse::OptStr {
            what: "user name or uid",
            set: |c, v| {
                c.np_api.owner = v;
                Ok(())
            },
        },
    )
    .default("''")
    .means("flowd's user")
    .doc("User (name or uid) given the pipe when flowd creates it."),
    key(
        "NP_API_FILE_GROUP",
        C::NpApi,
        Parse::OptStr {
            what: "group name or gid",
            set: |c, v| {
                c.np_api.group = v;
                Ok(())
            },
        },
    )
    .default("''")
    .means("flowd's group")
    .example("'xrootd'")
    .doc("Group (name or gid) given the pipe when flowd creates it: give a transfer service write access with its group."),
    // Daemon
    key(
        "PID_FILE",
        C::Daemon,
        Parse::OptStr {
            what: "path",
            set: |c, v| {
                c.daemon.pid_file = v.map(PathBuf::from);
                Ok(())
            },
        },
    )
    .default("'/var/run/flowd.pid'")
    .doc("PID file, locked while flowd runs; `''` = none.")
    .long("A second flowd with the same PID file refuses to start. A change takes effect at the next restart."),
    key("FLOW_TABLE_SIZE", C::Daemon, Parse::Int { min: 1, max: 100_000_000, set: |c, n| c.daemon.flow_table_size = n as usize })
        .default("1000000")
        .doc("How many open flows flowd remembers (start times for end and ongoing fireflies).")
        .long("Beyond it, flows are passed on untracked and counted."),
    // udp_firefly backend
    key("UDP_FIREFLY_PORT", C::UdpFirefly, Parse::Int { min: 1, max: 65535, set: |c, n| c.udp_firefly.port = n as u16 })
        .default("10514")
        .doc("Port fireflies are sent to on the flow's destination host."),
    key("UDP_FIREFLY_TO_PEER", C::UdpFirefly, Parse::Bool(|c, b| c.udp_firefly.to_peer = b))
        .default("True")
        .doc("Send each firefly to the flow's destination (the remote peer)."),
    key("UDP_FIREFLY_DST", C::UdpFirefly, Parse::List { what: "host[:port] list", set: udp_firefly_dst })
        .default("()")
        .means("no collectors")
        .example("('collector.example.org:10514',)")
        .doc("Collectors: `host[:port]` or a list of them; IPv4, IPv6 (`'[2001:db8::1]:10514'`) or host names.")
        .long("The port defaults to UDP_FIREFLY_PORT. Names are resolved when the backend starts."),
    key("UDP_FIREFLY_IP4_SRC", C::UdpFirefly, Parse::OptStr { what: "IPv4 address", set: ip4_src })
        .default("''")
        .means("unchanged")
        .doc("Replaces the src-ip of IPv4 fireflies (e.g. behind NAT)."),
    key("UDP_FIREFLY_IP6_SRC", C::UdpFirefly, Parse::OptStr { what: "IPv6 address", set: ip6_src })
        .default("''")
        .means("unchanged")
        .doc("Replaces the src-ip of IPv6 fireflies."),
    key("UDP_FIREFLY_SYSLOG", C::UdpFirefly, Parse::Bool(|c, b| c.udp_firefly.syslog = b))
        .default("True")
        .doc("Start each firefly with its RFC 5424 syslog header; False sends the bare JSON object (flowd-go's `prependSyslog: false`).")
        .long("Collectors and flowd's firefly plugin accept both; the Scitags specification asks for the header."),
    // tcp_info and ongoing fireflies
    key("UDP_FIREFLY_NETLINK", C::Enrich, Parse::Bool(|c, b| c.enrich.netlink = b))
        .aliases(&["UDP_FIREFLY_WITH_NETLINK"])
        .default("False")
        .doc("Add tcp_info (`netlink`) to the fireflies of TCP flows, and `usage` to ongoing and end fireflies.")
        .long(
            "`netlink` holds rtt in ms with three decimals and the Python flowd's tcp_info fields; `usage` the bytes received and acknowledged. \
             Both come from one asynchronous sock_diag dump per period.",
        ),
    key(
        "UDP_FIREFLY_ONGOING_INTERVAL",
        C::Enrich,
        Parse::Seconds { min: 0.0, set: |c, d| c.enrich.ongoing_interval = (!d.is_zero()).then_some(d.max(Duration::from_secs(1))) },
    )
    .default("0")
    .doc("Period of `ongoing` fireflies for open flows, in seconds; 0 = off."),
    key("UDP_FIREFLY_NETLINK_INTERVAL", C::Enrich, Parse::Seconds { min: 1.0, set: |c, d| c.enrich.netlink_interval = d })
        .default("10")
        .doc("How often tcp_info is refreshed for UDP_FIREFLY_NETLINK when ongoing fireflies are off, in seconds.")
        .long("End fireflies carry the last tcp_info seen before the flow ended."),
    // Public IP discovery
    key("IP_DISCOVERY_ENABLED", C::Discovery, Parse::Bool(|c, b| c.discovery.enabled = b))
        .default("False")
        .doc("Learn this host's public IPv4/IPv6 addresses behind NAT with STUN.")
        .long(
            "Fireflies then carry the public address wherever a flow's src or dst is the private address used to reach the servers. \
             Never blocks startup; failures are retried. Debug with `flowd stun -c /etc/flowd/flowd.cfg`.",
        ),
    key("IP_DISCOVERY_STUN_SERVERS", C::Discovery, Parse::List { what: "host[:port] list", set: stun_servers })
        .default("('stun.l.google.com:19302', 'stun.cloudflare.com:3478')")
        .doc("STUN servers, `host[:port]` (port 3478 by default), tried in order for each family."),
    key("IP_DISCOVERY_INTERVAL", C::Discovery, Parse::Seconds { min: 10.0, set: |c, d| c.discovery.interval = d })
        .default("600")
        .doc("Re-discovery period after a success, in seconds."),
    key("IP_DISCOVERY_TIMEOUT", C::Discovery, Parse::Seconds { min: 0.01, set: |c, d| c.discovery.timeout = d.min(Duration::from_secs(30)) })
        .default("0.5")
        .doc("First STUN retransmission timeout, in seconds (at most 30); it doubles on each of the 3 tries per server."),
    key("IP_DISCOVERY_HTTP_URLS", C::Discovery, Parse::List { what: "URL list", set: http_urls })
        .default("()")
        .means("none")
        .example("('https://api4.my-ip.io/ip', 'https://api6.my-ip.io/ip')")
        .doc("\"What is my IP\" URLs (the body is the address), fetched on a helper thread when no STUN server answered."),
    key("IP_DISCOVERY_MAP", C::Discovery, Parse::List { what: "private=public list", set: discovery_map })
        .default("()")
        .means("none")
        .example("('10.0.0.5=192.0.2.5',)")
        .doc("Manual `private=public` address pairs, applied with or without discovery (and before it)."),
    // netstat plugin
    key("NETSTAT_EXPERIMENT", C::Netstat, Parse::IdOrName(|c, v| c.netstat.experiment = v))
        .example("'atlas'")
        .doc("Experiment (id or registry name) of every flow the netstat plugin finds; required by the netstat plugin."),
    key("NETSTAT_ACTIVITY", C::Netstat, Parse::IdOrName(|c, v| c.netstat.activity = v))
        .example("'default'")
        .doc("Activity (id or registry name) of every flow the netstat plugin finds; required by the netstat plugin."),
    key("NETSTAT_INTERNAL_NETWORKS", C::Netstat, Parse::List { what: "network list (CIDR)", set: |c, l| networks(l, &mut c.netstat) })
        .default("()")
        .means("none")
        .example("('192.168.0.0/16',)")
        .doc("Networks (CIDR, IPv4 or IPv6) whose destinations the netstat and iperf plugins ignore."),
    key("NETSTAT_TIMEOUT", C::Netstat, Parse::Seconds { min: 0.1, set: |c, d| c.netstat.interval = d })
        .default("2")
        .doc("Scan period of the netstat and iperf plugins, in seconds."),
    key("NETSTAT_INCLUDE_PRIVATE", C::Netstat, Parse::Bool(|c, b| c.netstat.include_private = b))
        .default("False")
        .doc("Let the netstat and iperf plugins report connections to private destinations too (the Python flowd never does).")
        .long("Loopback and link-local destinations are always ignored."),
    // netlink plugin
    key("NETLINK_EXPERIMENT", C::Netlink, Parse::IdOrName(|c, v| c.netlink.scan.experiment = v))
        .example("'atlas'")
        .doc("Experiment (id or registry name) of every flow the netlink plugin finds; required by the netlink plugin."),
    key("NETLINK_ACTIVITY", C::Netlink, Parse::IdOrName(|c, v| c.netlink.scan.activity = v))
        .example("'default'")
        .doc("Activity (id or registry name) of every flow the netlink plugin finds; required by the netlink plugin."),
    key("NETLINK_INTERNAL_NETWORKS", C::Netlink, Parse::List { what: "network list (CIDR)", set: |c, l| networks(l, &mut c.netlink.scan) })
        .default("()")
        .means("none")
        .example("('192.168.0.0/16',)")
        .doc("Networks (CIDR, IPv4 or IPv6) whose destinations the netlink plugin ignores."),
    key("NETLINK_TIMEOUT", C::Netlink, Parse::Seconds { min: 0.1, set: |c, d| c.netlink.scan.interval = d })
        .default("2")
        .doc("Scan period of the netlink plugin, in seconds."),
    key("NETLINK_INCLUDE_PRIVATE", C::Netlink, Parse::Bool(|c, b| c.netlink.scan.include_private = b))
        .default("False")
        .doc("Let the netlink plugin report connections to private destinations too (the Python flowd never does).")
        .long("Loopback and link-local destinations are always ignored."),
    key("NETLINK_DUMP_TIMEOUT", C::Netlink, Parse::Seconds { min: 0.01, set: |c, d| c.netlink.dump_timeout = d })
        .default("5")
        .doc("A socket dump not finished within this many seconds is logged, counted and abandoned."),
    // iperf plugin
    key("IPERF_FLOW_ID", C::Iperf, Parse::Custom { what: "list of (experiment, activity)", apply: iperf_flow_id })
        .default("[]")
        .means("the Python flowd's built-in lists")
        .example("[(2, 2), ('cms', 'perfSONAR')]")
        .doc("(experiment, activity) pairs handed out to iperf3 flows.")
        .long("Unset, the iperf plugin uses the Python flowd's built-in lists: at random from (2,9) (2,19) (3,3) (3,4) (4,3) (4,4) (5,10) (5,14); in turn (IPERF_ROUND_ROBIN or `iperf_rr`) from (2,19) (2,19) (3,3) (3,3) (4,3) (4,3) (5,10) (5,10)."),
    key("IPERF_PORTS", C::Iperf, Parse::Custom { what: "port list", apply: |c, cx, e| port_ranges(cx, e, &mut c.iperf.ports) })
        .default("(5201,)")
        .example("(5201, '5300-5310')")
        .doc("Ports whose connections count as iperf flows (either side), besides every connection of an iperf3 process; ports or `'lo-hi'` ranges."),
    key("IPERF_LOCAL_PORTS", C::Iperf, Parse::Custom { what: "port list", apply: |c, cx, e| port_ranges(cx, e, &mut c.iperf.local_ports) })
        .default("()")
        .means("any")
        .example("('2340-2350',)")
        .doc("Only connections whose local port is in these (ports or `'lo-hi'` ranges) count as iperf flows (flowd-go's `minSourcePort`/`maxSourcePort`)."),
    key("IPERF_REMOTE_PORTS", C::Iperf, Parse::Custom { what: "port list", apply: |c, cx, e| port_ranges(cx, e, &mut c.iperf.remote_ports) })
        .default("()")
        .means("any")
        .example("('5200-5210',)")
        .doc("Only connections whose remote port is in these (ports or `'lo-hi'` ranges) count as iperf flows (flowd-go's `minDestinationPort`/`maxDestinationPort`)."),
    key("IPERF_ROUND_ROBIN", C::Iperf, Parse::Bool(|c, b| c.iperf.round_robin = b))
        .default("False")
        .doc("Hand out IPERF_FLOW_ID in order instead of at random (the plugin name `iperf_rr` sets this too)."),
    // firefly plugin
    key("FIREFLY_LISTENER_HOST", C::Firefly, Parse::Str { what: "IP address", set: |c, s| ip_addr(s, &mut c.firefly.host) })
        .default("'::'")
        .doc("Address the firefly plugin listens on; `'::'` is every interface, IPv4 and IPv6."),
    key("FIREFLY_LISTENER_PORT", C::Firefly, Parse::Int { min: 1, max: 65535, set: |c, n| c.firefly.port = n as u16 })
        .default("10514")
        .doc("UDP port the firefly plugin listens on.")
        .long("The udp_firefly backend never sends fireflies to this port on a local address, so relayed fireflies cannot loop."),
    key("FIREFLY_LISTENER_ALLOW", C::Firefly, Parse::List { what: "network list (CIDR)", set: firefly_allow })
        .default("()")
        .means("everyone")
        .example("('192.0.2.0/24', '2001:db8::/32')")
        .doc("Networks (CIDR, IPv4 or IPv6) whose fireflies the firefly plugin accepts; datagrams from anywhere else are dropped unread.")
        .long(
            "IPv4 networks also match IPv4-mapped senders (`::ffff:192.0.2.7`) on the dual-stack socket. Dropped datagrams are counted in \
             `flowd_bad_input_total{source=\"firefly\",reason=\"not_allowed\"}`. Without a list, flowd warns once at start when it listens on \
             a non-loopback address.",
        ),
    key("FIREFLY_FORWARD", C::Firefly, Parse::List { what: "host[:port] list", set: firefly_forward })
        .default("()")
        .means("none")
        .example("('collector.example.org:10514',)")
        .doc("Receivers that get every valid firefly the plugin receives, byte for byte as received (syslog header included), besides the relay.")
        .long(
            "The port defaults to 10514; names are resolved when the plugin starts. A receiver that is this host's own listener, or the \
             datagram's sender, is skipped. Counted in `flowd_fireflies_forwarded_total{receiver,result}`.",
        ),
    // api plugin
    key("API_HOST", C::Api, Parse::Str { what: "IP address", set: |c, s| ip_addr(s, &mut c.api.host) })
        .default("'127.0.0.1'")
        .doc("Address the api plugin listens on (HTTP: `POST /flow` in flowd-go's JSON, `GET /` lists the routes).")
        .long("There is no authentication: anyone who can connect can announce flows. Keep it on loopback or behind a firewall."),
    key("API_PORT", C::Api, Parse::Int { min: 1, max: 65535, set: |c, n| c.api.port = n as u16 })
        .default("7777")
        .doc("TCP port the api plugin listens on."),
    // ebpf backend
    key("NETWORK_INTERFACE", C::Marker, Parse::List { what: "interface names", set: interfaces })
        .default("''")
        .means("every interface with a global IPv6 address")
        .example("'eth0'")
        .doc("Interfaces the eBPF marker attaches to, comma-separated."),
    key("EBPF_MAP_SIZE", C::Marker, Parse::Int { min: 16, max: 16_777_216, set: |c, n| c.marker.map_size = n as u32 })
        .default("65536")
        .doc("Capacity of the in-kernel flow map (the oldest flows go first when it is full)."),
    key("EBPF_MARKING", C::Marker, Parse::Str { what: "marking name", set: marking })
        .default("'label'")
        .doc("How the eBPF marker marks packets: `label` (the IPv6 flow label), `hop-by-hop`, `destination` or `hop-by-hop-destination` (an extension header with option 0x1E carrying `exp<<8 | act`, as flowd-go writes it).")
        .long(
            "flowd-go's spellings (`hopByHop`, `hopByHopDestination`) are accepted too. \
             An extension header is not inserted into a packet that would then exceed the MTU; extension headers need kernel 5.12 or later.",
        ),
    key("PERFSONAR_EXPERIMENT", C::Marker, Parse::IdOrName(|c, v| c.marker.perfsonar_experiment = v))
        .example("'atlas'")
        .doc("Experiment (id or registry name) the perfsonar plugin marks every unannounced egress IPv6 TCP packet with; required by the perfsonar plugin."),
    key("PERFSONAR_ACTIVITY", C::Marker, Parse::IdOrName(|c, v| c.marker.perfsonar_activity = v))
        .example("'perfSONAR'")
        .doc("Activity (id or registry name) the perfsonar plugin marks every unannounced egress IPv6 TCP packet with; required by the perfsonar plugin."),
    // Metrics listener
    key("PROMETHEUS_SRV_HOST", C::Http, Parse::Str { what: "IP address", set: |c, s| ip_addr(s, &mut c.http.host) })
        .default("'127.0.0.1'")
        .doc("Address of the HTTP metrics listener (`/metrics`)."),
    key("PROMETHEUS_SRV_PORT", C::Http, Parse::Int { min: 0, max: 65535, set: |c, n| c.http.port = n as u16 })
        .default("9000")
        .doc("Port of the HTTP metrics listener; 0 = no listener."),
    key("PROMETHEUS_SS_PATH", C::Http, Parse::OptStr { what: "path", set: |_, _| Ok(()) })
        .example("'/usr/sbin/ss'")
        .unused("flowd reads tcp_info from sock_diag, it never runs ss")
        .doc("Accepted for compatibility and unused: flowd reads tcp_info itself."),
    // Site policy
    key("EXCLUDE_NETWORKS", C::Policy, Parse::List { what: "network list (CIDR)", set: exclude_networks })
        .default("()")
        .means("none")
        .example("('10.0.0.0/8', '2001:db8:1::/48')")
        .doc("Networks (CIDR, IPv4 or IPv6) whose flows flowd leaves alone, whatever plugin reports them: no firefly, no mark, no metrics.")
        .long(
            "EXCLUDE_MATCH says whether both endpoints must match (the default) or one. Applies before any backend; every skip is counted in \
             `flowd_decisions_total{outcome=\"excluded\"}`. The scanners' *_INTERNAL_NETWORKS keep working as before.",
        ),
    key("EXCLUDE_DOMAINS", C::Policy, Parse::List { what: "DNS domain list", set: exclude_domains })
        .default("()")
        .means("none")
        .example("('example.org',)")
        .doc("DNS domains whose flows flowd leaves alone: an address matches when it is an address of the name itself or its reverse name ends in the domain.")
        .long(
            "Lookups run on a helper thread and never delay an event: until an address's first answer is in, it does not match. \
             The names are looked up at start and every EXCLUDE_DOMAINS_REFRESH.",
        ),
    key(
        "EXCLUDE_MATCH",
        C::Policy,
        Parse::Str {
            what: "both or either",
            set: |c, s| {
                c.policy.exclude_match = match s.trim().to_ascii_lowercase().as_str() {
                    "both" => super::model::ExcludeMatch::Both,
                    "either" => super::model::ExcludeMatch::Either,
                    _ => return Err(format!("{s:?} is neither 'both' nor 'either'")),
                };
                Ok(())
            },
        },
    )
    .default("'both'")
    .doc("`both`: skip a flow only when both endpoints match EXCLUDE_NETWORKS/EXCLUDE_DOMAINS (as dCache's `pool.firefly.excludes`); `either`: when one does."),
    key("EXCLUDE_DOMAINS_REFRESH", C::Policy, Parse::Seconds { min: 10.0, set: |c, d| c.policy.domains_refresh = d })
        .default("300")
        .doc("How long an EXCLUDE_DOMAINS answer is used before it is looked up again, in seconds."),
];

/// The key called `name` (its name or an alias).
pub fn find(name: &str) -> Option<&'static Key> {
    TABLE.iter().find(|k| k.all_names().any(|n| n == name))
}

/// Every name flowd knows (names and aliases), in table order.
pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().flat_map(Key::all_names)
}

#[cfg(test)]
#[path = "keys_tests.rs"]
pub(crate) mod tests;

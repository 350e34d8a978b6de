//! The typed configuration: what flowd runs with, once validated.
//!
//! Owns `Config` (one struct per component, each field documented with its key's name),
//! the defaults (the Python flowd's `settings.py` values where they exist) and the
//! plugin/backend kinds.
//! Pure data: parsing and validation live in `raw.rs` and `validate.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::netaddr::Cidr;
use crate::registry::IdOrName;

/// A flow source (PLUGIN=…).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// Named pipe API (`np_api`).
    NpApi,
    /// sock_diag scanner (`netlink`).
    Netlink,
    /// /proc/net/tcp scanner (`netstat`).
    Netstat,
    /// iperf3 connection scanner (`iperf`).
    Iperf,
    /// UDP firefly listener (`firefly`).
    Firefly,
    /// Marks every IPv6 TCP packet no flow claims, through the ebpf backend (`perfsonar`).
    Perfsonar,
    /// HTTP API (`api`, flowd-go's `plugins.api`).
    Api,
}

impl PluginKind {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::NpApi => "np_api",
            PluginKind::Netlink => "netlink",
            PluginKind::Netstat => "netstat",
            PluginKind::Iperf => "iperf",
            PluginKind::Firefly => "firefly",
            PluginKind::Perfsonar => "perfsonar",
            PluginKind::Api => "api",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<PluginKind> {
        Some(match s {
            "np_api" => PluginKind::NpApi,
            "netlink" => PluginKind::Netlink,
            "netstat" => PluginKind::Netstat,
            "iperf" | "iperf_rr" => PluginKind::Iperf,
            "firefly" => PluginKind::Firefly,
            "perfsonar" => PluginKind::Perfsonar,
            "api" => PluginKind::Api,
            _ => return None,
        })
    }
}

/// A marking method (BACKEND=…).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// UDP fireflies (`udp_firefly`).
    UdpFirefly,
    /// eBPF IPv6 flow-label marker (`ebpf`, aliases `ebpf_el8`, `ebpf_el9`).
    Ebpf,
    /// Per-flow TCP metrics for Prometheus (`prometheus`).
    Prometheus,
    /// Logs every event at info level (`dummy`, as in the Python flowd).
    Dummy,
}

impl BackendKind {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::UdpFirefly => "udp_firefly",
            BackendKind::Ebpf => "ebpf",
            BackendKind::Prometheus => "prometheus",
            BackendKind::Dummy => "dummy",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<BackendKind> {
        Some(match s {
            "udp_firefly" => BackendKind::UdpFirefly,
            "ebpf" | "ebpf_el8" | "ebpf_el9" => BackendKind::Ebpf,
            "prometheus" => BackendKind::Prometheus,
            "dummy" => BackendKind::Dummy,
            _ => return None,
        })
    }
}

/// Settings shared by the scanning plugins (netstat, netlink; iperf uses netstat's).
#[derive(Clone, Debug, PartialEq)]
pub struct ScanConfig {
    /// *_EXPERIMENT: experiment given to every flow found (id or registry name).
    pub experiment: Option<IdOrName>,
    /// *_ACTIVITY: activity given to every flow found (id or registry name).
    pub activity: Option<IdOrName>,
    /// *_INTERNAL_NETWORKS: destinations in these networks are ignored.
    pub internal_networks: Vec<Cidr>,
    /// *_TIMEOUT: scan period.
    pub interval: Duration,
    /// *_INCLUDE_PRIVATE: report flows to private destinations too (the Python flowd never does).
    pub include_private: bool,
}

impl Default for ScanConfig {
    fn default() -> ScanConfig {
        ScanConfig { experiment: None, activity: None, internal_networks: Vec::new(), interval: Duration::from_secs(2), include_private: false }
    }
}

/// The daemon itself.
#[derive(Clone, Debug, PartialEq)]
pub struct DaemonConfig {
    /// PID_FILE: where the PID is written; `None` = no PID file.
    pub pid_file: Option<PathBuf>,
    /// FLOW_TABLE_SIZE: how many open flows the daemon remembers (start times).
    pub flow_table_size: usize,
}

impl Default for DaemonConfig {
    fn default() -> DaemonConfig {
        DaemonConfig { pid_file: Some(PathBuf::from("/var/run/flowd.pid")), flow_table_size: 1_000_000 }
    }
}

/// The flow registry (experiment/activity names and ids).
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryConfig {
    /// FLOW_MAP_API: registry URL (http/https) or file path; `None` = bundled registry.
    pub api: Option<String>,
    /// FLOW_MAP_REFRESH: registry refresh period; `None` = never.
    pub refresh: Option<Duration>,
    /// FLOW_MAP_TIMEOUT: timeout of one registry fetch.
    pub timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig { api: None, refresh: Some(Duration::from_secs(600)), timeout: Duration::from_secs(10) }
    }
}

/// The np_api plugin (named pipe).
#[derive(Clone, Debug, PartialEq)]
pub struct NpApiConfig {
    /// NP_API_FILE: the named pipe.
    pub file: PathBuf,
    /// NP_API_FILE_MODE: permission bits given to the pipe when flowd creates it.
    pub mode: u32,
    /// NP_API_FILE_OWNER: user (name or uid) that owns the pipe; `None` = flowd's user.
    pub owner: Option<String>,
    /// NP_API_FILE_GROUP: group (name or gid) of the pipe; `None` = flowd's group.
    pub group: Option<String>,
}

impl Default for NpApiConfig {
    fn default() -> NpApiConfig {
        NpApiConfig { file: PathBuf::from("/var/run/flowd"), mode: 0o660, owner: None, group: None }
    }
}

/// The udp_firefly backend: where fireflies go and what they say about the source.
#[derive(Clone, Debug, PartialEq)]
pub struct UdpFireflyConfig {
    /// UDP_FIREFLY_PORT: destination port of fireflies sent to flow peers.
    pub port: u16,
    /// UDP_FIREFLY_TO_PEER: send each firefly to the flow's destination address.
    pub to_peer: bool,
    /// UDP_FIREFLY_DST: collectors, `host[:port]` (port defaults to UDP_FIREFLY_PORT).
    pub dst: Vec<String>,
    /// UDP_FIREFLY_IP4_SRC: replaces `src-ip` of IPv4 fireflies.
    pub ip4_src: Option<Ipv4Addr>,
    /// UDP_FIREFLY_IP6_SRC: replaces `src-ip` of IPv6 fireflies.
    pub ip6_src: Option<Ipv6Addr>,
    /// UDP_FIREFLY_SYSLOG: start each firefly with its RFC 5424 syslog header.
    pub syslog: bool,
}

impl Default for UdpFireflyConfig {
    fn default() -> UdpFireflyConfig {
        UdpFireflyConfig { port: 10514, to_peer: true, dst: Vec::new(), ip4_src: None, ip6_src: None, syslog: true }
    }
}

/// Flow enrichment: tcp_info in fireflies and `ongoing` fireflies.
#[derive(Clone, Debug, PartialEq)]
pub struct EnrichConfig {
    /// UDP_FIREFLY_NETLINK (or UDP_FIREFLY_WITH_NETLINK): add tcp_info to fireflies.
    pub netlink: bool,
    /// UDP_FIREFLY_ONGOING_INTERVAL: period of `ongoing` fireflies; `None` = off.
    pub ongoing_interval: Option<Duration>,
    /// UDP_FIREFLY_NETLINK_INTERVAL: tcp_info refresh period when ongoing fireflies are off.
    pub netlink_interval: Duration,
}

impl Default for EnrichConfig {
    fn default() -> EnrichConfig {
        EnrichConfig { netlink: false, ongoing_interval: None, netlink_interval: Duration::from_secs(10) }
    }
}

/// Public-address discovery (STUN, HTTP fallback, manual map).
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveryConfig {
    /// IP_DISCOVERY_ENABLED: discover public addresses with STUN.
    pub enabled: bool,
    /// IP_DISCOVERY_STUN_SERVERS: `host:port` STUN servers.
    pub stun_servers: Vec<String>,
    /// IP_DISCOVERY_INTERVAL: period of re-discovery after a success.
    pub interval: Duration,
    /// IP_DISCOVERY_TIMEOUT: first STUN retransmission timeout (doubles per retry).
    pub timeout: Duration,
    /// IP_DISCOVERY_HTTP_URLS: "what is my IP" URLs tried when STUN finds nothing.
    pub http_urls: Vec<String>,
    /// IP_DISCOVERY_MAP: manual private → public address pairs (used with or without discovery).
    pub map: Vec<(IpAddr, IpAddr)>,
}

impl Default for DiscoveryConfig {
    fn default() -> DiscoveryConfig {
        DiscoveryConfig {
            enabled: false,
            stun_servers: vec!["stun.l.google.com:19302".into(), "stun.cloudflare.com:3478".into()],
            interval: Duration::from_secs(600),
            timeout: Duration::from_millis(500),
            http_urls: Vec::new(),
            map: Vec::new(),
        }
    }
}

/// The netlink plugin: the scan settings plus the sock_diag dump deadline.
#[derive(Clone, Debug, PartialEq)]
pub struct NetlinkConfig {
    /// NETLINK_EXPERIMENT, _ACTIVITY, _INTERNAL_NETWORKS, _TIMEOUT, _INCLUDE_PRIVATE.
    pub scan: ScanConfig,
    /// NETLINK_DUMP_TIMEOUT: a sock_diag dump not finished within this is abandoned.
    pub dump_timeout: Duration,
}

impl Default for NetlinkConfig {
    fn default() -> NetlinkConfig {
        NetlinkConfig { scan: ScanConfig::default(), dump_timeout: Duration::from_secs(5) }
    }
}

/// An inclusive range of ports (`5201` is `5201-5201`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port.
    pub lo: u16,
    /// Highest port.
    pub hi: u16,
}

impl PortRange {
    /// True when `port` is within the range.
    pub(crate) fn contains(self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }

    /// True when `port` is in one of `ranges`.
    pub(crate) fn any(ranges: &[PortRange], port: u16) -> bool {
        ranges.iter().any(|r| r.contains(port))
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// The iperf plugin (it also uses the netstat plugin's scan settings).
#[derive(Clone, Debug, PartialEq)]
pub struct IperfConfig {
    /// IPERF_FLOW_ID: (experiment, activity) pairs handed out to iperf flows.
    pub flow_id: Vec<(IdOrName, IdOrName)>,
    /// IPERF_PORTS: ports (either side) whose connections count as iperf flows.
    pub ports: Vec<PortRange>,
    /// IPERF_LOCAL_PORTS: only connections whose local port is in these; empty = any.
    pub local_ports: Vec<PortRange>,
    /// IPERF_REMOTE_PORTS: only connections whose remote port is in these; empty = any.
    pub remote_ports: Vec<PortRange>,
    /// IPERF_ROUND_ROBIN: hand out IPERF_FLOW_ID in order instead of at random.
    pub round_robin: bool,
}

impl Default for IperfConfig {
    fn default() -> IperfConfig {
        IperfConfig {
            flow_id: Vec::new(),
            ports: vec![PortRange { lo: 5201, hi: 5201 }],
            local_ports: Vec::new(),
            remote_ports: Vec::new(),
            round_robin: false,
        }
    }
}

/// The firefly plugin (UDP listener).
#[derive(Clone, Debug, PartialEq)]
pub struct FireflyListenerConfig {
    /// FIREFLY_LISTENER_HOST: address the firefly plugin listens on (`::` = all, v4 and v6).
    pub host: IpAddr,
    /// FIREFLY_LISTENER_PORT: port the firefly plugin listens on.
    pub port: u16,
    /// FIREFLY_LISTENER_ALLOW: networks whose datagrams are accepted; empty = everyone.
    pub allow: Vec<Cidr>,
    /// FIREFLY_FORWARD: `host[:port]` receivers of every valid datagram as received.
    pub forward: Vec<String>,
}

impl Default for FireflyListenerConfig {
    fn default() -> FireflyListenerConfig {
        FireflyListenerConfig { host: IpAddr::V6(Ipv6Addr::UNSPECIFIED), port: 10514, allow: Vec::new(), forward: Vec::new() }
    }
}

/// How the eBPF marker marks packets (EBPF_MARKING).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Marking {
    /// The 20-bit IPv6 flow label (`label`, the default).
    #[default]
    Label,
    /// An 8-byte Hop-by-Hop Options header (`hop-by-hop`).
    HopByHop,
    /// An 8-byte Destination Options header (`destination`).
    Destination,
    /// Both, 16 bytes (`hop-by-hop-destination`).
    HopByHopDestination,
}

impl Marking {
    /// Every marking, in the order of the docs.
    pub(crate) const ALL: [Marking; 4] = [Marking::Label, Marking::HopByHop, Marking::Destination, Marking::HopByHopDestination];

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Marking::Label => "label",
            Marking::HopByHop => "hop-by-hop",
            Marking::Destination => "destination",
            Marking::HopByHopDestination => "hop-by-hop-destination",
        }
    }

    /// Parses flowd's spellings and flowd-go's `markingStrategy` ones (`hopByHop`,
    /// `hopByHopDestination`): ASCII case, `-` and `_` are ignored.
    pub(crate) fn parse(s: &str) -> Option<Marking> {
        let norm: String = s.trim().chars().filter(|c| *c != '-' && *c != '_').map(|c| c.to_ascii_lowercase()).collect();
        Marking::ALL.into_iter().find(|m| m.name().replace('-', "") == norm)
    }

    /// True for the extension-header markings.
    pub(crate) fn is_extension_header(self) -> bool {
        self != Marking::Label
    }

    /// Bytes inserted into each marked packet (0 for the label).
    pub fn inserted_len(self) -> usize {
        match self {
            Marking::Label => 0,
            Marking::HopByHop | Marking::Destination => 8,
            Marking::HopByHopDestination => 16,
        }
    }

    /// The largest experiment and activity ids the mark can carry: 9 and 6 bits in the
    /// flow label, 16 and 8 bits in the extension-header tag `exp<<8 | act`.
    pub(crate) fn max_ids(self) -> (u32, u32) {
        if self.is_extension_header() {
            (0xFFFF, 0xFF)
        } else {
            (511, 63)
        }
    }
}

/// The api plugin (HTTP API, flowd-go's JSON dialect).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiConfig {
    /// API_HOST: address the api plugin listens on.
    pub host: IpAddr,
    /// API_PORT: port the api plugin listens on.
    pub port: u16,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig { host: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 7777 }
    }
}

/// The ebpf backend (IPv6 flow-label or extension-header marker).
#[derive(Clone, Debug, PartialEq)]
pub struct MarkerConfig {
    /// NETWORK_INTERFACE: interfaces the eBPF marker attaches to; empty = auto.
    pub interfaces: Vec<String>,
    /// EBPF_MAP_SIZE: capacity of the marker's LRU flow map.
    pub map_size: u32,
    /// EBPF_MARKING: flow label or extension headers.
    pub marking: Marking,
    /// PERFSONAR_EXPERIMENT: experiment of the default mark (with the perfsonar plugin).
    pub perfsonar_experiment: Option<IdOrName>,
    /// PERFSONAR_ACTIVITY: activity of the default mark (with the perfsonar plugin).
    pub perfsonar_activity: Option<IdOrName>,
}

impl Default for MarkerConfig {
    fn default() -> MarkerConfig {
        MarkerConfig { interfaces: Vec::new(), map_size: 65536, marking: Marking::Label, perfsonar_experiment: None, perfsonar_activity: None }
    }
}

/// The HTTP metrics listener (`/metrics`).
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConfig {
    /// PROMETHEUS_SRV_HOST: metrics listener address.
    pub host: IpAddr,
    /// PROMETHEUS_SRV_PORT: metrics listener port; 0 = no listener.
    pub port: u16,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig { host: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 9000 }
    }
}

/// When EXCLUDE_NETWORKS/EXCLUDE_DOMAINS skip a flow (EXCLUDE_MATCH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExcludeMatch {
    /// Only when both endpoints match (dCache's `pool.firefly.excludes`).
    Both,
    /// When either endpoint matches.
    Either,
}

/// The site policy: flows flowd leaves alone, whatever plugin reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// EXCLUDE_NETWORKS: excluded networks.
    pub networks: Vec<Cidr>,
    /// EXCLUDE_DOMAINS: excluded DNS domains (and their sub-domains).
    pub domains: Vec<String>,
    /// EXCLUDE_MATCH: skip a flow when both endpoints match, or either.
    pub exclude_match: ExcludeMatch,
    /// EXCLUDE_DOMAINS_REFRESH: how long a domain lookup's answer is used.
    pub domains_refresh: Duration,
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig { networks: Vec::new(), domains: Vec::new(), exclude_match: ExcludeMatch::Both, domains_refresh: Duration::from_secs(300) }
    }
}

/// The validated configuration, one struct per component it configures. Field docs
/// name the config keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// PLUGIN: flow sources, in order (comma-separated in the file).
    pub plugins: Vec<PluginKind>,
    /// BACKEND: marking methods, in order (comma-separated in the file).
    pub backends: Vec<BackendKind>,
    /// PID_FILE, FLOW_TABLE_SIZE.
    pub daemon: DaemonConfig,
    /// FLOW_MAP_*.
    pub registry: RegistryConfig,
    /// NP_API_FILE*.
    pub np_api: NpApiConfig,
    /// UDP_FIREFLY_PORT, _TO_PEER, _DST, _IP4_SRC, _IP6_SRC.
    pub udp_firefly: UdpFireflyConfig,
    /// UDP_FIREFLY_NETLINK, _ONGOING_INTERVAL, _NETLINK_INTERVAL.
    pub enrich: EnrichConfig,
    /// IP_DISCOVERY_*.
    pub discovery: DiscoveryConfig,
    /// NETSTAT_*.
    pub netstat: ScanConfig,
    /// NETLINK_*.
    pub netlink: NetlinkConfig,
    /// IPERF_*.
    pub iperf: IperfConfig,
    /// FIREFLY_LISTENER_*.
    pub firefly: FireflyListenerConfig,
    /// API_HOST, API_PORT.
    pub api: ApiConfig,
    /// NETWORK_INTERFACE, EBPF_MAP_SIZE, EBPF_MARKING, PERFSONAR_EXPERIMENT, PERFSONAR_ACTIVITY.
    pub marker: MarkerConfig,
    /// PROMETHEUS_SRV_HOST, PROMETHEUS_SRV_PORT.
    pub http: HttpConfig,
    /// EXCLUDE_*.
    pub policy: PolicyConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            plugins: vec![PluginKind::NpApi],
            backends: vec![BackendKind::UdpFirefly],
            daemon: DaemonConfig::default(),
            registry: RegistryConfig::default(),
            np_api: NpApiConfig::default(),
            udp_firefly: UdpFireflyConfig::default(),
            enrich: EnrichConfig::default(),
            discovery: DiscoveryConfig::default(),
            netstat: ScanConfig::default(),
            netlink: NetlinkConfig::default(),
            iperf: IperfConfig::default(),
            firefly: FireflyListenerConfig::default(),
            api: ApiConfig::default(),
            marker: MarkerConfig::default(),
            http: HttpConfig::default(),
            policy: PolicyConfig::default(),
        }
    }
}

impl Config {
    /// The (experiment, activity) every IPv6 TCP packet no flow claims is marked with:
    /// set when PLUGIN includes perfsonar (validation makes sure both keys are then set).
    pub(crate) fn match_all(&self) -> Option<(IdOrName, IdOrName)> {
        if !self.plugins.contains(&PluginKind::Perfsonar) {
            return None;
        }
        Some((self.marker.perfsonar_experiment.clone()?, self.marker.perfsonar_activity.clone()?))
    }
}

//! The typed configuration: what flowd runs with, once validated.
//!
//! Owns `Config` (one field per key, documented with the key's name), its defaults (the
//! Python flowd's `settings.py` values where they exist) and the plugin/backend kinds.
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
        }
    }

    pub(crate) fn parse(s: &str) -> Option<PluginKind> {
        Some(match s {
            "np_api" => PluginKind::NpApi,
            "netlink" => PluginKind::Netlink,
            "netstat" => PluginKind::Netstat,
            "iperf" | "iperf_rr" => PluginKind::Iperf,
            "firefly" => PluginKind::Firefly,
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

/// Settings shared by the scanning plugins (netstat, netlink, iperf).
#[derive(Clone, Debug, PartialEq)]
pub struct ScanConfig {
    /// Experiment given to every flow found (id or registry name).
    pub experiment: Option<IdOrName>,
    /// Activity given to every flow found (id or registry name).
    pub activity: Option<IdOrName>,
    /// Destinations in these networks are ignored.
    pub internal_networks: Vec<Cidr>,
    /// Scan period.
    pub interval: Duration,
    /// Report flows to private destinations too (the Python flowd never does).
    pub include_private: bool,
}

/// The validated configuration. Field docs name the config key.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// PLUGIN: flow sources, in order (comma-separated in the file).
    pub plugins: Vec<PluginKind>,
    /// BACKEND: marking methods, in order (comma-separated in the file).
    pub backends: Vec<BackendKind>,
    /// FLOW_MAP_API: registry URL (http/https) or file path; `None` = bundled registry.
    pub flow_map_api: Option<String>,
    /// FLOW_MAP_REFRESH: registry refresh period; `None` = never.
    pub flow_map_refresh: Option<Duration>,
    /// FLOW_MAP_TIMEOUT: timeout of one registry fetch.
    pub flow_map_timeout: Duration,
    /// NP_API_FILE: the named pipe.
    pub np_api_file: PathBuf,
    /// NP_API_FILE_MODE: permission bits given to the pipe when flowd creates it.
    pub np_api_file_mode: u32,
    /// NP_API_FILE_OWNER: user (name or uid) that owns the pipe; `None` = flowd's user.
    pub np_api_file_owner: Option<String>,
    /// NP_API_FILE_GROUP: group (name or gid) of the pipe; `None` = flowd's group.
    pub np_api_file_group: Option<String>,
    /// PID_FILE: where the PID is written; `None` = no PID file.
    pub pid_file: Option<PathBuf>,
    /// FLOW_TABLE_SIZE: how many open flows the daemon remembers (start times).
    pub flow_table_size: usize,
    /// UDP_FIREFLY_PORT: destination port of fireflies sent to flow peers.
    pub udp_firefly_port: u16,
    /// UDP_FIREFLY_TO_PEER: send each firefly to the flow's destination address.
    pub udp_firefly_to_peer: bool,
    /// UDP_FIREFLY_DST: collectors, `host[:port]` (port defaults to UDP_FIREFLY_PORT).
    pub udp_firefly_dst: Vec<String>,
    /// UDP_FIREFLY_IP4_SRC: replaces `src-ip` of IPv4 fireflies.
    pub udp_firefly_ip4_src: Option<Ipv4Addr>,
    /// UDP_FIREFLY_IP6_SRC: replaces `src-ip` of IPv6 fireflies.
    pub udp_firefly_ip6_src: Option<Ipv6Addr>,
    /// UDP_FIREFLY_NETLINK (or UDP_FIREFLY_WITH_NETLINK): add tcp_info to fireflies.
    pub udp_firefly_netlink: bool,
    /// UDP_FIREFLY_ONGOING_INTERVAL: period of `ongoing` fireflies; `None` = off.
    pub udp_firefly_ongoing_interval: Option<Duration>,
    /// IP_DISCOVERY_ENABLED: discover public addresses with STUN.
    pub ip_discovery_enabled: bool,
    /// IP_DISCOVERY_STUN_SERVERS: `host:port` STUN servers.
    pub ip_discovery_stun_servers: Vec<String>,
    /// IP_DISCOVERY_INTERVAL: period of re-discovery after a success.
    pub ip_discovery_interval: Duration,
    /// IP_DISCOVERY_TIMEOUT: first STUN retransmission timeout (doubles per retry).
    pub ip_discovery_timeout: Duration,
    /// IP_DISCOVERY_HTTP_URLS: "what is my IP" URLs tried when STUN finds nothing.
    pub ip_discovery_http_urls: Vec<String>,
    /// IP_DISCOVERY_MAP: manual private → public address pairs (used with or without discovery).
    pub ip_discovery_map: Vec<(IpAddr, IpAddr)>,
    /// UDP_FIREFLY_NETLINK_INTERVAL: tcp_info refresh period when ongoing fireflies are off.
    pub udp_firefly_netlink_interval: Duration,
    /// NETSTAT_*: netstat plugin settings.
    pub netstat: ScanConfig,
    /// NETLINK_*: netlink plugin settings.
    pub netlink: ScanConfig,
    /// NETLINK_DUMP_TIMEOUT: a sock_diag dump not finished within this is abandoned.
    pub netlink_dump_timeout: Duration,
    /// IPERF_FLOW_ID: (experiment, activity) pairs handed out to iperf flows.
    pub iperf_flow_id: Vec<(IdOrName, IdOrName)>,
    /// IPERF_PORTS: ports whose connections count as iperf flows.
    pub iperf_ports: Vec<u16>,
    /// IPERF_ROUND_ROBIN: hand out IPERF_FLOW_ID in order instead of at random.
    pub iperf_round_robin: bool,
    /// FIREFLY_LISTENER_HOST: address the firefly plugin listens on (`::` = all, v4 and v6).
    pub firefly_listener_host: IpAddr,
    /// FIREFLY_LISTENER_PORT: port the firefly plugin listens on.
    pub firefly_listener_port: u16,
    /// NETWORK_INTERFACE: interfaces the eBPF marker attaches to; empty = auto.
    pub network_interface: Vec<String>,
    /// EBPF_MAP_SIZE: capacity of the marker's LRU flow map.
    pub ebpf_map_size: u32,
    /// PROMETHEUS_SRV_HOST: metrics listener address.
    pub prometheus_srv_host: IpAddr,
    /// PROMETHEUS_SRV_PORT: metrics listener port; 0 = no listener.
    pub prometheus_srv_port: u16,
}

impl Default for Config {
    fn default() -> Config {
        let scan = ScanConfig { experiment: None, activity: None, internal_networks: Vec::new(), interval: Duration::from_secs(2), include_private: false };
        Config {
            plugins: vec![PluginKind::NpApi],
            backends: vec![BackendKind::UdpFirefly],
            flow_map_api: None,
            flow_map_refresh: Some(Duration::from_secs(600)),
            flow_map_timeout: Duration::from_secs(10),
            np_api_file: PathBuf::from("/var/run/flowd"),
            np_api_file_mode: 0o660,
            np_api_file_owner: None,
            np_api_file_group: None,
            pid_file: Some(PathBuf::from("/var/run/flowd.pid")),
            flow_table_size: 1_000_000,
            udp_firefly_port: 10514,
            udp_firefly_to_peer: true,
            udp_firefly_dst: Vec::new(),
            udp_firefly_ip4_src: None,
            udp_firefly_ip6_src: None,
            udp_firefly_netlink: false,
            udp_firefly_ongoing_interval: None,
            ip_discovery_enabled: false,
            ip_discovery_stun_servers: vec!["stun.l.google.com:19302".into(), "stun.cloudflare.com:3478".into()],
            ip_discovery_interval: Duration::from_secs(600),
            ip_discovery_timeout: Duration::from_millis(500),
            ip_discovery_http_urls: Vec::new(),
            ip_discovery_map: Vec::new(),
            udp_firefly_netlink_interval: Duration::from_secs(10),
            netstat: scan.clone(),
            netlink: scan,
            netlink_dump_timeout: Duration::from_secs(5),
            iperf_flow_id: Vec::new(),
            iperf_ports: vec![5201],
            iperf_round_robin: false,
            firefly_listener_host: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            firefly_listener_port: 10514,
            network_interface: Vec::new(),
            ebpf_map_size: 65536,
            prometheus_srv_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            prometheus_srv_port: 9000,
        }
    }
}

impl Config {
    /// True when every setting that plugins use is equal (a reload keeps the plugins).
    pub fn same_plugins(&self, o: &Config) -> bool {
        self.plugins == o.plugins
            && self.np_api_file == o.np_api_file
            && self.np_api_file_mode == o.np_api_file_mode
            && self.np_api_file_owner == o.np_api_file_owner
            && self.np_api_file_group == o.np_api_file_group
            && self.netstat == o.netstat
            && self.netlink == o.netlink
            && self.netlink_dump_timeout == o.netlink_dump_timeout
            && self.iperf_flow_id == o.iperf_flow_id
            && self.iperf_ports == o.iperf_ports
            && self.iperf_round_robin == o.iperf_round_robin
            && self.firefly_listener_host == o.firefly_listener_host
            && self.firefly_listener_port == o.firefly_listener_port
    }

    /// True when every setting that backends use is equal (a reload keeps the backends).
    pub fn same_backends(&self, o: &Config) -> bool {
        self.backends == o.backends
            && self.udp_firefly_port == o.udp_firefly_port
            && self.udp_firefly_to_peer == o.udp_firefly_to_peer
            && self.udp_firefly_dst == o.udp_firefly_dst
            && self.udp_firefly_ip4_src == o.udp_firefly_ip4_src
            && self.udp_firefly_ip6_src == o.udp_firefly_ip6_src
            && self.udp_firefly_netlink == o.udp_firefly_netlink
            && self.udp_firefly_ongoing_interval == o.udp_firefly_ongoing_interval
            && self.ip_discovery_enabled == o.ip_discovery_enabled
            && self.ip_discovery_stun_servers == o.ip_discovery_stun_servers
            && self.ip_discovery_interval == o.ip_discovery_interval
            && self.ip_discovery_timeout == o.ip_discovery_timeout
            && self.ip_discovery_http_urls == o.ip_discovery_http_urls
            && self.ip_discovery_map == o.ip_discovery_map
            && self.udp_firefly_netlink_interval == o.udp_firefly_netlink_interval
            && self.network_interface == o.network_interface
            && self.ebpf_map_size == o.ebpf_map_size
            && self.prometheus_srv_host == o.prometheus_srv_host
            && self.prometheus_srv_port == o.prometheus_srv_port
    }
}

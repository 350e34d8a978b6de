//! The `prometheus` backend: per-flow TCP metrics (`flow_tcp_*`) for every open flow,
//! read from the kernel's `tcp_info` at scrape time.
//!
//! Owns the per-scrape match of open flows to kernel sockets and the rendering of the
//! `flow_tcp_*` families; the flows themselves are the daemon's flow table (every flow the
//! backends have seen and that has not ended), so a flow's series vanish with its `end`
//! event and survive a config reload. Per event it does nothing.
//!
//! One scrape = one blocking sock_diag dump of the TCP sockets in connected states
//! (`sys::netlink::dump_blocking`, IPv4 and IPv6, with `INET_DIAG_INFO`), bounded by
//! [`DUMP_TIMEOUT`]. Each socket is looked up in the flow table by its 5-tuple in both
//! orientations (an announced flow may name this host as src or as dst); when both ends
//! are local (loopback) the socket whose local side is the announced src wins. This is
//! O(sockets) hash lookups; there is no `ss` process.
//!
//! Names, types, units and labels follow the Python flowd's README (which exports what
//! `ss -i` prints): times in milliseconds, rates in bits per second, names containing
//! `bytes`, `segs` or `retrans` are counters with `_total`, everything else gauges, plus
//! `flow_tcp_ca_info{…,opts="ts sack wscale:7,7"} 1`. Labels: `act`, `dst`, `exp`, `flow`
//! (`sport:dport`), `src`, as the flow was announced; `exp`/`act` are registry names,
//! or the numeric ids when the registry does not know them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::flow::{FlowKey, Proto};
use crate::flows::FlowTable;
use crate::metrics::{Desc, Kind, Metrics, BACKEND_ERRORS};
use crate::netaddr;
use crate::registry::Registry;
use crate::sys::netlink;
use crate::wire::prom;
use crate::wire::sock_diag::{Filter, TcpInfo};

/// Longest a scrape waits for the kernel's socket dump.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(2);

/// TCP states `ss` shows by default: every connected state (not LISTEN, SYN_RECV,
/// TIME_WAIT or CLOSE), see `include/net/tcp_states.h`.
const CONNECTED: u32 = (1 << 1) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);

/// Open flows matched to a kernel socket in the last scrape.
pub static MATCHED: Desc = Desc {
    name: "flowd_prometheus_flows_matched",
    help: "Open TCP flows matched to a local socket (with tcp_info) in the last scrape.",
    kind: Kind::Gauge,
    labels: &[],
};

/// Sockets in the last dump.
pub static SOCKETS: Desc = Desc {
    name: "flowd_prometheus_sockets_dumped",
    help: "TCP sockets in connected states reported by sock_diag in the last scrape.",
    kind: Kind::Gauge,
    labels: &[],
};

/// Duration of the last dump.
pub static DUMP_SECONDS: Desc = Desc {
    name: "flowd_prometheus_dump_seconds",
    help: "Time the last sock_diag dump took, in seconds.",
    kind: Kind::Gauge,
    labels: &[],
};

/// One exported `tcp_info` field.
struct Field {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    get: fn(&TcpInfo) -> Option<f64>,
}

fn ms(us: Option<u32>) -> Option<f64> {
    us.map(|v| f64::from(v) / 1000.0)
}

fn ms64(us: Option<u64>) -> Option<f64> {
    us.map(|v| v as f64 / 1000.0)
}

fn n32(v: Option<u32>) -> Option<f64> {
    v.map(f64::from)
}

fn n64(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// A rate in bytes/s as bits/s; `~0` means "no limit" and is not exported.
fn bps(v: Option<u64>) -> Option<f64> {
    v.filter(|&r| r != u64::MAX).map(|r| r as f64 * 8.0)
}

/// What `ss` prints as `send`: cwnd × mss × 8 / srtt, in bits/s.
fn send_rate(t: &TcpInfo) -> Option<f64> {
    let (cwnd, mss, rtt) = (t.snd_cwnd()?, t.snd_mss()?, t.rtt()?);
    (rtt > 0).then(|| f64::from(cwnd) * f64::from(mss) * 8.0 * 1e6 / f64::from(rtt))
}

macro_rules! g {
    ($name:literal, $help:literal, $get:expr) => {
        Field { name: $name, help: $help, kind: Kind::Gauge, get: $get }
    };
}
macro_rules! c {
    ($name:literal, $help:literal, $get:expr) => {
        Field { name: $name, help: $help, kind: Kind::Counter, get: $get }
    };
}

/// Every exported field, in the Python flowd's README order, then the other fields `ss`
/// prints.
static FIELDS: &[Field] = &[
    g!("flow_tcp_rto", "Retransmission timeout (ms).", |t| ms(t.rto())),
    g!("flow_tcp_rtt", "Smoothed round-trip time (ms).", |t| ms(t.rtt())),
    g!("flow_tcp_rtt_var", "Round-trip time variance (ms).", |t| ms(t.rttvar())),
    g!("flow_tcp_ato", "Delayed-ACK timeout (ms).", |t| ms(t.ato())),
    g!("flow_tcp_mss", "Sender maximum segment size (bytes).", |t| n32(t.snd_mss())),
    g!("flow_tcp_pmtu", "Path MTU (bytes).", |t| n32(t.pmtu())),
    g!("flow_tcp_rcvmss", "Receiver maximum segment size estimate (bytes).", |t| n32(t.rcv_mss())),
    g!("flow_tcp_advmss", "Advertised maximum segment size (bytes).", |t| n32(t.advmss())),
    g!("flow_tcp_cwnd", "Congestion window (segments).", |t| n32(t.snd_cwnd())),
    g!("flow_tcp_ssthresh", "Slow-start threshold (segments; 2147483647 = not set yet).", |t| n32(t.snd_ssthresh())),
    c!("flow_tcp_bytes_sent_total", "Bytes sent, retransmissions included.", |t| n64(t.bytes_sent())),
    c!("flow_tcp_bytes_acked_total", "Bytes sent and acknowledged.", |t| n64(t.bytes_acked())),
    c!("flow_tcp_bytes_received_total", "Bytes received.", |t| n64(t.bytes_received())),
    c!("flow_tcp_segs_out_total", "Segments sent.", |t| n32(t.segs_out())),
    c!("flow_tcp_segs_in_total", "Segments received.", |t| n32(t.segs_in())),
    c!("flow_tcp_data_segs_out_total", "Segments with data sent.", |t| n32(t.data_segs_out())),
    c!("flow_tcp_data_segs_in_total", "Segments with data received.", |t| n32(t.data_segs_in())),
    g!("flow_tcp_send", "Sending rate cwnd*mss/srtt (bits/s).", send_rate),
    g!("flow_tcp_lastsnd", "Time since the last data was sent (ms).", |t| n32(t.last_data_sent())),
    g!("flow_tcp_lastrcv", "Time since the last data was received (ms).", |t| n32(t.last_data_recv())),
    g!("flow_tcp_lastack", "Time since the last ACK was received (ms).", |t| n32(t.last_ack_recv())),
    g!("flow_tcp_pacing_rate", "Pacing rate (bits/s).", |t| bps(t.pacing_rate())),
    g!("flow_tcp_delivery_rate", "Delivery rate of the last sample (bits/s).", |t| bps(t.delivery_rate())),
    g!("flow_tcp_delivered", "Segments delivered to the peer.", |t| n32(t.delivered())),
    g!("flow_tcp_busy", "Time spent sending data (ms).", |t| ms64(t.busy_time())),
    g!("flow_tcp_rwnd_limited", "Time limited by the receive window (ms).", |t| ms64(t.rwnd_limited())),
    g!("flow_tcp_sndbuf_limited", "Time limited by the send buffer (ms).", |t| ms64(t.sndbuf_limited())),
    g!("flow_tcp_rcv_space", "Receive space estimate for buffer auto-tuning (bytes).", |t| n32(t.rcv_space())),
    g!("flow_tcp_rcv_ssthresh", "Receive window clamp (bytes).", |t| n32(t.rcv_ssthresh())),
    g!("flow_tcp_minrtt", "Minimum round-trip time seen (ms).", |t| ms(t.min_rtt())),
    g!("flow_tcp_snd_wnd", "Peer's advertised receive window (bytes).", |t| n32(t.snd_wnd())),
    g!("flow_tcp_rcv_wnd", "Receive window advertised to the peer (bytes; Linux 6.7+).", |t| n32(t.rcv_wnd())),
    g!("flow_tcp_rcv_rtt", "Receiver-side round-trip time estimate (ms).", |t| ms(t.rcv_rtt())),
    g!("flow_tcp_backoff", "Retransmission timer backoff exponent.", |t| t.backoff().map(f64::from)),
    g!("flow_tcp_unacked", "Segments sent and not yet acknowledged.", |t| n32(t.unacked())),
    g!("flow_tcp_sacked", "Segments selectively acknowledged.", |t| n32(t.sacked())),
    g!("flow_tcp_lost", "Segments considered lost.", |t| n32(t.lost())),
    g!("flow_tcp_reordering", "Reordering metric (segments).", |t| n32(t.reordering())),
    g!("flow_tcp_reord_seen", "Reordering events seen.", |t| n32(t.reord_seen())),
    g!("flow_tcp_dsack_dups", "Duplicate segments reported by D-SACK.", |t| n32(t.dsack_dups())),
    g!("flow_tcp_notsent", "Bytes queued and not yet sent.", |t| n32(t.notsent_bytes())),
    g!("flow_tcp_rcv_ooopack", "Out-of-order packets received.", |t| n32(t.rcv_ooopack())),
    c!("flow_tcp_retrans_total", "Segments retransmitted over the connection's life.", |t| n32(t.total_retrans())),
    c!("flow_tcp_bytes_retrans_total", "Bytes retransmitted.", |t| n64(t.bytes_retrans())),
];

/// The `opts` label of `flow_tcp_ca_info`, in `ss` order: `ts sack ecn ecnseen fastopen
/// wscale:S,R`.
fn opts(t: &TcpInfo) -> String {
    let o = t.options().unwrap_or(0);
    let mut v: Vec<String> = [(1, "ts"), (2, "sack"), (8, "ecn"), (16, "ecnseen"), (32, "fastopen")]
        .iter()
        .filter(|(bit, _)| o & bit != 0)
        .map(|(_, name)| (*name).to_string())
        .collect();
    if o & 4 != 0 {
        if let (Some(s), Some(r)) = (t.snd_wscale(), t.rcv_wscale()) {
            v.push(format!("wscale:{s},{r}"));
        }
    }
    v.join(" ")
}

/// A flow key as the flow table holds it: plain addresses, no IPv6 scope or flow info.
fn plain(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(netaddr::canonical(a.ip()), a.port())
}

/// The prometheus backend.
#[derive(Debug, Default)]
pub struct FlowMetrics {
    /// Matches of the last scrape: announced key → (tcp_info, local side is the announced src).
    matched: HashMap<FlowKey, (TcpInfo, bool)>,
}

impl FlowMetrics {
    /// A backend with nothing matched yet.
    pub fn new() -> FlowMetrics {
        FlowMetrics::default()
    }

    /// Declares the backend's own health families.
    pub fn declare(metrics: &mut Metrics) {
        for d in [&MATCHED, &SOCKETS, &DUMP_SECONDS] {
            metrics.declare(d);
        }
    }

    /// Dumps the kernel's TCP sockets once and matches them to the open flows.
    pub fn scrape(&mut self, flows: &FlowTable, metrics: &mut Metrics) {
        self.matched.clear();
        if flows.is_empty() {
            metrics.set(&MATCHED, Vec::new(), 0.0);
            return;
        }
        let t0 = Instant::now();
        let conns = match netlink::dump_blocking(Filter { states: CONNECTED, info: true }, DUMP_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                metrics.inc(&BACKEND_ERRORS, &["prometheus", "sock_diag"]);
                log::warn!("prometheus: cannot read tcp_info: {e}");
                return;
            }
        };
        metrics.set(&DUMP_SECONDS, Vec::new(), t0.elapsed().as_secs_f64());
        metrics.set(&SOCKETS, Vec::new(), conns.len() as f64);
        self.matched.reserve(flows.len().min(conns.len()));
        for c in &conns {
            let Some(info) = c.tcp_info else { continue };
            let (local, remote) = (plain(c.src), plain(c.dst));
            let key = FlowKey { proto: Proto::Tcp, src: local, dst: remote };
            if flows.get(&key).is_some() {
                self.matched.insert(key, (info, true));
            } else {
                let rev = key.reversed();
                if flows.get(&rev).is_some() {
                    // Keep an exact match found earlier (both ends local).
                    self.matched.entry(rev).or_insert((info, false));
                }
            }
        }
        metrics.set(&MATCHED, Vec::new(), self.matched.len() as f64);
    }

    /// Appends the `flow_tcp_*` families for the flows matched by the last [`scrape`]
    /// that are still open, then forgets the matches.
    ///
    /// [`scrape`]: FlowMetrics::scrape
    pub fn write(&mut self, flows: &FlowTable, registry: &Registry, out: &mut Vec<u8>) {
        let mut rows: Vec<(&FlowKey, &TcpInfo, Vec<u8>)> = Vec::with_capacity(self.matched.len());
        for (key, (info, _)) in &self.matched {
            let Some(f) = flows.get(key) else { continue };
            rows.push((key, info, label_block(key, f.exp, f.act, registry)));
        }
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.reserve(rows.len() * FIELDS.len() * (rows.first().map_or(0, |r| r.2.len()) + 40));
        for field in FIELDS {
            prom::write_header(out, field.name, field.help, field.kind);
            for (_, info, labels) in &rows {
                if let Some(v) = (field.get)(info) {
                    prom::write_sample(out, field.name, labels, v);
                }
            }
        }
        prom::write_header(out, "flow_tcp_ca_info", "TCP options in use (value always 1).", Kind::Gauge);
        let mut labels = Vec::with_capacity(256);
        for (_, info, block) in &rows {
            labels.clear();
            // Same labels plus opts (kept in alphabetical order: act dst exp flow opts src).
            let cut = block.windows(6).position(|w| w == b",src=\"").unwrap_or(block.len().saturating_sub(1));
            labels.extend_from_slice(&block[..cut]);
            labels.extend_from_slice(b",opts=\"");
            prom::write_label_value(&mut labels, &opts(info));
            labels.push(b'"');
            labels.extend_from_slice(&block[cut..]);
            prom::write_sample(out, "flow_tcp_ca_info", &labels, 1.0);
        }
        self.matched.clear();
    }
}

/// `{act="…",dst="…",exp="…",flow="sport:dport",src="…"}` for one flow.
fn label_block(key: &FlowKey, exp: u32, act: u32, registry: &Registry) -> Vec<u8> {
    let (e, a) = registry.names(exp, act);
    let (e, a) = (e.map_or_else(|| exp.to_string(), str::to_string), a.map_or_else(|| act.to_string(), str::to_string));
    let ip = |a: IpAddr| a.to_string();
    let flow = format!("{}:{}", key.src.port(), key.dst.port());
    let mut b = Vec::with_capacity(96);
    prom::write_labels(&mut b, &["act", "dst", "exp", "flow", "src"], &[a, ip(key.dst.ip()), e, flow, ip(key.src.ip())]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{FlowEvent, FlowState, Micros};

    fn info(rtt_us: u32, bytes_sent: u64) -> TcpInfo {
        let mut raw = [0u8; 232];
        raw[0] = 1;
        raw[5] = 1 | 2 | 4;
        raw[6] = 7 | (9 << 4);
        raw[68..72].copy_from_slice(&rtt_us.to_ne_bytes());
        raw[16..20].copy_from_slice(&1000u32.to_ne_bytes());
        raw[80..84].copy_from_slice(&10u32.to_ne_bytes());
        raw[104..112].copy_from_slice(&u64::MAX.to_ne_bytes());
        raw[200..208].copy_from_slice(&bytes_sent.to_ne_bytes());
        TcpInfo::from_bytes(&raw)
    }

    fn table(keys: &[(FlowKey, u32, u32)]) -> FlowTable {
        let mut t = FlowTable::new(100);
        let mut m = Metrics::new();
        for (k, e, a) in keys {
            t.track(&mut FlowEvent::new(FlowState::Start, *k, *e, *a, Micros(1)), &mut m);
        }
        t
    }

    #[test]
    fn test_flow_families_labels_types_and_units() {
        let k = FlowKey::new(Proto::Tcp, "192.0.2.1:1094".parse().unwrap(), "198.51.100.2:40000".parse().unwrap()).unwrap();
        let k2 = FlowKey::new(Proto::Tcp, "[2001:db8::1]:1".parse().unwrap(), "[2001:db8::2]:2".parse().unwrap()).unwrap();
        let flows = table(&[(k, 2, 9), (k2, 999, 7)]);
        let mut p = FlowMetrics::new();
        p.matched.insert(k, (info(361, 1_612_210_340), true));
        p.matched.insert(k2, (info(1500, 5), false));
        let mut out = Vec::new();
        p.write(&flows, &Registry::bundled(), &mut out);
        let page = String::from_utf8(out).unwrap();
        let l1 = r#"{act="Debug",dst="198.51.100.2",exp="atlas",flow="1094:40000",src="192.0.2.1"}"#;
        let l2 = r#"{act="7",dst="2001:db8::2",exp="999",flow="1:2",src="2001:db8::1"}"#;
        assert!(page.contains(&format!("flow_tcp_rtt{l1} 0.361\n")), "{page}");
        assert!(page.contains(&format!("flow_tcp_rtt{l2} 1.5\n")), "{page}");
        assert!(page.contains(&format!("flow_tcp_bytes_sent_total{l1} 1612210340\n")));
        assert!(page.contains("# TYPE flow_tcp_bytes_sent_total counter\nflow_tcp_bytes_sent_total{"), "{page}");
        assert!(page.contains("# TYPE flow_tcp_cwnd gauge\n"));
        assert!(page.contains(&format!("flow_tcp_send{l1} 221606648.199446")), "{page}");
        assert!(!page.contains("flow_tcp_pacing_rate{"), "unlimited pacing is not exported");
        assert!(page.contains(r#"flow_tcp_ca_info{act="Debug",dst="198.51.100.2",exp="atlas",flow="1094:40000",opts="ts sack wscale:7,9",src="192.0.2.1"} 1"#), "{page}");
        for f in FIELDS {
            assert_eq!(f.kind == Kind::Counter, f.name.ends_with("_total"), "{}", f.name);
            assert_eq!(page.matches(&format!("# TYPE {} ", f.name)).count(), 1);
        }
        assert!(p.matched.is_empty());
    }

    #[test]
    fn test_ended_flows_are_not_written() {
        let k = FlowKey::new(Proto::Tcp, "192.0.2.1:1".parse().unwrap(), "192.0.2.2:2".parse().unwrap()).unwrap();
        let flows = table(&[]);
        let mut p = FlowMetrics::new();
        p.matched.insert(k, (info(1, 1), true));
        let mut out = Vec::new();
        p.write(&flows, &Registry::bundled(), &mut out);
        assert!(!String::from_utf8(out).unwrap().contains("flow=\""));
    }
}

//! The `prometheus` backend: per-flow TCP metrics (`flow_tcp_*`) for every open flow,
//! read from the kernel's `tcp_info` at scrape time.
//!
//! Owns the per-scrape match of open flows to kernel sockets and the rendering of the
//! `flow_tcp_*` families; the flows themselves are the daemon's flow table (every flow the
//! backends have seen and that has not ended), so a flow's series vanish with its `end`
//! event and survive a config reload. Per event it does nothing.
//!
//! One scrape = one sock_diag dump of the TCP sockets in connected states (with
//! `INET_DIAG_INFO`) through the daemon's one dump machine, `enrich::dump`, driven by its
//! blocking driver (a scrape must return a complete page) and bounded by [`DUMP_TIMEOUT`];
//! the socket is opened at the first scrape and reused. A family whose sockets cannot
//! matter is not dumped (see [`FlowMetrics::scrape`]). Each socket is looked up in the
//! flow table by its 5-tuple in both orientations as its reply is parsed (the [`Sink`] of
//! the dump: an announced flow may name this host as src or as dst); when both ends are
//! local (loopback) the socket whose local side is the announced src wins. This is
//! O(sockets) hash lookups; there is no `ss` process.
//!
//! A scrape of 10,000 flows writes 450,000 samples (46 MB), so the page is written family
//! by family from label blocks built once per flow, into the parts of a reused
//! [`Page`]; see [`FlowMetrics::write`].
//!
//! Names, types, units and labels follow the Python flowd's README (which exports what
//! `ss -i` prints): times in milliseconds, rates in bits per second, names containing
//! `bytes`, `segs` or `retrans` are counters with `_total`, everything else gauges, plus
//! `flow_tcp_ca_info{…,opts="ts sack wscale:7,7"} 1`. Labels: `act`, `dst`, `exp`, `flow`
//! (`sport:dport`), `src`, as the flow was announced; `exp`/`act` are registry names,
//! or the numeric ids when the registry does not know them.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::enrich::dump::{Dump, Sink};
use crate::flow::{FlowKey, Proto};
use crate::flow_table::FlowTable;
use crate::metrics::{Desc, Kind, Metrics, BACKEND_ERRORS};
use crate::netaddr;
use crate::registry::ScitagsRegistry;
use crate::wire::buf::append;
use crate::wire::prom::{self, Page, Value};
use crate::wire::sock_diag::{ext, Conn, ConnExt, Family, Filter, TcpInfo};

/// Longest a scrape waits for the kernel's socket dump.
pub(crate) const DUMP_TIMEOUT: Duration = Duration::from_secs(2);

/// TCP states `ss` shows by default: every connected state (not LISTEN, SYN_RECV,
/// TIME_WAIT or CLOSE), see `include/net/tcp_states.h`.
const CONNECTED: u32 = (1 << 1) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);

/// What a scrape dumps: sockets in those states, with their tcp_info, socket memory,
/// congestion-control name and BBR state (what `ss -tinm` shows), in the same dump.
pub(crate) const FILTER: Filter = Filter { states: CONNECTED, info: true, ext: ext::SKMEMINFO | ext::CONG | ext::CC_INFO };

/// Open flows matched to a kernel socket in the last scrape.
pub(crate) static MATCHED: Desc = Desc {
    name: "flowd_prometheus_flows_matched",
    help: "Open TCP flows matched to a local socket (with tcp_info) in the last scrape.",
    kind: Kind::Gauge,
    labels: &[],
};

/// Sockets in the last dump.
pub(crate) static SOCKETS: Desc = Desc {
    name: "flowd_prometheus_sockets_dumped",
    help: "TCP sockets in connected states reported by sock_diag in the last scrape.",
    kind: Kind::Gauge,
    labels: &[],
};

/// Duration of the last dump.
pub(crate) static DUMP_SECONDS: Desc =
    Desc { name: "flowd_prometheus_dump_seconds", help: "Time the last sock_diag dump took, in seconds.", kind: Kind::Gauge, labels: &[] };

/// One exported `tcp_info` field.
struct Field {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    get: fn(&TcpInfo) -> Option<Value>,
}

#[inline(always)]
fn ms(us: Option<u32>) -> Option<Value> {
    us.map(|v| Value::Millis(u64::from(v)))
}

#[inline(always)]
fn ms64(us: Option<u64>) -> Option<Value> {
    us.map(Value::Millis)
}

#[inline(always)]
fn n32(v: Option<u32>) -> Option<Value> {
    v.map(|v| Value::Int(u64::from(v)))
}

#[inline(always)]
fn n64(v: Option<u64>) -> Option<Value> {
    v.map(Value::Int)
}

/// A rate in bytes/s as bits/s; `~0` means "no limit" and is not exported.
fn bps(v: Option<u64>) -> Option<Value> {
    let r = v.filter(|&r| r != u64::MAX)?;
    Some(r.checked_mul(8).map_or(Value::Float(r as f64 * 8.0), Value::Int))
}

/// What `ss` prints as `send`: cwnd × mss × 8 / srtt, in whole bits/s (`ss` itself
/// prints three significant digits).
fn send_rate(t: &TcpInfo) -> Option<Value> {
    let (cwnd, mss, rtt) = (t.snd_cwnd()?, t.snd_mss()?, t.rtt()?);
    let bits = u128::from(cwnd) * u128::from(mss) * 8_000_000 / u128::from(rtt.max(1));
    (rtt > 0).then(|| Value::Int(u64::try_from(bits).unwrap_or(u64::MAX)))
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
    g!("flow_tcp_backoff", "Retransmission timer backoff exponent.", |t| t.backoff().map(|b| Value::Int(u64::from(b)))),
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

/// One exported extension field (socket memory, BBR state).
struct ExtField {
    name: &'static str,
    help: &'static str,
    get: fn(&ConnExt) -> Option<Value>,
}

macro_rules! x {
    ($name:literal, $help:literal, $get:expr) => {
        ExtField { name: $name, help: $help, get: $get }
    };
}

/// A BBR gain as the ratio `ss` prints; absent when zero, as `ss` leaves it out then.
fn gain(g: u32) -> Option<Value> {
    (g != 0).then(|| Value::Float(f64::from(g) / 256.0))
}

/// The Python flowd's `skmem_*` and `bbr_*` families (it parsed `ss -tinm`): all gauges,
/// with its names (`wmem_allow` is its spelling of `ss`'s `t`).
static EXT_FIELDS: &[ExtField] = &[
    x!("flow_tcp_skmem_rmem_alloc", "Receive queue memory in use, skmem r (bytes).", |e| n32(e.skmem?.rmem_alloc())),
    x!("flow_tcp_skmem_rcv_buf", "Receive buffer size, skmem rb (bytes).", |e| n32(e.skmem?.rcvbuf())),
    x!("flow_tcp_skmem_wmem_allow", "Send memory in flight below the socket, skmem t (bytes).", |e| n32(e.skmem?.wmem_alloc())),
    x!("flow_tcp_skmem_snd_buf", "Send buffer size, skmem tb (bytes).", |e| n32(e.skmem?.sndbuf())),
    x!("flow_tcp_skmem_fwd_alloc", "Memory reserved and not yet used, skmem f (bytes).", |e| n32(e.skmem?.fwd_alloc())),
    x!("flow_tcp_skmem_wmem_queued", "Send queue memory, skmem w (bytes).", |e| n32(e.skmem?.wmem_queued())),
    x!("flow_tcp_skmem_opt_mem", "Option memory, skmem o (bytes).", |e| n32(e.skmem?.optmem())),
    x!("flow_tcp_skmem_back_log", "Backlog queue memory, skmem bl (bytes).", |e| n32(e.skmem?.backlog())),
    x!("flow_tcp_skmem_sock_drop", "Packets dropped before reaching the socket, skmem d.", |e| n32(e.skmem?.drops())),
    x!("flow_tcp_bbr_bw", "BBR bandwidth estimate (bits/s).", |e| e.bbr.map(|b| Value::Int(b.bw().saturating_mul(8)))),
    x!("flow_tcp_bbr_mrtt", "BBR minimum round-trip time (ms).", |e| e.bbr.map(|b| Value::Millis(u64::from(b.min_rtt)))),
    x!("flow_tcp_bbr_pacing_gain", "BBR pacing gain (ratio).", |e| gain(e.bbr?.pacing_gain)),
    x!("flow_tcp_bbr_cwnd_gain", "BBR congestion window gain (ratio).", |e| gain(e.bbr?.cwnd_gain)),
];

/// The family carrying the TCP options as a label.
const CA_INFO: &str = "flow_tcp_ca_info";

/// Appends the `opts` label value of `flow_tcp_ca_info`, in `ss` order (as the Python
/// flowd collected it from `ss -i`): `ts sack ecn ecnseen fastopen CONG wscale:S,R`,
/// where CONG is the congestion-control algorithm's name.
fn write_opts(out: &mut Vec<u8>, t: &TcpInfo, cong: Option<&str>) {
    let o = t.options().unwrap_or(0);
    let start = out.len();
    let word = |out: &mut Vec<u8>, w: &[u8]| {
        if out.len() > start {
            out.push(b' ');
        }
        out.extend_from_slice(w);
    };
    for (bit, name) in [(1, "ts"), (2, "sack"), (8, "ecn"), (16, "ecnseen"), (32, "fastopen")] {
        if o & bit != 0 {
            word(out, name.as_bytes());
        }
    }
    if let Some(c) = cong {
        // A kernel module name (`[a-z0-9_]`, checked by `CongName`): safe as a label value.
        word(out, c.as_bytes());
    }
    if o & 4 != 0 {
        if let (Some(s), Some(r)) = (t.snd_wscale(), t.rcv_wscale()) {
            word(out, b"wscale:");
            prom::write_u64(out, u64::from(s));
            out.push(b',');
            prom::write_u64(out, u64::from(r));
        }
    }
}

/// A flow key as the flow table holds it: plain addresses, no IPv6 scope or flow info.
fn plain(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(netaddr::canonical(a.ip()), a.port())
}

/// A flow matched to a kernel socket in the last scrape.
#[derive(Debug, Clone, Copy)]
struct Matched {
    info: TcpInfo,
    ext: ConnExt,
    exp: u32,
    act: u32,
}

/// Matches of a scrape in dump order: announced key, whether the socket's local side is
/// the announced src, the match. A loopback flow has two entries (one per end);
/// [`FlowMetrics::rows`] keeps one.
type Matches = Vec<(FlowKey, bool, Matched)>;

/// The prometheus backend.
#[derive(Debug, Default)]
pub struct FlowMetrics {
    /// Matches of the last scrape.
    matched: Matches,
    /// The scrape's sock_diag dump (opened at the first scrape, then reused).
    dump: Option<Dump>,
}

/// One scrape's side of the dump: each socket is matched as its reply is parsed, and a
/// family is dumped only when its sockets can still change the page.
pub(crate) struct Scrape<'a> {
    matched: &'a mut Matches,
    flows: &'a FlowTable,
    v4_flows: usize,
    v6_flows: usize,
    /// Flows matched by the socket whose local side is the announced src: a flow has at
    /// most one, and once every IPv4 flow has it, no IPv6 socket can change the page.
    exact: usize,
}

impl Sink for Scrape<'_> {
    fn wants(&mut self, family: Family) -> bool {
        match family {
            Family::V4 => self.v4_flows > 0,
            Family::V6 => self.v6_flows > 0 || self.exact < self.v4_flows,
        }
    }

    fn conn(&mut self, c: Conn) {
        if match_into(self.matched, self.flows, &c) == Some(true) {
            self.exact += 1;
        }
    }
}

/// Matches one kernel socket to the open flow it belongs to, if any: the flow announced
/// with this socket's local side as src (`Some(true)`), else the one announced the other
/// way round (`Some(false)`).
fn match_into(matched: &mut Matches, flows: &FlowTable, c: &Conn) -> Option<bool> {
    let info = c.tcp_info?;
    let key = FlowKey { proto: Proto::Tcp, src: plain(c.src), dst: plain(c.dst) };
    if let Some(f) = flows.get(&key) {
        matched.push((key, true, Matched { info, ext: c.ext, exp: f.exp, act: f.act }));
        return Some(true);
    }
    let rev = key.reversed();
    let f = flows.get(&rev)?;
    matched.push((rev, false, Matched { info, ext: c.ext, exp: f.exp, act: f.act }));
    Some(false)
}

impl FlowMetrics {
    /// A backend with nothing matched yet.
    pub fn new() -> FlowMetrics {
        FlowMetrics::default()
    }

    /// Declares the backend's own health families.
    pub(crate) fn declare(metrics: &mut Metrics) {
        for d in [&MATCHED, &SOCKETS, &DUMP_SECONDS] {
            metrics.declare(d);
        }
    }

    /// Dumps the kernel's TCP sockets once and matches them to the open flows.
    ///
    /// IPv4 sockets are dumped only when IPv4 flows are open; IPv6 sockets (which include
    /// IPv4 connections on dual-stack sockets) only when IPv6 flows are open or some IPv4
    /// flow has not been matched by its own socket (local side = announced src): each
    /// family's dump walks the kernel's whole connection hash table.
    pub(crate) fn scrape(&mut self, flows: &FlowTable, metrics: &mut Metrics) {
        self.matched.clear();
        if flows.is_empty() {
            metrics.set(&MATCHED, Vec::new(), 0.0);
            return;
        }
        let t0 = Instant::now();
        let mut dump = match self.dump.take().map_or_else(Dump::open, Ok) {
            Ok(d) => d,
            Err(e) => {
                metrics.inc(&BACKEND_ERRORS, &["prometheus", "sock_diag"]);
                log::warn!("prometheus: cannot read tcp_info: cannot open a sock_diag socket: {e}");
                return;
            }
        };
        let dumped = dump.run_blocking(FILTER, DUMP_TIMEOUT, &mut self.sink(flows));
        self.dump = Some(dump);
        let sockets = match dumped {
            Ok(n) => n,
            Err(e) => {
                self.matched.clear();
                metrics.inc(&BACKEND_ERRORS, &["prometheus", "sock_diag"]);
                log::warn!("prometheus: cannot read tcp_info: {e}");
                return;
            }
        };
        metrics.set(&DUMP_SECONDS, Vec::new(), t0.elapsed().as_secs_f64());
        metrics.set(&SOCKETS, Vec::new(), sockets as f64);
        metrics.set(&MATCHED, Vec::new(), self.rows().len() as f64);
    }

    /// This scrape's side of the dump (the matches replace those of the last scrape).
    pub(crate) fn sink<'a>(&'a mut self, flows: &'a FlowTable) -> Scrape<'a> {
        let v6_flows = flows.iter().filter(|(k, _)| k.is_ipv6()).count();
        self.matched.clear();
        self.matched.reserve(flows.len());
        Scrape { matched: &mut self.matched, flows, v4_flows: flows.len() - v6_flows, v6_flows, exact: 0 }
    }

    /// Matches one kernel socket to the open flow it belongs to, if any: the flow announced
    /// with this socket's local side as src (`Some(true)`), else the one announced the other
    /// way round (`Some(false)`). What the scrape's dump does for each socket.
    pub fn match_conn(&mut self, flows: &FlowTable, c: &Conn) -> Option<bool> {
        match_into(&mut self.matched, flows, c)
    }

    /// The matches in key order, one per flow: when both ends of a flow are local
    /// (loopback), the socket whose local side is the announced src wins.
    fn rows(&self) -> Vec<(&FlowKey, &Matched)> {
        let mut order: Vec<(&FlowKey, bool, &Matched)> = self.matched.iter().map(|(k, exact, m)| (k, *exact, m)).collect();
        order.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
        order.dedup_by(|later, first| later.0 == first.0);
        order.into_iter().map(|(k, _, m)| (k, m)).collect()
    }

    /// Adds the `flow_tcp_*` families for the flows matched by the last [`scrape`] that
    /// are still open to the page (one part per family, flows in key order), then forgets
    /// the matches.
    ///
    /// The label blocks are built once per flow; then each family is written in one pass
    /// over the flows, so only one output buffer is being filled at a time (writing 46
    /// buffers in turn, flow by flow, is more than twice as slow).
    ///
    /// [`scrape`]: FlowMetrics::scrape
    pub fn write(&mut self, registry: &ScitagsRegistry, page: &mut Page) {
        // Scrape and write run back to back in one loop turn, so every match is still open.
        let rows = self.rows();
        // Every row's label block, and where `,src=` starts in it (for `opts`).
        let mut labels = Vec::with_capacity(rows.len() * 96);
        let mut spans = Vec::with_capacity(rows.len());
        for (key, m) in &rows {
            let start = labels.len();
            let src_at = write_label_block(&mut labels, key, m.exp, m.act, registry);
            spans.push((start, src_at, labels.len()));
        }
        let Some((ca_info, families)) = page.add_parts(FIELDS.len() + EXT_FIELDS.len() + 1).split_last_mut() else { return };
        let (tcp, exts) = families.split_at_mut(FIELDS.len());
        for (out, field) in tcp.iter_mut().zip(FIELDS) {
            out.reserve(labels.len() + rows.len() * (field.name.len() + 14) + 256);
            prom::write_header(out, field.name, field.help, field.kind);
            for ((_, m), &(start, _, end)) in rows.iter().zip(&spans) {
                if let Some(v) = (field.get)(&m.info) {
                    prom::write_sample_value(out, field.name, &labels[start..end], v);
                }
            }
        }
        for (out, field) in exts.iter_mut().zip(EXT_FIELDS) {
            out.reserve(labels.len() + rows.len() * (field.name.len() + 14) + 256);
            prom::write_header(out, field.name, field.help, Kind::Gauge);
            for ((_, m), &(start, _, end)) in rows.iter().zip(&spans) {
                if let Some(v) = (field.get)(&m.ext) {
                    prom::write_sample_value(out, field.name, &labels[start..end], v);
                }
            }
        }
        ca_info.reserve(labels.len() + rows.len() * (CA_INFO.len() + 40) + 256);
        prom::write_header(ca_info, CA_INFO, "TCP options in use (value always 1).", Kind::Gauge);
        let mut with_opts = Vec::with_capacity(256);
        for ((_, m), &(start, src_at, end)) in rows.iter().zip(&spans) {
            // Same labels plus opts, kept in alphabetical order: act dst exp flow opts src.
            with_opts.clear();
            append(&mut with_opts, &labels[start..src_at]);
            append(&mut with_opts, b",opts=\"");
            write_opts(&mut with_opts, &m.info, m.ext.cong.as_ref().map(|c| c.as_str()));
            with_opts.push(b'"');
            append(&mut with_opts, &labels[src_at..end]);
            prom::write_sample_value(ca_info, CA_INFO, &with_opts, Value::Int(1));
        }
        self.matched.clear();
    }
}

/// Appends `{act="…",dst="…",exp="…",flow="sport:dport",src="…"}` for one flow and
/// returns the offset in `out` of its `,src=` (where `flow_tcp_ca_info` inserts `opts`).
fn write_label_block(out: &mut Vec<u8>, key: &FlowKey, exp: u32, act: u32, registry: &ScitagsRegistry) -> usize {
    let (e, a) = registry.names(exp, act);
    let name_or_id = |out: &mut Vec<u8>, name: Option<&str>, id: u32| match name {
        Some(n) => prom::write_label_value(out, n),
        None => prom::write_u64(out, u64::from(id)),
    };
    append(out, b"{act=\"");
    name_or_id(out, a, act);
    append(out, b"\",dst=\"");
    write_ip(out, key.dst.ip());
    append(out, b"\",exp=\"");
    name_or_id(out, e, exp);
    append(out, b"\",flow=\"");
    prom::write_u64(out, u64::from(key.src.port()));
    out.push(b':');
    prom::write_u64(out, u64::from(key.dst.port()));
    out.push(b'"');
    let src_at = out.len();
    append(out, b",src=\"");
    write_ip(out, key.src.ip());
    append(out, b"\"}");
    src_at
}

/// Appends an address as `Display` writes it; IPv4 without the formatting machinery.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                prom::write_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
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

    fn conn(src: &str, dst: &str, rtt_us: u32) -> Conn {
        Conn { src: src.parse().unwrap(), dst: dst.parse().unwrap(), state: 1, inode: 1, uid: 0, tcp_info: Some(info(rtt_us, 1)), ext: Default::default() }
    }

    #[test]
    fn test_flow_families_labels_types_and_units() {
        let k = FlowKey::new(Proto::Tcp, "192.0.2.1:1094".parse().unwrap(), "198.51.100.2:40000".parse().unwrap()).unwrap();
        let k2 = FlowKey::new(Proto::Tcp, "[2001:db8::1]:1".parse().unwrap(), "[2001:db8::2]:2".parse().unwrap()).unwrap();
        let mut p = FlowMetrics::new();
        p.matched.push((k2, false, Matched { info: info(1500, 5), ext: ConnExt::default(), exp: 999, act: 7 }));
        p.matched.push((k, true, Matched { info: info(361, 1_612_210_340), ext: ConnExt::default(), exp: 2, act: 9 }));
        let mut out = Page::new();
        p.write(&ScitagsRegistry::bundled(), &mut out);
        assert_eq!(out.parts().len(), FIELDS.len() + EXT_FIELDS.len() + 1, "one part per family");
        let page = String::from_utf8(out.to_vec()).unwrap();
        let l1 = r#"{act="Debug",dst="198.51.100.2",exp="atlas",flow="1094:40000",src="192.0.2.1"}"#;
        let l2 = r#"{act="7",dst="2001:db8::2",exp="999",flow="1:2",src="2001:db8::1"}"#;
        assert!(page.contains(&format!("flow_tcp_rtt{l1} 0.361\n")), "{page}");
        assert!(page.contains(&format!("flow_tcp_rtt{l2} 1.5\n")), "{page}");
        assert!(page.contains(&format!("flow_tcp_bytes_sent_total{l1} 1612210340\n")));
        assert!(page.contains("# TYPE flow_tcp_bytes_sent_total counter\nflow_tcp_bytes_sent_total{"), "{page}");
        assert!(page.contains("# TYPE flow_tcp_cwnd gauge\n"));
        assert!(page.contains(&format!("flow_tcp_send{l1} 221606648\n")), "{page}");
        assert!(!page.contains("flow_tcp_pacing_rate{"), "unlimited pacing is not exported");
        assert!(
            page.contains(r#"flow_tcp_ca_info{act="Debug",dst="198.51.100.2",exp="atlas",flow="1094:40000",opts="ts sack wscale:7,9",src="192.0.2.1"} 1"#),
            "{page}"
        );
        assert!(page.find(l1).unwrap() < page.find(l2).unwrap(), "flows in key order");
        for f in FIELDS {
            assert_eq!(f.kind == Kind::Counter, f.name.ends_with("_total"), "{}", f.name);
            assert_eq!(page.matches(&format!("# TYPE {} ", f.name)).count(), 1);
            // Both flows or neither (a field beyond this 232-byte tcp_info, or unlimited pacing).
            assert!([0, 2].contains(&page.matches(&format!("\n{}{{", f.name)).count()), "{}", f.name);
        }
        assert!(p.matched.is_empty());
    }

    /// The Python flowd's skmem_*, bbr_* families and the congestion-control name in
    /// `flow_tcp_ca_info{opts}`, from the dump's extension attributes.
    #[test]
    fn test_socket_memory_bbr_and_congestion_name_families() {
        use crate::wire::sock_diag::{BbrInfo, CongName, SkMemInfo};
        let k = FlowKey::new(Proto::Tcp, "192.0.2.1:1094".parse().unwrap(), "198.51.100.2:40000".parse().unwrap()).unwrap();
        let k2 = FlowKey::new(Proto::Tcp, "192.0.2.1:1095".parse().unwrap(), "198.51.100.2:40001".parse().unwrap()).unwrap();
        let skmem = SkMemInfo::from_bytes(&[3832u32, 131_072, 0, 87_040, 264, 0, 0, 0, 2].iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>());
        let bbr = BbrInfo { bw_lo: 211_697_331, bw_hi: 3, min_rtt: 5, pacing_gain: 320, cwnd_gain: 512 };
        let with_bbr = ConnExt { skmem: Some(skmem), cong: CongName::from_bytes(b"bbr\0"), bbr: Some(bbr) };
        let cubic = ConnExt { skmem: Some(skmem), cong: CongName::from_bytes(b"cubic\0"), bbr: None };
        let mut p = FlowMetrics::new();
        p.matched.push((k, true, Matched { info: info(361, 1), ext: with_bbr, exp: 2, act: 9 }));
        p.matched.push((k2, true, Matched { info: info(361, 1), ext: cubic, exp: 2, act: 9 }));
        let mut out = Page::new();
        p.write(&ScitagsRegistry::bundled(), &mut out);
        let page = String::from_utf8(out.to_vec()).unwrap();
        let l1 = r#"{act="Debug",dst="198.51.100.2",exp="atlas",flow="1094:40000",src="192.0.2.1"}"#;
        let l2 = r#"{act="Debug",dst="198.51.100.2",exp="atlas",flow="1095:40001",src="192.0.2.1"}"#;
        for line in [
            format!("flow_tcp_skmem_rmem_alloc{l1} 3832\n"),
            format!("flow_tcp_skmem_rcv_buf{l1} 131072\n"),
            format!("flow_tcp_skmem_snd_buf{l2} 87040\n"),
            format!("flow_tcp_skmem_fwd_alloc{l1} 264\n"),
            format!("flow_tcp_skmem_sock_drop{l1} 2\n"),
            format!("flow_tcp_bbr_bw{l1} 104772793752\n"),
            format!("flow_tcp_bbr_mrtt{l1} 0.005\n"),
            format!("flow_tcp_bbr_pacing_gain{l1} 1.25\n"),
            format!("flow_tcp_bbr_cwnd_gain{l1} 2\n"),
        ] {
            assert!(page.contains(&line), "{line:?} not in\n{page}");
        }
        assert!(!page.contains(&format!("flow_tcp_bbr_bw{l2}")), "cubic has no bbr series");
        for f in EXT_FIELDS {
            assert!(page.contains(&format!("# TYPE {} gauge\n", f.name)), "{}", f.name);
        }
        assert!(page.contains(r#"opts="ts sack bbr wscale:7,9",src="192.0.2.1"} 1"#), "{page}");
        assert!(page.contains(r#"flow="1095:40001",opts="ts sack cubic wscale:7,9""#), "{page}");
    }

    #[test]
    fn test_addresses_are_written_as_display_writes_them() {
        for a in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "::", "::1", "2001:db8::2", "::ffff:192.0.2.1", "fe80::1:2:3:4"] {
            let ip: IpAddr = a.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn test_sockets_match_flows_in_either_orientation_exact_first() {
        let key = |s: &str, d: &str| FlowKey::new(Proto::Tcp, s.parse().unwrap(), d.parse().unwrap()).unwrap();
        // Announced from this host's side, announced from the peer's side, and a loopback
        // flow whose two sockets are both local.
        let out = key("192.0.2.1:1094", "198.51.100.2:40000");
        let inbound = key("198.51.100.3:50000", "192.0.2.1:1094");
        let lo = key("127.0.0.1:40001", "127.0.0.1:1094");
        let flows = table(&[(out, 2, 9), (inbound, 3, 1), (lo, 3, 14)]);
        let mut p = FlowMetrics::new();
        for c in [
            conn("192.0.2.1:1094", "198.51.100.2:40000", 10),
            conn("192.0.2.1:1094", "198.51.100.3:50000", 20),
            conn("127.0.0.1:1094", "127.0.0.1:40001", 30),
            conn("127.0.0.1:40001", "127.0.0.1:1094", 40),
            conn("[::ffff:192.0.2.1]:1094", "[::ffff:198.51.100.9]:1", 50),
            Conn { tcp_info: None, ..conn("192.0.2.1:1094", "198.51.100.2:40000", 60) },
        ] {
            p.match_conn(&flows, &c);
        }
        let rtt = |p: &FlowMetrics, k: &FlowKey| p.rows().into_iter().find(|r| r.0 == k).map(|(_, m)| (m.info.rtt().unwrap(), m.exp, m.act));
        assert_eq!(rtt(&p, &out), Some((10, 2, 9)));
        assert_eq!(rtt(&p, &inbound), Some((20, 3, 1)));
        assert_eq!(rtt(&p, &lo), Some((40, 3, 14)), "the socket whose local side is the announced src wins");
        assert_eq!(p.rows().len(), 3, "unknown sockets and sockets without tcp_info are ignored");
        // An IPv4 flow on a dual-stack (IPv4-mapped) socket matches too.
        let mapped = key("192.0.2.1:1094", "198.51.100.9:1");
        let flows = table(&[(mapped, 2, 9)]);
        p.matched.clear();
        assert_eq!(p.match_conn(&flows, &conn("[::ffff:192.0.2.1]:1094", "[::ffff:198.51.100.9]:1", 70)), Some(true));
        assert_eq!(rtt(&p, &mapped), Some((70, 2, 9)));
    }
}

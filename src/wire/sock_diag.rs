//! NETLINK_SOCK_DIAG (inet_diag) for TCP: the dump request and the reply parser.
//!
//! Hand-written instead of netlink-packet-sock-diag's `TcpInfo::parse`, because that
//! needs at least 232 bytes of `tcp_info` and older kernels send less: here every
//! `tcp_info` field is an `Option` that is `None` when the kernel's struct is too short,
//! and a short `tcp_info` never drops the connection. Parsing allocates nothing and
//! hands each connection to a callback, so a 20,000-socket dump costs no `Vec` growth.
//!
//! Layouts (all kernel-native byte order except ports and addresses, which are network
//! order): `nlmsghdr` (16 bytes), `inet_diag_req_v2` (56), `inet_diag_msg` (72),
//! then `rtattr`s aligned to 4. A dump ends with `NLMSG_DONE`; a failed request is
//! answered with `NLMSG_ERROR`. One `recv` may hold many messages; a dump spans many
//! `recv`s, so [`parse`] is called once per buffer and reports whether the dump ended.
//! Pure: no I/O, no clock, no logging, no panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `nlmsg_type` of a sock_diag request/reply.
pub(crate) const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `nlmsg_type` of an error/ack message.
pub(crate) const NLMSG_ERROR: u16 = 2;
/// `nlmsg_type` of the end of a dump.
pub(crate) const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_HDRLEN: usize = 16;
const DIAG_MSG_LEN: usize = 72;
const INET_DIAG_INFO: u16 = 2;
const IPPROTO_TCP: u8 = 6;
/// Size of the request built by [`request`].
pub(crate) const REQUEST_LEN: usize = NLMSG_HDRLEN + 56;

/// TCP state numbers (`include/net/tcp_states.h`).
pub(crate) mod state {
    /// TCP_ESTABLISHED.
    pub(crate) const ESTABLISHED: u8 = 1;
    /// TCP_TIME_WAIT.
    #[cfg(test)]
    pub(crate) const TIME_WAIT: u8 = 6;
    /// TCP_LISTEN.
    #[cfg(test)]
    pub(crate) const LISTEN: u8 = 10;
}

/// Bit mask of TCP states for a request (`1 << state`).
pub(crate) const fn state_mask(state: u8) -> u32 {
    1u32 << (state as u32 & 31)
}

/// Every TCP state.
#[cfg(test)]
pub(crate) const ALL_STATES: u32 = u32::MAX;

/// Address family of one dump (the kernel dumps one family per request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    /// AF_INET.
    V4,
    /// AF_INET6 (includes IPv4-mapped connections on dual-stack sockets).
    V6,
}

impl Family {
    /// Both families, in dump order.
    pub(crate) const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn af(self) -> u8 {
        match self {
            Family::V4 => 2,
            Family::V6 => 10,
        }
    }
}

/// What a dump asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Filter {
    /// TCP states to report, as a mask of [`state_mask`] bits; the kernel filters.
    pub states: u32,
    /// Ask for `INET_DIAG_INFO` (struct tcp_info) with each socket.
    pub info: bool,
    /// Further extensions to ask for (a mask of [`ext`] bits: socket memory, congestion
    /// control name, BBR state), decoded into [`Conn::ext`].
    pub ext: u8,
}

impl Filter {
    /// Established connections only, with or without tcp_info.
    pub(crate) const fn established(info: bool) -> Filter {
        Filter { states: state_mask(state::ESTABLISHED), info, ext: 0 }
    }
}

/// Builds the dump request for `family` with sequence number `seq`.
pub(crate) fn request(family: Family, filter: Filter, seq: u32) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: addressed to the kernel.
    b[16] = family.af();
    b[17] = IPPROTO_TCP;
    b[18] = if filter.info { ext::INFO } else { 0 } | filter.ext;
    b[20..24].copy_from_slice(&filter.states.to_ne_bytes());
    // inet_diag_sockid: zero ports/addresses/interface; cookie INET_DIAG_NOCOOKIE.
    b[64..72].copy_from_slice(&[0xff; 8]);
    b
}

/// Largest `tcp_info` prefix kept (up to `tcpi_total_rto_time`, Linux 6.7+).
pub(crate) const TCP_INFO_MAX: usize = 248;

/// `struct tcp_info` as the kernel sent it, length-tolerant: each accessor returns
/// `None` when the kernel's struct is too short to contain that field.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    len: u16,
    raw: [u8; TCP_INFO_MAX],
}

impl std::fmt::Debug for TcpInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpInfo").field("len", &self.len).field("state", &self.state()).field("rtt", &self.rtt()).finish_non_exhaustive()
    }
}

macro_rules! tcp_info_fields {
    ($($(#[$doc:meta])* $name:ident: $ty:ident @ $off:expr;)*) => {
        impl TcpInfo {
            $(
                $(#[$doc])*
                #[inline(always)]
                pub(crate) fn $name(&self) -> Option<$ty> {
                    const N: usize = std::mem::size_of::<$ty>();
                    let end = $off + N;
                    if end > usize::from(self.len) {
                        return None;
                    }
                    let mut a = [0u8; N];
                    a.copy_from_slice(self.raw.get($off..end)?);
                    Some($ty::from_ne_bytes(a))
                }
            )*
        }
    };
}

tcp_info_fields! {
    /// `tcpi_state` (1 = established).
    state: u8 @ 0;
    /// `tcpi_ca_state` (congestion-avoidance state: open, disorder, cwr, recovery, loss).
    ca_state: u8 @ 1;
    /// `tcpi_backoff`: RTO backoff exponent.
    backoff: u8 @ 4;
    /// `tcpi_options`: TCPI_OPT_* bits.
    options: u8 @ 5;
    /// `tcpi_rto` (µs).
    rto: u32 @ 8;
    /// `tcpi_ato` (µs).
    ato: u32 @ 12;
    /// `tcpi_snd_mss` (bytes).
    snd_mss: u32 @ 16;
    /// `tcpi_rcv_mss` (bytes).
    rcv_mss: u32 @ 20;
    /// `tcpi_unacked` (segments).
    unacked: u32 @ 24;
    /// `tcpi_sacked` (segments).
    sacked: u32 @ 28;
    /// `tcpi_lost` (segments).
    lost: u32 @ 32;
    /// `tcpi_retrans`: segments retransmitted and not yet acknowledged.
    retrans: u32 @ 36;
    /// `tcpi_last_data_sent` (ms ago).
    last_data_sent: u32 @ 44;
    /// `tcpi_last_data_recv` (ms ago).
    last_data_recv: u32 @ 52;
    /// `tcpi_last_ack_recv` (ms ago).
    last_ack_recv: u32 @ 56;
    /// `tcpi_pmtu` (bytes).
    pmtu: u32 @ 60;
    /// `tcpi_rcv_ssthresh`.
    rcv_ssthresh: u32 @ 64;
    /// `tcpi_rtt`: smoothed RTT (µs).
    rtt: u32 @ 68;
    /// `tcpi_rttvar`: RTT variance (µs).
    rttvar: u32 @ 72;
    /// `tcpi_snd_ssthresh`.
    snd_ssthresh: u32 @ 76;
    /// `tcpi_snd_cwnd` (segments).
    snd_cwnd: u32 @ 80;
    /// `tcpi_advmss` (bytes).
    advmss: u32 @ 84;
    /// `tcpi_reordering`.
    reordering: u32 @ 88;
    /// `tcpi_rcv_rtt` (µs).
    rcv_rtt: u32 @ 92;
    /// `tcpi_rcv_space` (bytes).
    rcv_space: u32 @ 96;
    /// `tcpi_total_retrans`: retransmitted segments over the connection's life.
    total_retrans: u32 @ 100;
    /// `tcpi_pacing_rate` (bytes/s).
    pacing_rate: u64 @ 104;
    /// `tcpi_bytes_acked` (bytes sent and acknowledged).
    bytes_acked: u64 @ 120;
    /// `tcpi_bytes_received` (bytes).
    bytes_received: u64 @ 128;
    /// `tcpi_segs_out`.
    segs_out: u32 @ 136;
    /// `tcpi_segs_in`.
    segs_in: u32 @ 140;
    /// `tcpi_notsent_bytes`.
    notsent_bytes: u32 @ 144;
    /// `tcpi_min_rtt` (µs).
    min_rtt: u32 @ 148;
    /// `tcpi_data_segs_in`.
    data_segs_in: u32 @ 152;
    /// `tcpi_data_segs_out`.
    data_segs_out: u32 @ 156;
    /// `tcpi_delivery_rate` (bytes/s).
    delivery_rate: u64 @ 160;
    /// `tcpi_busy_time` (µs).
    busy_time: u64 @ 168;
    /// `tcpi_rwnd_limited` (µs limited by the receive window).
    rwnd_limited: u64 @ 176;
    /// `tcpi_sndbuf_limited` (µs limited by the send buffer).
    sndbuf_limited: u64 @ 184;
    /// `tcpi_delivered` (segments).
    delivered: u32 @ 192;
    /// `tcpi_bytes_sent` (bytes, retransmissions included).
    bytes_sent: u64 @ 200;
    /// `tcpi_bytes_retrans` (bytes).
    bytes_retrans: u64 @ 208;
    /// `tcpi_dsack_dups`.
    dsack_dups: u32 @ 216;
    /// `tcpi_reord_seen`.
    reord_seen: u32 @ 220;
    /// `tcpi_rcv_ooopack`.
    rcv_ooopack: u32 @ 224;
    /// `tcpi_snd_wnd` (bytes).
    snd_wnd: u32 @ 228;
    /// `tcpi_rcv_wnd` (bytes, Linux 6.7+).
    rcv_wnd: u32 @ 232;
}

impl TcpInfo {
    /// Wraps the attribute payload (longer payloads are cut to [`TCP_INFO_MAX`]).
    pub fn from_bytes(b: &[u8]) -> TcpInfo {
        let n = b.len().min(TCP_INFO_MAX);
        let mut raw = [0u8; TCP_INFO_MAX];
        raw[..n].copy_from_slice(&b[..n]);
        TcpInfo { len: n as u16, raw }
    }

    /// The bytes as the kernel sent them (at most [`TCP_INFO_MAX`]): `from_bytes` of
    /// them gives this `TcpInfo` back.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.raw.get(..self.len()).unwrap_or(&self.raw)
    }

    /// How many bytes of `struct tcp_info` the kernel sent (at most [`TCP_INFO_MAX`]).
    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// `tcpi_snd_wscale` (4-bit field).
    pub(crate) fn snd_wscale(&self) -> Option<u8> {
        (self.len > 6).then_some(self.raw[6] & 0x0f)
    }

    /// `tcpi_rcv_wscale` (4-bit field).
    pub(crate) fn rcv_wscale(&self) -> Option<u8> {
        (self.len > 6).then_some(self.raw[6] >> 4)
    }
}

/// One TCP socket from a dump (or from /proc/net/tcp). `src` is the local side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// Local address and port (IPv4-mapped addresses are reported as the kernel gives them).
    pub src: SocketAddr,
    /// Remote address and port.
    pub dst: SocketAddr,
    /// TCP state (see [`state`]).
    pub state: u8,
    /// Socket inode (0 for TIME_WAIT sockets).
    pub inode: u32,
    /// Owner uid.
    pub uid: u32,
    /// `INET_DIAG_INFO`, if asked for and sent (TIME_WAIT sockets carry none).
    pub tcp_info: Option<TcpInfo>,
    /// The extensions asked for with [`Filter::ext`] that the kernel sent.
    pub ext: ConnExt,
}

/// Why a reply buffer could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiagError {
    /// A message header or body is cut short or its length field is impossible.
    #[error("truncated or malformed netlink message")]
    Malformed,
    /// The kernel answered the request with an error (errno, positive).
    #[error("kernel returned error {0} for the dump")]
    Kernel(i32),
    /// The kernel flagged the dump as inconsistent (NLM_F_DUMP_INTR).
    #[error("dump interrupted by concurrent changes")]
    Interrupted,
}

impl DiagError {
    /// Short, fixed label for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            DiagError::Malformed => "malformed",
            DiagError::Kernel(_) => "kernel_error",
            DiagError::Interrupted => "interrupted",
        }
    }
}

/// What one reply buffer held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Connections handed to the callback.
    pub conns: usize,
    /// Messages ignored because they belong to another sequence number (a stale dump).
    pub stale: usize,
    /// The dump with our sequence number has ended (`NLMSG_DONE`).
    pub done: bool,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn addr(family: u8, raw: &[u8], port: [u8; 2]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes(port);
    let ip = match family {
        2 => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        10 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(raw).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Decodes one `inet_diag_msg` with its attributes.
fn conn(body: &[u8]) -> Result<Option<Conn>, DiagError> {
    if body.len() < DIAG_MSG_LEN {
        return Err(DiagError::Malformed);
    }
    let family = body[0];
    let st = body[1];
    let (Some(src), Some(dst)) = (addr(family, &body[8..24], [body[4], body[5]]), addr(family, &body[24..40], [body[6], body[7]])) else {
        // Not an inet family: nothing we asked for.
        return Ok(None);
    };
    let uid = u32_at(body, 64).ok_or(DiagError::Malformed)?;
    let inode = u32_at(body, 68).ok_or(DiagError::Malformed)?;
    let mut tcp_info = None;
    let mut ext = ConnExt::default();
    let mut attrs = &body[DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0).ok_or(DiagError::Malformed)?);
        let ty = u16_at(attrs, 2).ok_or(DiagError::Malformed)? & 0x3fff;
        if len < 4 || len > attrs.len() {
            return Err(DiagError::Malformed);
        }
        let payload = &attrs[4..len];
        // Attributes with an unusable payload stay `None`.
        match ty {
            INET_DIAG_INFO => tcp_info = Some(TcpInfo::from_bytes(payload)),
            INET_DIAG_SKMEMINFO => ext.skmem = Some(SkMemInfo::from_bytes(payload)),
            INET_DIAG_CONG => ext.cong = CongName::from_bytes(payload),
            INET_DIAG_BBRINFO => ext.bbr = BbrInfo::from_bytes(payload),
            _ => {}
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Ok(Some(Conn { src, dst, state: st, inode, uid, tcp_info, ext }))
}

/// Parses one `recv` buffer of a dump reply with sequence number `seq`, handing each
/// socket to `each`. Messages of other sequence numbers (a previous, abandoned dump)
/// are skipped and counted. Returns an error for a malformed buffer, a kernel error
/// reply or an interrupted dump; the caller abandons the dump then.
pub fn parse(buf: &[u8], seq: u32, mut each: impl FnMut(Conn)) -> Result<Parsed, DiagError> {
    let mut p = Parsed::default();
    let mut rest = buf;
    while !rest.is_empty() {
        let len = u32_at(rest, 0).ok_or(DiagError::Malformed)? as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(DiagError::Malformed);
        }
        let ty = u16_at(rest, 4).ok_or(DiagError::Malformed)?;
        let flags = u16_at(rest, 6).ok_or(DiagError::Malformed)?;
        let mseq = u32_at(rest, 8).ok_or(DiagError::Malformed)?;
        let body = &rest[NLMSG_HDRLEN..len];
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
        if mseq != seq {
            p.stale += 1;
            continue;
        }
        if flags & NLM_F_DUMP_INTR != 0 {
            return Err(DiagError::Interrupted);
        }
        match ty {
            NLMSG_DONE => {
                // The payload is an int: 0, or a negative errno if the dump failed.
                let code = body.get(0..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes).unwrap_or(0);
                if code < 0 {
                    return Err(DiagError::Kernel(code.saturating_neg()));
                }
                p.done = true;
                return Ok(p);
            }
            NLMSG_ERROR => {
                let code = body.get(0..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes).ok_or(DiagError::Malformed)?;
                if code != 0 {
                    return Err(DiagError::Kernel(code.saturating_neg()));
                }
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(c) = conn(body)? {
                    p.conns += 1;
                    each(c);
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

// --- Extensions: socket memory, congestion-control name, BBR state -------------------
//
// What `ss -tim` shows and the Python flowd's Prometheus backend exported (it parsed
// `ss -iotnmH`): skmem:(r,rb,t,tb,f,w,o,bl,d) from INET_DIAG_SKMEMINFO, the algorithm
// name from INET_DIAG_CONG, bbr:(bw,mrtt,pacing_gain,cwnd_gain) from INET_DIAG_BBRINFO.

/// `INET_DIAG_VEGASINFO`: congestion-control module info (also the request bit for BBR).
const INET_DIAG_VEGASINFO: u16 = 3;
/// `INET_DIAG_CONG`: the congestion-control algorithm's name, NUL-terminated.
const INET_DIAG_CONG: u16 = 4;
/// `INET_DIAG_SKMEMINFO`: `u32[SK_MEMINFO_VARS]`.
const INET_DIAG_SKMEMINFO: u16 = 7;
/// `INET_DIAG_BBRINFO`: `struct tcp_bbr_info`.
const INET_DIAG_BBRINFO: u16 = 16;

/// Bits of a request's `idiag_ext` byte (`1 << (INET_DIAG_* - 1)`), for [`Filter::ext`].
pub(crate) mod ext {
    /// `INET_DIAG_INFO` (struct tcp_info): what [`Filter::info`](super::Filter::info) sets.
    pub(crate) const INFO: u8 = 1 << (super::INET_DIAG_INFO - 1);
    /// Congestion-control module info: the kernel answers with the module's own attribute,
    /// `INET_DIAG_BBRINFO` for bbr (`INET_DIAG_VEGASINFO`/`DCTCPINFO` for vegas/dctcp;
    /// nothing for cubic and reno). `idiag_ext` is one byte, so BBRINFO (extension 16) has
    /// no bit of its own: bbr answers this one (`ss -i` asks the same way).
    pub(crate) const CC_INFO: u8 = 1 << (super::INET_DIAG_VEGASINFO - 1);
    /// `INET_DIAG_CONG`: the congestion-control algorithm's name.
    pub(crate) const CONG: u8 = 1 << (super::INET_DIAG_CONG - 1);
    /// `INET_DIAG_SKMEMINFO`: the socket's memory counters.
    pub(crate) const SKMEMINFO: u8 = 1 << (super::INET_DIAG_SKMEMINFO - 1);
    /// Everything the Python flowd's Prometheus families came from (`ss -tinm`).
    #[cfg(test)]
    pub(crate) const ALL: u8 = INFO | CC_INFO | CONG | SKMEMINFO;
}

/// Number of `u32`s in `INET_DIAG_SKMEMINFO` (`SK_MEMINFO_VARS`). Older kernels send
/// fewer: 8 before `SK_MEMINFO_DROPS` was added, 7 before `SK_MEMINFO_BACKLOG`.
pub(crate) const SK_MEMINFO_VARS: usize = 9;

/// `INET_DIAG_SKMEMINFO` as the kernel sent it, length-tolerant like [`TcpInfo`]: each
/// accessor returns `None` when the kernel sent fewer values. All values are bytes except
/// [`drops`](SkMemInfo::drops). `ss` shows them as `skmem:(r,rb,t,tb,f,w,o,bl,d)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkMemInfo {
    len: u8,
    raw: [u32; SK_MEMINFO_VARS],
}

impl SkMemInfo {
    /// Decodes the attribute payload (values past [`SK_MEMINFO_VARS`] are ignored, a
    /// trailing partial value too).
    pub fn from_bytes(b: &[u8]) -> SkMemInfo {
        let mut m = SkMemInfo::default();
        for (slot, chunk) in m.raw.iter_mut().zip(b.chunks_exact(4)) {
            *slot = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            m.len += 1;
        }
        m
    }

    /// How many values the kernel sent (at most [`SK_MEMINFO_VARS`]).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True when the kernel sent no value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Value `i` in kernel order (`SK_MEMINFO_RMEM_ALLOC` = 0 … `SK_MEMINFO_DROPS` = 8).
    pub(crate) fn get(&self, i: usize) -> Option<u32> {
        if i < self.len() {
            self.raw.get(i).copied()
        } else {
            None
        }
    }

    /// `SK_MEMINFO_RMEM_ALLOC` (`r`): bytes of received data queued (truesize).
    pub(crate) fn rmem_alloc(&self) -> Option<u32> {
        self.get(0)
    }
    /// `SK_MEMINFO_RCVBUF` (`rb`): receive buffer size (bytes).
    pub(crate) fn rcvbuf(&self) -> Option<u32> {
        self.get(1)
    }
    /// `SK_MEMINFO_WMEM_ALLOC` (`t`): bytes of sent data in flight below the socket.
    pub(crate) fn wmem_alloc(&self) -> Option<u32> {
        self.get(2)
    }
    /// `SK_MEMINFO_SNDBUF` (`tb`): send buffer size (bytes).
    pub(crate) fn sndbuf(&self) -> Option<u32> {
        self.get(3)
    }
    /// `SK_MEMINFO_FWD_ALLOC` (`f`): memory reserved but not yet used (bytes).
    pub(crate) fn fwd_alloc(&self) -> Option<u32> {
        self.get(4)
    }
    /// `SK_MEMINFO_WMEM_QUEUED` (`w`): bytes queued in the send queue.
    pub(crate) fn wmem_queued(&self) -> Option<u32> {
        self.get(5)
    }
    /// `SK_MEMINFO_OPTMEM` (`o`): option memory (bytes).
    pub(crate) fn optmem(&self) -> Option<u32> {
        self.get(6)
    }
    /// `SK_MEMINFO_BACKLOG` (`bl`): bytes in the backlog queue.
    pub(crate) fn backlog(&self) -> Option<u32> {
        self.get(7)
    }
    /// `SK_MEMINFO_DROPS` (`d`): packets dropped before reaching the socket (a count).
    pub(crate) fn drops(&self) -> Option<u32> {
        self.get(8)
    }
}

/// Longest congestion-control name, with its NUL (`TCP_CA_NAME_MAX`).
pub(crate) const TCP_CA_NAME_MAX: usize = 16;

/// `INET_DIAG_CONG`: the name of the socket's congestion-control algorithm ("cubic",
/// "bbr", …), stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CongName {
    len: u8,
    raw: [u8; TCP_CA_NAME_MAX],
}

impl CongName {
    /// Decodes the attribute payload: the bytes before the first NUL (the kernel always
    /// sends one; a payload without it is taken whole). `None` for an empty name, one
    /// longer than `TCP_CA_NAME_MAX - 1` bytes, or one with bytes other than printable
    /// ASCII (kernel module names are `[a-z0-9_]`), so the name is safe as a label value.
    pub fn from_bytes(b: &[u8]) -> Option<CongName> {
        let name = b.split(|&c| c == 0).next().unwrap_or(&[]);
        if name.is_empty() || name.len() >= TCP_CA_NAME_MAX || !name.iter().all(|c| c.is_ascii_graphic()) {
            return None;
        }
        let mut raw = [0u8; TCP_CA_NAME_MAX];
        raw[..name.len()].copy_from_slice(name);
        Some(CongName { len: name.len() as u8, raw })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.raw.get(..usize::from(self.len)).unwrap_or(&[])).unwrap_or("")
    }
}

impl std::fmt::Debug for CongName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CongName({:?})", self.as_str())
    }
}

impl std::fmt::Display for CongName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `INET_DIAG_BBRINFO`: `struct tcp_bbr_info`, the state of a bbr socket. Sent only for
/// sockets using bbr, and only when [`ext::CC_INFO`] was asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BbrInfo {
    /// `bbr_bw_lo`: low 32 bits of the bandwidth estimate (bytes/s).
    pub bw_lo: u32,
    /// `bbr_bw_hi`: high 32 bits of the bandwidth estimate.
    pub bw_hi: u32,
    /// `bbr_min_rtt`: minimum RTT (µs).
    pub min_rtt: u32,
    /// `bbr_pacing_gain`: pacing gain, fixed point with 8 fraction bits (256 = 1.0).
    pub pacing_gain: u32,
    /// `bbr_cwnd_gain`: cwnd gain, fixed point with 8 fraction bits (256 = 1.0).
    pub cwnd_gain: u32,
}

impl BbrInfo {
    /// Decodes the attribute payload; `None` when it is shorter than `struct tcp_bbr_info` (20 bytes)
    /// (longer payloads, from a future kernel, keep their first five fields).
    pub(crate) fn from_bytes(b: &[u8]) -> Option<BbrInfo> {
        Some(BbrInfo { bw_lo: u32_at(b, 0)?, bw_hi: u32_at(b, 4)?, min_rtt: u32_at(b, 8)?, pacing_gain: u32_at(b, 12)?, cwnd_gain: u32_at(b, 16)? })
    }

    /// The bandwidth estimate (bytes/s; `ss` shows it ×8 as bits/s).
    pub(crate) fn bw(&self) -> u64 {
        (u64::from(self.bw_hi) << 32) | u64::from(self.bw_lo)
    }

    /// The pacing gain as a ratio (1.25 while probing for bandwidth).
    #[cfg(test)]
    pub(crate) fn pacing_gain_ratio(&self) -> f64 {
        f64::from(self.pacing_gain) / 256.0
    }

    /// The cwnd gain as a ratio.
    #[cfg(test)]
    pub(crate) fn cwnd_gain_ratio(&self) -> f64 {
        f64::from(self.cwnd_gain) / 256.0
    }
}

/// The extension attributes of one socket: each is `Some` when it was asked for (see
/// [`ext`]) and the kernel sent it (TIME_WAIT sockets carry none; cubic and reno have
/// no BBR info).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnExt {
    /// `INET_DIAG_SKMEMINFO`.
    pub skmem: Option<SkMemInfo>,
    /// `INET_DIAG_CONG`.
    pub cong: Option<CongName>,
    /// `INET_DIAG_BBRINFO`.
    pub bbr: Option<BbrInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sock_diag").join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn all(buf: &[u8], seq: u32) -> (Vec<Conn>, Result<Parsed, DiagError>) {
        let mut v = Vec::new();
        let r = parse(buf, seq, |c| v.push(c));
        (v, r)
    }

    #[test]
    fn test_request_bytes() {
        let r = request(Family::V6, Filter::established(true), 0x0102_0304);
        let mut want = Vec::new();
        want.extend_from_slice(&72u32.to_ne_bytes());
        want.extend_from_slice(&20u16.to_ne_bytes());
        want.extend_from_slice(&0x301u16.to_ne_bytes());
        want.extend_from_slice(&0x0102_0304u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[10, 6, 0x02, 0]);
        want.extend_from_slice(&2u32.to_ne_bytes());
        want.extend_from_slice(&[0; 40]);
        want.extend_from_slice(&[0xff; 8]);
        assert_eq!(&r[..], &want[..]);
        let r4 = request(Family::V4, Filter { states: ALL_STATES, info: false, ext: 0 }, 1);
        assert_eq!((r4[16], r4[18]), (2, 0));
        assert_eq!(&r4[20..24], &u32::MAX.to_ne_bytes());
    }

    #[test]
    fn test_captured_ipv4_established_dump() {
        let (v, r) = all(&fixture("est_v4.bin"), 7);
        let p = r.unwrap();
        assert!(p.done);
        assert_eq!((p.conns, p.stale), (3, 0));
        let pairs: Vec<(String, String)> = v.iter().map(|c| (c.src.to_string(), c.dst.to_string())).collect();
        assert!(pairs.iter().any(|(s, _)| s == "100.64.0.1:5001"));
        assert!(pairs.iter().any(|(s, d)| d == "100.64.0.1:5001" && s.starts_with("100.64.0.1:")));
        assert!(pairs.iter().any(|(s, d)| d == "100.64.0.1:5003" && s.starts_with("100.64.0.1:")));
        for c in &v {
            assert_eq!(c.state, state::ESTABLISHED);
            assert_eq!(c.uid, 0);
            assert_ne!(c.inode, 0);
            let ti = c.tcp_info.unwrap();
            assert!(ti.len() >= 232, "this kernel sends a long tcp_info: {}", ti.len());
            assert_eq!(ti.state(), Some(state::ESTABLISHED));
            assert!(ti.rtt().unwrap() > 0);
            assert!(ti.snd_mss().unwrap() > 0);
            assert!(ti.snd_cwnd().unwrap() >= 1);
        }
        // The client of the 5001 pair sent 1000 bytes; its peer received them.
        let client = v.iter().find(|c| c.dst.port() == 5001).unwrap().tcp_info.unwrap();
        // bytes_acked counts the SYN as well.
        assert_eq!(client.bytes_acked(), Some(1001));
        assert!(client.bytes_sent().unwrap() >= 1000);
        let server = v.iter().find(|c| c.src.port() == 5001).unwrap().tcp_info.unwrap();
        assert_eq!(server.bytes_received(), Some(1000));
    }

    #[test]
    fn test_captured_ipv6_dump_has_mapped_addresses() {
        let (v, r) = all(&fixture("est_v6.bin"), 7);
        assert_eq!(r.unwrap().conns, 3);
        assert_eq!(v.iter().filter(|c| c.src.ip() == "3fff::1".parse::<IpAddr>().unwrap()).count(), 2);
        let mapped = v.iter().find(|c| c.src.port() == 5003).unwrap();
        assert_eq!(mapped.src.ip(), "::ffff:100.64.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn test_time_wait_and_listen_sockets_in_an_all_states_dump() {
        let (v, r) = all(&fixture("all_v4.bin"), 7);
        assert!(r.unwrap().done);
        let tw: Vec<_> = v.iter().filter(|c| c.state == state::TIME_WAIT).collect();
        assert!(!tw.is_empty());
        assert!(tw.iter().all(|c| c.tcp_info.is_none() && c.inode == 0), "TIME_WAIT carries no INET_DIAG_INFO");
        assert!(v.iter().any(|c| c.state == state::LISTEN && c.dst.port() == 0));
    }

    #[test]
    fn test_short_tcp_info_keeps_the_connection() {
        let buf = fixture("est_v4.bin");
        // Rewrite the first message so its tcp_info attribute is only 104 bytes long
        // (a 4.x kernel), keeping the netlink framing consistent.
        let mlen = u32_at(&buf, 0).unwrap() as usize;
        let mut msg = buf[..mlen].to_vec();
        let mut off = NLMSG_HDRLEN + DIAG_MSG_LEN;
        while off < msg.len() {
            let alen = usize::from(u16_at(&msg, off).unwrap());
            if u16_at(&msg, off + 2).unwrap() == INET_DIAG_INFO {
                let short = 4 + 104;
                msg[off..off + 2].copy_from_slice(&(short as u16).to_ne_bytes());
                msg.drain(off + short..off + ((alen + 3) & !3));
                break;
            }
            off += (alen + 3) & !3;
        }
        let new_len = msg.len() as u32;
        msg[0..4].copy_from_slice(&new_len.to_ne_bytes());
        msg.extend_from_slice(&buf[mlen..]);
        let (v, r) = all(&msg, 7);
        assert_eq!(r.unwrap().conns, 3);
        let ti = v[0].tcp_info.unwrap();
        assert_eq!(ti.len(), 104);
        assert!(ti.rtt().is_some() && ti.total_retrans().is_some());
        assert_eq!(ti.pacing_rate(), None);
        assert_eq!(ti.bytes_received(), None);
        assert_eq!(ti.snd_wnd(), None);
    }

    #[test]
    fn test_stale_sequence_numbers_are_skipped() {
        let (v, r) = all(&fixture("est_v4.bin"), 8);
        assert!(v.is_empty());
        let p = r.unwrap();
        assert!(!p.done);
        assert_eq!(p.stale, 4);
    }

    fn msg(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn test_error_done_and_interrupted_replies() {
        let mut e = (-22i32).to_ne_bytes().to_vec();
        e.extend_from_slice(&request(Family::V4, Filter::established(false), 5)[..16]);
        assert_eq!(all(&msg(NLMSG_ERROR, 0, 5, &e), 5).1, Err(DiagError::Kernel(22)));
        assert_eq!(all(&msg(NLMSG_DONE, 2, 5, &(-4i32).to_ne_bytes()), 5).1, Err(DiagError::Kernel(4)));
        assert_eq!(all(&msg(NLMSG_DONE, 2 | NLM_F_DUMP_INTR, 5, &0i32.to_ne_bytes()), 5).1, Err(DiagError::Interrupted));
        let ok = all(&msg(NLMSG_DONE, 2, 5, &0i32.to_ne_bytes()), 5).1.unwrap();
        assert!(ok.done && ok.conns == 0);
        let ack = all(&msg(NLMSG_ERROR, 0, 5, &0i32.to_ne_bytes()), 5).1.unwrap();
        assert!(!ack.done);
    }

    #[test]
    fn test_garbage_never_panics() {
        let good = fixture("est_v6.bin");
        for cut in 0..good.len() {
            let _ = all(&good[..cut], 7);
        }
        let mut flipped = good.clone();
        for i in (0..flipped.len()).step_by(7) {
            flipped[i] ^= 0xa5;
            let _ = all(&flipped, 7);
        }
        assert_eq!(all(&[1, 2, 3], 7).1, Err(DiagError::Malformed));
        assert_eq!(all(&msg(SOCK_DIAG_BY_FAMILY, 2, 7, &[2; 10]), 7).1, Err(DiagError::Malformed));
        let mut bad_attr = vec![0u8; 72];
        bad_attr[0] = 2;
        bad_attr.extend_from_slice(&[200, 0, 2, 0]);
        assert_eq!(all(&msg(SOCK_DIAG_BY_FAMILY, 2, 7, &bad_attr), 7).1, Err(DiagError::Malformed));
    }

    fn ne(vals: &[u32]) -> Vec<u8> {
        vals.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    #[test]
    fn test_request_with_ext_bytes() {
        assert_eq!((ext::INFO, ext::CC_INFO, ext::CONG, ext::SKMEMINFO, ext::ALL), (0x02, 0x04, 0x08, 0x40, 0x4e));
        let with = |info, ext| Filter { ext, ..Filter::established(info) };
        let r = request(Family::V4, with(false, ext::ALL), 9);
        let base = request(Family::V4, Filter::established(false), 9);
        assert_eq!(r[18], 0x4e);
        assert_eq!((&r[..18], &r[19..]), (&base[..18], &base[19..]), "only idiag_ext differs");
        assert_eq!(request(Family::V6, with(true, ext::CONG), 3)[18], 0x0a);
    }

    #[test]
    fn test_skmeminfo_bytes() {
        let m = SkMemInfo::from_bytes(&ne(&[3832, 2_128_302, 7, 3_939_840, 264, 11, 12, 13, 14]));
        assert_eq!(m.len(), 9);
        assert_eq!(
            [m.rmem_alloc(), m.rcvbuf(), m.wmem_alloc(), m.sndbuf(), m.fwd_alloc(), m.wmem_queued(), m.optmem(), m.backlog(), m.drops()],
            [Some(3832), Some(2_128_302), Some(7), Some(3_939_840), Some(264), Some(11), Some(12), Some(13), Some(14)]
        );
        // An older kernel, before SK_MEMINFO_DROPS: eight values.
        let old = SkMemInfo::from_bytes(&ne(&[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!((old.len(), old.backlog(), old.drops()), (8, Some(8), None));
        // A future kernel with more values, and a trailing partial value: ignored.
        let mut long = ne(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        long.push(0xff);
        let l = SkMemInfo::from_bytes(&long);
        assert_eq!((l.len(), l.drops(), l.get(9)), (9, Some(9), None));
        let part = SkMemInfo::from_bytes(&[1, 0, 0, 0, 2, 0]);
        assert_eq!((part.len(), part.rcvbuf()), (1, None));
        assert!(SkMemInfo::from_bytes(&[]).is_empty());
    }

    #[test]
    fn test_cong_name_bytes() {
        assert_eq!(CongName::from_bytes(b"bbr\0").unwrap().as_str(), "bbr");
        assert_eq!(CongName::from_bytes(b"cubic\0").unwrap().to_string(), "cubic");
        assert_eq!(CongName::from_bytes(b"dctcp\0\0\0").unwrap().as_str(), "dctcp");
        assert_eq!(CongName::from_bytes(b"reno").unwrap().as_str(), "reno", "no NUL: the whole payload");
        assert_eq!(format!("{:?}", CongName::from_bytes(b"bbr\0").unwrap()), "CongName(\"bbr\")");
        assert_eq!(CongName::from_bytes(b"fifteen_chars_x\0").unwrap().as_str().len(), 15);
        for bad in [&b""[..], b"\0", b"\0bbr\0", b"sixteen_chars_xx\0", b"b r\0", b"bb\xc3\xa9\0", b"a\nb\0"] {
            assert_eq!(CongName::from_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn test_bbr_info_bytes() {
        // struct tcp_bbr_info as recorded for the bbr sender in ext_v4.bin.
        let b = BbrInfo::from_bytes(&ne(&[211_697_331, 3, 5, 320, 512])).unwrap();
        assert_eq!(b, BbrInfo { bw_lo: 211_697_331, bw_hi: 3, min_rtt: 5, pacing_gain: 320, cwnd_gain: 512 });
        assert_eq!(b.bw(), 13_096_599_219);
        assert_eq!(b.bw() * 8, 104_772_793_752, "what ss printed as bw:…bps");
        assert_eq!((b.pacing_gain_ratio(), b.cwnd_gain_ratio()), (1.25, 2.0));
        assert_eq!(BbrInfo::from_bytes(&ne(&[1, 2, 3, 4])), None, "too short");
        let mut longer = ne(&[1, 0, 3, 256, 512]);
        longer.extend_from_slice(&[9; 8]);
        assert_eq!(BbrInfo::from_bytes(&longer).map(|b| (b.bw(), b.pacing_gain_ratio())), Some((1, 1.0)));
    }

    /// The `ss -tinmHO` line of `src` → `dst` recorded beside the fixture.
    fn ss_line<'a>(ss: &'a str, src: &SocketAddr, dst: &SocketAddr) -> &'a str {
        ss.lines()
            .find(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.get(2) == Some(&src.to_string().as_str()) && w.get(3) == Some(&dst.to_string().as_str())
            })
            .unwrap_or_else(|| panic!("no ss line for {src} {dst}"))
    }

    /// The values of `key:(a1,b2,…)` in an ss line, as (prefix, number) pairs.
    fn ss_group<'a>(line: &'a str, key: &str) -> Option<Vec<&'a str>> {
        let start = line.find(&format!("{key}:("))? + key.len() + 2;
        let end = start + line[start..].find(')')?;
        Some(line[start..end].split(',').collect())
    }

    #[test]
    fn test_captured_dump_with_extensions_matches_ss() {
        let buf = fixture("ext_v4.bin");
        let ss = String::from_utf8(fixture("ext_v4.ss")).unwrap();
        let (conns, p) = all(&buf, 9);
        let p = p.unwrap();
        assert!(p.done);
        assert_eq!((p.conns, p.stale), (4, 0));
        let mut bbr_senders = 0;
        for (c, x) in conns.iter().map(|c| (c, c.ext)) {
            let line = ss_line(&ss, &c.src, &c.dst);
            let cong = x.cong.unwrap();
            let want_cong = if c.src.port() == 5011 || c.dst.port() == 5011 { "bbr" } else { "cubic" };
            assert_eq!(cong.as_str(), want_cong);
            assert!(line.split_whitespace().any(|w| w == want_cong), "{line}");
            // skmem:(r3832,rb…,t0,tb…,f264,w0,o0,bl0,d0): same values, same order.
            let m = x.skmem.unwrap();
            assert_eq!(m.len(), SK_MEMINFO_VARS);
            let from_ss: Vec<u32> = ss_group(line, "skmem").unwrap().iter().map(|f| f.trim_start_matches(char::is_alphabetic).parse().unwrap()).collect();
            assert_eq!(from_ss, (0..SK_MEMINFO_VARS).map(|i| m.get(i).unwrap()).collect::<Vec<_>>(), "{line}");
            // The receivers left 3000 bytes unread.
            if c.src.port() == 5011 || c.src.port() == 5012 {
                assert!(m.rmem_alloc().unwrap() >= 3000, "{m:?}");
            }
            assert!(c.tcp_info.is_some());
            match (want_cong, x.bbr) {
                ("cubic", b) => assert_eq!(b, None, "cubic has no BBR info"),
                (_, Some(b)) => {
                    let g = ss_group(line, "bbr").unwrap();
                    assert_eq!(g[0], format!("bw:{}bps", b.bw() * 8));
                    assert_eq!(g[1], format!("mrtt:{}", f64::from(b.min_rtt) / 1000.0));
                    if b.pacing_gain != 0 {
                        assert_eq!(g[2], format!("pacing_gain:{}", b.pacing_gain_ratio()));
                        assert_eq!(g[3], format!("cwnd_gain:{}", b.cwnd_gain_ratio()));
                        bbr_senders += 1;
                        assert_eq!(b, BbrInfo { bw_lo: 211_697_331, bw_hi: 3, min_rtt: 5, pacing_gain: 320, cwnd_gain: 512 });
                    }
                }
                (_, None) => panic!("bbr socket without INET_DIAG_BBRINFO: {line}"),
            }
        }
        assert_eq!(bbr_senders, 1);
        // Without the extension bits nothing is decoded from a plain dump.
        let (plain, _) = all(&fixture("est_v4.bin"), 7);
        assert!(!plain.is_empty() && plain.iter().all(|c| c.ext == ConnExt::default()));
    }

    #[test]
    fn test_extension_garbage_never_panics() {
        let good = fixture("ext_v4.bin");
        for cut in 0..good.len() {
            let _ = parse(&good[..cut], 9, |_| {});
        }
        let mut flipped = good.clone();
        for i in (0..flipped.len()).step_by(5) {
            flipped[i] ^= 0x5a;
            let _ = parse(&flipped, 9, |_| {});
        }
        // A message with only a CONG attribute whose length runs past the message.
        let mut body = vec![0u8; 72];
        body[0] = 2;
        body.extend_from_slice(&[12, 0, 4, 0, b'b', b'b', b'r', 0]);
        assert_eq!(parse(&msg(SOCK_DIAG_BY_FAMILY, 2, 7, &body), 7, |_| {}), Err(DiagError::Malformed));
        // The same attribute with the right length decodes; a short BBR attribute is dropped.
        let mut body = vec![0u8; 72];
        body[0] = 2;
        body.extend_from_slice(&[8, 0, 4, 0, b'b', b'b', b'r', 0]);
        body.extend_from_slice(&[12, 0, 16, 0]);
        body.extend_from_slice(&ne(&[1, 2]));
        let mut got = Vec::new();
        parse(&msg(SOCK_DIAG_BY_FAMILY, 2, 7, &body), 7, |c| got.push(c.ext)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].cong.map(|c| c.to_string()), got[0].bbr, got[0].skmem), (Some("bbr".into()), None, None));
    }
}

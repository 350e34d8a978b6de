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

mod extensions;
pub(crate) use extensions::ext;
pub use extensions::{BbrInfo, CongName, ConnExt, SkMemInfo};
use extensions::{INET_DIAG_BBRINFO, INET_DIAG_CONG, INET_DIAG_SKMEMINFO};

#[cfg(test)]
mod tests;

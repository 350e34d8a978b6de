//! Extensions: socket memory, congestion-control name, BBR state.
//!
//! What `ss -tim` shows and the Python flowd's Prometheus backend exported (it parsed
//! `ss -iotnmH`): skmem:(r,rb,t,tb,f,w,o,bl,d) from INET_DIAG_SKMEMINFO, the algorithm
//! name from INET_DIAG_CONG, bbr:(bw,mrtt,pacing_gain,cwnd_gain) from INET_DIAG_BBRINFO.

use super::{u32_at, INET_DIAG_INFO};

/// `INET_DIAG_VEGASINFO`: congestion-control module info (also the request bit for BBR).
pub(super) const INET_DIAG_VEGASINFO: u16 = 3;
/// `INET_DIAG_CONG`: the congestion-control algorithm's name, NUL-terminated.
pub(super) const INET_DIAG_CONG: u16 = 4;
/// `INET_DIAG_SKMEMINFO`: `u32[SK_MEMINFO_VARS]`.
pub(super) const INET_DIAG_SKMEMINFO: u16 = 7;
/// `INET_DIAG_BBRINFO`: `struct tcp_bbr_info`.
pub(super) const INET_DIAG_BBRINFO: u16 = 16;

/// Bits of a request's `idiag_ext` byte (`1 << (INET_DIAG_* - 1)`), for [`Filter::ext`](super::Filter::ext).
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

/// `INET_DIAG_SKMEMINFO` as the kernel sent it, length-tolerant like [`TcpInfo`](super::TcpInfo): each
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

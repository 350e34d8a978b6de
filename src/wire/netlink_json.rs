//! The firefly `netlink` object and `usage` pair, built from a socket's `tcp_info`.
//!
//! XRootD sends `"netlink":{"rtt":<ms with 3 decimals>}` and the firefly-collector reads
//! `netlink.rtt`; the Python flowd sends pyroute2's `tcp_info` dictionary. flowd sends one
//! flat, compact object: `rtt` first, in XRootD's format, then the Python flowd's
//! `tcp_info` field names. Every time is in milliseconds with three decimals (the Python
//! flowd mixes µs and ms); `state` and `opts` are strings as in pyroute2. The set is a
//! subset of the Python one, chosen to keep a whole firefly under 1,400 bytes even with
//! every counter at its maximum (see the test). Fields the kernel's `tcp_info` is too
//! short for are left out. Pure: no I/O, no clock, no logging, no panics.

use std::fmt::Write;

use super::sock_diag::TcpInfo;

/// Upper bound of what [`write_netlink`] appends (checked by a test).
#[cfg(test)]
pub(crate) const MAX_LEN: usize = 900;

/// `usage` as XRootD fills it: (received, sent) = (`tcpi_bytes_received`,
/// `tcpi_bytes_acked`), from the side of the socket the `tcp_info` belongs to.
pub fn usage(ti: &TcpInfo) -> Option<(u64, u64)> {
    Some((ti.bytes_received()?, ti.bytes_acked()?))
}

/// The pyroute2 name of a TCP state number.
pub(crate) fn state_name(s: u8) -> &'static str {
    match s {
        1 => "established",
        2 => "syn-sent",
        3 => "syn-recv",
        4 => "fin-wait-1",
        5 => "fin-wait-2",
        6 => "time-wait",
        7 => "unconnected",
        8 => "close-wait",
        9 => "last-ack",
        10 => "listening",
        11 => "closing",
        _ => "unknown",
    }
}

fn ms(out: &mut String, key: &str, us: Option<u32>) {
    if let Some(us) = us {
        let _ = write!(out, ",\"{key}\":{}.{:03}", us / 1000, us % 1000);
    }
}

fn num<T: std::fmt::Display>(out: &mut String, key: &str, v: Option<T>) {
    if let Some(v) = v {
        let _ = write!(out, ",\"{key}\":{v}");
    }
}

/// Appends the `netlink` JSON object for `ti` to `out` (which is not cleared).
pub fn write_netlink(out: &mut String, ti: &TcpInfo) {
    let start = out.len();
    out.push('{');
    ms(out, "rtt", ti.rtt());
    ms(out, "rttvar", ti.rttvar());
    ms(out, "min_rtt", ti.min_rtt());
    ms(out, "rcv_rtt", ti.rcv_rtt());
    ms(out, "rto", ti.rto());
    if let Some(s) = ti.state() {
        let _ = write!(out, ",\"state\":\"{}\"", state_name(s));
    }
    num(out, "ca_state", ti.ca_state());
    if let Some(o) = ti.options() {
        let names = [(1u8, "ts"), (2, "sack"), (8, "ecn")];
        out.push_str(",\"opts\":[");
        let mut first = true;
        for (bit, name) in names {
            if o & bit != 0 {
                if !first {
                    out.push(',');
                }
                first = false;
                let _ = write!(out, "\"{name}\"");
            }
        }
        out.push(']');
    }
    num(out, "snd_wscale", ti.snd_wscale());
    num(out, "rcv_wscale", ti.rcv_wscale());
    num(out, "snd_mss", ti.snd_mss());
    num(out, "rcv_mss", ti.rcv_mss());
    num(out, "pmtu", ti.pmtu());
    num(out, "snd_cwnd", ti.snd_cwnd());
    // The kernel reports "no threshold yet" as a huge value; pyroute2 drops it too.
    num(out, "snd_ssthresh", ti.snd_ssthresh().filter(|v| *v < 0xFFFF));
    num(out, "rcv_space", ti.rcv_space());
    num(out, "unacked", ti.unacked());
    num(out, "lost", ti.lost());
    num(out, "retrans", ti.retrans());
    num(out, "total_retrans", ti.total_retrans());
    num(out, "reordering", ti.reordering());
    num(out, "bytes_acked", ti.bytes_acked());
    num(out, "bytes_received", ti.bytes_received());
    num(out, "bytes_retrans", ti.bytes_retrans());
    num(out, "segs_out", ti.segs_out());
    num(out, "segs_in", ti.segs_in());
    num(out, "notsent_bytes", ti.notsent_bytes());
    num(out, "pacing_rate", ti.pacing_rate());
    num(out, "delivery_rate", ti.delivery_rate());
    num(out, "busy_time", ti.busy_time());
    num(out, "rwnd_limited", ti.rwnd_limited());
    num(out, "sndbuf_limited", ti.sndbuf_limited());
    num(out, "last_data_recv", ti.last_data_recv());
    num(out, "last_data_sent", ti.last_data_sent());
    // Drop the comma written before the first field.
    if out.get(start + 1..start + 2) == Some(",") {
        out.remove(start + 1);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sock_diag/est_v4.bin");
        std::fs::read(p).unwrap()
    }

    fn infos() -> Vec<TcpInfo> {
        let mut v = Vec::new();
        crate::wire::sock_diag::parse(&fixture(), 7, |c| v.extend(c.tcp_info)).unwrap();
        v
    }

    #[test]
    fn test_real_tcp_info_gives_a_json_object_with_rtt_in_ms() {
        for ti in infos() {
            let mut s = String::new();
            write_netlink(&mut s, &ti);
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            let rtt_us = ti.rtt().unwrap();
            assert_eq!(v["rtt"].as_f64().unwrap(), f64::from(rtt_us) / 1000.0);
            let text = s.split("\"rtt\":").nth(1).unwrap();
            let digits = text.split(',').next().unwrap().split('.').nth(1).unwrap();
            assert_eq!(digits.len(), 3, "three decimals as XRootD: {s}");
            assert_eq!(v["state"], "established");
            assert_eq!(v["bytes_acked"].as_u64(), ti.bytes_acked());
            assert!(v["opts"].is_array());
        }
    }

    #[test]
    fn test_short_tcp_info_leaves_fields_out() {
        // A 72-byte tcp_info (an old kernel): state and rtt (at 68) are there, bytes are not.
        let mut raw = [0u8; 72];
        raw[0] = 1;
        raw[68..72].copy_from_slice(&12_345u32.to_ne_bytes());
        let mut s = String::new();
        write_netlink(&mut s, &TcpInfo::from_bytes(&raw));
        assert!(s.starts_with("{\"rtt\":12.345,"), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert!(v.get("bytes_acked").is_none(), "{s}");
        assert_eq!(usage(&TcpInfo::from_bytes(&raw)), None);
        s.clear();
        write_netlink(&mut s, &TcpInfo::from_bytes(&[]));
        assert_eq!(s, "{}");
    }

    #[test]
    fn test_worst_case_length_is_bounded() {
        let mut raw = [0xffu8; 248];
        raw[0] = 1;
        let mut s = String::new();
        write_netlink(&mut s, &TcpInfo::from_bytes(&raw));
        serde_json::from_str::<serde_json::Value>(&s).unwrap();
        assert!(s.len() <= MAX_LEN, "{} bytes: {s}", s.len());
        raw[0] = 200;
        s.clear();
        write_netlink(&mut s, &TcpInfo::from_bytes(&raw));
        assert!(s.contains("\"state\":\"unknown\""));
    }

    #[test]
    fn test_usage_is_received_then_acked() {
        let ti = infos().into_iter().find(|t| t.bytes_acked() == Some(1001)).unwrap();
        assert_eq!(usage(&ti), Some((ti.bytes_received().unwrap(), 1001)));
    }
}

//! sock_diag tests: recorded kernel replies (`tests/data/sock_diag/`) and hand-built messages.

use super::extensions::SK_MEMINFO_VARS;
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

//! Firefly encode/decode tests against the spec vectors and real producers' datagrams.

use super::*;

const SPEC: &str = "tests/data/spec/";

fn lines(name: &str) -> Vec<String> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SPEC).join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

fn t(s: &str) -> Micros {
    parse_rfc3339(s).unwrap()
}

#[test]
fn test_encode_reproduces_tv1_and_tv2_byte_for_byte() {
    let valid = lines("fireflies-valid.txt");
    let key = FlowKey::new(Proto::Tcp, "[2001:db8::1]:1094".parse().unwrap(), "[2001:db8:1::2]:53012".parse().unwrap()).unwrap();
    let mut ff = Firefly {
        state: FlowState::Start,
        current_time: t("2025-03-25T10:00:00.123456+00:00"),
        start_time: t("2025-03-25T10:00:00.100000+00:00"),
        end_time: None,
        key,
        exp: 2,
        act: 9,
        application: "flowd v1.1.7",
        usage: None,
        netlink: None,
    };
    let mut out = Vec::new();
    encode(&mut out, "se01.example.org", &ff);
    assert_eq!(String::from_utf8(out).unwrap(), valid[0]);
    assert_eq!(valid[0].len(), 452);
    ff.state = FlowState::End;
    ff.current_time = t("2025-03-25T10:05:00.654321+00:00");
    ff.end_time = Some(t("2025-03-25T10:05:00.600000+00:00"));
    let mut out = Vec::new();
    encode(&mut out, "se01.example.org", &ff);
    assert_eq!(String::from_utf8(out).unwrap(), valid[1]);
}

/// UDP_FIREFLY_SYSLOG=False: the same JSON bytes without the header, and they decode
/// (the header is optional unless strict).
#[test]
fn test_bare_json_is_the_body_of_the_full_datagram() {
    let key = FlowKey::new(Proto::Tcp, "192.0.2.1:1094".parse().unwrap(), "198.51.100.2:53012".parse().unwrap()).unwrap();
    let ff = Firefly {
        state: FlowState::Start,
        current_time: Micros(1_700_000_000_000_000),
        start_time: Micros(1_700_000_000_000_000),
        end_time: None,
        key,
        exp: 2,
        act: 9,
        application: "flowd",
        usage: None,
        netlink: None,
    };
    let (mut full, mut bare) = (Vec::new(), Vec::new());
    encode(&mut full, "h", &ff);
    encode_json(&mut bare, &ff);
    assert!(bare.starts_with(b"{\"version\": 1,") && full.ends_with(&bare) && full.len() > bare.len());
    assert!(full.starts_with(b"<134>1 "));
    let d = decode(&bare, Strictness::Lenient).unwrap();
    assert_eq!((d.key, d.exp, d.act), (key, 2, 9));
    assert!(decode(&bare, Strictness::Strict).is_err(), "strict decoding wants the header");
}

#[test]
fn test_encoded_messages_decode_back_strictly() {
    let key = FlowKey::new(Proto::Udp, "192.0.2.10:2811".parse().unwrap(), "198.51.100.20:40506".parse().unwrap()).unwrap();
    for state in FlowState::ALL {
        let ff = Firefly {
            state,
            current_time: Micros(1_700_000_000_000_000),
            start_time: Micros(1_699_999_999_000_000),
            end_time: (state == FlowState::End).then_some(Micros(1_700_000_000_000_000)),
            key,
            exp: 3,
            act: 14,
            application: "flowd \"0.1\"",
            usage: Some((1, 2)),
            netlink: Some("{\"rtt\":1.5}"),
        };
        let mut out = Vec::new();
        encode(&mut out, "h", &ff);
        let d = decode(&out, Strictness::Strict).unwrap();
        assert_eq!((d.state, d.key, d.exp, d.act, d.start_time, d.end_time), (state, key, 3, 14, ff.start_time, ff.end_time));
        assert_eq!(d.received.value(&["context", "application"]), Some("\"flowd \\\"0.1\\\"\""));
        assert_eq!(d.received.value(&["usage"]), Some("{\"received\": 1, \"sent\": 2}"));
        assert_eq!(d.received.value(&["netlink"]), Some("{\"rtt\":1.5}"));
        assert_eq!(d.header.unwrap().app_name, "flowd");
    }
}

#[test]
fn test_all_valid_vectors_and_xrootd_captures_are_accepted() {
    let mut all = lines("fireflies-valid.txt");
    all.extend(lines("fireflies-xrootd-5.5.3.txt"));
    assert_eq!(all.len(), 10);
    for l in &all {
        let d = decode(l.as_bytes(), Strictness::Strict).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(d.exp > 0);
    }
    let tv4 = decode(all[3].as_bytes(), Strictness::Strict).unwrap();
    assert_eq!(tv4.state, FlowState::Ongoing);
    assert_eq!(tv4.header.unwrap().timestamp, None);
    assert_eq!(tv4.received.value(&["usage"]), Some("{\"received\":1024,\"sent\":1073741824}"));
}

#[test]
fn test_the_26_real_captures_are_accepted() {
    let all = lines("fireflies-sample.log");
    assert_eq!(all.len(), 26);
    for l in &all {
        // Strip syslog-ng's "Mon DD HH:MM:SS host " prefix and restore <134>.
        let rest = l.get(16..).unwrap();
        let body = &rest[rest.find(' ').unwrap() + 1..];
        let dgram = format!("<134>{body}");
        let d = decode(dgram.as_bytes(), Strictness::Strict).unwrap_or_else(|e| panic!("{e}: {dgram}"));
        assert!(d.exp == 16 || d.exp == 23, "{}", d.exp);
        assert_eq!(d.received.value(&["context", "application"]), Some("\"flowd v0.1.2\""));
    }
}

/// The invalid vectors with the comment line above each.
fn commented(name: &str) -> Vec<(String, String)> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SPEC).join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut why = String::new();
    let mut out = Vec::new();
    for l in text.lines().filter(|l| !l.is_empty()) {
        match l.strip_prefix('#') {
            Some(c) => why = c.to_string(),
            None => out.push((why.clone(), l.to_string())),
        }
    }
    out
}

/// The one invalid vector flowd accepts on purpose: an unknown key inside
/// `flow-lifecycle` (the schema's additionalProperties). Since issue 20 a relay keeps
/// unknown keys at any depth, as every other receiver ignores them.
fn extra_key_vector(why: &str) -> bool {
    why.contains("additionalProperties")
}

#[test]
fn test_all_invalid_vectors_are_rejected() {
    let all = commented("fireflies-invalid.txt");
    assert!(all.len() >= 14);
    assert_eq!(all.iter().filter(|(why, _)| extra_key_vector(why)).count(), 1);
    for (why, l) in all.iter().filter(|(why, _)| !extra_key_vector(why)) {
        assert!(decode(l.as_bytes(), Strictness::Strict).is_err(), "accepted ({why}): {l}");
        // Lenient mode only forgives the missing header.
        if l.starts_with('<') {
            assert!(decode(l.as_bytes(), Strictness::Lenient).is_err(), "accepted ({why}): {l}");
        } else {
            assert!(decode(l.as_bytes(), Strictness::Lenient).is_ok(), "rejected bare: {l}");
        }
    }
}

#[test]
fn test_an_unknown_key_in_a_closed_object_is_accepted_and_kept() {
    let (_, l) = commented("fireflies-invalid.txt").into_iter().find(|(why, _)| extra_key_vector(why)).unwrap();
    let d = decode(l.as_bytes(), Strictness::Strict).unwrap();
    assert_eq!(d.received.value(&["flow-lifecycle", "duration"]), Some("5"));
    let out = relay(&d, None, None);
    assert!(out.contains(r#""start-time": "2025-03-25T10:00:00.100000+00:00", "duration": 5}"#), "{out}");
}

fn producer(name: &str) -> Vec<String> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/producers").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// The relayed datagram of `d` as flowd sends it (nothing measured).
fn relay(d: &Decoded, src: Option<IpAddr>, usage: Option<(u64, u64)>) -> String {
    let r = Relay { sent_at: Micros(1_700_000_000_000_000), received: &d.received, src_ip: src, dst_ip: None, usage, netlink: None };
    let mut out = Vec::new();
    encode_relayed(&mut out, Some("relay.example"), &r);
    // Without the header (UDP_FIREFLY_SYSLOG=False): the same JSON alone.
    let mut bare = Vec::new();
    encode_relayed(&mut bare, None, &r);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.as_bytes()[text.find('{').unwrap()..], bare[..], "header-less relay is the same body");
    assert!(text.starts_with("<134>1 2023-11-14T22:13:20.000000+00:00 relay.example flowd - firefly-json - {"), "{text}");
    text
}

fn body(d: &str) -> serde_json::Value {
    serde_json::from_str(&d[d.find('{').unwrap()..]).unwrap()
}

/// `out` has every member of `input` with the same value (times: the same instant)
/// and nothing else.
fn same_json(input: &serde_json::Value, out: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (input, out) {
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "keys of {path}");
            for (k, v) in a {
                same_json(v, &b[k], &format!("{path}.{k}"));
            }
        }
        (Value::String(a), Value::String(b)) if path.ends_with("-time") => {
            assert_eq!(parse_rfc3339(a), parse_rfc3339(b), "{path}: {a} vs {b}");
            assert!(parse_rfc3339(a).is_some(), "{path}");
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn test_every_producer_is_relayed_faithfully() {
    let mut all = lines("fireflies-valid.txt");
    all.extend(lines("fireflies-xrootd-5.5.3.txt"));
    all.extend(producer("fireflies-dcache.txt"));
    all.extend(producer("fireflies-flowd-go.txt"));
    assert_eq!(all.len(), 10 + 6 + 5);
    for l in &all {
        let d = decode(l.as_bytes(), Strictness::Lenient).unwrap_or_else(|e| panic!("{e}: {l}"));
        let out = relay(&d, None, None);
        assert!(out.starts_with("<134>1 2023-11-14T22:13:20.000000+00:00 relay.example flowd - firefly-json - {"), "{out}");
        same_json(&body(l), &body(&out), "");
        // Key order and every value text flowd does not own are kept as received.
        let again = decode(out.as_bytes(), Strictness::Strict).unwrap();
        assert_eq!((again.state, again.key, again.exp, again.act, again.start_time, again.end_time), (d.state, d.key, d.exp, d.act, d.start_time, d.end_time));
        for (a, b) in d.received.members.iter().zip(&again.received.members) {
            assert_eq!((a.nested, d.received.text(a.key)), (b.nested, again.received.text(b.key)));
            if a.role != Role::Time && a.role != Role::Object {
                assert_eq!(d.received.text(a.value), again.received.text(b.value), "{l}");
            }
        }
    }
}

#[test]
fn test_dcache_usage_storage_stats_and_nanosecond_times_are_kept() {
    let dc = producer("fireflies-dcache.txt");
    let start = decode(dc[0].as_bytes(), Strictness::Strict).unwrap();
    let out = relay(&start, None, None);
    assert!(out.contains(r#", "usage": {}, "#), "an empty usage stays empty: {out}");
    assert!(!out.contains("\"received\""), "nothing invented: {out}");
    assert!(out.contains(r#""start-time": "2026-03-02T09:14:07.511904+00:00""#), "Z with six digits: same instant, flowd's form: {out}");
    let end = decode(dc[1].as_bytes(), Strictness::Strict).unwrap();
    let out = relay(&end, None, None);
    assert!(out.contains(r#""storage-stats": {"read-active":"PT2M31.224S","connection-time":153558,"#), "{out}");
    assert!(out.contains(r#""current-time": "2026-03-02T09:16:41.077190321Z""#), "nine digits: passed on as received: {out}");
    assert!(out.contains(r#""end-time": "2026-03-02T09:16:41.061000+00:00""#), "{out}");
    // flowd's own measurement is added only where the producer sent nothing.
    let out = relay(&start, None, Some((7, 8)));
    assert!(out.contains(r#", "usage": {}, "#) && !out.contains("\"received\": 7"), "{out}");
    let xrd = decode(lines("fireflies-xrootd-5.5.3.txt")[1].as_bytes(), Strictness::Strict).unwrap();
    assert!(relay(&xrd, None, None).contains(r#""netlink": {"rtt":0.480}"#), "number text kept");
    let go = decode(producer("fireflies-flowd-go.txt")[0].as_bytes(), Strictness::Lenient).unwrap();
    let out = relay(&go, None, Some((7, 8)));
    assert!(!out.contains("current-time"), "not invented: {out}");
    assert!(out.ends_with(r#""application": "flowd-go-2.4.2"}, "usage": {"received": 7, "sent": 8}}"#), "{out}");
}

#[test]
fn test_unknown_keys_at_every_depth_are_kept_in_order() {
    let d = concat!(
        r#"{"x-first":[1,{"a":null}],"version":1,"flow-lifecycle":{"state":"end","x-lc":"v","start-time":"2025-03-25T10:00:00Z","#,
        r#""end-time":"2025-03-25T11:00:00+01:00"},"flow-id":{"afi":"ipv4","src-ip":"192.0.2.1","dst-ip":"192.0.2.2","protocol":"tcp","#,
        r#""src-port":1,"dst-port":2,"flow-id":"abc"},"context":{"experiment-id":2,"activity-id":9,"x-ctx":{"deep":{"deeper":[true]}}},"#,
        r#""usage":{"received":1,"sent":2,"x-u":-1.5e3},"storage-stats":{"read-bw":1},"\u0078-escaped":"\u00e9"}"#
    );
    let dec = decode(d.as_bytes(), Strictness::Lenient).unwrap();
    let out = relay(&dec, None, None);
    same_json(&body(d), &body(&out), "");
    assert!(out.contains(r#"{"x-first": [1,{"a":null}], "version": 1, "flow-lifecycle": {"state": "end", "x-lc": "v", "start-time": "2025-03-25T10:00:00.000000+00:00", "end-time": "2025-03-25T10:00:00.000000+00:00"}, "flow-id": {"afi": "ipv4", "#), "{out}");
    assert!(out.contains(r#""x-u":-1.5e3}"#) && out.ends_with(r#""storage-stats": {"read-bw":1}, "\u0078-escaped": "\u00e9"}"#), "{out}");
    assert_eq!(dec.received.value(&["flow-id", "flow-id"]), Some("\"abc\""));
}

#[test]
fn test_rewritten_addresses_and_measurements_are_the_only_changes() {
    let d = decode(lines("fireflies-valid.txt")[2].as_bytes(), Strictness::Strict).unwrap();
    let out = relay(&d, Some("203.0.113.5".parse().unwrap()), Some((1, 2)));
    let (a, b) = (body(&lines("fireflies-valid.txt")[2]), body(&out));
    assert_eq!(b["flow-id"]["src-ip"], "203.0.113.5");
    assert_eq!(b["flow-id"]["dst-ip"], a["flow-id"]["dst-ip"]);
    assert_eq!(b["usage"], serde_json::json!({"received": 1, "sent": 2}));
    let mut b = b;
    b["flow-id"]["src-ip"] = a["flow-id"]["src-ip"].clone();
    b.as_object_mut().unwrap().remove("usage");
    same_json(&a, &b, "");
}

#[test]
fn test_duplicate_keys_flowd_reads_are_rejected_others_kept() {
    let base = r#"{"version":1,"flow-lifecycle":{"state":"start","start-time":"2025-03-25T10:00:00Z"},"flow-id":{"afi":"ipv4","src-ip":"192.0.2.1","dst-ip":"192.0.2.2","protocol":"tcp","src-port":1,"dst-port":2},"context":{"experiment-id":2,"activity-id":9}"#;
    assert!(decode(format!("{base}}}").as_bytes(), Strictness::Lenient).is_ok());
    for dup in [r#","version":1}"#, r#","context":{"experiment-id":3,"activity-id":9}}"#, r#","usage":{},"usage":{}}"#] {
        assert_eq!(decode(format!("{base}{dup}").as_bytes(), Strictness::Lenient).map(|_| ()).unwrap_err().reason(), "schema_violation", "{dup}");
    }
    let twice = base.replace(r#""src-port":1"#, r#""src-port":1,"src-port":7"#);
    assert!(decode(format!("{twice}}}").as_bytes(), Strictness::Lenient).is_err());
    let d = decode(format!(r#"{base},"x":1,"x":2}}"#).as_bytes(), Strictness::Lenient).unwrap();
    assert!(relay(&d, None, None).ends_with(r#""x": 1, "x": 2}"#), "not flowd's to judge");
    // Broken JSON after a schema problem is still bad_json.
    let e = decode(br#"{"version":2,"flow-lifecycle":{"#, Strictness::Lenient).unwrap_err();
    assert_eq!(e.reason(), "bad_json");
    for (bad, why) in [(r#","usage":{"received":-1}}"#, "usage.received"), (r#","usage":[]}"#, "usage must be"), (r#","netlink":3}"#, "netlink must be")] {
        let e = decode(format!("{base}{bad}").as_bytes(), Strictness::Lenient).unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
}

/// Mutated vectors (byte flips, cuts, splices): decoding never panics, and whatever is
/// accepted is relayed as a datagram that decodes strictly to the same flow.
#[test]
fn test_mutations_never_panic_and_accepted_ones_relay_cleanly() {
    let mut all = lines("fireflies-valid.txt");
    all.extend(producer("fireflies-dcache.txt"));
    all.extend(producer("fireflies-flowd-go.txt"));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut accepted, mut total) = (0, 0);
    for l in &all {
        for _ in 0..400 {
            let mut b = l.as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let i = (next() as usize) % b.len();
                match next() % 4 {
                    0 => b[i] = b"{}[]\":,0a \\"[(next() % 10) as usize],
                    1 => b.truncate(i.max(1)),
                    2 => b.insert(i, b"\"{}"[(next() % 3) as usize]),
                    _ => {
                        b.remove(i);
                    }
                }
                if b.is_empty() {
                    break;
                }
            }
            total += 1;
            if let Ok(d) = decode(&b, Strictness::Lenient) {
                accepted += 1;
                let again =
                    decode(relay(&d, None, Some((1, 2))).as_bytes(), Strictness::Strict).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&b)));
                assert_eq!((again.key, again.state, again.exp, again.act), (d.key, d.state, d.exp, d.act));
            }
        }
    }
    assert!(accepted > 0 && accepted < total, "{accepted}/{total}");
}

/// The hand-written JSON checker accepts exactly what serde_json accepts, on thousands
/// of mutated bodies and on edge cases.
#[test]
fn test_json_checker_agrees_with_serde_json() {
    let check = |t: &str| {
        let i = t.len() - t.trim_start_matches([' ', '\t', '\n', '\r']).len();
        scan::skip_value(t, i).is_ok_and(|end| scan::at_end(t.as_bytes(), end))
    };
    let serde = |t: &str| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok();
    let edge = [
        "0",
        "-0",
        "01",
        "-",
        "1.",
        "1.5e",
        "1e+5",
        "2E-3",
        ".5",
        "1.5.5",
        "true",
        "tru",
        "nul",
        "null ",
        " [1 , 2 ]",
        "[1,]",
        "[,1]",
        "{}",
        "{,}",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{1:2}"#,
        r#""\u00e9\n\/""#,
        r#""\x""#,
        r#""\u12g4""#,
        "\"tab\there\"",
        "\"é\"",
        r#"[[[]]]"#,
        "[1 2]",
        "{\"a\":{\"b\":[null,false]}}",
    ];
    for t in edge {
        assert_eq!(check(t), serde(t), "{t:?}");
    }
    let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
    assert!(!check(&deep) && check(&format!("{}{}", "[".repeat(100), "]".repeat(100))));
    let mut bodies: Vec<String> =
        producer("fireflies-dcache.txt").iter().chain(&producer("fireflies-flowd-go.txt")).map(|l| l[l.find('{').unwrap()..].to_string()).collect();
    bodies.push(r#"{"a":[1,-2.5e+3,true,false,null,"s\"\u0041"],"b":{"c":{}}}"#.to_string());
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut differ = 0;
    for b in &bodies {
        for _ in 0..2000 {
            let mut m = b.as_bytes().to_vec();
            let i = (next() as usize) % m.len();
            match next() % 3 {
                0 => m[i] = b"{}[]\":,0-.eE \\tfnu1"[(next() % 19) as usize],
                1 => m.truncate(i),
                _ => m.insert(i, b"{}[]\":,-.0 \\"[(next() % 12) as usize]),
            }
            let Ok(t) = std::str::from_utf8(&m) else { continue };
            if check(t) != serde(t) {
                differ += 1;
                eprintln!("differs: {t}");
            }
        }
    }
    assert_eq!(differ, 0);
}

#[test]
fn test_garbage_never_panics() {
    for d in [&b""[..], b"<", b"<134>", b"<134>1 ", b"<1344>1 - - - - - - {}", b"<134>1 - h a - - [x {}", b"{", b"[1]", b"\xff\xfe"] {
        assert!(decode(d, Strictness::Lenient).is_err());
    }
}

#[test]
fn test_hostname_sanitising() {
    assert_eq!(syslog_hostname("no idea!"), "noidea!");
    assert_eq!(syslog_hostname(""), "-");
    assert_eq!(syslog_hostname("se01.example.org"), "se01.example.org");
}

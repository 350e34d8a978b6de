//! np_api → udp_firefly end to end: pipe lines in, firefly datagrams caught on loopback.

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{json_of, Flowd, Sink, TempDir};

const T: Duration = Duration::from_secs(5);

/// Validates datagrams with the independent Python checker (schema + collector grok).
pub fn validate_externally(datagrams: &[String]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/validate_firefly.py");
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/spec/firefly.schema.json");
    let ready = Command::new("python3").args(["-c", "import jsonschema"]).output().is_ok_and(|o| o.status.success());
    if !ready {
        crate::util::skip("firefly schema check: needs python3 with jsonschema (pip install jsonschema)");
        return;
    }
    let mut child =
        Command::new("python3").arg(script).arg(schema).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python3 is needed for schema validation");
    let mut stdin = child.stdin.take().unwrap();
    for d in datagrams {
        assert!(!d.contains('\n'));
        writeln!(stdin, "{d}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "external validation failed:\n{text}");
}

#[test]
fn ipv4_and_ipv6_start_ongoing_end_fireflies_are_valid_and_exact() {
    let sink4 = Sink::v4();
    let sink6 = Sink::v6();
    // The peer sink plays the flow's destination (dst port is irrelevant; fireflies go to
    // UDP_FIREFLY_PORT on the dst address), the v4 collector gets a copy of everything.
    let f = Flowd::start(&format!("UDP_FIREFLY_PORT={}\nUDP_FIREFLY_DST='{}'", sink6.port(), sink4.addr()));
    f.write("start tcp ::1 1094 ::1 53012 atlas Debug\nstart udp 127.0.0.1 2811 127.0.0.2 40506 cms Analysis Input\n");
    f.write("ongoing tcp ::1 1094 ::1 53012 2 9\nongoing udp 127.0.0.1 2811 127.0.0.2 40506 3 14\n");
    std::thread::sleep(Duration::from_millis(20));
    f.write("end tcp ::1 1094 ::1 53012 2 9\nend udp 127.0.0.1 2811 127.0.0.2 40506 3 14\n");
    let collected = sink4.recv(6, T);
    assert_eq!(collected.len(), 6, "{}", f.stderr());
    let peer6 = sink6.recv(3, T);
    assert_eq!(peer6.len(), 3, "the IPv6 flow's fireflies also go to its dst [::1]");
    validate_externally(&collected);
    validate_externally(&peer6);
    let states: Vec<String> = collected.iter().map(|d| json_of(d)["flow-lifecycle"]["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states, ["start", "start", "ongoing", "ongoing", "end", "end"]);
    let host = flowd::wire::firefly::syslog_hostname(&flowd::sys::hostname());
    for d in &collected {
        assert!(d.starts_with("<134>1 20"), "{d}");
        assert!(d.contains(&format!(" {host} flowd - firefly-json - {{\"version\": 1, ")), "{d}");
        let j = json_of(d);
        assert_eq!(j["context"]["application"], format!("flowd {}", env!("CARGO_PKG_VERSION")));
    }
    let s6 = json_of(&collected[0]);
    assert_eq!(s6["flow-id"]["afi"], "ipv6");
    assert_eq!((s6["context"]["experiment-id"].as_u64(), s6["context"]["activity-id"].as_u64()), (Some(2), Some(9)));
    let s4 = json_of(&collected[1]);
    assert_eq!(s4["flow-id"]["protocol"], "udp");
    assert_eq!((s4["context"]["experiment-id"].as_u64(), s4["context"]["activity-id"].as_u64()), (Some(3), Some(14)));
    // end and ongoing carry the real start time.
    let start = s6["flow-lifecycle"]["start-time"].clone();
    assert_eq!(json_of(&collected[2])["flow-lifecycle"]["start-time"], start);
    let e6 = json_of(&collected[4]);
    assert_eq!(e6["flow-lifecycle"]["start-time"], start);
    assert!(e6["flow-lifecycle"]["end-time"].as_str().unwrap() > start.as_str().unwrap());
    assert!(json_of(&collected[2])["flow-lifecycle"].get("end-time").is_none());
}

#[test]
fn bad_lines_are_rejected_and_counted_without_losing_neighbours() {
    let sink = Sink::v4();
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr()));
    let long = "x".repeat(5000);
    f.write(&format!(
        "start tcp 192.0.2.1 1 198.51.100.1 2 2 9\nstart tcp 1.2.3.4\nbegin tcp 192.0.2.1 1 198.51.100.1 2 2 9\n{long}\n\
         start tcp 192.0.2.1 0 198.51.100.1 2 2 9\nstart tcp 192.0.2.1 3 198.51.100.1 2 nosuchexp 1\n\
         start tcp 192.0.2.1 4 198.51.100.1 2 atlas nosuchact\nstart tcp 192.0.2.1 5 ::1 2 2 9\n\r\n\
         start tcp 192.0.2.1 6 198.51.100.1 2 2 9\r\n"
    ));
    let got = sink.recv(3, T);
    assert_eq!(got.len(), 2, "exactly the two valid lines: {got:?}");
    let ports: Vec<u64> = got.iter().map(|d| json_of(d)["flow-id"]["src-port"].as_u64().unwrap()).collect();
    assert_eq!(ports, [1, 6]);
    let log = f.stderr();
    for why in [
        "expected 8 fields",
        "state must be",
        "line too long",
        "port must be",
        "experiment is not in the registry",
        "activity is not in the registry",
        "different address families",
    ] {
        assert!(log.contains(why), "missing {why:?} in log:\n{log}");
    }
}

#[test]
fn lines_split_across_writes_are_reassembled() {
    let sink = Sink::v4();
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr()));
    let mut w = std::fs::OpenOptions::new().write(true).open(&f.pipe).unwrap();
    for part in ["start tcp 192.0.", "2.1 7 198.51.100.1 2", " 2 9", "\nend tcp 192.0.2.1 7 198.51.100.1 2 2 9\n"] {
        w.write_all(part.as_bytes()).unwrap();
        w.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let got = sink.recv(2, T);
    assert_eq!(got.len(), 2, "{}", f.stderr());
    assert_eq!(json_of(&got[0])["flow-id"]["src-port"], 7);
}

#[test]
fn a_burst_of_10k_events_arrives_complete() {
    let sink = Sink::v4();
    sink.sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    set_rcvbuf(&sink.sock);
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr()));
    let mut text = String::new();
    for i in 0..5000u32 {
        text.push_str(&format!("start tcp 192.0.2.1 {} 198.51.100.1 443 2 9\n", 1000 + i));
    }
    for i in 0..5000u32 {
        text.push_str(&format!("end tcp 192.0.2.1 {} 198.51.100.1 443 2 9\n", 1000 + i));
    }
    let pipe = f.pipe.clone();
    let writer = std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new().write(true).open(pipe).unwrap();
        for chunk in text.as_bytes().chunks(4096) {
            w.write_all(chunk).unwrap();
        }
    });
    let got = sink.recv(10_000, Duration::from_secs(20));
    writer.join().unwrap();
    assert_eq!(got.len(), 10_000);
}

fn set_rcvbuf(s: &UdpSocket) {
    nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::RcvBuf, &(8 << 20)).unwrap();
}

#[test]
fn registry_names_from_a_file_and_from_http_with_refresh() {
    let d = TempDir::new("reg");
    let reg = d.path().join("api.json");
    std::fs::write(&reg, r#"{"experiments":[{"expName":"newexp","expId":42,"activities":[{"activityName":"Bulk Copy","activityId":7}]}]}"#).unwrap();
    let sink = Sink::v4();
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nFLOW_MAP_API='{}'", sink.addr(), reg.display()));
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 NEWEXP bulk_copy\n");
    let got = sink.recv(1, T);
    assert_eq!(got.len(), 1, "{}", f.stderr());
    assert_eq!(json_of(&got[0])["context"]["experiment-id"], 42);
    drop(f);

    // HTTP: a tiny server that serves v1 first, then v2.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api.json", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        for (i, stream) in listener.incoming().take(2).enumerate() {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 2048];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let body = if i == 0 {
                r#"{"experiments":[{"expName":"one","expId":101,"activities":[{"activityName":"a","activityId":1}]}]}"#
            } else {
                r#"{"experiments":[{"expName":"two","expId":102,"activities":[{"activityName":"a","activityId":1}]}]}"#
            };
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", body.len(), body);
        }
    });
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nFLOW_MAP_API='{url}'\nFLOW_MAP_REFRESH=1", sink.addr()));
    // flowd is ready before the registry arrives (fetched in the background).
    f.wait_log("registry: refreshed from", Duration::from_secs(10));
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 one a\n");
    assert_eq!(json_of(&sink.recv(1, T)[0])["context"]["experiment-id"], 101);
    f.wait_log_count("registry: refreshed from", 2, Duration::from_secs(10));
    f.write("start tcp 192.0.2.1 2 198.51.100.1 2 two a\n");
    assert_eq!(json_of(&sink.recv(1, T)[0])["context"]["experiment-id"], 102);
    server.join().unwrap();
    // The server is gone: refreshes fail, the last good registry stays.
    f.wait_log("refresh failed, keeping the registry in force", Duration::from_secs(15));
    f.write("start tcp 192.0.2.1 3 198.51.100.1 2 two a\n");
    assert_eq!(json_of(&sink.recv(1, T)[0])["context"]["experiment-id"], 102);
}

#[test]
fn unreachable_registry_at_start_falls_back_to_the_bundled_one() {
    let sink = Sink::v4();
    let f =
        Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nFLOW_MAP_API='http://127.0.0.1:9/api.json'\nFLOW_MAP_TIMEOUT=1", sink.addr()));
    assert!(f.stderr().contains("starting on the bundled registry; fetching http://127.0.0.1:9/api.json in the background"), "{}", f.stderr());
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 lhcb default\n");
    assert_eq!(json_of(&sink.recv(1, T)[0])["context"]["experiment-id"], 4);
}

#[test]
fn deleted_or_replaced_pipe_is_recreated() {
    let sink = Sink::v4();
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr()));
    std::fs::remove_file(&f.pipe).unwrap();
    f.wait_log("re-created it", Duration::from_secs(10));
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 2 9\n");
    assert_eq!(sink.recv(1, T).len(), 1);
    std::fs::remove_file(&f.pipe).unwrap();
    // A producer that opens the path with O_CREAT (StoRM WebDAV) writes into a regular
    // file: its lines are reported, in order, and the FIFO comes back.
    std::fs::write(&f.pipe, b"start tcp 192.0.2.1 3 198.51.100.1 2 2 9\nnot a pipe line\nend tcp 192.0.2.1 3 198.51.100.1 2 2 9\n").unwrap();
    f.wait_log("replaced by a non-FIFO file", Duration::from_secs(10));
    let got = sink.recv(2, T);
    assert_eq!((json_of(&got[0])["flow-id"]["src-port"].as_u64(), json_of(&got[1])["flow-lifecycle"]["state"].as_str()), (Some(3), Some("end")));
    f.wait_log("recovered 3 lines (2 flow events)", T);
    std::thread::sleep(Duration::from_millis(100));
    f.write("start tcp 192.0.2.1 2 198.51.100.1 2 2 9\n");
    assert_eq!(sink.recv(1, T).len(), 1);
    assert!(
        std::fs::read_dir(f.dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".recovered-")),
        "the recovered file is removed once read"
    );
}

#[test]
fn source_address_override() {
    let sink = Sink::v4();
    let f = Flowd::start(&format!(
        "UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nUDP_FIREFLY_IP4_SRC='203.0.113.9'\nUDP_FIREFLY_IP6_SRC='2001:db8::99'",
        sink.addr()
    ));
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 2 9\nstart tcp 2001:db8::1 1 2001:db8::2 2 2 9\n");
    let got = sink.recv(2, T);
    assert_eq!(json_of(&got[0])["flow-id"]["src-ip"], "203.0.113.9");
    assert_eq!(json_of(&got[1])["flow-id"]["src-ip"], "2001:db8::99");
    assert_eq!(json_of(&got[1])["flow-id"]["dst-ip"], "2001:db8::2");
}

#[test]
fn a_backlog_larger_than_one_turn_is_resumed_without_new_input() {
    let sink = Sink::v4();
    let f = Flowd::start(&format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr()));
    // ~900 KiB of rejected lines, then one valid line, in a single write: the reader stops
    // at its per-turn cap (256 KiB) several times and must resume by itself.
    let mut text = "start tcp 192.0.2.1 1 198.51.100.1 2 2 9999999999999\n".repeat(17_000);
    text.push_str("start tcp 192.0.2.1 77 198.51.100.1 2 2 9\n");
    let mut w = std::fs::OpenOptions::new().write(true).open(&f.pipe).unwrap();
    w.write_all(text.as_bytes()).unwrap();
    let got = sink.recv(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "{}", f.stderr());
    assert_eq!(json_of(&got[0])["flow-id"]["src-port"], 77);
    assert!(f.stderr().contains("similar messages suppressed") || f.stderr().contains("rejected line"));
}

/// Runs `openssl ARGS` in `dir`; panics with its output on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An https FLOW_MAP_API signed by a private CA: with SSL_CERT_FILE naming that CA the
/// registry is fetched (and its names used); without it the fetch fails and the bundled
/// registry stays in force.
#[test]
fn registry_over_https_with_a_private_ca_from_ssl_cert_file() {
    if Command::new("openssl").arg("version").output().is_err() {
        crate::util::skip("openssl not installed (apt-get install openssl)");
        return;
    }
    let pki = TempDir::new("pki");
    let d = pki.path();
    openssl(d, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=flowd test CA"]);
    openssl(d, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(d.join("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(
        d,
        &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem", "-days", "1", "-extfile", "leaf.ext"],
    );
    std::fs::write(d.join("api.json"), r#"{"experiments":[{"expName":"tlsexp","expId":88,"activities":[{"activityName":"pinned","activityId":6}]}]}"#).unwrap();
    let server = "import http.server, ssl, sys\n\
        srv = http.server.HTTPServer(('127.0.0.1', 0), lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=sys.argv[1]))\n\
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        ctx.load_cert_chain(sys.argv[1] + '/leaf.pem', sys.argv[1] + '/leaf.key')\n\
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
        print(srv.server_address[1], flush=True)\n\
        srv.serve_forever()\n";
    let mut py = Command::new("python3").args(["-c", server]).arg(d).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(py.stdout.take().unwrap()), &mut port).unwrap();
    let url = format!("https://127.0.0.1:{}/api.json", port.trim());
    let sink = Sink::v4();
    let cfg = |dir: &TempDir| Flowd::config_text(dir.path(), &format!("UDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'\nFLOW_MAP_API='{url}'", sink.addr()));

    let dir = TempDir::new("tls-ok");
    let text = cfg(&dir);
    let mut cmd = Command::new(crate::util::bin());
    cmd.env("SSL_CERT_FILE", d.join("ca.pem"));
    let f = Flowd::spawn(cmd, dir, &text);
    f.wait_log("registry: refreshed from", T);
    f.write("start tcp 192.0.2.1 1 198.51.100.1 2 tlsexp pinned\n");
    let got = sink.recv(1, T);
    assert_eq!((json_of(&got[0])["context"]["experiment-id"].as_u64(), json_of(&got[0])["context"]["activity-id"].as_u64()), (Some(88), Some(6)));
    drop(f);

    let dir = TempDir::new("tls-untrusted");
    let text = cfg(&dir);
    let mut cmd = Command::new(crate::util::bin());
    cmd.env("SSL_CERT_FILE", d.join("leaf.ext"));
    let f = Flowd::spawn(cmd, dir, &text);
    f.wait_log("refresh failed, keeping the registry in force", T);
    let _ = py.kill();
    let _ = py.wait();
}

//! The api plugin on the real binary: flowd-go's `POST /flow` in, fireflies out, its
//! answers, and the listener's limits (shared with the metrics listener).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::metrics::{connect, free_port, raw, read_resp, samples, scrape, Resp};
use crate::util::{http_get, json_of, metric, Flowd, Sink};

const T: Duration = Duration::from_secs(5);

/// flowd-go's request as PRODUCERS.md gives it.
const GO_REQUEST: &str = r#"{"State":2,"Protocol":0,"Family":10,"Src":"[2001:db8::1]:1094","Dst":"[2001:db8:1::2]:53012",
 "Experiment":2,"Activity":9,"StartTs":"2026-03-01T10:00:00.1Z","Application":"x"}"#;

/// flowd with the api plugin and the metrics listener on free ports, fireflies to `sink`
/// (collector) only. Returns it with (api port, metrics port).
fn start(sink: &Sink) -> (Flowd, u16, u16) {
    let (api, metrics) = (free_port(), free_port());
    let f = Flowd::start(&format!("PLUGIN='api'\nAPI_PORT={api}\nPROMETHEUS_SRV_PORT={metrics}\nUDP_FIREFLY_TO_PEER=False\nUDP_FIREFLY_DST='{}'", sink.addr()));
    (f, api, metrics)
}

fn post(port: u16, content_type: &str, body: &str) -> Resp {
    let req = format!("POST /flow HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    raw(port, req.as_bytes())
}

fn message(r: &Resp) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    v["message"].as_str().unwrap_or_else(|| panic!("no message: {}", r.text())).to_string()
}

#[test]
fn flowd_go_request_becomes_a_firefly_and_is_echoed() {
    let sink = Sink::v4();
    let (f, api, metrics) = start(&sink);
    let r = post(api, "application/json", GO_REQUEST);
    assert_eq!(r.code, 200, "{}\n{}", r.text(), f.stderr());
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(
        r.text(),
        "{\n    \"State\": 2,\n    \"Protocol\": 0,\n    \"Family\": 10,\n    \"Src\": \"[2001:db8::1]:1094\",\n    \"Dst\": \"[2001:db8:1::2]:53012\",\n    \
         \"Experiment\": 2,\n    \"Activity\": 9,\n    \"StartTs\": \"2026-03-01T10:00:00.1Z\",\n    \"EndTs\": \"0001-01-01T00:00:00Z\",\n    \
         \"CurrentTs\": \"0001-01-01T00:00:00Z\",\n    \"Info\": {\n        \"tcpInfo\": null\n    },\n    \"Application\": \"x\",\n    \"FlowInfoChans\": null\n}\n"
    );
    let got = sink.recv(1, T);
    assert_eq!(got.len(), 1, "{}", f.stderr());
    crate::np_api::validate_externally(&got);
    let j = json_of(&got[0]);
    assert_eq!(j["flow-lifecycle"]["state"], "start");
    assert_eq!(j["flow-lifecycle"]["start-time"], "2026-03-01T10:00:00.100000+00:00", "StartTs is the flow's start");
    assert_eq!((j["flow-id"]["src-ip"].as_str(), j["flow-id"]["dst-port"].as_u64()), (Some("2001:db8::1"), Some(53012)));
    assert_eq!((j["context"]["experiment-id"].as_u64(), j["context"]["activity-id"].as_u64()), (Some(2), Some(9)));
    // The end: EndTs is the end time, the start time is the one remembered.
    let end = GO_REQUEST.replace("\"State\":2", "\"State\":3").replace("StartTs", "EndTs").replace("10:00:00.1Z", "10:30:00Z");
    assert_eq!(post(api, "application/json; charset=utf-8", &end).code, 200);
    let j = json_of(&sink.recv(1, T)[0]);
    assert_eq!((j["flow-lifecycle"]["state"].as_str(), j["flow-lifecycle"]["end-time"].as_str()), (Some("end"), Some("2026-03-01T10:30:00.000000+00:00")));
    assert_eq!(j["flow-lifecycle"]["start-time"], "2026-03-01T10:00:00.100000+00:00");
    // Counted as events of the plugin "api" and as requests by route and code.
    let page = scrape(metrics);
    assert!(samples(&page, "flowd_events_total").iter().any(|(l, v)| l.contains(r#"plugin="api""#) && l.contains(r#"state="start""#) && *v == 1.0), "{page}");
    assert!(samples(&page, "flowd_api_requests_total").iter().any(|(l, v)| l == r#"route="/flow",code="200""# && *v == 2.0), "{page}");
}

#[test]
fn every_field_variant_and_every_refusal() {
    let sink = Sink::v4();
    let (f, api, metrics) = start(&sink);
    // Go's names in any case, readable states/protocols, registry names, flowd-go's README
    // address objects, Family left out: each is one firefly with the right ids.
    let variants = [
        (r#"{"state":2,"protocol":1,"family":2,"src":"127.0.0.1:1","dst":"127.0.0.2:2","experiment":3,"activity":4}"#, "udp", 3, 4),
        (r#"{"State":"start","Protocol":"tcp","Src":"127.0.0.1:3","Dst":"127.0.0.2:4","Experiment":"atlas","Activity":"Debug"}"#, "tcp", 2, 9),
        (
            r#"{"STATE":"Ongoing","Family":"ipv4","Src":{"IP":"127.0.0.1","Port":5},"Dst":{"IP":"127.0.0.2","Port":6},"Experiment":2,"Activity":9,"Extra":true}"#,
            "tcp",
            2,
            9,
        ),
    ];
    for (body, proto, exp, act) in variants {
        let r = post(api, "application/json", body);
        assert_eq!(r.code, 200, "{body}: {}", r.text());
        let got = sink.recv(1, T);
        assert_eq!(got.len(), 1, "{body}\n{}", f.stderr());
        let j = json_of(&got[0]);
        assert_eq!(
            (j["flow-id"]["protocol"].as_str(), j["context"]["experiment-id"].as_u64(), j["context"]["activity-id"].as_u64()),
            (Some(proto), Some(exp), Some(act)),
            "{body}"
        );
    }
    // Refusals: 400 with {"message": …} as flowd-go answers, nothing sent.
    let refused = [
        ("text/plain", GO_REQUEST, "Unsupported Media Type"),
        ("application/json", "{\"State\": 2,", "Syntax error"),
        ("application/json", "", "empty body"),
        ("application/json", r#"{"State":9,"Src":"127.0.0.1:1","Dst":"127.0.0.2:2","Experiment":2,"Activity":9}"#, "State"),
        ("application/json", r#"{"State":2,"Src":"127.0.0.1","Dst":"127.0.0.2:2","Experiment":2,"Activity":9}"#, "Src"),
        ("application/json", r#"{"State":2,"Family":10,"Src":"127.0.0.1:1","Dst":"127.0.0.2:2","Experiment":2,"Activity":9}"#, "Family"),
        ("application/json", r#"{"State":2,"Src":"127.0.0.1:1","Dst":"127.0.0.2:2","Experiment":"no-such-experiment","Activity":9}"#, "registry"),
        ("application/json", r#"{"State":2,"Src":"[::1]:1","Dst":"[::1]:2","Experiment":2,"Activity":9,"StartTs":"today"}"#, "StartTs"),
    ];
    for (ctype, body, want) in refused {
        let r = post(api, ctype, body);
        assert_eq!(r.code, 400, "{body}: {}", r.text());
        assert!(message(&r).contains(want), "{body}: {}", r.text());
    }
    assert!(sink.drain(Duration::from_millis(300)).is_empty(), "a refused request sends nothing");
    // Routes: GET / lists them; a wrong method is 405 with Allow, an unknown path 404.
    let r = raw(api, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.code, 200);
    let routes: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let listed: Vec<String> =
        routes["ApiRoutes"].as_array().unwrap().iter().map(|x| format!("{} {}", x["method"].as_str().unwrap(), x["path"].as_str().unwrap())).collect();
    assert_eq!(listed, ["GET /", "POST /flow"]);
    let r = raw(api, b"GET /flow HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.code, r.header("allow").as_deref(), message(&r).as_str()), (405, Some("POST"), "Method Not Allowed"));
    let r = raw(api, b"GET /dummy/start HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.code, message(&r).as_str()), (404, "Not Found"));
    let page = scrape(metrics);
    let count = |route: &str, code: &str| {
        samples(&page, "flowd_api_requests_total").iter().find(|(l, _)| *l == format!(r#"route="{route}",code="{code}""#)).map(|s| s.1)
    };
    assert_eq!(
        (count("/flow", "200"), count("/flow", "400"), count("/", "200"), count("/flow", "405"), count("other", "404")),
        (Some(3.0), Some(8.0), Some(1.0), Some(1.0), Some(1.0)),
        "{page}"
    );
}

/// A registry miss is refused as flowd-go refuses it and, as for a pipe line, counted as a
/// `rejected` decision and remembered for `/flows/<tuple>` (`flowd explain`).
#[test]
fn a_registry_miss_is_a_decision_and_is_explained() {
    let sink = Sink::v4();
    let (f, api, metrics) = start(&sink);
    let miss = r#"{"State":2,"Src":"127.0.0.1:1094","Dst":"127.0.0.2:5005","Experiment":"nosuchexp","Activity":9}"#;
    let r = post(api, "application/json", miss);
    assert_eq!(r.code, 400, "{}", r.text());
    assert!(message(&r).contains("nosuchexp"), "{}", r.text());
    let page = scrape(metrics);
    let rejected = metric(&page, "flowd_decisions_total", &[("source", "api"), ("outcome", "rejected"), ("reason", "unknown_experiment")]);
    assert_eq!(rejected, 1.0, "{page}\n{}", f.stderr());
    let (code, body) = http_get(&format!("127.0.0.1:{metrics}"), "/flows/127.0.0.1/1094/127.0.0.2/5005");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("rejected") && body.contains("nosuchexp") && body.contains("\"api\""), "{body}");
    assert!(sink.drain(Duration::from_millis(300)).is_empty(), "a refused request sends nothing");
}

#[test]
fn slow_and_oversized_requests_cannot_stall_the_plugin() {
    let sink = Sink::v4();
    let (f, api, metrics) = start(&sink);
    // An announced body far over the cap: refused at once, before a byte of it is read.
    let mut big = connect(api);
    big.write_all(b"POST /flow HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{").unwrap();
    let r = read_resp(&mut big, &mut Vec::new(), false).expect("a 413");
    assert_eq!((r.code, message(&r).as_str()), (413, "Content Too Large"));
    // A client that sends half a body and then nothing holds no one up…
    let mut slow = connect(api);
    slow.write_all(b"POST /flow HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"State\":").unwrap();
    let t0 = Instant::now();
    let r = post(api, "application/json", r#"{"State":2,"Src":"127.0.0.1:1","Dst":"127.0.0.2:2","Experiment":2,"Activity":9}"#);
    assert_eq!(r.code, 200);
    assert_eq!(sink.recv(1, T).len(), 1, "{}", f.stderr());
    assert!(t0.elapsed() < Duration::from_secs(2), "served while a slow client waits");
    // …and is answered 408 once the idle timeout passes, however slowly it trickles.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        let _ = slow.write_all(b" ");
    }
    let r = read_resp(&mut slow, &mut Vec::new(), false).expect("a 408");
    assert_eq!((r.code, message(&r).as_str()), (408, "Request Timeout"));
    assert!(t0.elapsed() < Duration::from_secs(15));
    let page = scrape(metrics);
    let codes = samples(&page, "flowd_api_requests_total");
    assert!(codes.iter().any(|(l, v)| l == r#"route="-",code="413""# && *v == 1.0), "{page}");
    assert!(codes.iter().any(|(l, v)| l == r#"route="-",code="408""# && *v == 1.0), "{page}");
}

#[test]
fn a_port_in_use_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = crate::util::TempDir::new("api-port");
    let cfg = dir.path().join("flowd.cfg");
    std::fs::write(&cfg, Flowd::config_text(dir.path(), &format!("PLUGIN='api'\nAPI_PORT={port}"))).unwrap();
    let (st, _, err) = crate::util::run(&["-f", "-c", cfg.to_str().unwrap()]);
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains(&format!("api: cannot listen on TCP 127.0.0.1:{port}")), "{err}");
}

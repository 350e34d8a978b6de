//! `flowd flows` and `flowd explain`: ask the running daemon, through its metrics
//! listener, which flows it tracks and what it decided about one.
//!
//! The listener's address comes from the config (`-c CONFIG`: PROMETHEUS_SRV_HOST and
//! PROMETHEUS_SRV_PORT; an unspecified host means this host's loopback). One HTTP/1.1
//! `GET` over `std::net` with timeouts; the daemon's pages are JSON (`crate::explain`),
//! turned into an aligned table or the explanation's sentences here. When flowd is not
//! running (nothing listens), the command says so in one line and exits 1.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::cli::DEFAULT_CONFIG;
use crate::explain::parse_tuple;
use crate::flow::Micros;
use crate::wire::time::parse_rfc3339;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the answer may take.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read (a full `/flows` page is a few MB).
const MAX_ANSWER: u64 = 64 << 20;

/// What a command prints and its exit status.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Standard output.
    pub stdout: String,
    /// Standard error (one line when something went wrong).
    pub stderr: String,
    /// Exit status: 0 ok, 1 flowd not reachable (or, for `explain`, the flow is unknown
    /// to it), 2 usage or configuration error.
    pub status: u8,
}

impl Outcome {
    fn ok(stdout: String) -> Outcome {
        Outcome { stdout, stderr: String::new(), status: 0 }
    }
    fn fail(status: u8, why: String) -> Outcome {
        Outcome { stdout: String::new(), stderr: format!("flowd: {why}\n"), status }
    }
}

/// Usage of the two commands.
pub(crate) const USAGE: &str = "usage: flowd flows [-c CONFIG] [--json]\n       flowd explain [-c CONFIG] [--json] SRC SPORT DST DPORT [tcp|udp]\n";

/// Options common to both commands, and the words left.
struct Args {
    config: PathBuf,
    given: bool,
    json: bool,
    words: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args { config: PathBuf::from(DEFAULT_CONFIG), given: false, json: false, words: Vec::new() };
    let mut it = args.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-c" | "--config" => {
                a.config = PathBuf::from(it.next().ok_or_else(|| format!("{w} needs a value"))?);
                a.given = true;
            }
            s if s.starts_with("--config=") => {
                a.config = PathBuf::from(&s["--config=".len()..]);
                a.given = true;
            }
            "--json" => a.json = true,
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => a.words.push(s.to_string()),
        }
    }
    Ok(a)
}

/// The listener's address from the config: PROMETHEUS_SRV_HOST/PORT (defaults when the
/// default config file does not exist, as the daemon does).
fn listener(config: &Path, given: bool) -> Result<SocketAddr, String> {
    let cfg = if !given && !config.exists() {
        crate::config::Config::default()
    } else {
        match crate::config::load(config) {
            Ok(l) => l.config,
            Err(e) => return Err(e.to_string()),
        }
    };
    if cfg.http.port == 0 {
        return Err(format!("{}: PROMETHEUS_SRV_PORT is 0, so flowd has no listener to ask", config.display()));
    }
    let host = match cfg.http.host {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        h => h,
    };
    Ok(SocketAddr::new(host, cfg.http.port))
}

/// `GET path` from the listener at `addr`: (status code, body). Written over `std::net`
/// rather than with minreq because minreq 2.14 cannot parse an IPv6 literal host
/// (`http://[::1]:9000/` splits at the first `:`), and the listener may be on `::1`.
pub(crate) fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => format!("flowd is not running: nothing listens on {addr} (PROMETHEUS_SRV_HOST/PORT)"),
        _ => format!("cannot reach flowd's listener on {addr}: {e}"),
    })?;
    s.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string())?;
    let host = match addr {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    };
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n").map_err(|e| format!("{addr}: {e}"))?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut answer).map_err(|e| format!("no answer from flowd on {addr}: {e}"))?;
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| format!("{addr} did not answer in HTTP"))?;
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let code = head.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()).ok_or_else(|| format!("{addr} sent no HTTP status"))?;
    let mut body = answer.split_off(end + 4);
    let len = head.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.trim().parse().ok()));
    if let Some(len) = len {
        if body.len() < len {
            return Err(format!("the answer from {addr} was cut short ({} of {len} bytes)", body.len()));
        }
        body.truncate(len);
    }
    Ok((code, body))
}

/// `name(id)`, or the id alone.
fn named(v: &Value) -> String {
    let id = v["id"].as_u64().map(|i| i.to_string()).unwrap_or_else(|| "?".into());
    match v["name"].as_str() {
        Some(n) => format!("{n}({id})"),
        None => id,
    }
}

/// `3d04h`, `1h02m`, `5m07s`, `42s`.
fn age(us: i64) -> String {
    let s = (us / 1_000_000).max(0);
    match s {
        s if s >= 86_400 => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// Left-aligned columns separated by two spaces.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(c, s)| format!("{s:<w$}", w = widths[c])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The `/flows` page as a table, newest first, with the page's totals.
pub(crate) fn render_flows(page: &Value, now: Micros) -> String {
    let mut rows = vec![["PROTO", "SRC", "SPORT", "DST", "DPORT", "SOURCE", "EXPERIMENT", "ACTIVITY", "LABEL", "EVENT", "AGE", "FIREFLIES", "MARKER"]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    for f in page["flows"].as_array().into_iter().flatten() {
        let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
        let n = |k: &str| f[k].as_u64().map(|v| v.to_string()).unwrap_or_default();
        let since = f["start"].as_str().and_then(parse_rfc3339).map(|t| age(now.0 - t.0)).unwrap_or_default();
        let marker = match (f["marker"]["outcome"].as_str(), f["marker"]["label"].as_str()) {
            (Some("marked"), Some(l)) => l.to_string(),
            (Some(o), _) => format!("{o}:{}", f["marker"]["reason"].as_str().unwrap_or("")),
            (None, _) => "-".into(),
        };
        rows.push(vec![
            s("proto"),
            s("src"),
            n("sport"),
            s("dst"),
            n("dport"),
            s("source"),
            named(&f["experiment"]),
            named(&f["activity"]),
            f["label"].as_str().unwrap_or("-").to_string(),
            s("last_event"),
            since,
            n("fireflies"),
            marker,
        ]);
    }
    let mut out = table(&rows);
    let (open, shown) = (page["open"].as_u64().unwrap_or(0), page["shown"].as_u64().unwrap_or(0));
    let recent = page["recent"].as_u64().unwrap_or(0);
    if page["truncated"].as_bool() == Some(true) {
        out.push_str(&format!("{open} flows open; showing the {shown} most recently started (the listener's limit)\n"));
    } else {
        out.push_str(&format!("{open} flows open\n"));
    }
    if recent > 0 {
        out.push_str(&format!("{recent} ended, excluded or rejected flows remembered: `flowd explain SRC SPORT DST DPORT` tells about one\n"));
    }
    out
}

/// `flowd flows [-c CONFIG] [--json]`.
pub fn flows_command(args: &[String]) -> Outcome {
    let a = match parse_args(args) {
        Ok(a) if a.words.is_empty() => a,
        Ok(a) => return Outcome::fail(2, format!("flows: unexpected argument {:?}\n{USAGE}", a.words[0])),
        Err(e) => return Outcome::fail(2, format!("flows: {e}\n{USAGE}")),
    };
    let addr = match listener(&a.config, a.given) {
        Ok(x) => x,
        Err(e) => return Outcome::fail(2, e),
    };
    let (code, body) = match get(addr, "/flows") {
        Ok(r) => r,
        Err(e) => return Outcome::fail(1, e),
    };
    if code != 200 {
        return Outcome::fail(1, format!("{addr} answered /flows with HTTP {code} (is it an older flowd?)"));
    }
    if a.json {
        return Outcome::ok(String::from_utf8_lossy(&body).into_owned());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(page) => Outcome::ok(render_flows(&page, Micros::now())),
        Err(e) => Outcome::fail(1, format!("{addr}: /flows is not JSON: {e}")),
    }
}

/// `flowd explain [-c CONFIG] [--json] SRC SPORT DST DPORT [tcp|udp]`: exit 0 when flowd
/// knows the flow, 1 when it does not (or is not running).
pub fn explain_command(args: &[String]) -> Outcome {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => return Outcome::fail(2, format!("explain: {e}\n{USAGE}")),
    };
    let tuple = match parse_tuple(&a.words) {
        Ok(t) => t,
        Err(e) => return Outcome::fail(2, format!("explain: {e}\n{USAGE}")),
    };
    let addr = match listener(&a.config, a.given) {
        Ok(x) => x,
        Err(e) => return Outcome::fail(2, e),
    };
    let (code, body) = match get(addr, &tuple.path()) {
        Ok(r) => r,
        Err(e) => return Outcome::fail(1, e),
    };
    let page: Value = match (code, serde_json::from_slice::<Value>(&body)) {
        (200 | 404, Ok(p)) => p,
        (400, Ok(p)) => return Outcome::fail(2, format!("explain: {}", p["error"].as_str().unwrap_or("bad request"))),
        (c, _) => return Outcome::fail(1, format!("{addr} answered {} with HTTP {c} (is it an older flowd?)", tuple.path())),
    };
    let status = if page["found"].as_bool() == Some(true) { 0 } else { 1 };
    let stdout = if a.json {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        page["explanation"].as_array().into_iter().flatten().filter_map(Value::as_str).map(|l| format!("{l}\n")).collect()
    };
    Outcome { stdout, stderr: String::new(), status }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn test_table_is_aligned_and_names_are_shown() {
        let page = serde_json::json!({
            "open": 3, "shown": 2, "truncated": true, "recent": 1, "limit": 2,
            "flows": [
                {"proto": "tcp", "src": "2001:db8::1", "sport": 1094, "dst": "2001:db8::2", "dport": 5000, "source": "np_api",
                 "experiment": {"id": 2, "name": "atlas"}, "activity": {"id": 9, "name": "Debug"}, "label": "0x10024",
                 "last_event": "start", "start": "1970-01-01T00:00:01.000000+00:00", "fireflies": 1,
                 "marker": {"outcome": "marked", "reason": "label_set", "label": "0xD0127"}},
                {"proto": "udp", "src": "192.0.2.1", "sport": 7, "dst": "192.0.2.2", "dport": 8, "source": "firefly",
                 "experiment": {"id": 300, "name": null}, "activity": {"id": 1, "name": null},
                 "last_event": "ongoing", "start": "1970-01-01T00:00:00.000000+00:00", "fireflies": 0}
            ]
        });
        let text = render_flows(&page, Micros(3_725_000_000));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PROTO  SRC          SPORT  DST "), "{text}");
        let col = |l: &str| l.find("np_api").or_else(|| l.find("firefly")).or_else(|| l.find("SOURCE")).unwrap();
        assert_eq!(col(lines[0]), col(lines[1]));
        assert_eq!(col(lines[1]), col(lines[2]));
        assert!(lines[1].contains("atlas(2)") && lines[1].contains("Debug(9)") && lines[1].contains("0xD0127") && lines[1].contains("1h02m"), "{text}");
        assert!(lines[2].contains("300  ") && lines[2].ends_with('-'), "{text}");
        assert!(text.contains("3 flows open; showing the 2 most recently started"), "{text}");
        assert!(text.contains("1 ended, excluded or rejected flows remembered"));
    }

    #[test]
    fn test_usage_errors_and_no_listener() {
        let o = explain_command(&words(&["1.1.1.1", "1", "2.2.2.2"]));
        assert_eq!(o.status, 2);
        assert!(o.stderr.contains("expected SRC SPORT DST DPORT"), "{o:?}");
        assert_eq!(flows_command(&words(&["--bogus"])).status, 2);
        assert_eq!(flows_command(&words(&["extra"])).status, 2);
        assert_eq!(flows_command(&words(&["-c", "/nonexistent/flowd.cfg"])).status, 2, "a named config must exist");
        // Nothing listens on a port just freed: one line, status 1.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = get(SocketAddr::from(([127, 0, 0, 1], port)), "/flows").unwrap_err();
        assert!(e.starts_with("flowd is not running: nothing listens on 127.0.0.1:"), "{e}");
        assert_eq!(age(59_000_000), "59s");
        assert_eq!(age(90_061_000_000), "1d01h");
    }
}

//! The api plugin's JSON: flowd-go's `POST /flow` dialect in, its echo out.
//!
//! flowd-go (`plugins/api`, echo v4) binds the body into its Go `FlowID` struct, so the
//! dialect is Go's: field names matched case-insensitively, unknown keys ignored, `State`
//! 2/3/4 (start/end/ongoing), `Protocol` 0/1 (tcp/udp), `Family` 2/10, `Src`/`Dst` as
//! `ip:port` or `[v6]:port`, `Experiment`/`Activity` numbers, times in RFC 3339. flowd
//! also takes what a person would write: states and protocols by name, `Family` as
//! `ipv4`/`ipv6` (or left out: the addresses say it), experiment and activity as registry
//! names, and the `{"IP": …, "Port": …}` address objects of flowd-go's README (which
//! flowd-go itself refuses). The answer is what flowd-go answers: the flow echoed back as
//! Go's `json.Encoder` writes it (4-space indent, Go's escaping, zero times as
//! `0001-01-01T00:00:00Z`), or `{"message": …}`.
//!
//! Pure: no I/O, no clock, no panic on any input. Names are resolved by the plugin.

use std::net::SocketAddr;

use serde_json::Value;

use crate::flow::{FlowKey, FlowState, IdOrName, Micros, Proto};

use super::time::parse_rfc3339;

/// Go's zero `time.Time`, as it is marshalled.
pub(crate) const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A time given in a request: its value and Go's rendering of it (offset kept, fraction
/// without trailing zeros).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoTime {
    /// The instant.
    pub at: Micros,
    /// As Go marshals the parsed value.
    pub text: String,
}

/// One flow announced through `POST /flow`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiFlow {
    /// `State`.
    pub state: FlowState,
    /// `Protocol`, `Src`, `Dst`.
    pub key: FlowKey,
    /// `Experiment` (id or registry name).
    pub exp: IdOrName,
    /// `Activity` (id or registry name).
    pub act: IdOrName,
    /// `StartTs`, unless absent or Go's zero time.
    pub start: Option<GoTime>,
    /// `EndTs`, likewise.
    pub end: Option<GoTime>,
    /// `CurrentTs`, likewise.
    pub current: Option<GoTime>,
    /// `Application` (`""` when absent).
    pub application: String,
}

/// Why a body is not a flow: the text of the 400 answer's `message`.
pub(crate) type BadFlow = String;

/// The value of `name` in `obj`, matched as Go matches field names (ASCII case folded);
/// `null` is absent, as Go leaves the field alone.
fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)).filter(|v| !v.is_null())
}

fn int(v: &Value, name: &str) -> Result<i64, BadFlow> {
    v.as_i64().ok_or_else(|| format!("{name}: expected an integer, got {v}"))
}

fn state(v: Option<&Value>) -> Result<FlowState, BadFlow> {
    const WHAT: &str = "State: expected 2 (start), 3 (end) or 4 (ongoing)";
    match v {
        None => Err(format!("{WHAT}, and it is missing")),
        Some(Value::String(s)) => FlowState::parse(s.as_bytes()).ok_or_else(|| format!("{WHAT}, got {s:?}")),
        Some(v) => match int(v, "State")? {
            2 => Ok(FlowState::Start),
            3 => Ok(FlowState::End),
            4 => Ok(FlowState::Ongoing),
            n => Err(format!("{WHAT}, got {n}")),
        },
    }
}

fn proto(v: Option<&Value>) -> Result<Proto, BadFlow> {
    match v {
        // Go's zero value: TCP.
        None => Ok(Proto::Tcp),
        Some(Value::String(s)) => Proto::parse(s.as_bytes()).ok_or_else(|| format!("Protocol: expected 0 (tcp) or 1 (udp), got {s:?}")),
        Some(v) => match int(v, "Protocol")? {
            0 => Ok(Proto::Tcp),
            1 => Ok(Proto::Udp),
            n => Err(format!("Protocol: expected 0 (tcp) or 1 (udp), got {n}")),
        },
    }
}

/// `Some(true)` for IPv6, `Some(false)` for IPv4, `None` when left to the addresses.
fn family(v: Option<&Value>) -> Result<Option<bool>, BadFlow> {
    const WHAT: &str = "Family: expected 2 (IPv4) or 10 (IPv6)";
    match v {
        None => Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("ipv4") => Ok(Some(false)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("ipv6") => Ok(Some(true)),
        Some(Value::String(s)) => Err(format!("{WHAT}, got {s:?}")),
        Some(v) => match int(v, "Family")? {
            0 => Ok(None),
            2 => Ok(Some(false)),
            10 => Ok(Some(true)),
            n => Err(format!("{WHAT}, got {n}")),
        },
    }
}

fn addr(v: Option<&Value>, name: &str) -> Result<SocketAddr, BadFlow> {
    let what = || format!("{name}: expected \"ip:port\" or \"[ipv6]:port\"");
    match v {
        None => Err(format!("{}, and it is missing", what())),
        Some(Value::String(s)) => s.trim().parse::<SocketAddr>().map_err(|_| format!("{}, got {s:?}", what())),
        Some(Value::Object(o)) => {
            let ip = field(o, "IP").and_then(Value::as_str).and_then(|s| s.trim().parse().ok());
            let port = field(o, "Port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
            match (ip, port) {
                (Some(ip), Some(port)) => Ok(SocketAddr::new(ip, port)),
                _ => Err(format!("{}, or {{\"IP\": address, \"Port\": port}}, got {}", what(), Value::Object(o.clone()))),
            }
        }
        Some(v) => Err(format!("{}, got {v}", what())),
    }
}

fn id(v: Option<&Value>, name: &str) -> Result<IdOrName, BadFlow> {
    match v {
        None => Err(format!("{name}: expected an id or a registry name, and it is missing")),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(IdOrName::parse(s.trim())),
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Ok(IdOrName::Id(n)),
            None => Err(format!("{name}: expected an id or a registry name, got {v}")),
        },
    }
}

fn time(v: Option<&Value>, name: &str) -> Result<Option<GoTime>, BadFlow> {
    let Some(v) = v else { return Ok(None) };
    let s = v.as_str().ok_or_else(|| format!("{name}: expected an RFC 3339 time, got {v}"))?;
    if s == ZERO_TIME {
        return Ok(None);
    }
    match (parse_rfc3339(s), go_time_text(s)) {
        (Some(at), Some(text)) => Ok(Some(GoTime { at, text })),
        _ => Err(format!("{name}: expected an RFC 3339 time, got {s:?}")),
    }
}

/// A valid RFC 3339 time as Go's `time.Time` marshals it after parsing: `T`, the
/// fraction without trailing zeros (none when zero), `Z` for a zero offset.
fn go_time_text(s: &str) -> Option<String> {
    let date = s.get(0..10)?;
    let clock = s.get(11..19)?;
    let mut rest = s.get(19..)?;
    let mut frac = "";
    if let Some(f) = rest.strip_prefix('.') {
        let n = f.bytes().take_while(u8::is_ascii_digit).count();
        frac = f[..n].trim_end_matches('0');
        rest = &f[n..];
    }
    let offset = match rest {
        "Z" | "z" | "+00:00" | "-00:00" => "Z",
        o => o,
    };
    let dot = if frac.is_empty() { "" } else { "." };
    Some(format!("{date}T{clock}{dot}{frac}{offset}"))
}

/// Reads a `POST /flow` body.
pub fn parse_flow(body: &[u8]) -> Result<ApiFlow, BadFlow> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("empty body: a flow needs State, Src, Dst, Experiment and Activity".into());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("Syntax error: line {}, column {}: {e}", e.line(), e.column()))?;
    let Value::Object(o) = &v else {
        return Err(format!("expected a JSON object, got {}", kind(&v)));
    };
    let state = state(field(o, "State"))?;
    let proto = proto(field(o, "Protocol"))?;
    let v6 = family(field(o, "Family"))?;
    let (src, dst) = (addr(field(o, "Src"), "Src")?, addr(field(o, "Dst"), "Dst")?);
    let key = FlowKey::new(proto, src, dst).ok_or_else(|| format!("Src {src} and Dst {dst} are of different address families"))?;
    if v6.is_some_and(|v6| v6 != key.is_ipv6()) {
        return Err(format!("Family does not match the addresses ({src}, {dst})"));
    }
    let application = match field(o, "Application") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(format!("Application: expected a string, got {v}")),
    };
    Ok(ApiFlow {
        state,
        key,
        exp: id(field(o, "Experiment"), "Experiment")?,
        act: id(field(o, "Activity"), "Activity")?,
        start: time(field(o, "StartTs"), "StartTs")?,
        end: time(field(o, "EndTs"), "EndTs")?,
        current: time(field(o, "CurrentTs"), "CurrentTs")?,
        application,
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Appends `s` as a JSON string the way Go's `encoding/json` writes it (`<`, `>`, `&`,
/// U+2028 and U+2029 escaped too).
pub(crate) fn write_go_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// The 200 answer to `POST /flow`: the flow as flowd-go echoes its `FlowID` (with the
/// resolved ids and the address family in use).
pub fn write_flow(out: &mut Vec<u8>, f: &ApiFlow, exp: u32, act: u32) {
    let state = match f.state {
        FlowState::Start => 2,
        FlowState::End => 3,
        FlowState::Ongoing => 4,
    };
    let proto = match f.key.proto {
        Proto::Tcp => 0,
        Proto::Udp => 1,
    };
    let family = if f.key.is_ipv6() { 10 } else { 2 };
    let t = |t: &Option<GoTime>| t.as_ref().map_or(ZERO_TIME.to_string(), |t| t.text.clone());
    out.extend_from_slice(format!("{{\n    \"State\": {state},\n    \"Protocol\": {proto},\n    \"Family\": {family},\n    \"Src\": ").as_bytes());
    write_go_string(out, &f.key.src.to_string());
    out.extend_from_slice(b",\n    \"Dst\": ");
    write_go_string(out, &f.key.dst.to_string());
    out.extend_from_slice(format!(",\n    \"Experiment\": {exp},\n    \"Activity\": {act},\n    \"StartTs\": ").as_bytes());
    for (i, ts) in [t(&f.start), t(&f.end), t(&f.current)].iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(if i == 1 { b",\n    \"EndTs\": " } else { b",\n    \"CurrentTs\": " });
        }
        write_go_string(out, ts);
    }
    out.extend_from_slice(b",\n    \"Info\": {\n        \"tcpInfo\": null\n    },\n    \"Application\": ");
    write_go_string(out, &f.application);
    out.extend_from_slice(b",\n    \"FlowInfoChans\": null\n}\n");
}

/// An error answer's body: `{"message": …}` as echo writes it.
pub fn write_message(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(b"{\n    \"message\": ");
    write_go_string(out, message);
    out.extend_from_slice(b"\n}\n");
}

/// The answer to `GET /`: `{"ApiRoutes": [{method, path, name}, …]}`.
pub(crate) fn write_routes(out: &mut Vec<u8>, routes: &[(&str, &str, &str)]) {
    out.extend_from_slice(b"{\n    \"ApiRoutes\": [");
    for (i, (method, path, name)) in routes.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"\n        {\n            \"method\": " } else { b",\n        {\n            \"method\": " });
        write_go_string(out, method);
        out.extend_from_slice(b",\n            \"path\": ");
        write_go_string(out, path);
        out.extend_from_slice(b",\n            \"name\": ");
        write_go_string(out, name);
        out.extend_from_slice(b"\n        }");
    }
    out.extend_from_slice(b"\n    ]\n}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flowd-go's request from PRODUCERS.md.
    const GO_REQUEST: &str = r#"{"State":2,"Protocol":0,"Family":10,"Src":"[2001:db8::1]:1094","Dst":"[2001:db8:1::2]:53012",
 "Experiment":2,"Activity":9,"StartTs":"2026-03-01T10:00:00.1Z","Application":"x"}"#;

    #[test]
    fn test_flowd_go_request_and_its_echo() {
        let f = parse_flow(GO_REQUEST.as_bytes()).unwrap();
        assert_eq!(f.state, FlowState::Start);
        assert_eq!(f.key.to_string(), "tcp [2001:db8::1]:1094 -> [2001:db8:1::2]:53012");
        assert_eq!((f.exp.clone(), f.act.clone()), (IdOrName::Id(2), IdOrName::Id(9)));
        assert_eq!(f.start.as_ref().map(|t| t.text.as_str()), Some("2026-03-01T10:00:00.1Z"));
        assert_eq!(f.start.as_ref().map(|t| t.at), parse_rfc3339("2026-03-01T10:00:00.100000Z"));
        let mut out = Vec::new();
        write_flow(&mut out, &f, 2, 9);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n    \"State\": 2,\n    \"Protocol\": 0,\n    \"Family\": 10,\n    \"Src\": \"[2001:db8::1]:1094\",\n    \"Dst\": \"[2001:db8:1::2]:53012\",\n    \
             \"Experiment\": 2,\n    \"Activity\": 9,\n    \"StartTs\": \"2026-03-01T10:00:00.1Z\",\n    \"EndTs\": \"0001-01-01T00:00:00Z\",\n    \
             \"CurrentTs\": \"0001-01-01T00:00:00Z\",\n    \"Info\": {\n        \"tcpInfo\": null\n    },\n    \"Application\": \"x\",\n    \"FlowInfoChans\": null\n}\n"
        );
    }

    #[test]
    fn test_field_variants() {
        let p = |s: &str| parse_flow(s.as_bytes());
        // Go matches names case-insensitively and ignores unknown keys.
        let f = p(r#"{"state":3,"PROTOCOL":1,"src":"192.0.2.1:1","DST":"198.51.100.2:2","experiment":2,"activity":9,"Whatever":[1],"Info":{}}"#).unwrap();
        assert_eq!((f.state, f.key.proto, f.key.is_ipv6()), (FlowState::End, Proto::Udp, false));
        // Readable forms: names for state, protocol, family, experiment and activity.
        let f = p(r#"{"State":"ongoing","Protocol":"tcp","Family":"ipv6","Src":"[::1]:1","Dst":"[::1]:2","Experiment":"atlas","Activity":"Debug"}"#).unwrap();
        assert_eq!((f.state, f.exp.clone(), f.act.clone()), (FlowState::Ongoing, IdOrName::parse("atlas"), IdOrName::parse("Debug")));
        // flowd-go's README address objects; Family 0 and a missing Protocol as Go's zero values.
        let f = p(r#"{"State":4,"Family":0,"Src":{"IP":"10.0.0.1","Port":5},"Dst":{"ip":"10.0.0.2","port":6},"Experiment":1,"Activity":1}"#).unwrap();
        assert_eq!((f.key.src.to_string().as_str(), f.key.proto), ("10.0.0.1:5", Proto::Tcp));
        // Times: offsets kept, Go's zero time is "absent", null is absent.
        let f = p(r#"{"State":3,"Src":"[::1]:1","Dst":"[::1]:2","Experiment":1,"Activity":1,"StartTs":"0001-01-01T00:00:00Z","EndTs":"2026-03-01T11:00:00.250+01:00","CurrentTs":null}"#).unwrap();
        assert_eq!((f.start.clone(), f.current.clone()), (None, None));
        let end = f.end.unwrap();
        assert_eq!((end.text.as_str(), Some(end.at)), ("2026-03-01T11:00:00.25+01:00", parse_rfc3339("2026-03-01T10:00:00.25Z")));
    }

    #[test]
    fn test_bad_flows_say_what_is_wrong() {
        let cases = [
            ("", "empty body"),
            ("  \n", "empty body"),
            ("{\"State\":", "Syntax error"),
            ("[1]", "expected a JSON object, got an array"),
            (r#"{"Src":"[::1]:1","Dst":"[::1]:2","Experiment":1,"Activity":1}"#, "State"),
            (r#"{"State":1,"Src":"[::1]:1","Dst":"[::1]:2","Experiment":1,"Activity":1}"#, "got 1"),
            (r#"{"State":2.0,"Src":"[::1]:1","Dst":"[::1]:2","Experiment":1,"Activity":1}"#, "expected an integer"),
            (r#"{"State":2,"Protocol":6,"Src":"[::1]:1","Dst":"[::1]:2","Experiment":1,"Activity":1}"#, "Protocol"),
            (r#"{"State":2,"Family":2,"Src":"[::1]:1","Dst":"[::1]:2","Experiment":1,"Activity":1}"#, "Family does not match"),
            (r#"{"State":2,"Family":7,"Src":"[::1]:1","Dst":"[::1]:2","Experiment":1,"Activity":1}"#, "Family"),
            (r#"{"State":2,"Src":"::1:1","Dst":"[::1]:2","Experiment":1,"Activity":1}"#, "Src"),
            (r#"{"State":2,"Src":"[::1]:1","Dst":"10.0.0.1:2","Experiment":1,"Activity":1}"#, "different address families"),
            (r#"{"State":2,"Src":"[::1]:1","Dst":"[::1]:2","Activity":1}"#, "Experiment"),
            (r#"{"State":2,"Src":"[::1]:1","Dst":"[::1]:2","Experiment":-1,"Activity":1}"#, "Experiment"),
            (r#"{"State":2,"Src":"[::1]:1","Dst":"[::1]:2","Experiment":1,"Activity":1,"StartTs":"yesterday"}"#, "StartTs"),
            (r#"{"State":2,"Src":"[::1]:1","Dst":"[::1]:2","Experiment":1,"Activity":1,"Application":5}"#, "Application"),
        ];
        for (body, want) in cases {
            let e = parse_flow(body.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn test_go_escaping_messages_and_routes() {
        let mut out = Vec::new();
        write_go_string(&mut out, "a<b>&\"\\\n\u{1}\u{2028}é");
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\u003cb\u003e\u0026\"\\\n\u0001\u2028é""#);
        let mut out = Vec::new();
        write_message(&mut out, "Unsupported Media Type");
        assert_eq!(out, b"{\n    \"message\": \"Unsupported Media Type\"\n}\n");
        let mut out = Vec::new();
        write_routes(&mut out, &[("GET", "/", "root"), ("POST", "/flow", "flow")]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ApiRoutes"][1]["path"], "/flow");
        assert_eq!(v["ApiRoutes"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn test_arbitrary_bodies_never_panic() {
        let mut x: u32 = 99;
        for len in 0..300 {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let alphabet = br#"{}[]":,0129StaeSrcDt[::1]"#;
                    alphabet[x as usize % alphabet.len()]
                })
                .collect();
            let _ = parse_flow(&b);
        }
    }
}

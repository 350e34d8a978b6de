//! Firefly datagrams: RFC 5424 syslog header + JSON body (SPEC §1, schema v1.0.0).
//!
//! `encode` writes exactly what flowd sends for its own flows:
//! `<134>1 TIMESTAMP HOST flowd - firefly-json - ` followed by the JSON in the Python
//! flowd's byte style (`", "`/`": "` separators, its key order), every time in UTC with six
//! fraction digits. `decode` reads what other producers send (Python flowd, flowd-go,
//! XRootD, dCache): the header is optional unless `Strictness::Strict`; everything flowd
//! reads is checked against the schema's rules (required keys, types, ranges, enums,
//! afi/address agreement, `end-time` on end, a key flowd reads at most once), while keys
//! it does not know are accepted at any depth (issue 20: every receiver ignores them, and
//! a relay passes them on). The body is kept member by member (`flow::Received`), and
//! `encode_relayed` writes it back behind flowd's header with only what flowd owns changed
//! (SPEC §6). Invalid input yields a `FireflyError`, never a panic.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use super::time::{parse_rfc3339, write_rfc3339};
use crate::flow::{FlowKey, FlowState, Member, Micros, Proto, Received, Role};

/// Everything a firefly carries, as flowd emits it.
#[derive(Clone, Debug, PartialEq)]
pub struct Firefly<'a> {
    /// Lifecycle state.
    pub state: FlowState,
    /// When the message is sent (`current-time` and the syslog TIMESTAMP).
    pub current_time: Micros,
    /// When the flow started (always present).
    pub start_time: Micros,
    /// When the flow ended (`end` only).
    pub end_time: Option<Micros>,
    /// The flow (its src address may already be rewritten).
    pub key: FlowKey,
    /// Experiment id.
    pub exp: u32,
    /// Activity id.
    pub act: u32,
    /// `context.application`.
    pub application: &'a str,
    /// `usage`: (received, sent) bytes.
    pub usage: Option<(u64, u64)>,
    /// `netlink`: a compact JSON object, inserted as is.
    pub netlink: Option<&'a str>,
}

/// Turns any string into a valid RFC 5424 HOSTNAME (printable ASCII, no spaces, ≤ 255).
pub fn syslog_hostname(raw: &str) -> String {
    let h: String = raw.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    if h.is_empty() {
        "-".to_string()
    } else {
        h
    }
}

fn write_time(out: &mut Vec<u8>, t: Micros) {
    out.push(b'"');
    write_rfc3339(out, t);
    out.push(b'"');
}

/// Appends one complete datagram to `out` (which is not cleared). `hostname` must come
/// from [`syslog_hostname`].
pub fn encode(out: &mut Vec<u8>, hostname: &str, ff: &Firefly<'_>) {
    write_syslog_header(out, ff.current_time, hostname);
    encode_json(out, ff);
}

/// The RFC 5424 header flowd puts before the JSON of every firefly it sends (SPEC §1).
fn write_syslog_header(out: &mut Vec<u8>, at: Micros, hostname: &str) {
    out.extend_from_slice(b"<134>1 ");
    write_rfc3339(out, at);
    out.push(b' ');
    out.extend_from_slice(hostname.as_bytes());
    out.extend_from_slice(b" flowd - firefly-json - ");
}

/// Appends the JSON object alone, without the syslog header (UDP_FIREFLY_SYSLOG=False,
/// flowd-go's `prependSyslog: false`): the same bytes [`encode`] puts after the header.
pub(crate) fn encode_json(out: &mut Vec<u8>, ff: &Firefly<'_>) {
    out.extend_from_slice(b"{\"version\": 1, \"flow-lifecycle\": {\"state\": \"");
    out.extend_from_slice(ff.state.as_str().as_bytes());
    out.extend_from_slice(b"\", \"current-time\": ");
    write_time(out, ff.current_time);
    out.extend_from_slice(b", \"start-time\": ");
    write_time(out, ff.start_time);
    if let Some(end) = ff.end_time {
        out.extend_from_slice(b", \"end-time\": ");
        write_time(out, end);
    }
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "}}, \"flow-id\": {{\"afi\": \"{}\", \"src-ip\": \"{}\", \"dst-ip\": \"{}\", \"protocol\": \"{}\", \"src-port\": {}, \"dst-port\": {}}}, \
         \"context\": {{\"experiment-id\": {}, \"activity-id\": {}, \"application\": ",
        ff.key.afi(),
        ff.key.src.ip(),
        ff.key.dst.ip(),
        ff.key.proto.as_str(),
        ff.key.src.port(),
        ff.key.dst.port(),
        ff.exp,
        ff.act,
    );
    let _ = serde_json::to_writer(&mut *out, ff.application);
    out.push(b'}');
    if let Some((rx, tx)) = ff.usage {
        let _ = write!(out, ", \"usage\": {{\"received\": {rx}, \"sent\": {tx}}}");
    }
    if let Some(nl) = ff.netlink {
        out.extend_from_slice(b", \"netlink\": ");
        out.extend_from_slice(nl.as_bytes());
    }
    out.push(b'}');
}

/// Why a datagram was rejected. `reason()` is the metrics label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FireflyError {
    /// The syslog header is malformed (or missing where required).
    Header(&'static str),
    /// The body is not JSON (or not an object).
    Json,
    /// The body violates the firefly schema; the text names the rule.
    Schema(String),
}

impl FireflyError {
    /// Short, fixed label for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            FireflyError::Header(_) => "bad_header",
            FireflyError::Json => "bad_json",
            FireflyError::Schema(_) => "schema_violation",
        }
    }
}

impl std::fmt::Display for FireflyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FireflyError::Header(m) => write!(f, "bad syslog header: {m}"),
            FireflyError::Json => f.write_str("body is not a JSON object"),
            FireflyError::Schema(m) => write!(f, "schema violation: {m}"),
        }
    }
}

/// Whether a datagram without a syslog header is acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// Header required (what a firefly-collector accepts; what flowd emits).
    Strict,
    /// A bare JSON body is accepted too (transfer services that skip the header).
    Lenient,
}

/// The syslog header fields flowd cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// TIMESTAMP (`None` for the NILVALUE `-`).
    pub timestamp: Option<Micros>,
    /// HOSTNAME.
    pub hostname: String,
    /// APP-NAME.
    pub app_name: String,
}

/// A decoded, schema-valid firefly.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The syslog header, if there was one.
    pub header: Option<Header>,
    /// Lifecycle state.
    pub state: FlowState,
    /// `current-time`, if present.
    pub current_time: Option<Micros>,
    /// `start-time` (required by the schema).
    pub start_time: Micros,
    /// `end-time`, if present.
    pub end_time: Option<Micros>,
    /// The 5-tuple.
    pub key: FlowKey,
    /// `context.experiment-id`.
    pub exp: u32,
    /// `context.activity-id`.
    pub act: u32,
    /// The JSON body as received, member by member, for a faithful relay
    /// ([`encode_relayed`]); `context.application`, `usage`, `netlink` and anything flowd
    /// does not know are read from it ([`Received::value`]).
    pub received: Received,
}

fn field<'a>(s: &'a [u8], what: &'static str) -> Result<(&'a [u8], &'a [u8]), FireflyError> {
    for (end, &c) in s.iter().enumerate() {
        if c == b' ' {
            return if end == 0 { Err(FireflyError::Header(what)) } else { Ok((&s[..end], &s[end + 1..])) };
        }
        if !c.is_ascii_graphic() {
            return Err(FireflyError::Header(what));
        }
    }
    Err(FireflyError::Header(what))
}

fn parse_header(d: &[u8]) -> Result<(Header, &[u8]), FireflyError> {
    let (pv, rest) = field(d, "PRI/VERSION")?;
    let close = pv.iter().position(|&c| c == b'>').ok_or(FireflyError::Header("PRI"))?;
    let (pri, ver) = (&pv[1..close], &pv[close + 1..]);
    if pri.is_empty() || pri.len() > 3 || !pri.iter().all(u8::is_ascii_digit) || ver.is_empty() || !ver.iter().all(u8::is_ascii_digit) {
        return Err(FireflyError::Header("PRI/VERSION"));
    }
    let (ts, rest) = field(rest, "TIMESTAMP")?;
    let timestamp = if ts == b"-" { None } else { Some(std::str::from_utf8(ts).ok().and_then(parse_rfc3339).ok_or(FireflyError::Header("TIMESTAMP"))?) };
    let (host, rest) = field(rest, "HOSTNAME")?;
    let (app, rest) = field(rest, "APP-NAME")?;
    let (_procid, rest) = field(rest, "PROCID")?;
    let (_msgid, rest) = field(rest, "MSGID")?;
    let body = if let Some(r) = rest.strip_prefix(b"- ") {
        r
    } else if rest.first() == Some(&b'[') {
        let end = rest.windows(2).position(|w| w == b"] ").ok_or(FireflyError::Header("STRUCTURED-DATA"))?;
        &rest[end + 2..]
    } else {
        return Err(FireflyError::Header("STRUCTURED-DATA"));
    };
    let header = Header { timestamp, hostname: String::from_utf8_lossy(host).into_owned(), app_name: String::from_utf8_lossy(app).into_owned() };
    Ok((header, body))
}

fn schema(msg: impl Into<String>) -> FireflyError {
    FireflyError::Schema(msg.into())
}

/// The body's JSON scanner (member spans for the relay).
mod scan;

/// The members of a body as flowd reads them, before the schema's required keys are checked.
#[derive(Default)]
struct Fields<'a> {
    version: Option<&'a str>,
    state: Option<std::borrow::Cow<'a, str>>,
    start_time: Option<Micros>,
    end_time: Option<Micros>,
    current_time: Option<Micros>,
    afi: Option<std::borrow::Cow<'a, str>>,
    src_ip: Option<std::borrow::Cow<'a, str>>,
    dst_ip: Option<std::borrow::Cow<'a, str>>,
    protocol: Option<std::borrow::Cow<'a, str>>,
    src_port: Option<&'a str>,
    dst_port: Option<&'a str>,
    exp: Option<&'a str>,
    act: Option<&'a str>,
    /// Keys flowd reads that were seen, one bit per [`Key`]. Such a key may appear once:
    /// a duplicate would mean different things to different receivers.
    seen: u32,
    /// The first schema violation; reported after the whole body proved to be JSON, so
    /// that broken JSON is always `bad_json`.
    problem: Option<FireflyError>,
}

impl Fields<'_> {
    fn bad(&mut self, e: FireflyError) {
        if self.problem.is_none() {
            self.problem = Some(e);
        }
    }

    /// Marks `key` as seen; false (and a problem) when it was seen before.
    fn once(&mut self, key: Key, name: &str) -> bool {
        let bit = 1 << key as u32;
        if self.seen & bit != 0 {
            self.bad(schema(format!("duplicate key {name:?}")));
            return false;
        }
        self.seen |= bit;
        true
    }

    fn has(&self, key: Key) -> bool {
        self.seen & (1 << key as u32) != 0
    }
}

/// A time member: `Role::Time` when flowd can write the same instant, else `Role::Kept`.
fn time_member(raw: &str, name: &str, f: &mut Fields<'_>) -> (Option<Micros>, Role) {
    let s = match scan::string(raw) {
        Ok(s) if scan::is(raw, b'"') => s,
        _ => {
            f.bad(schema(format!("{name} must be an RFC 3339 date-time string")));
            return (None, Role::Kept);
        }
    };
    let t = if s.as_bytes().get(10).is_some_and(|c| matches!(c, b'T' | b't')) { parse_rfc3339(&s) } else { None };
    let Some(t) = t else {
        f.bad(schema(format!("{name} is not an RFC 3339 date-time")));
        return (None, Role::Kept);
    };
    // Digits past the sixth that are not zero, or a leap second, cannot be written back
    // as the same instant in microseconds: such a time is passed on as received.
    let b = s.as_bytes();
    let sub_micro = b.get(19) == Some(&b'.') && b[20..].iter().take_while(|c| c.is_ascii_digit()).skip(6).any(|c| *c != b'0');
    let leap = b.get(17..19) == Some(b"60");
    (Some(t), if sub_micro || leap { Role::Kept } else { Role::Time })
}

fn str_member<'a>(raw: &'a str, name: &str, f: &mut Fields<'a>) -> Option<std::borrow::Cow<'a, str>> {
    match scan::string(raw) {
        Ok(s) if scan::is(raw, b'"') => Some(s),
        _ => {
            f.bad(schema(format!("{name} must be a string")));
            None
        }
    }
}

fn int(raw: Option<&str>, key: &str, min: i64, max: i64) -> Result<i64, FireflyError> {
    let raw = raw.ok_or_else(|| schema(format!("missing {key}")))?;
    let n = scan::integer(raw).ok_or_else(|| schema(format!("{key} must be an integer")))?;
    if n < min || n > max {
        return Err(schema(format!("{key} {n} is out of range {min}..{max}")));
    }
    Ok(n)
}

/// The keys flowd reads: at the top level, and in the three objects it reads. The
/// discriminant is the key's bit in `Fields::seen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Lifecycle,
    FlowId,
    Context,
    Version,
    Usage,
    Netlink,
    State,
    StartTime,
    EndTime,
    CurrentTime,
    Afi,
    SrcIp,
    DstIp,
    Protocol,
    SrcPort,
    DstPort,
    Exp,
    Act,
    Application,
    /// Anything else: flowd does not read it.
    Other,
}

impl Key {
    /// Which key `name` is, at the top level (`inside == None`) or inside object `inside`
    /// (`Lifecycle`, `FlowId` or `Context`): the length and first two bytes pick the only
    /// candidate, one comparison confirms it (a chain of string comparisons was a tenth of
    /// the decoding).
    fn of(inside: Option<Key>, name: &str) -> Key {
        let b = name.as_bytes();
        let (b0, b1) = (b.first().copied().unwrap_or(0), b.get(1).copied().unwrap_or(0));
        let (key, text) = match (inside, b.len(), b0, b1) {
            (None, 14, _, _) => (Key::Lifecycle, "flow-lifecycle"),
            (None, 7, b'f', _) => (Key::FlowId, "flow-id"),
            (None, 7, b'c', _) => (Key::Context, "context"),
            (None, 7, b'v', _) => (Key::Version, "version"),
            (None, 5, _, _) => (Key::Usage, "usage"),
            (None, 7, b'n', _) => (Key::Netlink, "netlink"),
            (Some(Key::Lifecycle), 5, _, _) => (Key::State, "state"),
            (Some(Key::Lifecycle), 10, _, _) => (Key::StartTime, "start-time"),
            (Some(Key::Lifecycle), 8, _, _) => (Key::EndTime, "end-time"),
            (Some(Key::Lifecycle), 12, _, _) => (Key::CurrentTime, "current-time"),
            (Some(Key::FlowId), 3, _, _) => (Key::Afi, "afi"),
            (Some(Key::FlowId), 6, b's', _) => (Key::SrcIp, "src-ip"),
            (Some(Key::FlowId), 6, b'd', _) => (Key::DstIp, "dst-ip"),
            (Some(Key::FlowId), 8, b'p', _) => (Key::Protocol, "protocol"),
            (Some(Key::FlowId), 8, b's', _) => (Key::SrcPort, "src-port"),
            (Some(Key::FlowId), 8, b'd', _) => (Key::DstPort, "dst-port"),
            (Some(Key::Context), 13, _, _) => (Key::Exp, "experiment-id"),
            (Some(Key::Context), 11, b'a', b'c') => (Key::Act, "activity-id"),
            (Some(Key::Context), 11, b'a', b'p') => (Key::Application, "application"),
            _ => return Key::Other,
        };
        if name == text {
            key
        } else {
            Key::Other
        }
    }
}

/// Walks the body: every member is recorded in `members` (for the relay) and the ones
/// flowd reads are parsed into `f`.
fn walk<'a>(body: &'a str, f: &mut Fields<'a>, members: &mut Vec<Member>) -> Result<(), FireflyError> {
    let end = scan::object(body, 0, |key, name, v| {
        let at = members.len();
        let top = |role, vend| Member { nested: false, role, key, value: scan::span(v, vend) };
        let which = Key::of(None, name);
        if matches!(which, Key::Lifecycle | Key::FlowId | Key::Context) {
            if body.as_bytes().get(v) != Some(&b'{') {
                f.bad(schema(format!("{name} must be an object")));
                let vend = scan::skip_value(body, v)?;
                members.push(top(Role::Kept, vend));
                return Ok(vend);
            }
            // A second object of the same name is a problem; its members are kept but not read.
            let first = f.once(which, name);
            members.push(top(Role::Object, v));
            let vend = scan::object(body, v, |k, inner, iv| {
                let ivend = scan::skip_value(body, iv)?;
                let raw = &body[iv..ivend];
                let mut role = Role::Kept;
                let field = if first { Key::of(Some(which), inner) } else { Key::Other };
                if field != Key::Other && f.once(field, inner) {
                    match field {
                        Key::State => f.state = str_member(raw, inner, f),
                        Key::StartTime => (f.start_time, role) = time_member(raw, inner, f),
                        Key::EndTime => (f.end_time, role) = time_member(raw, inner, f),
                        Key::CurrentTime => (f.current_time, role) = time_member(raw, inner, f),
                        Key::Afi => f.afi = str_member(raw, inner, f),
                        Key::SrcIp => {
                            f.src_ip = str_member(raw, inner, f);
                            role = Role::SrcIp;
                        }
                        Key::DstIp => {
                            f.dst_ip = str_member(raw, inner, f);
                            role = Role::DstIp;
                        }
                        Key::Protocol => f.protocol = str_member(raw, inner, f),
                        Key::SrcPort => f.src_port = Some(raw),
                        Key::DstPort => f.dst_port = Some(raw),
                        Key::Exp => f.exp = Some(raw),
                        Key::Act => f.act = Some(raw),
                        Key::Application if !scan::is(raw, b'"') => f.bad(schema("application must be a string")),
                        _ => {}
                    }
                }
                members.push(Member { nested: true, role, key: k, value: scan::span(iv, ivend) });
                Ok(ivend)
            })?;
            members[at].value = scan::span(v, vend);
            return Ok(vend);
        }
        let vend = scan::skip_value(body, v)?;
        let raw = &body[v..vend];
        let role = match which {
            Key::Version => {
                if f.once(which, name) {
                    f.version = Some(raw);
                }
                Role::Kept
            }
            Key::Usage => {
                f.once(which, name);
                if scan::is(raw, b'{') {
                    let mut bad = None;
                    scan::object(raw, 0, |_, k, uv| {
                        let uvend = scan::skip_value(raw, uv)?;
                        let n = &raw[uv..uvend];
                        let count = scan::integer(n).is_some_and(|n| n >= 0) || serde_json::from_str::<u64>(n).is_ok();
                        if matches!(k, "received" | "sent") && !count {
                            bad.get_or_insert_with(|| schema(format!("usage.{k} must be a non-negative integer")));
                        }
                        Ok(uvend)
                    })?;
                    if let Some(e) = bad {
                        f.bad(e);
                    }
                } else {
                    f.bad(schema("usage must be an object"));
                }
                Role::Usage
            }
            Key::Netlink => {
                f.once(which, name);
                if !scan::is(raw, b'{') {
                    f.bad(schema("netlink must be an object"));
                }
                Role::Netlink
            }
            _ => Role::Kept,
        };
        members.push(top(role, vend));
        Ok(vend)
    })?;
    if !scan::at_end(body.as_bytes(), end) {
        return Err(FireflyError::Json);
    }
    Ok(())
}

/// Decodes and validates one datagram. Keys flowd does not know are accepted at any depth
/// and kept in [`Decoded::received`] (the schema closes `flow-lifecycle`, `flow-id`,
/// `context` and `usage`, but every receiver ignores extra keys there, and a relay passes
/// them on); everything flowd reads is checked as the schema says.
pub fn decode(d: &[u8], strictness: Strictness) -> Result<Decoded, FireflyError> {
    let (header, body) = if d.first() == Some(&b'<') {
        let (h, b) = parse_header(d)?;
        (Some(h), b)
    } else if strictness == Strictness::Strict {
        return Err(FireflyError::Header("missing syslog header"));
    } else {
        (None, d)
    };
    let body = std::str::from_utf8(body).map_err(|_| FireflyError::Json)?;
    let mut f = Fields::default();
    let mut members = Vec::with_capacity(24);
    walk(body, &mut f, &mut members)?;
    if let Some(e) = f.problem.take() {
        return Err(e);
    }
    match f.version {
        Some(v) if scan::integer(v) == Some(1) => {}
        _ => return Err(schema("version must be the integer 1")),
    }
    if !f.has(Key::Lifecycle) {
        return Err(schema("missing flow-lifecycle"));
    }
    let state = match f.state.as_deref() {
        Some("start") => FlowState::Start,
        Some("end") => FlowState::End,
        Some("ongoing") => FlowState::Ongoing,
        _ => return Err(schema("state must be start, end or ongoing")),
    };
    let start_time = f.start_time.ok_or_else(|| schema("missing start-time"))?;
    if state == FlowState::End && f.end_time.is_none() {
        return Err(schema("end message without end-time"));
    }
    if !f.has(Key::FlowId) {
        return Err(schema("missing flow-id"));
    }
    let v6 = match f.afi.as_deref() {
        Some("ipv4") => false,
        Some("ipv6") => true,
        _ => return Err(schema("afi must be ipv4 or ipv6")),
    };
    let ip = |s: &Option<std::borrow::Cow<'_, str>>, key: &str| -> Result<IpAddr, FireflyError> {
        let s = s.as_deref().ok_or_else(|| schema(format!("{key} must be a string")))?;
        let a: IpAddr = s.parse().map_err(|_| schema(format!("{key} is not an IP address")))?;
        if a.is_ipv6() != v6 {
            return Err(schema(format!("{key} does not match afi")));
        }
        Ok(a)
    };
    let (src_ip, dst_ip) = (ip(&f.src_ip, "src-ip")?, ip(&f.dst_ip, "dst-ip")?);
    let proto = match f.protocol.as_deref() {
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        _ => return Err(schema("protocol must be tcp or udp")),
    };
    let sport = int(f.src_port, "src-port", 1, 65535)? as u16;
    let dport = int(f.dst_port, "dst-port", 1, 65535)? as u16;
    let key = FlowKey::new(proto, SocketAddr::new(src_ip, sport), SocketAddr::new(dst_ip, dport)).ok_or_else(|| schema("address families differ"))?;
    if !f.has(Key::Context) {
        return Err(schema("missing context"));
    }
    let exp = int(f.exp, "experiment-id", 0, i64::from(u32::MAX))? as u32;
    let act = int(f.act, "activity-id", 0, i64::from(u32::MAX))? as u32;
    let received = Received { body: body.into(), members };
    Ok(Decoded { header, state, current_time: f.current_time, start_time, end_time: f.end_time, key, exp, act, received })
}

/// What flowd changes in a relayed firefly; everything else in [`Received`] is sent on as
/// received (SPEC §6).
#[derive(Clone, Debug, PartialEq)]
pub struct Relay<'a> {
    /// When the datagram is sent: the syslog TIMESTAMP (the header is the relay's own).
    pub sent_at: Micros,
    /// The received body.
    pub received: &'a Received,
    /// A new `flow-id.src-ip` (flowd rewrote this host's address), else as received.
    pub src_ip: Option<IpAddr>,
    /// A new `flow-id.dst-ip`, else as received.
    pub dst_ip: Option<IpAddr>,
    /// `usage` (received, sent) flowd measured itself; added only when none was received.
    pub usage: Option<(u64, u64)>,
    /// `netlink` (a compact JSON object) flowd measured; added only when none was received.
    pub netlink: Option<&'a str>,
}

/// Appends one relayed datagram to `out`: flowd's syslog header, then the received JSON
/// member by member in the received order, with flowd's separators between the members
/// of the top level and of the objects flowd reads; values flowd does not own are copied
/// as received, times are written as the same instant in flowd's form, and `usage` and
/// `netlink` are appended only when flowd measured them and the producer sent none.
///
/// `hostname` `None` writes the JSON alone (UDP_FIREFLY_SYSLOG=False).
pub fn encode_relayed(out: &mut Vec<u8>, hostname: Option<&str>, r: &Relay<'_>) {
    if let Some(h) = hostname {
        write_syslog_header(out, r.sent_at, h);
    }
    out.push(b'{');
    let rx = r.received;
    let (mut first, mut open, mut first_inner) = (true, false, true);
    for m in &rx.members {
        if m.nested {
            if !first_inner {
                out.extend_from_slice(b", ");
            }
            first_inner = false;
        } else {
            if open {
                out.push(b'}');
                open = false;
            }
            if !first {
                out.extend_from_slice(b", ");
            }
            first = false;
        }
        out.extend_from_slice(rx.bytes(m.key));
        out.extend_from_slice(b": ");
        let raw = rx.bytes(m.value);
        // A time already in flowd's form (XRootD's, the Python flowd's) is copied as is.
        let ours = |t: &[u8]| t.len() == 34 && t[20] == b'.' && t.ends_with(b"+00:00\"");
        let time = if m.role == Role::Time && !ours(raw) { scan::string(rx.text(m.value)).ok().and_then(|s| parse_rfc3339(&s)) } else { None };
        let ip = match m.role {
            Role::SrcIp => r.src_ip,
            Role::DstIp => r.dst_ip,
            _ => None,
        };
        if m.role == Role::Object {
            out.push(b'{');
            open = true;
            first_inner = true;
        } else if let Some(t) = time {
            write_time(out, t);
        } else if let Some(ip) = ip {
            let _ = write!(out, "\"{ip}\"");
        } else {
            out.extend_from_slice(raw);
        }
    }
    if open {
        out.push(b'}');
    }
    if let Some((rx_bytes, tx_bytes)) = r.usage.filter(|_| !rx.has(Role::Usage)) {
        let _ = write!(out, ", \"usage\": {{\"received\": {rx_bytes}, \"sent\": {tx_bytes}}}");
    }
    if let Some(nl) = r.netlink.filter(|_| !rx.has(Role::Netlink)) {
        out.extend_from_slice(b", \"netlink\": ");
        out.extend_from_slice(nl.as_bytes());
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests;

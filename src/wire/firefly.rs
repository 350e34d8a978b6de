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

/// The body, member by member: a small scanner over the JSON text that records where each
/// member's key and value are, so that a relay can pass on what it does not own exactly
/// as received. Values flowd does not read are skipped (and checked) by serde_json; the
/// scanner itself only walks the top-level object and the objects flowd reads.
mod scan {
    use super::FireflyError;
    use crate::flow::Span;

    #[inline(always)]
    fn ws(b: &[u8], mut i: usize) -> usize {
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    }

    #[inline(always)]
    pub fn span(start: usize, end: usize) -> Span {
        // Datagrams are far shorter than 4 GiB.
        Span { start: start as u32, end: end as u32 }
    }

    /// Deepest nesting of arrays and objects accepted (serde_json's limit).
    const MAX_DEPTH: usize = 128;

    /// Skips the JSON value starting at `i` and checks it against RFC 8259's grammar (the
    /// body is already known to be UTF-8); returns where it ends. Hand-written because it
    /// runs for every value of every datagram: with serde_json it was a tenth of the relay.
    pub fn skip_value(body: &str, i: usize) -> Result<usize, FireflyError> {
        skip(body.as_bytes(), i, 0)
    }

    fn skip(b: &[u8], i: usize, depth: usize) -> Result<usize, FireflyError> {
        let nested = |close: u8, member: bool| -> Result<usize, FireflyError> {
            if depth >= MAX_DEPTH {
                return Err(FireflyError::Json);
            }
            let mut j = ws(b, i + 1);
            if b.get(j) == Some(&close) {
                return Ok(j + 1);
            }
            loop {
                if member {
                    if b.get(j) != Some(&b'"') {
                        return Err(FireflyError::Json);
                    }
                    j = ws(b, string_end(b, j)?.0);
                    if b.get(j) != Some(&b':') {
                        return Err(FireflyError::Json);
                    }
                    j = ws(b, j + 1);
                }
                j = ws(b, skip(b, j, depth + 1)?);
                match b.get(j) {
                    Some(b',') => j = ws(b, j + 1),
                    Some(c) if *c == close => return Ok(j + 1),
                    _ => return Err(FireflyError::Json),
                }
            }
        };
        let literal = |word: &[u8]| if b.get(i..i + word.len()) == Some(word) { Ok(i + word.len()) } else { Err(FireflyError::Json) };
        match b.get(i) {
            Some(b'"') => Ok(string_end(b, i)?.0),
            Some(b'{') => nested(b'}', true),
            Some(b'[') => nested(b']', false),
            Some(b't') => literal(b"true"),
            Some(b'f') => literal(b"false"),
            Some(b'n') => literal(b"null"),
            Some(b'-' | b'0'..=b'9') => number_end(b, i),
            _ => Err(FireflyError::Json),
        }
    }

    /// The end of the number at `i`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number_end(b: &[u8], i: usize) -> Result<usize, FireflyError> {
        let digits = |j: usize| {
            let n = b.get(j..).map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
            if n == 0 {
                Err(FireflyError::Json)
            } else {
                Ok((j + n, n))
            }
        };
        let mut j = i + usize::from(b.get(i) == Some(&b'-'));
        let (end, n) = digits(j)?;
        if n > 1 && b[j] == b'0' {
            return Err(FireflyError::Json);
        }
        j = end;
        if b.get(j) == Some(&b'.') {
            j = digits(j + 1)?.0;
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            j += 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            j = digits(j)?.0;
        }
        Ok(j)
    }

    /// An integer written as JSON (`-?digits`, no fraction or exponent), if it fits.
    pub fn integer(raw: &str) -> Option<i64> {
        let digits = if raw.as_bytes().first() == Some(&b'-') { &raw[1..] } else { raw };
        if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            // More than 18 digits may overflow i64: serde_json decides exactly.
            return serde_json::from_str::<i64>(raw).ok();
        }
        let n = digits.bytes().fold(0i64, |a, c| a * 10 + i64::from(c - b'0'));
        Some(if digits.len() < raw.len() { -n } else { n })
    }

    /// The string literal starting at `i` (a `"`): where it ends, and whether it has
    /// escapes. Escapes must be JSON's; control characters must be escaped.
    fn string_end(b: &[u8], i: usize) -> Result<(usize, bool), FireflyError> {
        let mut j = i + 1;
        let mut escaped = false;
        while j < b.len() {
            // Eight bytes at a time: on to the first special one.
            if let Some(w) = b.get(j..j + 8) {
                let m = special(u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
                if m == 0 {
                    j += 8;
                    continue;
                }
                j += (m.trailing_zeros() / 8) as usize;
            }
            let c = b[j];
            if c == b'"' {
                return Ok((j + 1, escaped));
            } else if c == b'\\' {
                escaped = true;
                match b.get(j + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j += 2,
                    Some(b'u') if b.get(j + 2..j + 6).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => j += 6,
                    _ => return Err(FireflyError::Json),
                }
            } else if c < 0x20 {
                return Err(FireflyError::Json);
            } else {
                j += 1;
            }
        }
        Err(FireflyError::Json)
    }

    /// Of the eight bytes of `w` (little-endian), those that are `"`, `\\` or a control
    /// character (below 0x20) have their high bit set in the result; the lowest set bit is
    /// always exact (a borrow can only flag bytes above a special one). Bytes of multi-byte
    /// UTF-8 characters (0x80 and up) are never special.
    #[inline(always)]
    fn special(w: u64) -> u64 {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
        below(w ^ (ONES * u64::from(b'"')), 1) | below(w ^ (ONES * u64::from(b'\\')), 1) | below(w, 0x20)
    }

    /// A JSON string literal's value: borrowed when it has no escapes.
    pub fn string(raw: &str) -> Result<std::borrow::Cow<'_, str>, FireflyError> {
        let b = raw.as_bytes();
        if b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' && !b.contains(&b'\\') {
            return Ok(std::borrow::Cow::Borrowed(&raw[1..raw.len() - 1]));
        }
        serde_json::from_str::<String>(raw).map(std::borrow::Cow::Owned).map_err(|_| FireflyError::Json)
    }

    /// True when the value text starts with `c` (its JSON type: `"` string, `{` object).
    #[inline(always)]
    pub fn is(raw: &str, c: u8) -> bool {
        raw.as_bytes().first() == Some(&c)
    }

    /// Walks the object whose `{` is at `i` (after optional whitespace). For each member,
    /// `member(key span, key, value start)` returns where the value ends (it skips or
    /// walks it). Returns the position after the closing `}`.
    pub fn object(body: &str, i: usize, mut member: impl FnMut(Span, &str, usize) -> Result<usize, FireflyError>) -> Result<usize, FireflyError> {
        let b = body.as_bytes();
        let mut i = ws(b, i);
        if b.get(i) != Some(&b'{') {
            return Err(FireflyError::Json);
        }
        i = ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            return Ok(i + 1);
        }
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(FireflyError::Json);
            }
            let (kend, escaped) = string_end(b, i)?;
            let raw = &body[i..kend];
            let key = if escaped { string(raw)? } else { std::borrow::Cow::Borrowed(&body[i + 1..kend - 1]) };
            let colon = ws(b, kend);
            if b.get(colon) != Some(&b':') {
                return Err(FireflyError::Json);
            }
            let v = ws(b, colon + 1);
            let vend = member(span(i, kend), &key, v)?;
            i = ws(b, vend);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b'}') => return Ok(i + 1),
                _ => return Err(FireflyError::Json),
            }
        }
    }

    /// True when only whitespace follows `i`.
    pub fn at_end(b: &[u8], i: usize) -> bool {
        ws(b, i) == b.len()
    }
}

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
mod tests {
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
            assert_eq!(
                (again.state, again.key, again.exp, again.act, again.start_time, again.end_time),
                (d.state, d.key, d.exp, d.act, d.start_time, d.end_time)
            );
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
}

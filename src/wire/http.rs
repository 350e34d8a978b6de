//! HTTP/1.x for flowd's listeners (metrics, api plugin): an incremental request parser
//! with size caps, the metrics listener's routing table, and a fixed response writer.
//!
//! Pure: takes the bytes read so far and answers "need more", "here is one request and how
//! many bytes it used" or "answer with this error status and close". It never does I/O,
//! never reads the clock and never panics on input. The listener (`daemon/http.rs`) owns
//! the sockets, the buffers and the timeouts.
//!
//! What is accepted, deliberately small (RFC 9112 subset a scraper needs):
//! - a request line `METHOD SP origin-form SP HTTP/1.0|HTTP/1.1`, then header fields, then an
//!   empty line; CRLF or bare LF line ends; up to two empty lines before the request line
//!   are skipped (RFC 9112 §2.2);
//! - the whole head within [`MAX_HEAD`] bytes: a longer request line is 414, longer
//!   headers 431;
//! - request bodies only where the listener takes them ([`parse_with`]'s `max_body`, 0 for
//!   the metrics listener): a `Content-Length` above it is 413, and the request is complete
//!   once that many body bytes are there; `Transfer-Encoding: chunked` is 413 without
//!   bodies and 411 (length required) with them, any other transfer coding 501;
//! - `Host` exactly once on HTTP/1.1 (400 otherwise); obsolete line folding is 400;
//! - keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
//!   `Connection: keep-alive`. Pipelined requests are parsed one after the other from the
//!   same buffer (`Parsed::Request::used`).

/// Maximum size of a request head (request line + header fields + the empty line).
pub const MAX_HEAD: usize = 8 * 1024;

/// Maximum number of header fields.
pub(crate) const MAX_HEADERS: usize = 64;

/// The content type of the metrics page (Prometheus text exposition format 0.0.4).
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of every other page.
pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The content type of `/flows` and `/flows/…`.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json";

/// Response status codes the listener uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// 200 OK.
    Ok,
    /// 400 Bad Request: malformed request line or header field.
    BadRequest,
    /// 404 Not Found: unknown path.
    NotFound,
    /// 405 Method Not Allowed: known path, method other than GET/HEAD.
    MethodNotAllowed,
    /// 408 Request Timeout: the head did not arrive before the idle deadline.
    RequestTimeout,
    /// 411 Length Required: a chunked body where bodies are taken (they need a length).
    LengthRequired,
    /// 413 Content Too Large: the request has a body.
    ContentTooLarge,
    /// 414 URI Too Long: the request line does not fit in [`MAX_HEAD`].
    UriTooLong,
    /// 431 Request Header Fields Too Large: the head does not fit in [`MAX_HEAD`].
    HeadersTooLarge,
    /// 501 Not Implemented: a transfer coding other than chunked.
    NotImplemented,
    /// 503 Service Unavailable: too many connections.
    Unavailable,
    /// 505 HTTP Version Not Supported.
    VersionNotSupported,
}

impl Status {
    /// Every status, in code order (for metrics).
    #[cfg(test)]
    pub(crate) const ALL: [Status; 12] = [
        Status::Ok,
        Status::BadRequest,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::RequestTimeout,
        Status::LengthRequired,
        Status::ContentTooLarge,
        Status::UriTooLong,
        Status::HeadersTooLarge,
        Status::NotImplemented,
        Status::Unavailable,
        Status::VersionNotSupported,
    ];

    /// The numeric code.
    pub(crate) fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::LengthRequired => 411,
            Status::ContentTooLarge => 413,
            Status::UriTooLong => 414,
            Status::HeadersTooLarge => 431,
            Status::NotImplemented => 501,
            Status::Unavailable => 503,
            Status::VersionNotSupported => 505,
        }
    }

    /// The code as a static string (a metrics label).
    pub(crate) fn code_str(self) -> &'static str {
        match self {
            Status::Ok => "200",
            Status::BadRequest => "400",
            Status::NotFound => "404",
            Status::MethodNotAllowed => "405",
            Status::RequestTimeout => "408",
            Status::LengthRequired => "411",
            Status::ContentTooLarge => "413",
            Status::UriTooLong => "414",
            Status::HeadersTooLarge => "431",
            Status::NotImplemented => "501",
            Status::Unavailable => "503",
            Status::VersionNotSupported => "505",
        }
    }

    /// The reason phrase.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::LengthRequired => "Length Required",
            Status::ContentTooLarge => "Content Too Large",
            Status::UriTooLong => "URI Too Long",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::NotImplemented => "Not Implemented",
            Status::Unavailable => "Service Unavailable",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// Request method, as far as routing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD: like GET, without the body.
    Head,
    /// POST (the api plugin's `/flow`).
    Post,
    /// Any other syntactically valid method.
    Other,
}

/// HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// One parsed request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path of the target, without the query string.
    pub path: &'a [u8],
    /// The version.
    pub version: Version,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The `Content-Type` value, if the request has one (the last one).
    pub content_type: Option<&'a [u8]>,
    /// The body (`Content-Length` bytes after the head; empty without one).
    pub body: &'a [u8],
}

/// Result of looking at the bytes received so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The head is not complete yet and still within the caps: read more.
    Incomplete,
    /// One complete request; its head and body took the first `used` bytes of the buffer.
    Request {
        /// The request.
        req: Request<'a>,
        /// Bytes consumed (a pipelined request may follow).
        used: usize,
    },
    /// The request is unacceptable: answer with this status and close the connection.
    Error(Status),
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/metrics`: the exposition page.
    Metrics,
    /// `/flows`: the tracked flows (JSON).
    Flows,
    /// `/flows/<tuple>`: what flowd decided about one flow (JSON); the path after
    /// `/flows/`, e.g. `192.0.2.1/1094/198.51.100.7/53012`.
    Flow(&'a [u8]),
    /// `/`: a one-line pointer to `/metrics`.
    Index,
    /// Anything else that is answered without a page: 404 or 405.
    Error(Status),
}

impl Route<'_> {
    /// The content type of the page this route renders.
    pub(crate) fn content_type(&self) -> &'static str {
        match self {
            Route::Metrics => METRICS_CONTENT_TYPE,
            Route::Flows | Route::Flow(_) => JSON_CONTENT_TYPE,
            Route::Index | Route::Error(_) => TEXT_CONTENT_TYPE,
        }
    }
}

/// Routes a request: `/metrics`, `/flows`, `/flows/<tuple>` and `/` accept GET and HEAD
/// (405 otherwise), every other path is 404.
pub fn route(method: Method, path: &[u8]) -> Route<'_> {
    let known = match path {
        b"/metrics" | b"/metrics/" => Route::Metrics,
        b"/flows" | b"/flows/" => Route::Flows,
        [b'/', b'f', b'l', b'o', b'w', b's', b'/', rest @ ..] => Route::Flow(rest),
        b"/" => Route::Index,
        _ => return Route::Error(Status::NotFound),
    };
    match method {
        Method::Get | Method::Head => known,
        Method::Post | Method::Other => Route::Error(Status::MethodNotAllowed),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Splits off one line (LF-terminated, an optional CR before it removed).
/// Returns the line and the rest, or `None` if there is no LF.
fn line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = buf.iter().position(|&b| b == b'\n')?;
    let (l, rest) = (&buf[..i], &buf[i + 1..]);
    Some((l.strip_suffix(b"\r").unwrap_or(l), rest))
}

/// Parses the start of `buf` as one request without a body (the metrics listener):
/// `parse_with(buf, 0)`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    parse_with(buf, 0)
}

/// Parses the start of `buf` as one request, taking a body of up to `max_body` bytes.
/// See the module doc for the rules.
pub fn parse_with(buf: &[u8], max_body: usize) -> Parsed<'_> {
    let mut rest = buf;
    // Skip up to two empty lines before the request line (robustness, RFC 9112 §2.2).
    for _ in 0..2 {
        match rest {
            [b'\r', b'\n', r @ ..] | [b'\n', r @ ..] => rest = r,
            [b'\r'] => return Parsed::Incomplete,
            _ => break,
        }
    }
    let Some((request_line, mut rest)) = line(rest) else {
        return if buf.len() >= MAX_HEAD { Parsed::Error(Status::UriTooLong) } else { Parsed::Incomplete };
    };
    if buf.len() - rest.len() > MAX_HEAD {
        return Parsed::Error(Status::UriTooLong);
    }
    let (method, path, version) = match request_line_parts(request_line) {
        Ok(p) => p,
        Err(s) => return Parsed::Error(s),
    };
    let mut hosts = 0usize;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut fields = 0usize;
    let mut content_length = 0usize;
    let mut content_type = None;
    loop {
        let Some((field, r)) = line(rest) else {
            return if buf.len() >= MAX_HEAD { Parsed::Error(Status::HeadersTooLarge) } else { Parsed::Incomplete };
        };
        rest = r;
        if buf.len() - rest.len() > MAX_HEAD {
            return Parsed::Error(Status::HeadersTooLarge);
        }
        if field.is_empty() {
            break;
        }
        fields += 1;
        if fields > MAX_HEADERS {
            return Parsed::Error(Status::HeadersTooLarge);
        }
        if matches!(field[0], b' ' | b'\t') {
            return Parsed::Error(Status::BadRequest); // obsolete line folding
        }
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            return Parsed::Error(Status::BadRequest);
        };
        let (name, value) = (&field[..colon], trim_ows(&field[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Parsed::Error(Status::BadRequest);
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Parsed::Error(Status::BadRequest);
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Parsed::Error(Status::BadRequest);
            }
            // Leading zeros are fine; more digits than any accepted length are not.
            let digits = &value[value.iter().position(|&b| b != b'0').unwrap_or(value.len())..];
            let n = if digits.len() > 12 { usize::MAX } else { digits.iter().fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')) };
            if n > max_body {
                return Parsed::Error(Status::ContentTooLarge);
            }
            if content_length != 0 && content_length != n {
                return Parsed::Error(Status::BadRequest); // conflicting lengths (RFC 9112 §6.3)
            }
            content_length = n;
        } else if name.eq_ignore_ascii_case(b"content-type") {
            content_type = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().map(trim_ows).unwrap_or_default();
            let chunked = if max_body == 0 { Status::ContentTooLarge } else { Status::LengthRequired };
            return Parsed::Error(if last.eq_ignore_ascii_case(b"chunked") { chunked } else { Status::NotImplemented });
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                connection_close |= token.eq_ignore_ascii_case(b"close");
                connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    if version == Version::Http11 && hosts != 1 {
        return Parsed::Error(Status::BadRequest);
    }
    let keep_alive = match version {
        Version::Http11 => !connection_close,
        Version::Http10 => connection_keep_alive && !connection_close,
    };
    if rest.len() < content_length {
        return Parsed::Incomplete;
    }
    let head = buf.len() - rest.len();
    Parsed::Request { req: Request { method, path, version, keep_alive, content_type, body: &rest[..content_length] }, used: head + content_length }
}

/// Splits and checks `METHOD SP target SP version`.
fn request_line_parts(l: &[u8]) -> Result<(Method, &[u8], Version), Status> {
    let mut parts = l.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Status::BadRequest);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Status::BadRequest);
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => return Err(Status::VersionNotSupported),
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => return Err(Status::VersionNotSupported),
        _ => return Err(Status::BadRequest),
    };
    if target.first() != Some(&b'/') || target.iter().any(|&b| b <= 0x20 || b >= 0x7f) {
        return Err(Status::BadRequest);
    }
    let path = match target.iter().position(|&b| b == b'?' || b == b'#') {
        Some(i) => &target[..i],
        None => target,
    };
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        _ => Method::Other,
    };
    Ok((method, path, version))
}

/// What goes into a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    /// Status line.
    pub status: Status,
    /// `Content-Type` value.
    pub content_type: &'a str,
    /// `Content-Length` value (the body length a GET gets, also for HEAD).
    pub content_length: usize,
    /// `Connection: keep-alive` (true) or `Connection: close` (false).
    pub keep_alive: bool,
    /// The `Allow` value of a 405 (`GET, HEAD` when `None`).
    pub allow: Option<&'a str>,
}

/// Appends a complete response head to `out`. A 405 carries `Allow` (`GET, HEAD` unless
/// the head says otherwise).
/// The version is always HTTP/1.1 (RFC 9110 §6.2: the server's own version).
pub(crate) fn write_head(out: &mut Vec<u8>, h: &Head<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(h.status.code_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(h.status.reason().as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(h.content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    let mut digits = [0u8; 20];
    out.extend_from_slice(crate::wire::prom::fmt_u64(&mut digits, h.content_length as u64));
    if h.status == Status::MethodNotAllowed {
        out.extend_from_slice(b"\r\nAllow: ");
        out.extend_from_slice(h.allow.unwrap_or("GET, HEAD").as_bytes());
    }
    out.extend_from_slice(if h.keep_alive { b"\r\nConnection: keep-alive\r\n\r\n" } else { b"\r\nConnection: close\r\n\r\n" });
}

/// The body of an error response: `<code> <reason>\n`.
pub(crate) fn error_body(status: Status) -> String {
    format!("{} {}\n", status.code(), status.reason())
}

/// Appends a complete error response (head and, unless `head_only`, the body); the
/// connection is always closed after it unless `keep_alive` (404/405 on a good request).
#[cfg(test)]
pub(crate) fn write_error(out: &mut Vec<u8>, status: Status, keep_alive: bool, head_only: bool) {
    let body = error_body(status);
    write_head(out, &Head { status, content_type: TEXT_CONTENT_TYPE, content_length: body.len(), keep_alive, allow: None });
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf) {
            Parsed::Request { req, used } => (req, used),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn test_simple_get_and_keep_alive_rules() {
        let b = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        let (r, used) = req(b);
        assert_eq!((r.method, r.path, r.version, r.keep_alive, used), (Method::Get, &b"/metrics"[..], Version::Http11, true, b.len()));
        let (r, _) = req(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, close\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = req(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert_eq!((r.method, r.path, r.version, r.keep_alive), (Method::Head, &b"/metrics"[..], Version::Http10, false));
        let (r, _) = req(b"GET / HTTP/1.0\nconnection:keep-alive\n\n");
        assert!(r.keep_alive, "bare LF and 1.0 keep-alive");
        let (r, used) = req(b"\r\n\r\nGET / HTTP/1.0\r\n\r\n");
        assert_eq!((r.path, used), (&b"/"[..], 22), "leading empty lines are skipped");
    }

    #[test]
    fn test_incomplete_input_asks_for_more_at_every_split() {
        let b = b"GET /metrics HTTP/1.1\r\nHost: localhost:9000\r\n\r\n";
        for i in 0..b.len() {
            assert_eq!(parse(&b[..i]), Parsed::Incomplete, "prefix of {i} bytes");
        }
        assert!(matches!(parse(b), Parsed::Request { .. }));
    }

    #[test]
    fn test_pipelined_requests_parse_one_after_the_other() {
        let b = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET";
        let (r1, u1) = req(b);
        assert_eq!(r1.method, Method::Get);
        let (r2, u2) = req(&b[u1..]);
        assert_eq!((r2.method, r2.path, r2.keep_alive), (Method::Head, &b"/"[..], false));
        assert_eq!(parse(&b[u1 + u2..]), Parsed::Incomplete);
    }

    #[test]
    fn test_malformed_requests_are_400() {
        for b in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET  /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\nHost: a\r\n\r\n",
            b"G(T /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://a/metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /me\x01trics HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\r\n : x\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
            b"GET /metrics HTTPS/1.1\r\nHost: a\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
            b"\r\n\r\n\r\nGET / HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(parse(b), Parsed::Error(Status::BadRequest), "{:?}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn test_bodies_versions_and_codings() {
        let cl0 = b"GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 00\r\n\r\n";
        assert!(matches!(parse(cl0), Parsed::Request { .. }));
        let cl = b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse(cl), Parsed::Error(Status::ContentTooLarge));
        let te = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse(te), Parsed::Error(Status::ContentTooLarge));
        let te = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(parse(te), Parsed::Error(Status::NotImplemented));
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), Parsed::Error(Status::VersionNotSupported));
        assert_eq!(parse(b"GET / HTTP/2\r\n\r\n"), Parsed::Error(Status::VersionNotSupported));
        assert_eq!(parse(b"GET / HTTP/0.9\r\n\r\n"), Parsed::Error(Status::VersionNotSupported));
    }

    #[test]
    fn test_bodies_where_they_are_taken() {
        let b = b"POST /flow HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}GET";
        for i in 0..b.len() - 3 {
            assert_eq!(parse_with(&b[..i], 100), Parsed::Incomplete, "prefix of {i} bytes");
        }
        let (r, used) = match parse_with(b, 100) {
            Parsed::Request { req, used } => (req, used),
            other => panic!("{other:?}"),
        };
        assert_eq!((r.method, r.body, r.content_type, used), (Method::Post, &b"{\"a\":1}"[..], Some(&b"application/json"[..]), b.len() - 3));
        assert_eq!(parse_with(b, 6), Parsed::Error(Status::ContentTooLarge), "over the cap: refused before it is read");
        assert_eq!(parse(b), Parsed::Error(Status::ContentTooLarge), "no bodies on the metrics listener");
        let huge = b"POST /flow HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(parse_with(huge, 4096), Parsed::Error(Status::ContentTooLarge));
        let twice = b"POST /flow HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(parse_with(twice, 10), Parsed::Error(Status::BadRequest));
        let chunked = b"POST /flow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_with(chunked, 10), Parsed::Error(Status::LengthRequired));
        let none = b"POST /flow HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(matches!(parse_with(none, 10), Parsed::Request { req, .. } if req.body.is_empty() && req.content_type.is_none()));
    }

    #[test]
    fn test_size_caps() {
        let mut long_line = b"GET /".to_vec();
        long_line.resize(MAX_HEAD, b'a');
        assert_eq!(parse(&long_line), Parsed::Error(Status::UriTooLong), "no line end within the cap");
        long_line.truncate(MAX_HEAD - 100);
        assert_eq!(parse(&long_line), Parsed::Incomplete);
        long_line.extend_from_slice(b"b".repeat(200).as_slice());
        long_line.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(parse(&long_line), Parsed::Error(Status::UriTooLong), "complete line over the cap");

        let mut big = b"GET /metrics HTTP/1.1\r\nHost: a\r\n".to_vec();
        while big.len() < MAX_HEAD {
            big.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert_eq!(parse(&big), Parsed::Error(Status::HeadersTooLarge));
        let mut many = b"GET /metrics HTTP/1.1\r\nHost: a\r\n".to_vec();
        for _ in 0..MAX_HEADERS {
            many.extend_from_slice(b"X: y\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many), Parsed::Error(Status::HeadersTooLarge));
        // Just at the cap is fine.
        let mut exact = b"GET /metrics HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        exact.resize(MAX_HEAD - 4, b'v');
        exact.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(parse(&exact), Parsed::Request { used, .. } if used == MAX_HEAD));
    }

    #[test]
    fn test_arbitrary_bytes_never_panic() {
        let mut x: u32 = 12345;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    b"GET /\r\n: HTP1.0\x00\xff"[(x % 16) as usize]
                })
                .collect();
            let _ = parse(&buf);
        }
    }

    #[test]
    fn test_routes() {
        assert_eq!(route(Method::Get, b"/metrics"), Route::Metrics);
        assert_eq!(route(Method::Head, b"/metrics"), Route::Metrics);
        assert_eq!(route(Method::Get, b"/"), Route::Index);
        assert_eq!(route(Method::Other, b"/metrics"), Route::Error(Status::MethodNotAllowed));
        assert_eq!(route(Method::Get, b"/nope"), Route::Error(Status::NotFound));
        assert_eq!(route(Method::Other, b"/nope"), Route::Error(Status::NotFound));
        assert_eq!(route(Method::Get, b"/flows"), Route::Flows);
        assert_eq!(route(Method::Get, b"/flows/"), Route::Flows);
        assert_eq!(route(Method::Head, b"/flows/::1/1/::1/2"), Route::Flow(b"::1/1/::1/2"));
        assert_eq!(route(Method::Other, b"/flows"), Route::Error(Status::MethodNotAllowed));
        assert_eq!(route(Method::Get, b"/flowsx"), Route::Error(Status::NotFound));
        assert_eq!(Route::Flows.content_type(), JSON_CONTENT_TYPE);
    }

    #[test]
    fn test_response_heads() {
        let mut out = Vec::new();
        write_head(&mut out, &Head { status: Status::Ok, content_type: METRICS_CONTENT_TYPE, content_length: 1234, keep_alive: true, allow: None });
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 1234\r\nConnection: keep-alive\r\n\r\n");
        out.clear();
        write_error(&mut out, Status::MethodNotAllowed, false, false);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 23\r\nAllow: GET, HEAD\r\nConnection: close\r\n\r\n405 Method Not Allowed\n"
        );
        out.clear();
        write_error(&mut out, Status::NotFound, true, true);
        assert!(out.ends_with(b"Content-Length: 14\r\nConnection: keep-alive\r\n\r\n"));
        for s in Status::ALL {
            assert_eq!(s.code_str(), s.code().to_string());
        }
    }
}

//! The metrics HTTP listener: a non-blocking TCP listener and one small state machine per
//! connection, all driven by the daemon's single `mio::Poll` (mio `tcp_server` shape).
//!
//! Owns the sockets, the per-connection buffers and deadlines; the protocol itself is in
//! `wire::http` (parsing, routing, response heads); the pages (`/metrics` in `wire::prom`,
//! `/flows` and `/flows/<tuple>` in JSON by `crate::explain`) are rendered by the renderer
//! the loop lends through `Context::render`. Its hooks are the loop's
//! (`on_ready(slot, cx)`, `poll_at()`, `on_timeout(cx)`). It never
//! blocks: every read and write stops at `WouldBlock`, and the rest waits for the next
//! readiness edge. Connections are registered READABLE|WRITABLE once (edge-triggered), so
//! a response that did not fit in the socket buffer continues on the next writable edge
//! without a re-registration syscall.
//!
//! Hardening, so a scraper or an attacker cannot stall the flow events that share the loop:
//! - at most [`MAX_CONNS`] connections; one more is accepted, told `503` and closed, and
//!   counted (`flowd_http_connections_refused_total`);
//! - a request head must fit in `wire::http::MAX_HEAD` bytes and arrive within
//!   [`IDLE_TIMEOUT`] of the moment the connection became idle (trickling bytes does not
//!   extend it); a partial head then gets `408`, an idle keep-alive connection is closed;
//! - a response must make progress at least every [`IDLE_TIMEOUT`];
//! - per turn at most [`ACCEPT_BUDGET`] accepts and [`REQUEST_BUDGET`] requests per
//!   connection; the rest continues next turn via `poll_at() == now`;
//! - `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM` on accept pause accepting for [`ACCEPT_BACKOFF`]
//!   (counted) instead of spinning;
//! - after an answer that ends the connection, our side is shut down and what the peer
//!   still sends is read and dropped for up to [`LINGER`] (a close with unread data would
//!   reset the connection and could destroy the answer in flight);
//! - a peer that half-closes (shutdown of its write side) still gets the answers to the
//!   requests it sent; then the connection is closed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::context::{Context, Render};
use crate::daemon::token;
use crate::metrics::{Desc, Kind, Metrics};
use crate::wire::http::{self, Head, Parsed, Route, Status};
use crate::wire::prom::Page;

/// Most connections served at once.
pub const MAX_CONNS: usize = 64;
/// How long a connection may wait for a request head, or a response for write progress.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after the process or system ran out of file descriptors or memory on accept.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
/// How long a connection is drained after its last answer before it is closed.
pub const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained after the last answer.
const DRAIN_MAX: usize = 64 * 1024;
/// Accepts per loop turn.
pub const ACCEPT_BUDGET: usize = 64;
/// Requests answered per connection per loop turn (pipelining).
pub const REQUEST_BUDGET: usize = 8;

/// The line served on `/`.
pub const INDEX_BODY: &str = "flowd metrics exporter: scrape /metrics\n";

/// Requests answered, by status code.
pub static REQUESTS: Desc =
    Desc { name: "flowd_http_requests_total", help: "HTTP requests answered by the metrics listener, by status code.", kind: Kind::Counter, labels: &["code"] };

/// Connections refused because [`MAX_CONNS`] were open.
pub static REFUSED: Desc = Desc {
    name: "flowd_http_connections_refused_total",
    help: "Metrics listener connections refused (503) because the connection limit was reached.",
    kind: Kind::Counter,
    labels: &[],
};

/// Failed accepts, by reason.
pub static ACCEPT_ERRORS: Desc = Desc {
    name: "flowd_http_accept_errors_total",
    help: "Failed accepts on the metrics listener, by reason (fd_limit pauses accepting briefly).",
    kind: Kind::Counter,
    labels: &["reason"],
};

/// Open connections.
pub static OPEN: Desc = Desc { name: "flowd_http_connections_open", help: "Metrics listener connections currently open.", kind: Kind::Gauge, labels: &[] };

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct BindError {
    /// PROMETHEUS_SRV_HOST:PROMETHEUS_SRV_PORT.
    pub addr: SocketAddr,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// How long the buffers of the last page are kept for the next scrape.
pub const SPARE_KEEP: Duration = Duration::from_secs(300);

/// Where a connection is in its request/response cycle.
enum Phase {
    /// Collecting a request head in `buf`.
    Reading { buf: Vec<u8> },
    /// Sending `head` then `body`, `pos` bytes of both already sent; `rest` holds bytes
    /// already read after the request (pipelining).
    Writing { head: Vec<u8>, body: Page, pos: usize, rest: Vec<u8>, close: bool },
    /// The last answer is sent and our side shut down; unread request bytes are read
    /// and dropped until the peer closes (or [`LINGER`] passes), so closing with unread
    /// data does not reset the connection and destroy the answer in flight.
    Draining,
    /// Done; the slot is freed.
    Closed,
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    /// Reading: when the head must be complete; Writing: when progress must have happened.
    deadline: Instant,
    /// Bytes discarded while draining.
    drained: usize,
    /// The request budget ran out in the turn at this time: drive again without waiting
    /// for an edge.
    resume: Option<Instant>,
}

/// One answer, ready to be sent.
struct Answer {
    head: Vec<u8>,
    body: Page,
    /// Request bytes consumed.
    used: usize,
    /// Close the connection after sending.
    close: bool,
}

/// The listener and its connections.
pub struct Http {
    listener: TcpListener,
    addr: SocketAddr,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Accepting is paused until then (fd or memory exhaustion).
    paused_until: Option<Instant>,
    /// The accept budget ran out in the turn at this time, connections may still be queued.
    accept_again: Option<Instant>,
    /// The buffers of the last page sent, for the next one: a steady scrape then
    /// allocates (and page-faults) nothing. Dropped after [`SPARE_KEEP`] unused.
    spare: Option<(Page, Instant)>,
}

impl Http {
    /// Binds `addr` (non-blocking, SO_REUSEADDR) and registers it with the loop.
    /// `inherited` is a listening socket systemd handed over (socket activation), used
    /// instead of binding `addr`.
    pub fn bind(registry: &Registry, addr: SocketAddr, inherited: Option<std::net::TcpListener>, metrics: &mut Metrics) -> Result<Http, BindError> {
        let mut listener = match inherited {
            Some(l) => {
                l.set_nonblocking(true).map_err(|source| BindError { addr, source })?;
                log::info!("metrics: using the TCP listener handed over by systemd");
                TcpListener::from_std(l)
            }
            None => TcpListener::bind(addr).map_err(|source| BindError { addr, source })?,
        };
        let addr = listener.local_addr().unwrap_or(addr);
        registry.register(&mut listener, token::HTTP_LISTENER, Interest::READABLE).map_err(|source| BindError { addr, source })?;
        for d in [&REQUESTS, &REFUSED, &ACCEPT_ERRORS, &OPEN] {
            metrics.declare(d);
        }
        metrics.add(&REFUSED, &[], 0);
        metrics.set(&OPEN, Vec::new(), 0.0);
        Ok(Http { listener, addr, conns: Vec::new(), free: Vec::new(), paused_until: None, accept_again: None, spare: None })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and closes every connection.
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.listener);
        for c in self.conns.iter_mut().filter_map(Option::as_mut) {
            let _ = registry.deregister(&mut c.stream);
        }
    }

    /// The earliest deadline: a connection's timeout, the end of an accept pause, or now
    /// when work was left over from the last turn.
    pub fn poll_at(&self) -> Option<Instant> {
        let conns = self.conns.iter().flatten().map(|c| c.resume.unwrap_or(c.deadline));
        let accept = if self.paused_until.is_some() { self.paused_until } else { self.accept_again };
        let spare = self.spare.as_ref().map(|(_, until)| *until);
        conns.chain(accept).chain(spare).min()
    }

    /// A readiness event for the listener or connection slot `slot` (`None` = listener).
    /// A `/metrics` request is rendered with `cx.render`.
    pub fn on_ready(&mut self, slot: Option<usize>, cx: &mut Context<'_>) {
        let Context { now, poll, metrics, render, .. } = cx;
        match slot {
            None => self.accept(poll, *now, metrics),
            Some(i) => with_page(render, |render| self.drive(poll, i, *now, metrics, render)),
        }
    }

    /// Deadlines: expire idle or stuck connections, resume left-over work, resume accepting.
    pub fn on_timeout(&mut self, cx: &mut Context<'_>) {
        let Context { now, poll, metrics, render, .. } = cx;
        let (now, registry) = (*now, *poll);
        if self.spare.as_ref().is_some_and(|(_, until)| *until <= now) {
            self.spare = None;
        }
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
            self.accept_again = Some(now);
        }
        if self.paused_until.is_none() && self.accept_again.is_some() {
            self.accept(registry, now, metrics);
        }
        with_page(render, |render| {
            for i in 0..self.conns.len() {
                let Some(c) = self.conns[i].as_mut() else { continue };
                if c.resume.is_some() {
                    self.drive(registry, i, now, metrics, render);
                    continue;
                }
                if c.deadline > now {
                    continue;
                }
                if let Phase::Reading { buf } = &c.phase {
                    if !buf.is_empty() {
                        // Best effort: one non-blocking write of the 408, then drain and close.
                        let mut out = Vec::with_capacity(160);
                        http::write_error(&mut out, Status::RequestTimeout, false, false);
                        let _ = c.stream.write(&out);
                        let _ = c.stream.shutdown(Shutdown::Write);
                        metrics.inc(&REQUESTS, &[Status::RequestTimeout.code_str()]);
                        c.phase = Phase::Draining;
                        c.deadline = now + LINGER;
                        c.drained = 0;
                        continue;
                    }
                }
                log::debug!("metrics connection {i} timed out");
                self.release(registry, i, metrics);
            }
        });
    }

    fn accept(&mut self, registry: &Registry, now: Instant, metrics: &mut Metrics) {
        self.accept_again = None;
        for _ in 0..ACCEPT_BUDGET {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(registry, stream, peer, now, metrics),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM));
                    if out_of_fds {
                        metrics.inc(&ACCEPT_ERRORS, &["fd_limit"]);
                        log::warn!("metrics listener: accept failed ({e}); pausing accepts for {} ms", ACCEPT_BACKOFF.as_millis());
                        self.paused_until = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                    // ECONNABORTED and friends concern one connection only.
                    metrics.inc(&ACCEPT_ERRORS, &["other"]);
                    log::debug!("metrics listener: accept failed: {e}");
                }
            }
        }
        self.accept_again = Some(now);
    }

    fn admit(&mut self, registry: &Registry, mut stream: TcpStream, peer: SocketAddr, now: Instant, metrics: &mut Metrics) {
        let open = self.conns.len() - self.free.len();
        if open >= MAX_CONNS {
            let mut out = Vec::with_capacity(160);
            http::write_error(&mut out, Status::Unavailable, false, false);
            let _ = stream.write(&out);
            let _ = stream.shutdown(Shutdown::Write);
            metrics.inc(&REFUSED, &[]);
            log::debug!("metrics listener: refused {peer}: {MAX_CONNS} connections open");
            return;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = registry.register(&mut stream, conn_token(i), Interest::READABLE | Interest::WRITABLE) {
            log::warn!("metrics listener: cannot register connection from {peer}: {e}");
            self.free.push(i);
            return;
        }
        let _ = stream.set_nodelay(true);
        self.conns[i] = Some(Conn { stream, phase: Phase::Reading { buf: Vec::new() }, deadline: now + IDLE_TIMEOUT, drained: 0, resume: None });
        metrics.set(&OPEN, Vec::new(), (open + 1) as f64);
    }

    fn release(&mut self, registry: &Registry, i: usize, metrics: &mut Metrics) {
        if let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) {
            let _ = registry.deregister(&mut c.stream);
            self.free.push(i);
        }
        metrics.set(&OPEN, Vec::new(), (self.conns.len() - self.free.len()) as f64);
    }

    /// Runs connection `i` as far as it can go without blocking.
    fn drive(&mut self, registry: &Registry, i: usize, now: Instant, metrics: &mut Metrics, render: &mut Render<'_>) {
        let spare = &mut self.spare;
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else { return };
        c.resume = None;
        let mut budget = REQUEST_BUDGET;
        loop {
            c.phase = match std::mem::replace(&mut c.phase, Phase::Closed) {
                Phase::Reading { mut buf } => {
                    let eof = match fill(&mut c.stream, &mut buf) {
                        Ok(eof) => eof,
                        Err(e) => {
                            log::debug!("metrics connection {i}: read failed: {e}");
                            break;
                        }
                    };
                    if budget == 0 {
                        // Pipelined requests left: continue next turn (no new edge will come).
                        c.resume = Some(now);
                        c.phase = Phase::Reading { buf };
                        return;
                    }
                    let Some(a) = respond(&buf, eof, spare, metrics, render) else {
                        if eof {
                            break;
                        }
                        c.phase = Phase::Reading { buf };
                        return;
                    };
                    budget -= 1;
                    buf.drain(..a.used);
                    c.deadline = now + IDLE_TIMEOUT;
                    Phase::Writing { head: a.head, body: a.body, pos: 0, rest: buf, close: a.close }
                }
                Phase::Writing { head, body, mut pos, rest, close } => {
                    let before = pos;
                    let r = flush(&mut c.stream, &head, &body, &mut pos);
                    if pos > before {
                        c.deadline = now + IDLE_TIMEOUT;
                    }
                    match r {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            c.phase = Phase::Writing { head, body, pos, rest, close };
                            return;
                        }
                        Err(e) => {
                            log::debug!("metrics connection {i}: write failed: {e}");
                            break;
                        }
                        Ok(()) if close => {
                            keep_spare(spare, body, now);
                            let _ = c.stream.shutdown(Shutdown::Write);
                            c.deadline = now + LINGER;
                            c.drained = 0;
                            Phase::Draining
                        }
                        Ok(()) => {
                            keep_spare(spare, body, now);
                            c.deadline = now + IDLE_TIMEOUT;
                            Phase::Reading { buf: rest }
                        }
                    }
                }
                Phase::Draining => match discard(&mut c.stream) {
                    Ok(Some(n)) if c.drained + n <= DRAIN_MAX => {
                        c.drained += n;
                        c.phase = Phase::Draining;
                        return;
                    }
                    _ => break,
                },
                Phase::Closed => break,
            };
        }
        self.release(registry, i, metrics);
    }
}

/// Runs `f` with the page renderer lent in the context, or, without one, a renderer of
/// the daemon's own metrics (and no flows).
fn with_page<T>(render: &mut Option<&mut Render<'_>>, f: impl FnOnce(&mut Render<'_>) -> T) -> T {
    match render {
        Some(r) => f(&mut **r),
        None => f(&mut |route: Route<'_>, m: &mut Metrics, page: &mut Page| match route {
            Route::Metrics => {
                m.render(page.add_part());
                Status::Ok
            }
            _ => {
                page.add_part().extend_from_slice(http::error_body(Status::NotFound).as_bytes());
                Status::NotFound
            }
        }),
    }
}

/// Keeps the larger of the spare page and `page` (several connections may have had pages
/// out at once), until `now + SPARE_KEEP`.
fn keep_spare(spare: &mut Option<(Page, Instant)>, page: Page, now: Instant) {
    let page = match spare.take() {
        Some((old, _)) if old.capacity() > page.capacity() => old,
        _ => page,
    };
    *spare = Some((page, now + SPARE_KEEP));
}

fn conn_token(i: usize) -> Token {
    Token(token::HTTP_CONN_BASE + i)
}

/// Reads until `WouldBlock`, end of stream or the head cap. Returns whether the peer has
/// closed its write side.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 4096];
    while buf.len() < http::MAX_HEAD {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Reads and drops everything available: `Some(bytes)` at `WouldBlock`, `None` at end
/// of stream.
fn discard(stream: &mut TcpStream) -> io::Result<Option<usize>> {
    let mut chunk = [0u8; 4096];
    let mut n = 0;
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if n > DRAIN_MAX {
            return Ok(Some(n));
        }
    }
}

/// Writes what is left of `head` + the parts of `body` (`pos` bytes are sent) until done
/// or `WouldBlock` (returned as an error). Everything goes out in vectored writes, so the
/// page is never copied into one buffer.
fn flush(stream: &mut TcpStream, head: &[u8], body: &Page, pos: &mut usize) -> io::Result<()> {
    let total = head.len() + body.len();
    let mut iov = Vec::with_capacity(body.parts().len() + 1);
    while *pos < total {
        iov.clear();
        let mut skip = *pos;
        for part in std::iter::once(head).chain(body.parts().iter().map(Vec::as_slice)) {
            match part.get(skip..) {
                Some(rest) if !rest.is_empty() => {
                    iov.push(io::IoSlice::new(rest));
                    skip = 0;
                }
                _ => skip -= part.len().min(skip),
            }
        }
        match stream.write_vectored(&iov) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Answers the first request in `buf`, if there is one. `None` means "wait for more
/// bytes" (or, at end of stream with nothing but line ends buffered, close).
/// The answer's body is the spare page if there is one (its buffers are reused).
fn respond(buf: &[u8], eof: bool, spare: &mut Option<(Page, Instant)>, metrics: &mut Metrics, render: &mut Render<'_>) -> Option<Answer> {
    let mut head = Vec::with_capacity(160);
    let mut counted = false;
    let parsed = http::parse(buf);
    match parsed {
        Parsed::Incomplete if !eof || buf.iter().all(|b| matches!(b, b'\r' | b'\n')) => return None,
        _ => {}
    }
    let mut body = spare.take().map(|(page, _)| page).unwrap_or_default();
    body.clear();
    let (status, used, close) = match parsed {
        Parsed::Incomplete => {
            // The peer closed in the middle of a request head.
            http::write_error(&mut head, Status::BadRequest, false, false);
            (Status::BadRequest, buf.len(), true)
        }
        Parsed::Error(s) => {
            http::write_error(&mut head, s, false, false);
            (s, buf.len(), true)
        }
        Parsed::Request { req, used } => {
            let head_only = req.method == http::Method::Head;
            let keep_alive = req.keep_alive;
            let route = http::route(req.method, req.path);
            let status = match route {
                Route::Error(s) => {
                    body.add_part().extend_from_slice(http::error_body(s).as_bytes());
                    s
                }
                Route::Index => {
                    body.add_part().extend_from_slice(INDEX_BODY.as_bytes());
                    Status::Ok
                }
                Route::Metrics => {
                    // Count this request before rendering, so the page includes it.
                    metrics.inc(&REQUESTS, &[Status::Ok.code_str()]);
                    counted = true;
                    render(route, metrics, &mut body)
                }
                Route::Flows | Route::Flow(_) => render(route, metrics, &mut body),
            };
            let content_type = route.content_type();
            http::write_head(&mut head, &Head { status, content_type, content_length: body.len(), keep_alive });
            if head_only {
                body.clear();
            }
            (status, used, !keep_alive)
        }
    };
    if !counted {
        metrics.inc(&REQUESTS, &[status.code_str()]);
    }
    Some(Answer { head, body, used, close })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(bytes: usize) -> Page {
        let mut p = Page::new();
        p.add_part().reserve_exact(bytes);
        p
    }

    #[test]
    fn test_the_larger_page_is_kept_for_reuse_with_a_fresh_deadline() {
        let t0 = Instant::now();
        let mut spare = None;
        keep_spare(&mut spare, page(100), t0);
        assert_eq!(spare.as_ref().map(|(p, until)| (p.capacity() >= 100, *until)), Some((true, t0 + SPARE_KEEP)));
        // A smaller page coming back (a second connection) does not evict the larger one.
        let t1 = t0 + Duration::from_secs(1);
        keep_spare(&mut spare, page(10), t1);
        assert_eq!(spare.as_ref().map(|(p, until)| (p.capacity() >= 100, *until)), Some((true, t1 + SPARE_KEEP)));
        keep_spare(&mut spare, page(1_000), t1);
        assert!(spare.as_ref().is_some_and(|(p, _)| p.capacity() >= 1_000));
    }

    #[test]
    fn test_a_request_is_answered_from_the_spare_page_and_a_partial_one_keeps_it() {
        let mut metrics = Metrics::new();
        let mut rendered = 0;
        let mut render = |_: Route<'_>, _: &mut Metrics, p: &mut Page| {
            rendered += 1;
            p.add_part().extend_from_slice(b"flowd_open_flows 0\n");
            Status::Ok
        };
        let mut spare = Some((page(4096), Instant::now()));
        // Half a request: nothing answered, the spare page stays.
        assert!(respond(b"GET /metrics HTTP/1.1\r\n", false, &mut spare, &mut metrics, &mut render).is_none());
        assert!(spare.is_some());
        let a = respond(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", false, &mut spare, &mut metrics, &mut render).unwrap();
        assert!(spare.is_none(), "the answer took the spare page");
        assert!(a.body.capacity() >= 4096 && a.body.to_vec() == b"flowd_open_flows 0\n");
        assert!(String::from_utf8(a.head).unwrap().contains("Content-Length: 19\r\n"));
        assert_eq!(rendered, 1);
    }
}

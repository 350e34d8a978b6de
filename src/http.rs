//! flowd's HTTP/1.1 server machinery: one non-blocking TCP listener and one small state
//! machine per connection, all driven by the daemon's single `mio::Poll` (mio `tcp_server`
//! shape). [`Server`] is the one implementation of connections, limits and timeouts; what
//! a listener answers is its [`Service`]: the metrics listener (`daemon::http`, `/metrics`)
//! and the api plugin (`plugin::api`, `POST /flow`).
//!
//! Owns the sockets, the per-connection buffers and deadlines; the protocol itself is in
//! `wire::http` (parsing, response heads). Its hooks are the loop's (`on_ready(slot, cx)`,
//! `poll_at()`, `on_timeout(cx)`). It never blocks: every read and write stops at
//! `WouldBlock`, and the rest waits for the next readiness edge. Connections are
//! registered READABLE|WRITABLE once (edge-triggered), so a response that did not fit in
//! the socket buffer continues on the next writable edge without a re-registration syscall.
//!
//! Hardening, so a client or an attacker cannot stall the flow events that share the loop:
//! - at most [`MAX_CONNS`] connections; one more is accepted, told `503` and closed, and
//!   counted (the service's `refused` family);
//! - a request head must fit in `wire::http::MAX_HEAD` bytes, a body in the service's
//!   `max_body` (0 for the metrics listener; a larger `Content-Length` is refused before
//!   the body is read), and both must arrive within [`IDLE_TIMEOUT`] of the moment the
//!   connection became idle (trickling bytes does not extend it); a partial request then
//!   gets `408`, an idle keep-alive connection is closed;
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

use crate::context::Context;
use crate::metrics::{Desc, Metrics};
use crate::wire::http::{self, Head, Parsed, Request, Status};
use crate::wire::prom::Page;

/// Most connections served at once.
pub(crate) const MAX_CONNS: usize = 64;
/// How long a connection may wait for a request head, or a response for write progress.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after the process or system ran out of file descriptors or memory on accept.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
/// How long a connection is drained after its last answer before it is closed.
pub(crate) const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained after the last answer.
const DRAIN_MAX: usize = 64 * 1024;
/// Accepts per loop turn.
pub(crate) const ACCEPT_BUDGET: usize = 64;
/// Requests answered per connection per loop turn (pipelining).
pub(crate) const REQUEST_BUDGET: usize = 8;

/// The connection-level metric families of one listener (its requests are counted by
/// the service, whose labels differ).
pub(crate) struct Families {
    /// Connections refused at the cap (counter, no labels).
    pub refused: &'static Desc,
    /// Failed accepts (counter, label `reason`).
    pub accept_errors: &'static Desc,
    /// Open connections (gauge, no labels).
    pub open: &'static Desc,
}

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {addr}: {source}")]
pub struct BindError {
    /// What listens: `metrics`, `the api plugin`.
    pub what: &'static str,
    /// The configured address.
    pub addr: SocketAddr,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// How one answered request is described to the server.
pub(crate) struct Reply {
    /// The status line.
    pub status: Status,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The `Allow` header of a 405 (`None`: `GET, HEAD`).
    pub allow: Option<&'static str>,
    /// True when the service counted the request itself.
    pub counted: bool,
    /// The route label the request is counted under.
    pub route: &'static str,
}

/// What a listener answers: the part that differs between the metrics listener and the
/// api plugin. The [`Server`] owns everything else.
pub(crate) trait Service {
    /// What listens, for logs and errors (`metrics`, `the api plugin`).
    fn what(&self) -> &'static str;
    /// Largest request body taken (0: none, a body is 413).
    fn max_body(&self) -> usize {
        0
    }
    /// The connection-level metric families.
    fn families(&self) -> &'static Families;
    /// Declares the service's own families.
    fn declare(&self, metrics: &mut Metrics);
    /// Answers one complete request into `body` (empty, capacity kept).
    fn answer(&mut self, req: &Request<'_>, body: &mut Page, cx: &mut Context<'_>) -> Reply;
    /// Counts one answered request (`route` is `-` for requests refused before routing).
    fn count(&self, metrics: &mut Metrics, route: &'static str, status: Status);
    /// The body of an error the server answers by itself (malformed request, timeout,
    /// connection cap): its content type, appended to `out`.
    fn error_body(&self, status: Status, out: &mut Vec<u8>) -> &'static str {
        out.extend_from_slice(http::error_body(status).as_bytes());
        http::TEXT_CONTENT_TYPE
    }
    /// A page to answer into (the service may keep one for reuse).
    fn page(&mut self) -> Page {
        Page::new()
    }
    /// A page that has been sent, handed back at `now`.
    fn recycle(&mut self, _page: Page, _now: Instant) {}
    /// The service's own deadline.
    fn poll_at(&self) -> Option<Instant> {
        None
    }
    /// The service's deadline has passed.
    fn on_timeout(&mut self, _now: Instant) {}
}

/// Where a connection is in its request/response cycle.
enum Phase {
    /// Collecting a request (head and body) in `buf`.
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
    /// Reading: when the request must be complete; Writing: when progress must have happened.
    deadline: Instant,
    /// Bytes discarded while draining.
    drained: usize,
    /// The request budget ran out in the turn at this time: drive again without waiting
    /// for an edge.
    resume: Option<Instant>,
}

/// One answer, ready to be sent.
pub(crate) struct Answer {
    /// Status line and headers (with the body for errors the server answers itself).
    pub(crate) head: Vec<u8>,
    /// The service's body.
    pub(crate) body: Page,
    /// Request bytes consumed.
    pub(crate) used: usize,
    /// Close the connection after sending.
    pub(crate) close: bool,
}

/// One listener and its connections, answering with its service (a trait object: one
/// copy of the connection code serves every listener).
pub(crate) struct Server {
    service: Box<dyn Service>,
    listener: TcpListener,
    addr: SocketAddr,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connection slot `i` is registered as `Token(conn_base + i)`.
    conn_base: usize,
    /// Accepting is paused until then (fd or memory exhaustion).
    paused_until: Option<Instant>,
    /// The accept budget ran out in the turn at this time, connections may still be queued.
    accept_again: Option<Instant>,
}

impl Server {
    /// Binds `addr` for `service` (not yet registered with the loop).
    pub(crate) fn listen(service: Box<dyn Service>, addr: SocketAddr) -> Result<Server, BindError> {
        let listener = TcpListener::bind(addr).map_err(|source| BindError { what: service.what(), addr, source })?;
        Ok(Server::from_listener(service, listener, addr))
    }

    /// A server for `service` on an already bound `listener` (e.g. handed over by systemd).
    pub(crate) fn from_listener(service: Box<dyn Service>, listener: TcpListener, addr: SocketAddr) -> Server {
        let addr = listener.local_addr().unwrap_or(addr);
        Server { service, listener, addr, conns: Vec::new(), free: Vec::new(), conn_base: 0, paused_until: None, accept_again: None }
    }

    /// Registers the listener as `listener_token`; connection slot `i` will be
    /// `Token(conn_base + i)`.
    pub(crate) fn register(&mut self, registry: &Registry, listener_token: Token, conn_base: usize) -> Result<(), BindError> {
        registry.register(&mut self.listener, listener_token, Interest::READABLE).map_err(|source| BindError {
            what: self.service.what(),
            addr: self.addr,
            source,
        })?;
        self.conn_base = conn_base;
        Ok(())
    }

    /// The bound address (the real port when 0 was asked for).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and closes every connection.
    pub(crate) fn close(mut self, registry: &Registry) {
        self.deregister(registry);
    }

    /// Removes the listener and every connection from the loop (they close when dropped).
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.listener);
        for c in self.conns.iter_mut().filter_map(Option::as_mut) {
            let _ = registry.deregister(&mut c.stream);
        }
    }

    /// The earliest deadline: a connection's timeout, the end of an accept pause, or now
    /// when work was left over from the last turn; or the service's own.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        let conns = self.conns.iter().flatten().map(|c| c.resume.unwrap_or(c.deadline));
        let accept = if self.paused_until.is_some() { self.paused_until } else { self.accept_again };
        conns.chain(accept).chain(self.service.poll_at()).min()
    }

    /// A readiness event for the listener or connection slot `slot` (`None` = listener).
    pub(crate) fn on_ready(&mut self, slot: Option<usize>, cx: &mut Context<'_>) {
        match slot {
            None => self.accept(cx.poll, cx.now, cx.metrics),
            Some(i) => self.drive(i, cx),
        }
    }

    /// Deadlines: expire idle or stuck connections, resume left-over work, resume accepting.
    pub(crate) fn on_timeout(&mut self, cx: &mut Context<'_>) {
        let now = cx.now;
        if self.service.poll_at().is_some_and(|t| t <= now) {
            self.service.on_timeout(now);
        }
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
            self.accept_again = Some(now);
        }
        if self.paused_until.is_none() && self.accept_again.is_some() {
            self.accept(cx.poll, now, cx.metrics);
        }
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else { continue };
            if c.resume.is_some() {
                self.drive(i, cx);
                continue;
            }
            if c.deadline > now {
                continue;
            }
            if let Phase::Reading { buf } = &c.phase {
                if !buf.is_empty() {
                    // Best effort: one non-blocking write of the 408, then drain and close.
                    let out = error_answer(&*self.service, Status::RequestTimeout);
                    let _ = c.stream.write(&out);
                    let _ = c.stream.shutdown(Shutdown::Write);
                    self.service.count(cx.metrics, "-", Status::RequestTimeout);
                    c.phase = Phase::Draining;
                    c.deadline = now + LINGER;
                    c.drained = 0;
                    continue;
                }
            }
            log::debug!("{} connection {i} timed out", self.service.what());
            self.release(cx.poll, i, cx.metrics);
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant, metrics: &mut Metrics) {
        self.accept_again = None;
        let what = self.service.what();
        for _ in 0..ACCEPT_BUDGET {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(registry, stream, peer, now, metrics),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM));
                    if out_of_fds {
                        metrics.inc(self.service.families().accept_errors, &["fd_limit"]);
                        log::warn!("{what} listener: accept failed ({e}); pausing accepts for {} ms", ACCEPT_BACKOFF.as_millis());
                        self.paused_until = Some(now + ACCEPT_BACKOFF);
                        return;
                    }
                    // ECONNABORTED and friends concern one connection only.
                    metrics.inc(self.service.families().accept_errors, &["other"]);
                    log::debug!("{what} listener: accept failed: {e}");
                }
            }
        }
        self.accept_again = Some(now);
    }

    fn admit(&mut self, registry: &Registry, mut stream: TcpStream, peer: SocketAddr, now: Instant, metrics: &mut Metrics) {
        let open = self.conns.len() - self.free.len();
        let what = self.service.what();
        if open >= MAX_CONNS {
            let out = error_answer(&*self.service, Status::Unavailable);
            let _ = stream.write(&out);
            let _ = stream.shutdown(Shutdown::Write);
            metrics.inc(self.service.families().refused, &[]);
            log::debug!("{what} listener: refused {peer}: {MAX_CONNS} connections open");
            return;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = registry.register(&mut stream, Token(self.conn_base + i), Interest::READABLE | Interest::WRITABLE) {
            log::warn!("{what} listener: cannot register connection from {peer}: {e}");
            self.free.push(i);
            return;
        }
        let _ = stream.set_nodelay(true);
        self.conns[i] = Some(Conn { stream, phase: Phase::Reading { buf: Vec::new() }, deadline: now + IDLE_TIMEOUT, drained: 0, resume: None });
        metrics.set(self.service.families().open, Vec::new(), (open + 1) as f64);
    }

    fn release(&mut self, registry: &Registry, i: usize, metrics: &mut Metrics) {
        if let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) {
            let _ = registry.deregister(&mut c.stream);
            self.free.push(i);
        }
        metrics.set(self.service.families().open, Vec::new(), (self.conns.len() - self.free.len()) as f64);
    }

    /// Runs connection `i` as far as it can go without blocking.
    fn drive(&mut self, i: usize, cx: &mut Context<'_>) {
        let now = cx.now;
        let service = &mut *self.service;
        let what = service.what();
        let cap = http::MAX_HEAD + service.max_body();
        let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else { return };
        c.resume = None;
        let mut budget = REQUEST_BUDGET;
        loop {
            c.phase = match std::mem::replace(&mut c.phase, Phase::Closed) {
                Phase::Reading { mut buf } => {
                    let eof = match fill(&mut c.stream, &mut buf, cap) {
                        Ok(eof) => eof,
                        Err(e) => {
                            log::debug!("{what} connection {i}: read failed: {e}");
                            break;
                        }
                    };
                    if budget == 0 {
                        // Pipelined requests left: continue next turn (no new edge will come).
                        c.resume = Some(now);
                        c.phase = Phase::Reading { buf };
                        return;
                    }
                    let Some(a) = respond(service, &buf, eof, cx) else {
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
                            log::debug!("{what} connection {i}: write failed: {e}");
                            break;
                        }
                        Ok(()) if close => {
                            service.recycle(body, now);
                            let _ = c.stream.shutdown(Shutdown::Write);
                            c.deadline = now + LINGER;
                            c.drained = 0;
                            Phase::Draining
                        }
                        Ok(()) => {
                            service.recycle(body, now);
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
        self.release(cx.poll, i, cx.metrics);
    }
}

/// Declares the metric families of a listener answering with `service` (refusals and
/// open connections start at 0).
pub(crate) fn declare(service: &dyn Service, metrics: &mut Metrics) {
    let f = service.families();
    for d in [f.refused, f.accept_errors, f.open] {
        metrics.declare(d);
    }
    service.declare(metrics);
    metrics.add(f.refused, &[], 0);
    metrics.set(f.open, Vec::new(), 0.0);
}

/// A complete error response (head and body) answered by the server itself; the
/// connection is closed after it.
fn error_answer(service: &dyn Service, status: Status) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    let content_type = service.error_body(status, &mut body);
    let mut out = Vec::with_capacity(160 + body.len());
    http::write_head(&mut out, &Head { status, content_type, content_length: body.len(), keep_alive: false, allow: None });
    out.extend_from_slice(&body);
    out
}

/// Reads until `WouldBlock`, end of stream or `cap` bytes. Returns whether the peer has
/// closed its write side.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, cap: usize) -> io::Result<bool> {
    let mut chunk = [0u8; 4096];
    while buf.len() < cap {
        let want = chunk.len().min(cap - buf.len());
        match stream.read(&mut chunk[..want]) {
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
pub(crate) fn respond(service: &mut dyn Service, buf: &[u8], eof: bool, cx: &mut Context<'_>) -> Option<Answer> {
    let parsed = http::parse_with(buf, service.max_body());
    match parsed {
        Parsed::Incomplete if !eof || buf.iter().all(|b| matches!(b, b'\r' | b'\n')) => return None,
        _ => {}
    }
    let (status, used) = match parsed {
        // The peer closed in the middle of a request.
        Parsed::Incomplete => (Status::BadRequest, buf.len()),
        Parsed::Error(s) => (s, buf.len()),
        Parsed::Request { req, used } => {
            let mut body = service.page();
            body.clear();
            let reply = service.answer(&req, &mut body, cx);
            let mut head = Vec::with_capacity(160);
            let keep_alive = req.keep_alive;
            http::write_head(
                &mut head,
                &Head { status: reply.status, content_type: reply.content_type, content_length: body.len(), keep_alive, allow: reply.allow },
            );
            if req.method == http::Method::Head {
                body.clear();
            }
            if !reply.counted {
                service.count(cx.metrics, reply.route, reply.status);
            }
            return Some(Answer { head, body, used, close: !keep_alive });
        }
    };
    service.count(cx.metrics, "-", status);
    Some(Answer { head: error_answer(service, status), body: Page::new(), used, close: true })
}

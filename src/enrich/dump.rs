//! THE sock_diag dump machine: one request builder, one reply parser and one state
//! machine for every dump flowd makes (the netlink plugin's scan, the enrichment layer's
//! tcp_info period, the prometheus backend's scrape).
//!
//! Two halves. [`Machine`] is the protocol and does no I/O: which family's request is in
//! flight with which sequence number, what one reply datagram means (parsed with
//! `wire::sock_diag::parse` as it arrives, each socket handed to the [`Sink`] at once,
//! nothing collected), which request comes next (IPv4, then IPv6, each only if the sink
//! still wants it), and the deadline of the whole dump. [`Dump`] owns the non-blocking
//! `sys::netlink::DiagSocket` and drives the machine in one of two ways:
//!
//! - asynchronously, inside the loop: the socket is registered in the `Poll` under its
//!   owner's token, [`Dump::read`] reads replies until `WouldBlock` or a per-call cap
//!   ([`Step::Capped`]: the owner sets `poll_at()` to now, because no new edge will come),
//!   and the owner checks [`Dump::expire`] at the deadline it reports through `poll_at`;
//! - blocking, for a caller that must have the whole answer now (a `/metrics` scrape
//!   returns a complete page): [`Dump::run_blocking`] waits with `poll(2)` between reads,
//!   never past its deadline.
//!
//! A dump that fails (send, recv, a malformed or error reply) or misses its deadline is
//! abandoned: the socket is replaced (a half-read dump keeps the kernel's dump state busy
//! and would make it refuse the next request) and re-registered under the same token;
//! if no new socket can be opened, the old one is drained. The owner counts and logs the
//! [`DumpError`] (its `reason()` is the metrics label) and goes on with what it had.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::sys::netlink::{DiagSocket, RECV_BUF};
use crate::wire::sock_diag::{self, Conn, DiagError, Family, Filter, REQUEST_LEN};

/// What a dump's owner does with it: the one place each user's per-socket work goes.
pub(crate) trait Sink {
    /// Asked before each family's request (IPv4, then IPv6): false skips that family.
    fn wants(&mut self, family: Family) -> bool {
        let _ = family;
        true
    }

    /// One socket of the dump, as soon as its reply is parsed.
    fn conn(&mut self, c: Conn);
}

/// Why a dump was abandoned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DumpError {
    /// A request could not be sent.
    #[error("cannot send the dump request: {0}")]
    Send(io::Error),
    /// Receiving a reply failed.
    #[error("recv failed: {0}")]
    Recv(io::Error),
    /// Waiting for a reply failed (blocking driver).
    #[error("waiting for the reply failed: {0}")]
    Wait(io::Error),
    /// A reply was malformed, or the kernel reported an error.
    #[error("bad {family:?} reply: {source}")]
    Reply {
        /// The family being dumped.
        family: Family,
        /// What was wrong with it.
        source: DiagError,
    },
    /// The dump did not finish before its deadline.
    #[error("dump did not finish in time")]
    Timeout,
}

impl DumpError {
    /// A short, fixed label for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            DumpError::Send(_) => "send_failed",
            DumpError::Recv(_) | DumpError::Wait(_) => "recv_failed",
            DumpError::Reply { source, .. } => source.reason(),
            DumpError::Timeout => "timeout",
        }
    }
}

/// The dump in flight.
#[derive(Clone, Copy, Debug)]
struct Run {
    filter: Filter,
    family: Family,
    seq: u32,
    deadline: Instant,
    /// Sockets handed to the sink so far, over every family.
    conns: usize,
}

/// What one reply datagram did to the dump.
#[derive(Debug)]
pub(crate) enum Fed {
    /// More replies of this family are to come.
    More,
    /// This family is complete and the next one is wanted: send this request.
    Send([u8; REQUEST_LEN]),
    /// Every wanted family is complete; `conns` sockets went to the sink.
    Done {
        /// Sockets handed to the sink.
        conns: usize,
    },
    /// The reply was bad; the dump is over.
    Failed(DumpError),
    /// No dump is running: a stray datagram (to be dropped).
    Stray,
}

/// The dump protocol without I/O: requests to send, replies to interpret.
#[derive(Debug, Default)]
pub(crate) struct Machine {
    seq: u32,
    run: Option<Run>,
}

impl Machine {
    /// True while a dump is in flight.
    pub(crate) fn running(&self) -> bool {
        self.run.is_some()
    }

    /// When the dump in flight must be complete.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.run.map(|r| r.deadline)
    }

    /// Begins a dump due by `deadline`: the first request to send, or `None` when the
    /// sink wants neither family (nothing to do).
    pub(crate) fn begin(&mut self, filter: Filter, deadline: Instant, sink: &mut impl Sink) -> Option<[u8; REQUEST_LEN]> {
        self.request_after(None, filter, deadline, 0, sink)
    }

    /// The request of the first family after `after` that the sink wants.
    fn request_after(&mut self, after: Option<Family>, filter: Filter, deadline: Instant, conns: usize, sink: &mut impl Sink) -> Option<[u8; REQUEST_LEN]> {
        let rest: &[Family] = match after {
            None => &Family::BOTH,
            Some(Family::V4) => &[Family::V6],
            Some(Family::V6) => &[],
        };
        for &family in rest {
            if sink.wants(family) {
                self.seq = self.seq.wrapping_add(1);
                self.run = Some(Run { filter, family, seq: self.seq, deadline, conns });
                return Some(sock_diag::request(family, filter, self.seq));
            }
        }
        self.run = None;
        None
    }

    /// Interprets one reply datagram, handing its sockets to `sink`.
    pub(crate) fn feed(&mut self, datagram: &[u8], sink: &mut impl Sink) -> Fed {
        let Some(run) = self.run else { return Fed::Stray };
        match sock_diag::parse(datagram, run.seq, |c| sink.conn(c)) {
            Err(source) => {
                self.run = None;
                Fed::Failed(DumpError::Reply { family: run.family, source })
            }
            Ok(p) if !p.done => {
                self.run = Some(Run { conns: run.conns + p.conns, ..run });
                Fed::More
            }
            Ok(p) => {
                let conns = run.conns + p.conns;
                match self.request_after(Some(run.family), run.filter, run.deadline, conns, sink) {
                    Some(req) => Fed::Send(req),
                    None => Fed::Done { conns },
                }
            }
        }
    }

    /// Forgets the dump in flight (abandoned); late replies are then strays.
    pub(crate) fn stop(&mut self) {
        self.run = None;
    }
}

/// What a read (or a start) left the dump in.
#[derive(Debug)]
pub(crate) enum Step {
    /// No dump is running (stray datagrams, if any, were dropped).
    Idle,
    /// Waiting for the kernel: the socket becomes readable when replies arrive.
    Pending,
    /// Stopped at the per-call cap with replies left: call [`Dump::read`] again soon.
    Capped,
    /// Complete.
    Done {
        /// Sockets handed to the sink.
        conns: usize,
    },
    /// Abandoned (the socket was replaced).
    Failed(DumpError),
}

/// A [`Machine`] on its own non-blocking sock_diag socket.
#[derive(Debug)]
pub(crate) struct Dump {
    sock: DiagSocket,
    token: Option<Token>,
    buf: Vec<u8>,
    machine: Machine,
}

impl Dump {
    /// Opens the socket (not registered anywhere yet).
    pub(crate) fn open() -> io::Result<Dump> {
        Ok(Dump { sock: DiagSocket::open()?, token: None, buf: vec![0u8; RECV_BUF], machine: Machine::default() })
    }

    /// Registers the socket for readability under `token` (the asynchronous driver).
    pub(crate) fn register(&mut self, reg: &Registry, token: Token) -> io::Result<()> {
        self.token = Some(token);
        reg.register(&mut SourceFd(&self.sock.as_raw_fd()), token, Interest::READABLE)
    }

    /// Removes the socket from the poll.
    pub(crate) fn deregister(&mut self, reg: &Registry) {
        let _ = reg.deregister(&mut SourceFd(&self.sock.as_raw_fd()));
    }

    /// True while a dump is in flight.
    #[cfg(test)]
    pub(crate) fn running(&self) -> bool {
        self.machine.running()
    }

    /// When the dump in flight must be complete (for the owner's `poll_at`).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.machine.deadline()
    }

    /// Starts a dump due by `deadline` by sending its first request; replies are then
    /// read with [`Dump::read`]. `Done` at once when the sink wants neither family.
    pub(crate) fn start(&mut self, filter: Filter, deadline: Instant, reg: &Registry, sink: &mut impl Sink) -> Step {
        self.start_with(filter, deadline, Some(reg), sink)
    }

    fn start_with(&mut self, filter: Filter, deadline: Instant, reg: Option<&Registry>, sink: &mut impl Sink) -> Step {
        self.machine.stop();
        // Leftovers of an earlier dump would only be skipped as stale: drop them now.
        self.sock.drain(&mut self.buf);
        match self.machine.begin(filter, deadline, sink) {
            None => Step::Done { conns: 0 },
            Some(req) => match self.sock.send(&req) {
                Ok(()) => Step::Pending,
                Err(e) => Step::Failed(self.abandon(DumpError::Send(e), reg)),
            },
        }
    }

    /// Reads and interprets reply datagrams until `WouldBlock` or `cap` of them.
    pub(crate) fn read(&mut self, cap: usize, reg: &Registry, sink: &mut impl Sink) -> Step {
        self.read_with(cap, Some(reg), sink)
    }

    fn read_with(&mut self, cap: usize, reg: Option<&Registry>, sink: &mut impl Sink) -> Step {
        for _ in 0..cap {
            if !self.machine.running() {
                self.sock.drain(&mut self.buf);
                return Step::Idle;
            }
            let n = match self.sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                Err(e) => return Step::Failed(self.abandon(DumpError::Recv(e), reg)),
            };
            match self.machine.feed(self.buf.get(..n).unwrap_or(&[]), sink) {
                Fed::More => {}
                // Replies to the next request are usually queued by the next recv.
                Fed::Send(req) => {
                    if let Err(e) = self.sock.send(&req) {
                        return Step::Failed(self.abandon(DumpError::Send(e), reg));
                    }
                }
                Fed::Done { conns } => return Step::Done { conns },
                Fed::Failed(e) => return Step::Failed(self.abandon(e, reg)),
                Fed::Stray => {}
            }
        }
        Step::Capped
    }

    /// Abandons the dump in flight if `now` is past its deadline.
    pub(crate) fn expire(&mut self, now: Instant, reg: &Registry) -> Option<DumpError> {
        let overdue = self.machine.deadline().is_some_and(|d| d <= now);
        overdue.then(|| self.abandon(DumpError::Timeout, Some(reg)))
    }

    /// Gives up on the dump in flight: a fresh socket (re-registered under the same
    /// token), or the old one drained if none can be opened. Returns `e`.
    fn abandon(&mut self, e: DumpError, reg: Option<&Registry>) -> DumpError {
        self.machine.stop();
        match DiagSocket::open() {
            Ok(sock) => {
                if let (Some(reg), Some(token)) = (reg, self.token) {
                    self.deregister(reg);
                    if let Err(e) = reg.register(&mut SourceFd(&sock.as_raw_fd()), token, Interest::READABLE) {
                        log::error!("sock_diag: cannot register the new socket: {e}");
                    }
                }
                self.sock = sock;
            }
            Err(open) => {
                self.sock.drain(&mut self.buf);
                log::error!("sock_diag: cannot open a new socket, keeping the old one: {open}");
            }
        }
        e
    }

    /// The blocking driver: one whole dump, waiting with `poll(2)` between reads and
    /// never longer than `timeout` in all. Returns the number of sockets handed to `sink`;
    /// on an error `sink` may have seen part of the dump.
    pub(crate) fn run_blocking(&mut self, filter: Filter, timeout: Duration, sink: &mut impl Sink) -> Result<usize, DumpError> {
        let deadline = Instant::now() + timeout;
        let mut step = self.start_with(filter, deadline, None, sink);
        loop {
            match step {
                Step::Done { conns } => return Ok(conns),
                Step::Failed(e) => return Err(e),
                Step::Idle => return Ok(0),
                Step::Capped => {}
                Step::Pending => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.abandon(DumpError::Timeout, None));
                    }
                    if let Err(e) = self.sock.wait_readable(left) {
                        return Err(self.abandon(DumpError::Wait(e), None));
                    }
                }
            }
            step = self.read_with(usize::MAX, None, sink);
        }
    }
}

/// Recorded dump replies (`tests/data/sock_diag/`) with every message's sequence number
/// set to `seq`, so they can answer a request of the [`Machine`].
#[cfg(test)]
pub(crate) fn fixture(name: &str, seq: u32) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sock_diag").join(name);
    let mut b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut at = 0;
    while at + 16 <= b.len() {
        let len = u32::from_ne_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        b[at + 8..at + 12].copy_from_slice(&seq.to_ne_bytes());
        at += (len + 3) & !3;
    }
    b
}

/// Runs one dump on a fresh [`Machine`] for `sink`, answering its IPv4 request with the
/// recorded `est_v4.bin` and its IPv6 request with `est_v6.bin`. Returns the families
/// asked for and the sockets handed to the sink.
#[cfg(test)]
pub(crate) fn replay_recorded(filter: Filter, sink: &mut impl Sink) -> (Vec<Family>, usize) {
    let mut m = Machine::default();
    let mut asked = Vec::new();
    let mut next = m.begin(filter, Instant::now(), sink);
    while let Some(req) = next {
        let (family, name) = if req[16] == 2 { (Family::V4, "est_v4.bin") } else { (Family::V6, "est_v6.bin") };
        asked.push(family);
        let seq = u32::from_ne_bytes([req[8], req[9], req[10], req[11]]);
        next = match m.feed(&fixture(name, seq), sink) {
            Fed::Send(r) => Some(r),
            Fed::Done { conns } => return (asked, conns),
            other => panic!("{other:?}"),
        };
    }
    (asked, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    /// Collects what a dump hands over; wants the families in `want`.
    #[derive(Default)]
    struct Collect {
        want: Vec<Family>,
        asked: Vec<Family>,
        conns: Vec<Conn>,
    }

    impl Sink for Collect {
        fn wants(&mut self, family: Family) -> bool {
            self.asked.push(family);
            self.want.contains(&family)
        }
        fn conn(&mut self, c: Conn) {
            self.conns.push(c);
        }
    }

    fn seq_of(req: &[u8]) -> u32 {
        u32::from_ne_bytes(req[8..12].try_into().unwrap())
    }

    #[test]
    fn test_machine_dumps_v4_then_v6_from_recorded_replies() {
        let t0 = Instant::now();
        let mut m = Machine::default();
        let mut sink = Collect { want: Family::BOTH.to_vec(), ..Collect::default() };
        let req = m.begin(Filter::established(true), t0, &mut sink).unwrap();
        assert_eq!((req[16], m.deadline()), (2, Some(t0)), "IPv4 first, due at the deadline given");
        let v4 = fixture("est_v4.bin", seq_of(&req));
        // A reply to an older request is skipped, not handed over.
        assert!(matches!(m.feed(&fixture("est_v4.bin", seq_of(&req).wrapping_sub(1)), &mut sink), Fed::More));
        assert!(sink.conns.is_empty());
        let Fed::Send(req6) = m.feed(&v4, &mut sink) else { panic!("the IPv6 request follows the IPv4 NLMSG_DONE") };
        assert_eq!((req6[16], sink.conns.len()), (10, 3));
        assert_ne!(seq_of(&req6), seq_of(&req));
        assert!(matches!(m.feed(&fixture("est_v6.bin", seq_of(&req6)), &mut sink), Fed::Done { conns: 6 }));
        assert!(!m.running());
        assert_eq!(sink.asked, Family::BOTH);
        assert!(matches!(m.feed(&v4, &mut sink), Fed::Stray), "nothing in flight");
    }

    #[test]
    fn test_machine_skips_unwanted_families_and_stops_on_a_bad_reply() {
        let t0 = Instant::now();
        let mut m = Machine::default();
        let mut none = Collect::default();
        assert!(m.begin(Filter::established(false), t0, &mut none).is_none());
        assert!(!m.running());
        let mut v6 = Collect { want: vec![Family::V6], ..Collect::default() };
        let req = m.begin(Filter::established(false), t0, &mut v6).unwrap();
        assert_eq!(req[16], 10, "IPv4 not wanted: IPv6 at once");
        let mut cut = fixture("est_v6.bin", seq_of(&req));
        cut.truncate(100);
        let fed = m.feed(&cut, &mut v6);
        assert!(matches!(fed, Fed::Failed(DumpError::Reply { family: Family::V6, source: DiagError::Malformed })), "{fed:?}");
        assert!(!m.running());
        assert_eq!(DumpError::Timeout.reason(), "timeout");
    }

    fn loopback_pair() -> (TcpStream, TcpStream, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let server = l.local_addr().unwrap();
        (c, s, server)
    }

    #[test]
    fn test_blocking_driver_sees_a_loopback_connection_with_tcp_info() {
        let (c, _s, server) = loopback_pair();
        let mut d = Dump::open().unwrap();
        let mut sink = Collect { want: Family::BOTH.to_vec(), ..Collect::default() };
        let n = d.run_blocking(Filter::established(true), Duration::from_secs(5), &mut sink).unwrap();
        assert_eq!(n, sink.conns.len());
        let mine = sink.conns.iter().find(|x| x.src == c.local_addr().unwrap() && x.dst == server).expect("client side in dump");
        assert_eq!(mine.state, sock_diag::state::ESTABLISHED);
        assert!(mine.tcp_info.is_some_and(|t| t.rtt().is_some()));
        assert!(sink.conns.iter().all(|x| x.state == sock_diag::state::ESTABLISHED), "the kernel filters by state");
        // The same socket serves the next dump.
        let mut again = Collect { want: vec![Family::V4], ..Collect::default() };
        assert!(d.run_blocking(Filter::established(false), Duration::from_secs(5), &mut again).unwrap() >= 2);
    }

    #[test]
    fn test_async_driver_in_a_poll_and_an_overdue_dump_is_abandoned() {
        let (c, _s, server) = loopback_pair();
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(8);
        let mut d = Dump::open().unwrap();
        d.register(poll.registry(), Token(7)).unwrap();
        let mut sink = Collect { want: Family::BOTH.to_vec(), ..Collect::default() };
        let t0 = Instant::now();
        assert!(matches!(d.start(Filter::established(false), t0 + Duration::from_secs(5), poll.registry(), &mut sink), Step::Pending));
        let conns = loop {
            match d.read(1, poll.registry(), &mut sink) {
                Step::Done { conns } => break conns,
                Step::Pending => poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap(),
                Step::Capped => {}
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(conns, sink.conns.len());
        assert!(sink.conns.iter().any(|x| x.src == c.local_addr().unwrap() && x.dst == server));
        // A dump still in flight at its deadline is abandoned on a new socket, which works.
        assert!(matches!(d.start(Filter::established(false), t0, poll.registry(), &mut sink), Step::Pending));
        assert!(d.expire(t0 - Duration::from_millis(1), poll.registry()).is_none(), "not overdue yet");
        assert!(matches!(d.expire(t0, poll.registry()), Some(DumpError::Timeout)));
        assert!(!d.running());
        assert!(matches!(d.read(64, poll.registry(), &mut sink), Step::Idle));
        let mut again = Collect { want: vec![Family::V4], ..Collect::default() };
        assert!(d.run_blocking(Filter::established(false), Duration::from_secs(5), &mut again).unwrap() >= 2);
    }
}

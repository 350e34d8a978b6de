//! The np_api plugin: flow announcements written as text lines into a named pipe.
//!
//! Owns the FIFO: takes it from systemd (`ListenFIFO=`, see `sys::listen_fds`) or puts
//! one at the path (`sys::open_fifo`: an existing FIFO is reused, a regular file moved
//! aside), sets mode/owner/group from the config, holds it `O_RDWR|O_NONBLOCK` so the
//! last writer closing never produces EOF, and reads it until `WouldBlock`
//! (edge-triggered) or the per-turn byte cap, after which `poll_at()` asks the loop to
//! come back at once. Partial lines are kept until their newline arrives; an over-long
//! line is dropped up to its newline. Every bad line is counted by reason and logged
//! (rate-limited); the lines around it are processed normally.
//!
//! The pipe outlives the daemon: it is never deleted, so a writer that keeps it open
//! (nginx) goes on after a restart. Lines a producer wrote into a regular file at the
//! path while flowd was down (StoRM WebDAV opens it with `O_CREAT`) are read first, in
//! file order, before anything from the pipe. Every few seconds the path is checked: a
//! deleted or replaced FIFO is put back the same way.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::config::Config;
use crate::context::Context;
use crate::decision::{self, Decision};
use crate::flow::FlowEvent;
use crate::logger::RateLimit;
use crate::metrics::{Desc, Kind, BAD_INPUT};
use crate::sys::{self, FileId};
use crate::wire::np_api::{parse_line, LineError, MAX_LINE};

/// Bytes read per loop turn before yielding to other sources.
const TURN_CAP: usize = 256 * 1024;
/// How often the pipe's path is checked for deletion/replacement.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Times the pipe was re-created after being deleted or replaced.
pub(crate) static RECREATED: Desc = Desc {
    name: "flowd_np_api_pipe_recreated_total",
    help: "Times the named pipe was re-created after it was deleted or replaced.",
    kind: Kind::Counter,
    labels: &[],
};

/// Lines recovered from a regular file found at the pipe's path.
pub(crate) static RECOVERED: Desc = Desc {
    name: "flowd_np_api_recovered_lines_total",
    help: "Lines read from a regular file that a producer created at the pipe's path while flowd was not running.",
    kind: Kind::Counter,
    labels: &[],
};

/// The root-only warning is given once per process, not at every reload.
static WARNED_ROOT_ONLY: AtomicBool = AtomicBool::new(false);

/// Why the pipe could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NpApiError {
    /// Creating or opening the FIFO failed.
    #[error("cannot create or open named pipe {}: {source}", .path.display())]
    Open {
        /// The pipe path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// NP_API_FILE_OWNER / NP_API_FILE_GROUP does not exist.
    #[error("NP_API_FILE_OWNER/GROUP: {0}")]
    Owner(#[source] io::Error),
}

/// The running np_api plugin.
pub(crate) struct NpApi {
    path: PathBuf,
    mode: u32,
    owner: Option<nix::unistd::Uid>,
    group: Option<nix::unistd::Gid>,
    fd: OwnedFd,
    id: FileId,
    token: Option<Token>,
    buf: Vec<u8>,
    partial: Vec<u8>,
    discarding: bool,
    /// Set (to the turn's time) when a read stopped at the per-turn cap with input left.
    backlog: Option<Instant>,
    next_check: Instant,
    warn: RateLimit,
    /// Rejected lines not logged in the current rate-limit window, by reason.
    unlogged: Vec<(&'static str, u64)>,
    /// A regular file moved aside from the path, whose lines are read before the pipe's.
    recovered: Option<PathBuf>,
}

impl NpApi {
    /// Takes the pipe systemd handed over (`inherited`, when it is the FIFO at the
    /// configured path), or puts one at the path and opens it.
    pub(crate) fn new(cfg: &Config, inherited: Option<OwnedFd>) -> Result<NpApi, NpApiError> {
        let owner = cfg.np_api.owner.as_deref().map(sys::lookup_user).transpose().map_err(NpApiError::Owner)?;
        let group = cfg.np_api.group.as_deref().map(sys::lookup_group).transpose().map_err(NpApiError::Owner)?;
        let path = cfg.np_api.file.clone();
        let open_err = |source| NpApiError::Open { path: path.clone(), source };
        let fifo = match inherited {
            Some(fd) if matches!((sys::file_id(&fd), sys::fifo_id(&path)), (Ok(a), Some(b)) if a == b) => {
                let f = sys::adopt_fifo(fd, cfg.np_api.mode, owner, group).map_err(open_err)?;
                log::info!("np_api: using the named pipe {} handed over by systemd", path.display());
                f
            }
            Some(_) => {
                log::warn!(
                    "np_api: the FIFO handed over by systemd is not NP_API_FILE={} (check ListenFIFO= in flowd.socket); opening {} instead",
                    path.display(),
                    path.display()
                );
                sys::open_fifo(&path, cfg.np_api.mode, owner, group).map_err(open_err)?
            }
            None => sys::open_fifo(&path, cfg.np_api.mode, owner, group).map_err(open_err)?,
        };
        warn_if_root_only(&path, &fifo.fd, cfg.np_api.group.is_some());
        let sys::Fifo { fd, id, aside } = fifo;
        if let Some(a) = &aside {
            log::warn!(
                "np_api: {} was a regular file (a producer wrote to it while flowd was not running); moved it to {} to report its lines",
                path.display(),
                a.display()
            );
        }
        Ok(NpApi {
            path,
            mode: cfg.np_api.mode,
            owner,
            group,
            fd,
            id,
            token: None,
            buf: vec![0; 64 * 1024],
            partial: Vec::with_capacity(MAX_LINE + 2),
            discarding: false,
            backlog: None,
            next_check: Instant::now() + CHECK_EVERY,
            warn: RateLimit::new(10, Duration::from_secs(10)),
            unlogged: Vec::new(),
            recovered: aside,
        })
    }

    /// Reads the lines of a regular file moved aside from the path, in file order, as
    /// events (before anything from the pipe). The file is removed once read whole; a
    /// file that cannot be read is kept, with a log line saying where it is.
    fn drain_recovered(&mut self, cx: &mut Context<'_>) {
        let Some(file) = self.recovered.take() else { return };
        let data = match std::fs::read(&file) {
            Ok(d) => d,
            Err(e) => {
                log::error!("np_api: cannot read {} (lines written while flowd was down); kept it: {e}", file.display());
                return;
            }
        };
        let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let lines = data[..complete].split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).count();
        let before = cx.out.len();
        for line in data[..complete].split(|&b| b == b'\n') {
            if line.len() > MAX_LINE + 1 {
                self.bad(Decision::BadLine, LineError::TooLong.reason(), LineError::TooLong.describe(), b"", cx);
            } else {
                self.line(line, cx);
            }
        }
        if complete < data.len() {
            self.bad(Decision::BadLine, "incomplete_line", "the recovered file ends in the middle of a line", &data[complete..], cx);
        }
        cx.metrics.add(&RECOVERED, &[], lines as u64);
        let events = cx.out.len() - before;
        match std::fs::remove_file(&file) {
            Ok(()) => log::warn!(
                "np_api: recovered {lines} lines ({events} flow events) that a producer wrote while the pipe was missing; removed {}",
                file.display()
            ),
            Err(e) => log::warn!("np_api: recovered {lines} lines ({events} flow events) from {}; cannot remove it: {e}", file.display()),
        }
    }

    /// Registers the pipe for readability.
    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.token = Some(token);
        registry.register(&mut SourceFd(&self.fd.as_raw_fd()), token, Interest::READABLE)
    }

    /// Deregisters the pipe.
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut SourceFd(&self.fd.as_raw_fd()));
    }

    /// Reads until `WouldBlock` or the per-turn cap.
    pub(crate) fn on_ready(&mut self, cx: &mut Context<'_>) {
        self.drain_recovered(cx);
        let mut total = 0;
        self.backlog = None;
        loop {
            if total >= TURN_CAP {
                self.backlog = Some(cx.now);
                return;
            }
            let mut buf = std::mem::take(&mut self.buf);
            let r = sys::read(&self.fd, &mut buf);
            match r {
                Ok(0) => {
                    self.buf = buf;
                    return;
                }
                Ok(n) => {
                    total += n;
                    self.feed(&buf[..n], cx);
                    self.buf = buf;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.buf = buf;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf = buf,
                Err(e) => {
                    self.buf = buf;
                    log::error!("np_api: read from {} failed: {e}", self.path.display());
                    return;
                }
            }
        }
    }

    /// Splits bytes into lines, carrying a partial line over to the next read.
    fn feed(&mut self, mut data: &[u8], cx: &mut Context<'_>) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let (head, rest) = (&data[..nl], &data[nl + 1..]);
            data = rest;
            if self.discarding {
                self.discarding = false;
                continue;
            }
            if self.partial.is_empty() {
                self.line(head, cx);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.line(&line, cx);
                line.clear();
                self.partial = line;
            }
        }
        if self.discarding {
            return;
        }
        if self.partial.len() + data.len() > MAX_LINE + 1 {
            self.partial.clear();
            self.discarding = true;
            self.bad(Decision::BadLine, LineError::TooLong.reason(), LineError::TooLong.describe(), b"", cx);
        } else {
            self.partial.extend_from_slice(data);
        }
    }

    fn line(&mut self, line: &[u8], cx: &mut Context<'_>) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let a = match parse_line(line) {
            Ok(a) => a,
            Err(e) => return self.bad(Decision::BadLine, e.reason(), e.describe(), line, cx),
        };
        let (exp, act) = match cx.registry.resolve(&a.exp, &a.act) {
            Ok(p) => p,
            Err(miss) => {
                let decision = cx.reject("np_api", a.key, a.state, miss, &a.exp, &a.act);
                return self.bad(decision, decision.reason(), decision.describe(), line, cx);
            }
        };
        cx.out.push(FlowEvent::new(a.state, a.key, exp, act, cx.wall));
    }

    /// Counts a rejected line (by `reason` in `flowd_bad_input_total`, and as decision `d`)
    /// and logs it, rate-limited.
    fn bad(&mut self, d: Decision, reason: &'static str, why: &str, line: &[u8], cx: &mut Context<'_>) {
        cx.metrics.inc(&BAD_INPUT, &["np_api", reason]);
        decision::count(cx.metrics, "np_api", d);
        if let Some(suppressed) = self.warn.allow(cx.now) {
            let shown: String = String::from_utf8_lossy(&line[..line.len().min(200)]).escape_debug().collect();
            let more = if suppressed > 0 { format!(" ({suppressed} similar messages suppressed: {})", self.take_unlogged()) } else { String::new() };
            log::warn!("np_api: rejected line \"{shown}\": {why}{more}");
        } else {
            match self.unlogged.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => self.unlogged.push((reason, 1)),
            }
        }
    }

    /// `reason=count …` of the lines rejected without a log line, and resets them.
    fn take_unlogged(&mut self) -> String {
        let by: Vec<String> = self.unlogged.iter().map(|(r, n)| format!("{r}={n}")).collect();
        self.unlogged.clear();
        by.join(" ")
    }

    /// Logs the rejections the rate limit held back once its window is over.
    fn log_unlogged(&mut self, now: Instant) {
        if let Some(n) = self.warn.flush(now) {
            log::warn!("np_api: {n} more rejected lines not logged individually: {}", self.take_unlogged());
        }
    }

    /// Clean exit: logs the rejections the rate limit held back. The pipe stays: a
    /// writer holding it open (nginx) goes on when flowd is back.
    pub(crate) fn shutdown(&mut self) {
        if !self.unlogged.is_empty() {
            let n: u64 = self.unlogged.iter().map(|(_, n)| n).sum();
            log::warn!("np_api: {n} more rejected lines not logged individually: {}", self.take_unlogged());
        }
    }

    /// Next deadline: now when input is left over, else the next path check.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        if self.recovered.is_some() {
            // Recovered lines are read in the first turn.
            return Some(self.next_check - CHECK_EVERY);
        }
        // A past instant (the turn that hit the cap), so the loop's `at <= now` holds.
        Some(self.backlog.map_or(self.next_check, |at| at.min(self.next_check)))
    }

    /// Resumes a backlog; checks that the pipe still exists at its path.
    pub(crate) fn on_timeout(&mut self, cx: &mut Context<'_>) {
        if self.recovered.is_some() {
            self.on_ready(cx);
        }
        if self.backlog.is_some() {
            self.on_ready(cx);
        }
        if cx.now >= self.next_check {
            self.next_check = cx.now + CHECK_EVERY;
            self.log_unlogged(cx.now);
            if sys::fifo_id(&self.path) != Some(self.id) {
                self.recreate(cx);
            }
        }
    }

    fn recreate(&mut self, cx: &mut Context<'_>) {
        let kind = std::fs::symlink_metadata(&self.path).map(|m| m.file_type());
        if kind.as_ref().is_ok_and(|t| !t.is_fifo() && !t.is_file()) {
            // A link, directory, … took the path while flowd runs: move it aside (never
            // follow or delete it) so the producers get their pipe back. At start the
            // same finding is an error for the admin to look at.
            let aside = self.path.with_extension("not-a-fifo");
            if let Err(e) = std::fs::rename(&self.path, &aside) {
                log::error!("np_api: {} was replaced by a non-FIFO file and cannot be moved aside: {e}", self.path.display());
                return;
            }
            log::warn!("np_api: {} was replaced by a non-FIFO file; moved it to {}", self.path.display(), aside.display());
        }
        match sys::open_fifo(&self.path, self.mode, self.owner, self.group) {
            Ok(fifo) => {
                // Drain what is left in the old pipe before switching.
                self.on_ready(cx);
                self.deregister(cx.poll);
                self.fd = fifo.fd;
                self.id = fifo.id;
                if let Some(t) = self.token {
                    if let Err(e) = cx.poll.register(&mut SourceFd(&self.fd.as_raw_fd()), t, Interest::READABLE) {
                        log::error!("np_api: cannot register re-created pipe: {e}");
                    }
                }
                cx.metrics.inc(&RECREATED, &[]);
                log::warn!("np_api: named pipe {} was deleted or replaced; re-created it", self.path.display());
                if let Some(a) = fifo.aside {
                    log::warn!(
                        "np_api: {} was replaced by a non-FIFO file (a regular file); moved it to {} to report its lines",
                        self.path.display(),
                        a.display()
                    );
                    self.recovered = Some(a);
                    self.drain_recovered(cx);
                }
            }
            Err(e) => log::error!("np_api: cannot re-create named pipe {}: {e}", self.path.display()),
        }
    }
}

/// Says once, at start, when only root can write into the pipe (0660 root:root and no
/// NP_API_FILE_GROUP): the Python flowd and flowd-go created it 0666, so a site whose
/// producer runs as another user (StoRM WebDAV as `storm`) would see every write fail.
fn warn_if_root_only(path: &std::path::Path, fd: &OwnedFd, group_configured: bool) {
    let Ok((mode, uid, gid)) = sys::owner_and_mode(fd) else { return };
    if group_configured || uid != 0 || gid != 0 || mode & 0o002 != 0 || WARNED_ROOT_ONLY.swap(true, Ordering::Relaxed) {
        return;
    }
    log::warn!(
        "np_api: named pipe {} is mode {mode:04o} owned by root:root: only root can write to it. A producer running as another user \
         (StoRM WebDAV runs as 'storm') needs NP_API_FILE_GROUP='<its group>' (or NP_API_FILE_MODE=0o666, which the Python flowd and flowd-go used)",
        path.display()
    );
}

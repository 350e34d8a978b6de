//! The np_api plugin: flow announcements written as text lines into a named pipe.
//!
//! Owns the FIFO: creates it if missing (mode/owner/group from config), opens it
//! `O_RDWR|O_NONBLOCK` so the last writer closing never produces EOF, and reads it until
//! `WouldBlock` (edge-triggered) or the per-turn byte cap, after which `poll_at()` asks
//! the loop to come back at once. Partial lines are kept until their newline arrives;
//! an over-long line is dropped up to its newline. Every bad line is counted by reason
//! and logged (rate-limited); the lines around it are processed normally.
//! Every few seconds the path is checked: a deleted or replaced FIFO is re-created.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::config::Config;
use crate::context::Context;
use crate::flow::FlowEvent;
use crate::logger::RateLimit;
use crate::metrics::{Desc, Kind, BAD_INPUT};
use crate::registry::UnknownName;
use crate::sys::{self, FileId};
use crate::wire::np_api::{parse_line, LineError, MAX_LINE};

/// Bytes read per loop turn before yielding to other sources.
const TURN_CAP: usize = 256 * 1024;
/// How often the pipe's path is checked for deletion/replacement.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Times the pipe was re-created after being deleted or replaced.
pub static RECREATED: Desc = Desc {
    name: "flowd_np_api_pipe_recreated_total",
    help: "Times the named pipe was re-created after it was deleted or replaced.",
    kind: Kind::Counter,
    labels: &[],
};

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
pub struct NpApi {
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
}

impl NpApi {
    /// Creates/opens the pipe.
    pub fn new(cfg: &Config) -> Result<NpApi, NpApiError> {
        let owner = cfg.np_api.owner.as_deref().map(sys::lookup_user).transpose().map_err(NpApiError::Owner)?;
        let group = cfg.np_api.group.as_deref().map(sys::lookup_group).transpose().map_err(NpApiError::Owner)?;
        let path = cfg.np_api.file.clone();
        let (fd, id) = sys::open_fifo(&path, cfg.np_api.mode, owner, group).map_err(|source| NpApiError::Open { path: path.clone(), source })?;
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
        })
    }

    /// Registers the pipe for readability.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.token = Some(token);
        registry.register(&mut SourceFd(&self.fd.as_raw_fd()), token, Interest::READABLE)
    }

    /// Deregisters the pipe.
    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut SourceFd(&self.fd.as_raw_fd()));
    }

    /// Reads until `WouldBlock` or the per-turn cap.
    pub fn on_ready(&mut self, cx: &mut Context<'_>) {
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
            self.bad(LineError::TooLong.reason(), LineError::TooLong.describe(), b"", cx);
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
            Err(e) => return self.bad(e.reason(), e.describe(), line, cx),
        };
        let (exp, act) = match cx.registry.resolve(&a.exp, &a.act) {
            Ok(p) => p,
            Err(UnknownName::Experiment) => return self.bad("unknown_experiment", "experiment is not in the registry", line, cx),
            Err(UnknownName::Activity) => return self.bad("unknown_activity", "activity is not in the registry for this experiment", line, cx),
        };
        cx.out.push(FlowEvent::new(a.state, a.key, exp, act, cx.wall));
    }

    fn bad(&mut self, reason: &'static str, why: &str, line: &[u8], cx: &mut Context<'_>) {
        cx.metrics.inc(&BAD_INPUT, &["np_api", reason]);
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

    /// Removes the pipe from the file system if it is still ours (clean exit only),
    /// after logging the rejections the rate limit held back.
    pub fn remove_pipe(&mut self) {
        if !self.unlogged.is_empty() {
            let n: u64 = self.unlogged.iter().map(|(_, n)| n).sum();
            log::warn!("np_api: {n} more rejected lines not logged individually: {}", self.take_unlogged());
        }
        if sys::fifo_id(&self.path) == Some(self.id) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("np_api: cannot remove {}: {e}", self.path.display());
            }
        }
    }

    /// Next deadline: now when input is left over, else the next path check.
    pub fn poll_at(&self) -> Option<Instant> {
        // A past instant (the turn that hit the cap), so the loop's `at <= now` holds.
        Some(self.backlog.map_or(self.next_check, |at| at.min(self.next_check)))
    }

    /// Resumes a backlog; checks that the pipe still exists at its path.
    pub fn on_timeout(&mut self, cx: &mut Context<'_>) {
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
        if std::fs::symlink_metadata(&self.path).is_ok() && sys::fifo_id(&self.path).is_none() {
            // Something that is not a FIFO took the path: move it aside, never delete data.
            let aside = self.path.with_extension("not-a-fifo");
            if let Err(e) = std::fs::rename(&self.path, &aside) {
                log::error!("np_api: {} was replaced by a non-FIFO and cannot be moved aside: {e}", self.path.display());
                return;
            }
            log::warn!("np_api: {} was replaced by a non-FIFO file; moved it to {}", self.path.display(), aside.display());
        }
        match sys::open_fifo(&self.path, self.mode, self.owner, self.group) {
            Ok((fd, id)) => {
                // Drain what is left in the old pipe before switching.
                self.on_ready(cx);
                self.deregister(cx.poll);
                self.fd = fd;
                self.id = id;
                if let Some(t) = self.token {
                    if let Err(e) = cx.poll.register(&mut SourceFd(&self.fd.as_raw_fd()), t, Interest::READABLE) {
                        log::error!("np_api: cannot register re-created pipe: {e}");
                    }
                }
                cx.metrics.inc(&RECREATED, &[]);
                log::warn!("np_api: named pipe {} was deleted or replaced; re-created it", self.path.display());
            }
            Err(e) => log::error!("np_api: cannot re-create named pipe {}: {e}", self.path.display()),
        }
    }
}

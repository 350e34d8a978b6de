//! `flowd stun [-c CONFIG] [--timeout SECONDS] [SERVER…]`: run one discovery round per
//! family with the same state machine as the daemon, and print what each server (or
//! HTTP URL) answered and the public addresses chosen. For debugging a site's NAT.
//!
//! Servers given on the command line replace IP_DISCOVERY_STUN_SERVERS; discovery runs
//! even when IP_DISCOVERY_ENABLED is False. Exit status 0 when a public address was
//! found for at least one family, 1 otherwise, 2 for usage or config errors.

use std::fmt::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use super::Discovery;
use crate::config::{self, Config};
use crate::metrics::Metrics;

const SOCKETS: Token = Token(0);
const WAKER: Token = Token(1);

/// What `flowd stun` prints and its exit status.
#[derive(Debug)]
pub struct Report {
    /// The text for stdout.
    pub text: String,
    /// 0 = found, 1 = nothing found, 2 = usage/config error.
    pub status: u8,
}

/// Parses `flowd stun` arguments, loads the config and runs discovery.
pub fn stun_command(args: &[String]) -> Report {
    let mut cfg_path: Option<PathBuf> = None;
    let mut servers = Vec::new();
    let mut limit = Duration::from_secs(30);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" | "--config" => match it.next() {
                Some(p) => cfg_path = Some(PathBuf::from(p)),
                None => return usage("-c needs a path"),
            },
            "--timeout" => match it.next().and_then(|s| s.parse::<f64>().ok()).filter(|s| s.is_finite() && *s > 0.0) {
                Some(s) => limit = Duration::from_secs_f64(s.min(3600.0)),
                None => return usage("--timeout needs a number of seconds"),
            },
            s if s.starts_with('-') => return usage(&format!("unrecognized argument: {s}")),
            s => servers.push(s.to_string()),
        }
    }
    let cfg = match &cfg_path {
        Some(p) => match config::load(p) {
            Ok(l) => l.config,
            Err(e) => return Report { text: format!("flowd: stun: {e}\n"), status: 2 },
        },
        None => {
            let p = PathBuf::from(crate::cli::DEFAULT_CONFIG);
            config::load(&p).map(|l| l.config).unwrap_or_default()
        }
    };
    for s in &servers {
        if let Err(m) = crate::netaddr::split_host_port(s, super::helper::STUN_PORT) {
            return usage(&m);
        }
    }
    let list = if servers.is_empty() { cfg.discovery.stun_servers.clone() } else { servers };
    match run(&cfg, &list, limit) {
        Ok(r) => r,
        Err(e) => Report { text: format!("flowd: stun: {e}\n"), status: 1 },
    }
}

fn usage(msg: &str) -> Report {
    Report { text: format!("usage: flowd stun [-c CONFIG] [--timeout SECONDS] [SERVER[:PORT]…]\nflowd: stun: {msg}\n"), status: 2 }
}

/// Runs discovery against `servers` until every family has finished a round (or `limit`).
pub(crate) fn run(cfg: &Config, servers: &[String], limit: Duration) -> std::io::Result<Report> {
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let mut events = Events::with_capacity(16);
    let mut metrics = Metrics::new();
    let start = Instant::now();
    let mut d = Discovery::with_servers(cfg, true, servers);
    d.start(SOCKETS, waker, start);
    let end = start + limit;
    while !d.settled() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let wake_at = d.poll_at().map_or(end, |t| t.min(end));
        match poll.poll(&mut events, Some(wake_at.saturating_duration_since(now))) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        let now = Instant::now();
        for ev in events.iter() {
            match ev.token() {
                SOCKETS => d.on_ready(poll.registry(), now, &mut metrics),
                _ => d.on_wake(poll.registry(), now, &mut metrics),
            }
        }
        if d.poll_at().is_some_and(|t| t <= now) {
            d.on_timeout(poll.registry(), now, &mut metrics);
        }
    }
    d.deregister(poll.registry());
    Ok(report(&d, servers, start.elapsed(), limit))
}

fn report(d: &Discovery, servers: &[String], took: Duration, limit: Duration) -> Report {
    let mut t = String::new();
    let _ = writeln!(t, "STUN servers: {}", if servers.is_empty() { "(none)".to_string() } else { servers.join(", ") });
    for o in d.outcomes() {
        let to = o.addr.map(|a| format!(" ({a})")).unwrap_or_default();
        match &o.result {
            Ok((internal, public)) => {
                let i = internal.map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
                let _ = writeln!(t, "  {}{to}: public {public}, internal {i}", o.server);
            }
            Err(e) => {
                let _ = writeln!(t, "  {}{to}: {e}", o.server);
            }
        }
    }
    let mut found = false;
    for (v6, name) in [(false, "IPv4"), (true, "IPv6")] {
        match d.found(v6) {
            Some(f) => {
                found = true;
                let i = f.internal.map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
                let same = if f.internal == Some(f.public) { " (not behind NAT: fireflies are not rewritten)" } else { "" };
                let _ = writeln!(t, "public {name}: {} (internal {i}, from {}){same}", f.public, f.source);
            }
            None => {
                let _ = writeln!(t, "public {name}: none");
            }
        }
    }
    if !d.settled() {
        let _ = writeln!(t, "(stopped after {:.1} s, the --timeout of {:.1} s)", took.as_secs_f64(), limit.as_secs_f64());
    }
    Report { text: t, status: if found { 0 } else { 1 } }
}

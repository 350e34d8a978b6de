//! Keeping the flow registry fresh without stalling the loop, or the start.
//!
//! flowd is ready without waiting for the network: at start an http(s) FLOW_MAP_API is
//! not fetched in line; flowd starts on the last good copy it saved (in its state
//! directory: `$STATE_DIRECTORY`, set by the units' `StateDirectory=flowd`, else
//! `/var/lib/flowd`) or on the bundled registry, and fetches at once in the background.
//! A file path is read in line (local, fast). Every fetch runs the (blocking) HTTP or
//! file read on a short-lived helper thread; the result comes back through a channel and
//! a `mio::Waker`, so the loop thread never waits on the network, and names resolve with
//! the newest registry from the turn it arrives. On failure the last good registry stays
//! in force. Each good http fetch is saved for the next start. The
//! timer hooks are the loop's (`poll_at()`, `on_timeout(cx)`).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::metrics::{Desc, Kind, Metrics};
use crate::registry::ScitagsRegistry;

/// Failed registry fetches.
pub(crate) static FAILURES: Desc = Desc {
    name: "flowd_registry_refresh_failures_total",
    help: "ScitagsRegistry (FLOW_MAP_API) fetches that failed; the last good registry stayed in force.",
    kind: Kind::Counter,
    labels: &[],
};

/// Unix time of the last successful fetch.
pub(crate) static LAST_SUCCESS: Desc = Desc {
    name: "flowd_registry_last_success_timestamp_seconds",
    help: "Unix time at which the registry in force was loaded.",
    kind: Kind::Gauge,
    labels: &["origin"],
};

fn is_http(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Where the last good copy of an http registry is kept (with the URL it came from).
pub(crate) fn state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| std::env::split_paths(&v).next())
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/var/lib/flowd"))
}

/// Saves a fetched registry document for the next start (atomically; best effort).
fn save(dir: &Path, source: &str, body: &[u8]) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(".registry.json.tmp");
        std::fs::write(&tmp, body)?;
        std::fs::write(dir.join("registry.source"), source)?;
        std::fs::rename(&tmp, dir.join("registry.json"))
    };
    if let Err(e) = write() {
        log::debug!("registry: cannot save a copy in {}: {e}", dir.display());
    }
}

/// The copy saved from `source` by an earlier run, if there is a good one.
fn saved(dir: &Path, source: &str) -> Option<ScitagsRegistry> {
    if std::fs::read_to_string(dir.join("registry.source")).ok()?.trim() != source {
        return None;
    }
    let body = std::fs::read(dir.join("registry.json")).ok()?;
    ScitagsRegistry::parse(&body, &format!("{source} (saved copy)")).ok()
}

/// Reads the registry from an http(s) URL or a file path; a good http document is also
/// saved in `save_in`.
pub(crate) fn fetch(source: &str, timeout: Duration, save_in: Option<&Path>) -> Result<ScitagsRegistry, String> {
    let body = if is_http(source) {
        let secs = timeout.as_secs().max(1);
        let resp = minreq::get(source).with_timeout(secs).send().map_err(|e| format!("GET {source}: {e}"))?;
        if resp.status_code != 200 {
            return Err(format!("GET {source}: HTTP {} {}", resp.status_code, resp.reason_phrase));
        }
        resp.into_bytes()
    } else {
        std::fs::read(source).map_err(|e| format!("cannot read {source}: {e}"))?
    };
    let reg = ScitagsRegistry::parse(&body, source).map_err(|e| format!("{source}: {e}"))?;
    if let Some(dir) = save_in.filter(|_| is_http(source)) {
        save(dir, source, &body);
    }
    Ok(reg)
}

/// The registry to start on, without waiting for the network: a file source is read;
/// for an http(s) source, the copy saved by an earlier run or the bundled registry
/// (the returned `true` asks the refresher to fetch at once).
pub(crate) fn initial(source: Option<&str>, timeout: Duration, state: &Path, metrics: &mut Metrics) -> (ScitagsRegistry, bool) {
    let (reg, fetch_now) = match source {
        None => (ScitagsRegistry::bundled(), false),
        Some(src) if is_http(src) => match saved(state, src) {
            Some(r) => {
                log::info!("registry: starting on the copy of {src} saved in {}; fetching a fresh one in the background", state.display());
                (r, true)
            }
            None => {
                log::info!("registry: starting on the bundled registry; fetching {src} in the background");
                (ScitagsRegistry::bundled(), true)
            }
        },
        Some(src) => match fetch(src, timeout, None) {
            Ok(r) => (r, false),
            Err(e) => {
                metrics.inc(&FAILURES, &[]);
                log::warn!("registry: {e}; using the bundled registry until a refresh succeeds");
                (ScitagsRegistry::bundled(), false)
            }
        },
    };
    record_success(&reg, metrics);
    (reg, fetch_now)
}

fn record_success(reg: &ScitagsRegistry, metrics: &mut Metrics) {
    metrics.clear(&LAST_SUCCESS);
    let now = crate::flow::Micros::now().0 as f64 / 1e6;
    metrics.set(&LAST_SUCCESS, vec![reg.origin.clone().into()], now);
}

/// Periodic refresher state.
pub(crate) struct Refresher {
    source: Option<String>,
    period: Option<Duration>,
    timeout: Duration,
    state: PathBuf,
    next: Option<Instant>,
    inflight: Option<Receiver<Result<ScitagsRegistry, String>>>,
    waker: Arc<mio::Waker>,
}

impl Refresher {
    /// A refresher for `source` every `period` (nothing to do without a source or
    /// period), fetching at once when `fetch_now`; good http documents are saved in `state`.
    pub(crate) fn new(
        source: Option<String>,
        period: Option<Duration>,
        timeout: Duration,
        state: PathBuf,
        fetch_now: bool,
        waker: Arc<mio::Waker>,
        now: Instant,
    ) -> Refresher {
        let next = match (&source, period) {
            (Some(_), _) if fetch_now => Some(now),
            (Some(_), Some(p)) => Some(now + p),
            _ => None,
        };
        Refresher { source, period, timeout, state, next, inflight: None, waker }
    }

    /// When the next fetch is due (`None` while one is in flight or when disabled).
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        if self.inflight.is_some() {
            None
        } else {
            self.next
        }
    }

    /// Starts a fetch on a helper thread if one is due.
    pub(crate) fn on_timeout(&mut self, cx: &mut Context<'_>) {
        let (now, metrics) = (cx.now, &mut *cx.metrics);
        let (Some(next), Some(src)) = (self.next, self.source.clone()) else { return };
        if now < next || self.inflight.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let waker = Arc::clone(&self.waker);
        let timeout = self.timeout;
        let state = self.state.clone();
        let spawned = std::thread::Builder::new().name("flowd-registry".into()).spawn(move || {
            let _ = tx.send(fetch(&src, timeout, Some(&state)));
            let _ = waker.wake();
        });
        match spawned {
            Ok(_) => self.inflight = Some(rx),
            Err(e) => {
                metrics.inc(&FAILURES, &[]);
                log::warn!("registry: cannot start refresh: {e}");
                self.next = self.period.map(|p| now + p);
            }
        }
    }

    /// Collects a finished fetch (after the waker fired). `Some` = new registry to use
    /// (the loop swaps it in after the turn).
    pub(crate) fn on_wake(&mut self, cx: &mut Context<'_>) -> Option<ScitagsRegistry> {
        let (now, metrics) = (cx.now, &mut *cx.metrics);
        let rx = self.inflight.as_ref()?;
        let res = match rx.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Err("refresh thread ended without a result".into()),
        };
        self.inflight = None;
        self.next = self.period.map(|p| now + p);
        match res {
            Ok(reg) => {
                log::info!("registry: refreshed from {} ({} experiments)", reg.origin, reg.experiments.len());
                record_success(&reg, metrics);
                Some(reg)
            }
            Err(e) => {
                metrics.inc(&FAILURES, &[]);
                log::warn!("registry: refresh failed, keeping the registry in force: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_file_source_and_fallback() {
        let mut m = Metrics::new();
        let p = std::env::temp_dir().join(format!("flowd-reg-{}.json", std::process::id()));
        let state = std::env::temp_dir().join(format!("flowd-reg-state-{}", std::process::id()));
        std::fs::write(&p, br#"{"experiments":[{"expName":"x","expId":77,"activities":[{"activityName":"a","activityId":5}]}]}"#).unwrap();
        let (r, now) = initial(p.to_str(), Duration::from_secs(1), &state, &mut m);
        assert_eq!((r.experiments[0].id, now), (77, false));
        std::fs::write(&p, b"junk").unwrap();
        let (r, _) = initial(p.to_str(), Duration::from_secs(1), &state, &mut m);
        assert_eq!(r.origin, "bundled");
        assert_eq!(m.get(&FAILURES, &[]), Some(1.0));
        assert!(!state.exists(), "file sources are not saved");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn test_http_source_starts_on_the_saved_copy_or_the_bundled_one_without_fetching() {
        let mut m = Metrics::new();
        let state = std::env::temp_dir().join(format!("flowd-reg-saved-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        // Port 9 on loopback: nothing answers; initial() must not even try.
        let url = "http://127.0.0.1:9/api.json";
        let t0 = std::time::Instant::now();
        let (r, fetch_now) = initial(Some(url), Duration::from_secs(10), &state, &mut m);
        assert!(t0.elapsed() < Duration::from_millis(100));
        assert_eq!((r.origin.as_str(), fetch_now), ("bundled", true));
        save(&state, url, br#"{"experiments":[{"expName":"x","expId":77,"activities":[{"activityName":"a","activityId":5}]}]}"#);
        let (r, fetch_now) = initial(Some(url), Duration::from_secs(10), &state, &mut m);
        assert_eq!((r.experiments[0].id, fetch_now), (77, true));
        assert_eq!(r.origin, format!("{url} (saved copy)"));
        let (r, _) = initial(Some("http://127.0.0.1:9/other.json"), Duration::from_secs(10), &state, &mut m);
        assert_eq!(r.origin, "bundled", "a copy saved from another URL is not used");
        let _ = std::fs::remove_dir_all(&state);
    }
}

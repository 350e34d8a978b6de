//! Keeping the flow registry fresh without stalling the loop.
//!
//! The first fetch happens at start, blocking, bounded by FLOW_MAP_TIMEOUT. Periodic
//! refreshes run the (blocking) HTTP or file read on a short-lived helper thread; the
//! result comes back through a channel and a `mio::Waker`, so the loop thread itself
//! never waits on the network. On failure the last good registry stays in force. The
//! timer hooks are the loop's (`poll_at()`, `on_timeout(cx)`).

use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::metrics::{Desc, Kind, Metrics};
use crate::registry::Registry;

/// Failed registry fetches.
pub static FAILURES: Desc = Desc {
    name: "flowd_registry_refresh_failures_total",
    help: "Registry (FLOW_MAP_API) fetches that failed; the last good registry stayed in force.",
    kind: Kind::Counter,
    labels: &[],
};

/// Unix time of the last successful fetch.
pub static LAST_SUCCESS: Desc = Desc {
    name: "flowd_registry_last_success_timestamp_seconds",
    help: "Unix time at which the registry in force was loaded.",
    kind: Kind::Gauge,
    labels: &["origin"],
};

/// Reads the registry from an http(s) URL or a file path.
pub fn fetch(source: &str, timeout: Duration) -> Result<Registry, String> {
    let body = if source.starts_with("http://") || source.starts_with("https://") {
        let secs = timeout.as_secs().max(1);
        let resp = minreq::get(source).with_timeout(secs).send().map_err(|e| format!("GET {source}: {e}"))?;
        if resp.status_code != 200 {
            return Err(format!("GET {source}: HTTP {} {}", resp.status_code, resp.reason_phrase));
        }
        resp.into_bytes()
    } else {
        std::fs::read(source).map_err(|e| format!("cannot read {source}: {e}"))?
    };
    Registry::parse(&body, source).map_err(|e| format!("{source}: {e}"))
}

/// Loads the registry at start: the configured source, or the bundled one on failure.
pub fn initial(source: Option<&str>, timeout: Duration, metrics: &mut Metrics) -> Registry {
    let reg = match source {
        None => Registry::bundled(),
        Some(src) => match fetch(src, timeout) {
            Ok(r) => r,
            Err(e) => {
                metrics.inc(&FAILURES, &[]);
                log::warn!("registry: {e}; using the bundled registry until a refresh succeeds");
                Registry::bundled()
            }
        },
    };
    record_success(&reg, metrics);
    reg
}

fn record_success(reg: &Registry, metrics: &mut Metrics) {
    metrics.clear(&LAST_SUCCESS);
    let now = crate::flow::Micros::now().0 as f64 / 1e6;
    metrics.set(&LAST_SUCCESS, vec![reg.origin.clone().into()], now);
}

/// Periodic refresher state.
pub struct Refresher {
    source: Option<String>,
    period: Option<Duration>,
    timeout: Duration,
    next: Option<Instant>,
    inflight: Option<Receiver<Result<Registry, String>>>,
    waker: Arc<mio::Waker>,
}

impl Refresher {
    /// A refresher for `source` every `period` (nothing to do without a source or period).
    pub fn new(source: Option<String>, period: Option<Duration>, timeout: Duration, waker: Arc<mio::Waker>, now: Instant) -> Refresher {
        let next = match (&source, period) {
            (Some(_), Some(p)) => Some(now + p),
            _ => None,
        };
        Refresher { source, period, timeout, next, inflight: None, waker }
    }

    /// When the next fetch is due (`None` while one is in flight or when disabled).
    pub fn poll_at(&self) -> Option<Instant> {
        if self.inflight.is_some() {
            None
        } else {
            self.next
        }
    }

    /// Starts a fetch on a helper thread if one is due.
    pub fn on_timeout(&mut self, cx: &mut Context<'_>) {
        let (now, metrics) = (cx.now, &mut *cx.metrics);
        let (Some(next), Some(src)) = (self.next, self.source.clone()) else { return };
        if now < next || self.inflight.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let waker = Arc::clone(&self.waker);
        let timeout = self.timeout;
        let spawned = std::thread::Builder::new().name("flowd-registry".into()).spawn(move || {
            let _ = tx.send(fetch(&src, timeout));
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
    pub fn on_wake(&mut self, cx: &mut Context<'_>) -> Option<Registry> {
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
        std::fs::write(&p, br#"{"experiments":[{"expName":"x","expId":77,"activities":[{"activityName":"a","activityId":5}]}]}"#).unwrap();
        let r = initial(p.to_str(), Duration::from_secs(1), &mut m);
        assert_eq!(r.experiments[0].id, 77);
        std::fs::write(&p, b"junk").unwrap();
        let r = initial(p.to_str(), Duration::from_secs(1), &mut m);
        assert_eq!(r.origin, "bundled");
        assert_eq!(m.get(&FAILURES, &[]), Some(1.0));
        let _ = std::fs::remove_file(&p);
    }
}

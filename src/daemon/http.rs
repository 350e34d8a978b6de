//! The metrics listener: flowd's own metrics and, with the prometheus backend, the
//! per-flow series on `/metrics`, the tracked flows on `/flows` and what flowd decided
//! about one flow on `/flows/<tuple>` (JSON, by `crate::explain`), and a pointer on `/`,
//! served by the shared HTTP machinery of `crate::http` (connections, limits, timeouts:
//! see there).
//!
//! Owns what the metrics listener answers ([`MetricsPage`]: the pages are rendered by the
//! renderer the loop lends through `Context::render`, into buffers kept from the last
//! scrape), its metric families and its tokens.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::Registry;

use crate::context::Context;
use crate::daemon::token;
use crate::http::{Families, Reply, Server, Service};
use crate::metrics::{Desc, Kind, Metrics};
use crate::wire::http::{self, Request, Route, Status};
use crate::wire::prom::Page;

pub use crate::http::BindError;

/// The line served on `/`.
pub(crate) const INDEX_BODY: &str = "flowd metrics exporter: scrape /metrics\n";

/// Requests answered, by status code.
pub(crate) static REQUESTS: Desc =
    Desc { name: "flowd_http_requests_total", help: "HTTP requests answered by the metrics listener, by status code.", kind: Kind::Counter, labels: &["code"] };

/// Connections refused because [`MAX_CONNS`] were open.
pub(crate) static REFUSED: Desc = Desc {
    name: "flowd_http_connections_refused_total",
    help: "Metrics listener connections refused (503) because the connection limit was reached.",
    kind: Kind::Counter,
    labels: &[],
};

/// Failed accepts, by reason.
pub(crate) static ACCEPT_ERRORS: Desc = Desc {
    name: "flowd_http_accept_errors_total",
    help: "Failed accepts on the metrics listener, by reason (fd_limit pauses accepting briefly).",
    kind: Kind::Counter,
    labels: &["reason"],
};

/// Open connections.
pub(crate) static OPEN: Desc =
    Desc { name: "flowd_http_connections_open", help: "Metrics listener connections currently open.", kind: Kind::Gauge, labels: &[] };

/// The metrics listener's families.
pub(crate) static METRICS_FAMILIES: Families = Families { refused: &REFUSED, accept_errors: &ACCEPT_ERRORS, open: &OPEN };

/// The metrics listener.
pub(crate) type Http = Server;

/// The metrics listener: binds `addr` (non-blocking, SO_REUSEADDR) and registers it with the loop.
/// `inherited` is a listening socket systemd handed over (socket activation), used
/// instead of binding `addr`.
pub(crate) fn bind(registry: &Registry, addr: SocketAddr, inherited: Option<std::net::TcpListener>, metrics: &mut Metrics) -> Result<Http, BindError> {
    let listener = match inherited {
        Some(l) => {
            l.set_nonblocking(true).map_err(|source| BindError { what: "metrics", addr, source })?;
            log::info!("metrics: using the TCP listener handed over by systemd");
            TcpListener::from_std(l)
        }
        None => TcpListener::bind(addr).map_err(|source| BindError { what: "metrics", addr, source })?,
    };
    let mut h = Server::from_listener(Box::new(MetricsPage::default()), listener, addr);
    h.register(registry, token::HTTP_LISTENER, token::HTTP_CONN_BASE)?;
    crate::http::declare(&MetricsPage::default(), metrics);
    Ok(h)
}

/// The metrics listener's service: `/metrics` (the page the loop lends as
/// `Context::render`, or the daemon's own metrics without it) and `/`.
#[derive(Default)]
pub(crate) struct MetricsPage {
    /// The buffers of the last page sent, for the next one: a steady scrape then
    /// allocates (and page-faults) nothing. Dropped after [`SPARE_KEEP`] unused.
    spare: Option<(Page, Instant)>,
}

/// How long the buffers of the last page are kept for the next scrape.
pub(crate) const SPARE_KEEP: Duration = Duration::from_secs(300);

impl Service for MetricsPage {
    fn what(&self) -> &'static str {
        "metrics"
    }

    fn families(&self) -> &'static Families {
        &METRICS_FAMILIES
    }

    fn declare(&self, metrics: &mut Metrics) {
        metrics.declare(&REQUESTS);
    }

    fn answer(&mut self, req: &Request<'_>, body: &mut Page, cx: &mut Context<'_>) -> Reply {
        let reply = |status, content_type, counted| Reply { status, content_type, allow: None, counted, route: "" };
        let route = http::route(req.method, req.path);
        match route {
            Route::Error(s) => {
                body.add_part().extend_from_slice(http::error_body(s).as_bytes());
                reply(s, http::TEXT_CONTENT_TYPE, false)
            }
            Route::Index => {
                body.add_part().extend_from_slice(INDEX_BODY.as_bytes());
                reply(Status::Ok, http::TEXT_CONTENT_TYPE, false)
            }
            Route::Metrics => {
                // Count this request before rendering, so the page includes it.
                let Context { metrics, render, .. } = cx;
                metrics.inc(&REQUESTS, &[Status::Ok.code_str()]);
                let status = match render {
                    Some(r) => r(route, metrics, body),
                    None => {
                        metrics.render(body.add_part());
                        Status::Ok
                    }
                };
                reply(status, route.content_type(), true)
            }
            Route::Flows | Route::Flow(_) => {
                let Context { metrics, render, .. } = cx;
                let status = match render {
                    Some(r) => r(route, metrics, body),
                    // Without the loop's renderer there are no flows to show.
                    None => {
                        body.add_part().extend_from_slice(http::error_body(Status::NotFound).as_bytes());
                        Status::NotFound
                    }
                };
                reply(status, route.content_type(), false)
            }
        }
    }

    fn count(&self, metrics: &mut Metrics, _route: &'static str, status: Status) {
        metrics.inc(&REQUESTS, &[status.code_str()]);
    }

    fn page(&mut self) -> Page {
        self.spare.take().map(|(page, _)| page).unwrap_or_default()
    }

    fn recycle(&mut self, page: Page, now: Instant) {
        keep_spare(&mut self.spare, page, now);
    }

    fn poll_at(&self) -> Option<Instant> {
        self.spare.as_ref().map(|(_, until)| *until)
    }

    fn on_timeout(&mut self, now: Instant) {
        if self.spare.as_ref().is_some_and(|(_, until)| *until <= now) {
            self.spare = None;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::respond;

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
        let poll = mio::Poll::new().unwrap();
        let (mut out, mut metrics, registry, mut local, mut rejected) =
            (Vec::new(), Metrics::new(), crate::registry::ScitagsRegistry::bundled(), crate::enrich::local::LocalAddrs::new(), Vec::new());
        let mut rendered = 0;
        let mut render = |_: Route<'_>, _: &mut Metrics, p: &mut Page| {
            rendered += 1;
            p.add_part().extend_from_slice(b"flowd_open_flows 0\n");
            Status::Ok
        };
        let mut cx = Context::new(Instant::now(), &mut out, &mut rejected, &mut metrics, &registry, poll.registry(), &mut local);
        {
            let mut cx = cx.with_render(&mut render);
            let mut service = MetricsPage { spare: Some((page(4096), Instant::now())) };
            // Half a request: nothing answered, the spare page stays.
            assert!(respond(&mut service, b"GET /metrics HTTP/1.1\r\n", false, &mut cx).is_none());
            assert!(service.spare.is_some());
            let a = respond(&mut service, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", false, &mut cx).unwrap();
            assert!(service.spare.is_none(), "the answer took the spare page");
            assert!(a.body.capacity() >= 4096 && a.body.to_vec() == b"flowd_open_flows 0\n");
            assert!(String::from_utf8(a.head).unwrap().contains("Content-Length: 19\r\n"));
            assert_eq!(cx.metrics.get(&REQUESTS, &["200"]), Some(1.0), "counted once, before rendering");
        }
        assert_eq!(rendered, 1);
    }
}

//! The api plugin: flowd-go's HTTP API (`POST /flow`, `GET /`) on flowd's own HTTP
//! machinery (`crate::http`: the metrics listener's connection handling, limits and
//! timeouts, with a capped request body).
//!
//! A flow posted in flowd-go's JSON (or its readable variants, `wire::api`) becomes a
//! `FlowEvent` in `cx.out` during the same turn, and goes through the normal fan-out as
//! every plugin's events do (plugin label `api`). Names are resolved with the registry in
//! force. Every request is counted by route and status in `flowd_api_requests_total`;
//! rejected ones are also logged, rate-limited. There is no authentication (as in
//! flowd-go): API_HOST defaults to loopback.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::config::Config;
use crate::context::Context;
use crate::decision;
use crate::flow::FlowEvent;
use crate::http::{BindError, Families, Reply, Server, Service};
use crate::logger::{RateLimit, Suppressed};
use crate::metrics::{Desc, Kind, Metrics};
use crate::registry::UnknownName;
use crate::wire::api;
use crate::wire::http::{Method, Request, Status};
use crate::wire::prom::Page;

/// Largest `POST /flow` body taken (a flow is a few hundred bytes).
pub(crate) const MAX_BODY: usize = 16 * 1024;

/// The plugin's name: the `source` of its decisions and rejections.
const NAME: &str = "api";

/// The content type of every answer.
pub(crate) const JSON: &str = "application/json";

/// The routes, as `GET /` lists them: (method, path, name).
pub(crate) const ROUTES: [(&str, &str, &str); 2] = [("GET", "/", "flowd/api.root"), ("POST", "/flow", "flowd/api.flow")];

/// Requests answered, by route and status.
pub(crate) static REQUESTS: Desc = Desc {
    name: "flowd_api_requests_total",
    help: "Requests answered by the api plugin, by route (- for requests refused before routing) and status code.",
    kind: Kind::Counter,
    labels: &["route", "code"],
};

/// Connections refused at the cap.
pub(crate) static REFUSED: Desc = Desc {
    name: "flowd_api_connections_refused_total",
    help: "api plugin connections refused (503) because the connection limit was reached.",
    kind: Kind::Counter,
    labels: &[],
};

/// Failed accepts.
pub(crate) static ACCEPT_ERRORS: Desc = Desc {
    name: "flowd_api_accept_errors_total",
    help: "Failed accepts on the api plugin's listener, by reason (fd_limit pauses accepting briefly).",
    kind: Kind::Counter,
    labels: &["reason"],
};

/// Open connections.
pub(crate) static OPEN: Desc = Desc { name: "flowd_api_connections_open", help: "api plugin connections currently open.", kind: Kind::Gauge, labels: &[] };

static FAMILIES: Families = Families { refused: &REFUSED, accept_errors: &ACCEPT_ERRORS, open: &OPEN };

/// Declares the api plugin's metric families.
pub(crate) fn declare(metrics: &mut Metrics) {
    crate::http::declare(&Answers::new(), metrics);
}

/// What the api plugin answers.
struct Answers {
    warn: RateLimit,
}

impl Answers {
    fn new() -> Answers {
        Answers { warn: RateLimit::new(10, Duration::from_secs(60)) }
    }

    /// A 400 with `{"message": …}`, logged (rate-limited).
    fn bad(&mut self, now: Instant, body: &mut Page, msg: &str) -> Reply {
        if let Some(n) = self.warn.allow(now) {
            log::warn!("api: POST /flow refused: {msg}{}", Suppressed(n));
        }
        api::write_message(body.add_part(), msg);
        reply(Status::BadRequest, "/flow")
    }

    /// `POST /flow`: the flow goes out as an event, the answer echoes it.
    fn flow(&mut self, req: &Request<'_>, body: &mut Page, cx: &mut Context<'_>) -> Reply {
        // As echo (flowd-go's framework): anything but JSON is refused (there, 415 turned into 400).
        let json = req.content_type.is_some_and(|t| t.len() >= JSON.len() && t[..JSON.len()].eq_ignore_ascii_case(JSON.as_bytes()));
        if !json && !req.body.is_empty() {
            return self.bad(cx.now, body, "Unsupported Media Type");
        }
        let f = match api::parse_flow(req.body) {
            Ok(f) => f,
            Err(msg) => return self.bad(cx.now, body, &msg),
        };
        let (exp, act) = match cx.registry.resolve(&f.exp, &f.act) {
            Ok(ids) => ids,
            Err(miss) => {
                let d = cx.reject(NAME, f.key, f.state, miss, &f.exp, &f.act);
                decision::count(cx.metrics, NAME, d);
                let msg = match miss {
                    UnknownName::Experiment => format!("Experiment: {} is not in the registry", f.exp),
                    UnknownName::Activity => format!("Activity: {} is not an activity of experiment {} in the registry", f.act, f.exp),
                };
                return self.bad(cx.now, body, &msg);
            }
        };
        let mut ev = FlowEvent::new(f.state, f.key, exp, act, cx.wall);
        ev.start_time = f.start.as_ref().map(|t| t.at);
        ev.end_time = f.end.as_ref().map(|t| t.at).filter(|_| f.state == crate::flow::FlowState::End);
        cx.out.push(ev);
        api::write_flow(body.add_part(), &f, exp, act);
        reply(Status::Ok, "/flow")
    }
}

fn reply(status: Status, route: &'static str) -> Reply {
    Reply { status, content_type: JSON, allow: None, counted: false, route }
}

impl Service for Answers {
    fn what(&self) -> &'static str {
        "the api plugin"
    }

    fn max_body(&self) -> usize {
        MAX_BODY
    }

    fn families(&self) -> &'static Families {
        &FAMILIES
    }

    fn declare(&self, metrics: &mut Metrics) {
        metrics.declare(&REQUESTS);
    }

    fn answer(&mut self, req: &Request<'_>, body: &mut Page, cx: &mut Context<'_>) -> Reply {
        let not_allowed = |body: &mut Page, allow: &'static str, route: &'static str| {
            api::write_message(body.add_part(), "Method Not Allowed");
            Reply { status: Status::MethodNotAllowed, content_type: JSON, allow: Some(allow), counted: false, route }
        };
        match (req.path, req.method) {
            (b"/flow", Method::Post) => self.flow(req, body, cx),
            (b"/flow", _) => not_allowed(body, "POST", "/flow"),
            (b"/", Method::Get | Method::Head) => {
                api::write_routes(body.add_part(), &ROUTES);
                reply(Status::Ok, "/")
            }
            (b"/", _) => not_allowed(body, "GET, HEAD", "/"),
            _ => {
                api::write_message(body.add_part(), "Not Found");
                reply(Status::NotFound, "other")
            }
        }
    }

    fn count(&self, metrics: &mut Metrics, route: &'static str, status: Status) {
        metrics.inc(&REQUESTS, &[route, status.code_str()]);
    }

    fn error_body(&self, status: Status, out: &mut Vec<u8>) -> &'static str {
        api::write_message(out, status.reason());
        JSON
    }
}

/// The running api plugin.
pub(crate) struct Api {
    server: Server,
}

impl Api {
    /// Binds API_HOST:API_PORT (not yet registered with the loop).
    pub(crate) fn new(cfg: &Config) -> Result<Api, BindError> {
        Server::listen(Box::new(Answers::new()), SocketAddr::new(cfg.api.host, cfg.api.port)).map(|server| Api { server })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Registers the listener as `token`, its connections from `conn_base` on.
    pub(crate) fn register(&mut self, registry: &Registry, token: Token, conn_base: usize) -> io::Result<()> {
        self.server.register(registry, token, conn_base).map_err(|e| e.source)?;
        log::info!("api: listening on http://{}/flow", self.local_addr());
        Ok(())
    }

    /// Removes the listener and its connections from the loop.
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        self.server.deregister(registry);
    }

    /// The listener is ready: accept.
    pub(crate) fn on_ready(&mut self, cx: &mut Context<'_>) {
        self.server.on_ready(None, cx);
    }

    /// Connection `slot` is ready.
    pub(crate) fn on_conn_ready(&mut self, slot: usize, cx: &mut Context<'_>) {
        self.server.on_ready(Some(slot), cx);
    }

    /// The next connection deadline.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.server.poll_at()
    }

    /// Expire idle connections, resume left-over work.
    pub(crate) fn on_timeout(&mut self, cx: &mut Context<'_>) {
        self.server.on_timeout(cx);
    }
}

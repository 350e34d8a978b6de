//! Plugins: the flow sources. **Add a new flow source here.**
//!
//! The set of plugins is closed and chosen by config (PLUGIN=…), so it is an enum (as
//! smoltcp's `Socket`), and this file is the only place that matches on its variants.
//! Every plugin struct has the same inherent methods:
//!
//! - `register(&mut self, registry, token)`: put its fds in the loop's `Poll` (fd-driven
//!   plugins; timer-only plugins register nothing).
//! - `on_ready(&mut self, cx)`: its fd is readable: read until `WouldBlock` or the per-turn
//!   cap, push `FlowEvent`s into `cx.out`.
//! - `poll_at(&self) -> Option<Instant>`: its next deadline (a timer, or "now" when it
//!   stopped at the per-turn cap with input left).
//! - `on_timeout(&mut self, cx)`: called when `poll_at` has passed.
//!
//! Plugins never talk to backends: the loop hands their events to every backend.

pub(crate) mod api;
pub(crate) mod conn_table;
pub(crate) mod firefly;
pub(crate) mod iperf;
pub(crate) mod netlink;
pub(crate) mod netstat;
pub(crate) mod np_api;
pub(crate) mod perfsonar;

use std::io;
use std::time::Instant;

use mio::{Registry, Token};

use crate::config::{Config, PluginKind};
use crate::context::Context;
use crate::sys::listen_fds::Inherited;

/// Why a plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The np_api plugin could not set up its named pipe.
    #[error("np_api: {0}")]
    NpApi(#[from] np_api::NpApiError),
    /// A scanner or listener could not open its socket or files.
    #[error("{plugin}: {what}: {source}")]
    Open {
        /// Plugin name.
        plugin: &'static str,
        /// What was being opened.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Registering with the event loop failed.
    #[error("cannot register {plugin} with the event loop: {source}")]
    Register {
        /// Plugin name.
        plugin: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The plugin is not part of this build.
    #[error("plugin {0} is not yet supported by this flowd")]
    NotBuilt(&'static str),
}

/// One running flow source.
pub(crate) enum Plugin {
    /// Named pipe API.
    NpApi(np_api::NpApi),
    /// sock_diag scanner.
    Netlink(netlink::Scanner),
    /// /proc/net/tcp scanner.
    Netstat(netstat::Scanner),
    /// iperf3 connection scanner.
    Iperf(iperf::Scanner),
    /// UDP firefly listener.
    Firefly(firefly::Listener),
    /// Configures the eBPF marker's match-all default; no fds, no timer, no events.
    Perfsonar(perfsonar::Perfsonar),
    /// HTTP API (flowd-go's `POST /flow`).
    Api(api::Api),
}

impl Plugin {
    /// Builds the plugin `kind` from the config (opens files/sockets, does not register).
    /// `handed` holds the fds systemd passed (socket activation): np_api and firefly use
    /// theirs when it matches the config.
    pub(crate) fn new(kind: PluginKind, cfg: &Config, handed: &Inherited) -> Result<Plugin, PluginError> {
        match kind {
            PluginKind::NpApi => Ok(Plugin::NpApi(np_api::NpApi::new(cfg, handed.pipe.as_ref().and_then(|f| f.try_clone().ok()))?)),
            PluginKind::Netlink => netlink::Scanner::new(cfg).map(Plugin::Netlink).map_err(|source| PluginError::Open {
                plugin: "netlink",
                what: "cannot open a NETLINK_SOCK_DIAG socket".into(),
                source,
            }),
            PluginKind::Netstat => netstat::Scanner::new(cfg).map(Plugin::Netstat).map_err(|source| PluginError::Open {
                plugin: "netstat",
                what: "cannot read /proc/net/tcp".into(),
                source,
            }),
            PluginKind::Iperf => iperf::Scanner::new(cfg).map(Plugin::Iperf).map_err(|source| PluginError::Open {
                plugin: "iperf",
                what: "cannot read /proc/net/tcp".into(),
                source,
            }),
            PluginKind::Firefly => firefly::Listener::new(cfg, handed.firefly.as_ref().and_then(|s| s.try_clone().ok())).map(Plugin::Firefly),
            PluginKind::Perfsonar => Ok(Plugin::Perfsonar(perfsonar::Perfsonar::new(cfg))),
            PluginKind::Api => api::Api::new(cfg).map(Plugin::Api).map_err(|e| PluginError::Open {
                plugin: "api",
                what: format!("cannot listen on TCP {}", e.addr),
                source: e.source,
            }),
        }
    }

    /// The config name of this plugin (also its metrics label).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Plugin::NpApi(_) => "np_api",
            Plugin::Netlink(_) => "netlink",
            Plugin::Netstat(_) => "netstat",
            Plugin::Iperf(_) => "iperf",
            Plugin::Firefly(_) => "firefly",
            Plugin::Perfsonar(_) => "perfsonar",
            Plugin::Api(_) => "api",
        }
    }

    /// Registers the plugin's fds with the loop under `token`; a plugin with connections
    /// of its own (api) registers them as `Token(conn_base + slot)`.
    pub(crate) fn register(&mut self, registry: &Registry, token: Token, conn_base: usize) -> Result<(), PluginError> {
        let name = self.name();
        let r = match self {
            Plugin::NpApi(p) => p.register(registry, token),
            Plugin::Netlink(p) => p.register(registry, token),
            Plugin::Firefly(p) => p.register(registry, token),
            Plugin::Api(p) => p.register(registry, token, conn_base),
            Plugin::Netstat(_) | Plugin::Iperf(_) | Plugin::Perfsonar(_) => Ok(()),
        };
        r.map_err(|source| PluginError::Register { plugin: name, source })
    }

    /// Removes the plugin's fds from the loop (before it is dropped on reload).
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        match self {
            Plugin::NpApi(p) => p.deregister(registry),
            Plugin::Netlink(p) => p.deregister(registry),
            Plugin::Firefly(p) => p.deregister(registry),
            Plugin::Api(p) => p.deregister(registry),
            Plugin::Netstat(_) | Plugin::Iperf(_) | Plugin::Perfsonar(_) => {}
        }
    }

    /// Final cleanup at daemon exit (not on reload): e.g. np_api removes its pipe.
    pub(crate) fn shutdown(&mut self) {
        match self {
            Plugin::NpApi(p) => p.shutdown(),
            Plugin::Netlink(_) | Plugin::Netstat(_) | Plugin::Iperf(_) | Plugin::Firefly(_) | Plugin::Perfsonar(_) | Plugin::Api(_) => {}
        }
    }

    /// The plugin's fd is ready.
    pub(crate) fn on_ready(&mut self, cx: &mut Context<'_>) {
        match self {
            Plugin::NpApi(p) => p.on_ready(cx),
            Plugin::Netlink(p) => p.on_ready(cx),
            Plugin::Firefly(p) => p.on_ready(cx),
            Plugin::Api(p) => p.on_ready(cx),
            Plugin::Netstat(_) | Plugin::Iperf(_) | Plugin::Perfsonar(_) => {}
        }
    }

    /// One of the plugin's own connections (slot `slot`) is ready.
    pub(crate) fn on_conn_ready(&mut self, slot: usize, cx: &mut Context<'_>) {
        match self {
            Plugin::Api(p) => p.on_conn_ready(slot, cx),
            Plugin::NpApi(_) | Plugin::Netlink(_) | Plugin::Netstat(_) | Plugin::Iperf(_) | Plugin::Firefly(_) | Plugin::Perfsonar(_) => {}
        }
    }

    /// The plugin's next deadline.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        match self {
            Plugin::NpApi(p) => p.poll_at(),
            Plugin::Netlink(p) => p.poll_at(),
            Plugin::Netstat(p) => p.poll_at(),
            Plugin::Iperf(p) => p.poll_at(),
            Plugin::Firefly(p) => p.poll_at(),
            Plugin::Perfsonar(_) => None,
            Plugin::Api(p) => p.poll_at(),
        }
    }

    /// The deadline from `poll_at` has passed.
    pub(crate) fn on_timeout(&mut self, cx: &mut Context<'_>) {
        match self {
            Plugin::NpApi(p) => p.on_timeout(cx),
            Plugin::Netlink(p) => p.on_timeout(cx),
            Plugin::Netstat(p) => p.on_timeout(cx),
            Plugin::Iperf(p) => p.on_timeout(cx),
            Plugin::Firefly(p) => p.on_timeout(cx),
            Plugin::Perfsonar(_) => {}
            Plugin::Api(p) => p.on_timeout(cx),
        }
    }
}

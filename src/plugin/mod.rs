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

pub mod np_api;

use std::io;
use std::time::Instant;

use mio::{Registry, Token};

use crate::config::{Config, PluginKind};
use crate::context::Context;

/// Why a plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The np_api plugin could not set up its named pipe.
    #[error("np_api: {0}")]
    NpApi(#[from] np_api::NpApiError),
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
pub enum Plugin {
    /// Named pipe API.
    NpApi(np_api::NpApi),
}

impl Plugin {
    /// Builds the plugin `kind` from the config (opens files/sockets, does not register).
    pub fn new(kind: PluginKind, cfg: &Config) -> Result<Plugin, PluginError> {
        match kind {
            PluginKind::NpApi => Ok(Plugin::NpApi(np_api::NpApi::new(cfg)?)),
            other => Err(PluginError::NotBuilt(other.name())),
        }
    }

    /// The config name of this plugin (also its metrics label).
    pub fn name(&self) -> &'static str {
        match self {
            Plugin::NpApi(_) => "np_api",
        }
    }

    /// Registers the plugin's fds with the loop under `token`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> Result<(), PluginError> {
        let name = self.name();
        let r = match self {
            Plugin::NpApi(p) => p.register(registry, token),
        };
        r.map_err(|source| PluginError::Register { plugin: name, source })
    }

    /// Removes the plugin's fds from the loop (before it is dropped on reload).
    pub fn deregister(&mut self, registry: &Registry) {
        match self {
            Plugin::NpApi(p) => p.deregister(registry),
        }
    }

    /// Final cleanup at daemon exit (not on reload): e.g. np_api removes its pipe.
    pub fn shutdown(&mut self) {
        match self {
            Plugin::NpApi(p) => p.remove_pipe(),
        }
    }

    /// The plugin's fd is ready.
    pub fn on_ready(&mut self, cx: &mut Context<'_>) {
        match self {
            Plugin::NpApi(p) => p.on_ready(cx),
        }
    }

    /// The plugin's next deadline.
    pub fn poll_at(&self) -> Option<Instant> {
        match self {
            Plugin::NpApi(p) => p.poll_at(),
        }
    }

    /// The deadline from `poll_at` has passed.
    pub fn on_timeout(&mut self, cx: &mut Context<'_>) {
        match self {
            Plugin::NpApi(p) => p.on_timeout(cx),
        }
    }
}

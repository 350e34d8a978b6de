//! Top-level errors: startup failures and fatal loop errors, with their exit codes.
//!
//! Errors caused by one event never get here: they are logged and counted where they
//! happen. `main` prints the error chain on one line and exits with `exit_code()`.

use std::io;
use std::path::PathBuf;

use crate::backend::BackendInitError;
use crate::config::ConfigError;
use crate::plugin::PluginError;

/// A startup or fatal error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid or unreadable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A plugin could not start.
    #[error("plugin failed to start: {0}")]
    Plugin(#[from] PluginError),
    /// A backend could not start.
    #[error("backend failed to start: {0}")]
    Backend(#[from] BackendInitError),
    /// The PID file could not be created or locked.
    #[error("cannot create PID file {}: {source}", .path.display())]
    PidFile {
        /// The PID file path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The metrics listener could not bind its address.
    #[error(transparent)]
    Http(#[from] super::http::BindError),
    /// Setting up the event loop failed.
    #[error("cannot set up the event loop: {0}")]
    Setup(#[source] io::Error),
    /// `Poll::poll` failed.
    #[error("event loop poll failed: {0}")]
    Poll(#[source] io::Error),
}

impl Error {
    /// Process exit status: 2 for configuration errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }

    /// The error and its causes, one line (`a: b: c`), without repeating a cause that the
    /// message already contains.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            let m = e.to_string();
            if !s.contains(&m) {
                s.push_str(": ");
                s.push_str(&m);
            }
            cur = e.source();
        }
        s
    }
}

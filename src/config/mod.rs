//! flowd configuration: loading `/etc/flowd/flowd.cfg` into a typed, validated [`Config`].
//!
//! Two stages (ripgrep's LowArgs → HiArgs): `raw` turns text into `KEY = VALUE` entries
//! and per-line errors; `validate` turns entries into a `Config` with defaults from the
//! Python flowd's `settings.py`, as the key table `keys` declares each key (its type,
//! default, docs, component and how it is stored). All problems are collected and
//! reported together.
//! Nothing re-reads the config while the loop runs; SIGHUP builds a fresh `Config`, and
//! `reload` decides, component by component, what the daemon must rebuild for it.
//! `render` generates flowd.cfg, the man page's CONFIGURATION and
//! docs/configuration.md from the key table. A flowd-go configuration (YAML or JSON) is
//! accepted as it is: `yaml` reads it with line numbers and `flowdgo` maps it onto
//! flowd's keys, which are then validated by the same table.

pub mod flowdgo;
pub mod keys;
pub(crate) mod model;
pub mod raw;
pub(crate) mod reload;
pub mod render;
pub mod validate;
pub(crate) mod yaml;

use std::path::{Path, PathBuf};

pub use model::Marking;
pub use validate::{BackendKind, Config, ExcludeMatch, PluginKind, PolicyConfig};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    Read {
        /// The config path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// One or more lines are invalid; each problem is one line of text.
    #[error("invalid config file {}: {} problem(s)", .path.display(), .problems.len())]
    Invalid {
        /// The config path.
        path: PathBuf,
        /// One message per problem, each starting with `line N:`.
        problems: Vec<String>,
        /// Non-fatal findings in the same file (reported alongside the problems).
        warnings: Vec<String>,
    },
}

/// A loaded configuration and the warnings found while loading it.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Non-fatal findings (unknown keys, keys not supported yet), one line each.
    pub warnings: Vec<String>,
}

/// Sorts findings by line, keeping the order of those on the same line (one sort
/// instantiation for every caller: it is not small).
pub(crate) fn sort_by_line(v: &mut [(usize, String)]) {
    v.sort_by_key(|(line, _)| *line);
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    from_text(&String::from_utf8_lossy(&text), path)
}

/// Validates config text (`path` is used in messages only): flowd.cfg, or flowd-go's YAML
/// or JSON configuration, told apart by content (`flowdgo::looks_like`).
pub fn from_text(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    if flowdgo::looks_like(text) {
        return flowdgo::from_text(text, path);
    }
    let (entries, line_errors) = raw::parse(text);
    let mut problems: Vec<(usize, String)> = line_errors.into_iter().map(|e| (e.line, e.to_string())).collect();
    let mut warnings = Vec::new();
    let config = validate::build(&entries, &mut problems, &mut warnings);
    if problems.is_empty() {
        Ok(Loaded { config, warnings })
    } else {
        sort_by_line(&mut problems);
        Err(ConfigError::Invalid { path: path.to_path_buf(), problems: problems.into_iter().map(|(_, m)| m).collect(), warnings })
    }
}

//! The Scitags flow-map registry (`api.json`): experiment and activity names ↔ ids.
//!
//! Owns parsing and lookups only; fetching lives in `daemon::refresh`. The registry of
//! `etc/api.json` (a copy of scitags.org/api.json) is compiled into the binary as the
//! fallback used when FLOW_MAP_API is unset or unreachable at start.
//!
//! Names are matched leniently: ASCII case is ignored and `_` equals a space, so
//! `cms`, `CMS`, `Analysis Input`, `analysis_input` all resolve. Numbers always pass
//! through unchanged (ids are not required to be in the registry).

use serde::Deserialize;

/// The registry compiled into the binary.
pub(crate) const BUNDLED: &[u8] = include_bytes!("../etc/api.json");

/// Why a registry document was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not JSON, or not the api.json shape.
    #[error("not a flow-map registry: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON of the right shape but with no experiments.
    #[error("the registry lists no experiments")]
    Empty,
}

#[derive(Deserialize)]
struct RawRegistry {
    experiments: Vec<RawExp>,
    #[serde(default)]
    modified: Option<String>,
}

#[derive(Deserialize)]
struct RawExp {
    #[serde(rename = "expName")]
    name: String,
    #[serde(rename = "expId")]
    id: u32,
    #[serde(default)]
    activities: Vec<RawAct>,
}

#[derive(Deserialize)]
struct RawAct {
    #[serde(rename = "activityName")]
    name: String,
    #[serde(rename = "activityId")]
    id: u32,
}

/// One experiment (science domain) and its activities.
#[derive(Clone, Debug, PartialEq)]
pub struct Experiment {
    /// Name as published (lower case in api.json).
    pub name: String,
    /// Numeric id.
    pub id: u32,
    /// Activities: (name, id), ids unique within the experiment.
    pub activities: Vec<(String, u32)>,
}

/// A parsed registry.
#[derive(Clone, Debug, PartialEq)]
pub struct ScitagsRegistry {
    /// All experiments, in document order.
    pub experiments: Vec<Experiment>,
    /// The document's `modified` field, if any.
    pub modified: Option<String>,
    /// Where it came from (URL, path or `bundled`).
    pub origin: String,
}

/// An experiment or activity as a user wrote it (defined with the flow vocabulary).
pub use crate::flow::IdOrName;

fn name_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let n = |c: u8| if c == b'_' { b' ' } else { c.to_ascii_lowercase() };
            n(x) == n(y)
        })
}

impl ScitagsRegistry {
    /// Parses an api.json document.
    pub fn parse(doc: &[u8], origin: &str) -> Result<ScitagsRegistry, RegistryError> {
        let raw: RawRegistry = serde_json::from_slice(doc)?;
        if raw.experiments.is_empty() {
            return Err(RegistryError::Empty);
        }
        let experiments = raw
            .experiments
            .into_iter()
            .map(|e| Experiment {
                name: e.name.trim().to_string(),
                id: e.id,
                activities: e.activities.into_iter().map(|a| (a.name.trim().to_string(), a.id)).collect(),
            })
            .collect();
        Ok(ScitagsRegistry { experiments, modified: raw.modified, origin: origin.to_string() })
    }

    /// The registry compiled into the binary.
    pub fn bundled() -> ScitagsRegistry {
        match ScitagsRegistry::parse(BUNDLED, "bundled") {
            Ok(r) => r,
            // The bundled file is checked by a unit test; an empty registry still lets
            // numeric ids work.
            Err(_) => ScitagsRegistry { experiments: Vec::new(), modified: None, origin: "bundled".into() },
        }
    }

    /// The experiment with this id.
    pub(crate) fn experiment(&self, id: u32) -> Option<&Experiment> {
        self.experiments.iter().find(|e| e.id == id)
    }

    /// Resolves an experiment token (id or name) to its id.
    pub fn exp_id(&self, v: &IdOrName) -> Option<u32> {
        match v {
            IdOrName::Id(n) => Some(*n),
            IdOrName::Name(s) => self.experiments.iter().find(|e| name_eq(&e.name, s)).map(|e| e.id),
        }
    }

    /// Resolves an activity token (id or name) within experiment `exp` to its id.
    pub fn act_id(&self, exp: u32, v: &IdOrName) -> Option<u32> {
        match v {
            IdOrName::Id(n) => Some(*n),
            IdOrName::Name(s) => self.experiment(exp)?.activities.iter().find(|(name, _)| name_eq(name, s)).map(|(_, id)| *id),
        }
    }

    /// Resolves both tokens; the error names the one that is unknown.
    pub(crate) fn resolve(&self, exp: &IdOrName, act: &IdOrName) -> Result<(u32, u32), UnknownName> {
        let e = self.exp_id(exp).ok_or(UnknownName::Experiment)?;
        let a = self.act_id(e, act).ok_or(UnknownName::Activity)?;
        Ok((e, a))
    }

    /// ScitagsRegistry names of an (exp, act) pair, if registered.
    pub fn names(&self, exp: u32, act: u32) -> (Option<&str>, Option<&str>) {
        let e = self.experiment(exp);
        let a = e.and_then(|e| e.activities.iter().find(|(_, id)| *id == act)).map(|(n, _)| n.as_str());
        (e.map(|e| e.name.as_str()), a)
    }
}

/// Which half of an (experiment, activity) pair was an unknown name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnknownName {
    /// The experiment name is not in the registry.
    Experiment,
    /// The activity name is not an activity of that experiment.
    Activity,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bundled_registry_parses_with_all_experiments() {
        let r = ScitagsRegistry::parse(BUNDLED, "bundled").unwrap();
        assert_eq!(r.experiments.len(), 14);
        assert_eq!(r.exp_id(&IdOrName::parse("atlas")), Some(2));
        assert_eq!(r.exp_id(&IdOrName::parse("CMS")), Some(3));
        assert_eq!(r.act_id(2, &IdOrName::parse("Debug")), Some(9));
        assert_eq!(r.act_id(3, &IdOrName::parse("analysis_input")), Some(14));
        assert_eq!(r.names(2, 9), (Some("atlas"), Some("Debug")));
    }

    #[test]
    fn test_ids_pass_through_and_unknown_names_are_named() {
        let r = ScitagsRegistry::bundled();
        assert_eq!(r.resolve(&IdOrName::Id(999), &IdOrName::Id(7)), Ok((999, 7)));
        assert_eq!(r.resolve(&IdOrName::parse("nosuch"), &IdOrName::Id(1)), Err(UnknownName::Experiment));
        assert_eq!(r.resolve(&IdOrName::parse("atlas"), &IdOrName::parse("nosuch")), Err(UnknownName::Activity));
        assert_eq!(IdOrName::parse("+5"), IdOrName::Name("+5".into()));
    }

    #[test]
    fn test_junk_is_rejected() {
        assert!(ScitagsRegistry::parse(b"<html>", "x").is_err());
        assert!(matches!(ScitagsRegistry::parse(br#"{"experiments":[]}"#, "x"), Err(RegistryError::Empty)));
    }
}

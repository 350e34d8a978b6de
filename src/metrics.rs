//! The daemon's metrics store: named counters and gauges with fixed label sets.
//!
//! Owns no I/O. Every module declares the series it updates as `const` [`Desc`]s next to
//! its code; the HTTP listener renders whatever is in the store. Label values are
//! `&'static str` or short owned strings, so the hot path (one counter per event)
//! allocates nothing once a series exists.

use std::borrow::Cow;
use std::collections::BTreeMap;

/// Whether a series is a counter or a gauge (its `# TYPE` on the page).
pub use crate::wire::prom::Kind;

/// Description of one metric family.
#[derive(Debug)]
pub struct Desc {
    /// Metric name, e.g. `flowd_events_total`.
    pub name: &'static str,
    /// One-line help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Label names, in the order values are given.
    pub labels: &'static [&'static str],
}

/// A label value: usually static, sometimes owned (interface names, plugin lists).
pub(crate) type LabelValue = Cow<'static, str>;

/// One family: its description and its series (label values → value), in insertion order.
#[derive(Debug)]
struct Family {
    desc: &'static Desc,
    series: Vec<(Vec<LabelValue>, f64)>,
}

/// All series of the daemon.
///
/// Families are few and each has few series (per-flow series are rendered by the
/// prometheus backend, not stored here), so a linear scan of a family's series is the
/// fastest lookup and allocates nothing once a series exists.
#[derive(Debug, Default)]
pub struct Metrics {
    families: BTreeMap<&'static str, Family>,
}

fn same(a: &[LabelValue], b: &[&str]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.as_ref() == *y)
}

impl Metrics {
    /// An empty store.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn family(&mut self, desc: &'static Desc) -> &mut Family {
        self.families.entry(desc.name).or_insert_with(|| Family { desc, series: Vec::new() })
    }

    /// Declares a family so it is rendered (with HELP/TYPE) even before its first sample.
    pub(crate) fn declare(&mut self, desc: &'static Desc) {
        self.family(desc);
    }

    /// Adds `n` to a counter series (created at 0 if missing).
    pub(crate) fn add(&mut self, desc: &'static Desc, labels: &[&'static str], n: u64) {
        let fam = self.family(desc);
        match fam.series.iter_mut().find(|(l, _)| same(l, labels)) {
            Some((_, v)) => *v += n as f64,
            None => fam.series.push((labels.iter().map(|l| Cow::Borrowed(*l)).collect(), n as f64)),
        }
    }

    /// Adds `n` to a counter series whose label values are not `'static` (configured
    /// names); the owned copies are made once, when the series is created.
    pub fn add_labels(&mut self, desc: &'static Desc, labels: &[&str], n: u64) {
        let fam = self.family(desc);
        match fam.series.iter_mut().find(|(l, _)| same(l, labels)) {
            Some((_, v)) => *v += n as f64,
            None => fam.series.push((labels.iter().map(|l| Cow::Owned((*l).to_string())).collect(), n as f64)),
        }
    }

    /// Increments a counter series by one.
    pub(crate) fn inc(&mut self, desc: &'static Desc, labels: &[&'static str]) {
        self.add(desc, labels, 1);
    }

    /// Sets a gauge (or a counter mirrored from elsewhere, such as a kernel map) to `v`.
    pub(crate) fn set(&mut self, desc: &'static Desc, labels: Vec<LabelValue>, v: f64) {
        let fam = self.family(desc);
        match fam.series.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, old)) => *old = v,
            None => fam.series.push((labels, v)),
        }
    }

    /// Removes every series of a family (e.g. before re-filling per-interface gauges).
    pub(crate) fn clear(&mut self, desc: &'static Desc) {
        if let Some(f) = self.families.get_mut(desc.name) {
            f.series.clear();
        }
    }

    /// The value of one series, if it exists.
    pub fn get(&self, desc: &'static Desc, labels: &[&str]) -> Option<f64> {
        self.families.get(desc.name)?.series.iter().find(|(l, _)| same(l, labels)).map(|(_, v)| *v)
    }

    /// Sum of all series of a family.
    #[cfg(test)]
    pub(crate) fn total(&self, desc: &'static Desc) -> f64 {
        self.families.get(desc.name).map(|f| f.series.iter().map(|(_, v)| v).sum()).unwrap_or(0.0)
    }

    /// Largest value of any series of a family (`None` without series).
    pub(crate) fn max(&self, desc: &'static Desc) -> Option<f64> {
        self.families.get(desc.name)?.series.iter().map(|(_, v)| *v).reduce(f64::max)
    }

    /// Every family with its series, in name order: what the metrics page renders.
    pub(crate) fn families(&self) -> impl Iterator<Item = (&'static Desc, Vec<(&[LabelValue], f64)>)> + '_ {
        self.families.values().map(|f| (f.desc, f.series.iter().map(|(l, v)| (l.as_slice(), *v)).collect()))
    }

    /// Appends every family in the Prometheus text format (`wire::prom`).
    pub(crate) fn render(&self, out: &mut Vec<u8>) {
        let mut labels = Vec::with_capacity(128);
        for f in self.families.values() {
            crate::wire::prom::write_header(out, f.desc.name, f.desc.help, f.desc.kind);
            for (values, v) in &f.series {
                labels.clear();
                crate::wire::prom::write_labels(&mut labels, f.desc.labels, values);
                crate::wire::prom::write_sample(out, f.desc.name, &labels, *v);
            }
        }
    }

    /// Records a sample of the process's own resource usage (`process_*` families).
    pub(crate) fn set_process(&mut self, p: &crate::sys::process::ProcessStats) {
        self.set(&PROCESS_CPU, Vec::new(), p.cpu_seconds);
        self.set(&PROCESS_RSS, Vec::new(), p.resident_bytes as f64);
        self.set(&PROCESS_VSIZE, Vec::new(), p.virtual_bytes as f64);
        self.set(&PROCESS_START, Vec::new(), p.start_time_seconds);
        self.set(&PROCESS_FDS, Vec::new(), p.open_fds as f64);
        if p.max_fds > 0 {
            self.set(&PROCESS_MAX_FDS, Vec::new(), p.max_fds as f64);
        }
    }
}

/// Age of the registry in force, set at scrape time.
pub(crate) static REGISTRY_AGE: Desc = Desc {
    name: "flowd_registry_age_seconds",
    help: "Seconds since the registry in force was loaded (fetched, read or bundled at start).",
    kind: Kind::Gauge,
    labels: &[],
};

/// CPU time used by the daemon.
pub(crate) static PROCESS_CPU: Desc =
    Desc { name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.", kind: Kind::Counter, labels: &[] };

/// Resident memory.
pub(crate) static PROCESS_RSS: Desc = Desc { name: "process_resident_memory_bytes", help: "Resident memory size in bytes.", kind: Kind::Gauge, labels: &[] };

/// Virtual memory.
pub(crate) static PROCESS_VSIZE: Desc = Desc { name: "process_virtual_memory_bytes", help: "Virtual memory size in bytes.", kind: Kind::Gauge, labels: &[] };

/// Start time.
pub(crate) static PROCESS_START: Desc =
    Desc { name: "process_start_time_seconds", help: "Start time of the process since unix epoch in seconds.", kind: Kind::Gauge, labels: &[] };

/// Open file descriptors.
pub(crate) static PROCESS_FDS: Desc = Desc { name: "process_open_fds", help: "Number of open file descriptors.", kind: Kind::Gauge, labels: &[] };

/// File descriptor limit.
pub(crate) static PROCESS_MAX_FDS: Desc = Desc { name: "process_max_fds", help: "Maximum number of open file descriptors.", kind: Kind::Gauge, labels: &[] };

/// Events handed to the backends, by origin (plugin name, or `enrich`) and state.
pub(crate) static EVENTS: Desc =
    Desc { name: "flowd_events_total", help: "Flow events, by plugin (or enrich) and state.", kind: Kind::Counter, labels: &["plugin", "state"] };

/// Input rejected, by where it came from and why.
pub(crate) static BAD_INPUT: Desc = Desc {
    name: "flowd_bad_input_total",
    help: "Input lines or datagrams rejected, by source and reason.",
    kind: Kind::Counter,
    labels: &["source", "reason"],
};

/// Backend failures, by backend and reason.
pub(crate) static BACKEND_ERRORS: Desc = Desc {
    name: "flowd_backend_errors_total",
    help: "Flow events a backend could not handle, by backend and reason.",
    kind: Kind::Counter,
    labels: &["backend", "reason"],
};

#[cfg(test)]
mod tests {
    use super::*;

    static G: Desc = Desc { name: "g", help: "h", kind: Kind::Gauge, labels: &["x"] };

    #[test]
    fn test_counters_add_up_and_render_in_order() {
        let mut m = Metrics::new();
        m.inc(&EVENTS, &["np_api", "start"]);
        m.add(&EVENTS, &["np_api", "start"], 2);
        m.inc(&EVENTS, &["np_api", "end"]);
        m.set(&G, vec!["a".into()], 1.5);
        assert_eq!(m.get(&EVENTS, &["np_api", "start"]), Some(3.0));
        assert_eq!(m.total(&EVENTS), 4.0);
        let fams: Vec<_> = m.families().map(|(d, s)| (d.name, s.len())).collect();
        assert_eq!(fams, vec![("flowd_events_total", 2), ("g", 1)]);
        m.clear(&G);
        assert_eq!(m.get(&G, &["a"]), None);
    }
}

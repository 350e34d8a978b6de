//! The eBPF IPv6 marker backend (`BACKEND='ebpf'`).
//!
//! Owns the flow bookkeeping: on a `start` event of an IPv6 TCP/UDP flow it writes the
//! flow's outgoing 5-tuple and its mark into the kernel map, oriented as its packets
//! leave this host (this host's addresses come from the daemon's one cache,
//! `Context::local`); on `end` it deletes the entry; `ongoing` changes nothing (the flow
//! is marked already, and a periodic `ongoing` from the enrichment layer must not draw a
//! new label). The mark is the flow label (experiment, activity and five random entropy
//! bits drawn once per flow) or, with an extension-header `EBPF_MARKING`, the tag
//! `exp<<8 | act`. The classifier (`ebpf/flowd.bpf.c`) then marks every egress packet of
//! that flow. IPv4 flows are ignored.
//!
//! With the perfsonar plugin (`Config::match_all`), it also keeps the classifier's
//! default mark for TCP packets no flow claims: set at start when both ids are numbers,
//! otherwise resolved through the registry on the first loop turn, and re-resolved every
//! few seconds (a refreshed registry may renumber a name). Every few seconds it mirrors
//! the kernel counters into `Metrics`.
//!
//! Loading lives in `program.rs`, attaching (TCX or clsact) in `attach.rs`, the C ABI in
//! `abi.rs`. Dropping a `Marker` detaches it from every interface.

pub mod abi;
pub(crate) mod attach;
pub(crate) mod program;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use aya::programs::tc::SchedClassifierLinkId;

use crate::backend::BackendError;
use crate::config::Config;
use crate::context::Context;
use crate::decision::Decision;
use crate::flow::{FlowEvent, FlowKey, FlowState};
use crate::label;
use crate::metrics::{Desc, Kind};
use crate::registry::{IdOrName, ScitagsRegistry, UnknownName};
use crate::sys::bpf as sysbpf;

pub use abi::{RawKey, TestCtx};
pub use attach::{AttachError, AttachMode, Attached};
pub use program::{Counters, MarkerProgram, Marking, ProgramLoadError};

/// How often kernel counters are copied into `Metrics`.
pub(crate) const STATS_PERIOD: Duration = Duration::from_secs(5);

/// `flowd_marker_packets_seen_total{interface}`.
pub(crate) static PACKETS_SEEN: Desc = Desc {
    name: "flowd_marker_packets_seen_total",
    help: "IPv6 packets (skbs, before segmentation) seen by the eBPF marker at egress",
    kind: Kind::Counter,
    labels: &["interface"],
};
/// `flowd_marker_packets_marked_total{interface}`.
pub static PACKETS_MARKED: Desc = Desc {
    name: "flowd_marker_packets_marked_total",
    help: "IPv6 packets (skbs) whose flow label the eBPF marker set",
    kind: Kind::Counter,
    labels: &["interface"],
};
/// `flowd_marker_packets_default_total{interface}`.
pub(crate) static PACKETS_DEFAULT: Desc = Desc {
    name: "flowd_marker_packets_default_total",
    help: "IPv6 TCP packets (skbs) no announced flow claims that the eBPF marker marked with the perfsonar plugin's default (also counted as marked)",
    kind: Kind::Counter,
    labels: &["interface"],
};
/// `flowd_marker_eh_inserted_total{interface}`.
pub(crate) static EH_INSERTED: Desc = Desc {
    name: "flowd_marker_eh_inserted_total",
    help: "IPv6 packets (skbs) the eBPF marker inserted an extension header into",
    kind: Kind::Counter,
    labels: &["interface"],
};
/// `flowd_marker_eh_too_big_total{interface}`.
pub(crate) static EH_TOO_BIG: Desc = Desc {
    name: "flowd_marker_eh_too_big_total",
    help: "IPv6 packets sent without their extension header because it would have made them exceed the MTU",
    kind: Kind::Counter,
    labels: &["interface"],
};
/// `flowd_marker_eh_failed_total{interface}`.
pub(crate) static EH_FAILED: Desc = Desc {
    name: "flowd_marker_eh_failed_total",
    help: "IPv6 packets sent without their extension header because the kernel could not make room for it",
    kind: Kind::Counter,
    labels: &["interface"],
};
/// `flowd_marker_match_all`.
pub(crate) static MATCH_ALL: Desc = Desc {
    name: "flowd_marker_match_all",
    help: "1 while the eBPF marker marks every IPv6 TCP packet no flow claims (perfsonar plugin), else 0",
    kind: Kind::Gauge,
    labels: &[],
};
/// `flowd_marker_flows`.
pub(crate) static FLOWS: Desc = Desc { name: "flowd_marker_flows", help: "Flows currently in the eBPF marker's flow map", kind: Kind::Gauge, labels: &[] };
/// `flowd_marker_refused_total{reason}`.
pub(crate) static REFUSED: Desc =
    Desc { name: "flowd_marker_refused_total", help: "Start events the eBPF marker could not mark", kind: Kind::Counter, labels: &["reason"] };
/// `flowd_marker_attached{interface,mode}`.
pub(crate) static ATTACHED: Desc = Desc {
    name: "flowd_marker_attached",
    help: "Interfaces the eBPF marker is attached to (1), with the attach mode",
    kind: Kind::Gauge,
    labels: &["interface", "mode"],
};

/// Why the marker could not start.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    /// The program could not be loaded.
    #[error("cannot load the marker")]
    Load(#[from] ProgramLoadError),
    /// Interfaces could not be listed.
    #[error("cannot list network interfaces")]
    ListInterfaces(#[source] std::io::Error),
    /// NETWORK_INTERFACE is empty and no interface has a global IPv6 address.
    #[error("NETWORK_INTERFACE is empty and no interface has a global IPv6 address")]
    NoInterface,
    /// An interface does not exist.
    #[error("no network interface {iface}")]
    UnknownInterface {
        /// The configured name.
        iface: String,
        /// The lookup error.
        #[source]
        source: std::io::Error,
    },
    /// Attaching to an interface failed.
    #[error("cannot attach the marker to {iface}")]
    Attach {
        /// The interface.
        iface: String,
        /// What failed.
        #[source]
        source: AttachError,
    },
    /// `FLOWD_MARKER_ATTACH` has an unknown value.
    #[error("FLOWD_MARKER_ATTACH={0:?}: expected auto, tcx or clsact")]
    BadAttachMode(String),
}

/// What the marker needs from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerConfig {
    /// Interfaces to attach to; empty = every interface with a global IPv6 address.
    pub interfaces: Vec<String>,
    /// Capacity of the kernel flow map (LRU: the oldest entries go first when full).
    pub map_size: u32,
    /// TCX, clsact or automatic.
    pub attach: AttachMode,
    /// Flow label or extension headers.
    pub marking: Marking,
    /// The (experiment, activity) of TCP packets no flow claims (perfsonar plugin).
    pub match_all: Option<(IdOrName, IdOrName)>,
}

impl MarkerConfig {
    /// From NETWORK_INTERFACE, EBPF_MAP_SIZE, EBPF_MARKING and the perfsonar plugin's
    /// keys, plus the `FLOWD_MARKER_ATTACH` environment variable (`auto` (default),
    /// `tcx`, `clsact`).
    pub(crate) fn from_config(cfg: &Config) -> Result<MarkerConfig, MarkerError> {
        let mode = std::env::var("FLOWD_MARKER_ATTACH").unwrap_or_default();
        let attach = AttachMode::parse(&mode).ok_or(MarkerError::BadAttachMode(mode))?;
        Ok(MarkerConfig {
            interfaces: cfg.marker.interfaces.clone(),
            map_size: cfg.marker.map_size.max(1),
            attach,
            marking: cfg.marker.marking,
            match_all: cfg.match_all(),
        })
    }

    /// Label marking of the flows in the map only, attached as `attach` says (tests).
    pub fn label(interfaces: Vec<String>, map_size: u32, attach: AttachMode) -> MarkerConfig {
        MarkerConfig { interfaces, map_size, attach, marking: Marking::Label, match_all: None }
    }
}

/// The mark of (exp, act) under `marking`: a flow label with `entropy` in its entropy
/// bits, or the extension-header tag `exp<<8 | act`. The error is the refusal reason.
pub(crate) fn encode_mark(marking: Marking, exp: u32, act: u32, entropy: u8) -> Result<u32, (&'static str, String)> {
    if marking.is_extension_header() {
        let (max_exp, max_act) = marking.max_ids();
        if exp > max_exp || act > max_act {
            return Err(("tag_overflow", format!("experiment {exp} / activity {act} do not fit the extension-header tag (at most {max_exp} / {max_act})")));
        }
        return Ok(exp << 8 | act);
    }
    label::encode(exp, act, entropy).map_err(|e| ("label_overflow", e.to_string()))
}

/// The match-all default and whether it still needs the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MatchAll {
    exp: IdOrName,
    act: IdOrName,
    /// The (exp, act) ids in the kernel now; `None` = no default set.
    applied: Option<(u32, u32)>,
    /// The last problem logged (so a lasting one is logged once).
    problem: Option<String>,
    /// Not resolved against the registry yet: resolve on the first loop turn.
    pending: bool,
}

/// One interface the classifier is attached to.
#[derive(Debug)]
struct Iface {
    name: String,
    index: u32,
    mode: Attached,
    link: Option<SchedClassifierLinkId>,
}

/// A flow currently in the kernel map.
#[derive(Clone, Copy, Debug)]
struct Active {
    raw: RawKey,
    label: u32,
}

/// The running marker backend.
pub struct Marker {
    prog: MarkerProgram,
    ifaces: Vec<Iface>,
    active: HashMap<FlowKey, Active>,
    next_stats: Instant,
    attach_mode: AttachMode,
    match_all: Option<MatchAll>,
    /// The kernel map's capacity (EBPF_MAP_SIZE): beyond it the kernel evicts.
    capacity: usize,
}

/// The flow as its packets leave this host: swapped when only the destination is local
/// (an upload announced from the remote side's point of view).
pub(crate) fn orient(key: &FlowKey, is_local: impl Fn(IpAddr) -> bool) -> FlowKey {
    if !is_local(key.src.ip()) && is_local(key.dst.ip()) {
        key.reversed()
    } else {
        *key
    }
}

impl Marker {
    /// Loads the program and attaches it to the configured interfaces.
    pub(crate) fn new(cfg: &Config) -> Result<Marker, MarkerError> {
        Marker::with_config(&MarkerConfig::from_config(cfg)?)
    }

    /// Loads the program and attaches it as `mc` says.
    pub fn with_config(mc: &MarkerConfig) -> Result<Marker, MarkerError> {
        let names = if mc.interfaces.is_empty() {
            let found = sysbpf::interfaces_with_global_v6().map_err(MarkerError::ListInterfaces)?;
            if found.is_empty() {
                return Err(MarkerError::NoInterface);
            }
            found
        } else {
            mc.interfaces.clone()
        };
        let mut ifaces = Vec::with_capacity(names.len());
        for name in names {
            let index = sysbpf::if_index(&name).map_err(|source| MarkerError::UnknownInterface { iface: name.clone(), source })?;
            ifaces.push(Iface { name, index, mode: Attached::Tcx, link: None });
        }
        let prog = MarkerProgram::load_marking(mc.map_size, mc.marking)?;
        let match_all = mc.match_all.clone().map(|(exp, act)| MatchAll { exp, act, applied: None, problem: None, pending: true });
        // From here on, an early return drops `marker`, which detaches what was attached.
        let mut marker = Marker {
            prog,
            ifaces,
            active: HashMap::new(),
            next_stats: Instant::now() + STATS_PERIOD,
            attach_mode: mc.attach,
            match_all,
            capacity: mc.map_size as usize,
        };
        // Numeric ids need no registry: the default is in place before the first packet.
        if matches!(&marker.match_all, Some(MatchAll { exp: IdOrName::Id(_), act: IdOrName::Id(_), .. })) {
            marker.refresh_default(&ScitagsRegistry { experiments: Vec::new(), modified: None, origin: "none".into() });
        }
        for i in 0..marker.ifaces.len() {
            let name = marker.ifaces[i].name.clone();
            let classifier = marker.prog.classifier()?;
            let (link, mode) = attach::attach(classifier, &name, mc.attach).map_err(|source| MarkerError::Attach { iface: name.clone(), source })?;
            marker.ifaces[i].link = Some(link);
            marker.ifaces[i].mode = mode;
            log::info!("marker: attached to {name} egress ({})", mode.as_str());
        }
        Ok(marker)
    }

    /// The interfaces attached to, with their mode.
    pub fn interfaces(&self) -> impl Iterator<Item = (&str, Attached)> + '_ {
        self.ifaces.iter().map(|i| (i.name.as_str(), i.mode))
    }

    /// The loaded program (maps, counters, test runs).
    pub fn program(&mut self) -> &mut MarkerProgram {
        &mut self.prog
    }

    /// The (experiment, activity) of the match-all default in the kernel, if one is set.
    pub fn match_all(&self) -> Option<(u32, u32)> {
        self.match_all.as_ref().and_then(|m| m.applied)
    }

    /// Resolves the match-all (experiment, activity) against `registry` and writes the
    /// default into the kernel when it changed. An unknown name or ids that do not fit
    /// the mark clear the default (logged once per distinct problem).
    fn refresh_default(&mut self, registry: &ScitagsRegistry) {
        let Some(m) = self.match_all.as_mut() else { return };
        m.pending = false;
        let marking = self.prog.marking();
        let want = registry
            .resolve(&m.exp, &m.act)
            .map_err(|e| {
                let what = match e {
                    UnknownName::Experiment => "the experiment is not in the registry",
                    UnknownName::Activity => "the activity is not one of that experiment's",
                };
                format!("PERFSONAR_EXPERIMENT/PERFSONAR_ACTIVITY ({}/{}): {what}", m.exp, m.act)
            })
            .and_then(|(e, a)| encode_mark(marking, e, a, 0).map(|mark| ((e, a), mark)).map_err(|(_, why)| why));
        match want {
            Ok((ids, _)) if m.applied == Some(ids) => {}
            Ok((ids, mark)) => match self.prog.set_default(Some(mark)) {
                Ok(()) => {
                    log::info!(
                        "marker: match-all: every IPv6 TCP packet no flow claims is marked with experiment {}, activity {} ({} {mark:#x})",
                        ids.0,
                        ids.1,
                        if marking.is_extension_header() { "tag" } else { "label" }
                    );
                    m.applied = Some(ids);
                    m.problem = None;
                }
                Err(e) => log::warn!("marker: cannot set the match-all default: {e}"),
            },
            Err(why) => {
                if m.applied.is_some() {
                    if let Err(e) = self.prog.set_default(None) {
                        log::warn!("marker: cannot clear the match-all default: {e}");
                        return;
                    }
                    m.applied = None;
                }
                if m.problem.as_ref() != Some(&why) {
                    log::warn!("marker: not marking unannounced packets: {why}");
                    m.problem = Some(why);
                }
            }
        }
    }

    /// Number of flows currently marked.
    pub fn flows(&self) -> usize {
        self.active.len()
    }

    /// The mark in force for a flow as announced (its label, or its tag with an
    /// extension-header marking), if it is being marked.
    pub fn label_of(&self, key: &FlowKey) -> Option<u32> {
        self.active.get(key).or_else(|| self.active.get(&key.reversed())).map(|a| a.label)
    }

    fn start(&mut self, ev: &FlowEvent, cx: &mut Context<'_>) -> Result<Option<Decision>, BackendError> {
        let (exp, act) = (ev.exp, ev.act);
        let (src, dst) = (ev.key.src.ip(), ev.key.dst.ip());
        let mut local = cx.local.list(cx.now);
        if !local.contains(&src) && !local.contains(&dst) {
            // Neither end is ours: maybe the address was configured just now.
            local = cx.local.recheck(cx.now);
        }
        let key = orient(&ev.key, |a| local.contains(&a));
        let Some(raw) = RawKey::from_flow(&key) else { return Ok(Some(Decision::NotMarkedIpv4)) };
        let marking = self.prog.marking();
        // A repeated start keeps the flow's entropy, so its packets keep one label.
        let entropy = match self.active.get(&key) {
            Some(a) => label::entropy_of(a.label),
            None if marking.is_extension_header() => 0,
            None => {
                let mut b = [0u8; 1];
                if let Err(e) = sysbpf::fill_random(&mut b) {
                    log::warn!("marker: getrandom failed ({e}); using entropy 0 for {key}");
                }
                b[0] & label::MAX_ENTROPY
            }
        };
        let lbl = match encode_mark(marking, exp, act, entropy) {
            Ok(l) => l,
            Err((reason, why)) => {
                log::warn!("marker: not marking {key}: {why}");
                cx.metrics.inc(&REFUSED, &[reason]);
                return Err(BackendError::Refused(reason));
            }
        };
        if let Err(e) = self.prog.insert(&raw, lbl) {
            log::warn!("marker: cannot add {key} to the flow map: {e}");
            cx.metrics.inc(&REFUSED, &["map_update_failed"]);
            return Err(BackendError::Refused("map_update_failed"));
        }
        log::debug!("marker: marking {key} with {} {lbl:#07x} (exp {exp}, act {act})", if marking.is_extension_header() { "tag" } else { "label" });
        // A new flow beyond the map's capacity pushes the least recently used one out.
        let full = self.active.len() >= self.capacity && !self.active.contains_key(&key);
        self.active.insert(key, Active { raw, label: lbl });
        Ok(Some(if full { Decision::MarkedMapFull } else { Decision::Marked }))
    }

    fn end(&mut self, ev: &FlowEvent, cx: &mut Context<'_>) -> Result<Option<Decision>, BackendError> {
        let key = if self.active.contains_key(&ev.key) { ev.key } else { ev.key.reversed() };
        let Some(a) = self.active.remove(&key) else { return Ok(None) };
        match self.prog.remove(&a.raw) {
            Ok(true) => log::debug!("marker: stopped marking {key}"),
            // The LRU map evicted it already (more flows than EBPF_MAP_SIZE).
            Ok(false) => log::debug!("marker: {key} was already evicted from the flow map"),
            Err(e) => {
                log::warn!("marker: cannot remove {key} from the flow map: {e}");
                cx.metrics.inc(&REFUSED, &["map_delete_failed"]);
                return Err(BackendError::Refused("map_delete_failed"));
            }
        }
        Ok(Some(Decision::Unmarked))
    }

    /// Acts on one flow event: `start` marks, `end` unmarks, `ongoing` changes nothing;
    /// an IPv4 flow's start is `NotMarkedIpv4`, its other events ask nothing.
    pub fn handle(&mut self, ev: &FlowEvent, cx: &mut Context<'_>) -> Result<Option<Decision>, BackendError> {
        let r = match ev.state {
            FlowState::Start if !ev.key.is_ipv6() => Ok(Some(Decision::NotMarkedIpv4)),
            _ if !ev.key.is_ipv6() => Ok(None),
            FlowState::Start => self.start(ev, cx),
            FlowState::End => self.end(ev, cx),
            FlowState::Ongoing => Ok(None),
        };
        cx.metrics.set(&FLOWS, Vec::new(), self.active.len() as f64);
        r
    }

    /// When the kernel counters are next copied into `Metrics` (at once while the
    /// match-all default waits for the registry).
    pub fn poll_at(&self) -> Option<Instant> {
        if self.match_all.as_ref().is_some_and(|m| m.pending) {
            return Some(self.next_stats - STATS_PERIOD);
        }
        Some(self.next_stats)
    }

    /// Resolves the match-all default, checks the interfaces (re-attaching to one that
    /// was deleted and re-created), then copies the kernel counters (summed over CPUs)
    /// into `Metrics`, per interface.
    pub fn on_timeout(&mut self, cx: &mut Context<'_>) {
        let first = self.match_all.as_ref().is_some_and(|m| m.pending);
        self.refresh_default(cx.registry);
        if first && cx.now < self.next_stats {
            return;
        }
        self.next_stats = cx.now + STATS_PERIOD;
        self.watch_interfaces();
        self.export(cx.metrics);
    }

    /// An interface that disappeared takes our attachment with it; when an interface of
    /// that name exists again (a new ifindex), attach to it. The flow map is kept, so
    /// marking resumes for every open flow. Failures are retried at the next period.
    fn watch_interfaces(&mut self) {
        for i in 0..self.ifaces.len() {
            let name = self.ifaces[i].name.clone();
            let now_index = sysbpf::if_index(&name).ok();
            if now_index == Some(self.ifaces[i].index) && self.ifaces[i].link.is_some() {
                continue;
            }
            if let Some(link) = self.ifaces[i].link.take() {
                log::warn!("marker: interface {name} disappeared or was re-created; packets on it are not marked until it is back");
                // The kernel already dropped a TCX link with its device; this releases our side.
                if let Ok(c) = self.prog.classifier() {
                    if let Err(e) = c.detach(link) {
                        log::debug!("marker: detaching from the old {name}: {e}");
                    }
                }
            }
            let Some(index) = now_index else { continue };
            let attached =
                self.prog.classifier().map_err(|e| e.to_string()).and_then(|c| attach::attach(c, &name, self.attach_mode).map_err(|e| e.to_string()));
            match attached {
                Ok((link, mode)) => {
                    let iface = &mut self.ifaces[i];
                    iface.index = index;
                    iface.link = Some(link);
                    iface.mode = mode;
                    log::info!("marker: re-attached to {name} egress ({}), ifindex {index}", mode.as_str());
                }
                Err(e) => log::warn!("marker: cannot re-attach to {name} yet: {e}"),
            }
        }
    }

    /// Writes counters, flow count and attachments into `metrics` now.
    pub fn export(&mut self, metrics: &mut crate::metrics::Metrics) {
        let mut slots: Vec<(Cow<'static, str>, u32)> = Vec::new();
        for i in &self.ifaces {
            let slot = if i.index < abi::STATS_SLOTS { i.index } else { 0 };
            metrics.set(&ATTACHED, vec![Cow::Owned(i.name.clone()), Cow::Borrowed(i.mode.as_str())], if i.link.is_some() { 1.0 } else { 0.0 });
            if slot == 0 {
                continue;
            }
            slots.push((Cow::Owned(i.name.clone()), slot));
        }
        slots.push((Cow::Borrowed("other"), 0));
        for (name, slot) in slots {
            match self.prog.counters(slot) {
                Ok(c) => {
                    metrics.set(&PACKETS_SEEN, vec![name.clone()], c.seen as f64);
                    metrics.set(&PACKETS_MARKED, vec![name.clone()], c.marked as f64);
                    metrics.set(&PACKETS_DEFAULT, vec![name.clone()], c.by_default as f64);
                    metrics.set(&EH_INSERTED, vec![name.clone()], c.eh_inserted as f64);
                    metrics.set(&EH_TOO_BIG, vec![name.clone()], c.eh_too_big as f64);
                    metrics.set(&EH_FAILED, vec![name], c.eh_failed as f64);
                }
                Err(e) => log::warn!("marker: cannot read counters of {name}: {e}"),
            }
        }
        metrics.set(&FLOWS, Vec::new(), self.active.len() as f64);
        metrics.set(&MATCH_ALL, Vec::new(), if self.match_all().is_some() { 1.0 } else { 0.0 });
    }
}

impl Drop for Marker {
    /// Detaches from every interface (TCX link closed, or our clsact filter deleted).
    /// The program and maps are released when `prog` drops right after.
    fn drop(&mut self) {
        for i in &mut self.ifaces {
            let Some(link) = i.link.take() else { continue };
            let detached = self.prog.classifier().map_err(|e| e.to_string()).and_then(|c| c.detach(link).map_err(|e| e.to_string()));
            match detached {
                Ok(()) => log::info!("marker: detached from {}", i.name),
                Err(e) => log::warn!("marker: cannot detach from {}: {e}", i.name),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Proto;

    #[test]
    fn test_orient_swaps_only_when_just_dst_is_local() {
        let local: IpAddr = "2001:db8::1".parse().unwrap();
        let k = FlowKey::new(Proto::Tcp, "[2001:db8::1]:1094".parse().unwrap(), "[2001:db8:1::2]:5000".parse().unwrap()).unwrap();
        let is_local = |a: IpAddr| a == local;
        assert_eq!(orient(&k, is_local), k);
        assert_eq!(orient(&k.reversed(), is_local), k);
        // Neither side local (e.g. addresses not configured yet): as announced.
        assert_eq!(orient(&k, |_| false), k);
        // Both local (loopback transfer): as announced.
        assert_eq!(orient(&k.reversed(), |_| true), k.reversed());
    }

    #[test]
    fn test_encode_mark_per_marking() {
        assert_eq!(encode_mark(Marking::Label, 2, 9, 31), Ok(0xD0127));
        assert_eq!(encode_mark(Marking::Destination, 2, 9, 31), Ok(0x0209), "no entropy in the tag");
        assert_eq!(encode_mark(Marking::HopByHop, 0xFFFF, 0xFF, 0), Ok(0xFFFFFF));
        assert_eq!(encode_mark(Marking::Label, 512, 1, 0).map_err(|e| e.0), Err("label_overflow"));
        assert_eq!(encode_mark(Marking::HopByHopDestination, 1, 256, 0).map_err(|e| e.0), Err("tag_overflow"));
        assert_eq!(encode_mark(Marking::Destination, 0x10000, 1, 0).map_err(|e| e.0), Err("tag_overflow"));
    }

    #[test]
    fn test_attach_mode_parse() {
        assert_eq!(AttachMode::parse(""), Some(AttachMode::Auto));
        assert_eq!(AttachMode::parse("clsact"), Some(AttachMode::Clsact));
        assert_eq!(AttachMode::parse("tc"), None);
    }
}

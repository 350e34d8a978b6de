//! The loaded (not yet attached) marker program and its three maps.
//!
//! Owns the aya `Ebpf` object: loading the embedded object with the configured map
//! size and the one classifier the marking needs (`flowd_mark` for the flow label,
//! `flowd_mark_eh` for extension headers: only that one is verified by the kernel, so
//! label marking keeps working on kernels without the newer helpers), the flow map
//! (insert/remove), the config map (marking, match-all default), the per-CPU counters,
//! and `BPF_PROG_TEST_RUN` of the classifier for tests and the benchmark. Attaching to
//! interfaces is `attach.rs`'s job; flow bookkeeping is `mod.rs`'s.

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, SchedClassifier, TestRunOptions};
use aya::{Ebpf, EbpfError, EbpfLoader};

use super::abi::{
    RawConfig, RawKey, RawStats, RawValue, TestCtx, CONFIG_DEFAULT, CONFIG_MAP, FLOWS_MAP, MARK_DESTINATION, MARK_HOP_BY_HOP, MARK_HOP_BY_HOP_DESTINATION,
    MARK_LABEL, OBJECT, PROG_EH_NAME, PROG_NAME, STATS_MAP, STATS_SLOTS,
};

pub use crate::config::Marking;

/// `flowd_config.marking` of `m`.
fn marking_raw(m: Marking) -> u32 {
    match m {
        Marking::Label => MARK_LABEL,
        Marking::HopByHop => MARK_HOP_BY_HOP,
        Marking::Destination => MARK_DESTINATION,
        Marking::HopByHopDestination => MARK_HOP_BY_HOP_DESTINATION,
    }
}

/// The classifier that implements `m`.
pub(crate) fn program_name(m: Marking) -> &'static str {
    match m {
        Marking::Label => PROG_NAME,
        _ => PROG_EH_NAME,
    }
}

/// What one `BPF_PROG_TEST_RUN` of the classifier returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (of the last run).
    pub retval: u32,
    /// Bytes of packet written to the output buffer.
    pub data_len: usize,
    /// Average run time in nanoseconds, as measured by the kernel.
    pub duration_ns: u32,
}

/// Why the marker program could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ProgramLoadError {
    /// The object could not be parsed or the maps created.
    #[error("cannot load the eBPF object (map size {map_size})")]
    Object {
        /// The requested flow-map size.
        map_size: u32,
        /// aya's error.
        #[source]
        source: EbpfError,
    },
    /// The object lacks a program or map the loader expects (ABI mismatch).
    #[error("the eBPF object has no {what} named {name}")]
    Missing {
        /// "program" or "map".
        what: &'static str,
        /// The expected name.
        name: &'static str,
    },
    /// The kernel rejected the program (verifier) or it has the wrong type.
    #[error("cannot load eBPF program {name}")]
    Program {
        /// The program.
        name: &'static str,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// A map has an unexpected type or layout.
    #[error("eBPF map {name} has the wrong type or layout")]
    MapType {
        /// The map name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: MapError,
    },
}

/// Counters of one slot, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// IPv6 packets (skbs) seen.
    pub seen: u64,
    /// Packets marked (label set or extension header inserted).
    pub marked: u64,
    /// Of `marked`: marked with the match-all default.
    pub by_default: u64,
    /// Extension headers inserted.
    pub eh_inserted: u64,
    /// Extension headers not inserted because the packet would exceed the MTU.
    pub eh_too_big: u64,
    /// Extension headers not inserted because the kernel could not make room.
    pub eh_failed: u64,
}

impl Counters {
    fn add(self, s: &RawStats) -> Counters {
        Counters {
            seen: self.seen.wrapping_add(s.seen),
            marked: self.marked.wrapping_add(s.marked),
            by_default: self.by_default.wrapping_add(s.by_default),
            eh_inserted: self.eh_inserted.wrapping_add(s.eh_inserted),
            eh_too_big: self.eh_too_big.wrapping_add(s.eh_too_big),
            eh_failed: self.eh_failed.wrapping_add(s.eh_failed),
        }
    }
}

/// The loaded classifier with its maps.
pub struct MarkerProgram {
    /// Owns the program (and, through it, every link attached by `attach.rs`).
    pub(crate) ebpf: Ebpf,
    marking: Marking,
    flows: HashMap<MapData, RawKey, RawValue>,
    stats: PerCpuArray<MapData, RawStats>,
    config: Array<MapData, RawConfig>,
}

fn program_error(name: &'static str) -> impl FnOnce(ProgramError) -> ProgramLoadError {
    move |source| ProgramLoadError::Program { name, source }
}

impl MarkerProgram {
    /// Loads the embedded object with a flow map of `map_size` entries and loads the
    /// flow-label classifier into the kernel (not attached anywhere yet).
    pub fn load(map_size: u32) -> Result<MarkerProgram, ProgramLoadError> {
        MarkerProgram::load_object(OBJECT, map_size, Marking::Label)
    }

    /// As [`MarkerProgram::load`], with the classifier of `marking`.
    pub fn load_marking(map_size: u32, marking: Marking) -> Result<MarkerProgram, ProgramLoadError> {
        MarkerProgram::load_object(OBJECT, map_size, marking)
    }

    /// As [`MarkerProgram::load_marking`], from another build of the object (tests
    /// compare the committed `ebpf/flowd.bpf.o` with the embedded one).
    pub fn load_object(object: &[u8], map_size: u32, marking: Marking) -> Result<MarkerProgram, ProgramLoadError> {
        // aya raises RLIMIT_MEMLOCK itself when a map or program load fails with EPERM on
        // a kernel before 5.11 (newer ones charge BPF memory to the cgroup).
        let mut ebpf = EbpfLoader::new().map_max_entries(FLOWS_MAP, map_size).load(object).map_err(|source| ProgramLoadError::Object { map_size, source })?;
        let name = program_name(marking);
        let prog: &mut SchedClassifier =
            ebpf.program_mut(name).ok_or(ProgramLoadError::Missing { what: "program", name })?.try_into().map_err(program_error(name))?;
        prog.load().map_err(program_error(name))?;
        let flows = ebpf.take_map(FLOWS_MAP).ok_or(ProgramLoadError::Missing { what: "map", name: FLOWS_MAP })?;
        let flows = HashMap::try_from(flows).map_err(|source| ProgramLoadError::MapType { name: FLOWS_MAP, source })?;
        let stats = ebpf.take_map(STATS_MAP).ok_or(ProgramLoadError::Missing { what: "map", name: STATS_MAP })?;
        let stats = PerCpuArray::try_from(stats).map_err(|source| ProgramLoadError::MapType { name: STATS_MAP, source })?;
        let config = ebpf.take_map(CONFIG_MAP).ok_or(ProgramLoadError::Missing { what: "map", name: CONFIG_MAP })?;
        let config = Array::try_from(config).map_err(|source| ProgramLoadError::MapType { name: CONFIG_MAP, source })?;
        let mut p = MarkerProgram { ebpf, marking, flows, stats, config };
        p.set_default(None).map_err(|source| ProgramLoadError::MapType { name: CONFIG_MAP, source })?;
        Ok(p)
    }

    /// The marking this program implements.
    pub(crate) fn marking(&self) -> Marking {
        self.marking
    }

    /// The classifier (for attaching).
    pub(crate) fn classifier(&mut self) -> Result<&mut SchedClassifier, ProgramLoadError> {
        let name = program_name(self.marking);
        self.ebpf.program_mut(name).ok_or(ProgramLoadError::Missing { what: "program", name })?.try_into().map_err(program_error(name))
    }

    /// Sets (or with `None` clears) the mark of TCP packets no flow claims: a label with
    /// its entropy bits zero (the classifier derives them from the 5-tuple), or with an
    /// extension-header marking the tag `exp<<8 | act`.
    pub fn set_default(&mut self, mark: Option<u32>) -> Result<(), MapError> {
        let cfg =
            RawConfig { marking: marking_raw(self.marking), flags: if mark.is_some() { CONFIG_DEFAULT } else { 0 }, default_mark: mark.unwrap_or(0), pad: 0 };
        self.config.set(0, cfg, 0)
    }

    /// The default mark in force, if any.
    pub fn default_mark(&self) -> Result<Option<u32>, MapError> {
        let c = self.config.get(&0, 0)?;
        Ok((c.flags & CONFIG_DEFAULT != 0).then_some(c.default_mark))
    }

    /// Marks packets matching `key` with `label` (a tag with an extension-header
    /// marking; inserts or replaces the entry).
    pub fn insert(&mut self, key: &RawKey, label: u32) -> Result<(), MapError> {
        self.flows.insert(key, RawValue { label }, 0)
    }

    /// Stops marking `key`. Returns false when the key was not in the map.
    pub fn remove(&mut self, key: &RawKey) -> Result<bool, MapError> {
        match self.flows.remove(key) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The label stored for `key`, if any.
    pub fn label(&self, key: &RawKey) -> Option<u32> {
        self.flows.get(key, 0).ok().map(|v| v.label)
    }

    /// Counters of slot `slot` (an ifindex below `STATS_SLOTS`, or 0), summed over CPUs.
    pub(crate) fn counters(&self, slot: u32) -> Result<Counters, MapError> {
        let per_cpu = self.stats.get(&slot, 0)?;
        Ok(per_cpu.iter().fold(Counters::default(), |acc, s| acc.add(s)))
    }

    /// Counters of every slot, summed over CPUs and slots.
    pub fn total_counters(&self) -> Result<Counters, MapError> {
        let mut total = Counters::default();
        for slot in 0..STATS_SLOTS {
            for s in self.stats.get(&slot, 0)?.iter() {
                total = total.add(s);
            }
        }
        Ok(total)
    }

    /// Runs the classifier `repeat` times on `frame` (`BPF_PROG_TEST_RUN`, no attach
    /// needed) and returns the result with the output frame. The kernel runs it on the
    /// same skb each time: an inserted extension header is there for the next run.
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> std::io::Result<(TestRun, Vec<u8>)> {
        self.test_run_ctx(frame, repeat, None)
    }

    /// As [`MarkerProgram::test_run`], with the skb's device (`ifindex`, whose MTU
    /// `bpf_check_mtu` uses; 0 = loopback) and GSO fields set from `ctx`.
    pub fn test_run_ctx(&mut self, frame: &[u8], repeat: u32, ctx: Option<TestCtx>) -> std::io::Result<(TestRun, Vec<u8>)> {
        let prog = self.classifier().map_err(std::io::Error::other)?;
        let mut out = vec![0u8; frame.len() + 256];
        let ctx_bytes = ctx.map(|c| c.bytes());
        let opts =
            TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ctx_in: ctx_bytes.as_ref().map(|b| &b[..]), repeat, ..TestRunOptions::default() };
        let r = aya::programs::TestRun::test_run(&*prog, opts).map_err(|e| match e {
            // Keep the kernel's errno (EINVAL for a frame shorter than its minimum).
            ProgramError::SyscallError(s) => s.io_error,
            other => std::io::Error::other(other),
        })?;
        let run = TestRun { retval: r.return_value, data_len: r.data_size_out as usize, duration_ns: u32::try_from(r.duration.as_nanos()).unwrap_or(u32::MAX) };
        out.truncate(run.data_len);
        Ok((run, out))
    }
}

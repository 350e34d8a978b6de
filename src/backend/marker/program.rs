//! The loaded (not yet attached) marker program and its two maps.
//!
//! Owns the aya `Ebpf` object: loading the embedded object with the configured map
//! size, the flow map (insert/remove), the per-CPU counters, and `BPF_PROG_TEST_RUN`
//! of the classifier for tests and the benchmark. Attaching to interfaces is
//! `attach.rs`'s job; flow bookkeeping is `mod.rs`'s.

use aya::maps::{HashMap, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, SchedClassifier, TestRunOptions};
use aya::{Ebpf, EbpfError, EbpfLoader};

use super::abi::{RawKey, RawStats, RawValue, FLOWS_MAP, OBJECT, PROG_NAME, STATS_MAP, STATS_SLOTS};

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
    #[error("cannot load eBPF program {PROG_NAME}")]
    Program(#[source] ProgramError),
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
    /// Packets marked.
    pub marked: u64,
}

/// The loaded classifier with its maps.
pub struct MarkerProgram {
    /// Owns the program (and, through it, every link attached by `attach.rs`).
    pub(crate) ebpf: Ebpf,
    flows: HashMap<MapData, RawKey, RawValue>,
    stats: PerCpuArray<MapData, RawStats>,
}

impl MarkerProgram {
    /// Loads the embedded object with a flow map of `map_size` entries and loads the
    /// classifier into the kernel (not attached anywhere yet).
    pub fn load(map_size: u32) -> Result<MarkerProgram, ProgramLoadError> {
        MarkerProgram::load_object(OBJECT, map_size)
    }

    /// As [`MarkerProgram::load`], from another build of the object (tests compare the
    /// committed `ebpf/flowd.bpf.o` with the embedded one).
    pub fn load_object(object: &[u8], map_size: u32) -> Result<MarkerProgram, ProgramLoadError> {
        // aya raises RLIMIT_MEMLOCK itself when a map or program load fails with EPERM on
        // a kernel before 5.11 (newer ones charge BPF memory to the cgroup).
        let mut ebpf = EbpfLoader::new().map_max_entries(FLOWS_MAP, map_size).load(object).map_err(|source| ProgramLoadError::Object { map_size, source })?;
        let prog: &mut SchedClassifier =
            ebpf.program_mut(PROG_NAME).ok_or(ProgramLoadError::Missing { what: "program", name: PROG_NAME })?.try_into().map_err(ProgramLoadError::Program)?;
        prog.load().map_err(ProgramLoadError::Program)?;
        let flows = ebpf.take_map(FLOWS_MAP).ok_or(ProgramLoadError::Missing { what: "map", name: FLOWS_MAP })?;
        let flows = HashMap::try_from(flows).map_err(|source| ProgramLoadError::MapType { name: FLOWS_MAP, source })?;
        let stats = ebpf.take_map(STATS_MAP).ok_or(ProgramLoadError::Missing { what: "map", name: STATS_MAP })?;
        let stats = PerCpuArray::try_from(stats).map_err(|source| ProgramLoadError::MapType { name: STATS_MAP, source })?;
        Ok(MarkerProgram { ebpf, flows, stats })
    }

    /// The classifier (for attaching).
    pub(crate) fn classifier(&mut self) -> Result<&mut SchedClassifier, ProgramLoadError> {
        self.ebpf.program_mut(PROG_NAME).ok_or(ProgramLoadError::Missing { what: "program", name: PROG_NAME })?.try_into().map_err(ProgramLoadError::Program)
    }

    /// Marks packets matching `key` with `label` (inserts or replaces the entry).
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
    pub fn counters(&self, slot: u32) -> Result<Counters, MapError> {
        let per_cpu = self.stats.get(&slot, 0)?;
        Ok(per_cpu.iter().fold(Counters::default(), |acc, s| Counters { seen: acc.seen.wrapping_add(s.seen), marked: acc.marked.wrapping_add(s.marked) }))
    }

    /// Counters of every slot, summed over CPUs and slots.
    pub fn total_counters(&self) -> Result<Counters, MapError> {
        let mut total = Counters::default();
        for slot in 0..STATS_SLOTS {
            let c = self.counters(slot)?;
            total.seen = total.seen.wrapping_add(c.seen);
            total.marked = total.marked.wrapping_add(c.marked);
        }
        Ok(total)
    }

    /// Runs the classifier `repeat` times on `frame` (`BPF_PROG_TEST_RUN`, no attach
    /// needed) and returns the result with the output frame.
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> std::io::Result<(TestRun, Vec<u8>)> {
        let prog = self.classifier().map_err(std::io::Error::other)?;
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat, ..TestRunOptions::default() };
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

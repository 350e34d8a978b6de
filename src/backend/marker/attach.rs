//! Attaching the marker to interfaces at egress: TCX when the kernel has it (≥ 6.6),
//! otherwise a filter on a clsact qdisc.
//!
//! Owns the crash story. A TCX link belongs to its file descriptor, so it disappears
//! with the process (even on `kill -9`). A clsact filter does not: it stays attached
//! after a crash. Our filter is recognised by its name (`flowd_mark` or `flowd_mark_eh`,
//! the program name aya writes into `TCA_BPF_NAME`); at start we remove any stale
//! filter of either name and at exit only our own link is detached. Foreign filters and other TCX programs on
//! the same interface are never touched. The clsact qdisc is created only when missing
//! and is left in place at exit (other users may share it).

use aya::programs::tc::{qdisc_add_clsact, qdisc_detach_program, NlOptions, TcAttachOptions};
use aya::programs::{LinkOrder, ProgramError, SchedClassifier, TcAttachType, TcError};

use super::abi::{PROG_EH_NAME, PROG_NAME};

/// How to attach the classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// TCX if the kernel supports it, else clsact.
    #[default]
    Auto,
    /// TCX only (kernel ≥ 6.6).
    Tcx,
    /// clsact qdisc + direct-action bpf filter (any kernel ≥ 4.5).
    Clsact,
}

impl AttachMode {
    /// Parses `auto`, `tcx` or `clsact`.
    pub fn parse(s: &str) -> Option<AttachMode> {
        match s {
            "auto" | "" => Some(AttachMode::Auto),
            "tcx" => Some(AttachMode::Tcx),
            "clsact" => Some(AttachMode::Clsact),
            _ => None,
        }
    }
}

/// How the classifier ended up attached to one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A TCX link (owned by our fd).
    Tcx,
    /// A filter on the clsact qdisc (survives a crash; removed at the next start).
    Clsact,
}

impl Attached {
    /// `tcx` or `clsact` (metrics label, logs).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Attached::Tcx => "tcx",
            Attached::Clsact => "clsact",
        }
    }
}

/// Why the classifier could not be attached to an interface.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// TCX attach failed (and no fallback was allowed or possible).
    #[error("TCX attach failed")]
    Tcx(#[source] ProgramError),
    /// The clsact qdisc could not be created.
    #[error("cannot add clsact qdisc")]
    Qdisc(#[source] TcError),
    /// A stale flowd filter could not be removed.
    #[error("cannot remove stale {PROG_NAME}/{PROG_EH_NAME} filter")]
    Stale(#[source] TcError),
    /// The clsact filter could not be added.
    #[error("cannot add clsact egress filter")]
    Filter(#[source] ProgramError),
}

/// Removes every egress filter named `flowd_mark` or `flowd_mark_eh` left on `iface`
/// by an earlier flowd that did not exit cleanly. Returns true if something was
/// removed. No qdisc or no such filter is not an error.
pub(crate) fn remove_stale_filter(iface: &str) -> Result<bool, TcError> {
    let mut removed = false;
    for name in [PROG_NAME, PROG_EH_NAME] {
        match qdisc_detach_program(iface, TcAttachType::Egress, name) {
            Ok(()) => removed = true,
            Err(TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            // No clsact qdisc on the interface: nothing can be attached there.
            Err(TcError::NetlinkError(e)) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => return Ok(removed),
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

fn attach_clsact(prog: &mut SchedClassifier, iface: &str) -> Result<aya::programs::tc::SchedClassifierLinkId, AttachError> {
    match qdisc_add_clsact(iface) {
        Ok(()) => log::info!("marker: added clsact qdisc on {iface}"),
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(AttachError::Qdisc(e)),
    }
    prog.attach_with_options(iface, TcAttachType::Egress, TcAttachOptions::Netlink(NlOptions::default())).map_err(AttachError::Filter)
}

/// Attaches `prog` at egress of `iface`. Stale flowd filters are removed first in every
/// mode, so a crashed clsact-mode flowd never leaves two markers behind.
pub(crate) fn attach(prog: &mut SchedClassifier, iface: &str, mode: AttachMode) -> Result<(aya::programs::tc::SchedClassifierLinkId, Attached), AttachError> {
    match remove_stale_filter(iface) {
        Ok(true) => log::warn!("marker: removed a stale flowd filter from {iface} (earlier flowd crashed?)"),
        Ok(false) => {}
        Err(e) => return Err(AttachError::Stale(e)),
    }
    match mode {
        AttachMode::Clsact => attach_clsact(prog, iface).map(|id| (id, Attached::Clsact)),
        AttachMode::Tcx | AttachMode::Auto => {
            let tcx = prog.attach_with_options(iface, TcAttachType::Egress, TcAttachOptions::TcxOrder(LinkOrder::default()));
            match tcx {
                Ok(id) => Ok((id, Attached::Tcx)),
                Err(e) if mode == AttachMode::Auto => {
                    log::info!("marker: TCX unavailable on {iface} ({e}); using a clsact filter");
                    attach_clsact(prog, iface).map(|id| (id, Attached::Clsact))
                }
                Err(e) => Err(AttachError::Tcx(e)),
            }
        }
    }
}

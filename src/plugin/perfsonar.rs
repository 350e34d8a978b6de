//! The perfsonar plugin (`PLUGIN='perfsonar'`): mark every egress IPv6 TCP packet of
//! this host that no announced flow claims with PERFSONAR_EXPERIMENT/PERFSONAR_ACTIVITY,
//! as flowd-go's plugin of that name does for perfSONAR test hosts.
//!
//! It announces no flows: flowd-go announced one flow with `::` addresses and port 0,
//! which turned into fireflies for a flow that does not exist. Here the plugin only
//! configures the eBPF marker: `Config::match_all` is set while this plugin is in PLUGIN,
//! and the `ebpf` backend (which `--check` requires next to it) writes the default mark
//! into its kernel map, resolving registry names as the registry changes. Announced flows
//! keep their own labels. So at run time the plugin has no fd and no timer; it only says
//! at start what it has the marker do.

use crate::config::Config;

/// The running plugin.
#[derive(Debug)]
pub(crate) struct Perfsonar;

impl Perfsonar {
    /// Logs what the marker will do; nothing can fail.
    pub(crate) fn new(cfg: &Config) -> Perfsonar {
        match cfg.match_all() {
            Some((exp, act)) => log::info!(
                "perfsonar: the ebpf backend marks every egress IPv6 TCP packet no announced flow claims with experiment {exp}, activity {act} ({})",
                cfg.marker.marking.name()
            ),
            None => log::warn!("perfsonar: PERFSONAR_EXPERIMENT/PERFSONAR_ACTIVITY are not set; nothing is marked"),
        }
        Perfsonar
    }
}

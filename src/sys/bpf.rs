//! What the eBPF marker needs from the system besides aya: random bytes (per-flow
//! entropy), and the interface/address enumeration used to pick interfaces and orient
//! flows. `BPF_PROG_TEST_RUN` and `RLIMIT_MEMLOCK` (raised on kernels before 5.11) are
//! aya's. Safe wrappers only: no `unsafe` here.
//!
//! No policy here: callers decide what a failure means.

#[cfg(feature = "ebpf")]
use std::collections::BTreeSet;
use std::io::{self, Read};
#[cfg(feature = "ebpf")]
use std::net::Ipv6Addr;

/// Fills `buf` with random bytes from the kernel's pool (`/dev/urandom`, which never
/// blocks once the pool is initialised at boot).
pub(crate) fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// True for an IPv6 address of global scope (not loopback, link-local, multicast,
/// unspecified or IPv4-mapped).
#[cfg(feature = "ebpf")]
pub(crate) fn is_global_v6(a: &Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || (s[0] & 0xffc0) == 0xfe80 || a.to_ipv4_mapped().is_some())
}

/// The names of the interfaces that carry at least one global IPv6 address, sorted.
#[cfg(feature = "ebpf")]
pub(crate) fn interfaces_with_global_v6() -> io::Result<Vec<String>> {
    let mut names = BTreeSet::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let v6 = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in6()).map(|s| s.ip());
        if v6.is_some_and(|ip| is_global_v6(&ip)) {
            names.insert(ifa.interface_name);
        }
    }
    Ok(names.into_iter().collect())
}

/// The index of interface `name` (`if_nametoindex`).
#[cfg(feature = "ebpf")]
pub(crate) fn if_index(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(io::Error::from)
}

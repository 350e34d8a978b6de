//! System calls for the eBPF marker that aya 0.14 does not expose: `BPF_PROG_TEST_RUN`
//! (tests and the benchmark), `RLIMIT_MEMLOCK`, `getrandom`, and the interface/address
//! enumeration used to pick interfaces and orient flows.
//!
//! No policy here: callers decide what a failure means.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (linux/bpf.h), zero-padded.
#[repr(C, align(8))]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (of the last run).
    pub retval: u32,
    /// Bytes of packet written to the output buffer.
    pub data_len: usize,
    /// Average run time in nanoseconds, as measured by the kernel.
    pub duration_ns: u32,
}

/// Runs a loaded program `repeat` times on the packet `data` (`BPF_PROG_TEST_RUN`) and
/// copies the resulting packet into `out` (give it room: `data.len()` or more).
pub fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8], out: &mut [u8], repeat: u32) -> io::Result<TestRun> {
    let too_big = |_| io::Error::new(io::ErrorKind::InvalidInput, "buffer larger than 4 GiB");
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        data_size_in: u32::try_from(data.len()).map_err(too_big)?,
        data_size_out: u32::try_from(out.len()).map_err(too_big)?,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a properly initialised `bpf_attr.test` prefix whose pointers refer
    // to `data` (read-only, `data_size_in` bytes) and `out` (writable, `data_size_out`
    // bytes); both outlive the call. The kernel writes only into `attr` and `out`.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &mut attr as *mut TestRunAttr, std::mem::size_of::<TestRunAttr>() as libc::c_uint) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TestRun { retval: attr.retval, data_len: attr.data_size_out as usize, duration_ns: attr.duration })
}

/// Raises `RLIMIT_MEMLOCK` to unlimited (needed for BPF maps on kernels before 5.11,
/// which charge them to locked memory; harmless on newer ones).
pub fn raise_memlock_limit() -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: `lim` is a valid, initialised rlimit that the call only reads.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fills `buf` with random bytes from the kernel (`getrandom(2)`, blocking only until the
/// pool is initialised at boot).
pub fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// True for an IPv6 address of global scope (not loopback, link-local, multicast,
/// unspecified or IPv4-mapped).
pub fn is_global_v6(a: &Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || (s[0] & 0xffc0) == 0xfe80 || a.to_ipv4_mapped().is_some())
}

/// The names of the interfaces that carry at least one global IPv6 address, sorted.
pub fn interfaces_with_global_v6() -> io::Result<Vec<String>> {
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
pub fn if_index(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(io::Error::from)
}

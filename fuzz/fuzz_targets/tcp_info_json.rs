//! Fuzz target: kernel `tcp_info` bytes (`wire::sock_diag::TcpInfo::from_bytes`, any
//! length) turned into the firefly `netlink` object (`wire::netlink_json`), which must
//! always be one valid JSON object.
#![no_main]

use flowd::wire::netlink_json::{usage, write_netlink};
use flowd::wire::sock_diag::TcpInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ti = TcpInfo::from_bytes(data);
    let mut out = String::new();
    write_netlink(&mut out, &ti);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(v.is_object(), "{out}");
    let _ = usage(&ti);
});

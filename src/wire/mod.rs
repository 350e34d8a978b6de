//! Pure parsers and encoders for everything flowd reads or writes on the wire.
//!
//! Contract (smoltcp `wire/`): functions here take bytes and return values or errors.
//! They never do I/O, never read the clock, never log, and never panic on any input.
//! Each file has byte-fixture unit tests.

pub mod api;
pub(crate) mod buf;
pub mod firefly;
pub mod http;
pub mod netlink_json;
pub mod np_api;
pub mod proc_net;
pub mod prom;
pub mod sock_diag;
pub mod stun;
pub mod time;

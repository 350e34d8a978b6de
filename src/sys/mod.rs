//! Thin, SAFETY-commented wrappers around the system calls flowd makes directly.
//!
//! Everything `unsafe` in flowd lives here (or in `backend/marker/abi.rs`). Each wrapper
//! turns a raw call into a `std::io::Result`; callers add context.

pub mod bpf;

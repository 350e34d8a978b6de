//! Build script: compiles the eBPF marker (`ebpf/flowd.bpf.c`) when feature `ebpf` is on.
//!
//! Runs `clang -O2 -g -target bpf` (BTF is required by aya for the BTF-defined maps) and
//! then `llvm-strip -g` when available (keeps `.BTF`, drops DWARF). The object lands in
//! `$OUT_DIR/flowd.bpf.o`, which `src/backend/marker` embeds. Without clang the build
//! fails with a message naming the fix. Override the tools with `CLANG`/`LLVM_STRIP`
//! and add flags with `BPF_CFLAGS`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    exit(1);
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=ebpf/flowd.bpf.c");
    println!("cargo:rerun-if-changed=ebpf/flowd.h");
    for v in ["CLANG", "LLVM_STRIP", "BPF_CFLAGS"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));
    let obj = out.join("flowd.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());

    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Iebpf"]);
    // <asm/types.h> lives in the multiarch directory on Debian/Ubuntu.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    for dir in [format!("/usr/include/{arch}-linux-gnu"), "/usr/include/x86_64-linux-gnu".into()] {
        if Path::new(&dir).is_dir() {
            cmd.arg(format!("-I{dir}"));
            break;
        }
    }
    if let Ok(extra) = env::var("BPF_CFLAGS") {
        cmd.args(extra.split_whitespace());
    }
    cmd.args(["-c", "ebpf/flowd.bpf.c", "-o"]).arg(&obj);
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "`{clang}` failed ({s}) compiling ebpf/flowd.bpf.c; it needs libbpf's headers \
             (Debian/Ubuntu: apt-get install libbpf-dev linux-libc-dev; RHEL: dnf install libbpf-devel kernel-headers). \
             Build without the marker with --no-default-features"
        )),
        Err(e) => fail(&format!(
            "cannot run `{clang}` ({e}): feature `ebpf` (on by default) needs clang to compile the eBPF marker. \
             Install clang and libbpf headers (apt-get install clang libbpf-dev / dnf install clang libbpf-devel), \
             set CLANG=/path/to/clang, or build without the marker with --no-default-features"
        )),
    }
    let strip = env::var("LLVM_STRIP").unwrap_or_else(|_| "llvm-strip".into());
    // Optional: shrink the object; the unstripped one works as well.
    if let Ok(s) = Command::new(&strip).arg("-g").arg(&obj).status() {
        if !s.success() {
            println!("cargo:warning={strip} -g failed ({s}); embedding the unstripped object");
        }
    }
}

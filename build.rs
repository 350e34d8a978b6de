//! Build script: provides the eBPF marker object (`$OUT_DIR/flowd.bpf.o`, embedded by
//! `src/backend/marker/abi.rs`) when feature `ebpf` is on (the default).
//!
//! - With clang on the machine, `ebpf/flowd.bpf.c` is compiled (`clang -O2 -g -target
//!   bpf`; BTF is required by aya for the BTF-defined maps) and `llvm-strip -g` drops
//!   DWARF when it is there (`.BTF` stays).
//! - Without clang (a machine with only a Rust toolchain), or when clang cannot compile
//!   it (no libbpf headers), the committed `ebpf/flowd.bpf.o` is used. `make ebpf`
//!   rebuilds that object and records the sha256 of its sources in
//!   `ebpf/flowd.bpf.o.sha256`; a test fails when the record does not match the sources.
//!   A warning is printed here too when the sources changed since.
//!
//! `CLANG`/`LLVM_STRIP` name the tools, `BPF_CFLAGS` adds flags, and `FLOWD_BPF_OBJECT`
//! = `committed` uses the committed object even when clang is there (`clang` requires
//! clang).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

const SOURCE: &str = "ebpf/flowd.bpf.c";
const COMMITTED: &str = "ebpf/flowd.bpf.o";
const RECORD: &str = "ebpf/flowd.bpf.o.sha256";

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    exit(1);
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for f in ["ebpf/flowd.bpf.c", "ebpf/flowd.h", COMMITTED, RECORD] {
        println!("cargo:rerun-if-changed={f}");
    }
    for v in ["CLANG", "LLVM_STRIP", "BPF_CFLAGS", "FLOWD_BPF_OBJECT"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));
    let obj = out.join("flowd.bpf.o");
    let choice = env::var("FLOWD_BPF_OBJECT").unwrap_or_default();
    let compiled = match choice.as_str() {
        "committed" => Err("FLOWD_BPF_OBJECT=committed".to_string()),
        "" | "clang" => compile(&obj),
        other => fail(&format!("FLOWD_BPF_OBJECT={other:?}: expected `committed` or `clang`")),
    };
    match compiled {
        Ok(()) => {}
        Err(why) if choice == "clang" => fail(&format!("{why} (FLOWD_BPF_OBJECT=clang)")),
        Err(why) => {
            if let Some(stale) = stale_sources() {
                println!("cargo:warning=using the committed {COMMITTED}, but {stale} changed since it was built; run `make ebpf` (needs clang)");
            }
            if why != "FLOWD_BPF_OBJECT=committed" {
                println!("cargo:warning=eBPF marker: {why}; embedding the committed {COMMITTED}");
            }
            if let Err(e) = std::fs::copy(COMMITTED, &obj) {
                fail(&format!(
                    "{why}, and the committed {COMMITTED} cannot be read ({e}). Install clang and libbpf headers \
                     (apt-get install clang libbpf-dev / dnf install clang libbpf-devel) or build without the marker \
                     with --no-default-features"
                ));
            }
        }
    }
}

/// Compiles the marker with clang into `obj`; `Err` says why it could not.
fn compile(obj: &Path) -> Result<(), String> {
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Iebpf"]);
    if let Ok(dir) = env::var("CARGO_MANIFEST_DIR") {
        // Same bytes whatever the checkout's path (no absolute path in .BTF.ext).
        cmd.arg(format!("-fdebug-prefix-map={dir}=."));
    }
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
    cmd.args(["-c", SOURCE, "-o"]).arg(obj);
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(format!("`{clang}` failed ({s}) compiling {SOURCE} (libbpf headers missing? apt-get install libbpf-dev)")),
        Err(e) => return Err(format!("cannot run `{clang}` ({e})")),
    }
    let strip = env::var("LLVM_STRIP").unwrap_or_else(|_| "llvm-strip".into());
    // Optional: shrink the object; the unstripped one works as well.
    if let Ok(s) = Command::new(&strip).arg("-g").arg(obj).status() {
        if !s.success() {
            println!("cargo:warning={strip} -g failed ({s}); embedding the unstripped object");
        }
    }
    Ok(())
}

/// The first source listed in the record whose sha256 (by `sha256sum`) differs from
/// the recorded one; `None` when all match or the hashes cannot be computed here.
fn stale_sources() -> Option<String> {
    let record = std::fs::read_to_string(RECORD).ok()?;
    for line in record.lines() {
        let (sum, file) = line.split_once("  ")?;
        if file == COMMITTED {
            continue;
        }
        let out = Command::new("sha256sum").arg(file).output().ok()?;
        let now = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || now.split_whitespace().next() != Some(sum) {
            return Some(file.to_string());
        }
    }
    None
}

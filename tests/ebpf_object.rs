//! The committed eBPF object `ebpf/flowd.bpf.o` (embedded by builds without clang) is not
//! stale: `ebpf/flowd.bpf.o.sha256` lists every eBPF source (`ebpf/*.c`, `ebpf/*.h`) and
//! the object, each with the sha256 it has now. `make ebpf` rewrites both files.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn sha256(file: &str) -> String {
    let out = Command::new("sha256sum").arg(file).current_dir(ROOT).output().expect("sha256sum (coreutils)");
    assert!(out.status.success(), "sha256sum {file}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// (file, recorded sha256) pairs of the record.
fn record() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ebpf/flowd.bpf.o.sha256")).expect("ebpf/flowd.bpf.o.sha256 (make ebpf writes it)");
    text.lines()
        .map(|l| {
            let (sum, file) = l.split_once("  ").unwrap_or_else(|| panic!("not a sha256sum line: {l:?}"));
            (file.to_string(), sum.to_string())
        })
        .collect()
}

/// `ebpf/*.c` and `ebpf/*.h` as they are in the tree.
fn sources() -> BTreeSet<String> {
    std::fs::read_dir(Path::new(ROOT).join("ebpf"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".c") || n.ends_with(".h"))
        .map(|n| format!("ebpf/{n}"))
        .collect()
}

#[test]
fn committed_object_was_built_from_the_current_sources() {
    let rec = record();
    let listed: BTreeSet<String> = rec.iter().map(|(f, _)| f.clone()).filter(|f| f != "ebpf/flowd.bpf.o").collect();
    assert_eq!(listed, sources(), "ebpf/flowd.bpf.o.sha256 must list exactly the eBPF sources: run `make ebpf` and commit ebpf/flowd.bpf.o*");
    assert!(rec.iter().any(|(f, _)| f == "ebpf/flowd.bpf.o"), "the record must list ebpf/flowd.bpf.o itself");
    for (file, sum) in &rec {
        assert_eq!(
            &sha256(file),
            sum,
            "{file} changed since ebpf/flowd.bpf.o was built: run `make ebpf` (needs clang and libbpf headers) and commit ebpf/flowd.bpf.o*"
        );
    }
}

#[test]
fn committed_object_is_a_bpf_elf_with_btf() {
    let bytes = std::fs::read(Path::new(ROOT).join("ebpf/flowd.bpf.o")).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), 247, "e_machine must be EM_BPF (247)");
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(b".BTF\0"), "aya needs the .BTF section (clang -g)");
    assert!(has(b"flowd_mark"), "the classifier's section/name is missing");
}

//! The module graph stays a DAG and `src/wire/` stays pure: read from the sources, so a
//! new `use crate::…` that closes a cycle fails here with the cycle named.
//!
//! Nodes are the top-level modules of `src/` (`backend`, `config`, `wire`, …); an edge
//! `a → b` is any `crate::b` path in a non-test part of `a`'s files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ").or_else(|| text.find("#[cfg(test)]\n#[path")) {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Top-level modules named after `crate::` in `code` (paths and `crate::{a, b}` groups).
fn uses(code: &str, tops: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + 7..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end].split(',').map(|s| s.trim().split("::").next().unwrap_or("")).collect()
        } else {
            vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")]
        };
        out.extend(names.into_iter().filter(|n| tops.contains(*n)).map(String::from));
    }
    out
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    /// Per file of `wire/`: the top-level modules it uses.
    wire: Vec<(String, BTreeSet<String>)>,
}

fn graph() -> Graph {
    let tops: BTreeSet<String> = std::fs::read_dir(SRC)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".rs").to_string())
        .filter(|n| n != "lib" && n != "main")
        .collect();
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wire = Vec::new();
    for f in files {
        let rel = f.strip_prefix(SRC).unwrap().to_string_lossy().into_owned();
        let top = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
        let name = f.file_name().unwrap().to_string_lossy();
        if !tops.contains(&top) || name.ends_with("_tests.rs") || name == "tests.rs" {
            continue;
        }
        let mut used = uses(&code(&std::fs::read_to_string(&f).unwrap()), &tops);
        used.remove(&top);
        if top == "wire" {
            wire.push((rel.clone(), used.clone()));
        }
        edges.entry(top).or_default().extend(used);
    }
    Graph { edges, wire }
}

/// A cycle through `start`, if there is one (depth-first search).
fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn dfs(edges: &BTreeMap<String, BTreeSet<String>>, node: &str, start: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for next in edges.get(node).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if dfs(edges, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    dfs(edges, start, start, &mut path, &mut BTreeSet::new()).then(|| {
        path.push(start.to_string());
        path
    })
}

#[test]
fn top_level_modules_form_no_cycle() {
    let g = graph();
    let cycles: Vec<String> = g.edges.keys().filter_map(|m| cycle_from(&g.edges, m)).map(|c| c.join(" -> ")).collect();
    assert!(cycles.is_empty(), "module cycles (break them by moving the shared item down):\n{}", cycles.join("\n"));
}

#[test]
fn wire_uses_only_wire_and_flow() {
    let g = graph();
    let allowed: BTreeSet<String> = ["flow".to_string()].into();
    let bad: Vec<String> = g.wire.iter().filter(|(_, used)| !used.is_subset(&allowed)).map(|(f, used)| format!("src/{f} uses {used:?}")).collect();
    assert!(bad.is_empty(), "src/wire/ may import only wire, flow and std:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_a_planted_cycle() {
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    e.entry("a".into()).or_default().insert("b".into());
    e.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle_from(&e, "a"), None);
    e.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle_from(&e, "a").unwrap().join(" -> "), "a -> b -> c -> a");
    let tops: BTreeSet<String> = ["config".to_string(), "wire".to_string()].into();
    assert_eq!(uses("use crate::{config::X, wire};\nlet a = crate::config::y;", &tops), tops);
}

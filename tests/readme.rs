//! The README opens with the two commands a newcomer runs, stays short, and every local
//! link in README.md, ARCHITECTURE.md and docs/*.md points at a file (and heading) that
//! exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The commands of the first fenced code block.
fn first_block(md: &str) -> Vec<String> {
    let mut inside = false;
    let mut out = Vec::new();
    for l in md.lines() {
        if l.starts_with("```") {
            if inside {
                return out;
            }
            inside = true;
            continue;
        }
        if inside && !l.trim().is_empty() && !l.trim_start().starts_with('#') {
            out.push(l.trim().to_string());
        }
    }
    panic!("no fenced code block");
}

#[test]
fn readme_opens_with_the_two_commands_and_stays_short() {
    let md = read("README.md");
    assert_eq!(first_block(&md), ["cargo run --release -- -f -c etc/flowd.cfg", "make test"]);
    let n = md.lines().count();
    assert!(n <= 300, "README.md has {n} lines; the rest belongs in docs/");
}

/// GitHub's anchor of a heading: lower case, spaces to '-', punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(md: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for l in md.lines() {
        if l.starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && l.starts_with('#') {
            let s = slug(l.trim_start_matches('#'));
            // Repeated headings get -1, -2, … as on GitHub.
            let mut k = s.clone();
            let mut i = 0;
            while out.contains(&k) {
                i += 1;
                k = format!("{s}-{i}");
            }
            out.insert(k);
        }
    }
    out
}

/// `(target, line)` of every `](target)` link outside code blocks.
fn links(md: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, l) in md.lines().enumerate() {
        if l.starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            continue;
        }
        let mut rest = l;
        while let Some(i) = rest.find("](") {
            let tail = &rest[i + 2..];
            let Some(end) = tail.find(')') else { break };
            out.push((tail[..end].to_string(), n + 1));
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn every_local_link_in_the_docs_resolves() {
    let mut pages: Vec<PathBuf> = vec!["README.md".into(), "ARCHITECTURE.md".into()];
    for e in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p.strip_prefix(ROOT).unwrap().to_path_buf());
        }
    }
    let mut bad = Vec::new();
    for page in &pages {
        let md = read(page.to_str().unwrap());
        for (target, line) in links(&md) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').map_or((target.as_str(), None), |(f, a)| (f, Some(a)));
            let path = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            let full = Path::new(ROOT).join(&path);
            if !full.exists() {
                bad.push(format!("{}:{line}: {target}: no such file", page.display()));
                continue;
            }
            if let Some(a) = anchor.filter(|_| full.extension().is_some_and(|x| x == "md")) {
                if !anchors(&std::fs::read_to_string(&full).unwrap()).contains(a) {
                    bad.push(format!("{}:{line}: {target}: no heading with anchor #{a}", page.display()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

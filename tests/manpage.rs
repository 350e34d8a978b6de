//! The man page `etc/flowd.8` agrees with the code: its OPTIONS are the options of
//! `flowd --help` (`cli::USAGE`), its CONFIGURATION lists exactly the keys of the key
//! table (`config::keys`), and its EXIT STATUS the codes the usage text names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test helpers fail the test on error")]

use std::collections::BTreeSet;

use flowd::cli::USAGE;
use flowd::config::keys;

fn page() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/flowd.8")).unwrap()
}

/// Roff without font escapes and with `\-` as `-`.
fn plain(line: &str) -> String {
    let mut s = line.replace("\\-", "-");
    for f in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        s = s.replace(f, "");
    }
    s
}

/// The lines of section `name` (from `.SH name` to the next `.SH`).
fn section(page: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for l in page.lines() {
        if let Some(h) = l.strip_prefix(".SH ") {
            inside = h.trim() == name;
            continue;
        }
        if inside {
            out.push(l.to_string());
        }
    }
    assert!(!out.is_empty(), "no section {name}");
    out
}

/// The tag lines of `.TP` items (the line after each `.TP`).
fn tags(lines: &[String]) -> Vec<String> {
    lines.windows(2).filter(|w| w[0] == ".TP").map(|w| plain(&w[1])).collect()
}

/// Every `-x` / `--long` token in `text` (values such as `--config=` stop at `=`).
fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '=' || c == '[' || c == ']')
        .filter(|w| w.starts_with('-') && w.len() > 1 && w.chars().nth(1).is_some_and(|c| c.is_ascii_alphabetic() || c == '-'))
        .map(str::to_string)
        .collect()
}

#[test]
fn options_match_usage() {
    let usage_opts: String = USAGE
        .split("options:")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .map(|l| l.split("  ").find(|p| !p.is_empty()).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let from_usage = flags(&usage_opts);
    let page = page();
    let from_page: BTreeSet<String> = tags(&section(&page, "OPTIONS")).iter().flat_map(|t| flags(t)).collect();
    assert_eq!(from_page, from_usage, "man page OPTIONS vs flowd --help");
    for f in ["-h", "--help", "--version", "-c", "--config", "-d", "--debug", "-f", "--fg", "--check"] {
        assert!(from_usage.contains(f), "{f} missing from USAGE");
    }
    // The synopsis too.
    let synopsis = plain(&section(&page, "SYNOPSIS").join(" "));
    let usage_line = USAGE.lines().next().unwrap();
    assert_eq!(flags(&synopsis), flags(usage_line), "SYNOPSIS vs the usage line");
    // And the subcommands.
    let commands = tags(&section(&page, "COMMANDS"));
    for sub in ["label encode", "label decode", "stun", "flows", "explain", "config convert"] {
        assert!(USAGE.contains(sub), "{sub} not in USAGE");
        assert!(commands.iter().any(|t| t.replace('"', "").contains(sub)), "{sub} not in COMMANDS");
    }
}

#[test]
fn configuration_lists_every_key_and_nothing_else() {
    let page = page();
    let documented: BTreeSet<String> =
        tags(&section(&page, "CONFIGURATION")).into_iter().filter_map(|t| t.strip_prefix(".B ").map(|k| k.trim().to_string())).collect();
    let known: BTreeSet<String> = keys::names().map(str::to_string).collect();
    let missing: Vec<_> = known.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&known).collect();
    assert!(missing.is_empty(), "keys missing from the man page: {missing:?}");
    assert!(stale.is_empty(), "man page documents keys flowd does not know: {stale:?}");
}

#[test]
fn exit_status_and_signals() {
    let page = page();
    let codes: Vec<String> = tags(&section(&page, "EXIT STATUS")).into_iter().map(|t| t.trim_start_matches(".B ").to_string()).collect();
    assert_eq!(codes, ["0", "1", "2"]);
    assert!(USAGE.contains("exit status: 0 ok, 1 runtime/startup error, 2 invalid configuration or usage."));
    let signals = tags(&section(&page, "SIGNALS")).join(" ");
    for s in ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"] {
        assert!(signals.contains(s), "{s} not in SIGNALS");
        assert!(USAGE.contains(s), "{s} not in USAGE");
    }
    for f in ["/etc/flowd/flowd.cfg", "/usr/sbin/flowd", "/var/run/flowd", "/var/run/flowd.pid"] {
        assert!(section(&page, "FILES").iter().any(|l| plain(l).contains(f)), "{f} not in FILES");
    }
}

#[test]
fn page_renders_without_warnings() {
    if !crate::systemd::have("groff") {
        crate::util::skip("groff not installed (apt-get install man-db)");
        return;
    }
    let (ok, out, err) =
        crate::systemd::run_cmd(std::process::Command::new("groff").args(["-man", "-ww", "-z"]).arg(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/flowd.8")));
    assert!(ok && out.is_empty() && err.is_empty(), "groff: {out}{err}");
}

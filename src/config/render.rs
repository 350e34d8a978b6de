//! The files generated from the key table (`keys::TABLE`): the shipped `etc/flowd.cfg`
//! (and its copy in the fuzz corpus), the CONFIGURATION section of the man page
//! `etc/flowd.8`, and `docs/configuration.md`.
//!
//! Tests compare the committed files with these renderings byte for byte;
//! `make gen-config` (`examples/gen_config.rs`) writes them.

use std::path::Path;

use super::keys::{Component, Key, TABLE};

/// The command that rewrites the generated files.
#[cfg(test)]
pub(crate) const REGENERATE: &str = "make gen-config";

/// Width of flowd.cfg (comments are wrapped to it).
const WIDTH: usize = 88;

const CFG_HEADER: &str = "\
# flowd configuration (/etc/flowd/flowd.cfg)
#
# Same syntax as the Python flowd: KEY='value', KEY=\"value\", integers, True/False,
# tuples or lists of strings, '#' comments. Every key is optional; each is shown below
# with its default, or with an example and the default named in its comment.
# Check a file with:           flowd --check -c /etc/flowd/flowd.cfg
# Reload a running flowd with: systemctl reload flowd   (SIGHUP)
# Every key is described in man flowd (CONFIGURATION).
";

const MAN_INTRO: &str = "\
The file uses the Python flowd's syntax:
.IB KEY = 'value'\\fR,\\fP
.IB KEY = \\(dqvalue\\(dq\\fR,\\fP
integers (octal as
.BR 0o660 ),
.BR True / False ,
tuples or lists of these, and
.B #
comments. Every key is optional; the default is given with each key. Unknown keys are
reported as warnings and ignored, so existing files keep loading. The shipped
.I /etc/flowd/flowd.cfg
lists every key with its default, commented out. A reload (SIGHUP) restarts only the
plugins and backends whose settings changed.
";

const MD_INTRO: &str = "\
# Configuration keys

<!-- Generated from src/config/keys.rs by `make gen-config`: edit the key table, not this file. -->

`/etc/flowd/flowd.cfg` uses the Python flowd's syntax: `KEY='value'`, `KEY=\"value\"`,
integers (`0o660` too), `True`/`False`, tuples and lists (`('192.168.0.0/16',)`, also over
several lines), `#` comments. Existing Python flowd configs load unchanged. Every key is
optional. All problems are reported at once with line numbers (exit status 2); unknown
keys are warnings. The shipped [`etc/flowd.cfg`](../etc/flowd.cfg) lists every key with
its default, and `man flowd` (CONFIGURATION) describes the same keys. A reload (SIGHUP)
restarts only the plugins and backends whose settings changed.
";

/// Roff text: backslashes escaped, `literals` in bold, and a leading `.` or `'` made
/// literal (one line of text per call).
fn roff(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.replace('\\', "\\e").split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("\\fB{part}\\fR"));
        } else {
            out.push_str(part);
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// Markdown table-cell text (`|` escaped; backticks are already code spans).
fn md(s: &str) -> String {
    s.replace('|', "\\|")
}

/// `text` (with markup) as `# ` comment lines of at most `WIDTH` columns, never breaking
/// a `literal` (a longer word or literal stays whole).
fn comment(text: &str, out: &mut String) {
    const KEEP: char = '\u{a0}';
    let joined: String =
        text.split('`').enumerate().map(|(i, part)| if i % 2 == 1 { part.replace(' ', &KEEP.to_string()) } else { part.to_string() }).collect();
    let mut line = String::from("#");
    for word in joined.split(' ').filter(|w| !w.is_empty()).map(|w| w.replace(KEEP, " ")) {
        if line.len() > 1 && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(&word);
    }
    if line.len() > 1 {
        out.push_str(&line);
        out.push('\n');
    }
}

/// The default as the docs state it, with `wrap` around literals.
fn default_text(k: &Key, wrap: fn(&str) -> String) -> String {
    match (k.default, k.means) {
        (None, _) => "none".into(),
        (Some(d), "") => wrap(d),
        (Some(d), means) => format!("{} ({means})", wrap(d)),
    }
}

/// Sentences describing the key: doc, long doc, aliases.
fn description(k: &Key) -> String {
    let mut s = String::from(k.doc);
    if !k.long.is_empty() {
        s.push(' ');
        s.push_str(k.long);
    }
    for a in k.aliases {
        s.push_str(&format!(" `{a}` is an alias."));
    }
    s
}

/// The keys of each component, in table order.
fn sections() -> impl Iterator<Item = (Component, Vec<&'static Key>)> {
    Component::ALL.into_iter().map(|c| (c, TABLE.iter().filter(|k| k.component == c).collect()))
}

/// The shipped `etc/flowd.cfg`: every key, commented out (PLUGIN and BACKEND active),
/// with its doc and default, grouped by component.
pub(crate) fn cfg() -> String {
    let mut out = String::from(CFG_HEADER);
    for (c, keys) in sections() {
        let title = format!("## {} ", c.title());
        out.push_str(&format!("\n{title}{}\n", "-".repeat(WIDTH.saturating_sub(title.len()).max(3))));
        for k in keys {
            let mut text = description(k);
            let shown = k.shown_value().unwrap_or("''");
            if Some(shown) != k.default || !k.means.is_empty() {
                text.push_str(&format!(" Default: {}.", default_text(k, |d| d.to_string())));
            }
            comment(&text, &mut out);
            let hash = if k.active { "" } else { "# " };
            out.push_str(&format!("{hash}{}={shown}\n", k.name));
        }
    }
    out
}

/// The CONFIGURATION section of the man page, from its `.SH` line up to the next `.SH`.
pub(crate) fn man_section() -> String {
    let mut out = String::from(".SH CONFIGURATION\n");
    out.push_str(".\\\" Generated from src/config/keys.rs by `make gen-config`: edit the key table, not this section.\n");
    out.push_str(MAN_INTRO);
    for (c, keys) in sections() {
        out.push_str(&format!(".SS {}\n", c.title()));
        for k in keys {
            out.push_str(&format!(".TP\n.B {}\n", k.name));
            out.push_str(&roff(k.doc));
            out.push('\n');
            if !k.long.is_empty() {
                out.push_str(&roff(k.long));
                out.push('\n');
            }
            let example = k.example.map(|x| format!("; e.g. {}", roff(&format!("`{x}`")))).unwrap_or_default();
            out.push_str(&format!("Value: {}; default {}{example}.\n", roff(&k.parse.type_text()), default_text(k, |d| roff(&format!("`{d}`")))));
            for a in k.aliases {
                out.push_str(&format!(".TP\n.B {a}\nAlias of\n.BR {} .\n", k.name));
            }
        }
    }
    out
}

/// `page` with its CONFIGURATION section replaced by [`man_section`]; `None` when the
/// page has no such section.
pub(crate) fn splice_man(page: &str) -> Option<String> {
    let start = page.find("\n.SH CONFIGURATION\n")? + 1;
    let end = page[start + 1..].find("\n.SH ").map_or(page.len(), |i| start + 1 + i + 1);
    Some(format!("{}{}{}", &page[..start], man_section(), &page[end..]))
}

/// `docs/configuration.md`: a short introduction and one table row per key.
pub(crate) fn markdown() -> String {
    let mut out = String::from(MD_INTRO);
    out.push_str("\n| key | type | default | component | description |\n|---|---|---|---|---|\n");
    for k in TABLE {
        let mut name = format!("`{}`", k.name);
        for a in k.aliases {
            name.push_str(&format!(" (alias `{a}`)"));
        }
        let mut desc = k.doc.to_string();
        if !k.long.is_empty() {
            desc = format!("{desc} {}", k.long);
        }
        if let Some(x) = k.example {
            desc = format!("{desc} Example: `{x}`.");
        }
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            md(&k.parse.type_text()),
            md(&default_text(k, |d| format!("`{d}`"))),
            k.component.name(),
            md(&desc)
        ));
    }
    out
}

/// Every generated file: (path relative to the source tree, expected content). The man
/// page's other sections are read from `root`.
pub fn generated(root: &Path) -> std::io::Result<Vec<(&'static str, String)>> {
    let page = std::fs::read_to_string(root.join("etc/flowd.8"))?;
    let page = splice_man(&page).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "etc/flowd.8 has no CONFIGURATION section"))?;
    Ok(vec![("etc/flowd.cfg", cfg()), ("fuzz/corpus/config_text/etc-flowd.cfg", cfg()), ("etc/flowd.8", page), ("docs/configuration.md", markdown())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_generated_files_are_up_to_date() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (path, want) in generated(root).unwrap() {
            let have = std::fs::read_to_string(root.join(path)).unwrap_or_default();
            if have != want {
                let line = have.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(have.lines().count().min(want.lines().count()));
                panic!(
                    "{path} is out of date with the key table (src/config/keys.rs), first difference at line {}:\n  have: {:?}\n  want: {:?}\nrun `{REGENERATE}` to rewrite it",
                    line + 1,
                    have.lines().nth(line).unwrap_or(""),
                    want.lines().nth(line).unwrap_or("")
                );
            }
        }
    }

    #[test]
    fn test_cfg_lines_fit_and_every_key_has_its_line() {
        let text = cfg();
        for l in text.lines() {
            assert!(l.len() <= WIDTH, "longer than {WIDTH} columns: {l}");
        }
        for k in TABLE {
            let line = format!("{}{}=", if k.active { "" } else { "# " }, k.name);
            assert_eq!(text.lines().filter(|l| l.starts_with(&line)).count(), 1, "{}", k.name);
        }
    }

    #[test]
    fn test_markup() {
        assert_eq!(roff("a `b` c\\d"), "a \\fBb\\fR c\\ed");
        assert_eq!(roff("'x' is"), "\\&'x' is");
        assert_eq!(md("`a|b` c"), "`a\\|b` c");
        let mut out = String::new();
        comment(&"word ".repeat(40), &mut out);
        assert!(out.lines().all(|l| l.len() <= WIDTH && l.starts_with("# word")), "{out}");
        assert_eq!(out.split_whitespace().filter(|w| *w == "word").count(), 40);
        let mut out = String::new();
        comment(&format!("{} `a b c`", "w".repeat(WIDTH - 6)), &mut out);
        assert_eq!(out, format!("# {}\n# a b c\n", "w".repeat(WIDTH - 6)), "a literal is not broken and loses its backticks");
    }

    #[test]
    fn test_splice_replaces_only_the_configuration_section() {
        let page = ".TH X 8\n.SH OPTIONS\nopt\n.SH CONFIGURATION\nold\n.SH SIGNALS\nsig\n";
        let out = splice_man(page).unwrap();
        assert!(out.starts_with(".TH X 8\n.SH OPTIONS\nopt\n.SH CONFIGURATION\n"));
        assert!(out.ends_with(".SH SIGNALS\nsig\n"));
        assert!(!out.contains("\nold\n"));
        assert_eq!(splice_man(&out).as_deref(), Some(out.as_str()), "splicing is idempotent");
        assert_eq!(splice_man(".SH OPTIONS\n"), None);
    }
}

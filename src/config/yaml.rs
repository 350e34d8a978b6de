//! YAML (and JSON, which is YAML) text → a small tree whose every node knows its line.
//!
//! Owns reading flowd-go's config files: `saphyr-parser`'s event stream (a YAML 1.2
//! parser that reports where each event starts) is folded into [`Node`]s, keeping every
//! mapping key's line so that each finding can name it. Scalars stay text (with whether
//! they were quoted): their type is decided by whoever reads them, as Go's decoder does
//! for the field it fills. Anchors and aliases are resolved by copying (bounded, so an
//! alias bomb cannot exhaust memory); tags are ignored; only the first document is read.
//! Pure: no I/O, no panics on any input.

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Most nodes a document may expand to (aliases copy their anchor's nodes).
const MAX_NODES: usize = 100_000;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;

/// One node and the line (1-based) where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    /// Where the node starts.
    pub line: usize,
    /// What it is.
    pub kind: Kind,
}

/// The three YAML node kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A mapping, its entries in file order.
    Map(Vec<MapEntry>),
    /// A sequence.
    Seq(Vec<Node>),
    /// A scalar: its text and whether it was quoted (a quoted scalar is always a string).
    Scalar {
        /// The scalar's value as text (escapes resolved).
        text: String,
        /// Written in quotes (or as a block scalar).
        quoted: bool,
    },
}

/// One `key: value` pair of a mapping.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MapEntry {
    /// The key as text (a non-scalar key is written as `?`).
    pub key: String,
    /// The key's line.
    pub line: usize,
    /// The value.
    pub value: Node,
}

/// A YAML syntax error at a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

impl Node {
    /// The entries when this is a mapping.
    pub(crate) fn entries(&self) -> Option<&[MapEntry]> {
        match &self.kind {
            Kind::Map(e) => Some(e),
            _ => None,
        }
    }

    /// The entry `key` (the last one when it is repeated, as Go's decoder keeps it).
    pub(crate) fn get(&self, key: &str) -> Option<&MapEntry> {
        self.entries()?.iter().rev().find(|e| e.key == key)
    }

    /// True for a plain `null`, `~` or empty scalar.
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, quoted: false } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A scalar's text (quoted or not); `None` for mappings and sequences.
    pub(crate) fn text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A boolean as YAML 1.2 (and Go) write it: `true`/`false` in any of their three cases.
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match &self.kind {
            Kind::Scalar { text, quoted: false } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// An integer: decimal (with sign and `_` separators), `0x` hex or `0o` octal.
    pub(crate) fn as_int(&self) -> Option<i64> {
        let Kind::Scalar { text, quoted: false } = &self.kind else { return None };
        let t = text.replace('_', "");
        let (neg, digits) = match t.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, t.strip_prefix('+').unwrap_or(&t)),
        };
        let n = if let Some(h) = digits.strip_prefix("0x") {
            i64::from_str_radix(h, 16).ok()?
        } else if let Some(o) = digits.strip_prefix("0o") {
            i64::from_str_radix(o, 8).ok()?
        } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().ok()?
        } else {
            return None;
        };
        Some(if neg { -n } else { n })
    }

    /// What the node is, for messages: `a mapping`, `a list`, or the scalar quoted.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Map(_) => "a mapping".into(),
            Kind::Seq(_) => "a list".into(),
            Kind::Scalar { text, .. } => format!("{text:?}"),
        }
    }
}

/// What is being built: open collections, innermost last.
enum Open {
    Map { line: usize, anchor: usize, entries: Vec<MapEntry>, key: Option<(String, usize)> },
    Seq { line: usize, anchor: usize, items: Vec<Node> },
}

/// Parses `text` and returns its first document's root node (`None` for an empty file).
pub(crate) fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: Vec<(usize, Node)> = Vec::new();
    let mut nodes = 0usize;
    let mut root: Option<Node> = None;
    while let Some(ev) = parser.next_event() {
        let (ev, span) = ev.map_err(|e| YamlError { line: e.marker().line(), msg: e.info().to_string() })?;
        let line = span.start.line();
        let done = match ev {
            Event::StreamEnd | Event::DocumentEnd => root.is_some() || matches!(ev, Event::StreamEnd),
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => false,
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(YamlError { line, msg: format!("nested deeper than {MAX_DEPTH} levels") });
                }
                stack.push(match ev {
                    Event::MappingStart(..) => Open::Map { line, anchor, entries: Vec::new(), key: None },
                    _ => Open::Seq { line, anchor, items: Vec::new() },
                });
                false
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Open::Map { line, anchor, entries, .. }) => (Node { line, kind: Kind::Map(entries) }, anchor),
                    Some(Open::Seq { line, anchor, items }) => (Node { line, kind: Kind::Seq(items) }, anchor),
                    None => return Err(YamlError { line, msg: "unbalanced collection end".into() }),
                };
                if anchor != 0 {
                    anchors.push((anchor, node.clone()));
                }
                put(&mut stack, &mut root, node, line)
            }
            Event::Scalar(text, style, anchor, _) => {
                let quoted = !matches!(style, ScalarStyle::Plain);
                let node = Node { line, kind: Kind::Scalar { text: text.into_owned(), quoted } };
                if anchor != 0 {
                    anchors.push((anchor, node.clone()));
                }
                put(&mut stack, &mut root, node, line)
            }
            Event::Alias(id) => {
                let Some((_, node)) = anchors.iter().rev().find(|(a, _)| *a == id) else {
                    return Err(YamlError { line, msg: "alias to an unknown anchor".into() });
                };
                nodes += count(node);
                if nodes > MAX_NODES {
                    return Err(YamlError { line, msg: format!("more than {MAX_NODES} nodes once aliases are expanded") });
                }
                let node = Node { line, ..node.clone() };
                put(&mut stack, &mut root, node, line)
            }
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(YamlError { line, msg: format!("more than {MAX_NODES} nodes") });
        }
        if done {
            break;
        }
    }
    Ok(root)
}

fn count(n: &Node) -> usize {
    match &n.kind {
        Kind::Map(e) => 1 + e.iter().map(|e| count(&e.value)).sum::<usize>(),
        Kind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Kind::Scalar { .. } => 1,
    }
}

/// Places a finished node into the innermost open collection (or as the root). Returns
/// true when the root (the whole document) is complete.
fn put(stack: &mut [Open], root: &mut Option<Node>, node: Node, line: usize) -> bool {
    match stack.last_mut() {
        None => {
            *root = Some(node);
            true
        }
        Some(Open::Seq { items, .. }) => {
            items.push(node);
            false
        }
        Some(Open::Map { entries, key, .. }) => {
            match key.take() {
                None => {
                    let text = match &node.kind {
                        Kind::Scalar { text, .. } => text.clone(),
                        _ => "?".to_string(),
                    };
                    *key = Some((text, line.min(node.line)));
                }
                Some((k, kline)) => entries.push(MapEntry { key: k, line: kline, value: node }),
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        parse(text).unwrap().unwrap()
    }

    #[test]
    fn test_block_and_flow_mappings_keep_key_lines() {
        let n = root("# comment\nplugins:\n  perfsonar: {activityId: 2, experimentId: 1}\nbackends:\n  marker:\n    targetInterfaces: [eth0]\n");
        let plugins = n.get("plugins").unwrap();
        assert_eq!(plugins.line, 2);
        let ps = plugins.value.get("perfsonar").unwrap();
        assert_eq!((ps.line, ps.value.get("experimentId").unwrap().line), (3, 3));
        assert_eq!(ps.value.get("activityId").unwrap().value.as_int(), Some(2));
        let ti = n.get("backends").unwrap().value.get("marker").unwrap().value.get("targetInterfaces").unwrap();
        assert_eq!(ti.line, 6);
        assert!(matches!(&ti.value.kind, Kind::Seq(v) if v.len() == 1 && v[0].text() == Some("eth0")));
    }

    #[test]
    fn test_json_is_read_as_yaml() {
        let n = root("{\n  \"plugins\": {\"namedPipe\": {}},\n  \"backends\": {\"firefly\": {\"destinationPort\": 10515}}\n}\n");
        let e = n.get("backends").unwrap().value.get("firefly").unwrap().value.get("destinationPort").unwrap();
        assert_eq!((e.line, e.value.as_int()), (3, Some(10515)));
        assert!(n.get("plugins").unwrap().value.get("namedPipe").unwrap().value.entries().unwrap().is_empty());
    }

    #[test]
    fn test_scalars_keep_their_text_and_quoting() {
        let n = root("a: 0x1f\nb: '12'\nc: ~\nd: True\ne: -7\nf:\ng: yes\n");
        let v = |k: &str| n.get(k).unwrap().value.clone();
        assert_eq!(v("a").as_int(), Some(31));
        assert_eq!((v("b").as_int(), v("b").text()), (None, Some("12")), "quoted: a string");
        assert!(v("c").is_null() && v("f").is_null());
        assert_eq!(v("d").as_bool(), Some(true));
        assert_eq!(v("e").as_int(), Some(-7));
        assert_eq!(v("g").as_bool(), None, "YAML 1.1 yes/no are strings, as in YAML 1.2");
    }

    #[test]
    fn test_syntax_errors_name_their_line() {
        let e = parse("plugins:\n  namedPipe: {}\n backends: [\n").unwrap_err();
        assert!(e.line >= 3, "{e:?}");
        let e = parse("a: 1\nb: \"unterminated\n").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1 && !e.msg.is_empty());
    }

    #[test]
    fn test_aliases_are_copied_and_bounded() {
        let n = root("x: &p {bindPort: 1}\ny: *p\n");
        assert_eq!(n.get("y").unwrap().value.get("bindPort").unwrap().value.as_int(), Some(1));
        // Each level doubles the size: an alias bomb is refused, not expanded.
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n", p = i - 1));
        }
        assert!(parse(&bomb).unwrap_err().msg.contains("nodes"));
    }

    #[test]
    fn test_empty_documents_and_odd_input_never_panic() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
        assert!(parse("---\na: 1\n---\nb: 2\n").unwrap().unwrap().get("a").is_some(), "the first document");
        let mut x: u32 = 7;
        for len in 0..400 {
            let s: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    ":- {}[]'\"&*!|>#\n a1"[(x % 19) as usize..][..1].to_string()
                })
                .collect();
            let _ = parse(&s);
        }
    }
}

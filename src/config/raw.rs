//! Stage one of config loading: the Python-compatible `KEY = VALUE` subset of flowd.cfg.
//!
//! Owns lexing and parsing only (no I/O, no validation of meaning). The Python flowd
//! `exec`s its config file, so real configs use Python literals: `'str'`, `"str"`,
//! integers, `True`/`False`/`None`, and tuples or lists of these, possibly nested
//! (`IPERF_FLOW_ID=[(2, 1), (3, 4)]`) and spanning several lines. `#` starts a comment
//! outside strings. Every bad line is reported (with its number), not just the first.

use std::fmt;

/// A literal value from the config file.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A quoted string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// `True` or `False`.
    Bool(bool),
    /// `None`.
    None,
    /// A tuple `(…)` or list `[…]`.
    List(Vec<Value>),
}

impl Value {
    /// A short description of the value's type, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Bool(_) => "True/False",
            Value::None => "None",
            Value::List(_) => "a list",
        }
    }
}

/// One `KEY = VALUE` assignment.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key, as written (upper case by convention).
    pub key: String,
    /// The parsed value.
    pub value: Value,
    /// 1-based line number of the key.
    pub line: usize,
}

/// A line that could not be parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

/// Parses a whole config text into entries and per-line errors.
pub fn parse(text: &str) -> (Vec<Entry>, Vec<LineError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let line = lines[i];
        i += 1;
        let trimmed = strip_comment(line).trim();
        if trimmed.is_empty() {
            continue;
        }
        let Some((key, rest)) = trimmed.split_once('=') else {
            errors.push(LineError { line: lineno, msg: format!("expected KEY = VALUE, found {:?}", trimmed) });
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || key.as_bytes()[0].is_ascii_digit() {
            errors.push(LineError { line: lineno, msg: format!("invalid key {:?}", key) });
            continue;
        }
        // A value with open brackets continues on the next lines (Python implicit joining).
        // The depth is carried along line by line (recounting the whole value for each
        // line made a long unclosed value quadratic: seconds for 200 KB).
        let mut value_text = rest.trim().to_string();
        let mut quote = None;
        let mut open = depth_step(&value_text, &mut quote);
        while open > 0 && i < lines.len() && !is_assignment(lines[i]) {
            let piece = strip_comment(lines[i]).trim();
            value_text.push(' ');
            value_text.push_str(piece);
            open += depth_step(piece, &mut quote);
            i += 1;
        }
        match parse_value(&value_text) {
            Ok(value) => entries.push(Entry { key: key.to_string(), value, line: lineno }),
            Err(msg) => errors.push(LineError { line: lineno, msg: format!("{key}: {msg}") }),
        }
    }
    (entries, errors)
}

/// The line without a trailing `#` comment (a `#` inside quotes is kept).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (idx, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' => return &line[..idx],
            None => {}
        }
    }
    line
}

/// True when a line starts a new `KEY = …` assignment (ends an unclosed value).
fn is_assignment(line: &str) -> bool {
    match strip_comment(line).split_once('=') {
        Some((k, _)) => {
            let k = k.trim();
            !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }
        None => false,
    }
}

/// Change of open-bracket depth over `s`, outside strings (positive while a tuple/list
/// is unfinished). `quote` is the string state, carried from the text before `s`.
fn depth_step(s: &str, quote: &mut Option<char>) -> i32 {
    let mut d = 0;
    for c in s.chars() {
        match *quote {
            Some(q) if c == q => *quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => *quote = Some(c),
                '(' | '[' => d += 1,
                ')' | ']' => d -= 1,
                _ => {}
            },
        }
    }
    d
}

/// Parses one value (the text right of `=`).
pub fn parse_value(s: &str) -> Result<Value, String> {
    let mut p = Parser { s: s.as_bytes(), pos: 0 };
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(format!("unexpected {:?} after the value", String::from_utf8_lossy(&p.s[p.pos..])));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn value(&mut self, nesting: usize) -> Result<Value, String> {
        if nesting > 8 {
            return Err("lists nested too deeply".into());
        }
        self.skip_ws();
        match self.s.get(self.pos) {
            None => Err("missing value".into()),
            Some(b'\'' | b'"') => self.string(),
            Some(b'(') => self.list(b')', nesting),
            Some(b'[') => self.list(b']', nesting),
            Some(_) => self.bare(),
        }
    }

    fn string(&mut self) -> Result<Value, String> {
        let q = self.s[self.pos];
        self.pos += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.pos) {
            self.pos += 1;
            if c == q {
                return String::from_utf8(out).map(Value::Str).map_err(|_| "string is not UTF-8".into());
            }
            if c == b'\\' {
                let Some(&e) = self.s.get(self.pos) else { break };
                self.pos += 1;
                out.push(match e {
                    b'n' => b'\n',
                    b't' => b'\t',
                    other => other,
                });
            } else {
                out.push(c);
            }
        }
        Err("unterminated string".into())
    }

    fn list(&mut self, close: u8, nesting: usize) -> Result<Value, String> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.s.get(self.pos) {
                None => return Err(format!("missing closing {:?}", close as char)),
                Some(&c) if c == close => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                Some(_) => {}
            }
            items.push(self.value(nesting + 1)?);
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(&c) if c == close => {}
                Some(&c) => return Err(format!("expected ',' or {:?} in list, found {:?}", close as char, c as char)),
                None => return Err(format!("missing closing {:?}", close as char)),
            }
        }
    }

    fn bare(&mut self) -> Result<Value, String> {
        let start = self.pos;
        while let Some(&c) = self.s.get(self.pos) {
            if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.') {
                self.pos += 1;
            } else {
                break;
            }
        }
        let word = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
        match word {
            "True" => Ok(Value::Bool(true)),
            "False" => Ok(Value::Bool(false)),
            "None" => Ok(Value::None),
            "" => Err(format!("unexpected {:?}", self.s[start] as char)),
            w => {
                let w2 = w.replace('_', "");
                let radix = |p: &str, r| w2.strip_prefix(p).and_then(|d| i64::from_str_radix(d, r).ok());
                if let Some(n) = radix("0o", 8).or_else(|| radix("0x", 16)).or_else(|| radix("0b", 2)) {
                    Ok(Value::Int(n))
                } else if let Ok(n) = w2.parse::<i64>() {
                    Ok(Value::Int(n))
                } else if let Ok(f) = w2.parse::<f64>() {
                    Ok(Value::Float(f))
                } else {
                    Err(format!("{w:?} is not a value (strings need quotes)"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_python_flowd_default_config_parses() {
        let text = "PLUGIN='netstat'\nBACKEND='udp_firefly'\n# NETSTAT_EXPERIMENT='<exp>'\n\
                    # NETSTAT_INTERNAL_NETWORKS=('192.168.0.0/16', )\nFLOW_MAP_API='<url>'\n# IP_DISCOVERY_ENABLED = False\n";
        let (e, errs) = parse(text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0], Entry { key: "PLUGIN".into(), value: Value::Str("netstat".into()), line: 1 });
        assert_eq!(e[2].line, 5);
    }

    #[test]
    fn test_all_literal_kinds() {
        assert_eq!(parse_value(r#""a#b""#), Ok(Value::Str("a#b".into())));
        assert_eq!(parse_value("42"), Ok(Value::Int(42)));
        assert_eq!(parse_value("-1"), Ok(Value::Int(-1)));
        assert_eq!(parse_value("0o660"), Ok(Value::Int(0o660)));
        assert_eq!(parse_value("2.5"), Ok(Value::Float(2.5)));
        assert_eq!(parse_value("True"), Ok(Value::Bool(true)));
        assert_eq!(parse_value("None"), Ok(Value::None));
        assert_eq!(parse_value("('192.168.0.0/16',)"), Ok(Value::List(vec![Value::Str("192.168.0.0/16".into())])));
        assert_eq!(
            parse_value("[(2, 1), ('cms', 'Analysis Input')]"),
            Ok(Value::List(vec![
                Value::List(vec![Value::Int(2), Value::Int(1)]),
                Value::List(vec![Value::Str("cms".into()), Value::Str("Analysis Input".into())]),
            ]))
        );
        assert_eq!(parse_value("()"), Ok(Value::List(vec![])));
    }

    #[test]
    fn test_multiline_list_and_trailing_comment() {
        let text = "NETSTAT_INTERNAL_NETWORKS = (\n  '10.0.0.0/8',  # lab\n  'fd00::/8',\n)\nX = 1 # one\n";
        let (e, errs) = parse(text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(e[0].value, Value::List(vec![Value::Str("10.0.0.0/8".into()), Value::Str("fd00::/8".into())]));
        assert_eq!(e[1], Entry { key: "X".into(), value: Value::Int(1), line: 5 });
    }

    #[test]
    fn test_every_bad_line_is_reported_with_its_number() {
        let text = "A = 'ok'\nB = unquoted\nnot an assignment\nC = 'open\nD = (1, 2\n9X = 1\nE = 1 2\n";
        let (e, errs) = parse(text);
        assert_eq!(e.len(), 1);
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
        assert!(errs[0].to_string().starts_with("line 2: B: \"unquoted\" is not a value"));
    }

    #[test]
    fn test_long_unclosed_value_is_linear() {
        // 400k continuation lines used to take minutes (depth recounted per line).
        let text = format!("A = (\n{}B = 1\n", "  1,  # x\n".repeat(400_000));
        let (e, errs) = parse(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].msg.contains("missing closing"), "{errs:?}");
        assert_eq!(e.len(), 1);
        let (e, errs) = parse("A = ('x)',\n 'y(' ,\n)\nB = 2\n");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(e[0].value, Value::List(vec![Value::Str("x)".into()), Value::Str("y(".into())]));
    }

    #[test]
    fn test_deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "(".repeat(1000), ")".repeat(1000));
        assert!(parse_value(&deep).is_err());
    }
}

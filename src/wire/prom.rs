//! Prometheus text exposition format 0.0.4: the encoder behind `GET /metrics`.
//!
//! Pure: appends bytes to a `Vec<u8>`; no I/O, no clock, no logging, no panics. The
//! format (prometheus/docs `exposition_formats.md`): per family one `# HELP name text`
//! line (`\` and newline escaped), one `# TYPE name counter|gauge` line, then every sample
//! of that family, `name{label="value",…} value`, one per line, families never
//! interleaved. Label values escape `\`, `"` and newline. Values are Go-parsable floats:
//! integers are written without exponent or fraction, `NaN`, `+Inf`, `-Inf` as such.
//! Counter names end in `_total` (checked by the callers' tests, reported by promtool).
//!
//! Hot path: a scrape of 10,000 flows writes several hundred thousand samples, so the
//! sample writer takes a pre-rendered label block (`{…}`), formats integers and
//! milliseconds ([`Value`]) by hand and copies short pieces with `wire::buf::append`. A
//! page is a [`Page`]: one buffer per part, reused from scrape to scrape and sent with
//! vectored writes.

use crate::wire::buf::append;

/// Whether a series is a counter (only goes up) or a gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter; rendered with `# TYPE … counter`.
    Counter,
    /// Gauge; rendered with `# TYPE … gauge`.
    Gauge,
}

/// Formats `v` in decimal into `buf`, returning the digits.
#[inline(always)]
pub(crate) fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Largest magnitude written as an integer (2^53: every integer below it is exact in f64).
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Appends a sample value: integers plainly, other finite values in Rust's shortest
/// round-trip form (exponent form for very large or very small magnitudes),
/// `NaN`, `+Inf`, `-Inf`.
pub(crate) fn write_value(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v.fract() == 0.0 && v.abs() < MAX_EXACT {
        if v < 0.0 {
            out.push(b'-');
        }
        let mut d = [0u8; 20];
        append(out, fmt_u64(&mut d, v.abs() as u64));
    } else {
        use std::io::Write;
        let a = v.abs();
        // Writing to a Vec cannot fail.
        let _ = if (1e-4..1e15).contains(&a) { write!(out, "{v}") } else { write!(out, "{v:e}") };
    }
}

/// Appends an unsigned integer value.
#[inline(always)]
pub(crate) fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut d = [0u8; 20];
    append(out, fmt_u64(&mut d, v));
}

/// Largest microsecond count written by digit arithmetic in [`write_millis`]; far below the
/// magnitude where `us / 1000.0` stops having a unique 3-decimal shortest form.
const MAX_EXACT_MICROS: u64 = 1 << 50;

/// Appends `us` microseconds as milliseconds: exactly what [`write_value`] writes for
/// `us as f64 / 1000.0` (`"204"`, `"0.361"`, `"1.5"`), without float formatting.
#[inline(always)]
pub(crate) fn write_millis(out: &mut Vec<u8>, us: u64) {
    if us >= MAX_EXACT_MICROS {
        write_value(out, us as f64 / 1000.0);
        return;
    }
    write_u64(out, us / 1000);
    let frac = us % 1000;
    if frac != 0 {
        let digits = [b'.', b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8];
        let keep = if frac % 100 == 0 {
            2
        } else if frac % 10 == 0 {
            3
        } else {
            4
        };
        append(out, &digits[..keep]);
    }
}

/// A sample value as the per-flow families produce it, so the common cases skip float
/// formatting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A count, written as an integer.
    Int(u64),
    /// Microseconds, written as milliseconds ([`write_millis`]).
    Millis(u64),
    /// Anything else ([`write_value`]).
    Float(f64),
}

impl Value {
    /// Appends the value.
    #[inline(always)]
    pub(crate) fn write(self, out: &mut Vec<u8>) {
        match self {
            Value::Int(v) => write_u64(out, v),
            Value::Millis(us) => write_millis(out, us),
            Value::Float(v) => write_value(out, v),
        }
    }

    /// The value as a float (what a scraper parses).
    #[cfg(test)]
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Millis(us) => us as f64 / 1000.0,
            Value::Float(v) => v,
        }
    }
}

/// A metrics page as a list of buffers: parts rendered separately (the store, one per
/// per-flow family) are sent with vectored writes, never concatenated, and a reused page
/// keeps every buffer's capacity, so a steady scrape allocates nothing.
#[derive(Debug, Default)]
pub struct Page {
    parts: Vec<Vec<u8>>,
    used: usize,
}

impl Page {
    /// An empty page.
    pub fn new() -> Page {
        Page::default()
    }

    /// Empties the page, keeping its buffers.
    pub fn clear(&mut self) {
        self.used = 0;
    }

    /// Appends `n` empty parts and returns them, in page order.
    pub(crate) fn add_parts(&mut self, n: usize) -> &mut [Vec<u8>] {
        let start = self.used;
        self.used += n;
        if self.parts.len() < self.used {
            self.parts.resize_with(self.used, Vec::new);
        }
        let parts = &mut self.parts[start..self.used];
        parts.iter_mut().for_each(Vec::clear);
        parts
    }

    /// Appends one empty part and returns it.
    pub(crate) fn add_part(&mut self) -> &mut Vec<u8> {
        &mut self.add_parts(1)[0]
    }

    /// The parts in page order.
    pub(crate) fn parts(&self) -> &[Vec<u8>] {
        &self.parts[..self.used]
    }

    /// Bytes on the page.
    pub fn len(&self) -> usize {
        self.parts().iter().map(Vec::len).sum()
    }

    /// Whether the page has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the page's buffers hold allocated (what keeping it for reuse costs).
    pub(crate) fn capacity(&self) -> usize {
        self.parts.iter().map(Vec::capacity).sum()
    }

    /// The whole page in one buffer (tests, tools).
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

/// Appends a label value with `\`, `"` and newline escaped (no quotes around it).
pub(crate) fn write_label_value(out: &mut Vec<u8>, v: &str) {
    let b = v.as_bytes();
    if !b.iter().any(|&c| matches!(c, b'\\' | b'"' | b'\n')) {
        append(out, b);
        return;
    }
    for &c in b {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            c => out.push(c),
        }
    }
}

/// Appends a label block `{n1="v1",n2="v2"}` (nothing for no labels). Names and values are
/// paired in order; extra values or names are ignored.
pub(crate) fn write_labels<V: AsRef<str>>(out: &mut Vec<u8>, names: &[&str], values: &[V]) {
    if names.is_empty() || values.is_empty() {
        return;
    }
    out.push(b'{');
    for (i, (n, v)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b"=\"");
        write_label_value(out, v.as_ref());
        out.push(b'"');
    }
    out.push(b'}');
}

/// Appends the `# HELP` and `# TYPE` lines of a family.
pub(crate) fn write_header(out: &mut Vec<u8>, name: &str, help: &str, kind: Kind) {
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    for &c in help.as_bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            c => out.push(c),
        }
    }
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(match kind {
        Kind::Counter => b" counter\n",
        Kind::Gauge => b" gauge\n",
    });
}

/// Appends one sample line: `name`, the pre-rendered label block from [`write_labels`]
/// (may be empty), a space, the value.
pub(crate) fn write_sample(out: &mut Vec<u8>, name: &str, labels: &[u8], value: f64) {
    write_sample_value(out, name, labels, Value::Float(value));
}

/// [`write_sample`] for a [`Value`].
#[inline(always)]
pub(crate) fn write_sample_value(out: &mut Vec<u8>, name: &str, labels: &[u8], value: Value) {
    append(out, name.as_bytes());
    append(out, labels);
    out.push(b' ');
    value.write(out);
    out.push(b'\n');
}

/// Appends one whole family: header, then one sample per `(label values, value)`.
#[cfg(test)]
pub(crate) fn write_family<V: AsRef<str>>(out: &mut Vec<u8>, name: &str, help: &str, kind: Kind, label_names: &[&str], series: &[(&[V], f64)]) {
    write_header(out, name, help, kind);
    let mut labels = Vec::with_capacity(64);
    for (values, v) in series {
        labels.clear();
        write_labels(&mut labels, label_names, values);
        write_sample(out, name, &labels, *v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `write` appends to an empty buffer, as text.
    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn value(v: f64) -> String {
        text(|out| write_value(out, v))
    }

    #[test]
    fn test_values() {
        assert_eq!(value(0.0), "0");
        assert_eq!(value(-0.0), "0");
        assert_eq!(value(42.0), "42");
        assert_eq!(value(-7.0), "-7");
        assert_eq!(value(1_612_210_340.0), "1612210340");
        assert_eq!(value(9_007_199_254_740_991.0), "9007199254740991");
        assert_eq!(value(1e20), "1e20");
        assert_eq!(value(0.361), "0.361");
        assert_eq!(value(1.5), "1.5");
        assert_eq!(value(1e-7), "1e-7");
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(f64::NEG_INFINITY), "-Inf");
        let mut d = [0u8; 20];
        assert_eq!(fmt_u64(&mut d, u64::MAX), b"18446744073709551615");
        assert_eq!(fmt_u64(&mut d, 0), b"0");
    }

    #[test]
    fn test_every_value_parses_back() {
        for v in [0.1, 123.456, 1e300, -2.5e-300, 65464.0, 6.8184110803e10, 1e15, 999_999_999_999_999.9] {
            let s = value(v);
            assert!(!s.contains('+') || s == "+Inf");
            assert_eq!(s.parse::<f64>().unwrap(), v, "{s}");
        }
    }

    fn millis(us: u64) -> String {
        text(|out| write_millis(out, us))
    }

    #[test]
    fn test_millis_match_float_formatting() {
        assert_eq!(millis(0), "0");
        assert_eq!(millis(204_000), "204");
        assert_eq!(millis(361), "0.361");
        assert_eq!(millis(1_500), "1.5");
        assert_eq!(millis(1_050), "1.05");
        assert_eq!(millis(4_294_967_295), "4294967.295");
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let samples = (0..200_000u64).chain((0..200_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % (1 << 52)
        }));
        for us in samples.chain([MAX_EXACT_MICROS - 1, MAX_EXACT_MICROS, u64::MAX]) {
            assert_eq!(millis(us), value(us as f64 / 1000.0), "{us} us");
        }
    }

    #[test]
    fn test_sample_lines_of_typed_values_match_the_plain_writers() {
        let line = |v: Value| text(|out| write_sample_value(out, "flow_tcp_x", b"{a=\"b\"}", v));
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for i in (0..100_000u64).chain([999, 1_000, 1_001, 1_010, 1_100, u64::MAX, MAX_EXACT_MICROS - 1, MAX_EXACT_MICROS]) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for v in [i, x, x % 1_000_000] {
                assert_eq!(line(Value::Millis(v)), format!("flow_tcp_x{{a=\"b\"}} {}\n", millis(v)), "{v} us");
                assert_eq!(line(Value::Int(v)), format!("flow_tcp_x{{a=\"b\"}} {v}\n"));
            }
        }
        assert_eq!(line(Value::Float(0.25)), "flow_tcp_x{a=\"b\"} 0.25\n");
        assert_eq!(line(Value::Float(f64::NAN)), "flow_tcp_x{a=\"b\"} NaN\n");
    }

    #[test]
    fn test_typed_values() {
        let s = |v: Value| text(|out| v.write(out));
        assert_eq!(s(Value::Int(u64::MAX)), "18446744073709551615");
        assert_eq!(s(Value::Millis(2_500)), "2.5");
        assert_eq!(s(Value::Float(0.25)), "0.25");
        assert_eq!(Value::Millis(2_500).as_f64(), 2.5);
    }

    #[test]
    fn test_page_parts_are_reused_in_order() {
        let mut p = Page::new();
        p.add_part().extend_from_slice(b"a");
        for (i, part) in p.add_parts(2).iter_mut().enumerate() {
            part.extend_from_slice(if i == 0 { b"bb" } else { b"ccc" });
        }
        assert_eq!((p.to_vec(), p.len(), p.parts().len()), (b"abbccc".to_vec(), 6, 3));
        let cap = p.capacity();
        p.clear();
        assert!(p.is_empty() && p.parts().is_empty());
        p.add_part().extend_from_slice(b"z");
        assert_eq!(p.to_vec(), b"z");
        assert_eq!(p.capacity(), cap, "buffers kept");
    }

    #[test]
    fn test_label_escaping() {
        let mut out = Vec::new();
        write_labels(&mut out, &["a", "b", "c"], &["plain", "q\"uo\\te", "two\nlines"]);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{a="plain",b="q\"uo\\te",c="two\nlines"}"#);
        let mut out = Vec::new();
        write_labels::<&str>(&mut out, &[], &[]);
        assert!(out.is_empty());
    }

    #[test]
    fn test_family_rendering() {
        let mut out = Vec::new();
        let s1: &[&str] = &["np_api", "start"];
        let s2: &[&str] = &["np_api", "end"];
        write_family(&mut out, "flowd_events_total", "Events \\ by\nstate.", Kind::Counter, &["plugin", "state"], &[(s1, 3.0), (s2, 1.0)]);
        write_family::<&str>(&mut out, "flowd_open_flows", "Open.", Kind::Gauge, &[], &[(&[], 2.0)]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# HELP flowd_events_total Events \\\\ by\\nstate.\n# TYPE flowd_events_total counter\n\
             flowd_events_total{plugin=\"np_api\",state=\"start\"} 3\nflowd_events_total{plugin=\"np_api\",state=\"end\"} 1\n\
             # HELP flowd_open_flows Open.\n# TYPE flowd_open_flows gauge\nflowd_open_flows 2\n"
        );
    }
}

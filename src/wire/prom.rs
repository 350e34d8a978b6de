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
//! sample writer takes a pre-rendered label block (`{…}`) and formats integers by hand.

use crate::metrics::Kind;

/// Formats `v` in decimal into `buf`, returning the digits.
pub fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
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
pub fn write_value(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v.fract() == 0.0 && v.abs() < MAX_EXACT {
        if v < 0.0 {
            out.push(b'-');
        }
        let mut d = [0u8; 20];
        out.extend_from_slice(fmt_u64(&mut d, v.abs() as u64));
    } else {
        use std::io::Write;
        let a = v.abs();
        // Writing to a Vec cannot fail.
        let _ = if (1e-4..1e15).contains(&a) { write!(out, "{v}") } else { write!(out, "{v:e}") };
    }
}

/// Appends an unsigned integer value.
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut d = [0u8; 20];
    out.extend_from_slice(fmt_u64(&mut d, v));
}

/// Appends a label value with `\`, `"` and newline escaped (no quotes around it).
pub fn write_label_value(out: &mut Vec<u8>, v: &str) {
    let b = v.as_bytes();
    if !b.iter().any(|&c| matches!(c, b'\\' | b'"' | b'\n')) {
        out.extend_from_slice(b);
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
pub fn write_labels<V: AsRef<str>>(out: &mut Vec<u8>, names: &[&str], values: &[V]) {
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
pub fn write_header(out: &mut Vec<u8>, name: &str, help: &str, kind: Kind) {
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
pub fn write_sample(out: &mut Vec<u8>, name: &str, labels: &[u8], value: f64) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(labels);
    out.push(b' ');
    write_value(out, value);
    out.push(b'\n');
}

/// Appends one whole family: header, then one sample per `(label values, value)`.
pub fn write_family<V: AsRef<str>>(out: &mut Vec<u8>, name: &str, help: &str, kind: Kind, label_names: &[&str], series: &[(&[V], f64)]) {
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

    fn value(v: f64) -> String {
        let mut out = Vec::new();
        write_value(&mut out, v);
        String::from_utf8(out).unwrap()
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

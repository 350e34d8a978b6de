//! RFC 3339 timestamps as fireflies carry them.
//!
//! flowd always emits UTC with exactly six fractional digits and `+00:00`
//! (`2025-03-25T10:00:00.123456+00:00`): the form every consumer accepts (SPEC §1.4).
//! The parser accepts any RFC 3339 date-time (0–9 fraction digits, `Z` or a numeric
//! offset) and the Python flowd's fraction-less form.

use crate::flow::Micros;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Appends `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` to `out`.
pub(crate) fn write_rfc3339(out: &mut Vec<u8>, t: Micros) {
    let secs = t.0.div_euclid(1_000_000);
    let us = t.0.rem_euclid(1_000_000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    let y = y.clamp(0, 9999);
    let mut buf = *b"0000-00-00T00:00:00.000000+00:00";
    let mut put = |pos: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            buf[pos + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y, 4);
    put(5, mo, 2);
    put(8, d, 2);
    put(11, h, 2);
    put(14, mi, 2);
    put(17, s, 2);
    put(20, us, 6);
    out.extend_from_slice(&buf);
}

/// The timestamp as a `String` (see [`write_rfc3339`]).
pub fn rfc3339(t: Micros) -> String {
    let mut v = Vec::with_capacity(32);
    write_rfc3339(&mut v, t);
    String::from_utf8_lossy(&v).into_owned()
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() {
        return None;
    }
    // A plain loop: the firefly relay parses two or three times per datagram, and the
    // release profile (opt-level "z") does not inline iterator closures.
    let mut n = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(c - b'0');
    }
    Some(n)
}

/// Parses an RFC 3339 date-time (`T` or space separator, fraction optional, `Z`/`z` or ±HH:MM).
pub fn parse_rfc3339(s: &str) -> Option<Micros> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, se) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut us = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        let mut v = digits(&frac[..n.min(6)])?;
        for _ in n..6 {
            v *= 10;
        }
        us = v;
        rest = &frac[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let oh = digits(&[*oh1, *oh2])?;
            let om = digits(&[*om1, *om2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se.min(59) - offset;
    Some(Micros(secs * 1_000_000 + us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_format_has_six_digits_and_utc_offset() {
        assert_eq!(rfc3339(Micros(0)), "1970-01-01T00:00:00.000000+00:00");
        let t = parse_rfc3339("2025-03-25T10:00:00.123456+00:00").unwrap();
        assert_eq!(rfc3339(t), "2025-03-25T10:00:00.123456+00:00");
        assert_eq!(rfc3339(Micros(951_782_400_000_001)), "2000-02-29T00:00:00.000001+00:00");
    }

    #[test]
    fn test_parse_variants() {
        let base = parse_rfc3339("2025-03-25T10:00:01+00:00").unwrap();
        assert_eq!(rfc3339(base), "2025-03-25T10:00:01.000000+00:00");
        assert_eq!(parse_rfc3339("2025-03-25T10:00:01Z"), Some(base));
        assert_eq!(parse_rfc3339("2025-03-25T11:00:01+01:00"), Some(base));
        assert_eq!(parse_rfc3339("2025-03-25T10:00:01.5Z"), Some(Micros(base.0 + 500_000)));
        assert_eq!(parse_rfc3339("2025-03-25T10:00:01.123456789Z"), Some(Micros(base.0 + 123_456)));
        for bad in
            ["", "2025-03-25", "2025-13-25T10:00:01Z", "2025-03-25T10:00:01", "2025-03-25T10:00:01.Z", "2025-03-25T10:00:01+0100", "２０２５-03-25T10:00:01Z"]
        {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn test_roundtrip_over_a_range_of_days() {
        for day in (-1000..30_000).step_by(37) {
            let t = Micros(day * 86_400_000_000 + 12_345_678);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
    }
}

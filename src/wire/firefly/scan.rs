//! The body, member by member: a small scanner over the JSON text that records where each
//! member's key and value are, so that a relay can pass on what it does not own exactly
//! as received. Values flowd does not read are skipped (and checked) by serde_json; the
//! scanner itself only walks the top-level object and the objects flowd reads.

use super::FireflyError;
use crate::flow::Span;

#[inline(always)]
fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

#[inline(always)]
pub fn span(start: usize, end: usize) -> Span {
    // Datagrams are far shorter than 4 GiB.
    Span { start: start as u32, end: end as u32 }
}

/// Deepest nesting of arrays and objects accepted (serde_json's limit).
const MAX_DEPTH: usize = 128;

/// Skips the JSON value starting at `i` and checks it against RFC 8259's grammar (the
/// body is already known to be UTF-8); returns where it ends. Hand-written because it
/// runs for every value of every datagram: with serde_json it was a tenth of the relay.
pub fn skip_value(body: &str, i: usize) -> Result<usize, FireflyError> {
    skip(body.as_bytes(), i, 0)
}

fn skip(b: &[u8], i: usize, depth: usize) -> Result<usize, FireflyError> {
    let nested = |close: u8, member: bool| -> Result<usize, FireflyError> {
        if depth >= MAX_DEPTH {
            return Err(FireflyError::Json);
        }
        let mut j = ws(b, i + 1);
        if b.get(j) == Some(&close) {
            return Ok(j + 1);
        }
        loop {
            if member {
                if b.get(j) != Some(&b'"') {
                    return Err(FireflyError::Json);
                }
                j = ws(b, string_end(b, j)?.0);
                if b.get(j) != Some(&b':') {
                    return Err(FireflyError::Json);
                }
                j = ws(b, j + 1);
            }
            j = ws(b, skip(b, j, depth + 1)?);
            match b.get(j) {
                Some(b',') => j = ws(b, j + 1),
                Some(c) if *c == close => return Ok(j + 1),
                _ => return Err(FireflyError::Json),
            }
        }
    };
    let literal = |word: &[u8]| if b.get(i..i + word.len()) == Some(word) { Ok(i + word.len()) } else { Err(FireflyError::Json) };
    match b.get(i) {
        Some(b'"') => Ok(string_end(b, i)?.0),
        Some(b'{') => nested(b'}', true),
        Some(b'[') => nested(b']', false),
        Some(b't') => literal(b"true"),
        Some(b'f') => literal(b"false"),
        Some(b'n') => literal(b"null"),
        Some(b'-' | b'0'..=b'9') => number_end(b, i),
        _ => Err(FireflyError::Json),
    }
}

/// The end of the number at `i`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number_end(b: &[u8], i: usize) -> Result<usize, FireflyError> {
    let digits = |j: usize| {
        let n = b.get(j..).map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
        if n == 0 {
            Err(FireflyError::Json)
        } else {
            Ok((j + n, n))
        }
    };
    let mut j = i + usize::from(b.get(i) == Some(&b'-'));
    let (end, n) = digits(j)?;
    if n > 1 && b[j] == b'0' {
        return Err(FireflyError::Json);
    }
    j = end;
    if b.get(j) == Some(&b'.') {
        j = digits(j + 1)?.0;
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        j = digits(j)?.0;
    }
    Ok(j)
}

/// An integer written as JSON (`-?digits`, no fraction or exponent), if it fits.
pub fn integer(raw: &str) -> Option<i64> {
    let digits = if raw.as_bytes().first() == Some(&b'-') { &raw[1..] } else { raw };
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        // More than 18 digits may overflow i64: serde_json decides exactly.
        return serde_json::from_str::<i64>(raw).ok();
    }
    let n = digits.bytes().fold(0i64, |a, c| a * 10 + i64::from(c - b'0'));
    Some(if digits.len() < raw.len() { -n } else { n })
}

/// The string literal starting at `i` (a `"`): where it ends, and whether it has
/// escapes. Escapes must be JSON's; control characters must be escaped.
fn string_end(b: &[u8], i: usize) -> Result<(usize, bool), FireflyError> {
    let mut j = i + 1;
    let mut escaped = false;
    while j < b.len() {
        // Eight bytes at a time: on to the first special one.
        if let Some(w) = b.get(j..j + 8) {
            let m = special(u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
            if m == 0 {
                j += 8;
                continue;
            }
            j += (m.trailing_zeros() / 8) as usize;
        }
        let c = b[j];
        if c == b'"' {
            return Ok((j + 1, escaped));
        } else if c == b'\\' {
            escaped = true;
            match b.get(j + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j += 2,
                Some(b'u') if b.get(j + 2..j + 6).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => j += 6,
                _ => return Err(FireflyError::Json),
            }
        } else if c < 0x20 {
            return Err(FireflyError::Json);
        } else {
            j += 1;
        }
    }
    Err(FireflyError::Json)
}

/// Of the eight bytes of `w` (little-endian), those that are `"`, `\\` or a control
/// character (below 0x20) have their high bit set in the result; the lowest set bit is
/// always exact (a borrow can only flag bytes above a special one). Bytes of multi-byte
/// UTF-8 characters (0x80 and up) are never special.
#[inline(always)]
fn special(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    below(w ^ (ONES * u64::from(b'"')), 1) | below(w ^ (ONES * u64::from(b'\\')), 1) | below(w, 0x20)
}

/// A JSON string literal's value: borrowed when it has no escapes.
pub fn string(raw: &str) -> Result<std::borrow::Cow<'_, str>, FireflyError> {
    let b = raw.as_bytes();
    if b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' && !b.contains(&b'\\') {
        return Ok(std::borrow::Cow::Borrowed(&raw[1..raw.len() - 1]));
    }
    serde_json::from_str::<String>(raw).map(std::borrow::Cow::Owned).map_err(|_| FireflyError::Json)
}

/// True when the value text starts with `c` (its JSON type: `"` string, `{` object).
#[inline(always)]
pub fn is(raw: &str, c: u8) -> bool {
    raw.as_bytes().first() == Some(&c)
}

/// Walks the object whose `{` is at `i` (after optional whitespace). For each member,
/// `member(key span, key, value start)` returns where the value ends (it skips or
/// walks it). Returns the position after the closing `}`.
pub fn object(body: &str, i: usize, mut member: impl FnMut(Span, &str, usize) -> Result<usize, FireflyError>) -> Result<usize, FireflyError> {
    let b = body.as_bytes();
    let mut i = ws(b, i);
    if b.get(i) != Some(&b'{') {
        return Err(FireflyError::Json);
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Ok(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(FireflyError::Json);
        }
        let (kend, escaped) = string_end(b, i)?;
        let raw = &body[i..kend];
        let key = if escaped { string(raw)? } else { std::borrow::Cow::Borrowed(&body[i + 1..kend - 1]) };
        let colon = ws(b, kend);
        if b.get(colon) != Some(&b':') {
            return Err(FireflyError::Json);
        }
        let v = ws(b, colon + 1);
        let vend = member(span(i, kend), &key, v)?;
        i = ws(b, vend);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') => return Ok(i + 1),
            _ => return Err(FireflyError::Json),
        }
    }
}

/// True when only whitespace follows `i`.
pub fn at_end(b: &[u8], i: usize) -> bool {
    ws(b, i) == b.len()
}

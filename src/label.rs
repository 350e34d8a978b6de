//! The Scitags IPv6 flow label (SPEC §3, IETF draft-cc-v6ops-wlcg-flow-label-marking §2.1)
//! and the `flowd label` command.
//!
//! Owns the pure encoding and decoding of the 20-bit flow label and the text the
//! `flowd label encode|decode` subcommand prints. No I/O: the command returns its output
//! as a `String` and `main` prints it.
//!
//! Layout, bits numbered from the least significant bit of the 20-bit label:
//!
//! ```text
//! host bit:   19 18 | 17 16 15 14 13 12 11 10 09 | 08 | 07 06 05 04 03 02 | 01 00
//!             E  E  | C0 C1 C2 C3 C4 C5 C6 C7 C8 | E  | A5 A4 A3 A2 A1 A0 | E  E
//! ```
//!
//! C is the experiment id (9 bits, bit-reversed: C0 = exp LSB at bit 17), A the activity
//! id (6 bits, normal order), E five entropy bits drawn at random once per flow.
//! Out-of-range ids are an error, never truncated (the Python flowd truncates silently).

use crate::registry::{IdOrName, ScitagsRegistry};

/// Largest experiment id the label can carry (9 bits).
pub(crate) const MAX_EXP: u32 = 511;
/// Largest activity id the label can carry (6 bits).
pub(crate) const MAX_ACT: u32 = 63;
/// Largest entropy value (5 bits).
pub(crate) const MAX_ENTROPY: u8 = 31;
/// Bits that carry experiment and activity (`0x3FEFC`, the sFlow-RT decode mask).
pub const SEMANTIC_MASK: u32 = 0x3FEFC;
/// Bits that carry entropy (`0xC0103`).
pub const ENTROPY_MASK: u32 = 0xC0103;
/// The 20 flow-label bits of IPv6 header word 0 (host order).
pub const LABEL_MASK: u32 = 0xFFFFF;

/// Why an (experiment, activity) pair cannot be put into a flow label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The experiment id needs more than 9 bits.
    #[error("experiment id {exp} does not fit the 9-bit flow-label field (max {MAX_EXP})")]
    ExpTooLarge {
        /// The rejected id.
        exp: u32,
    },
    /// The activity id needs more than 6 bits.
    #[error("activity id {act} does not fit the 6-bit flow-label field (max {MAX_ACT})")]
    ActTooLarge {
        /// The rejected id.
        act: u32,
    },
    /// The entropy value needs more than 5 bits.
    #[error("entropy value {entropy} does not fit the 5 entropy bits (max {MAX_ENTROPY})")]
    EntropyTooLarge {
        /// The rejected value.
        entropy: u8,
    },
}

/// Reverses the low 9 bits of `v` (bit 0 ↔ bit 8).
fn rev9(v: u32) -> u32 {
    (v & 0x1FF).reverse_bits() >> (32 - 9)
}

/// Spreads a 5-bit entropy value over the entropy bit positions 19, 18, 8, 1, 0
/// (entropy bit 4 → label bit 19, …, entropy bit 0 → label bit 0). Bits above 4 are ignored.
pub(crate) fn entropy_bits(entropy5: u8) -> u32 {
    let e = u32::from(entropy5 & 0x1F);
    ((e >> 3) & 0b11) << 18 | ((e >> 2) & 1) << 8 | (e & 0b11)
}

/// The inverse of [`entropy_bits`]: the 5-bit entropy value carried by `label`.
pub fn entropy_of(label: u32) -> u8 {
    let e = ((label >> 18) & 0b11) << 3 | ((label >> 8) & 1) << 2 | (label & 0b11);
    // At most 5 bits are set, so the value is ≤ 31.
    (e & 0x1F) as u8
}

/// Encodes a flow label. `entropy5` (0..=31) fills the five entropy bits.
pub fn encode(exp: u32, act: u32, entropy5: u8) -> Result<u32, LabelError> {
    if exp > MAX_EXP {
        return Err(LabelError::ExpTooLarge { exp });
    }
    if act > MAX_ACT {
        return Err(LabelError::ActTooLarge { act });
    }
    if entropy5 > MAX_ENTROPY {
        return Err(LabelError::EntropyTooLarge { entropy: entropy5 });
    }
    Ok(entropy_bits(entropy5) | rev9(exp) << 9 | act << 2)
}

/// Decodes the (experiment, activity) pair of a flow label; entropy and bits above
/// the 20-bit label are ignored.
pub fn decode(label: u32) -> (u32, u32) {
    (rev9((label >> 9) & 0x1FF), (label >> 2) & 0x3F)
}

/// The composite "scitag" transfer tools use (`scitag.flow=N`, the HTTP `SciTag` header):
/// `exp << 6 | act`. It is not a packet field.
pub(crate) fn scitag(exp: u32, act: u32) -> u32 {
    exp << 6 | act
}

/// The label as it appears in IPv6 header word 0 (host order) with the given Traffic Class.
pub fn ipv6_word0(label: u32, traffic_class: u8) -> u32 {
    6 << 28 | u32::from(traffic_class) << 20 | (label & LABEL_MASK)
}

/// Reads a number written in decimal or as `0x…` hexadecimal.
fn parse_number(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Renders the 20 label bits as `EE CCCCCCCCC E AAAAAA EE` (SPEC §5b).
fn bit_groups(label: u32) -> String {
    let b = format!("{:020b}", label & LABEL_MASK);
    format!("{} {} {} {} {}", &b[0..2], &b[2..11], &b[11..12], &b[12..18], &b[18..20])
}

fn describe(registry: &ScitagsRegistry, exp: u32, act: u32) -> String {
    let (e, a) = registry.names(exp, act);
    format!("experiment {exp} ({}), activity {act} ({})", e.unwrap_or("not in registry"), a.unwrap_or("not in registry"))
}

const EXPLAIN: &str = "\
note: the flow label is the 20-bit field of the IPv6 header that flowd's eBPF marker
      writes into every packet of a flow: the experiment bit-reversed in 9 bits, the
      activity in 6 bits and 5 random entropy bits fixed per flow (so one pair has 32
      valid labels, not one contiguous range). The scitag (exp<<6|act) is the plain
      number transfer tools take (XRootD/gfal scitag.flow=N, FTS, the HTTP SciTag
      header); it never appears in packets.\n";

fn encode_text(registry: &ScitagsRegistry, exp: u32, act: u32) -> Result<String, String> {
    let base = encode(exp, act, 0).map_err(|e| e.to_string())?;
    let all = base | ENTROPY_MASK;
    Ok(format!(
        "{}\n\
         flow label (20 bits): base 0x{base:05X} ({base}), all entropy bits set 0x{all:05X} ({all})\n\
         \x20 bits EE CCCCCCCCC E AAAAAA EE = {}\n\
         \x20 valid labels: 0x{base:05X} | any subset of 0x{ENTROPY_MASK:05X}\n\
         \x20 IPv6 header word 0 with Traffic Class 0: 0x{:08X} .. 0x{:08X}\n\
         scitag (exp<<6|act): {}\n{EXPLAIN}",
        describe(registry, exp, act),
        bit_groups(base),
        ipv6_word0(base, 0),
        ipv6_word0(all, 0),
        scitag(exp, act),
    ))
}

fn decode_text(registry: &ScitagsRegistry, label: u32) -> Result<String, String> {
    if label > LABEL_MASK {
        return Err(format!("{label:#x} is wider than the 20-bit flow label; give the label only (word0 & 0xFFFFF)"));
    }
    let (exp, act) = decode(label);
    let base = label & SEMANTIC_MASK;
    Ok(format!(
        "flow label 0x{label:05X} ({label}) = bits {}\n\
         {}\n\
         entropy value {} (bits 0x{:05X}); base label 0x{base:05X} ({base}), all entropy bits set 0x{:05X}\n\
         scitag (exp<<6|act): {}\n{EXPLAIN}",
        bit_groups(label),
        describe(registry, exp, act),
        entropy_of(label),
        label & ENTROPY_MASK,
        base | ENTROPY_MASK,
        scitag(exp, act),
    ))
}

const USAGE: &str = "usage: flowd label encode EXP ACT   (ids or registry names, e.g. `atlas Debug`)\n\
                     \x20      flowd label decode LABEL    (decimal or 0x hex)";

/// The `flowd label` subcommand. `args` are the words after `label`
/// (`["encode", "atlas", "Debug"]` or `["decode", "0x10024"]`). Names resolve against the
/// bundled registry. Returns the text to print, or an error message (with usage).
pub fn label_command(args: &[String]) -> Result<String, String> {
    let registry = ScitagsRegistry::bundled();
    match args {
        [cmd, exp, act] if cmd == "encode" => {
            let e = registry.exp_id(&IdOrName::parse(exp)).ok_or_else(|| format!("unknown experiment {exp:?} (not in the bundled registry)"))?;
            let a = registry.act_id(e, &IdOrName::parse(act)).ok_or_else(|| format!("unknown activity {act:?} for experiment {e}"))?;
            encode_text(&registry, e, a)
        }
        [cmd, label] if cmd == "decode" => {
            let l = parse_number(label).ok_or_else(|| format!("not a number: {label:?}\n{USAGE}"))?;
            decode_text(&registry, l)
        }
        _ => Err(USAGE.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §5b: (exp, act, base label, all-E label, scitag).
    const VECTORS: &[(u32, u32, u32, u32, u32)] = &[
        (1, 1, 0x20004, 0xE0107, 65),
        (2, 9, 0x10024, 0xD0127, 137),
        (3, 14, 0x30038, 0xF013B, 206),
        (2, 2, 0x10008, 0xD010B, 130),
        (5, 16, 0x28040, 0xE8143, 336),
        (7, 1, 0x38004, 0xF8107, 449),
        (14, 1, 0x1C004, 0xDC107, 897),
        (6, 26, 0x18068, 0xD816B, 410),
        (511, 63, 0x3FEFC, 0xFFFFF, 32767),
        (1, 0, 0x20000, 0xE0103, 64),
    ];

    #[test]
    fn test_spec_5b_vectors() {
        for &(exp, act, base, all, tag) in VECTORS {
            assert_eq!(encode(exp, act, 0), Ok(base), "base ({exp},{act})");
            assert_eq!(encode(exp, act, 31), Ok(all), "all-E ({exp},{act})");
            assert_eq!(decode(base), (exp, act));
            assert_eq!(decode(all), (exp, act));
            assert_eq!(scitag(exp, act), tag);
            assert_eq!(base & SEMANTIC_MASK, base);
        }
        // Decimal column and bit strings of §5b for two rows.
        assert_eq!(encode(2, 9, 0), Ok(65572));
        assert_eq!(bit_groups(0x10024), "00 010000000 0 001001 00");
        assert_eq!(bit_groups(0x18068), "00 011000000 0 011010 00");
        // §3.2: header bytes with TC=0.
        assert_eq!(ipv6_word0(0x10024, 0).to_be_bytes(), [0x60, 0x01, 0x00, 0x24]);
        assert_eq!(ipv6_word0(0xD0127, 0).to_be_bytes(), [0x60, 0x0D, 0x01, 0x27]);
        // §3.3: the flowd-go pcap frame 1 label.
        assert_eq!(decode(0x7FEFE), (511, 63));
    }

    #[test]
    fn test_property_roundtrip_and_32_distinct_labels() {
        for exp in 0..=MAX_EXP {
            for act in 0..=MAX_ACT {
                let mut seen = std::collections::HashSet::new();
                for e in 0..=MAX_ENTROPY {
                    let l = encode(exp, act, e).unwrap();
                    assert!(l <= LABEL_MASK);
                    assert_eq!(decode(l), (exp, act));
                    assert_eq!(entropy_of(l), e);
                    assert_eq!(l & SEMANTIC_MASK, encode(exp, act, 0).unwrap());
                    seen.insert(l);
                }
                assert_eq!(seen.len(), 32, "({exp},{act})");
            }
        }
    }

    #[test]
    fn test_out_of_range_is_an_error_not_truncation() {
        assert_eq!(encode(512, 1, 0), Err(LabelError::ExpTooLarge { exp: 512 }));
        assert_eq!(encode(1, 64, 0), Err(LabelError::ActTooLarge { act: 64 }));
        assert_eq!(encode(1, 1, 32), Err(LabelError::EntropyTooLarge { entropy: 32 }));
        assert_eq!(entropy_bits(31), ENTROPY_MASK);
    }

    fn run(args: &[&str]) -> Result<String, String> {
        label_command(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn test_label_command_encode_by_id_and_name() {
        let by_id = run(&["encode", "2", "9"]).unwrap();
        let by_name = run(&["encode", "atlas", "Debug"]).unwrap();
        assert_eq!(by_id, by_name);
        assert!(by_id.contains("experiment 2 (atlas), activity 9 (Debug)"), "{by_id}");
        assert!(by_id.contains("base 0x10024 (65572)"), "{by_id}");
        assert!(by_id.contains("0xD0127 (852263)"), "{by_id}");
        assert!(by_id.contains("scitag (exp<<6|act): 137"), "{by_id}");
        assert!(by_id.contains("0x60010024"), "{by_id}");
        let cms = run(&["encode", "cms", "analysis_input"]).unwrap();
        assert!(cms.contains("0x30038"), "{cms}");
    }

    #[test]
    fn test_label_command_decode_hex_and_decimal() {
        let hex = run(&["decode", "0xD0127"]).unwrap();
        assert!(hex.contains("experiment 2 (atlas), activity 9 (Debug)"), "{hex}");
        assert!(hex.contains("entropy value 31"), "{hex}");
        assert!(hex.contains("base label 0x10024"), "{hex}");
        let dec = run(&["decode", "65572"]).unwrap();
        assert!(dec.contains("entropy value 0"), "{dec}");
        let unreg = run(&["decode", "0x3FEFC"]).unwrap();
        assert!(unreg.contains("experiment 511 (not in registry)"), "{unreg}");
    }

    #[test]
    fn test_label_command_errors() {
        assert!(run(&["encode", "600", "1"]).unwrap_err().contains("9-bit"));
        assert!(run(&["encode", "2", "64"]).unwrap_err().contains("6-bit"));
        assert!(run(&["encode", "nosuch", "1"]).unwrap_err().contains("unknown experiment"));
        assert!(run(&["encode", "atlas", "nosuch"]).unwrap_err().contains("unknown activity"));
        assert!(run(&["decode", "0x100000"]).unwrap_err().contains("20-bit"));
        assert!(run(&["decode", "zz"]).unwrap_err().contains("usage"));
        assert!(run(&[]).unwrap_err().contains("usage"));
    }
}

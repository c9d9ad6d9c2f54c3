//! Rates and sizes with units, our own grammar (close to `tc`'s):
//! rates `bit`, `kbit`, `mbit`, `gbit`, `tbit` (bits per second, powers of 1000);
//! sizes `b`, `kb`, `mb`, `gb` (powers of 1000) and `kib`, `mib`, `gib` (powers of 1024).
//! A number without a unit is refused: `100` could be bits or bytes, and guessing is how
//! operators end up 8x off.
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A rate in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rate(pub u64);

/// A size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("empty value")]
    Empty,
    #[error("'{0}' has no unit; write e.g. '{0}mbit' for a rate or '{0}kb' for a size")]
    NoUnit(String),
    #[error("'{0}': unknown unit '{1}' (expected {2})")]
    UnknownUnit(String, String, &'static str),
    #[error("'{0}' is not a number")]
    BadNumber(String),
    #[error("'{0}' is too large")]
    Overflow(String),
}

const RATE_UNITS: &[(&str, u64)] = &[
    ("tbit", 1_000_000_000_000),
    ("gbit", 1_000_000_000),
    ("mbit", 1_000_000),
    ("kbit", 1_000),
    ("bit", 1),
];
const RATE_EXPECTED: &str = "bit, kbit, mbit, gbit, tbit";

const SIZE_UNITS: &[(&str, u64)] = &[
    ("gib", 1 << 30),
    ("mib", 1 << 20),
    ("kib", 1 << 10),
    ("gb", 1_000_000_000),
    ("mb", 1_000_000),
    ("kb", 1_000),
    ("b", 1),
];
const SIZE_EXPECTED: &str = "b, kb, mb, gb, kib, mib, gib";

/// Splits "12.5mbit" into (12.5, "mbit") and scales by the unit's multiplier, exactly for
/// integers and up to 9 decimal places.
fn parse_with(s: &str, units: &[(&str, u64)], expected: &'static str) -> Result<u64, UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError::Empty);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    if num.is_empty() {
        return Err(UnitError::BadNumber(s.to_string()));
    }
    if unit.is_empty() {
        return Err(UnitError::NoUnit(num.to_string()));
    }
    let mult = units
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, m)| *m)
        .ok_or_else(|| UnitError::UnknownUnit(s.to_string(), unit.clone(), expected))?;
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') || frac.len() > 9 {
        return Err(UnitError::BadNumber(s.to_string()));
    }
    let overflow = || UnitError::Overflow(s.to_string());
    let int_v: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| overflow())?
    };
    let mut total = int_v.checked_mul(mult).ok_or_else(overflow)?;
    if !frac.is_empty() {
        let frac_v: u128 = frac
            .parse()
            .map_err(|_| UnitError::BadNumber(s.to_string()))?;
        let scale = 10u128.pow(frac.len() as u32);
        let add = (frac_v * mult as u128) / scale;
        total = total.checked_add(add as u64).ok_or_else(overflow)?;
    }
    Ok(total)
}

/// Picks the largest unit that shows the value exactly, so "200mbit" prints as "200mbit".
fn format_with(v: u64, units: &[(&str, u64)]) -> String {
    for (u, m) in units {
        if v >= *m && v.is_multiple_of(*m) {
            return format!("{}{}", v / m, u);
        }
    }
    format!("{v}{}", units.last().map_or("", |(u, _)| *u))
}

impl Rate {
    pub fn parse(s: &str) -> Result<Self, UnitError> {
        parse_with(s, RATE_UNITS, RATE_EXPECTED).map(Rate)
    }
    pub fn bits_per_sec(self) -> u64 {
        self.0
    }
    pub fn bytes_per_sec(self) -> u64 {
        self.0 / 8
    }
}

impl Size {
    pub fn parse(s: &str) -> Result<Self, UnitError> {
        parse_with(s, SIZE_UNITS, SIZE_EXPECTED).map(Size)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Decimal units only: a rate is never shown in kib.
        f.write_str(&format_with(self.0, RATE_UNITS))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_with(self.0, &SIZE_UNITS[3..]))
    }
}

/// A human rate for tables: "12.3 Mbit/s".
pub fn human_bits(bits_per_sec: f64) -> String {
    let (v, u) = if bits_per_sec >= 1e9 {
        (bits_per_sec / 1e9, "Gbit/s")
    } else if bits_per_sec >= 1e6 {
        (bits_per_sec / 1e6, "Mbit/s")
    } else if bits_per_sec >= 1e3 {
        (bits_per_sec / 1e3, "kbit/s")
    } else {
        (bits_per_sec, "bit/s")
    };
    format!("{v:.1} {u}")
}

macro_rules! serde_units {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)
                    .map_err(|_| de::Error::custom(concat!("expected ", $what, " string")))?;
                <$t>::parse(&s).map_err(de::Error::custom)
            }
        }
    };
}
serde_units!(Rate, "a rate");
serde_units!(Size, "a size");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_bits_per_second() {
        assert_eq!(Rate::parse("200mbit"), Ok(Rate(200_000_000)));
        assert_eq!(Rate::parse("1gbit"), Ok(Rate(1_000_000_000)));
        assert_eq!(Rate::parse("1.5Gbit"), Ok(Rate(1_500_000_000)));
        assert_eq!(Rate::parse(" 64kbit "), Ok(Rate(64_000)));
        assert_eq!(Rate::parse("800bit"), Ok(Rate(800)));
        assert_eq!(Rate::parse("0.5mbit"), Ok(Rate(500_000)));
        assert_eq!(Rate::parse("2 mbit"), Ok(Rate(2_000_000)));
        assert_eq!(
            Rate::parse("10mbit").map(Rate::bytes_per_sec),
            Ok(1_250_000)
        );
    }

    #[test]
    fn sizes_parse_decimal_and_binary() {
        assert_eq!(Size::parse("256kb"), Ok(Size(256_000)));
        assert_eq!(Size::parse("256kib"), Ok(Size(262_144)));
        assert_eq!(Size::parse("1mib"), Ok(Size(1_048_576)));
        assert_eq!(Size::parse("1500b"), Ok(Size(1500)));
        assert_eq!(Size::parse("1.5mb"), Ok(Size(1_500_000)));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert_eq!(Rate::parse(""), Err(UnitError::Empty));
        assert_eq!(Rate::parse("100"), Err(UnitError::NoUnit("100".into())));
        assert!(matches!(
            Rate::parse("100kb"),
            Err(UnitError::UnknownUnit(..))
        ));
        assert!(matches!(
            Size::parse("100mbit"),
            Err(UnitError::UnknownUnit(..))
        ));
        assert!(matches!(Rate::parse("mbit"), Err(UnitError::BadNumber(_))));
        assert!(matches!(
            Rate::parse("1.2.3mbit"),
            Err(UnitError::BadNumber(_))
        ));
        assert!(matches!(
            Rate::parse("-5mbit"),
            Err(UnitError::BadNumber(_))
        ));
        assert!(matches!(
            Rate::parse("99999999999999tbit"),
            Err(UnitError::Overflow(_))
        ));
        let msg = Rate::parse("100").expect_err("no unit").to_string();
        assert!(msg.contains("100mbit"), "{msg}");
    }

    #[test]
    fn display_round_trips() {
        for s in ["200mbit", "1gbit", "64kbit", "1500mbit", "7bit"] {
            let r = Rate::parse(s).expect("valid");
            assert_eq!(Rate::parse(&r.to_string()), Ok(r));
        }
        assert_eq!(Rate(200_000_000).to_string(), "200mbit");
        assert_eq!(Size(256_000).to_string(), "256kb");
        assert_eq!(Size(1500).to_string(), "1500b");
    }

    #[test]
    fn human_rates() {
        assert_eq!(human_bits(12_345_678.0), "12.3 Mbit/s");
        assert_eq!(human_bits(999.0), "999.0 bit/s");
    }
}

//! Sizes and durations as operators write them, in `sealgate.toml` and the policy files
//! alike: the one grammar for each, and errors that name the value and the accepted forms.
//!
//! - size: a number (whole or decimal) and an optional unit, spaces allowed between:
//!   B, KiB, MiB, GiB (powers of 1024) or KB, MB, GB (powers of 1000; `k`, `m`, `g` alone
//!   mean the same), case-insensitive; no unit means bytes (`"25MiB"`, `"10 MB"`, `"512"`).
//! - duration: a whole number and a unit, spaces allowed between: `ms`, `s`, `m`, `h`, `d`,
//!   `w` (lower case; `"90s"`, `"5d"`, `"250ms"`). The unit is required: a bare `"300"`
//!   could mean seconds or milliseconds. Whether zero or less than a second is acceptable
//!   is the caller's rule, stated in its own error.
//!
//! A leaf: depends on nothing else in the crate.

use std::time::Duration;

/// What [`parse_size`] or [`parse_duration`] could not read; the message quotes the value
/// and says which forms are accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The number part is missing or malformed.
    #[error("\"{value}\" is not a size: write a number and a unit, like \"10MiB\" or \"25 MB\" (B, KiB, MiB, GiB: powers of 1024; KB, MB, GB: powers of 1000), or a plain number of bytes")]
    NotASize {
        /// The text as written.
        value: String,
    },
    /// The unit after the number is not one of the size units.
    #[error("\"{value}\": unknown unit \"{unit}\"; use B, KiB, MiB, GiB (powers of 1024) or KB, MB, GB (powers of 1000)")]
    SizeUnit {
        /// The text as written.
        value: String,
        /// The unit as written (lower-cased).
        unit: String,
    },
    /// The size or duration does not fit in 64 bits.
    #[error("\"{value}\" is too large")]
    TooLarge {
        /// The text as written.
        value: String,
    },
    /// Not a whole number followed by a duration unit.
    #[error("\"{value}\" is not a duration: write a whole number and a unit, like \"90s\" or \"5d\" (ms, s, m, h, d, w)")]
    NotADuration {
        /// The text as written.
        value: String,
    },
}

/// Reads a size in bytes (see the module comment for the grammar).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(UnitError::SizeUnit {
                value: s.to_string(),
                unit,
            })
        }
    };
    let too_large = || UnitError::TooLarge {
        value: s.to_string(),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(too_large);
    }
    let x: f64 = num.parse().map_err(|_| UnitError::NotASize {
        value: s.to_string(),
    })?;
    let bytes = x * mult as f64;
    // `u64::MAX as f64` is 2^64: anything below it fits in a u64.
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(too_large());
    }
    Ok(bytes as u64)
}

/// Reads a duration (see the module comment for the grammar).
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    let not_a_duration = || UnitError::NotADuration {
        value: s.to_string(),
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(not_a_duration());
    }
    let too_large = || UnitError::TooLarge {
        value: s.to_string(),
    };
    let n: u64 = num.parse().map_err(|_| too_large())?;
    let unit_secs: u64 = match unit.trim_start() {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(not_a_duration()),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_both_unit_families_and_plain_bytes() {
        assert_eq!(parse_size("25MiB"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size("25 MiB"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert_eq!(parse_size("10M"), Ok(10_000_000));
        assert_eq!(parse_size("10mib"), Ok(10 << 20));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4k"), Ok(4000));
    }

    #[test]
    fn bad_sizes_name_the_value_and_the_forms() {
        let e = parse_size("12 furlongs").unwrap_err().to_string();
        assert!(
            e.contains("\"12 furlongs\": unknown unit \"furlongs\""),
            "{e}"
        );
        assert!(e.contains("KiB") && e.contains("MB"), "{e}");
        for bad in ["", "1.2.3MiB", "MiB", "1e30"] {
            let e = parse_size(bad).unwrap_err();
            assert!(
                matches!(e, UnitError::NotASize { .. } | UnitError::SizeUnit { .. }),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains(&format!("\"{bad}\"")), "{e}");
        }
        let e = parse_size("99999999999999GiB").unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(432_000)));
        assert_eq!(parse_duration("5 d"), Ok(Duration::from_secs(432_000)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "soon", "300", "5D", "1.5h", "-1s", "s", "5 days"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("\"{bad}\" is not a duration"))
                    && e.contains("ms, s, m, h, d, w"),
                "{bad}: {e}"
            );
        }
        for big in ["99999999999999999d", "99999999999999999999999s"] {
            let e = parse_duration(big).unwrap_err().to_string();
            assert!(e.contains("too large"), "{big}: {e}");
        }
    }
}

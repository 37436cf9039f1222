//! Byte sizes such as `"16MiB"`, so memory limits need not be written as
//! eight-digit integers.

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty; expected a size like \"16MiB\" or a number of bytes")]
    Empty,
    #[error("expected a whole number of bytes or a size like \"16MiB\"")]
    BadNumber,
    #[error("unknown unit {unit:?} (valid units: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")]
    UnknownUnit { unit: String },
    #[error("too large")]
    Overflow,
}

const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kib", 1 << 10),
    ("ki", 1 << 10),
    ("mib", 1 << 20),
    ("mi", 1 << 20),
    ("gib", 1 << 30),
    ("gi", 1 << 30),
    ("tib", 1 << 40),
    ("ti", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Parses `"<integer>[unit]"`: binary units (`KiB`, `MiB`, ...) are powers of
/// 1024, decimal ones (`KB`, `MB`, ...) powers of 1000; units ignore case.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::BadNumber);
    }
    let unit = unit.trim_start();
    let lowered = unit.to_ascii_lowercase();
    let multiplier = UNITS
        .iter()
        .find(|(name, _)| *name == lowered)
        .map(|(_, m)| *m)
        .ok_or_else(|| {
            if unit.starts_with('.') {
                SizeError::BadNumber
            } else {
                SizeError::UnknownUnit {
                    unit: unit.to_owned(),
                }
            }
        })?;
    let number: u64 = digits.parse().map_err(|_| SizeError::Overflow)?;
    number.checked_mul(multiplier).ok_or(SizeError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        let cases: &[(&str, u64)] = &[
            ("1048576", 1 << 20),
            ("16MiB", 16 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("16 MiB", 16 << 20),
            ("16mib", 16 << 20),
            ("64Ki", 64 << 10),
            ("10MB", 10_000_000),
            ("100B", 100),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("MiB"), Err(SizeError::BadNumber));
        assert_eq!(parse_size("1.5GiB"), Err(SizeError::BadNumber));
        assert_eq!(
            parse_size("16M"),
            Err(SizeError::UnknownUnit { unit: "M".into() })
        );
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::Overflow));
        assert_eq!(parse_size("17179869184GiB"), Err(SizeError::Overflow));
    }
}

//! Go-style duration strings (`"500ms"`, `"1h30m"`, `"1.5s"`), because the
//! original BBProxy read `circuit_breaker_timeout` with Go's
//! `time.ParseDuration` and its config files must keep loading.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty; expected a duration like \"30s\", \"500ms\" or \"1m\"")]
    Empty,
    #[error("durations cannot be negative")]
    Negative,
    #[error("missing unit after {number:?} (like \"30s\", \"500ms\" or \"1m\")")]
    MissingUnit { number: String },
    #[error("unknown unit {unit:?} (valid units: ns, us, µs, ms, s, m, h)")]
    UnknownUnit { unit: String },
    #[error("expected a number at {rest:?}")]
    BadNumber { rest: String },
    #[error("too large (the limit is about 292 years)")]
    Overflow,
}

const NANOS_PER_UNIT: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

/// Go caps durations at `i64::MAX` nanoseconds; matching it keeps files that
/// the original rejected rejected here too.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Fraction digits beyond this cannot change the result by a nanosecond even
/// for hours, and bounding them keeps the arithmetic in `u128`.
const MAX_FRACTION_DIGITS: u32 = 20;

/// Parses a Go-style duration: one or more `<number><unit>` terms, e.g.
/// `"1h30m"`, `"1.5s"`, `"250µs"`. A lone `"0"` is accepted as Go does.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let mut rest = match s.as_bytes().first() {
        None => return Err(DurationError::Empty),
        Some(b'-') => return Err(DurationError::Negative),
        Some(b'+') => &s[1..],
        Some(_) => s,
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let term_start = rest;
        let (int_digits, after_int) = split_digits(rest);
        let (frac_digits, after_frac) = match after_int.strip_prefix('.') {
            Some(after_dot) => split_digits(after_dot),
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(DurationError::BadNumber {
                rest: term_start.to_owned(),
            });
        }
        let unit_len = after_frac
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_frac.len());
        let (unit, after_unit) = after_frac.split_at(unit_len);
        if unit.is_empty() {
            let number_len = term_start.len() - after_frac.len();
            return Err(DurationError::MissingUnit {
                number: term_start[..number_len].to_owned(),
            });
        }
        let per_unit = NANOS_PER_UNIT
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, nanos)| *nanos)
            .ok_or_else(|| DurationError::UnknownUnit {
                unit: unit.to_owned(),
            })?;
        total = total
            .checked_add(term_nanos(int_digits, frac_digits, per_unit)?)
            .filter(|t| *t <= MAX_NANOS)
            .ok_or(DurationError::Overflow)?;
        rest = after_unit;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, nanos))
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn term_nanos(int_digits: &str, frac_digits: &str, per_unit: u128) -> Result<u128, DurationError> {
    let mut whole: u128 = 0;
    for d in int_digits.bytes() {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(u128::from(d - b'0')))
            .filter(|w| *w <= MAX_NANOS)
            .ok_or(DurationError::Overflow)?;
    }
    let mut nanos = whole.checked_mul(per_unit).ok_or(DurationError::Overflow)?;
    let mut frac: u128 = 0;
    let mut scale: u128 = 1;
    for d in frac_digits.bytes().take(MAX_FRACTION_DIGITS as usize) {
        frac = frac * 10 + u128::from(d - b'0');
        scale *= 10;
    }
    // Truncates like Go rather than rounding.
    nanos += frac * per_unit / scale;
    Ok(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        let cases: &[(&str, Duration)] = &[
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("1m", Duration::from_secs(60)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("250μs", Duration::from_micros(250)),
            ("100ns", Duration::from_nanos(100)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            (
                "2h45m30.5s",
                Duration::from_millis((2 * 3600 + 45 * 60 + 30) * 1000 + 500),
            ),
            ("1.0000000001s", Duration::new(1, 0)),
            (" 10ms ", Duration::from_millis(10)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("+"), Err(DurationError::Empty));
        assert_eq!(parse_duration("-5s"), Err(DurationError::Negative));
        assert_eq!(
            parse_duration("30"),
            Err(DurationError::MissingUnit {
                number: "30".into()
            })
        );
        assert_eq!(
            parse_duration("1h30"),
            Err(DurationError::MissingUnit {
                number: "30".into()
            })
        );
        assert_eq!(
            parse_duration("30x"),
            Err(DurationError::UnknownUnit { unit: "x".into() })
        );
        assert_eq!(
            parse_duration("5 s"),
            Err(DurationError::UnknownUnit { unit: " s".into() })
        );
        assert_eq!(
            parse_duration("s"),
            Err(DurationError::BadNumber { rest: "s".into() })
        );
        assert_eq!(
            parse_duration("."),
            Err(DurationError::BadNumber { rest: ".".into() })
        );
        assert_eq!(parse_duration("3000000h"), Err(DurationError::Overflow));
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999999ns"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn duration_errors_read_well() {
        let text = |s: &str| parse_duration(s).err().map(|e| e.to_string());
        assert_eq!(
            text("30").as_deref(),
            Some("missing unit after \"30\" (like \"30s\", \"500ms\" or \"1m\")")
        );
        assert_eq!(
            text("3d").as_deref(),
            Some("unknown unit \"d\" (valid units: ns, us, µs, ms, s, m, h)")
        );
    }
}

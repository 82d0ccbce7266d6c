//! The scalar types a filter compares (exact decimals, instants, dates, GUIDs), parsed from literals
//! and from row values alike, so both sides of a comparison are read by the same rules.

use std::cmp::Ordering;

use uuid::Uuid;

/// An exact decimal number.
///
/// Not `f64`: a money or decimal column compared with `0.1` must compare equal to the value the Web
/// API wrote as `0.1`, and ordering must not depend on binary rounding. Both sides are kept as the
/// decimal text says and compared digit by digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decimal {
    negative: bool,
    /// The significant digits (each 0 to 9) without leading or trailing zeros; empty for zero.
    digits: Vec<u8>,
    /// The value is `0.d1d2d3... × 10^exponent`.
    exponent: i64,
}

/// No Dataverse number comes near this; refusing larger exponents keeps the arithmetic below far from
/// overflow for any input.
const MAX_EXPONENT: i64 = 1_000_000;

impl Decimal {
    /// `[+-]digits[.digits][(e|E)[+-]digits]`, the forms of an `OData` literal and of `serde_json`'s
    /// rendering of a number.
    pub(super) fn parse(text: &str) -> Option<Decimal> {
        let bytes = text.as_bytes();
        let mut at = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                at = 1;
                true
            }
            Some(b'+') => {
                at = 1;
                false
            }
            _ => false,
        };
        let digits_from = |at: usize| {
            bytes[at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        let whole = &bytes[at..at + digits_from(at)];
        at += whole.len();
        let mut fraction: &[u8] = &[];
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            fraction = &bytes[at..at + digits_from(at)];
            at += fraction.len();
            if fraction.is_empty() {
                return None;
            }
        }
        if whole.is_empty() {
            return None;
        }
        let mut exponent: i64 = 0;
        if matches!(bytes.get(at), Some(b'e' | b'E')) {
            at += 1;
            let exponent_negative = match bytes.get(at) {
                Some(b'-') => {
                    at += 1;
                    true
                }
                Some(b'+') => {
                    at += 1;
                    false
                }
                _ => false,
            };
            let len = digits_from(at);
            if len == 0 {
                return None;
            }
            for &digit in &bytes[at..at + len] {
                exponent = exponent * 10 + i64::from(digit - b'0');
                if exponent > MAX_EXPONENT {
                    return None;
                }
            }
            at += len;
            if exponent_negative {
                exponent = -exponent;
            }
        }
        if at != bytes.len() {
            return None;
        }
        let all: Vec<u8> = whole.iter().chain(fraction).map(|b| b - b'0').collect();
        let leading = all.iter().take_while(|&&d| d == 0).count();
        if leading == all.len() {
            return Some(Decimal {
                negative: false,
                digits: Vec::new(),
                exponent: 0,
            });
        }
        let trailing = all.iter().rev().take_while(|&&d| d == 0).count();
        let whole_len = i64::try_from(whole.len()).ok()?;
        let leading_len = i64::try_from(leading).ok()?;
        Some(Decimal {
            negative,
            digits: all[leading..all.len() - trailing].to_vec(),
            exponent: exponent + whole_len - leading_len,
        })
    }

    /// How many significant digits the number has, to tell whether a `f64` could have held it.
    pub(super) fn significant_digits(&self) -> usize {
        self.digits.len()
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let sign = |d: &Decimal| match (d.digits.is_empty(), d.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        };
        let by_sign = sign(self).cmp(&sign(other));
        if by_sign != Ordering::Equal || self.digits.is_empty() {
            return by_sign;
        }
        // Normalised, so a larger exponent is a larger magnitude, and equal exponents compare digit
        // by digit (a missing digit being a zero, which sorts first).
        let magnitude = self
            .exponent
            .cmp(&other.exponent)
            .then_with(|| self.digits.cmp(&other.digits));
        if self.negative {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A point in time, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Instant {
    seconds: i64,
    nanos: u32,
    /// Whether any sub-second digit was non-zero (digits past the ninth included).
    fraction: bool,
}

impl Instant {
    pub(super) fn midnight(days: i64) -> Instant {
        Instant {
            seconds: days * 86_400,
            nanos: 0,
            fraction: false,
        }
    }

    /// The order of two instants, or `None` when it could depend on sub-second rounding.
    ///
    /// Dataverse keeps date-times in whole seconds (the Web API writes `...:07Z`), and how it
    /// converts a literal's fraction (truncated, rounded to a second, or to SQL Server `datetime`'s
    /// 1/300 s) is not documented. Each side with a fraction could be read as anything in
    /// `[its second, the next second]`; when those ranges do not touch, every reading gives the same
    /// order, and otherwise the answer is not known.
    pub(super) fn order(self, other: Instant) -> Option<Ordering> {
        if self.fraction || other.fraction {
            let top = |i: Instant| i.seconds + i64::from(i.fraction);
            if self.seconds <= top(other) && other.seconds <= top(self) {
                return None;
            }
        }
        Some(
            self.seconds
                .cmp(&other.seconds)
                .then(self.nanos.cmp(&other.nanos)),
        )
    }
}

/// Parses `YYYY-MM-DD` to days since 1970-01-01.
pub(super) fn parse_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    date_days(number(&b[0..4])?, number(&b[5..7])?, number(&b[8..10])?)
}

/// Parses `YYYY-MM-DDTHH:MM[:SS[.fraction]]` followed by `Z` or `±HH:MM`: the `OData`
/// `dateTimeOffsetValue` form, which is also the form the Web API writes.
///
/// A date-time without an offset is refused: whether Dataverse reads it as UTC or as the user's time
/// zone is not documented, and a guess would shift the comparison by hours.
pub(super) fn parse_date_time(text: &str) -> Option<Instant> {
    let b = text.as_bytes();
    if b.len() < 16 || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let days = parse_date(text.get(..10)?)?;
    let hour = number(&b[11..13])?;
    let minute = number(&b[14..16])?;
    let mut at = 16;
    let mut second = 0;
    let mut nanos: u32 = 0;
    let mut fraction = false;
    if b.get(at) == Some(&b':') {
        second = number(b.get(at + 1..at + 3)?)?;
        at += 3;
        if b.get(at) == Some(&b'.') {
            at += 1;
            let len = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
            // `OData` allows up to 12 fractional digits.
            if len == 0 || len > 12 {
                return None;
            }
            for (i, &digit) in b[at..at + len].iter().enumerate() {
                let digit = u32::from(digit - b'0');
                fraction |= digit != 0;
                if i < 9 {
                    nanos = nanos * 10 + digit;
                }
            }
            for _ in len..9 {
                nanos *= 10;
            }
            at += len;
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let offset_minutes = match b.get(at..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = number(&[*h1, *h2])?;
            let minutes = number(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let local = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(Instant {
        seconds: local - offset_minutes * 60,
        nanos,
        fraction,
    })
}

/// A run of ASCII digits as a number.
fn number(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')))
}

/// Days since 1970-01-01 of a valid proleptic Gregorian date in years 1 to 9999.
fn date_days(year: i64, month: i64, day: i64) -> Option<i64> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1 || day < 1 || day > month_days {
        return None;
    }
    // Counting from March makes the leap day the last day of the (shifted) year.
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// Compares GUIDs as SQL Server compares `uniqueidentifier`: the last six bytes first, then the
/// fourth group, then the third, second and first groups, each of those three byte-swapped (the order
/// `System.Data.SqlTypes.SqlGuid` documents). Dataverse evaluates `gt`/`lt` on a GUID in the database,
/// so text order would answer some comparisons wrongly.
pub(super) fn guid_order(a: &Uuid, b: &Uuid) -> Ordering {
    let key = |id: &Uuid| {
        let u = id.as_bytes();
        [
            u[10], u[11], u[12], u[13], u[14], u[15], u[8], u[9], u[7], u[6], u[5], u[4], u[3],
            u[2], u[1], u[0],
        ]
    };
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    #[test]
    fn compares_decimals_exactly_whatever_their_spelling() {
        assert_eq!(dec("250"), dec("250.000"));
        assert_eq!(dec("2.5e2"), dec("250"));
        assert_eq!(dec("-0.0"), dec("0"));
        assert_eq!(dec("0.1"), dec("1e-1"));
        assert!(dec("249.5") < dec("250"));
        assert!(dec("0.12") < dec("0.123"));
        assert!(dec("-5") < dec("-4.99"));
        assert!(dec("-0.001") < dec("0"));
        assert!(dec("1e20") > dec("99999999999999999999"));
        assert!(dec("100") > dec("99.9999999999999999999999"));
        assert_eq!(dec("0.30000000000000004").significant_digits(), 17);
        for bad in ["", "-", ".5", "5.", "1e", "1e+", "1x", "--1", "1e9999999"] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn reads_dates_and_date_times_with_offsets() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(11_017));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(parse_date("0000-01-01"), None);
        let utc = parse_date_time("2017-09-26T00:04:07Z").unwrap();
        assert_eq!(utc.seconds, 1_506_384_247);
        assert_eq!(parse_date_time("2017-09-26T02:04:07+02:00"), Some(utc));
        assert_eq!(parse_date_time("2017-09-25T23:04:07-01:00"), Some(utc));
        assert_eq!(
            parse_date_time("2017-09-26T00:04Z").unwrap().seconds,
            1_506_384_240
        );
        let fine = parse_date_time("2017-09-26T00:04:07.25Z").unwrap();
        assert_eq!((fine.nanos, fine.fraction), (250_000_000, true));
        let zero = parse_date_time("2017-09-26T00:04:07.000Z").unwrap();
        assert_eq!(zero, utc);
        for bad in [
            "2017-09-26T00:04:07",
            "2017-09-26 00:04:07Z",
            "2017-09-26T24:00:00Z",
            "2017-09-26T00:04:60Z",
            "2017-09-26T00:04:07.Z",
            "2017-09-26T00:04:07+0200",
            "2017-09-26T00:04:07ZZ",
        ] {
            assert!(parse_date_time(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn orders_instants_unless_sub_second_rounding_could_decide() {
        let at = |s: &str| parse_date_time(s).unwrap();
        let whole = at("2021-06-01T10:00:00Z");
        assert_eq!(
            whole.order(at("2021-06-01T10:00:01Z")),
            Some(Ordering::Less)
        );
        assert_eq!(whole.order(at("2021-06-01T10:00:00.5Z")), None);
        assert_eq!(
            at("2021-06-01T10:00:01Z").order(at("2021-06-01T10:00:00.999Z")),
            None
        );
        assert_eq!(
            at("2021-06-01T10:00:02Z").order(at("2021-06-01T10:00:00.5Z")),
            Some(Ordering::Greater)
        );
        assert_eq!(
            at("2021-06-01T09:59:59Z").order(at("2021-06-01T10:00:00.5Z")),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn orders_guids_as_sql_server_does() {
        let order = |a: &str, b: &str| guid_order(&a.parse().unwrap(), &b.parse().unwrap());
        // The last group outweighs everything before it.
        let last_group = order(
            "ffffffff-ffff-ffff-ffff-000000000000",
            "00000000-0000-0000-0000-000000000001",
        );
        assert_eq!(last_group, Ordering::Less);
        // The fourth group is read in text order, before the third.
        let fourth = order(
            "00000000-0000-ffff-00ff-000000000000",
            "00000000-0000-0000-0100-000000000000",
        );
        assert_eq!(fourth, Ordering::Less);
        // The first three groups are byte-swapped: their last byte counts first.
        let third = order(
            "00000000-0000-ff00-0000-000000000000",
            "00000000-0000-0001-0000-000000000000",
        );
        assert_eq!(third, Ordering::Less);
        let first = order(
            "ff000000-0000-0000-0000-000000000000",
            "00000002-0000-0000-0000-000000000000",
        );
        assert_eq!(first, Ordering::Less);
        // The second group outweighs the first.
        let second = order(
            "ffffffff-0000-0000-0000-000000000000",
            "00000000-0100-0000-0000-000000000000",
        );
        assert_eq!(second, Ordering::Less);
    }
}

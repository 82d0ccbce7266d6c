//! The emulator's clock and the few date formats Dataverse uses.
//!
//! Dataverse returns `createdon`/`modifiedon` in whole UTC seconds (`2016-09-28T22:57:53Z`), so every
//! timestamp here is a whole number of seconds since the Unix epoch. The clock can be moved forward
//! through the control API, which is how tests reach a token's or a delta token's expiry without
//! waiting for it.

use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// The last second the emulator can represent, `9999-12-31T23:59:59Z`: Dataverse's date-time columns
/// end in year 9999 (SQL Server's `datetime` range), and every format here has a four-digit year.
pub const LATEST_SECS: i64 = 253_402_300_799;

#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    #[error("the clock only moves forward")]
    Backwards,
    #[error(
        "advancing that far would move the clock past 9999-12-31T23:59:59Z, the latest time the emulator can represent"
    )]
    PastLatest,
}

impl Clock {
    /// Now, in whole seconds, never past [`LATEST_SECS`]: [`Clock::advance`] stops short of it, but
    /// real time keeps running after a test advanced the clock to the very end.
    pub fn now(&self) -> i64 {
        Self::shifted(self.offset_secs).map_or(LATEST_SECS, |now| now.min(LATEST_SECS))
    }

    /// Now in milliseconds since the Unix epoch, moved by the same offset as [`Clock::now`]: the
    /// service-protection windows (`crate::protection`) slide on it, so a test passes a window by
    /// advancing the clock, while requests a few milliseconds apart still keep their order.
    pub fn now_ms(&self) -> i64 {
        let real = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let real = i64::try_from(real).unwrap_or(i64::MAX);
        real.saturating_add(self.offset_secs.saturating_mul(1000))
            .min(LATEST_SECS.saturating_mul(1000))
    }

    fn shifted(offset_secs: i64) -> Option<i64> {
        OffsetDateTime::now_utc()
            .unix_timestamp()
            .checked_add(offset_secs)
    }

    /// Moves the clock forward by `secs`, and returns the new now. A move that would pass
    /// [`LATEST_SECS`] is refused whole, leaving the clock where it was: a clock that cannot be
    /// formatted would make every timestamp, token and delta token after it empty.
    pub fn advance(&mut self, secs: i64) -> Result<i64, ClockError> {
        if secs < 0 {
            return Err(ClockError::Backwards);
        }
        let offset = self
            .offset_secs
            .checked_add(secs)
            .filter(|offset| Self::shifted(*offset).is_some_and(|now| now <= LATEST_SECS))
            .ok_or(ClockError::PastLatest)?;
        self.offset_secs = offset;
        Ok(self.now())
    }
}

/// `secs` in `format`, or empty past what a four-digit year can show (which [`Clock`] never reaches).
fn format(secs: i64, format: &[BorrowedFormatItem<'_>]) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// `2016-09-28T22:57:53Z`.
/// A UTC instant as .NET's invariant `DateTime.ToString()` shows it in Dataverse's messages:
/// `01/31/2024 09:00:00`.
pub fn format_dotnet(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[month]/[day]/[year] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_default()
}

pub fn format_utc(secs: i64) -> String {
    format(
        secs,
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"),
    )
}

/// An HTTP `Date` (RFC 9110 IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn format_http_date(secs: i64) -> String {
    format(
        secs,
        format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ),
    )
}

/// The date part of a delta token: `08/22/2017 08:10:44`, UTC.
pub fn format_token_time(secs: i64) -> String {
    format(
        secs,
        format_description!("[month]/[day]/[year] [hour]:[minute]:[second]"),
    )
}

pub fn parse_token_time(s: &str) -> Option<i64> {
    let format = format_description!("[month]/[day]/[year] [hour]:[minute]:[second]");
    PrimitiveDateTime::parse(s, format)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// Parses an ISO 8601 date-time as Dataverse accepts it in a body or a filter: with `Z` or an offset,
/// or with neither (then it is taken as UTC). Fractions of a second are dropped, as the service stores
/// whole seconds.
pub fn parse_datetime(s: &str) -> Option<i64> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let without_fraction = s.split('.').next().unwrap_or(s);
    let local = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    if let Ok(t) = PrimitiveDateTime::parse(without_fraction, local) {
        return Some(t.assume_offset(UtcOffset::UTC).unix_timestamp());
    }
    let short = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    if let Ok(t) = PrimitiveDateTime::parse(s, short) {
        return Some(t.assume_offset(UtcOffset::UTC).unix_timestamp());
    }
    // The OData literal form `2021-01-01T00:00:00-00:00` is RFC 3339 except for the negative zero
    // offset, which RFC 3339 parsers accept; `+HH:MM` without seconds is also covered above.
    None
}

/// `2024-01-31`.
pub fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s, format_description!("[year]-[month]-[day]")).ok()
}

pub fn format_date(date: Date) -> String {
    date.format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_representable_second_still_formats() {
        assert_eq!(format_utc(LATEST_SECS), "9999-12-31T23:59:59Z");
        assert_eq!(format_utc(LATEST_SECS + 1), "");
    }

    #[test]
    fn refuses_to_advance_backwards_or_past_the_latest_second_and_stays_put() {
        let mut clock = Clock::default();
        assert_eq!(clock.advance(-1), Err(ClockError::Backwards));
        assert_eq!(clock.advance(i64::MIN), Err(ClockError::Backwards));
        for secs in [i64::MAX, LATEST_SECS] {
            assert_eq!(clock.advance(secs), Err(ClockError::PastLatest));
            assert_eq!(clock.offset_secs, 0);
        }
        let to_end = LATEST_SECS - OffsetDateTime::now_utc().unix_timestamp() - 5;
        let now = clock.advance(to_end).unwrap();
        assert!(now <= LATEST_SECS && now > LATEST_SECS - 60, "{now}");
        assert!(clock.advance(3600).is_err());
        assert_eq!(clock.offset_secs, to_end);
    }

    #[test]
    fn formats_whole_utc_seconds() {
        assert_eq!(format_utc(1_475_103_473), "2016-09-28T22:57:53Z");
        assert_eq!(format_token_time(1_503_389_444), "08/22/2017 08:10:44");
        assert_eq!(
            format_http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn parses_offsets_and_drops_fractions() {
        assert_eq!(parse_datetime("2016-09-28T22:57:53Z"), Some(1_475_103_473));
        assert_eq!(
            parse_datetime("2016-09-28T15:57:53-07:00"),
            Some(1_475_103_473)
        );
        assert_eq!(
            parse_datetime("2016-09-28T22:57:53.789Z"),
            Some(1_475_103_473)
        );
        assert_eq!(parse_datetime("2016-09-28T22:57:53"), Some(1_475_103_473));
        assert_eq!(parse_datetime("yesterday"), None);
        assert_eq!(parse_token_time("08/22/2017 08:10:44"), Some(1_503_389_444));
    }
}

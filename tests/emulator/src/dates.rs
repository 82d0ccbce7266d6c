//! The three date and time behaviours: what a write of each stores, and how a stored value is shown
//! to the user.
//!
//! - **User local** (`Edm.DateTimeOffset`): an instant, stored and returned as UTC. A value with an
//!   offset is converted; one without is taken as UTC, as Microsoft Learn says the Web API does
//!   ("Behavior and format of the date and time column"). Its formatted value is in the user's time
//!   zone, also when the column's `Format` is `DateOnly`: the app stores such a date as midnight in
//!   the user's zone, so east of UTC the raw value's date is the day before the one shown.
//! - **Date only** (`Edm.Date`): a day, `2024-01-31`; anything else is refused by the `OData`
//!   reader. Shown as is.
//! - **Time-zone independent** (`Edm.DateTimeOffset`): the wall-clock time as written, never
//!   converted, and returned with a `Z` although it is no UTC instant. A value sent with an offset
//!   keeps its wall-clock time and loses the offset (inferred: "no time zone conversion is
//!   performed").
//!
//! The user's time zone is a fixed offset from UTC (no daylight saving), set with
//! `--user-timezone-offset-minutes` or `POST /_emulator/timezone`.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::clock;
use crate::schema::DateBehavior;

/// The widest offset a time zone has (UTC+14:00, UTC-12:00 at the other end), in minutes.
pub const MAX_OFFSET_MINUTES: i32 = 14 * 60;

/// Reads a value written to a date and time column: the seconds since the epoch to store, or
/// `None` when the `OData` reader cannot convert it to `Edm.DateTimeOffset`.
pub fn read(behavior: DateBehavior, text: &str) -> Option<i64> {
    match behavior {
        DateBehavior::UserLocal => clock::parse_datetime(text),
        DateBehavior::TimeZoneIndependent => match OffsetDateTime::parse(text, &Rfc3339) {
            // The wall-clock time as written; the offset is not applied.
            Ok(t) => Some(t.replace_offset(UtcOffset::UTC).unix_timestamp()),
            Err(_) => clock::parse_datetime(text),
        },
    }
}

/// A stored UTC instant as the user sees it: `1/31/2024 9:00 AM`, or `1/31/2024` with `date_only`,
/// in the user's zone (`offset_minutes` east of UTC) when `convert`.
pub fn show_instant(
    stored: &str,
    offset_minutes: i32,
    convert: bool,
    date_only: bool,
) -> Option<String> {
    let secs = clock::parse_datetime(stored)?;
    let utc = OffsetDateTime::from_unix_timestamp(secs).ok()?;
    let local = if convert {
        let offset = UtcOffset::from_whole_seconds(offset_minutes.saturating_mul(60)).ok()?;
        utc.to_offset(offset)
    } else {
        utc
    };
    let date = show_date(local.date());
    if date_only {
        return Some(date);
    }
    let (hour, minute) = (local.hour(), local.minute());
    let (twelve, half) = match hour {
        0 => (12, "AM"),
        1..=11 => (hour, "AM"),
        12 => (12, "PM"),
        _ => (hour - 12, "PM"),
    };
    Some(format!("{date} {twelve}:{minute:02} {half}"))
}

/// A date-only value as shown: `1/31/2024`.
pub fn show_day(stored: &str) -> Option<String> {
    clock::parse_date(stored).map(show_date)
}

/// en-US short date: month and day without leading zeros.
fn show_date(date: time::Date) -> String {
    format!("{}/{}/{}", u8::from(date.month()), date.day(), date.year())
}

/// `+01:00` for 60: how the control API reports the offset.
pub fn offset_text(offset_minutes: i32) -> String {
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let abs = offset_minutes.unsigned_abs();
    format!("{sign}{:02}:{:02}", abs / 60, abs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_local_converts_offsets_and_takes_bare_values_as_utc() {
        let ul = DateBehavior::UserLocal;
        assert_eq!(
            read(ul, "2024-01-31T09:00:00+01:00").map(clock::format_utc),
            Some("2024-01-31T08:00:00Z".to_owned())
        );
        assert_eq!(
            read(ul, "2024-01-31T09:00:00").map(clock::format_utc),
            Some("2024-01-31T09:00:00Z".to_owned())
        );
        assert_eq!(read(ul, "2024-01-31"), None);
    }

    #[test]
    fn independent_keeps_the_wall_clock() {
        let tzi = DateBehavior::TimeZoneIndependent;
        assert_eq!(
            read(tzi, "2024-01-31T09:00:00+05:30").map(clock::format_utc),
            Some("2024-01-31T09:00:00Z".to_owned())
        );
        assert_eq!(
            read(tzi, "2024-01-31T09:00:00").map(clock::format_utc),
            Some("2024-01-31T09:00:00Z".to_owned())
        );
    }

    #[test]
    fn shows_dates_as_en_us_does() {
        let at = "2024-01-31T00:30:00Z";
        assert_eq!(
            show_instant(at, 0, true, false).as_deref(),
            Some("1/31/2024 12:30 AM")
        );
        assert_eq!(
            show_instant(at, -60, true, false).as_deref(),
            Some("1/30/2024 11:30 PM")
        );
        assert_eq!(
            show_instant("2024-07-04T13:05:00Z", 0, true, false).as_deref(),
            Some("7/4/2024 1:05 PM")
        );
        assert_eq!(
            show_instant(at, 600, true, true).as_deref(),
            Some("1/31/2024")
        );
        assert_eq!(show_day("2024-01-31").as_deref(), Some("1/31/2024"));
        assert_eq!(offset_text(-330), "-05:30");
    }
}

//! The emulator's clock and the few date formats Dataverse uses.
//!
//! Dataverse returns `createdon`/`modifiedon` in whole UTC seconds (`2016-09-28T22:57:53Z`), so every
//! timestamp here is a whole number of seconds since the Unix epoch. The clock can be moved forward
//! through the control API, which is how tests reach a token's or a delta token's expiry without
//! waiting for it.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: i64,
}

impl Clock {
    /// Now, in whole seconds.
    pub fn now(&self) -> i64 {
        OffsetDateTime::now_utc().unix_timestamp() + self.offset_secs
    }

    pub fn advance(&mut self, secs: i64) {
        self.offset_secs += secs;
    }
}

/// `2016-09-28T22:57:53Z`.
pub fn format_utc(secs: i64) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// The date part of a delta token: `08/22/2017 08:10:44`, UTC.
pub fn format_token_time(secs: i64) -> String {
    let format = format_description!("[month]/[day]/[year] [hour]:[minute]:[second]");
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
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
    fn formats_whole_utc_seconds() {
        assert_eq!(format_utc(1_475_103_473), "2016-09-28T22:57:53Z");
        assert_eq!(format_token_time(1_503_389_444), "08/22/2017 08:10:44");
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

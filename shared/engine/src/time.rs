//! Event time. Everything inside the engine is milliseconds since the Unix epoch (UTC):
//! cheap to compare, to hash and to store. chrono is used only at the edges, to parse and print.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const MS_PER_SECOND: i64 = 1_000;
pub const MS_PER_DAY: i64 = 86_400_000;

/// A point in time, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    /// Parses an ISO-8601 / RFC 3339 timestamp with a time zone (`2026-11-23T07:40:03.123Z`,
    /// `2026-11-23T08:40:03+01:00`). A bare date (`2026-11-23`) is read as midnight UTC.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        if let Some(t) = parse_utc(text.as_bytes()) {
            return Ok(t);
        }
        parse_general(text)
    }

    /// UTC calendar day number (days since 1970-01-01); used for "distinct active days".
    pub fn day(self) -> i64 {
        self.0.div_euclid(MS_PER_DAY)
    }

    pub fn plus_days(self, days: f64) -> Self {
        Timestamp(self.0.saturating_add((days * MS_PER_DAY as f64) as i64))
    }

    pub fn minus_days(self, days: f64) -> Self {
        self.plus_days(-days)
    }

    /// Age of `self` seen from `now`, in days; never negative (an event "in the future" of an
    /// evaluation counts as just happened).
    pub fn days_before(self, now: Timestamp) -> f64 {
        (now.0.saturating_sub(self.0)).max(0) as f64 / MS_PER_DAY as f64
    }

    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
            None => format!("{}ms", self.0),
        }
    }
}

/// Any RFC 3339 timestamp, or a bare date as midnight UTC.
fn parse_general(text: &str) -> Result<Timestamp, TimestampError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Timestamp(t.timestamp_millis()));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = date.and_hms_opt(0, 0, 0) {
            return Ok(Timestamp(t.and_utc().timestamp_millis()));
        }
    }
    Err(TimestampError {
        value: text.to_owned(),
    })
}

/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// The form Segment libraries send, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, read without chrono's
/// general parser: it is on the path of every event and every evaluation of a sign-up trait.
/// Anything else (offsets, lower case, leap seconds, long fractions) returns `None` and goes
/// the general way, which gives the same answer for everything this accepts.
fn parse_utc(b: &[u8]) -> Option<Timestamp> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[b.len() - 1] != b'Z'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let millis = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..]
            if (1..=9).contains(&fraction.len()) && fraction.iter().all(u8::is_ascii_digit) =>
        {
            // Truncated to milliseconds, as chrono's `timestamp_millis` does.
            (0..3).fold(0, |ms, i| {
                ms * 10 + fraction.get(i).map_or(0, |&c| i64::from(c - b'0'))
            })
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)?;
    let days = i64::from(chrono::Datelike::num_days_from_ce(&date)) - UNIX_EPOCH_DAYS_FROM_CE;
    Some(Timestamp(
        days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * MS_PER_SECOND + millis,
    ))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not an ISO-8601 timestamp with a time zone (expected e.g. 2026-11-23T07:40:03.123Z)")]
pub struct TimestampError {
    pub value: String,
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_rfc3339())
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Millis(i64),
            Text(String),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Millis(ms) => Ok(Timestamp(ms)),
            Repr::Text(text) => Timestamp::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_with_offsets_and_dates() {
        let z = Timestamp::parse("2026-11-23T07:40:03.123Z").unwrap();
        let plus_one = Timestamp::parse("2026-11-23T08:40:03.123+01:00").unwrap();
        assert_eq!(z, plus_one);
        assert_eq!(z.to_rfc3339(), "2026-11-23T07:40:03.123Z");
        let date = Timestamp::parse("2026-11-23").unwrap();
        assert_eq!(date.day(), z.day());
        assert_eq!(date.0 % MS_PER_DAY, 0);
    }

    #[test]
    fn rejects_timestamps_without_zone_or_garbage() {
        assert!(Timestamp::parse("2026-11-23T07:40:03").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("").is_err());
    }

    #[test]
    fn the_fast_path_agrees_with_chrono() {
        for text in [
            "2026-11-23T07:40:03.123Z",
            "2026-11-23T07:40:03Z",
            "2026-11-23T07:40:03.1Z",
            "2026-11-23T07:40:03.123456789Z",
            "1969-12-31T23:59:59.999Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "2024-02-29T12:00:00Z",
        ] {
            let fast = parse_utc(text.as_bytes()).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(Ok(fast), parse_general(text), "{text}");
        }
        // Left to chrono: it decides.
        for text in [
            "2026-11-23T07:40:03.1234567891Z",
            "2026-11-23T23:59:60Z",
            "2026-11-23t07:40:03Z",
            "2026-11-23T07:40:03z",
            "2026-11-23 07:40:03Z",
            "2026-11-23T07:40:03+00:00",
            "2026-11-23T07:40:03.Z",
            "2025-02-29T12:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "+2026-11-23T07:40:03Z",
            "2026-11-23T07:40:0aZ",
        ] {
            assert_eq!(parse_utc(text.as_bytes()), None, "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_agrees_with_chrono_everywhere(
            year in 0u32..10_000,
            month in 0u32..14,
            day in 0u32..33,
            hour in 0u32..26,
            minute in 0u32..62,
            second in 0u32..62,
            fraction in proptest::option::of("[0-9]{0,11}"),
        ) {
            let fraction = fraction.map_or(String::new(), |f| format!(".{f}"));
            let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z");
            if let Some(fast) = parse_utc(text.as_bytes()) {
                proptest::prop_assert_eq!(Ok(fast), parse_general(&text), "{}", text);
            }
            // Whichever way it goes, the public parser agrees with chrono.
            proptest::prop_assert_eq!(Timestamp::parse(&text).ok(), parse_general(&text).ok(), "{}", text);
        }
    }

    #[test]
    fn days_before_is_never_negative() {
        let t = Timestamp(10 * MS_PER_DAY);
        assert_eq!(t.days_before(Timestamp(12 * MS_PER_DAY)), 2.0);
        assert_eq!(t.days_before(Timestamp(9 * MS_PER_DAY)), 0.0);
    }
}

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
    fn days_before_is_never_negative() {
        let t = Timestamp(10 * MS_PER_DAY);
        assert_eq!(t.days_before(Timestamp(12 * MS_PER_DAY)), 2.0);
        assert_eq!(t.days_before(Timestamp(9 * MS_PER_DAY)), 0.0);
    }
}

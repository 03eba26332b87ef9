//! Durations as humantime strings ("30s", "1h 30m") in stored JSON and API
//! bodies, so a configuration read from the database is readable too. Part
//! of the storage format: `#[serde(with = "...")]` on every stored duration.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de};

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(de::Error::custom)
}

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

/// The same for an optional duration (absent or null: `None`).
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_duration(&text).map_err(de::Error::custom))
            .transpose()
    }
}

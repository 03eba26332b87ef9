//! RFC 3339 timestamps for `SystemTime` fields in JSON output.

use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
}

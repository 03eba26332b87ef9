//! Parsers for command-line values shared by several verbs.

use std::collections::BTreeMap;

// Value parsers shared with the HTTP API live with the validation they serve.
pub use crate::spec::{
    parse_count as count, parse_duration as duration, parse_size as size, parse_time as time,
};

/// A role name, for `serve --role` and `--require-role`.
pub fn role(s: &str) -> Result<String, String> {
    crate::spec::check_role(s).map(|()| s.to_owned())
}

/// An RFC 3339 time, or `none` (`--start`, `--until`).
pub fn time_or_none(s: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    match s.trim() {
        "none" => Ok(None),
        text => crate::spec::parse_time(text).map(Some),
    }
}

/// An overlap policy by name (`--on-overlap`).
pub fn overlap(s: &str) -> Result<crate::model::OverlapPolicy, String> {
    crate::model::names::parse("overlap policy", s)
}

/// A misfire policy by name (`--misfire`).
pub fn misfire(s: &str) -> Result<crate::model::MisfirePolicy, String> {
    crate::model::names::parse("misfire policy", s)
}

/// An event level by name (`--level`).
pub fn level(s: &str) -> Result<crate::model::Level, String> {
    crate::model::names::parse("level", s)
}

/// `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// Collects `KEY=VALUE` pairs; a repeated key keeps its last value.
pub fn to_map(pairs: Vec<(String, String)>) -> BTreeMap<String, String> {
    pairs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_values() {
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(key_value("=x").is_err());
        assert!(key_value("novalue").is_err());
        assert_eq!(duration("2s").unwrap(), Duration::from_secs(2));
        assert!(duration("soon").unwrap_err().contains("soon"));
        assert_eq!(size("64MiB").unwrap(), 64 * 1024 * 1024);
        assert_eq!(size("1000").unwrap(), 1000);
        assert!(size("lots").is_err());
        assert_eq!(count("10_000").unwrap(), 10_000);
    }
}

//! Parsers for command-line values shared by several verbs.

use std::collections::BTreeMap;
use std::time::Duration;

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

/// A duration such as `2s`, `500ms`, `5m`, `1h 30m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration ({e}); use e.g. 2s, 500ms, 5m"))
}

/// A size such as `64MiB`, `1GiB`, `512KiB` or a plain number of bytes.
pub fn size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("'{s}' is not a size ({e}); use e.g. 64MiB, 1GiB"))
}

/// A count that may use `_` separators: `10_000_000`.
pub fn count(s: &str) -> Result<u64, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))
}

#[cfg(test)]
mod tests {
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

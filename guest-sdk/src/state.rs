//! A small key-value store kept per configuration between runs: counters,
//! cursors, "last seen" marks. Keys up to 256 bytes, values up to 64 KiB,
//! 1 MiB per configuration.

use std::str::FromStr;

use crate::Error;
use crate::host;

/// The stored value of `key`.
pub fn get(key: &str) -> Option<String> {
    host::state_get(key)
}

/// The stored value of `key` parsed as `T`; `Ok(None)` when absent.
pub fn get_parsed<T>(key: &str) -> Result<Option<T>, Error>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match host::state_get(key) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| Error::msg(format!("state '{key}' = '{text}' is not valid: {e}"))),
    }
}

/// Stores `value` under `key`; fails when a limit would be exceeded.
pub fn set(key: &str, value: impl ToString) -> Result<(), Error> {
    host::state_set(key, &value.to_string()).map_err(Error::msg)
}

/// Removes `key` (no error if absent).
pub fn remove(key: &str) {
    host::state_remove(key)
}

/// All keys, sorted.
pub fn keys() -> Vec<String> {
    host::state_keys()
}

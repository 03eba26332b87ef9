//! Events: what a run or the host itself said, at which level, from where.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr, VariantNames};

/// Severity of an event, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "lowercase", ascii_case_insensitive)]
pub enum Level {
    Trace,
    Debug,
    Info,
    #[strum(to_string = "warning", serialize = "warn")]
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The level's rank as stored (trace 0 .. error 4), so a minimum level
    /// is a comparison in the database.
    pub fn rank(self) -> i64 {
        self as i64
    }

    /// The level of a stored rank; an unknown rank reads as an error.
    pub fn from_rank(rank: i64) -> Level {
        match rank {
            0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warning,
            _ => Level::Error,
        }
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "lowercase")]
pub enum EventSource {
    /// The task called `log.write`.
    Task,
    /// A line the task wrote to stdout.
    Stdout,
    /// A line the task wrote to stderr.
    Stderr,
    /// The host, about the run (limits hit, events dropped, ...).
    Host,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The source of a stored name; an unknown one reads as the host.
    pub fn from_stored(name: &str) -> EventSource {
        name.parse().unwrap_or(EventSource::Host)
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at: DateTime<Utc>,
    pub level: Level,
    pub source: EventSource,
    pub code: String,
    pub message: String,
    pub task_id: Option<i64>,
    pub run_id: Option<String>,
}

impl NewEvent {
    /// An event from the host itself (plugins, scheduler), not from a run.
    pub fn host(level: Level, code: &str, message: impl Into<String>) -> Self {
        NewEvent {
            at: Utc::now(),
            level,
            source: EventSource::Host,
            code: code.to_owned(),
            message: message.into(),
            task_id: None,
            run_id: None,
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub level: Level,
    pub source: EventSource,
    pub code: String,
    pub message: String,
    pub task_id: Option<i64>,
    pub task_name: Option<String>,
    pub run_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_keep_their_stored_ranks() {
        for (level, rank) in [
            (Level::Trace, 0),
            (Level::Debug, 1),
            (Level::Info, 2),
            (Level::Warning, 3),
            (Level::Error, 4),
        ] {
            assert_eq!(level.rank(), rank);
            assert_eq!(Level::from_rank(rank), level);
        }
        assert_eq!(Level::Warning.to_string(), "warning");
        assert_eq!("Warn".parse::<Level>(), Ok(Level::Warning));
    }

    #[test]
    fn parses_levels_by_name() {
        let level = |s| super::super::names::parse::<Level>("level", s);
        assert_eq!(level("WARN"), Ok(Level::Warning));
        assert!(level("loud").unwrap_err().contains("loud"));
        assert!(Level::Error > Level::Warning);
    }
}

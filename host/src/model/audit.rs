//! The audit trail: who changed what, and when. Every change an operator
//! makes to configurations, settings and API tokens, and every swap in a
//! plugins folder, is one entry with the fields that changed (before and
//! after). It is written by whoever made the change (the CLI, the API, an
//! instance watching its folder) and never by a task.

use chrono::{DateTime, Utc};
use serde::Serialize;
use strum::{Display, EnumString, IntoStaticStr, VariantNames};

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "lowercase")]
pub enum AuditKind {
    /// A task configuration (its subject is its name).
    Configuration,
    /// An identifier's setting (`IDENTIFIER KEY`).
    Setting,
    /// An API token (its name).
    Token,
    /// A component swapped in or out of an instance's plugins folder.
    Plugins,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One field that changed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Change {
    pub field: String,
    /// `null` when the field was not there (created).
    pub before: serde_json::Value,
    /// `null` when it is gone (deleted).
    pub after: serde_json::Value,
}

/// An entry to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    pub at: DateTime<Utc>,
    /// Who: an operating-system user with the CLI, an API token by name,
    /// an instance.
    pub actor: String,
    pub kind: AuditKind,
    pub subject: String,
    /// What was done: created, changed, deleted, disabled, enabled, ...
    pub action: String,
    pub changes: Vec<Change>,
}

/// An entry as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: AuditKind,
    pub subject: String,
    pub action: String,
    pub changes: Vec<Change>,
}

/// The fields of `after` that differ from `before` (each serialized as a
/// JSON object; a missing side is `null`), in field order.
pub fn changes<T: Serialize>(before: Option<&T>, after: Option<&T>) -> Vec<Change> {
    let object = |v: Option<&T>| match v.map(serde_json::to_value) {
        Some(Ok(serde_json::Value::Object(map))) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (object(before), object(after));
    let mut fields: Vec<&String> = before.keys().chain(after.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter_map(|field| {
            let (b, a) = (before.get(field), after.get(field));
            (b != a).then(|| Change {
                field: field.clone(),
                before: b.cloned().unwrap_or(serde_json::Value::Null),
                after: a.cloned().unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
}

/// A secret's value as the trail shows it.
pub const MASKED: &str = "***";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Schedule, TaskConfig};

    #[test]
    fn only_the_fields_that_changed_with_before_and_after() {
        let before = TaskConfig::new(
            "Nightly",
            "Acme.Cleanup",
            Schedule::cron("0 30 2 * * *", "UTC").unwrap(),
        );
        let mut after = before.clone();
        after.limits.timeout = Duration::from_secs(300);
        after.retries = 2;
        let changed = changes(Some(&before), Some(&after));
        let fields: Vec<&str> = changed.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["limits", "retries"]);
        assert_eq!(changed[1].before, serde_json::json!(0));
        assert_eq!(changed[1].after, serde_json::json!(2));
        // Created: every field, from null.
        let created = changes(None, Some(&after));
        assert!(created.iter().all(|c| c.before.is_null()));
        assert!(created.iter().any(|c| c.field == "implementation"));
        assert!(changes(Some(&after), Some(&after)).is_empty());
    }
}

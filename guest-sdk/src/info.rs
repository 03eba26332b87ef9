//! [`TaskInfo`]: what a task says about itself.

use crate::bindings::cronwerk::task::types;

/// Identity of a task, returned by [`ScheduledTask::info`](crate::ScheduledTask::info).
///
/// ```
/// let info = cronwerk_guest::TaskInfo::new("Acme.Cleanup", "Clean-up")
///     .description("Deletes old files")
///     .version("1.2.0")
///     .default_schedule("0 30 2 * * *");
/// assert_eq!(info.identifier(), "Acme.Cleanup");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    identifier: String,
    display_name: String,
    description: String,
    version: String,
    default_schedule: Option<String>,
}

impl TaskInfo {
    /// `identifier` is what configurations refer to: use a company prefix
    /// (`Acme.Something`) and only letters, digits, `.`, `_` and `-`.
    pub fn new(identifier: impl Into<String>, display_name: impl Into<String>) -> Self {
        TaskInfo {
            identifier: identifier.into(),
            display_name: display_name.into(),
            description: String::new(),
            version: "0.0.0".into(),
            default_schedule: None,
        }
    }

    /// One or two sentences on what the task does.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// The task's version, e.g. `env!("CARGO_PKG_VERSION")`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// A schedule suggested for new configurations (`every 10m`, a cron
    /// expression); the operator decides.
    pub fn default_schedule(mut self, schedule: impl Into<String>) -> Self {
        self.default_schedule = Some(schedule.into());
        self
    }

    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    pub(crate) fn into_wit(self) -> types::TaskInfo {
        types::TaskInfo {
            identifier: self.identifier,
            display_name: self.display_name,
            description: self.description,
            version: self.version,
            default_schedule: self.default_schedule,
        }
    }
}

//! What a task says about itself when loaded (`describe`), and the bounds
//! on it: its texts are kept with every run and plugin row and served by
//! the API, so a component must not be able to make them large.

use serde::Serialize;

/// The longest texts a component may describe itself with.
pub const MAX_VERSION_BYTES: usize = 64;
pub const MAX_DISPLAY_NAME_BYTES: usize = 256;
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
pub const MAX_DEFAULT_SCHEDULE_BYTES: usize = 256;

/// What a task says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskInfo {
    pub identifier: String,
    pub display_name: String,
    pub description: String,
    pub version: String,
    pub default_schedule: Option<String>,
}

impl TaskInfo {
    /// The first field over its limit, named as the contract names it
    /// (the identifier has its own rule): (field, size, limit).
    pub fn oversized(&self) -> Option<(&'static str, usize, usize)> {
        let fields = [
            ("version", self.version.len(), MAX_VERSION_BYTES),
            (
                "display-name",
                self.display_name.len(),
                MAX_DISPLAY_NAME_BYTES,
            ),
            ("description", self.description.len(), MAX_DESCRIPTION_BYTES),
            (
                "default-schedule",
                self.default_schedule.as_ref().map_or(0, String::len),
                MAX_DEFAULT_SCHEDULE_BYTES,
            ),
        ];
        fields.into_iter().find(|(_, size, limit)| size > limit)
    }
}

//! What the registry tells the rest of the host (and the operator) when the
//! folder changes: one event per decision, with a stable code to filter on
//! and a message that says what happened and, for problems, what to do.

use serde::Serialize;

use crate::runtime::Component;

use crate::model::Level;

/// A component now serves an identifier that nothing served before.
pub const PLUGIN_LOADED: &str = "PLUGIN_LOADED";
/// An identifier is now served by another version or file (also: a rename).
pub const PLUGIN_UPDATED: &str = "PLUGIN_UPDATED";
/// A file could not be loaded.
pub const PLUGIN_FAILED: &str = "PLUGIN_FAILED";
/// A file claims an identifier another file already serves.
pub const PLUGIN_CONFLICT: &str = "PLUGIN_CONFLICT";
/// A file is gone, or an identifier is no longer served.
pub const PLUGIN_REMOVED: &str = "PLUGIN_REMOVED";
/// A file the compile cache lacks is being compiled (seconds for a big
/// Python or JavaScript guest); then how long it took.
pub const PLUGIN_COMPILING: &str = "PLUGIN_COMPILING";
pub const PLUGIN_COMPILED: &str = "PLUGIN_COMPILED";

/// One change of the registry, as reported to the `on_event` callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginEvent {
    pub level: Level,
    pub code: &'static str,
    pub message: String,
}

impl PluginEvent {
    pub(super) fn new(level: Level, code: &'static str, message: String) -> Self {
        PluginEvent {
            level,
            code,
            message,
        }
    }

    /// Operators read the log, not the callback's consumer.
    pub(super) fn log(&self) {
        let (code, message) = (self.code, &self.message);
        match self.level {
            Level::Error => tracing::error!(code, "{message}"),
            Level::Warning => tracing::warn!(code, "{message}"),
            Level::Info => tracing::info!(code, "{message}"),
            Level::Debug => tracing::debug!(code, "{message}"),
            Level::Trace => tracing::trace!(code, "{message}"),
        }
    }
}

/// `Acme.Hello 1.0.0 (sha256 0123456789ab)`: enough to tell versions apart
/// in a log line.
pub(super) fn describe(component: &Component) -> String {
    let info = component.info();
    format!(
        "{} {} (sha256 {})",
        info.identifier,
        info.version,
        short(component.sha256())
    )
}

pub(super) fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

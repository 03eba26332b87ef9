//! Instances: who a serving process is, its heartbeat, and the plugin
//! files it reports.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr, VariantNames};

/// Who this instance is; reported to tasks through the `instance` import.
#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    pub name: String,
    pub roles: Vec<String>,
}

/// How an instance's plugin file fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "lowercase")]
pub enum PluginState {
    /// Loaded and serving its identifier.
    Ok,
    /// Not loadable (the error says why).
    Failed,
    /// Loadable, but another file serves the same identifier.
    Conflict,
    /// Being compiled (found at start, not in the compile cache).
    Compiling,
}

impl PluginState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One plugin file as an instance sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginRow {
    pub instance: String,
    pub file: String,
    /// The file's content now (for a failed file, what failed).
    pub sha256: String,
    /// What serves from this file: its identifier and version ...
    pub identifier: Option<String>,
    pub version: Option<String>,
    /// ... and the sha256 of that content, when it is not the file's now
    /// (an update that failed, while the previous version serves on).
    pub serving_sha256: Option<String>,
    pub loaded_at: DateTime<Utc>,
    pub status: PluginState,
    pub error: Option<String>,
}

impl PluginRow {
    /// The sha256 of what serves from this file, if anything does: its
    /// content, or, after an update that failed, the previous version's.
    pub fn served_sha256(&self) -> Option<&str> {
        match (self.status, &self.serving_sha256) {
            (PluginState::Ok, _) => Some(&self.sha256),
            (PluginState::Failed, Some(previous)) => Some(previous),
            _ => None,
        }
    }
}

/// A cronwerk instance and its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceRow {
    pub name: String,
    /// Which `serve` process holds the name: one id per process, so two
    /// processes started under one `--name` are told apart.
    pub process: String,
    /// The machine it runs on, with its process id there.
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub roles: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

/// What a heartbeat found.
#[derive(Debug, Clone, PartialEq)]
pub enum Heartbeat {
    /// The name is still this process's.
    Kept,
    /// Another process took the name over (`serve --replace`): this one
    /// must stop serving.
    Displaced(InstanceRow),
}

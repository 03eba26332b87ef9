//! The registry as others see it: one entry per file with its status, in the
//! shape the CLI prints and the store records.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

/// Whether a file is in use, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum PluginStatus {
    /// Loaded, and serving its identifier.
    Ok,
    /// Could not be loaded; `error` is the loader's message (it names the
    /// file, what is wrong and what would fix it).
    Failed { error: String },
    /// Loaded, but `serving` already serves `identifier`, so this file is
    /// not used while that one is there.
    /// Found when the folder was opened, not in the compile cache: being
    /// compiled in the background.
    Compiling,
    Conflict {
        /// The entry's own `identifier` says it; not repeated in JSON.
        #[serde(skip)]
        identifier: String,
        #[serde(rename = "serving_file")]
        serving: PathBuf,
    },
}

impl PluginStatus {
    /// `ok`, `failed` or `conflict`, as stored and printed.
    pub fn as_str(&self) -> &'static str {
        match self {
            PluginStatus::Ok => "ok",
            PluginStatus::Failed { .. } => "failed",
            PluginStatus::Conflict { .. } => "conflict",
            PluginStatus::Compiling => "compiling",
        }
    }
}

/// One `*.wasm` file of the plugins folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginEntry {
    pub file: PathBuf,
    /// Hex sha256 of the file's current content; empty if it is unreadable.
    pub sha256: String,
    /// What the component describes itself as. For a failed file that keeps
    /// serving its previous version (`serving` is true), that version's.
    pub identifier: Option<String>,
    pub display_name: Option<String>,
    pub version: Option<String>,
    /// The sha256 of the component that serves from this file when it is
    /// not the file's content: an update failed and the previous version
    /// serves on (`sha256` is then what failed).
    pub serving_sha256: Option<String>,
    /// When this content was loaded (or found broken); a rename keeps it.
    #[serde(with = "crate::runtime::time_format")]
    pub loaded_at: SystemTime,
    #[serde(flatten)]
    pub status: PluginStatus,
    /// Whether `get(identifier)` returns this file's component.
    pub serving: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: PluginStatus) -> PluginEntry {
        PluginEntry {
            file: "/p/b.wasm".into(),
            sha256: "ab".into(),
            identifier: Some("Acme.B".into()),
            display_name: Some("B".into()),
            version: Some("1.0.0".into()),
            serving_sha256: None,
            loaded_at: SystemTime::UNIX_EPOCH,
            status,
            serving: false,
        }
    }

    #[test]
    fn json_has_a_flat_status_tag() {
        let json = serde_json::to_value(entry(PluginStatus::Conflict {
            identifier: "Acme.B".into(),
            serving: "/p/a.wasm".into(),
        }))
        .unwrap();
        assert_eq!(json["status"], "conflict");
        assert_eq!(json["serving_file"], "/p/a.wasm");
        assert_eq!(json["identifier"], "Acme.B");
        assert_eq!(json["serving"], false);
        assert_eq!(json["loaded_at"], "1970-01-01T00:00:00.000Z");
        let json = serde_json::to_value(entry(PluginStatus::Failed {
            error: "bad".into(),
        }))
        .unwrap();
        assert_eq!(json["status"], "failed");
        assert_eq!(json["error"], "bad");
        let json = serde_json::to_value(entry(PluginStatus::Ok)).unwrap();
        assert_eq!(json["status"], "ok");
    }
}

//! `/api/plugins`: the components this instance's plugins folder holds, each
//! with its version, sha256, status (ok, failed, conflict) and error, and,
//! for loaded ones, what it imports, i.e. which host capabilities it asks for;
//! `POST /api/plugins/reload` rescans the folder now.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::plugins::{PluginEntry, PluginStatus, Plugins};

/// One `.wasm` file of the plugins folder.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plugin {
    /// The file name inside the plugins folder.
    pub file: String,
    /// The file's content now; for a failed file, what failed.
    pub sha256: String,
    /// The sha256 of the version that serves from this file when it is not
    /// the file's content: an update failed and the previous version serves
    /// on (`identifier`, `version`, `contract` and `imports` are that
    /// version's; `sha256`, `error` and `loaded_at` the failed content's).
    pub serving_sha256: Option<String>,
    /// What the component says it implements; none for a file that never loaded.
    pub identifier: Option<String>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub version: Option<String>,
    /// ok, failed or conflict.
    pub status: String,
    /// Why it failed, or which file it conflicts with.
    pub error: Option<String>,
    /// Whether runs of `identifier` use this file.
    pub serving: bool,
    pub loaded_at: DateTime<Utc>,
    /// The version of cronwerk's task contract it was built against
    /// (`0.1.0`, `0.2.0`); none for a file that is not loaded.
    pub contract: Option<String>,
    /// The interfaces it imports (`cronwerk:task/log@0.2.0`, `wasi:filesystem/types@0.2.6`, ...).
    pub imports: Vec<String>,
    /// Those imports as capabilities: log, state, config, filesystem, ...
    pub capabilities: Vec<String>,
    pub size_bytes: Option<u64>,
}

/// `cronwerk:task/log@0.1.0` → `log`, `wasi:filesystem/preopens@0.2.6` →
/// `filesystem`: what an operator asks of an import.
pub fn capability(import: &str) -> String {
    let unversioned = import.split('@').next().unwrap_or(import);
    match unversioned.split_once('/') {
        Some(("cronwerk:task", interface)) => interface.to_owned(),
        Some((package, _)) => package
            .split_once(':')
            .map_or(package, |(_, name)| name)
            .to_owned(),
        None => unversioned.to_owned(),
    }
}

fn plugin(plugins: &Plugins, e: PluginEntry) -> Plugin {
    let component = e
        .identifier
        .as_deref()
        .and_then(|id| plugins.get(id))
        .filter(|c| c.sha256() == e.serving_sha256.as_deref().unwrap_or(&e.sha256));
    let imports: Vec<String> = component
        .as_ref()
        .map(|c| c.imports().to_vec())
        .unwrap_or_default();
    // `types` only carries the contract's type definitions: nothing to grant.
    let mut capabilities: Vec<String> = imports
        .iter()
        .map(|i| capability(i))
        .filter(|c| c != "types")
        .collect();
    capabilities.sort();
    capabilities.dedup();
    let error = match &e.status {
        PluginStatus::Ok | PluginStatus::Compiling => None,
        PluginStatus::Failed { error } => Some(error.clone()),
        PluginStatus::Conflict { serving, .. } => Some(format!(
            "{} is already served by {}: remove or rename one of them",
            e.identifier.as_deref().unwrap_or("its identifier"),
            serving.file_name().map_or_else(
                || serving.display().to_string(),
                |n| n.to_string_lossy().into()
            )
        )),
    };
    Plugin {
        file: e.file.file_name().map_or_else(
            || e.file.display().to_string(),
            |n| n.to_string_lossy().into(),
        ),
        sha256: e.sha256,
        serving_sha256: e.serving_sha256,
        identifier: e.identifier,
        display_name: e.display_name,
        description: component.as_ref().map(|c| c.info().description.clone()),
        version: e.version,
        status: e.status.as_str().to_owned(),
        error,
        serving: e.serving,
        loaded_at: e.loaded_at.into(),
        contract: component
            .as_ref()
            .map(|c| c.contract().version().to_owned()),
        imports,
        capabilities,
        size_bytes: component.as_ref().map(|c| c.size_bytes() as u64),
    }
}

#[utoipa::path(
    get, path = "/api/plugins", tag = "plugins",
    responses((status = 200, description = "This instance's plugins folder, by file name", body = [Plugin]))
)]
pub async fn list(State(s): State<AppState>) -> Json<Vec<Plugin>> {
    let entries = s.plugins.entries();
    Json(entries.into_iter().map(|e| plugin(&s.plugins, e)).collect())
}

#[utoipa::path(
    post, path = "/api/plugins/reload", tag = "plugins",
    security(("token" = [])),
    responses(
        (status = 200, description = "Rescanned this instance's plugins folder now (as on SIGHUP); the folder as it is after", body = [Plugin]),
        (status = 401, description = "No or wrong token", body = super::error::ErrorBody),
    )
)]
pub async fn reload(State(s): State<AppState>) -> Json<Vec<Plugin>> {
    s.plugins.rescan().await;
    list(State(s)).await
}

#[cfg(test)]
mod tests {
    use super::capability;

    #[test]
    fn imports_read_as_capabilities() {
        assert_eq!(capability("cronwerk:task/log@0.1.0"), "log");
        assert_eq!(capability("wasi:filesystem/preopens@0.2.6"), "filesystem");
        assert_eq!(capability("wasi:cli/stdout@0.2.6"), "cli");
        assert_eq!(capability("odd"), "odd");
    }
}

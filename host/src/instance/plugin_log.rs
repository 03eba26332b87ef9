//! What the store knows of this instance's plugins: their events in the
//! event log and their status in the plugins table. The registry reports
//! synchronously and the store is async, so events pass through a channel
//! to a task that records them, and a second task rewrites the status rows
//! after every change of the folder.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use crate::api::Metrics;
use crate::model::audit::{AuditKind, Change, NewAudit};
use crate::model::{NewEvent, PluginRow, PluginState};
use crate::plugins::{EventSink, PluginEntry, PluginEvent, PluginStatus, Plugins};
use crate::store::Store;

/// The registry's event sink: counts each event, then queues it for
/// [`record_events`].
pub(super) fn event_sink(metrics: Arc<Metrics>) -> (EventSink, UnboundedReceiver<PluginEvent>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = Arc::new(move |e: PluginEvent| {
        metrics.plugin_event(&e);
        let _ = tx.send(e);
    });
    (sink, rx)
}

/// Appends every queued plugin event to the event log, and the swaps
/// (a component loaded, replaced or removed) to the audit trail too.
pub(super) fn record_events(
    store: Arc<dyn Store>,
    mut events: UnboundedReceiver<PluginEvent>,
    instance: String,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let Some(swap) = swap_of(&e, &instance, store.clock().now()) {
                record(store.append_audit(&swap).await, "a plugins-folder swap");
            }
            let event = NewEvent::host(e.level, e.code, e.message);
            record(store.append_events(&[event]).await, "a plugin event");
        }
    })
}

fn record(result: crate::store::StoreResult<()>, what: &str) {
    match result {
        // Reported by the store's watcher; the event was on stderr.
        Err(err) if err.is_unavailable() => {}
        Err(err) => tracing::error!("recording {what} failed: {err}"),
        Ok(()) => {}
    }
}

/// The audit entry of a plugin event that swapped a component in or out.
fn swap_of(e: &PluginEvent, instance: &str, at: chrono::DateTime<chrono::Utc>) -> Option<NewAudit> {
    let action = match e.code {
        crate::plugins::PLUGIN_LOADED => "loaded",
        crate::plugins::PLUGIN_UPDATED => "updated",
        crate::plugins::PLUGIN_REMOVED => "removed",
        _ => return None,
    };
    Some(NewAudit {
        at,
        actor: format!("instance {instance} (its plugins folder)"),
        kind: AuditKind::Plugins,
        subject: instance.to_owned(),
        action: action.to_owned(),
        changes: vec![Change {
            field: "component".into(),
            before: serde_json::Value::Null,
            after: e.message.clone().into(),
        }],
    })
}

/// Records the plugins' status now and after every change of the folder.
pub(super) fn report_status(
    store: Arc<dyn Store>,
    plugins: Arc<Plugins>,
    instance: String,
) -> JoinHandle<()> {
    let mut changes = plugins.changes();
    tokio::spawn(async move {
        loop {
            let rows = plugin_rows(&instance, &plugins.entries());
            match store.set_plugins(&instance, &rows).await {
                Err(e) if e.is_unavailable() => {}
                Err(e) => tracing::error!("recording plugin status failed: {e}"),
                Ok(_) => {}
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
}

fn plugin_rows(instance: &str, entries: &[PluginEntry]) -> Vec<PluginRow> {
    entries
        .iter()
        .map(|e| {
            let (status, error) = state_of(&e.status);
            PluginRow {
                instance: instance.to_owned(),
                file: e.file.display().to_string(),
                sha256: e.sha256.clone(),
                identifier: e.identifier.clone(),
                version: e.version.clone(),
                serving_sha256: e.serving_sha256.clone(),
                loaded_at: e.loaded_at.into(),
                status,
                error,
            }
        })
        .collect()
}

fn state_of(status: &PluginStatus) -> (PluginState, Option<String>) {
    match status {
        PluginStatus::Ok => (PluginState::Ok, None),
        PluginStatus::Failed { error } => (PluginState::Failed, Some(error.clone())),
        PluginStatus::Compiling => (PluginState::Compiling, None),
        PluginStatus::Conflict {
            identifier,
            serving,
        } => (
            PluginState::Conflict,
            Some(format!(
                "{identifier} is already served by {}: remove or rename one of them",
                serving.display()
            )),
        ),
    }
}

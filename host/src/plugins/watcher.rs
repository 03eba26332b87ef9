//! Turning file-system notifications into rescans. Notifications only say
//! "look again": the rescan compares the whole folder with the registry, so
//! a lost, merged or reordered notification cannot leave it wrong for long.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc;

use super::Plugins;
use super::scan::is_candidate;

/// A copy fires a burst of notifications; one rescan per burst is enough.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often the folder is rescanned without a notification: network file
/// systems, a changed symlink target and a deleted and recreated folder
/// send none the watch sees.
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);

/// Keeps the folder watched; dropping it stops watching, including a rescan
/// that is under way (its results are simply not applied).
pub struct WatchHandle {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
    wake: mpsc::UnboundedSender<()>,
}

impl WatchHandle {
    /// What asks for a rescan now (an operator's `kill -HUP`).
    pub fn rescan_trigger(&self) -> impl Fn() + Send + 'static + use<> {
        let wake = self.wake.clone();
        move || {
            let _ = wake.send(());
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn start(plugins: &Arc<Plugins>, dir: &Path) -> anyhow::Result<WatchHandle> {
    let runtime = tokio::runtime::Handle::try_current()
        .context("watching the plugins folder needs a Tokio runtime")?;
    let (wake, woken) = mpsc::unbounded_channel::<()>();
    let on_request = wake.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, move |batch: DebounceEventResult| {
        let relevant = match batch {
            Ok(events) => events.iter().any(|e| is_candidate(&e.path)),
            Err(e) => {
                // A rescan is the safe reaction to anything odd.
                tracing::warn!("watching the plugins folder: {e}");
                true
            }
        };
        if relevant {
            let _ = wake.send(());
        }
    })
    .context("starting the plugins folder watcher")?;
    debouncer
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    let task = runtime.spawn(rescan_on_wake(Arc::downgrade(plugins), woken));
    Ok(WatchHandle {
        _debouncer: debouncer,
        task,
        wake: on_request,
    })
}

/// Rescans once right away, for changes made between the initial scan and
/// the start of watching, then once per wake-up (a notification, or a
/// request), and every [`RESCAN_EVERY`] without one. Wake-ups that arrive
/// during a rescan are merged into one more rescan. Holds the registry
/// weakly so that watching does not keep it alive.
async fn rescan_on_wake(plugins: Weak<Plugins>, mut woken: mpsc::UnboundedReceiver<()>) {
    loop {
        match plugins.upgrade() {
            Some(plugins) => plugins.rescan().await,
            None => return,
        }
        tokio::select! {
            wake = woken.recv() => if wake.is_none() { return },
            _ = tokio::time::sleep(RESCAN_EVERY) => {}
        }
        while woken.try_recv().is_ok() {}
    }
}

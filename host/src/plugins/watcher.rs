//! Turning file-system notifications into rescans. Notifications only say
//! "look again": the rescan compares the whole folder with the registry, so
//! a lost, merged or reordered notification cannot leave it wrong for long.
//! A folder that is deleted and created again is a new folder to the
//! kernel: it is noticed by the rescans and watched again.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
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

/// How often a missing folder is looked for, so that one deleted and
/// created again is watched again within a moment.
const MISSING_EVERY: Duration = Duration::from_secs(1);

type Watcher = Debouncer<notify::RecommendedWatcher>;

/// The folder's identity: device, inode and birth time (a file system may
/// give a recreated folder its old inode number back).
type Identity = (u64, u64, Option<std::time::SystemTime>);

fn identity(dir: &Path) -> Option<Identity> {
    std::fs::metadata(dir)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.created().ok()))
}

/// Keeps the folder watched; dropping it stops watching, including a rescan
/// that is under way (its results are simply not applied).
pub struct WatchHandle {
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
    // Set when an event concerns the folder itself (deleted, moved): its
    // watch is gone with it, and must be made again once it is back.
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let folder_lost = lost.clone();
    let watched_dir = dir.to_owned();
    let debouncer = new_debouncer(DEBOUNCE, move |batch: DebounceEventResult| {
        let relevant = match batch {
            Ok(events) => {
                if events.iter().any(|e| e.path == watched_dir) {
                    folder_lost.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                events
                    .iter()
                    .any(|e| is_candidate(&e.path) || e.path == watched_dir)
            }
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
    let watcher = Arc::new(Mutex::new(debouncer));
    let watched = identity(dir);
    watch(&watcher, dir).with_context(|| format!("watching {}", dir.display()))?;
    let folder = Folder {
        dir: dir.to_owned(),
        watcher,
        watched,
        lost,
    };
    let task = runtime.spawn(rescan_on_wake(Arc::downgrade(plugins), woken, folder));
    Ok(WatchHandle {
        task,
        wake: on_request,
    })
}

fn watch(watcher: &Mutex<Watcher>, dir: &Path) -> notify::Result<()> {
    watcher
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .watcher()
        .watch(dir, RecursiveMode::NonRecursive)
}

/// The watched folder, and which incarnation of it the watch is on.
struct Folder {
    dir: PathBuf,
    /// Owned here: dropping the rescan task stops the notifications.
    watcher: Arc<Mutex<Watcher>>,
    watched: Option<Identity>,
    /// An event said the folder itself went away.
    lost: Arc<std::sync::atomic::AtomicBool>,
}

impl Folder {
    /// Watches the folder again if it was deleted and created anew since
    /// it was watched; says whether it exists now.
    fn rewatch_if_recreated(&mut self) -> bool {
        let now = identity(&self.dir);
        let lost = self.lost.load(std::sync::atomic::Ordering::Relaxed);
        if now.is_some() && (now != self.watched || lost) {
            self.lost.store(false, std::sync::atomic::Ordering::Relaxed);
            let mut watcher = self
                .watcher
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // The old incarnation's watch is gone with it; this may fail.
            let _ = watcher.watcher().unwatch(&self.dir);
            match watcher
                .watcher()
                .watch(&self.dir, RecursiveMode::NonRecursive)
            {
                Ok(()) => {
                    tracing::info!(
                        "the plugins folder {} was created again: watching it again",
                        self.dir.display()
                    );
                    self.watched = now;
                }
                Err(e) => tracing::warn!(
                    "cannot watch the recreated plugins folder {}: {e}; rescanning it every {}s",
                    self.dir.display(),
                    RESCAN_EVERY.as_secs()
                ),
            }
        }
        now.is_some()
    }
}

/// Rescans once right away, for changes made between the initial scan and
/// the start of watching, then once per wake-up (a notification, or a
/// request), and every [`RESCAN_EVERY`] without one (every
/// [`MISSING_EVERY`] while the folder is missing). Wake-ups that arrive
/// during a rescan are merged into one more rescan. Holds the registry
/// weakly so that watching does not keep it alive.
async fn rescan_on_wake(
    plugins: Weak<Plugins>,
    mut woken: mpsc::UnboundedReceiver<()>,
    mut folder: Folder,
) {
    let mut was_missing = false;
    loop {
        let exists = folder.rewatch_if_recreated();
        let Some(registry) = plugins.upgrade() else {
            return;
        };
        // A missing folder is said once (by the rescan), then looked for
        // quietly; what was loaded keeps serving meanwhile.
        if exists || !was_missing {
            registry.rescan().await;
        }
        drop(registry);
        was_missing = !exists;
        let every = if exists { RESCAN_EVERY } else { MISSING_EVERY };
        tokio::select! {
            wake = woken.recv() => if wake.is_none() { return },
            _ = tokio::time::sleep(every) => {}
        }
        while woken.try_recv().is_ok() {}
    }
}

//! The plugins folder: turns the `*.wasm` files an operator drops into a
//! folder into ready components, one per task identifier, and keeps that
//! mapping in step with the folder while the host runs.
//!
//! The folder is the source of truth and a file's identity is its content.
//! Loading (compiling, linking, `describe`) happens beside the hot path:
//! [`Plugins::get`] only ever reads the current mapping, and a new version
//! replaces the old one only once it has fully loaded. A run holds its own
//! [`Component`] clone, so runs in flight finish on the version they began
//! with. A serving instance opens the folder with what the compile cache
//! holds and compiles the rest in the background, smallest first
//! ([`Plugins::open_cached_first`]). [`PluginExecutor`] is how a serving
//! instance runs what the folder serves.

mod entry;
mod event;
mod executor;
mod registry;
mod scan;
mod serving_memo;
mod watcher;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::Context as _;

use crate::model::Level;
use crate::runtime::{CacheOutcome, CompileCache, Component, Runtime, read_component_file};

pub use entry::{PluginEntry, PluginStatus};
pub use event::{
    PLUGIN_COMPILED, PLUGIN_COMPILING, PLUGIN_CONFLICT, PLUGIN_FAILED, PLUGIN_LOADED,
    PLUGIN_REMOVED, PLUGIN_UPDATED, PluginEvent,
};
pub use executor::PluginExecutor;
pub use watcher::WatchHandle;

use registry::State;

/// Receives every [`PluginEvent`], after it has been logged.
pub type EventSink = Arc<dyn Fn(PluginEvent) + Send + Sync>;

/// The registry of one plugins folder. Shared as `Arc<Plugins>`.
pub struct Plugins {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    cache: CompileCache,
    on_event: EventSink,
    /// Where which content serves each identifier is kept across restarts.
    memo: Option<PathBuf>,
    /// Swapped whole after each rescan; held only to clone or replace the
    /// `Arc`, never across an await, so `get` never waits on a compilation.
    state: RwLock<Arc<State>>,
    /// One rescan at a time: two concurrent ones would load the same files
    /// twice and report each change twice.
    rescanning: tokio::sync::Mutex<()>,
    changes: tokio::sync::watch::Sender<u64>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// Files that were not in the compile cache when the folder was opened
    /// to serve at once: compiled in the background, listed meanwhile.
    compiling: RwLock<Vec<PluginEntry>>,
}

/// How a rescan treats a file it has to load.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    /// Compile it if the cache does not hold it.
    Always,
    /// The same, saying so while it compiles (`PLUGIN_COMPILING`): a
    /// rescan of a folder already serving, where a change that takes
    /// seconds to load should be seen to be under way.
    Announced,
    /// Only from the cache; the rest is returned, not loaded.
    CachedOnly,
}

impl Plugins {
    /// Scans `dir` once (creating it if missing) and loads every component;
    /// never fails because of a bad file, only if the folder itself cannot
    /// be created or read. Compiled code is kept in `cache`.
    pub async fn open(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        cache: CompileCache,
        on_event: EventSink,
    ) -> anyhow::Result<Arc<Self>> {
        let (plugins, _) =
            Self::first_scan(runtime, dir, cache, on_event, Load::Always, None).await?;
        Ok(plugins)
    }

    /// Like [`open`](Self::open), but returns once what the compile cache
    /// holds is loaded: the files that need compiling are compiled in the
    /// background (listed as compiling meanwhile) and join when ready. A
    /// serving instance opens its folder this way, so a big guest that is
    /// not compiled yet does not hold up every other task. `memo` is a file
    /// where which content serves each identifier is kept, so that after a
    /// restart the same version serves when two files claim one identifier.
    pub async fn open_cached_first(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        cache: CompileCache,
        on_event: EventSink,
        memo: Option<PathBuf>,
    ) -> anyhow::Result<Arc<Self>> {
        let (plugins, deferred) =
            Self::first_scan(runtime, dir, cache, on_event, Load::CachedOnly, memo).await?;
        if !deferred.is_empty() {
            let now = SystemTime::now();
            *plugins.compiling.write().unwrap_or_else(|e| e.into_inner()) = deferred
                .into_iter()
                .map(|f| PluginEntry {
                    file: f.path,
                    sha256: f.sha256.unwrap_or_default(),
                    identifier: None,
                    display_name: None,
                    version: None,
                    serving_sha256: None,
                    loaded_at: now,
                    status: PluginStatus::Compiling,
                    serving: false,
                })
                .collect();
            let mut files: Vec<PathBuf> = plugins
                .compiling
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|e| e.file.clone())
                .collect();
            files.sort_by_key(|f| file_size(f));
            let background = plugins.clone();
            tokio::spawn(async move {
                for file in files {
                    // Into the cache (compiled in a child process where
                    // there is one); then a scan of what the cache holds
                    // lets it join (and whatever else is ready by now).
                    let _ = background.precompile(&file).await;
                    if let Err(e) = background.try_rescan(Load::CachedOnly).await {
                        tracing::warn!("cannot read the plugins folder: {e}");
                    }
                    background
                        .compiling
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|e| e.file != file);
                    background.changes.send_modify(|n| *n += 1);
                }
                // What did not compile is reported as failed by a full scan.
                background.rescan().await;
            });
        }
        Ok(plugins)
    }

    /// Whether files found at start are still being compiled.
    pub fn is_compiling(&self) -> bool {
        !self
            .compiling
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The registry of `dir` (created if missing) after its first scan,
    /// with the files that scan left unloaded.
    async fn first_scan(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        cache: CompileCache,
        on_event: EventSink,
        mode: Load,
        memo: Option<PathBuf>,
    ) -> anyhow::Result<(Arc<Self>, Vec<scan::Found>)> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the plugins folder {}", dir.display()))?;
        let hints = memo.as_deref().map(serving_memo::read).unwrap_or_default();
        let plugins = Arc::new(Plugins {
            runtime,
            dir,
            cache,
            on_event,
            memo,
            state: RwLock::new(Arc::new(State::with_hints(hints))),
            rescanning: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            compiling: RwLock::new(Vec::new()),
        });
        let unloaded = plugins
            .try_rescan(mode)
            .await
            .with_context(|| format!("reading the plugins folder {}", plugins.dir.display()))?;
        Ok((plugins, unloaded))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component currently serving `identifier`.
    pub fn get(&self, identifier: &str) -> Option<Component> {
        self.current().get(identifier).cloned()
    }

    /// Every plugin file seen, sorted by file name, with its status (those
    /// still compiling too).
    pub fn entries(&self) -> Vec<PluginEntry> {
        let mut entries = self.current().entries();
        let compiling = self.compiling.read().unwrap_or_else(|e| e.into_inner());
        entries.extend(
            compiling
                .iter()
                .filter(|c| !entries.iter().any(|e| e.file == c.file))
                .cloned()
                .collect::<Vec<_>>(),
        );
        entries.sort_by(|a, b| a.file.cmp(&b.file));
        entries
    }

    /// Reconciles the registry with the folder now. A folder that cannot be
    /// read leaves the registry as it is (and logs why): an unmounted volume
    /// should not unregister every task.
    pub async fn rescan(&self) {
        if let Err(e) = self.try_rescan(Load::Announced).await {
            tracing::warn!(
                "cannot read the plugins folder {}: {e}; keeping the plugins loaded so far",
                self.dir.display()
            );
        }
    }

    /// Starts watching the folder; each burst of changes triggers a
    /// [`rescan`](Self::rescan). Dropping the handle stops watching.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<WatchHandle> {
        watcher::start(self, &self.dir)
    }

    /// A counter bumped after every rescan that changed anything (its value
    /// means nothing else), so callers can wait for a change instead of
    /// sleeping.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Compile-cache hits and misses since `open`.
    pub fn cache_stats(&self) -> (u64, u64) {
        (
            self.cache_hits.load(Ordering::Relaxed),
            self.cache_misses.load(Ordering::Relaxed),
        )
    }

    fn current(&self) -> Arc<State> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Returns the files left unloaded (only with [`Load::CachedOnly`]).
    async fn try_rescan(&self, mode: Load) -> std::io::Result<Vec<scan::Found>> {
        let _one_at_a_time = self.rescanning.lock().await;
        let found = scan::list(self.dir.clone()).await?;
        let old = self.current();
        // Sequential: compiling is CPU-bound, and loads in parallel would
        // compete with the runs the host is there for.
        let mut loaded = HashMap::new();
        let mut deferred = Vec::new();
        let mut to_load: Vec<&scan::Found> = found.iter().filter(|f| old.needs_load(f)).collect();
        to_load.sort_by_key(|f| file_size(&f.path));
        // Files the background compilation has yet to reach are left to it:
        // a scan (the watcher's) must not compile them all in one go and
        // hold up the ones it would finish sooner.
        let compiling: Vec<PathBuf> = self
            .compiling
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| e.file.clone())
            .collect();
        for f in to_load {
            let load = match mode {
                Load::Always | Load::Announced if compiling.contains(&f.path) => {
                    self.load_if_cached(&f.path).await
                }
                Load::Always => Some(self.load(&f.path).await),
                Load::Announced => Some(self.load_saying_so(&f.path).await),
                Load::CachedOnly => self.load_if_cached(&f.path).await,
            };
            match load {
                Some(load) => {
                    loaded.insert(f.path.clone(), load);
                }
                None => deferred.push(f.path.clone()),
            }
        }
        // Files left for later are not in this scan's picture at all: the
        // next scan finds them new.
        let (found, deferred): (Vec<scan::Found>, Vec<scan::Found>) =
            found.into_iter().partition(|f| !deferred.contains(&f.path));
        let (new, events) = registry::reconcile(&old, &found, &deferred, loaded, SystemTime::now());
        let changed = !events.is_empty() || old.entries() != new.entries();
        if let Some(memo) = self.memo.as_deref().filter(|_| changed) {
            serving_memo::write(memo, &new.serving_versions());
        }
        *self
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(new);
        for event in events {
            event.log();
            (self.on_event)(event);
        }
        // After the events, so whoever wakes up on the counter sees them.
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
        Ok(deferred)
    }

    /// The file's component if the compile cache holds its code; `None`
    /// if it needs compiling.
    async fn load_if_cached(&self, path: &Path) -> Option<Result<Component, String>> {
        let bytes = match self.read(path).await {
            Ok(bytes) => bytes,
            Err(e) => return Some(Err(e)),
        };
        let origin = path.display().to_string();
        match self
            .runtime
            .load_bytes_if_cached(&bytes, origin, &self.cache)
            .await
        {
            Ok(Some(component)) => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                Some(Ok(component))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }

    async fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        let owned = path.to_owned();
        let max = self.runtime.engine().settings.load.max_file_bytes;
        tokio::task::spawn_blocking(move || read_component_file(&owned, max))
            .await
            .map_err(|e| format!("reading {} failed: {e}", path.display()))?
            .map_err(|e| e.to_string())
    }

    /// Leaves the file's compiled code in the cache without loading it
    /// (see [`Runtime::precompile`]); counted as a cache miss, and the load
    /// from the cache that follows as a hit.
    async fn precompile(&self, path: &Path) -> Result<(), String> {
        let bytes = self.read(path).await?;
        let origin = path.display().to_string();
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        self.runtime
            .precompile(bytes, origin, &self.cache)
            .await
            .map_err(|e| e.to_string())
    }

    /// Loads a file found new or changed; if the compile cache lacks it,
    /// says that it is compiling and, once done, how long it took, so a
    /// hot reload that takes seconds is seen to be under way.
    async fn load_saying_so(&self, path: &Path) -> Result<Component, String> {
        if let Some(cached) = self.load_if_cached(path).await {
            return cached;
        }
        let say = |event: PluginEvent| {
            event.log();
            (self.on_event)(event);
        };
        let name = path.display();
        say(PluginEvent::new(
            Level::Info,
            event::PLUGIN_COMPILING,
            format!("{name}: compiling (it is not in the compile cache)"),
        ));
        let started = std::time::Instant::now();
        let loaded = self.load(path).await;
        if loaded.is_ok() {
            say(PluginEvent::new(
                Level::Info,
                event::PLUGIN_COMPILED,
                format!(
                    "{name}: compiled in {:.1} s",
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
        loaded
    }

    async fn load(&self, path: &Path) -> Result<Component, String> {
        let bytes = self.read(path).await?;
        let origin = path.display().to_string();
        let (component, outcome) = self
            .runtime
            .load_bytes_cached(bytes, origin, &self.cache)
            .await
            .map_err(|e| e.to_string())?;
        let counter = match outcome {
            CacheOutcome::Hit => &self.cache_hits,
            CacheOutcome::Miss => &self.cache_misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(component)
    }
}

/// A file's size, for loading the smallest first: a Rust task compiles in
/// milliseconds and should not wait behind a Python guest's seconds.
fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(u64::MAX, |m| m.len())
}

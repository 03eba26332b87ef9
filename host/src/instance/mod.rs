//! One cronwerk instance, assembled in one place: the runtime, the plugins
//! folder and its watcher, the dispatcher that runs what the folder serves,
//! the instance's presence among those sharing the store, the bookkeeping
//! that keeps the store's view of its plugins current, the watch on the
//! store that reports its outages, and the HTTP API.
//!
//! `cronwerk serve` parses flags into an [`InstanceConfig`], words the
//! [`Notice`]s for the operator, and otherwise only calls
//! [`Instance::start`] and [`Instance::run_until`]. The order of the steps
//! in `start` is a promise to other instances: the first heartbeat is
//! written before the instance says it is serving.

mod outages;
mod plugin_log;
mod presence;
#[cfg(test)]
mod tests;
pub mod traces;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use crate::api::{ApiContext, ApiServer, Listen, Metrics};
use crate::model::{InstanceInfo, Level, NewEvent};
use crate::plugins::{PluginEvent, PluginExecutor, Plugins, WatchHandle};
use crate::runtime::{CompileCache, EngineSettings, HttpSettings, LoadLimits, Runtime};
use crate::scheduler::farm::LIVENESS;
use crate::scheduler::trace::Tracing;
use crate::scheduler::{Dispatcher, DispatcherConfig};
use crate::store::{Observed, Store, StoreHealth};

/// What an instance is made of and how it behaves; `serve`'s flags.
pub struct InstanceConfig {
    pub store: Arc<dyn Store>,
    /// This instance's name and roles.
    pub info: InstanceInfo,
    /// Every component in it is loaded and watched.
    pub plugins_dir: PathBuf,
    /// Where compiled components are kept (opened, so its folder passed
    /// the checks).
    pub cache: CompileCache,
    /// A program with the `compile-worker` verb (this one, when it is
    /// `cronwerk`) to compile components in a child process, so the
    /// compiler's memory is returned when it exits; `None` compiles in
    /// process.
    pub compile_worker: Option<PathBuf>,
    /// Where the API's token file lives.
    pub data_dir: PathBuf,
    /// A running run's lease (see [`DispatcherConfig::lease`]).
    pub lease: Duration,
    /// How long running tasks get to stop on shutdown.
    pub grace: Duration,
    /// Runs that may execute at once.
    pub max_concurrent_runs: u32,
    /// What loading one component may cost.
    pub load: LoadLimits,
    /// What runs' outbound HTTP may reach and receive besides their grants.
    pub http: HttpSettings,
    /// Also run the broadcasts made this long before the instance started.
    pub catch_up_broadcasts: Option<Duration>,
    /// How far ahead slots are claimed (see [`DispatcherConfig::look_ahead`]).
    pub look_ahead: Duration,
    /// Retention: finished runs kept per configuration, and how long
    /// events and broadcasts are kept.
    pub keep_runs: u32,
    pub keep_events: Duration,
    /// Where the API listens; `None`: the default address, if free.
    pub listen: Option<Listen>,
    /// Print a newly created API token on stderr (else only where it is kept).
    pub print_token: bool,
    /// Take the name over from a live process serving it (which then
    /// stops), instead of refusing to start.
    pub replace: bool,
    /// Compile-cache entries unused this long are deleted, and beyond this
    /// many bytes the least recently used ones (at start, then daily).
    pub cache_limits: (Duration, u64),
    /// Where run traces go (the OTLP/HTTP traces URL, see
    /// [`traces::endpoint`]); `None`: nowhere.
    pub otlp_endpoint: Option<String>,
    /// Receives what the operator should hear of while the instance starts.
    pub notices: Box<dyn Fn(Notice) + Send + Sync>,
}

/// Something the operator should hear of, in the order it happens; the
/// caller words it (the instance does not know how it was started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A live process on another machine serves this name: waiting for
    /// its heartbeat to lapse (it crashed) or to go on (then refusing).
    WaitingForNamesake { pid: u32, host: String },
    /// ... and its heartbeat lapsed: this process takes the name.
    NamesakeGone,
    /// The name was held by another process, which this one replaces.
    TakingOver {
        pid: u32,
        host: String,
        why: Takeover,
    },
    /// Broadcasts made before the instance started that it will run.
    CatchingUp {
        broadcasts: u64,
        since: DateTime<Utc>,
    },
    /// Started; the API comes next.
    Serving {
        configurations: usize,
        loaded: usize,
        failed: usize,
        /// Found, not in the compile cache: compiling in the background.
        compiling: usize,
    },
    /// What the API says as it starts (where it listens, its token), worded.
    Api { level: Level, line: String },
}

impl Notice {
    /// Whether the operator should see it as a warning.
    pub fn is_warning(&self) -> bool {
        matches!(self, Notice::Api { level, .. } if *level >= Level::Warning)
    }
}

/// Why a process takes a name over from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// That process no longer exists on this machine (a crash moments ago).
    Gone,
    /// `--replace`: that process stops when it sees this one took over.
    Replace,
}

/// Why [`Instance::run_until`] ended other than by its signal.
#[derive(Debug, thiserror::Error)]
#[error(
    "instance {name} was taken over by pid {} on {} (serve --replace): this process stops",
    by.pid,
    by.host
)]
pub struct Displaced {
    pub name: String,
    pub by: crate::model::InstanceRow,
}

pub use presence::{NameTaken, host_name};

/// A started instance; [`run_until`](Self::run_until) runs it.
pub struct Instance {
    store: Arc<dyn Store>,
    name: String,
    /// This process's id in the instance rows.
    process: String,
    /// Set when another process took the name over.
    displaced: tokio::sync::watch::Receiver<Option<crate::model::InstanceRow>>,
    dispatcher: Arc<Dispatcher>,
    api: Option<ApiServer>,
    background: Background,
    traces: Option<Arc<traces::OtlpTraces>>,
    _watch: WatchHandle,
}

/// Rescans the plugins folder on SIGHUP (`kill -HUP`, `systemctl reload`)
/// rather than waiting for a notification or the periodic rescan.
fn rescan_on_hangup(rescan: impl Fn() + Send + 'static) -> anyhow::Result<JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: rescanning the plugins folder");
            rescan();
        }
    }))
}

/// Keeps the compile cache within its limits: at start, then daily.
fn collect_cache_garbage(
    cache: CompileCache,
    (max_age, max_bytes): (Duration, u64),
) -> JoinHandle<()> {
    const EVERY: Duration = Duration::from_secs(24 * 3600);
    tokio::spawn(async move {
        loop {
            let cache = cache.clone();
            let now = std::time::SystemTime::now();
            let done =
                tokio::task::spawn_blocking(move || cache.collect_garbage(max_age, max_bytes, now))
                    .await;
            match done {
                Ok(Ok(c)) if c.removed > 0 => tracing::info!(
                    "compile cache: removed {} entries ({} bytes) unused for {} or beyond {} bytes; {} kept ({} bytes)",
                    c.removed,
                    c.freed_bytes,
                    humantime::format_duration(max_age),
                    max_bytes,
                    c.kept,
                    c.kept_bytes
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("compile cache garbage collection: {e}"),
                Err(e) => tracing::warn!("compile cache garbage collection failed: {e}"),
            }
            tokio::time::sleep(EVERY).await;
        }
    })
}

/// Tasks that live as long as the instance; aborted with it, also when
/// starting fails half-way.
#[derive(Default)]
struct Background(Vec<JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Instance {
    /// Loads the plugins folder and starts watching it, joins the instances
    /// sharing the store, records that it started, and starts the API. The
    /// dispatcher waits for [`run_until`](Self::run_until).
    pub async fn start(mut config: InstanceConfig) -> anyhow::Result<Instance> {
        // Every part of the instance uses the store through its watcher, so
        // an outage is reported once per interval, not once per failed call.
        let health = Arc::new(StoreHealth::default());
        config.store = Observed::new(config.store, health.clone());
        let store = config.store.clone();
        let name = &config.info.name;
        // The name first, before minutes of compiling: a second process
        // under it refuses (or waits, or replaces) right away.
        let process = uuid::Uuid::now_v7().to_string();
        let started_at = store.clock().now();
        let me = presence::row(&config.info, &process, started_at);
        presence::claim_name(&*store, &me, config.replace, &*config.notices).await?;
        let metrics = Metrics::new();
        let (plugins, plugin_events) = open_plugins(&config, &metrics).await?;
        let watch = plugins.watch().with_context(|| {
            let dir = config.plugins_dir.display();
            format!("watching the plugins folder {dir}")
        })?;
        let mut background = Background(vec![
            plugin_log::record_events(store.clone(), plugin_events, name.clone()),
            plugin_log::report_status(store.clone(), plugins.clone(), name.clone()),
            outages::record(store.clone(), health.clone()),
            rescan_on_hangup(watch.rescan_trigger())?,
            collect_cache_garbage(config.cache.clone(), config.cache_limits),
        ]);
        let (displaced_tx, displaced) = tokio::sync::watch::channel(None);
        background.0.push(join(&config, me, displaced_tx).await?);
        (config.notices)(announce(&*store, &plugins, name).await?);
        let executor = metrics.meter(Arc::new(PluginExecutor::new(plugins.clone())));
        let traces = match &config.otlp_endpoint {
            Some(url) => Some(traces::start(url.clone(), name.clone(), host_name()).await?),
            None => None,
        };
        let mut dispatcher_config = dispatcher_config(&config);
        dispatcher_config.tracing = Tracing(
            traces
                .clone()
                .map(|t| t as Arc<dyn crate::scheduler::trace::RunTracer>),
        );
        let dispatcher = Dispatcher::new(store.clone(), executor, store.clock(), dispatcher_config);
        let api = start_api(&config, &dispatcher, plugins, metrics, health, started_at).await?;
        Ok(Instance {
            store,
            name: config.info.name,
            process,
            displaced,
            dispatcher,
            api,
            background,
            traces,
            _watch: watch,
        })
    }

    /// Runs due work until `signal` resolves, then [`shutdown`](Self::shutdown).
    /// Ends early with [`Displaced`] when another process takes the name
    /// over (`serve --replace`).
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut displaced = self.displaced.clone();
        let taken_over = async move {
            let _ = displaced.wait_for(Option::is_some).await;
        };
        let stop = async {
            tokio::select! {
                () = signal => {}
                () = taken_over => {}
            }
        };
        self.dispatcher.clone().run(stop).await;
        self.shutdown().await
    }

    /// Stops the API, lets runs in flight end within their grace period,
    /// leaves the instances sharing the store and records that it stopped.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(api) = self.api {
            api.stop();
        }
        // Already done when `run_until` got here; not when it did not.
        self.dispatcher.shut_down().await;
        drop(self.background);
        // The runs just recorded are in the exporter's queue: send them.
        if let Some(traces) = self.traces {
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
        let displaced = self.displaced.borrow().clone();
        if let Some(by) = displaced {
            // The name, its deliveries and its plugin rows are the new
            // process's now: leave them alone.
            let message = Displaced {
                name: self.name.clone(),
                by,
            };
            self.store
                .append_events(&[NewEvent::host(
                    Level::Warning,
                    "INSTANCE_REPLACED",
                    message.to_string(),
                )])
                .await?;
            return Err(message.into());
        }
        let now = self.store.clock().now();
        presence::leave(&*self.store, &self.name, &self.process, now).await?;
        self.store
            .append_events(&[NewEvent::host(
                Level::Info,
                "INSTANCE_STOPPED",
                format!("instance {} stopped", self.name),
            )])
            .await?;
        Ok(())
    }
}

/// The plugins folder, loaded, and the events it reports, to be recorded.
async fn open_plugins(
    config: &InstanceConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<Plugins>, UnboundedReceiver<PluginEvent>)> {
    let mut runtime = Runtime::new(EngineSettings {
        max_concurrent_runs: config.max_concurrent_runs,
        load: config.load,
        http: config.http,
        ..Default::default()
    })?;
    if let Some(exe) = &config.compile_worker {
        runtime = runtime.compile_in_child(exe.clone());
    }
    let runtime = Arc::new(runtime);
    let (sink, events) = plugin_log::event_sink(metrics.clone());
    // What the compile cache holds serves at once; the rest joins when
    // compiled.
    // Per instance name: instances on one machine may share a data folder.
    let file: String = config
        .info
        .name
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "._-".contains(c) {
            true => c,
            false => '_',
        })
        .collect();
    let memo = config
        .data_dir
        .join("serving-plugins")
        .join(format!("{file}.json"));
    let plugins = Plugins::open_cached_first(
        runtime,
        config.plugins_dir.clone(),
        config.cache.clone(),
        sink,
        Some(memo),
    )
    .await
    .with_context(|| {
        format!(
            "opening the plugins folder {}",
            config.plugins_dir.display()
        )
    })?;
    Ok((plugins, events))
}

fn dispatcher_config(config: &InstanceConfig) -> DispatcherConfig {
    DispatcherConfig {
        instance: config.info.clone(),
        lease: config.lease,
        grace: config.grace,
        look_ahead: config.look_ahead,
        keep_runs: config.keep_runs,
        keep_events: config.keep_events,
        ..Default::default()
    }
}

async fn start_api(
    config: &InstanceConfig,
    dispatcher: &Arc<Dispatcher>,
    plugins: Arc<Plugins>,
    metrics: Arc<Metrics>,
    store_health: Arc<StoreHealth>,
    started_at: DateTime<Utc>,
) -> anyhow::Result<Option<ApiServer>> {
    let context = ApiContext {
        store: config.store.clone(),
        dispatcher: dispatcher.clone(),
        plugins,
        metrics,
        instance: config.info.name.clone(),
        data_dir: config.data_dir.clone(),
        started_at,
        liveness: LIVENESS,
        store_health,
    };
    let say = |level, line| (config.notices)(Notice::Api { level, line });
    crate::api::start(config.listen.as_ref(), config.print_token, context, &say).await
}

/// Joins the instances sharing the store (under the name `me` holds
/// now); returns the heartbeat task.
async fn join(
    config: &InstanceConfig,
    me: crate::model::InstanceRow,
    displaced: tokio::sync::watch::Sender<Option<crate::model::InstanceRow>>,
) -> anyhow::Result<JoinHandle<()>> {
    let store = &config.store;
    let catch_up = config.catch_up_broadcasts;
    let started_at = me.started_at;
    if let Some(notice) =
        presence::settle_broadcasts(&**store, &me.name, started_at, catch_up).await?
    {
        (config.notices)(notice);
    }
    let heartbeat = presence::heartbeat(store.clone(), store.clock(), me, displaced);
    Ok(heartbeat.await?)
}

/// Records that the instance started, with what it serves.
async fn announce(store: &dyn Store, plugins: &Plugins, name: &str) -> anyhow::Result<Notice> {
    let entries = plugins.entries();
    let loaded = entries.iter().filter(|e| e.serving).count();
    let compiling = entries
        .iter()
        .filter(|e| e.status == crate::plugins::PluginStatus::Compiling)
        .count();
    let failed = entries.len() - loaded - compiling;
    let configurations = store.list_tasks().await?.len();
    let message = format!(
        "instance {name} started: {configurations} configuration(s), {loaded} component(s) \
         serving, {compiling} compiling, {failed} not"
    );
    store
        .append_events(&[NewEvent::host(Level::Info, "INSTANCE_STARTED", message)])
        .await?;
    Ok(Notice::Serving {
        configurations,
        loaded,
        failed,
        compiling,
    })
}

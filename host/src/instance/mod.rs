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
    /// Receives what the operator should hear of while the instance starts.
    pub notices: Box<dyn Fn(Notice) + Send + Sync>,
}

/// Something the operator should hear of, in the order it happens; the
/// caller words it (the instance does not know how it was started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A live instance already uses this name: a second process, or this
    /// name's previous one that crashed moments ago.
    NameInUse { pid: u32, heartbeat_age: Duration },
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
}

/// A started instance; [`run_until`](Self::run_until) runs it.
pub struct Instance {
    store: Arc<dyn Store>,
    name: String,
    dispatcher: Arc<Dispatcher>,
    api: Option<ApiServer>,
    background: Background,
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
        ]);
        let started_at = store.clock().now();
        background.0.push(join(&config, started_at).await?);
        (config.notices)(announce(&*store, &plugins, name).await?);
        let executor = metrics.meter(Arc::new(PluginExecutor::new(plugins.clone())));
        let dispatcher = Dispatcher::new(
            store.clone(),
            executor,
            store.clock(),
            dispatcher_config(&config),
        );
        let api = start_api(&config, &dispatcher, plugins, metrics, health, started_at).await?;
        Ok(Instance {
            store,
            name: config.info.name,
            dispatcher,
            api,
            background,
            _watch: watch,
        })
    }

    /// Runs due work until `signal` resolves, then [`shutdown`](Self::shutdown).
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        self.dispatcher.clone().run(signal).await;
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
        presence::leave(&*self.store, &self.name, self.store.clock().now()).await?;
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
    let plugins = Plugins::open_cached_first(
        runtime,
        config.plugins_dir.clone(),
        config.cache.clone(),
        sink,
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
    crate::api::start(config.listen.as_ref(), config.print_token, context).await
}

/// Joins the instances sharing the store; returns the heartbeat task.
async fn join(
    config: &InstanceConfig,
    started_at: DateTime<Utc>,
) -> anyhow::Result<JoinHandle<()>> {
    let (store, name) = (&config.store, &config.info.name);
    if let Some(notice) = presence::namesake(&**store, name, started_at).await? {
        (config.notices)(notice);
    }
    let catch_up = config.catch_up_broadcasts;
    if let Some(notice) = presence::settle_broadcasts(&**store, name, started_at, catch_up).await? {
        (config.notices)(notice);
    }
    let heartbeat = presence::heartbeat(store.clone(), store.clock(), &config.info, started_at);
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

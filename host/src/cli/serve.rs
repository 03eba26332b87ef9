//! `cronwerk serve`: the scheduler service. Loads the plugins folder (and
//! watches it), runs due configurations from the store, records runs and
//! events, and stops gracefully on SIGTERM or Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;

use super::{args, common, exit};
use crate::model::{InstanceInfo, InstanceRow, NewEvent, PluginRow, PluginState};
use crate::plugins::{PluginEntry, PluginEvent, PluginExecutor, Plugins};
use crate::runtime::{EngineSettings, Runtime};
use crate::scheduler::{Dispatcher, DispatcherConfig};

use crate::scheduler::farm::{HEARTBEAT, LIVENESS};

#[derive(Args)]
pub struct ServeArgs {
    /// The plugins folder: every .wasm component in it is loaded and watched.
    #[arg(long, default_value = "plugins", env = "CRONWERK_PLUGINS")]
    plugins: PathBuf,
    /// This instance's name (default: the host name).
    #[arg(long, env = "CRONWERK_INSTANCE")]
    name: Option<String>,
    /// A role of this instance, e.g. edit (repeatable); configurations that
    /// `--require-role` it run only on instances that have it.
    #[arg(long = "role", value_parser = args::role)]
    roles: Vec<String>,
    /// Lease of a running run; a run whose instance stops renewing it for
    /// this long is recorded abandoned.
    #[arg(long, default_value = "30s", value_parser = args::duration)]
    lease: Duration,
    /// How long running tasks get to stop on shutdown.
    #[arg(long, default_value = "10s", value_parser = args::duration)]
    grace: Duration,
    /// Runs that may execute at once.
    #[arg(long, default_value_t = 128)]
    max_concurrent_runs: u32,
    /// Keep compiled components here [default: DATA_DIR/cache]; the same
    /// folder can serve several data directories and `cronwerk exec`.
    #[arg(long, env = "CRONWERK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Also run the broadcasts made this long before this instance started
    /// (e.g. 10m); by default an instance runs only broadcasts made while
    /// it is live.
    #[arg(long, value_parser = args::duration, value_name = "DURATION")]
    catch_up_broadcasts: Option<Duration>,
    /// Where the HTTP API, dashboard and /metrics listen: IP:PORT (port 0
    /// picks one) or none [default: 127.0.0.1:7878, skipped if taken].
    #[arg(long, env = "CRONWERK_LISTEN")]
    listen: Option<crate::api::Listen>,
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "cronwerk".into())
}

fn plugin_rows(instance: &str, entries: &[PluginEntry]) -> Vec<PluginRow> {
    entries
        .iter()
        .map(|e| {
            let (status, error) = match &e.status {
                crate::plugins::PluginStatus::Ok => (PluginState::Ok, None),
                crate::plugins::PluginStatus::Failed { error } => {
                    (PluginState::Failed, Some(error.clone()))
                }
                crate::plugins::PluginStatus::Conflict {
                    identifier,
                    serving,
                } => (
                    PluginState::Conflict,
                    Some(format!(
                        "{identifier} is already served by {}: remove or rename one of them",
                        serving.display()
                    )),
                ),
            };
            PluginRow {
                instance: instance.to_owned(),
                file: e.file.display().to_string(),
                sha256: e.sha256.clone(),
                identifier: e.identifier.clone(),
                version: e.version.clone(),
                loaded_at: e.loaded_at.into(),
                status,
                error,
            }
        })
        .collect()
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("cronwerk: stopping (running tasks are being cancelled)");
}

pub async fn run(data_dir: &Path, a: ServeArgs) -> anyhow::Result<u8> {
    let store = common::open_store(data_dir).await?;
    // Every instance on one store schedules by the store's clock.
    let clock = store.clock();
    let instance = InstanceInfo {
        name: a.name.clone().unwrap_or_else(host_name),
        roles: a.roles.clone(),
    };
    let runtime = Arc::new(Runtime::new(EngineSettings {
        max_concurrent_runs: a.max_concurrent_runs,
        ..Default::default()
    })?);

    // Plugin events go to the event log through a channel: the registry
    // reports them synchronously, the store is async.
    let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel::<PluginEvent>();
    let metrics = crate::api::Metrics::new();
    let on_event = Arc::new({
        let metrics = metrics.clone();
        move |e: PluginEvent| {
            metrics.plugin_event(&e);
            let _ = event_tx.send(e);
        }
    });
    let plugins = Plugins::open(
        runtime.clone(),
        a.plugins.clone(),
        a.cache_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("cache")),
        on_event,
    )
    .await
    .with_context(|| format!("opening the plugins folder {}", a.plugins.display()))?;
    let _watch = plugins
        .watch()
        .with_context(|| format!("watching the plugins folder {}", a.plugins.display()))?;

    let event_writer = tokio::spawn({
        let store = store.clone();
        async move {
            while let Some(e) = event_rx.recv().await {
                let event = NewEvent::host(e.level, e.code, e.message);
                if let Err(err) = store.append_events(&[event]).await {
                    tracing::error!("recording a plugin event failed: {err}");
                }
            }
        }
    });
    let plugin_reporter = tokio::spawn({
        let store = store.clone();
        let plugins = plugins.clone();
        let name = instance.name.clone();
        let mut changes = plugins.changes();
        async move {
            loop {
                let rows = plugin_rows(&name, &plugins.entries());
                if let Err(e) = store.set_plugins(&name, &rows).await {
                    tracing::error!("recording plugin status failed: {e}");
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        }
    });
    let started_at = clock.now();
    if let Some(other) = crate::scheduler::farm::live_instances(&*store)
        .await?
        .into_iter()
        .find(|i| i.name == instance.name)
    {
        // Also what a quick restart after a crash looks like, so a warning.
        eprintln!(
            "cronwerk: warning: an instance named {} (pid {}) sent a heartbeat {}s ago; if it is \
             still running, give this one its own --name",
            other.name,
            other.pid,
            (started_at - other.heartbeat_at).num_seconds().max(0)
        );
    }
    // Deliveries left from this name's previous process were for that
    // process; this one starts clean unless told to catch up.
    match a.catch_up_broadcasts {
        None => {
            store
                .expire_deliveries(
                    std::slice::from_ref(&instance.name),
                    started_at,
                    &format!("instance {} restarted before running it", instance.name),
                )
                .await?;
        }
        Some(window) => {
            let since = started_at - chrono::TimeDelta::from_std(window)?;
            let joined = store.join_broadcasts(&instance.name, since).await?;
            if joined > 0 {
                eprintln!(
                    "cronwerk: catching up on {joined} broadcast(s) made since {}",
                    common::time(Some(since))
                );
            }
        }
    }
    let heartbeat = tokio::spawn({
        let store = store.clone();
        let clock = clock.clone();
        let row = InstanceRow {
            name: instance.name.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            roles: instance.roles.clone(),
            started_at,
            heartbeat_at: started_at,
        };
        // The first heartbeat is written before this instance says it is
        // serving, so a broadcast made from then on includes it.
        store.heartbeat(&row).await?;
        async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let row = InstanceRow {
                    heartbeat_at: clock.now(),
                    ..row.clone()
                };
                if let Err(e) = store.heartbeat(&row).await {
                    tracing::error!("instance heartbeat failed: {e}");
                }
            }
        }
    });

    let entries = plugins.entries();
    let loaded = entries.iter().filter(|e| e.serving).count();
    let failed = entries.len() - loaded;
    let tasks = store.list_tasks().await?.len();
    store
        .append_events(&[NewEvent::host(
            crate::model::Level::Info,
            "INSTANCE_STARTED",
            format!(
                "instance {} started: {tasks} configuration(s), {loaded} component(s) serving, {failed} not",
                instance.name
            ),
        )])
        .await?;
    eprintln!(
        "cronwerk: instance {} serving {} from {} ({loaded} component(s) loaded{}), {tasks} configuration(s)",
        instance.name,
        common::store_location(data_dir),
        a.plugins.display(),
        if failed > 0 {
            format!(", {failed} not: see `cronwerk plugins`")
        } else {
            String::new()
        }
    );

    let dispatcher = Dispatcher::new(
        store.clone(),
        metrics.meter(Arc::new(PluginExecutor::new(plugins.clone()))),
        clock.clone(),
        DispatcherConfig {
            instance: instance.clone(),
            lease: a.lease,
            grace: a.grace,
            ..Default::default()
        },
    );
    let api = crate::api::start(
        a.listen.as_ref(),
        crate::api::ApiContext {
            store: store.clone(),
            dispatcher: dispatcher.clone(),
            plugins: plugins.clone(),
            metrics,
            instance: instance.name.clone(),
            data_dir: data_dir.to_owned(),
            started_at,
            liveness: LIVENESS,
        },
    )
    .await?;
    dispatcher.run(shutdown_signal()).await;

    if let Some(api) = api {
        api.stop();
    }
    heartbeat.abort();
    plugin_reporter.abort();
    event_writer.abort();
    // Gone cleanly: deliveries it did not start will not run, and it is no
    // longer listed (a crashed instance stays listed as gone).
    store
        .expire_deliveries(
            std::slice::from_ref(&instance.name),
            clock.now(),
            &format!("instance {} stopped before running it", instance.name),
        )
        .await?;
    store.remove_instance(&instance.name).await?;
    store
        .append_events(&[NewEvent::host(
            crate::model::Level::Info,
            "INSTANCE_STOPPED",
            format!("instance {} stopped", instance.name),
        )])
        .await?;
    eprintln!(
        "cronwerk: stopped at {}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    Ok(exit::OK)
}

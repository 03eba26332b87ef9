//! `cronwerk serve`: the scheduler service. Turns its flags into an
//! [`InstanceConfig`], tells the operator what the [`Instance`] does, and
//! runs it until SIGTERM or Ctrl-C; the instance itself is assembled in
//! [`crate::instance`].

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;

use super::{args, common, exit};
use crate::instance::{
    Displaced, Instance, InstanceConfig, NameTaken, Notice, Takeover, host_name, traces,
};
use crate::model::InstanceInfo;
use crate::runtime::CompileCache;
use crate::store::Store;

#[derive(Args)]
pub struct ServeArgs {
    /// Read flags from this TOML file, one key per flag (`keep-runs = 500`);
    /// a flag given here or in the environment wins over the file's key.
    /// `cronwerk config-file example` prints a template.
    #[arg(long, env = "CRONWERK_CONFIG", value_name = "FILE")]
    #[allow(dead_code)] // read by config_file::expand, before parsing
    config: Option<PathBuf>,
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
    /// Keep compiled components here [default: $XDG_CACHE_HOME/cronwerk,
    /// else ~/.cache/cronwerk, as `exec` and `inspect`; DATA_DIR/cache
    /// without a home folder]; the same
    /// folder can serve several data directories and `cronwerk exec`. It
    /// must be writable by this user only (a new one is made with mode 0700).
    #[arg(long, env = "CRONWERK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile-cache entries not used for this long are deleted (at start,
    /// then daily).
    #[arg(long, default_value = "30d", value_parser = args::duration, value_name = "DURATION")]
    cache_max_age: Duration,
    /// ... and beyond this size the least recently used ones are.
    #[arg(long, default_value = "4GiB", value_parser = args::size, value_name = "SIZE")]
    cache_max_size: u64,
    /// Also run the broadcasts made this long before this instance started
    /// (e.g. 10m); by default an instance runs only broadcasts made while
    /// it is live.
    #[arg(long, value_parser = args::duration, value_name = "DURATION")]
    catch_up_broadcasts: Option<Duration>,
    /// Slots due this soon are claimed ahead and started at their instant,
    /// so claiming is not part of a run's lateness; 0 claims each slot
    /// when it is due. A claimed run is listed `running` with its start
    /// ahead until then.
    #[arg(long, default_value = "250ms", value_parser = args::duration, value_name = "DURATION")]
    look_ahead: Duration,
    /// Finished runs kept per configuration; older ones are deleted.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    keep_runs: u32,
    /// How long events (and broadcasts) are kept, e.g. 14d or 12h.
    #[arg(long, default_value = "14d", value_parser = args::duration, value_name = "DURATION")]
    keep_events: Duration,
    /// Where the HTTP API, dashboard and /metrics listen: IP:PORT (port 0
    /// picks one) or none [default: 127.0.0.1:7878, skipped if taken].
    #[arg(long, env = "CRONWERK_LISTEN")]
    listen: Option<crate::api::Listen>,
    /// Print the API token on stderr when this start creates it. Without
    /// it the token is printed only when stderr is a terminal, since under
    /// a service manager stderr goes to a log others may read; the line
    /// then names the file that holds it.
    #[arg(long)]
    print_token: bool,
    /// Take this instance's name over from another live `serve` process
    /// that holds it (that one stops serving when it sees it, within 5 s).
    /// Without it a second process under a live name refuses to start.
    #[arg(long)]
    replace: bool,
    /// Send a trace of every run (a span per run, with claim, instantiate,
    /// execute and record under it) to this OpenTelemetry collector over
    /// OTLP/HTTP, e.g. http://127.0.0.1:4318. Without it, the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) turns traces
    /// on; with neither, none are made.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(flatten)]
    load: super::compile_cache::LoadArgs,
    #[command(flatten)]
    http: common::HttpArgs,
}

/// Tells systemd (`Type=notify`) how the service is: ready once serving,
/// stopping on a signal. Nothing without `NOTIFY_SOCKET`.
fn service_manager(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("cannot tell the service manager: {e}");
    }
}

/// SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first awaited, so a signal that comes while the
/// instance is still starting stops it cleanly once started, instead of
/// killing it outright.
fn shutdown_signal(say: Say) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        say.info("stopping (running tasks are being cancelled)");
        service_manager(&[sd_notify::NotifyState::Stopping]);
    })
}

/// Process settings for a long-lived `serve`, made before any thread
/// exists. glibc serves an allocation above its mmap threshold with a
/// mapping of its own, returned to the system when freed, but it raises
/// that threshold to the size of every such block freed (up to 32 MB): the
/// component files and compiled code that loading reads (12-50 MB each)
/// then land in its arenas, one per thread, and stay there. A start that
/// loaded the Python and JavaScript examples kept about 250 MB resident
/// against 110 MB for the same components loaded from the cache. A fixed
/// threshold keeps big buffers in mappings of their own (BENCHMARKS.md).
pub fn before_threads() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator;
    // called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// What `serve` tells the operator on stderr: a `cronwerk: ` line, or
/// under `--log-format json` a log line like any other, so a log pipeline
/// reads nothing but JSON.
#[derive(Clone, Copy)]
struct Say {
    json: bool,
}

impl Say {
    fn info(self, line: &str) {
        match self.json {
            true => tracing::info!(target: "cronwerk::serve", "{line}"),
            false => eprintln!("cronwerk: {line}"),
        }
    }

    fn warn(self, line: &str) {
        match self.json {
            true => tracing::warn!(target: "cronwerk::serve", "{line}"),
            false => eprintln!("cronwerk: warning: {line}"),
        }
    }

    fn error(self, line: &str) {
        match self.json {
            true => tracing::error!(target: "cronwerk::serve", "{line}"),
            false => eprintln!("error: {line}"),
        }
    }
}

pub async fn run(data_dir: &Path, a: ServeArgs, json_logs: bool) -> anyhow::Result<u8> {
    let say = Say { json: json_logs };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        say.warn(
            "running as root; the sandbox holds tasks in, but anything outside it that goes \
             wrong does so with every permission: give `cronwerk serve` a user of its own (see \
             docs/security.md)",
        );
    }
    // One compile cache for `exec`, `inspect` and `serve` by default, so a
    // component tried with `exec` is not compiled again when served.
    let cache_dir = a
        .cache_dir
        .clone()
        .or_else(super::compile_cache::user_cache_dir)
        .unwrap_or_else(|| data_dir.join("cache"));
    let cache = match CompileCache::open(&cache_dir) {
        Ok(cache) => cache,
        Err(e) => {
            say.error(&format!("{e}, or give --cache-dir a folder of your own"));
            return Ok(exit::USAGE);
        }
    };
    let otlp_endpoint =
        match traces::endpoint(a.otlp_endpoint.as_deref(), |name| std::env::var(name).ok()) {
            Ok(url) => url,
            Err(e) => {
                say.error(&e.to_string());
                return Ok(exit::USAGE);
            }
        };
    let store = common::open_store(data_dir).await?;
    let stop = shutdown_signal(say)?;
    let config = instance_config(data_dir, store, cache, a, otlp_endpoint, say);
    let instance = match Instance::start(config).await {
        Ok(instance) => instance,
        Err(e) if e.is::<NameTaken>() => {
            say.error(&e.to_string());
            return Ok(exit::USAGE);
        }
        Err(e) => return Err(e),
    };
    service_manager(&[sd_notify::NotifyState::Ready]);
    match instance.run_until(stop).await {
        // Replaced on purpose: not a failure a service manager should restart.
        Err(e) if e.is::<Displaced>() => {
            say.info(&e.to_string());
            return Ok(exit::OK);
        }
        other => other?,
    }
    say.info(&format!(
        "stopped at {}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    ));
    Ok(exit::OK)
}

fn instance_config(
    data_dir: &Path,
    store: Arc<dyn Store>,
    cache: CompileCache,
    a: ServeArgs,
    otlp_endpoint: Option<String>,
    say: Say,
) -> InstanceConfig {
    let info = InstanceInfo {
        name: a.name.unwrap_or_else(host_name),
        roles: a.roles,
    };
    let wording = Wording {
        name: info.name.clone(),
        store: common::store_location(data_dir),
        plugins: a.plugins.clone(),
    };
    InstanceConfig {
        store,
        info,
        cache,
        // This very program: its hidden `compile-worker` verb.
        compile_worker: std::env::current_exe().ok(),
        plugins_dir: a.plugins,
        data_dir: data_dir.to_owned(),
        lease: a.lease,
        grace: a.grace,
        max_concurrent_runs: a.max_concurrent_runs,
        load: a.load.limits(),
        http: a.http.settings(),
        catch_up_broadcasts: a.catch_up_broadcasts,
        look_ahead: a.look_ahead,
        keep_runs: a.keep_runs,
        keep_events: a.keep_events,
        listen: a.listen,
        print_token: a.print_token || std::io::stderr().is_terminal(),
        replace: a.replace,
        cache_limits: (a.cache_max_age, a.cache_max_size),
        otlp_endpoint,
        notices: Box::new(move |notice| match notice.is_warning() {
            true => say.warn(&wording.line(notice)),
            false => say.info(&wording.line(notice)),
        }),
    }
}

/// Words the instance's notices for the operator.
struct Wording {
    name: String,
    store: String,
    plugins: PathBuf,
}

impl Wording {
    fn line(&self, notice: Notice) -> String {
        let name = &self.name;
        match notice {
            Notice::WaitingForNamesake { pid, host } => format!(
                "an instance named {name} (pid {pid} on {host}) sent a heartbeat moments ago: \
                 waiting up to 15 s for it to stop (it may have crashed); a new heartbeat from \
                 it means it runs, and this process stops (--replace takes its place)"
            ),
            Notice::NamesakeGone => {
                format!("the previous process named {name} stopped sending heartbeats: taking over")
            }
            Notice::TakingOver { pid, host, why } => match why {
                Takeover::Gone => format!(
                    "taking over the name {name} from pid {pid}, which is no longer running \
                     (a restart after a crash)"
                ),
                Takeover::Replace => format!(
                    "--replace: taking over the name {name} from pid {pid} on {host}; that \
                     process stops at its next heartbeat"
                ),
            },
            Notice::Api { line, .. } => line,
            Notice::CatchingUp { broadcasts, since } => format!(
                "catching up on {broadcasts} broadcast(s) made since {}",
                common::time(Some(since))
            ),
            Notice::Serving {
                configurations,
                loaded,
                failed,
                compiling,
            } => format!(
                "instance {name} serving {} from {} ({loaded} component(s) loaded{}{}), \
                 {configurations} configuration(s)",
                self.store,
                self.plugins.display(),
                if compiling > 0 {
                    format!(", {compiling} compiling: they join when ready")
                } else {
                    String::new()
                },
                if failed > 0 {
                    format!(", {failed} not: see `cronwerk plugins`")
                } else {
                    String::new()
                }
            ),
        }
    }
}

//! `cronwerk serve`: the scheduler service. Turns its flags into an
//! [`InstanceConfig`], tells the operator what the [`Instance`] does, and
//! runs it until SIGTERM or Ctrl-C; the instance itself is assembled in
//! [`crate::instance`].

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;

use super::{args, common, exit};
use crate::instance::{Instance, InstanceConfig, Notice};
use crate::model::InstanceInfo;
use crate::runtime::CompileCache;
use crate::store::Store;

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
    /// folder can serve several data directories and `cronwerk exec`. It
    /// must be writable by this user only (a new one is made with mode 0700).
    #[arg(long, env = "CRONWERK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
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
    #[command(flatten)]
    load: super::compile_cache::LoadArgs,
    #[command(flatten)]
    http: common::HttpArgs,
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "cronwerk".into())
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

pub async fn run(data_dir: &Path, a: ServeArgs) -> anyhow::Result<u8> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!(
            "cronwerk: warning: running as root; the sandbox holds tasks in, but anything \
             outside it that goes wrong does so with every permission: give `cronwerk serve` \
             a user of its own (see docs/security.md)"
        );
    }
    let cache_dir = a
        .cache_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("cache"));
    let cache = match CompileCache::open(&cache_dir) {
        Ok(cache) => cache,
        Err(e) => {
            eprintln!("error: {e}, or give --cache-dir a folder of your own");
            return Ok(exit::USAGE);
        }
    };
    let store = common::open_store(data_dir).await?;
    let instance = Instance::start(instance_config(data_dir, store, cache, a)).await?;
    instance.run_until(shutdown_signal()).await?;
    eprintln!(
        "cronwerk: stopped at {}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    Ok(exit::OK)
}

fn instance_config(
    data_dir: &Path,
    store: Arc<dyn Store>,
    cache: CompileCache,
    a: ServeArgs,
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
        notices: Box::new(move |notice| eprintln!("cronwerk: {}", wording.line(notice))),
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
            Notice::NameInUse { pid, heartbeat_age } => format!(
                "warning: an instance named {name} (pid {pid}) sent a heartbeat {}s ago; if it \
                 is still running, give this one its own --name",
                heartbeat_age.as_secs()
            ),
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

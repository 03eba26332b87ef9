//! `cronwerk exec FILE`: run a component once, outside any schedule, with the
//! same sandbox and limits a scheduled run gets. The quickest way to try a
//! task while writing it.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde::Serialize;

use super::common::{HttpArgs, shown};
use super::compile_cache::{self, CacheArgs, LoadArgs, LoadStats};
use super::{args, exit};
use crate::model::{
    BroadcastPayload, DirGrant, Grants, HttpGrant, InstanceInfo, RunLimits, Trigger,
};
use crate::runtime::{
    CancelToken, EngineSettings, Outcome, RunContext, RunReport, RunRequest, Runtime,
};

#[derive(Args)]
pub struct ExecArgs {
    /// The component file (.wasm, or .wat text).
    file: PathBuf,
    /// A custom property of the configuration, KEY=VALUE (repeatable).
    #[arg(long = "property", short = 'p', value_parser = args::key_value)]
    properties: Vec<(String, String)>,
    /// A setting scoped to the task's identifier, KEY=VALUE (repeatable).
    #[arg(long = "config", value_parser = args::key_value)]
    config: Vec<(String, String)>,
    /// Initial state the task finds, KEY=VALUE (repeatable).
    #[arg(long = "state", value_parser = args::key_value)]
    state: Vec<(String, String)>,
    /// Wall-time limit, e.g. 2s, 500ms, 5m.
    #[arg(long, default_value = "60s", value_parser = args::duration)]
    timeout: Duration,
    /// Fuel limit (about one unit per wasm instruction); unlimited if absent.
    #[arg(long, value_parser = args::count)]
    fuel: Option<u64>,
    /// Memory limit, e.g. 64MiB.
    #[arg(long, default_value = "128MiB", value_parser = args::size)]
    memory: u64,
    #[command(flatten)]
    grants: GrantArgs,
    /// Configuration name the task is told.
    #[arg(long)]
    name: Option<String>,
    /// Trigger the task is told: manual, schedule, broadcast, retry,
    /// follow-up, backfill or startup (a task built against contract 0.1.0
    /// is told the last three as manual, schedule and manual).
    #[arg(long, default_value = "manual")]
    trigger: Trigger,
    /// The attempt the task is told (1 is a first run, 2 its first retry).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    attempt: u32,
    /// Broadcast payload text (makes the run carry a payload).
    #[arg(long)]
    payload_text: Option<String>,
    /// Broadcast payload target.
    #[arg(long)]
    payload_target: Option<String>,
    /// Broadcast payload binary data, read from this file.
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// How long a cancelled task (Ctrl-C) may take to stop by itself.
    #[arg(long, default_value = "5s", value_parser = args::duration)]
    grace: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    http: HttpArgs,
}

/// What a run on this machine is granted: `exec` and `runs replay`.
#[derive(Args)]
pub struct GrantArgs {
    /// Grant a host directory: HOST[:GUEST][:ro] (repeatable). Nothing else
    /// of the file system is visible to the task.
    #[arg(long = "grant-dir")]
    grant_dirs: Vec<DirGrant>,
    /// Let the task send HTTP requests to HOST[:PORT] (repeatable; `*.example.com`
    /// for subdomains; without a port only 80/443). Denied otherwise.
    #[arg(long = "allow-http")]
    allow_http: Vec<HttpGrant>,
}

impl GrantArgs {
    /// The grants, once every granted folder is one on this host; else
    /// says which is not and gives the exit code.
    pub fn checked(&self) -> Result<Grants, u8> {
        for grant in &self.grant_dirs {
            if !grant.host_path.is_dir() {
                eprintln!(
                    "error: --grant-dir {}: not a directory on this host",
                    grant.host_path.display()
                );
                return Err(exit::USAGE);
            }
        }
        Ok(Grants {
            dirs: self.grant_dirs.clone(),
            http_hosts: self.allow_http.clone(),
        })
    }
}

/// Cancels `cancel` at the first Ctrl-C, saying how long the task has to
/// stop. Registered before the run starts (and before we say so), so a
/// Ctrl-C from then on always reaches the task as cancellation; abort the
/// handle once the run is over.
pub fn cancel_on_ctrl_c(
    cancel: CancelToken,
    grace: Duration,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        if interrupt.recv().await.is_some() {
            eprintln!(
                "cancelling: the task has {} to stop",
                humantime::format_duration(grace)
            );
            cancel.cancel();
        }
    }))
}

#[derive(Serialize)]
struct JsonReport<'a> {
    file: String,
    version: &'a str,
    load: &'a LoadStats,
    #[serde(flatten)]
    report: &'a RunReport,
}

pub async fn run(args: ExecArgs) -> anyhow::Result<u8> {
    let grants = match args.grants.checked() {
        Ok(grants) => grants,
        Err(code) => return Ok(code),
    };
    let payload = payload(&args)?;
    let runtime = Runtime::new(EngineSettings {
        max_concurrent_runs: 4,
        load: args.load.limits(),
        http: args.http.settings(),
        ..Default::default()
    })?;
    let (component, load) =
        match compile_cache::open_and_load(&runtime, &args.cache, &args.file, args.json).await {
            Ok(loaded) => loaded,
            Err(code) => return Ok(code),
        };
    let name = args.name.clone().unwrap_or_else(|| {
        args.file
            .file_stem()
            .map_or_else(|| "exec".into(), |s| s.to_string_lossy().into_owned())
    });
    let cancel = CancelToken::new();
    let request = RunRequest {
        context: RunContext {
            configuration_name: name,
            run_id: uuid::Uuid::now_v7().to_string(),
            trigger: args.trigger,
            attempt: args.attempt,
            scheduled_for: matches!(args.trigger, Trigger::Schedule | Trigger::Backfill)
                .then(SystemTime::now),
            last_run: None,
            next_run: None,
            run_count: 0,
            properties: args::to_map(args.properties.clone()),
        },
        payload,
        limits: RunLimits {
            timeout: args.timeout,
            fuel: args.fuel,
            memory_bytes: args.memory,
        },
        grants,
        config: args::to_map(args.config.clone()),
        secrets: Vec::new(),
        state: args::to_map(args.state.clone()),
        instance: InstanceInfo {
            name: "exec".into(),
            roles: Vec::new(),
        },
        farm: None,
        cancel: cancel.clone(),
        grace: args.grace,
    };
    let on_ctrl_c = cancel_on_ctrl_c(cancel, args.grace)?;
    if !args.json {
        let info = component.info();
        eprintln!(
            "running {} {} ({}; Ctrl-C cancels)",
            info.identifier,
            info.version,
            load.describe()
        );
    }
    let report = runtime.run(&component, request).await;
    on_ctrl_c.abort();
    if args.json {
        let json = JsonReport {
            file: args.file.display().to_string(),
            version: &component.info().version,
            load: &load,
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_text(&component, &report)?;
    }
    Ok(exit_code(&report.outcome))
}

fn payload(args: &ExecArgs) -> anyhow::Result<Option<BroadcastPayload>> {
    if args.payload_text.is_none() && args.payload_target.is_none() && args.payload_file.is_none() {
        return Ok(None);
    }
    let data = match &args.payload_file {
        Some(path) => std::fs::read(path).map_err(|e| {
            anyhow::anyhow!("--payload-file {}: cannot read it: {e}", path.display())
        })?,
        None => Vec::new(),
    };
    Ok(Some(BroadcastPayload {
        target: args.payload_target.clone().unwrap_or_default(),
        text: args.payload_text.clone().unwrap_or_default(),
        data,
    }))
}

/// Exit code for an outcome: 0, 1 or 2.
pub fn exit_code(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Succeeded { .. } => exit::OK,
        Outcome::Failed { .. } => exit::TASK_FAILED,
        Outcome::Stopped { .. } | Outcome::Cancelled { .. } => exit::STOPPED,
    }
}

fn print_text(component: &crate::runtime::Component, r: &RunReport) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let info = component.info();
    writeln!(
        out,
        "{} {}  ({}, sha256 {})",
        shown(&info.identifier),
        shown(&info.version),
        component.origin(),
        &r.component_sha256[..12]
    )?;
    for e in &r.events {
        let at = humantime::format_rfc3339_millis(e.at).to_string();
        let time = at.get(11..23).unwrap_or(&at);
        let code = if e.code.is_empty() {
            String::new()
        } else {
            format!(" {}", shown(&e.code))
        };
        writeln!(
            out,
            "  {time} {:<7} {:<6}{code}  {}",
            e.level.as_str(),
            e.source.to_string(),
            shown(&e.message)
        )?;
    }
    let headline = match &r.outcome {
        Outcome::Succeeded { message } if message.is_empty() => "succeeded".to_owned(),
        Outcome::Succeeded { message } => format!("succeeded: {}", shown(message)),
        Outcome::Failed { message } => format!("failed: {}", shown(message)),
        Outcome::Stopped { reason, message } => {
            format!("stopped ({}): {}", reason.as_str(), shown(message))
        }
        Outcome::Cancelled { message } => format!("cancelled: {}", shown(message)),
    };
    writeln!(
        out,
        "{headline}\n  {:.2} ms · fuel {} · peak memory {}",
        r.duration.as_secs_f64() * 1e3,
        r.fuel_consumed,
        bytesize::ByteSize(r.peak_memory_bytes)
    )?;
    if !r.state.is_empty() {
        let keys: Vec<_> = r.state.keys().map(|k| shown(k)).collect();
        writeln!(out, "  state keys after the run: {}", keys.join(", "))?;
    }
    Ok(())
}

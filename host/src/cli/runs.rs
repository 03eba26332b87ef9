//! `cronwerk runs`: the run history, and `runs stop` to stop a run.

use std::path::Path;

use std::time::Duration;

use clap::{Args, Subcommand};

use super::common::{self, print_table, short, time};
use super::exit;
use crate::model::{RunRecord, RunState};
use crate::store::{RunFilter, StopAsked, Store};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RunsArgs {
    #[command(subcommand)]
    command: Option<RunsCommand>,
    /// Only runs of this configuration.
    #[arg(long)]
    #[arg(add = clap_complete::ArgValueCandidates::new(super::shell::task_names))]
    task: Option<String>,
    /// Only runs in this state (succeeded, failed, stopped, cancelled, skipped, abandoned, running, queued).
    #[arg(long)]
    state: Option<RunState>,
    /// The newest N runs.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Stop a running (or queued) run: its task sees the cancellation flag,
    /// gets the grace period, then is stopped; recorded `cancelled`.
    Stop(StopArgs),
    /// Run a recorded run's inputs again, here, against the component that
    /// ran it or a fixed one (--component FILE), and show the old and the
    /// new outcome, message, events and state side by side.
    Replay(super::replay::ReplayArgs),
}

#[derive(Args)]
pub struct StopArgs {
    /// The run's id, or any start of it that only one run has (as
    /// `cronwerk runs` shows it).
    run_id: String,
    /// Return once the stop is asked for, without waiting for the run to end.
    #[arg(long)]
    no_wait: bool,
    #[arg(long)]
    json: bool,
}

/// How long `runs stop` waits for the run to end: the instance's grace
/// period (10 s by default) and its next pass, with room to spare.
const STOP_WAIT: Duration = Duration::from_secs(60);

pub async fn run(data_dir: &Path, a: RunsArgs) -> anyhow::Result<u8> {
    let store = common::open_existing_store(data_dir).await?;
    match a.command {
        Some(RunsCommand::Stop(stop)) => {
            let id = super::run_ids::resolve(&*store, &stop.run_id).await?;
            return stop_run(&*store, &id, stop.no_wait, stop.json).await;
        }
        Some(RunsCommand::Replay(replay)) => {
            drop(store);
            return super::replay::run(data_dir, replay).await;
        }
        None => {}
    }
    let task_id = match &a.task {
        Some(name) => Some(store.get_task(name).await?.id),
        None => None,
    };
    let runs = store
        .list_runs(&RunFilter {
            task_id,
            state: a.state,
            limit: Some(a.limit),
            ..Default::default()
        })
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else if runs.is_empty() {
        println!("no runs yet");
    } else {
        print_runs(&runs);
    }
    Ok(exit::OK)
}

/// Asks for run `id` to stop and, unless `no_wait`, waits for it to end;
/// prints what happened.
pub async fn stop_run(
    store: &dyn Store,
    id: &str,
    no_wait: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let by = format!("{} with the CLI", common::operator());
    let asked = store.request_stop(id, &by, chrono::Utc::now()).await?;
    if let StopAsked::NotRunning { state } = asked {
        let run = store.get_run(id).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&run)?);
        } else {
            eprintln!("run {id} is not running: it is {state}");
        }
        return Ok(exit::USAGE);
    }
    if let StopAsked::Signalled { instance } = &asked
        && !no_wait
    {
        if !json {
            eprintln!("stopping run {id} on instance {instance}...");
        }
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while store.get_run(id).await?.state == RunState::Running {
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "run {id} is still running {}s after the stop was asked for: is instance \
                     {instance} up? (its next pass stops it)",
                    STOP_WAIT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let run = store.get_run(id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else if run.state == RunState::Running {
        println!(
            "run {id}: stop asked for; instance {} stops it on its next pass",
            run.instance.as_deref().unwrap_or("-")
        );
    } else {
        println!("run {id}: {} ({})", run.state, run.message);
    }
    Ok(exit::OK)
}

/// Prints runs as a table, newest first.
pub fn print_runs(runs: &[RunRecord]) {
    if runs.is_empty() {
        println!("  none");
        return;
    }
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let rows: Vec<Vec<String>> = runs
        .iter()
        .zip(super::run_ids::shown(&ids))
        .map(|(r, id)| {
            let outcome = match &r.reason {
                Some(reason) => format!("{} ({reason})", r.state),
                None => r.state.to_string(),
            };
            vec![
                id,
                r.task_name.clone(),
                r.trigger.to_string(),
                time(r.scheduled_for),
                time(r.started_at.or(r.queued_at)),
                r.duration_us
                    .map_or("-".into(), |us| format!("{:.1} ms", us as f64 / 1000.0)),
                outcome,
                r.component_version.clone().unwrap_or_else(|| "-".into()),
                r.component_sha256
                    .as_deref()
                    .map_or("-".into(), |s| s.chars().take(12).collect()),
                r.instance.clone().unwrap_or_else(|| "-".into()),
                short(&r.message, 60),
            ]
        })
        .collect();
    print_table(
        &[
            "RUN",
            "TASK",
            "TRIGGER",
            "SCHEDULED",
            "STARTED",
            "DURATION",
            "OUTCOME",
            "VERSION",
            "SHA256",
            "INSTANCE",
            "MESSAGE",
        ],
        &rows,
    );
}

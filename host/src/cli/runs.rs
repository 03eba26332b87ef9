//! `cronwerk runs`: the run history.

use std::path::Path;

use clap::Args;

use super::common::{self, print_table, short, time};
use super::exit;
use crate::model::{RunRecord, RunState};
use crate::store::RunFilter;

#[derive(Args)]
pub struct RunsArgs {
    /// Only runs of this configuration.
    #[arg(long)]
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

pub async fn run(data_dir: &Path, a: RunsArgs) -> anyhow::Result<u8> {
    let store = common::open_store(data_dir).await?;
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

/// Prints runs as a table, newest first.
pub fn print_runs(runs: &[RunRecord]) {
    if runs.is_empty() {
        println!("  none");
        return;
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let outcome = match &r.reason {
                Some(reason) => format!("{} ({reason})", r.state),
                None => r.state.to_string(),
            };
            vec![
                r.id.chars().take(13).collect(),
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

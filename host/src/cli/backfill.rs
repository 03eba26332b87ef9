//! `cronwerk task backfill NAME --from T1 --to T2`: runs a configuration's
//! slots in a past window. The backfill is recorded in the store and run
//! by the serving instances (a few slots at a time, as its concurrency
//! allows); this command follows its progress (a bar on a terminal, quiet
//! when piped) until it is through, and Ctrl-C cancels it. `--list` shows
//! a configuration's backfills, `--cancel ID` cancels one.

use chrono::{DateTime, Utc};
use clap::Args;

use super::common::{self, print_table, short, time};
use super::{args, exit};
use crate::model::TaskRecord;
use crate::model::backfill::{BackfillRecord, BackfillState};
use crate::spec;
use crate::store::Store;

/// How often progress is read.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Args)]
pub struct BackfillArgs {
    /// The configuration whose past slots to run.
    #[arg(add = clap_complete::ArgValueCandidates::new(super::shell::task_names))]
    name: String,
    /// The window's start (RFC 3339): its slots from this time on.
    #[arg(long, value_parser = args::time, required_unless_present_any = ["list", "cancel"])]
    from: Option<DateTime<Utc>>,
    /// The window's end (RFC 3339, up to now): its slots before this time.
    #[arg(long, value_parser = args::time, required_unless_present_any = ["list", "cancel"])]
    to: Option<DateTime<Utc>>,
    /// Slots run at once (default 1, at most 100), within the
    /// configuration's own limit (`--on-overlap allow --max-concurrent`).
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Print the backfill's id once it is asked for, without following it.
    #[arg(long)]
    no_wait: bool,
    /// List the configuration's backfills and their progress.
    #[arg(long, conflicts_with_all = ["from", "to", "cancel", "no_wait"])]
    list: bool,
    /// Cancel the configuration's backfill ID: slots not started are not run.
    #[arg(long, value_name = "ID", conflicts_with_all = ["from", "to", "list", "no_wait"])]
    cancel: Option<String>,
    /// Print the backfill record(s) as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(store: &dyn Store, a: BackfillArgs) -> anyhow::Result<u8> {
    let task = store.get_task(&a.name).await?;
    if a.list {
        return list(store, &task, a.json).await;
    }
    if let Some(id) = &a.cancel {
        let backfill = match find(store, &task, id).await? {
            Ok(backfill) => backfill,
            Err(why) => {
                eprintln!("error: {why}");
                return Ok(exit::USAGE);
            }
        };
        let by = format!("{} with the CLI", common::operator());
        let cancelled = store.cancel_backfill(&backfill.id, &by, Utc::now()).await?;
        report(&cancelled, a.json)?;
        return Ok(exit::OK);
    }
    let (Some(from), Some(to)) = (a.from, a.to) else {
        anyhow::bail!("--from and --to say which window to backfill");
    };
    let by = format!("{} with the CLI", common::operator());
    let asked = spec::new_backfill(&task, from, to, a.concurrency, &by, Utc::now())?;
    let backfill = match store.create_backfill(&asked).await {
        Err(crate::store::StoreError::BackfillActive(active)) => {
            eprintln!(
                "error: '{}' has a backfill going ({active}): follow it with \
                 `cronwerk task backfill '{}' --list`, or cancel it with --cancel {active}",
                task.config.name, task.config.name
            );
            return Ok(exit::USAGE);
        }
        created => created?,
    };
    if a.no_wait {
        println!("{}", backfill.id);
        return Ok(exit::OK);
    }
    if !common::some_instance_may_run(store, &task).await? {
        eprintln!(
            "backfill {} of {} slot(s) asked for; no `cronwerk serve` that may run them is \
             live on this store, so they will run when one is",
            backfill.id, backfill.total
        );
        return Ok(exit::OK);
    }
    follow(store, backfill, a.json).await
}

/// Follows a backfill until it is through; Ctrl-C cancels it.
async fn follow(store: &dyn Store, backfill: BackfillRecord, json: bool) -> anyhow::Result<u8> {
    let bar = indicatif::ProgressBar::new(u64::from(backfill.total));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} slots  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut current = backfill;
    loop {
        bar.set_position(u64::from(current.done()));
        bar.set_message(progress(&current));
        if current.state != BackfillState::Active {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut interrupted => {
                bar.suspend(|| eprintln!("cancelling backfill {}...", current.id));
                let by = format!("{} with the CLI (Ctrl-C)", common::operator());
                current = store.cancel_backfill(&current.id, &by, Utc::now()).await?;
                continue;
            }
        }
        current = store.get_backfill(&current.id).await?;
    }
    bar.finish_and_clear();
    report(&current, json)?;
    Ok(match current.state {
        BackfillState::Cancelled => exit::STOPPED,
        _ if current.runs.failed > 0 => exit::TASK_FAILED,
        _ => exit::OK,
    })
}

/// One line of a backfill's progress.
fn progress(b: &BackfillRecord) -> String {
    let r = &b.runs;
    let mut parts = vec![format!("{} succeeded", r.succeeded)];
    for (n, what) in [
        (r.failed, "failed"),
        (r.running, "running"),
        (r.queued, "queued"),
        (r.cancelled, "cancelled"),
        (b.already_ran, "had run already"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

fn report(b: &BackfillRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(b)?);
        return Ok(());
    }
    println!(
        "backfill {} of '{}' ({} slot(s) from {} to {}): {}; {}",
        b.id,
        common::shown(&b.task_name),
        b.total,
        time(Some(b.from)),
        time(Some(b.to)),
        b.state,
        progress(b)
    );
    if b.runs.failed > 0 {
        println!(
            "  its failed runs: cronwerk runs --task '{}' --state failed",
            common::shown(&b.task_name)
        );
    }
    if b.state == BackfillState::Cancelled && b.runs.running > 0 {
        println!(
            "  {} run(s) already going finish (cronwerk task stop '{}' stops them)",
            b.runs.running,
            common::shown(&b.task_name)
        );
    }
    Ok(())
}

async fn list(store: &dyn Store, task: &TaskRecord, json: bool) -> anyhow::Result<u8> {
    let backfills = store.list_backfills(task.id, 50).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&backfills)?);
        return Ok(exit::OK);
    }
    if backfills.is_empty() {
        println!("no backfills of '{}' yet", common::shown(&task.config.name));
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = backfills
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                format!("{} → {}", time(Some(b.from)), time(Some(b.to))),
                b.state.to_string(),
                format!("{}/{}", b.done(), b.total),
                short(&progress(b), 60),
                short(&b.requested_by, 30),
            ]
        })
        .collect();
    print_table(
        &["ID", "WINDOW", "STATE", "DONE", "RUNS", "ASKED BY"],
        &rows,
    );
    Ok(exit::OK)
}

/// The configuration's backfill `id` (its full id, or the start of it), or
/// why there is none.
async fn find(
    store: &dyn Store,
    task: &TaskRecord,
    id: &str,
) -> anyhow::Result<Result<BackfillRecord, String>> {
    let matching: Vec<BackfillRecord> = store
        .list_backfills(task.id, 1000)
        .await?
        .into_iter()
        .filter(|b| b.id.starts_with(id))
        .collect();
    Ok(match matching.len() {
        1 => Ok(matching.into_iter().next().expect("one")),
        0 => Err(format!(
            "'{}' has no backfill '{id}' (`cronwerk task backfill '{}' --list` shows them)",
            task.config.name, task.config.name
        )),
        n => Err(format!(
            "'{id}' is the start of {n} backfills' ids: give more of it"
        )),
    })
}

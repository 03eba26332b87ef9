//! `cronwerk farm broadcast|list|show`: web-farm broadcasts. A broadcast
//! runs the component implementing TYPE once on every live `serve`
//! instance sharing this store, with a target, text and binary data; each
//! instance records its own run, shown here per instance.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::common::{self, print_table, short, shown, time};
use super::exit;
use crate::model::{BroadcastPayload, BroadcastRecord, RunState};
use crate::scheduler::farm::{self, BroadcastError, BroadcastField, BroadcastRequest};
use crate::store::{Store, StoreError};

#[derive(Subcommand)]
pub enum FarmCommand {
    /// Run a task once on every live instance, with a payload.
    Broadcast(BroadcastArgs),
    /// The latest broadcasts and how far each got.
    List(ListArgs),
    /// One broadcast, per instance.
    Show(ShowArgs),
}

#[derive(Args)]
pub struct BroadcastArgs {
    /// The identifier of the component every instance runs, e.g. Acme.CacheFlush.
    #[arg(value_name = "TYPE")]
    identifier: String,
    /// Who the broadcast is for, as the task understands it (free text).
    #[arg(long, default_value = "")]
    target: String,
    /// Text data for the task.
    #[arg(long, default_value = "")]
    text: String,
    /// Binary data for the task, read from this file (up to 1 MiB).
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// Return once it is made instead of waiting for every instance.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for every instance's run.
    #[arg(long, default_value = "2m", value_parser = super::args::duration)]
    wait: Duration,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// The newest N broadcasts.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    id: String,
    #[arg(long)]
    json: bool,
}

pub async fn run(data_dir: &Path, command: FarmCommand) -> anyhow::Result<u8> {
    let store = common::open_existing_store(data_dir).await?;
    let result = match command {
        FarmCommand::Broadcast(a) => broadcast(&*store, a).await,
        FarmCommand::List(a) => list(&*store, a).await,
        FarmCommand::Show(a) => match store.get_broadcast(&a.id).await {
            Ok(b) => print(&b, a.json).map(|()| exit::OK),
            Err(e @ StoreError::BroadcastNotFound(_)) => {
                let e = anyhow::Error::from(e);
                eprintln!("error: {e}{}", common::store_hint(&e));
                Ok(exit::USAGE)
            }
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Err(e) => match e.downcast_ref::<BroadcastError>() {
            Some(BroadcastError::Invalid { field, message }) => {
                eprintln!("error: {}: {message}", flag(*field));
                Ok(exit::USAGE)
            }
            Some(BroadcastError::NoLiveInstance) => {
                eprintln!(
                    "error: no live instance to deliver to: start `cronwerk serve` on this store \
                     (a broadcast goes to the instances running when it is made)"
                );
                Ok(exit::USAGE)
            }
            _ => Err(e),
        },
        ok => ok,
    }
}

/// A broadcast request's part as this command's arguments name it.
fn flag(field: BroadcastField) -> &'static str {
    match field {
        BroadcastField::Identifier => "TYPE",
        BroadcastField::Target => "--target",
        BroadcastField::Text => "--text",
        BroadcastField::Data => "--data-file",
    }
}

fn finished(b: &BroadcastRecord) -> bool {
    b.deliveries
        .iter()
        .all(|d| !matches!(d.state, RunState::Queued | RunState::Running))
}

async fn broadcast(store: &dyn Store, a: BroadcastArgs) -> anyhow::Result<u8> {
    let data = match &a.data_file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("--data-file: cannot read {}", path.display()))?,
        None => Vec::new(),
    };
    let request = BroadcastRequest {
        identifier: a.identifier.clone(),
        payload: BroadcastPayload {
            target: a.target,
            text: a.text,
            data,
        },
        created_by: "cli".into(),
        exclude: None,
        sender: None,
    };
    let mut b = farm::broadcast(store, request, store.clock().now()).await?;
    if a.no_wait {
        println!("{}", b.id);
        return Ok(exit::OK);
    }
    let deadline = tokio::time::Instant::now() + a.wait;
    while !finished(&b) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        b = store.get_broadcast(&b.id).await?;
    }
    print(&b, a.json)?;
    if !finished(&b) {
        eprintln!(
            "some instances have not finished yet; see `cronwerk farm show {}`",
            b.id
        );
        return Ok(exit::STOPPED);
    }
    let states = b.deliveries.iter().map(|d| d.state);
    Ok(if states.clone().all(|s| s == RunState::Succeeded) {
        exit::OK
    } else if states.clone().any(|s| s == RunState::Failed) {
        exit::TASK_FAILED
    } else {
        exit::STOPPED
    })
}

/// "2 of 3 succeeded, 1 running".
fn progress(b: &BroadcastRecord) -> String {
    let mut counts: Vec<(RunState, usize)> = Vec::new();
    for d in &b.deliveries {
        match counts.iter_mut().find(|(s, _)| *s == d.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((d.state, 1)),
        }
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print(b: &BroadcastRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(b)?);
        return Ok(());
    }
    println!("broadcast   {}", b.id);
    println!("type        {}", shown(&b.identifier));
    println!(
        "made        {} by {}",
        time(Some(b.created_at)),
        shown(&b.created_by)
    );
    println!(
        "payload     target '{}', text '{}', {} of data",
        shown(&short(&b.target, 40)),
        shown(&short(&b.text, 60)),
        bytesize::ByteSize(b.data_bytes)
    );
    println!("deliveries  {}\n", progress(b));
    let rows: Vec<Vec<String>> = b
        .deliveries
        .iter()
        .map(|d| {
            vec![
                d.instance.clone(),
                match &d.reason {
                    Some(r) => format!("{} ({r})", d.state),
                    None => d.state.to_string(),
                },
                time(d.started_at),
                d.duration_us
                    .map_or("-".into(), |us| format!("{:.1} ms", us as f64 / 1000.0)),
                d.component_version.clone().unwrap_or_else(|| "-".into()),
                d.run_id.as_deref().map_or("-".into(), str::to_owned),
                short(&d.message, 60),
            ]
        })
        .collect();
    print_table(
        &[
            "INSTANCE", "STATE", "STARTED", "DURATION", "VERSION", "RUN", "MESSAGE",
        ],
        &rows,
    );
    Ok(())
}

async fn list(store: &dyn Store, a: ListArgs) -> anyhow::Result<u8> {
    let broadcasts = store.list_broadcasts(a.limit).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&broadcasts)?);
        return Ok(exit::OK);
    }
    if broadcasts.is_empty() {
        println!("no broadcasts yet: make one with `cronwerk farm broadcast TYPE`");
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = broadcasts
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                b.identifier.clone(),
                time(Some(b.created_at)),
                short(&b.created_by, 40),
                short(&b.target, 20),
                progress(b),
            ]
        })
        .collect();
    print_table(
        &["BROADCAST", "TYPE", "MADE", "BY", "TARGET", "DELIVERIES"],
        &rows,
    );
    Ok(exit::OK)
}

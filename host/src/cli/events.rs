//! `cronwerk events`: the event log (task log lines, stdout/stderr, host
//! events), optionally followed live.

use std::path::Path;
use std::time::Duration;

use clap::Args;

use super::common::{self, shown};
use super::exit;
use crate::model::{EventRecord, Level};
use crate::store::EventFilter;

#[derive(Args)]
pub struct EventsArgs {
    /// Only events of this configuration.
    #[arg(long)]
    #[arg(add = clap_complete::ArgValueCandidates::new(super::shell::task_names))]
    task: Option<String>,
    /// Only events of this run: its id, or any start of it that only one
    /// run has (as `cronwerk runs` shows it).
    #[arg(long)]
    run: Option<String>,
    /// Only events at this level or above (trace, debug, info, warning, error).
    #[arg(long, value_parser = super::args::level)]
    level: Option<Level>,
    /// The newest N events.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Keep printing new events as they arrive (Ctrl-C stops).
    #[arg(long)]
    follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub async fn run(data_dir: &Path, a: EventsArgs) -> anyhow::Result<u8> {
    let store = common::open_existing_store(data_dir).await?;
    let task_id = match &a.task {
        Some(name) => Some(store.get_task(name).await?.id),
        None => None,
    };
    let run_id = match &a.run {
        Some(given) => Some(super::run_ids::resolve(&*store, given).await.or_else(|e| {
            // A broadcast delivery's run has events but no row among the
            // runs: its whole id is taken as it is.
            let whole =
                given.len() == 36 && given.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            if whole {
                Ok(given.to_ascii_lowercase())
            } else {
                Err(e)
            }
        })?),
        None => None,
    };
    let mut filter = EventFilter {
        task_id,
        run_id,
        min_level: a.level,
        after_id: None,
        limit: Some(a.limit),
        oldest: false,
    };
    loop {
        let events = store.list_events(&filter).await?;
        for e in &events {
            print_event(e, a.json)?;
        }
        if let Some(last) = events.last() {
            filter.after_id = Some(last.id);
        }
        if !a.follow {
            return Ok(exit::OK);
        }
        // Following reads forward a page at a time; a full page means more
        // is waiting, so read on without pausing.
        let full = filter.oldest && events.len() == FOLLOW_PAGE as usize;
        filter.limit = Some(FOLLOW_PAGE);
        filter.oldest = true;
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(exit::OK),
        }
    }
}

/// Events `events --follow` reads at a time.
const FOLLOW_PAGE: u32 = 500;

fn print_event(e: &EventRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
        return Ok(());
    }
    let task = shown(e.task_name.as_deref().unwrap_or("-"));
    let code = if e.code.is_empty() {
        String::new()
    } else {
        format!(" {}", shown(&e.code))
    };
    println!(
        "{} {:<7} {:<20} {:<6}{code}  {}",
        e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
        e.level.as_str(),
        task,
        e.source.to_string(),
        shown(&e.message)
    );
    Ok(())
}

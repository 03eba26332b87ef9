//! `cronwerk instances`: the `serve` instances sharing this store, their
//! roles, and whether they are alive (a recent heartbeat) — what an operator
//! checks before pinning configurations to roles or after a machine died.

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;

use super::common::{self, print_table, time};
use super::exit;
use crate::model::InstanceRow;

#[derive(Args)]
pub struct InstancesArgs {
    /// Only instances with a recent heartbeat.
    #[arg(long)]
    live: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Listed {
    #[serde(flatten)]
    instance: InstanceRow,
    live: bool,
}

/// "3s ago", "2h 5m ago": how long since a heartbeat, to the second.
fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0) as u64;
    format!(
        "{} ago",
        humantime::format_duration(std::time::Duration::from_secs(secs))
    )
}

pub async fn run(data_dir: &Path, a: InstancesArgs) -> anyhow::Result<u8> {
    let store = common::open_existing_store(data_dir).await?;
    let now = store.clock().now();
    let listed: Vec<Listed> = store
        .list_instances()
        .await?
        .into_iter()
        .map(|i| Listed {
            live: crate::scheduler::farm::is_live(&i, now),
            instance: i,
        })
        .filter(|l| l.live || !a.live)
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(exit::OK);
    }
    if listed.is_empty() {
        println!(
            "no instances{}: start one with `cronwerk serve`",
            if a.live {
                " are live"
            } else {
                " have run on this store"
            }
        );
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|l| {
            let i = &l.instance;
            vec![
                i.name.clone(),
                if l.live { "live" } else { "gone" }.into(),
                if i.roles.is_empty() {
                    "-".into()
                } else {
                    i.roles.join(",")
                },
                i.version.clone(),
                i.pid.to_string(),
                time(Some(i.started_at)),
                ago(now, i.heartbeat_at),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "STATE",
            "ROLES",
            "VERSION",
            "PID",
            "STARTED",
            "HEARTBEAT",
        ],
        &rows,
    );
    Ok(exit::OK)
}

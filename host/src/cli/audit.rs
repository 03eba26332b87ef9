//! `cronwerk audit [--task NAME] [--kind KIND]`: the audit trail, newest
//! first: who changed which configuration, setting or token, and which
//! components were swapped in the plugins folders, with the fields before
//! and after.

use std::path::Path;

use clap::Args;

use super::common::{self, print_table, short, shown, time};
use super::exit;
use crate::model::audit::{AuditKind, AuditRecord};
use crate::store::AuditFilter;

#[derive(Args)]
pub struct AuditArgs {
    /// Only changes of this configuration.
    #[arg(long)]
    #[arg(add = clap_complete::ArgValueCandidates::new(super::shell::task_names))]
    task: Option<String>,
    /// Only entries of this kind: configuration, setting, token or plugins.
    #[arg(long, value_parser = kind)]
    kind: Option<AuditKind>,
    /// How many entries, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print the entries as JSON.
    #[arg(long)]
    json: bool,
}

fn kind(s: &str) -> Result<AuditKind, String> {
    crate::model::names::parse("kind", s)
}

pub async fn run(data_dir: &Path, a: AuditArgs) -> anyhow::Result<u8> {
    let store = common::open_existing_store(data_dir).await?;
    let filter = AuditFilter {
        kind: if a.task.is_some() {
            Some(AuditKind::Configuration)
        } else {
            a.kind
        },
        subject: a.task,
        before_id: None,
        limit: Some(a.limit),
    };
    let entries = store.list_audit(&filter).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(exit::OK);
    }
    if entries.is_empty() {
        println!("no changes recorded yet");
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                time(Some(e.at)),
                short(&e.actor, 40),
                format!("{} {}", e.kind, shown(&e.subject)),
                e.action.clone(),
                short(&changed(e), 100),
            ]
        })
        .collect();
    print_table(&["WHEN", "WHO", "WHAT", "ACTION", "CHANGES"], &rows);
    Ok(exit::OK)
}

/// The changes in one line: `retries: 0 → 2; limits: … → …`.
fn changed(e: &AuditRecord) -> String {
    let value = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    e.changes
        .iter()
        .map(|c| format!("{}: {} → {}", c.field, value(&c.before), value(&c.after)))
        .collect::<Vec<_>>()
        .join("; ")
}

//! `cronwerk plugins`: the components each running instance has loaded, as
//! it last reported them.

use std::path::Path;

use clap::Args;

use super::common::{self, print_table, short, time};
use super::exit;

#[derive(Args)]
pub struct PluginsArgs {
    /// The fleet matrix: each identifier against each live instance, with
    /// the version it serves there (skew marked), as a rolling deploy goes.
    #[arg(long)]
    instances: bool,
    #[arg(long)]
    json: bool,
}

pub async fn run(data_dir: &Path, a: PluginsArgs) -> anyhow::Result<u8> {
    let store = common::open_store(data_dir).await?;
    if a.instances {
        return matrix(&*store, a.json).await;
    }
    let plugins = store.list_plugins().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
        return Ok(exit::OK);
    }
    if plugins.is_empty() {
        println!(
            "no plugins reported: start `cronwerk serve --plugins DIR` on this data directory \
             (or check a single file with `cronwerk inspect FILE`)"
        );
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            let status = match &p.error {
                Some(e) => format!("{}: {}", p.status, short(e, 80)),
                None => p.status.to_string(),
            };
            vec![
                p.identifier.clone().unwrap_or_else(|| "-".into()),
                p.version.clone().unwrap_or_else(|| "-".into()),
                p.sha256.chars().take(12).collect(),
                time(Some(p.loaded_at)),
                p.instance.clone(),
                p.file.clone(),
                status,
            ]
        })
        .collect();
    print_table(
        &[
            "IDENTIFIER",
            "VERSION",
            "SHA256",
            "LOADED AT",
            "INSTANCE",
            "FILE",
            "STATUS",
        ],
        &rows,
    );
    Ok(exit::OK)
}

/// `plugins --instances`: identifier × live instance → version.
async fn matrix(store: &dyn crate::store::Store, json: bool) -> anyhow::Result<u8> {
    let fleet = crate::scheduler::farm::fleet_matrix(store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&fleet)?);
        return Ok(exit::OK);
    }
    if fleet.instances.is_empty() {
        println!("no live instances: start `cronwerk serve` on this store");
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = fleet
        .identifiers
        .iter()
        .map(|row| {
            let mut cells = vec![row.identifier.clone()];
            cells.extend(row.served.iter().map(|s| match s {
                Some(s) => format!(
                    "{} ({})",
                    s.version,
                    s.sha256.chars().take(8).collect::<String>()
                ),
                None => "-".into(),
            }));
            cells.push(if row.skew {
                "skew".into()
            } else {
                String::new()
            });
            cells
        })
        .collect();
    let mut header: Vec<&str> = vec!["IDENTIFIER"];
    header.extend(fleet.instances.iter().map(String::as_str));
    header.push("");
    print_table(&header, &rows);
    Ok(exit::OK)
}

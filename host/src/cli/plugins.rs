//! `cronwerk plugins`: the components each running instance has loaded, as
//! it last reported them.

use std::path::Path;

use clap::Args;

use super::common::{self, print_table, short, time};
use super::exit;

#[derive(Args)]
pub struct PluginsArgs {
    #[arg(long)]
    json: bool,
}

pub async fn run(data_dir: &Path, a: PluginsArgs) -> anyhow::Result<u8> {
    let store = common::open_store(data_dir).await?;
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

//! `cronwerk config`: settings scoped to an implementation identifier, shared
//! by all its configurations and read by tasks through the `config` import
//! (an API key, a team name, a user agent), as opposed to a configuration's
//! own properties. A running `serve` picks changes up at its next pass.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;

use super::common::{self, print_table, short};
use super::exit;
use crate::model::validate_identifier;
use crate::runtime::{STATE_MAX_KEY_BYTES, STATE_MAX_VALUE_BYTES};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Set IDENTIFIER's setting KEY to VALUE.
    Set {
        identifier: String,
        key: String,
        value: String,
    },
    /// Remove IDENTIFIER's setting KEY.
    Unset { identifier: String, key: String },
    /// List settings, of one identifier or of all.
    List {
        identifier: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(data_dir: &Path, command: ConfigCommand) -> anyhow::Result<u8> {
    let store = common::open_store(data_dir).await?;
    match command {
        ConfigCommand::Set {
            identifier,
            key,
            value,
        } => {
            check(&identifier, &key)?;
            if value.len() > STATE_MAX_VALUE_BYTES {
                bail!(
                    "the value for '{key}' is {} bytes; the limit is {STATE_MAX_VALUE_BYTES}",
                    value.len()
                );
            }
            store.set_setting(&identifier, &key, Some(&value)).await?;
            println!("{identifier}: {key} set");
        }
        ConfigCommand::Unset { identifier, key } => {
            check(&identifier, &key)?;
            store.set_setting(&identifier, &key, None).await?;
            println!("{identifier}: {key} removed");
        }
        ConfigCommand::List { identifier, json } => {
            let mut settings = store.list_settings().await?;
            if let Some(id) = &identifier {
                settings.retain(|k, _| k == id);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&settings)?);
                return Ok(exit::OK);
            }
            if settings.is_empty() {
                println!("no settings: add one with `cronwerk config set IDENTIFIER KEY VALUE`");
                return Ok(exit::OK);
            }
            let rows: Vec<Vec<String>> = settings
                .iter()
                .flat_map(|(id, entries)| {
                    entries
                        .iter()
                        .map(move |(k, v)| vec![id.clone(), k.clone(), short(v, 60)])
                })
                .collect();
            print_table(&["IDENTIFIER", "KEY", "VALUE"], &rows);
        }
    }
    Ok(exit::OK)
}

fn check(identifier: &str, key: &str) -> anyhow::Result<()> {
    if let Err(why) = validate_identifier(identifier) {
        bail!("'{identifier}' is not an implementation identifier: {why}");
    }
    if key.is_empty() || key.len() > STATE_MAX_KEY_BYTES {
        bail!("a setting key must be 1 to {STATE_MAX_KEY_BYTES} bytes");
    }
    Ok(())
}

//! `cronwerk token rotate|add|list|rm`: the data directory's API tokens.
//! The default token (the `api-token` file) and named ones, one per person
//! or pipeline (`api-tokens/`, kept as their SHA-256), so the audit trail
//! says which one made a change. A running `serve` checks the files on
//! every request: a new token works, a rotated or removed one stops, at
//! once.

use std::path::Path;

use clap::Subcommand;

use super::{common, exit};
use crate::api::{NamedTokens, TokenFile};
use crate::model::audit::AuditKind;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a new token (the old one stops working) and print it: the
    /// default token, or the named one NAME.
    Rotate { name: Option<String> },
    /// Make a named token, e.g. for one person or one pipeline, and print
    /// it (once: only its hash is kept).
    Add { name: String },
    /// List the named tokens and when each was made.
    List,
    /// Remove a named token: it stops working at once.
    Rm { name: String },
}

pub async fn run(data_dir: &Path, command: TokenCommand) -> anyhow::Result<u8> {
    let named = NamedTokens::in_dir(data_dir);
    let (subject, action) = match command {
        TokenCommand::Rotate { name: None } => {
            let file = TokenFile::in_dir(data_dir);
            let token = file.rotate()?;
            eprintln!("new API token, kept in {}:", file.path().display());
            println!("{token}");
            ("default".to_owned(), "rotated")
        }
        TokenCommand::Rotate { name: Some(name) } => {
            let token = match named.rotate(&name) {
                Ok(token) => token,
                Err(e) => return usage(e),
            };
            eprintln!("new token '{name}' (the old one stops working; shown once):");
            println!("{token}");
            (name, "rotated")
        }
        TokenCommand::Add { name } => {
            let token = match named.add(&name) {
                Ok(token) => token,
                Err(e) => return usage(e),
            };
            eprintln!("API token '{name}' (shown once; only its hash is kept):");
            println!("{token}");
            (name, "created")
        }
        TokenCommand::List => {
            let tokens = named.list()?;
            if tokens.is_empty() {
                println!("no named tokens: add one with `cronwerk token add NAME`");
            }
            for (name, made) in tokens {
                let made: chrono::DateTime<chrono::Utc> = made.into();
                println!("{name:<30} made {}", common::time(Some(made)));
            }
            return Ok(exit::OK);
        }
        TokenCommand::Rm { name } => match named.remove(&name) {
            Ok(true) => {
                println!("removed token '{name}'");
                (name, "removed")
            }
            Ok(false) => {
                eprintln!("error: there is no token named '{name}' (`cronwerk token list`)");
                return Ok(exit::USAGE);
            }
            Err(e) => return usage(e),
        },
    };
    // A token change is recorded where a store is to record it.
    if let Ok(store) = common::open_existing_store(data_dir).await {
        common::audit(&*store, AuditKind::Token, &subject, action, Vec::new()).await;
    }
    Ok(exit::OK)
}

fn usage(e: anyhow::Error) -> anyhow::Result<u8> {
    eprintln!("error: {e:#}");
    Ok(exit::USAGE)
}

//! `cronwerk token rotate`: replaces the API token of the data directory.
//! A running `serve` checks the file on every request, so the old token
//! stops working at once.

use std::path::Path;

use clap::Subcommand;

use super::exit;
use crate::api::TokenFile;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a new API token (the old one stops working) and print it.
    Rotate,
}

pub fn run(data_dir: &Path, command: TokenCommand) -> anyhow::Result<u8> {
    match command {
        TokenCommand::Rotate => {
            let file = TokenFile::in_dir(data_dir);
            let token = file.rotate()?;
            eprintln!("new API token, kept in {}:", file.path().display());
            println!("{token}");
            Ok(exit::OK)
        }
    }
}

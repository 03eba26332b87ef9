//! `cronwerk completions SHELL` and `cronwerk man`: shell completions and
//! manual pages generated from the command line's own definition (clap), so
//! they list exactly the verbs and flags this binary has.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::exit;

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write a page per command into this folder (cronwerk.1,
    /// cronwerk-task.1, cronwerk-task-add.1, ...); without it, print the
    /// main page (`cronwerk man | man -l -`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Prints the completion script for `a.shell`. Install it where the shell
/// looks (docs/operating.md, "Shell completions").
pub fn completions(a: CompletionsArgs) -> anyhow::Result<u8> {
    let mut command = super::Cli::command();
    clap_complete::generate(a.shell, &mut command, "cronwerk", &mut std::io::stdout());
    Ok(exit::OK)
}

pub fn man(a: ManArgs) -> anyhow::Result<u8> {
    let command = super::Cli::command();
    match a.out {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .context("writing the manual page")?,
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing manual pages into {}", dir.display()))?;
            eprintln!("manual pages written to {}", dir.display());
        }
    }
    Ok(exit::OK)
}

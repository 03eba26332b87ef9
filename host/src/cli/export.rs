//! `cronwerk export [-o FILE]`: writes the store's configurations and
//! settings as a configurations file, the one `cronwerk apply` reads, so a
//! running setup can be put under version control and reproduced.

use std::path::{Path, PathBuf};

use super::common;
use super::exit;
use super::tasks_file::TasksFile;
use crate::api::tasks::TaskInput;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Write to this file instead of standard output (replaced whole).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Include secret settings' values (else a secret is written as
    /// `{ secret = true }`, and `apply` keeps the value the store has). The
    /// file is then readable by its owner only.
    #[arg(long)]
    with_secrets: bool,
}

pub async fn run(data_dir: &Path, a: ExportArgs) -> anyhow::Result<u8> {
    let store = common::open_existing_store(data_dir).await?;
    let tasks = store.list_tasks().await?;
    let settings = store.list_settings().await?;
    let file = TasksFile {
        tasks: tasks.iter().map(|t| TaskInput::of(&t.config)).collect(),
        settings: TasksFile::settings_of(&settings, a.with_secrets),
    };
    let text = file.to_text()?;
    match &a.output {
        None => print!("{text}"),
        Some(path) => {
            // Owner-only when it holds secrets; a reader never sees half of it.
            let mode = if a.with_secrets { 0o600 } else { 0o644 };
            crate::api::auth::write_replacing(path, &text, mode)?;
            eprintln!(
                "exported {} configuration(s) and the settings of {} identifier(s) to {}",
                file.tasks.len(),
                file.settings.len(),
                path.display()
            );
        }
    }
    Ok(exit::OK)
}

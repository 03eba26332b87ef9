//! `cronwerk export [-o FILE]`: writes the store's configurations and
//! settings as a configurations file, the one `cronwerk apply` reads, so a
//! running setup can be put under version control and reproduced.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

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
            write_file(path, &text, a.with_secrets)?;
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

/// Writes `text` to `path` through a temporary file in the same folder, so
/// a reader never sees half a file; owner-only when it holds secrets.
fn write_file(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("the output must name a file")?;
    let tmp = folder.join(format!(".{}.partial", name.to_string_lossy()));
    let mode = if private { 0o600 } else { 0o644 };
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

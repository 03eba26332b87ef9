//! `cronwerk completions SHELL` and `cronwerk man`: shell completions and
//! manual pages generated from the command line's own definition (clap), so
//! they list exactly the verbs and flags this binary has.
//!
//! Completions are dynamic (clap_complete's engine): the script a shell
//! loads calls `cronwerk` itself on every Tab, with `CRONWERK_COMPLETE`
//! set, so besides verbs and flags it completes what is in the store the
//! command line points at: configuration names and the identifiers the
//! instances serve.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::engine::CompletionCandidate;
use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};

use super::{common, exit};

/// The variable that makes `cronwerk` answer a completion request.
pub const COMPLETE_VAR: &str = "CRONWERK_COMPLETE";

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// Answers a completion request and exits, if this process is one (the
/// shell's script sets [`COMPLETE_VAR`]); otherwise returns.
pub fn answer_completion_request() {
    clap_complete::CompleteEnv::with_factory(super::Cli::command)
        .var(COMPLETE_VAR)
        .completer("cronwerk")
        .complete();
}

/// Configuration names, for the arguments that take one.
pub fn task_names() -> Vec<CompletionCandidate> {
    from_store(|store| async move {
        let tasks = store.list_tasks().await.ok()?;
        Some(
            tasks
                .into_iter()
                .map(|t| CompletionCandidate::new(t.config.name))
                .collect(),
        )
    })
}

/// The identifiers the instances' plugins folders serve, for
/// `--implementation`.
pub fn identifiers() -> Vec<CompletionCandidate> {
    from_store(|store| async move {
        let plugins = store.list_plugins().await.ok()?;
        Some(
            crate::spec::loaded_identifiers(&plugins)
                .into_iter()
                .map(CompletionCandidate::new)
                .collect(),
        )
    })
}

/// What `read` finds in the store the words being completed point at
/// (`--data-dir`, `--database`, else their variables and the default);
/// nothing if there is no store there or it does not answer within a
/// second. Never creates one.
fn from_store<F, Fut>(read: F) -> Vec<CompletionCandidate>
where
    F: FnOnce(std::sync::Arc<dyn crate::store::Store>) -> Fut,
    Fut: std::future::Future<Output = Option<Vec<CompletionCandidate>>>,
{
    let words: Vec<OsString> = std::env::args_os().collect();
    let data_dir = flag_value(&words, "--data-dir")
        .or_else(|| std::env::var_os("CRONWERK_DATA_DIR"))
        .map_or_else(|| PathBuf::from("cronwerk-data"), PathBuf::from);
    let database = flag_value(&words, "--database")
        .map(|d| d.to_string_lossy().into_owned())
        .or_else(|| std::env::var("CRONWERK_DATABASE").ok());
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    common::use_database(database);
    runtime
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(1), async {
                let store = common::open_existing_store(Path::new(&data_dir))
                    .await
                    .ok()?;
                read(store).await
            })
            .await
            .ok()
            .flatten()
        })
        .unwrap_or_default()
}

/// The value of `--flag VALUE` or `--flag=VALUE` among the words.
fn flag_value(words: &[OsString], flag: &str) -> Option<OsString> {
    let prefix = format!("{flag}=");
    words.iter().enumerate().find_map(|(i, w)| {
        let text = w.to_string_lossy();
        match text.strip_prefix(&prefix) {
            Some(value) => Some(OsString::from(value)),
            None => (text == flag).then(|| words.get(i + 1).cloned()).flatten(),
        }
    })
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
/// looks (docs/operating.md, "Shell completions"); it runs `cronwerk` (from
/// the PATH) to complete.
pub fn completions(a: CompletionsArgs) -> anyhow::Result<u8> {
    let shell: &dyn EnvCompleter = match a.shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Zsh => &Zsh,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::PowerShell => &Powershell,
        other => {
            anyhow::bail!("no completions for {other}: use bash, zsh, fish, elvish or powershell")
        }
    };
    shell
        .write_registration(
            COMPLETE_VAR,
            "cronwerk",
            "cronwerk",
            "cronwerk",
            &mut std::io::stdout(),
        )
        .context("writing the completion script")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_value_is_read_in_both_spellings() {
        let words = |w: &[&str]| w.iter().map(OsString::from).collect::<Vec<_>>();
        let w = words(&[
            "cronwerk",
            "--",
            "cronwerk",
            "--data-dir",
            "/d",
            "task",
            "run",
            "",
        ]);
        assert_eq!(flag_value(&w, "--data-dir"), Some("/d".into()));
        let w = words(&["cronwerk", "--data-dir=/e", "task"]);
        assert_eq!(flag_value(&w, "--data-dir"), Some("/e".into()));
        assert_eq!(flag_value(&w, "--database"), None);
        let w = words(&["cronwerk", "--data-dir"]);
        assert_eq!(flag_value(&w, "--data-dir"), None);
    }
}

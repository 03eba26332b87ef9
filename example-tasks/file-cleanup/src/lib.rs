//! `Acme.FileCleanup`: deletes files older than N days from a directory the
//! operator granted (e.g. `--grant-dir /srv/uploads/tmp:/data`), and reports
//! what it removed. The sandbox sees only the granted directory, so however
//! its properties are set, nothing outside the grant can be touched.
//!
//! Properties:
//! - `path`: the directory as the task sees it (default `/data`);
//! - `older-than-days`: age threshold in days, by modification time (default 7);
//! - `pattern`: only file names matching this glob, e.g. `*.tmp` (default `*`);
//! - `recursive`: `true` to descend into subdirectories (default `false`);
//! - `dry-run`: `true` to report without deleting (default `false`).
//!
//! Config (shared by every configuration of the identifier): `max-deletions`,
//! a safety cap per run (default 1000).
//!
//! State: `removed-total` and `bytes-total` count across runs.

mod sweep;

use std::time::{Duration, SystemTime};

use cronwerk_guest::{Context, Error, ScheduledTask, TaskInfo, bail, config, state};

use sweep::{Sweep, SweepOptions};

/// Events listed one per file; the rest are counted in the summary.
const LISTED_FILES: usize = 50;

struct FileCleanup;

impl ScheduledTask for FileCleanup {
    fn info() -> TaskInfo {
        TaskInfo::new("Acme.FileCleanup", "File cleanup")
            .description("Deletes files older than a number of days from a granted directory")
            .version(env!("CARGO_PKG_VERSION"))
            .default_schedule("0 3 * * *")
    }

    fn execute(ctx: &Context) -> Result<String, Error> {
        let root = ctx.property_or("path", "/data").to_owned();
        let days: u64 = ctx.parse_property("older-than-days")?.unwrap_or(7);
        let pattern = ctx.property_or("pattern", "*");
        let pattern = glob::Pattern::new(pattern).map_err(|e| {
            Error::msg(format!(
                "property 'pattern' = '{pattern}' is not a glob: {e}"
            ))
        })?;
        let recursive: bool = ctx.parse_property("recursive")?.unwrap_or(false);
        let dry_run: bool = ctx.parse_property("dry-run")?.unwrap_or(false);
        let max_deletions: usize = match config::get("max-deletions") {
            Some(v) => v.parse().map_err(|_| {
                Error::msg(format!(
                    "config 'max-deletions' = '{v}' is not a whole number"
                ))
            })?,
            None => 1000,
        };
        if !std::path::Path::new(&root).is_dir() {
            bail!(
                "{root} is not a directory this task can see: grant one, e.g. --grant-dir /srv/tmp:{root}"
            );
        }
        let cutoff = SystemTime::now() - Duration::from_secs(days * 24 * 60 * 60);
        let sweep = Sweep::run(&SweepOptions {
            root: root.clone().into(),
            cutoff,
            pattern,
            recursive,
            dry_run,
            max_deletions,
            cancelled: &|| ctx.is_cancelled(),
        });
        report(&sweep, days, &root, dry_run)
    }
}

fn report(sweep: &Sweep, days: u64, root: &str, dry_run: bool) -> Result<String, Error> {
    let verb = if dry_run { "would remove" } else { "removed" };
    for file in sweep.removed.iter().take(LISTED_FILES) {
        cronwerk_guest::info!(
            code: if dry_run { "WOULD_REMOVE" } else { "REMOVED" },
            "{} ({} bytes, {} days old)",
            file.path.display(),
            file.bytes,
            file.age_days
        );
    }
    if sweep.removed.len() > LISTED_FILES {
        cronwerk_guest::info!(code: "REMOVED_MORE", "and {} more files", sweep.removed.len() - LISTED_FILES);
    }
    for (path, why) in &sweep.failures {
        cronwerk_guest::warn!(code: "NOT_REMOVED", "{}: {why}", path.display());
    }
    if sweep.hit_limit {
        cronwerk_guest::warn!(
            code: "CLEANUP_LIMIT",
            "stopped after {} deletions (config max-deletions); the rest waits for the next run",
            sweep.removed.len()
        );
    }
    let bytes: u64 = sweep.removed.iter().map(|f| f.bytes).sum();
    if !dry_run {
        let total: u64 = state::get_parsed("removed-total")?.unwrap_or(0);
        let total_bytes: u64 = state::get_parsed("bytes-total")?.unwrap_or(0);
        state::set("removed-total", total + sweep.removed.len() as u64)?;
        state::set("bytes-total", total_bytes + bytes)?;
    }
    let mut message = format!(
        "{verb} {} files ({bytes} bytes) older than {days} days from {root}; kept {}",
        sweep.removed.len(),
        sweep.kept
    );
    if sweep.cancelled {
        message.push_str(" (stopped early: the run was cancelled)");
    }
    if !sweep.failures.is_empty() {
        bail!(
            "{message}; {} files could not be removed",
            sweep.failures.len()
        );
    }
    Ok(message)
}

cronwerk_guest::export_task!(FileCleanup);

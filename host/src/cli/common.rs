//! Pieces several verbs share: opening the store, the options that describe
//! a configuration, plain-text tables, and [`shown`], which every printer
//! of a task's text passes it through.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;

use super::args;
use crate::model::{DirGrant, HttpGrant, MisfirePolicy, OverlapPolicy};
use crate::runtime::HttpSettings;
use crate::spec::{ConfigSpec, ScheduleSpec};
use crate::store::{PostgresStore, SqliteStore, Store, StoreError, is_postgres_url};

/// The `--database` of this process, set once by `main`.
static DATABASE: OnceLock<Option<String>> = OnceLock::new();

/// Records `--database` for [`open_store`].
pub fn use_database(url: Option<String>) {
    let _ = DATABASE.set(url.filter(|u| !u.is_empty()));
}

fn database() -> Option<&'static str> {
    DATABASE.get().and_then(|d| d.as_deref())
}

/// Opens the store every verb uses: the PostgreSQL database of
/// `--database` when it is a postgres:// URL, else `cronwerk.db` in
/// `data_dir` (created on first use).
pub async fn open_store(data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    match database() {
        Some(url) if is_postgres_url(url) => {
            let store = PostgresStore::open(url)
                .await
                .context("opening the cronwerk store in PostgreSQL (--database)")?;
            Ok(Arc::new(store))
        }
        Some(_) => anyhow::bail!(
            "--database takes a postgres:// or postgresql:// URL; leave it out to keep the \
             store in --data-dir (SQLite)"
        ),
        None => {
            let store = SqliteStore::open(data_dir)
                .with_context(|| format!("opening the cronwerk store in {}", data_dir.display()))?;
            Ok(Arc::new(store))
        }
    }
}

/// Why a verb that only reads found no store: it looked in a folder that
/// holds none, and created nothing there.
#[derive(Debug, thiserror::Error)]
#[error(
    "no cronwerk data in {dir} ({dir}/cronwerk.db does not exist; nothing was created there): \
     point at the folder `serve` uses with --data-dir DIR (or CRONWERK_DATA_DIR), or at a \
     PostgreSQL store with --database URL",
    dir = .0.display()
)]
pub struct NoStore(pub std::path::PathBuf);

/// Opens the store for a verb that reads, or changes what is there: like
/// [`open_store`], but a data folder without a store is an error
/// ([`NoStore`]) rather than a new, empty store.
pub async fn open_existing_store(data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    if database().is_none() && !data_dir.join("cronwerk.db").is_file() {
        return Err(NoStore(data_dir.to_owned()).into());
    }
    open_store(data_dir).await
}

/// Where the store is, for messages (never a password).
/// What a person can do about a store error, appended to its message: the
/// store's messages are plain, the commands to run are the CLI's to name.
pub fn store_hint(e: &anyhow::Error) -> &'static str {
    match e.downcast_ref::<StoreError>() {
        Some(StoreError::TaskNotFound(_)) => " (see `cronwerk task list`)",
        Some(StoreError::TaskExists(_)) => ": pick another name or use `cronwerk task edit`",
        Some(StoreError::BroadcastNotFound(_)) => " (see `cronwerk farm list`)",
        _ => "",
    }
}

pub fn store_location(data_dir: &Path) -> String {
    match database() {
        Some(_) => "a PostgreSQL database".into(),
        None => data_dir.display().to_string(),
    }
}

/// When a configuration runs: exactly one of these (for `add`), or none to
/// keep the current schedule (for `edit`).
#[derive(Args, Default)]
pub struct ScheduleArgs {
    /// Run every DURATION (e.g. 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", group = "schedule")]
    pub every: Option<String>,
    /// Run on a cron expression: 6 fields with seconds ("0 30 2 * * *") or 5 without.
    #[arg(long, value_name = "EXPR", group = "schedule")]
    pub cron: Option<String>,
    /// Time zone of --cron (IANA name, e.g. Europe/Prague).
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub tz: String,
    /// Run once at TIME (RFC 3339, e.g. 2026-12-01T08:00:00Z).
    #[arg(long, value_name = "TIME", group = "schedule")]
    pub at: Option<String>,
    /// First run at TIME (RFC 3339); with --interval-seconds, then every N seconds.
    #[arg(long, value_name = "TIME", group = "schedule")]
    pub run_on: Option<String>,
    /// With --run-on: repeat every N seconds.
    #[arg(long, value_name = "N", requires = "run_on")]
    pub interval_seconds: Option<u64>,
    /// With --every: the time (RFC 3339) its slots count from, instead of
    /// now (`cronwerk export` writes it, so a moved configuration keeps
    /// its slots).
    #[arg(long, value_name = "TIME", requires = "every")]
    pub anchor: Option<String>,
}

impl ScheduleArgs {
    /// The shared description of what these flags say.
    pub fn spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            every: self.every.clone(),
            cron: self.cron.clone(),
            // --tz has a default; it only means something with --cron.
            timezone: self.cron.as_ref().map(|_| self.tz.clone()),
            at: self.at.clone(),
            run_on: self.run_on.clone(),
            interval_seconds: self.interval_seconds,
            anchor: self.anchor.clone(),
        }
    }
}

/// Limits, grants, properties and policies of a configuration. Every field
/// is optional so `edit` can change just what is given.
#[derive(Args, Default)]
pub struct ConfigArgs {
    /// Wall-time limit per run (default 60s).
    #[arg(long, value_parser = args::duration)]
    pub timeout: Option<Duration>,
    /// Fuel limit per run (about one unit per wasm instruction); default unlimited.
    #[arg(long, value_parser = args::count)]
    pub fuel: Option<u64>,
    /// Memory limit per run (default 128MiB).
    #[arg(long, value_parser = args::size)]
    pub memory: Option<u64>,
    /// A custom property, KEY=VALUE (repeatable).
    #[arg(long = "property", short = 'p', value_parser = args::key_value)]
    pub properties: Vec<(String, String)>,
    /// Grant a host directory to the task: HOST[:GUEST][:ro] (repeatable).
    #[arg(long = "grant-dir")]
    pub grant_dirs: Vec<DirGrant>,
    /// Let the task send HTTP requests to HOST[:PORT] (repeatable; `*.example.com`
    /// for subdomains; without a port only 80/443).
    #[arg(long = "allow-http")]
    pub allow_http: Vec<HttpGrant>,
    /// Run only on instances started with this role, e.g. edit (repeatable:
    /// all of them; replaces the roles a configuration had).
    #[arg(long = "require-role", value_name = "ROLE", value_parser = args::role)]
    pub roles: Vec<String>,
    /// After downtime: skip missed slots, run once, or run all within --catch-up.
    #[arg(long, value_parser = args::misfire)]
    pub misfire: Option<MisfirePolicy>,
    /// How far back --misfire all catches up (default 1h).
    #[arg(long, value_parser = args::duration)]
    pub catch_up: Option<Duration>,
    /// Retries after a failed or stopped run (default 0).
    #[arg(long)]
    pub retries: Option<u32>,
    /// Delay before the first retry, doubling each time (default 10s).
    #[arg(long, value_parser = args::duration)]
    pub retry_backoff: Option<Duration>,
    /// Finished runs kept for this configuration, failures apart (default:
    /// `serve --keep-runs`, counted over all its runs).
    #[arg(long, value_name = "N")]
    pub keep_runs: Option<u32>,
    /// Failed, stopped and abandoned runs kept for this configuration, so
    /// successes do not push them out (default: as --keep-runs).
    #[arg(long, value_name = "N")]
    pub keep_failed: Option<u32>,
    /// Go back to `serve --keep-runs` for this configuration's history.
    #[arg(long, conflicts_with_all = ["keep_runs", "keep_failed"])]
    pub default_history: bool,
    /// When a slot comes while a run still goes on: skip it (default), allow
    /// runs side by side (up to --max-concurrent), replace the running run
    /// (stop it, then start), or queue one slot to start when it ends.
    #[arg(long, value_parser = args::overlap, value_name = "POLICY")]
    pub on_overlap: Option<OverlapPolicy>,
    /// With --on-overlap allow: runs at once (default 10).
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u32>,
    /// Shift every slot by an offset within this, taken from the name (so
    /// many configurations with one schedule do not start together), e.g.
    /// 10m; 0s removes it.
    #[arg(long, value_parser = args::duration, value_name = "DURATION")]
    pub jitter: Option<Duration>,
    /// Active from this time (RFC 3339): no slot before it; `none` removes it.
    #[arg(long, value_parser = args::time_or_none, value_name = "TIME")]
    pub start: Option<TimeOrNone>,
    /// Active until this time (RFC 3339): no slot at or after it; `none`
    /// removes it.
    #[arg(long, value_parser = args::time_or_none, value_name = "TIME")]
    pub until: Option<TimeOrNone>,
    /// Run this configuration once when a run fails for good (failed,
    /// stopped or abandoned, no retry left), told about it (repeatable;
    /// replaces the list it had).
    #[arg(long = "on-failure", value_name = "NAME")]
    pub on_failure: Vec<String>,
    /// Run this configuration once when a run succeeds (repeatable;
    /// replaces the list it had).
    #[arg(long = "on-success", value_name = "NAME")]
    pub on_success: Vec<String>,
    /// Remove every follow-up (--on-failure and --on-success).
    #[arg(long, conflicts_with_all = ["on_failure", "on_success"])]
    pub no_follow_ups: bool,
    /// Also run it once on every instance when it starts (trigger
    /// startup), enabled or not.
    #[arg(long, conflicts_with = "no_on_start")]
    pub on_start: bool,
    /// No run on instances' start any more.
    #[arg(long)]
    pub no_on_start: bool,
}

/// A follow-up list as the flags give it: `None` (keep it) unless named,
/// or cleared with `--no-follow-ups`.
fn follow_ups(names: &[String], clear: bool) -> Option<Vec<String>> {
    match clear {
        true => Some(Vec::new()),
        false => (!names.is_empty()).then(|| names.to_vec()),
    }
}

/// A time given on the command line, or `none` to remove one.
pub type TimeOrNone = Option<chrono::DateTime<chrono::Utc>>;

impl ConfigArgs {
    /// The shared description of what these flags say; relative grant
    /// paths are taken from the current directory, as a shell user means them.
    pub fn spec(&self) -> ConfigSpec {
        ConfigSpec {
            timeout: self.timeout,
            fuel: self.fuel,
            memory: self.memory,
            properties: self.properties.clone(),
            grant_dirs: self
                .grant_dirs
                .iter()
                .map(|g| DirGrant {
                    host_path: std::path::absolute(&g.host_path)
                        .unwrap_or_else(|_| g.host_path.clone()),
                    ..g.clone()
                })
                .collect(),
            allow_http: self.allow_http.clone(),
            roles: (!self.roles.is_empty()).then(|| self.roles.clone()),
            misfire: self.misfire,
            catch_up: self.catch_up,
            retries: self.retries,
            retry_backoff: self.retry_backoff,
            keep_runs: match self.default_history {
                true => Some(None),
                false => self.keep_runs.map(Some),
            },
            keep_failed: match self.default_history {
                true => Some(None),
                false => self.keep_failed.map(Some),
            },
            on_overlap: self.on_overlap,
            max_concurrent: self.max_concurrent,
            jitter: self.jitter.map(Some),
            start: self.start,
            until: self.until,
            on_failure: follow_ups(&self.on_failure, self.no_follow_ups),
            on_success: follow_ups(&self.on_success, self.no_follow_ups),
            on_start: match (self.on_start, self.no_on_start) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
        }
    }
}

/// What outbound HTTP of the runs this process executes may reach besides
/// their grants (`serve`, `exec`).
#[derive(Args, Default)]
pub struct HttpArgs {
    /// Let a granted host NAME lead to an internal address (loopback,
    /// link-local, private, ...). Without it only a grant naming the address
    /// itself, e.g. --allow-http 10.0.0.5:8080, reaches one.
    #[arg(long)]
    pub allow_private_http: bool,
}

impl HttpArgs {
    pub fn settings(&self) -> HttpSettings {
        HttpSettings {
            allow_private: self.allow_private_http,
            ..HttpSettings::default()
        }
    }
}

/// A time as operators read it: UTC, to the second.
pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// Text a task wrote (a message, an event, a state key, a description),
/// made safe to print on a terminal. A task is hostile: an ESC sequence in
/// its text could recolour, clear or retitle the operator's terminal, a CR
/// or newline could fake another line of output. So every control
/// character (C0 including NUL, CR, LF and tab, DEL, C1) and the Unicode
/// controls that reorder text on screen (bidirectional embeddings,
/// overrides and isolates) are printed escaped: `\n`, `\r`, `\t`, else
/// `\u{1b}`. Everything else prints as written. `--json` output needs
/// none of this: JSON escapes control characters itself.
pub fn shown(text: &str) -> Cow<'_, str> {
    fn escaped(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if escaped(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Prints rows as left-aligned columns under a header; every cell
/// [`shown`], as cells hold what tasks wrote.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| shown(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<width$}", width = widths[i])
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

/// Cuts a message for a table cell.
pub fn short(text: &str, max: usize) -> String {
    let one_line = text.lines().next().unwrap_or("");
    if one_line.chars().count() <= max && !text.contains('\n') {
        return one_line.to_owned();
    }
    let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// Whether a live `serve` on this store may run `task` (it has the roles
/// the configuration needs): what a command that queues work and waits
/// for it checks first.
pub async fn some_instance_may_run(
    store: &dyn crate::store::Store,
    task: &crate::model::TaskRecord,
) -> anyhow::Result<bool> {
    let live = crate::scheduler::farm::live_instances(store).await?;
    Ok(live
        .iter()
        .any(|i| task.config.missing_roles(&i.roles).is_empty()))
}

/// Who the audit trail says made a change from this command.
pub fn actor() -> String {
    format!("{} with the CLI", operator())
}

/// Records a change in the audit trail. The change is made already: if
/// the trail cannot take the entry, the command says so and still succeeds.
pub async fn audit(
    store: &dyn crate::store::Store,
    kind: crate::model::audit::AuditKind,
    subject: &str,
    action: &str,
    changes: Vec<crate::model::audit::Change>,
) {
    let entry = crate::model::audit::NewAudit {
        at: Utc::now(),
        actor: actor(),
        kind,
        subject: subject.to_owned(),
        action: action.to_owned(),
        changes,
    };
    if let Err(e) = store.append_audit(&entry).await {
        eprintln!("warning: the change is made, but the audit trail could not record it: {e}");
    }
}

/// The user running this command, as the name stop requests and the like
/// are recorded under: the login name, else the numeric user id.
pub fn operator() -> String {
    // SAFETY: getuid cannot fail; getpwuid_r writes only into the buffers
    // given, and the name is copied out before they go.
    unsafe {
        let uid = libc::getuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) == 0
            && !result.is_null()
            && !pwd.pw_name.is_null()
        {
            return std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned();
        }
        format!("uid {uid}")
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn control_characters_print_escaped() {
        assert_eq!(shown("plain text, ünïcode ✓"), "plain text, ünïcode ✓");
        assert_eq!(
            shown("\u{1b}[2J\u{7}a\rb\nc\td\0e\u{7f}f\u{9b}g\u{202e}h"),
            "\\u{1b}[2J\\u{7}a\\rb\\nc\\td\\u{0}e\\u{7f}f\\u{9b}g\\u{202e}h"
        );
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let out = shown(&c.to_string()).into_owned();
            assert!(out.chars().all(|o| !o.is_control()), "{c:?} -> {out:?}");
            assert!(out.starts_with('\\'), "{c:?} -> {out:?}");
        }
    }
}

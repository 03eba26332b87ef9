//! Pieces several verbs share: opening the store, the options that describe
//! a configuration, and plain-text tables.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;

use super::args;
use crate::runtime::{DirGrant, HttpGrant};
use crate::scheduler::schedule::Schedule;
use crate::store::{MisfirePolicy, PostgresStore, SqliteStore, Store, TaskConfig, is_postgres_url};

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

/// Where the store is, for messages (never a password).
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
}

fn parse_time(flag: &str, text: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| {
            let t = t.with_timezone(&Utc);
            // Stores keep milliseconds; so does the schedule.
            chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::milliseconds(1))
                .unwrap_or(t)
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "--{flag} '{text}' is not an RFC 3339 time ({e}); use e.g. 2026-12-01T08:00:00Z"
            )
        })
}

impl ScheduleArgs {
    /// The schedule these options describe, if any; `now` anchors intervals
    /// (on a whole second, so runs fall on round times).
    pub fn to_schedule(&self, now: DateTime<Utc>) -> anyhow::Result<Option<Schedule>> {
        let now = chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::seconds(1))
            .unwrap_or(now);
        let schedule = if let Some(every) = &self.every {
            let interval = Schedule::parse_interval(every)?;
            Schedule::every(interval, now)?
        } else if let Some(expr) = &self.cron {
            Schedule::cron(expr, &self.tz)?
        } else if let Some(at) = &self.at {
            Schedule::at(parse_time("at", at)?)
        } else if let Some(run_on) = &self.run_on {
            Schedule::run_on(parse_time("run-on", run_on)?, self.interval_seconds)?
        } else {
            return Ok(None);
        };
        Ok(Some(schedule))
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
    /// After downtime: skip missed slots, run once, or run all within --catch-up.
    #[arg(long)]
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
}

impl ConfigArgs {
    /// Applies the given options onto `config`.
    pub fn apply(&self, config: &mut TaskConfig) -> anyhow::Result<()> {
        if let Some(t) = self.timeout {
            anyhow::ensure!(!t.is_zero(), "--timeout must be more than zero");
            config.limits.timeout = t;
        }
        if let Some(f) = self.fuel {
            config.limits.fuel = Some(f);
        }
        if let Some(m) = self.memory {
            anyhow::ensure!(
                m >= 64 * 1024,
                "--memory must be at least 64KiB (one wasm page)"
            );
            config.limits.memory_bytes = m;
        }
        for (k, v) in &self.properties {
            config.properties.insert(k.clone(), v.clone());
        }
        for grant in &self.grant_dirs {
            anyhow::ensure!(
                grant.host_path.is_dir(),
                "--grant-dir {}: not a directory on this host",
                grant.host_path.display()
            );
            config
                .grants
                .dirs
                .retain(|g| g.guest_path != grant.guest_path);
            config.grants.dirs.push(grant.clone());
        }
        for grant in &self.allow_http {
            if !config.grants.http_hosts.contains(grant) {
                config.grants.http_hosts.push(grant.clone());
            }
        }
        if let Some(m) = self.misfire {
            config.misfire = m;
        }
        if let Some(c) = self.catch_up {
            config.catch_up_window = c;
        }
        if let Some(r) = self.retries {
            config.retries = r;
        }
        if let Some(b) = self.retry_backoff {
            config.retry_backoff = b;
        }
        Ok(())
    }
}

/// The first fire time of a schedule that starts now: intervals wait one
/// interval, everything else takes its first time from now on.
pub fn first_run(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match schedule {
        Schedule::Every { .. } | Schedule::Cron { .. } => schedule.next_after(now),
        _ => schedule.first_at_or_after(now),
    }
}

/// A time as operators read it: UTC, to the second.
pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// Prints rows as left-aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
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
        line(row.clone());
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

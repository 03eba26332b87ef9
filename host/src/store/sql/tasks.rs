//! Configurations: creating, editing and reading them, and the two reads
//! the dispatcher makes every pass (what is due, and when the next thing is).

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::rows::{self, TASK_COLUMNS};
use super::{Tx, params, query_opt};
use crate::model::{TaskConfig, TaskRecord};

/// The configuration's history limits as their columns hold them, which
/// retention reads (the JSON holds them too, for everything else).
fn history_limits(config: &TaskConfig) -> (Option<i64>, Option<i64>) {
    (
        config.keep_runs.map(i64::from),
        config.keep_failed.map(i64::from),
    )
}

/// Whether it runs on every instance's start, as the start's query reads it.
fn on_start(config: &TaskConfig) -> bool {
    config.on_start
}

/// How many of its runs may go on at once, as the claims' condition reads it.
fn max_concurrent(config: &TaskConfig) -> i64 {
    i64::from(config.concurrency_limit())
}

/// Inserts a configuration; fails on the unique name (the caller turns that
/// into `TaskExists`).
pub async fn create<T: Tx + ?Sized>(
    tx: &T,
    config: &TaskConfig,
    next_run_at: Option<DateTime<Utc>>,
) -> anyhow::Result<TaskRecord> {
    let json = serde_json::to_string(config)?;
    let sql = format!(
        "INSERT INTO tasks (name, enabled, config, created_at, updated_at, next_run_at,
                            keep_runs, keep_failed, max_concurrent, on_start)
         VALUES ($1, $2, $3, {now}, {now}, $4, $5, $6, $7, $8)
         RETURNING {TASK_COLUMNS}",
        now = T::NOW
    );
    let (keep_runs, keep_failed) = history_limits(config);
    let row = query_opt(
        tx,
        &sql,
        params![
            &config.name,
            config.enabled,
            &json,
            next_run_at,
            keep_runs,
            keep_failed,
            max_concurrent(config),
            on_start(config)
        ],
    )
    .await?
    .context("the new configuration's row did not come back")?;
    rows::task(row)
}

/// Replaces the configuration named `name`; `None` if there is none.
pub async fn update<T: Tx + ?Sized>(
    tx: &T,
    name: &str,
    config: &TaskConfig,
    next_run_at: Option<DateTime<Utc>>,
) -> anyhow::Result<Option<TaskRecord>> {
    let json = serde_json::to_string(config)?;
    let sql = format!(
        "UPDATE tasks SET name = $1, enabled = $2, config = $3, updated_at = {now},
                next_run_at = $4, keep_runs = $6, keep_failed = $7, max_concurrent = $8,
                on_start = $9
         WHERE name = $5
         RETURNING {TASK_COLUMNS}",
        now = T::NOW
    );
    let (keep_runs, keep_failed) = history_limits(config);
    query_opt(
        tx,
        &sql,
        params![
            &config.name,
            config.enabled,
            &json,
            next_run_at,
            name,
            keep_runs,
            keep_failed,
            max_concurrent(config),
            on_start(config)
        ],
    )
    .await?
    .map(rows::task)
    .transpose()
}

/// Deletes a configuration and its state; false if there was none.
pub async fn delete<T: Tx + ?Sized>(tx: &T, name: &str) -> anyhow::Result<bool> {
    let Some(mut row) = query_opt(
        tx,
        "DELETE FROM tasks WHERE name = $1 RETURNING id",
        params![name],
    )
    .await?
    else {
        return Ok(false);
    };
    let id = row.int(0)?;
    tx.exec("DELETE FROM task_state WHERE task_id = $1", params![id])
        .await?;
    Ok(true)
}

pub async fn by_name<T: Tx + ?Sized>(tx: &T, name: &str) -> anyhow::Result<Option<TaskRecord>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE name = $1");
    query_opt(tx, &sql, params![name])
        .await?
        .map(rows::task)
        .transpose()
}

pub async fn by_id<T: Tx + ?Sized>(tx: &T, id: i64) -> anyhow::Result<Option<TaskRecord>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
    query_opt(tx, &sql, params![id])
        .await?
        .map(rows::task)
        .transpose()
}

/// The configurations of `ids` that exist, one statement each (SQLite:
/// in-process, so a statement costs no round trip).
pub async fn by_ids<T: Tx + ?Sized>(tx: &T, ids: &[i64]) -> anyhow::Result<Vec<TaskRecord>> {
    let mut found = Vec::with_capacity(ids.len());
    for &id in ids {
        found.extend(by_id(tx, id).await?);
    }
    Ok(found)
}

pub async fn list<T: Tx + ?Sized>(tx: &T) -> anyhow::Result<Vec<TaskRecord>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY name");
    rows::all(tx.query(&sql, &[]).await?, rows::task)
}

/// Due configurations, earliest first. `enabled = TRUE` (not a bare
/// `enabled`) lets SQLite use its `(enabled, ...)` indexes; PostgreSQL
/// reads it as its partial indexes' `WHERE enabled`.
pub async fn due<T: Tx + ?Sized>(tx: &T, now: DateTime<Utc>) -> anyhow::Result<Vec<TaskRecord>> {
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks
         WHERE enabled = TRUE AND (next_run_at <= $1 OR retry_at <= $1)
         ORDER BY COALESCE(CASE WHEN next_run_at <= retry_at THEN next_run_at ELSE retry_at END,
                           next_run_at, retry_at), id"
    );
    rows::all(tx.query(&sql, params![now]).await?, rows::task)
}

/// Two index-only minimums (next fire times, retry times) rather than a
/// scan of every configuration.
pub async fn earliest_due<T: Tx + ?Sized>(tx: &T) -> anyhow::Result<Option<DateTime<Utc>>> {
    let row = query_opt(
        tx,
        "SELECT MIN(t) FROM (
             SELECT MIN(next_run_at) AS t FROM tasks WHERE enabled = TRUE
             UNION ALL
             SELECT MIN(retry_at) AS t FROM tasks WHERE enabled = TRUE) AS due",
        &[],
    )
    .await?;
    match row {
        Some(mut row) => row.opt_time(0),
        None => Ok(None),
    }
}

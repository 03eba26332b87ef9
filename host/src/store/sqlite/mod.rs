//! The embedded default backend: one SQLite file in the data directory, in
//! WAL mode so the CLI and a running `serve` (and several `serve`s on one
//! machine) share it safely. Every multi-row change is one transaction;
//! claims are conditional updates, so one slot is won by exactly one
//! process. Statements are short, so they run inline on the async caller.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use rusqlite_migration::{M, Migrations};

use super::*;
use crate::model::{
    BroadcastRecord, EventRecord, EventSource, InstanceRow, Level, NewEvent, PendingDelivery,
    PluginRow, PluginState, RunRecord, RunState, TaskConfig, TaskRecord, Trigger,
};

mod farm;

const SCHEMA_V1: &str = r#"
CREATE TABLE tasks (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    enabled        INTEGER NOT NULL,
    config         TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    next_run_at    INTEGER,
    last_run_at    INTEGER,
    last_outcome   TEXT,
    last_message   TEXT,
    run_count      INTEGER NOT NULL DEFAULT 0,
    skipped_count  INTEGER NOT NULL DEFAULT 0,
    failed_count   INTEGER NOT NULL DEFAULT 0,
    running_run_id TEXT,
    retry_at       INTEGER,
    retry_attempt  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_due ON tasks (enabled, next_run_at);

CREATE TABLE runs (
    id                TEXT    PRIMARY KEY,
    task_id           INTEGER NOT NULL,
    task_name         TEXT    NOT NULL,
    implementation    TEXT    NOT NULL,
    trigger           TEXT    NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 1,
    scheduled_for     INTEGER,
    queued_at         INTEGER,
    started_at        INTEGER,
    finished_at       INTEGER,
    lease_until       INTEGER,
    state             TEXT    NOT NULL,
    reason            TEXT,
    message           TEXT    NOT NULL DEFAULT '',
    duration_us       INTEGER,
    fuel              INTEGER,
    peak_memory       INTEGER,
    component_sha256  TEXT,
    component_version TEXT,
    instance          TEXT
);
CREATE INDEX runs_task ON runs (task_id, id);
CREATE INDEX runs_state ON runs (state);
-- Belt and braces for exactly-once: one record per scheduled slot.
CREATE UNIQUE INDEX runs_slot ON runs (task_id, scheduled_for) WHERE trigger = 'schedule';

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    level   INTEGER NOT NULL,
    source  TEXT    NOT NULL,
    code    TEXT    NOT NULL,
    message TEXT    NOT NULL,
    task_id INTEGER,
    run_id  TEXT
);
CREATE INDEX events_task ON events (task_id, id);
CREATE INDEX events_run ON events (run_id);
CREATE INDEX events_at ON events (at);

CREATE TABLE task_state (
    task_id INTEGER NOT NULL,
    key     TEXT    NOT NULL,
    value   TEXT    NOT NULL,
    PRIMARY KEY (task_id, key)
);

CREATE TABLE plugins (
    instance   TEXT    NOT NULL,
    file       TEXT    NOT NULL,
    sha256     TEXT    NOT NULL,
    identifier TEXT,
    version    TEXT,
    loaded_at  INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    error      TEXT,
    PRIMARY KEY (instance, file)
);

CREATE TABLE instances (
    name         TEXT    PRIMARY KEY,
    pid          INTEGER NOT NULL,
    version      TEXT    NOT NULL,
    roles        TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
"#;

/// Lets the dispatcher's per-pass queries (`due_tasks`, `earliest_due`)
/// read indexes instead of scanning every configuration: with the `OR` in
/// `due_tasks`, SQLite only uses `tasks_due` if `retry_at` has an index too.
const SCHEMA_V2: &str = "CREATE INDEX tasks_retry ON tasks (enabled, retry_at);";

/// Settings an operator scopes to an implementation identifier; every run
/// of that identifier reads them through the `config` import.
const SCHEMA_V3: &str = "CREATE TABLE settings (
    identifier TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (identifier, key)
);";

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(SCHEMA_V1),
        M::up(SCHEMA_V2),
        M::up(SCHEMA_V3),
        // Broadcasts (web farm) and their per-instance deliveries.
        M::up(farm::SCHEMA),
    ])
}

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Bumped on each of this connection's own commits, which SQLite's
    /// `data_version` does not count.
    local_changes: AtomicU64,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or_default()
}

fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

fn level_to_int(l: Level) -> i64 {
    match l {
        Level::Trace => 0,
        Level::Debug => 1,
        Level::Info => 2,
        Level::Warning => 3,
        Level::Error => 4,
    }
}

fn level_from_int(v: i64) -> Level {
    match v {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warning,
        _ => Level::Error,
    }
}

fn source_str(s: EventSource) -> &'static str {
    match s {
        EventSource::Task => "task",
        EventSource::Stdout => "stdout",
        EventSource::Stderr => "stderr",
        EventSource::Host => "host",
    }
}

fn source_from(s: &str) -> EventSource {
    match s {
        "task" => EventSource::Task,
        "stdout" => EventSource::Stdout,
        "stderr" => EventSource::Stderr,
        _ => EventSource::Host,
    }
}

fn trigger_str(t: Trigger) -> &'static str {
    match t {
        Trigger::Schedule => "schedule",
        Trigger::Manual => "manual",
        Trigger::Broadcast => "broadcast",
        Trigger::Retry => "retry",
    }
}

const TASK_COLUMNS: &str = "id, config, created_at, updated_at, next_run_at, last_run_at, \
    last_outcome, last_message, run_count, skipped_count, failed_count, running_run_id, \
    retry_at, retry_attempt, enabled, name";

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let config_json: String = row.get(1)?;
    let mut config: TaskConfig = serde_json::from_str(&config_json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
    })?;
    // The columns are the truth for what the CLI toggles without rewriting JSON.
    config.enabled = row.get::<_, i64>(14)? != 0;
    config.name = row.get(15)?;
    Ok(TaskRecord {
        id: row.get(0)?,
        config,
        created_at: from_ms(row.get(2)?),
        updated_at: from_ms(row.get(3)?),
        next_run_at: row.get::<_, Option<i64>>(4)?.map(from_ms),
        last_run_at: row.get::<_, Option<i64>>(5)?.map(from_ms),
        last_outcome: row
            .get::<_, Option<String>>(6)?
            .and_then(|s| s.parse().ok()),
        last_message: row.get(7)?,
        run_count: row.get::<_, i64>(8)? as u64,
        skipped_count: row.get::<_, i64>(9)? as u64,
        failed_count: row.get::<_, i64>(10)? as u64,
        running_run_id: row.get(11)?,
        retry_at: row.get::<_, Option<i64>>(12)?.map(from_ms),
        retry_attempt: row.get::<_, i64>(13)? as u32,
    })
}

const RUN_COLUMNS: &str = "id, task_id, task_name, implementation, trigger, attempt, \
    scheduled_for, queued_at, started_at, finished_at, lease_until, state, reason, message, \
    duration_us, fuel, peak_memory, component_sha256, component_version, instance";

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let opt_u64 = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(row.get::<_, Option<i64>>(i)?.map(|v| v as u64))
    };
    Ok(RunRecord {
        id: row.get(0)?,
        task_id: row.get(1)?,
        task_name: row.get(2)?,
        implementation: row.get(3)?,
        trigger: row.get::<_, String>(4)?.parse().unwrap_or(Trigger::Manual),
        attempt: row.get::<_, i64>(5)? as u32,
        scheduled_for: row.get::<_, Option<i64>>(6)?.map(from_ms),
        queued_at: row.get::<_, Option<i64>>(7)?.map(from_ms),
        started_at: row.get::<_, Option<i64>>(8)?.map(from_ms),
        finished_at: row.get::<_, Option<i64>>(9)?.map(from_ms),
        lease_until: row.get::<_, Option<i64>>(10)?.map(from_ms),
        state: row
            .get::<_, String>(11)?
            .parse()
            .unwrap_or(RunState::Abandoned),
        reason: row
            .get::<_, Option<String>>(12)?
            .and_then(|s| s.parse().ok()),
        message: row.get(13)?,
        duration_us: opt_u64(14)?,
        fuel: opt_u64(15)?,
        peak_memory_bytes: opt_u64(16)?,
        component_sha256: row.get(17)?,
        component_version: row.get(18)?,
        instance: row.get(19)?,
    })
}

fn insert_run(tx: &Transaction<'_>, run: &NewRun, state: RunState) -> rusqlite::Result<()> {
    let finished = (state == RunState::Skipped).then_some(ms(run.started_at));
    let lease = (state == RunState::Running).then_some(ms(run.lease_until));
    tx.execute(
        "INSERT INTO runs (id, task_id, task_name, implementation, trigger, attempt, scheduled_for,
                           started_at, finished_at, lease_until, state, message, instance)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            run.id,
            run.task_id,
            run.task_name,
            run.implementation,
            trigger_str(run.trigger),
            run.attempt,
            opt_ms(run.scheduled_for),
            ms(run.started_at),
            finished,
            lease,
            state.as_str(),
            run.message,
            run.instance,
        ],
    )?;
    Ok(())
}

fn insert_events(tx: &Transaction<'_>, events: &[NewEvent]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO events (at, level, source, code, message, task_id, run_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in events {
        stmt.execute(params![
            ms(e.at),
            level_to_int(e.level),
            source_str(e.source),
            e.code,
            e.message,
            e.task_id,
            e.run_id,
        ])?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) `cronwerk.db` in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join("cronwerk.db");
        let conn = Connection::open(&path)
            .with_context(|| format!("opening the database {}", path.display()))?;
        Self::setup(conn).with_context(|| format!("preparing the database {}", path.display()))
    }

    /// A private in-memory store (tests).
    pub fn in_memory() -> anyhow::Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> anyhow::Result<Self> {
        // Another process may hold the write lock briefly; wait rather than fail.
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrations()
            .to_latest(&mut conn)
            .context("migrating the schema")?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            local_changes: AtomicU64::new(0),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn).map_err(|e| StoreError::Backend(e.into()))
    }

    /// Runs `f` in an immediate (write-locking) transaction and commits.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> StoreResult<T> {
        let result = self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        });
        self.local_changes.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn task_where(
        &self,
        clause: &str,
        p: impl rusqlite::Params,
    ) -> StoreResult<Option<TaskRecord>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE {clause}"),
                p,
                task_from_row,
            )
            .optional()
        })
    }
}

/// Turns the unique-name constraint failing into [`StoreError::TaskExists`].
fn name_free(result: StoreResult<usize>, name: &str) -> StoreResult<usize> {
    match result {
        Err(StoreError::Backend(e))
            if e.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
                matches!(e, rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation)
            }) =>
        {
            Err(StoreError::TaskExists(name.to_owned()))
        }
        other => other,
    }
}

/// Records one finished run inside `tx`; false if it was not running.
fn finish_one(tx: &Transaction<'_>, f: &RunFinish) -> rusqlite::Result<bool> {
    let finished = tx.execute(
        "UPDATE runs SET state = ?1, reason = ?2, message = ?3, finished_at = ?4,
                duration_us = ?5, fuel = ?6, peak_memory = ?7, component_sha256 = ?8,
                component_version = ?9, lease_until = NULL
         WHERE id = ?10 AND state = 'running'",
        params![
            f.outcome.state.as_str(),
            f.outcome.reason.map(|r| r.as_str()),
            f.outcome.message,
            ms(f.finished_at),
            f.outcome.duration_us as i64,
            f.outcome.fuel as i64,
            f.outcome.peak_memory_bytes as i64,
            f.outcome.component_sha256,
            f.outcome.component_version,
            f.run_id,
        ],
    )?;
    if finished == 0 {
        // Abandoned meanwhile (lease expired): its record stands.
        return Ok(false);
    }
    let failed = i64::from(f.outcome.state.is_failure());
    let (retry_at, retry_attempt) = match f.retry {
        Some((at, attempt)) => (Some(ms(at)), attempt as i64),
        None => (None, 0),
    };
    tx.execute(
        "UPDATE tasks SET running_run_id = NULL, last_outcome = ?1, last_message = ?2,
                failed_count = failed_count + ?3, retry_at = ?4, retry_attempt = ?5
         WHERE id = ?6 AND running_run_id = ?7",
        params![
            f.outcome.state.as_str(),
            f.outcome.message,
            failed,
            retry_at,
            retry_attempt,
            f.task_id,
            f.run_id
        ],
    )?;
    insert_events(tx, &f.outcome.events)?;
    if let Some(state) = &f.task_state {
        tx.execute("DELETE FROM task_state WHERE task_id = ?1", [f.task_id])?;
        let mut stmt =
            tx.prepare_cached("INSERT INTO task_state (task_id, key, value) VALUES (?1, ?2, ?3)")?;
        for (k, v) in state {
            stmt.execute(params![f.task_id, k, v])?;
        }
    }
    Ok(true)
}

/// One slot claim inside `tx`.
fn claim_one(tx: &Transaction<'_>, c: &SlotClaim) -> rusqlite::Result<Claim> {
    let run = &c.run;
    let won = tx
        .prepare_cached(
            "UPDATE tasks SET next_run_at = ?1, running_run_id = ?2, last_run_at = ?3,
                    run_count = run_count + 1, retry_at = NULL, retry_attempt = 0
             WHERE id = ?4 AND next_run_at = ?5 AND enabled = 1 AND running_run_id IS NULL",
        )?
        .execute(params![
            opt_ms(c.next),
            run.id,
            ms(run.started_at),
            run.task_id,
            ms(c.slot)
        ])?;
    if won == 1 {
        insert_run(tx, run, RunState::Running)?;
        return Ok(Claim::Claimed);
    }
    let running: Option<Option<String>> = tx
        .prepare_cached("SELECT running_run_id FROM tasks WHERE id = ?1 AND next_run_at = ?2")?
        .query_row(params![run.task_id, ms(c.slot)], |r| r.get(0))
        .optional()?;
    let Some(Some(running)) = running else {
        return Ok(Claim::Lost);
    };
    if c.on_overlap == OnOverlap::Skip {
        tx.prepare_cached(
            "UPDATE tasks SET next_run_at = ?1, skipped_count = skipped_count + 1
             WHERE id = ?2 AND next_run_at = ?3",
        )?
        .execute(params![opt_ms(c.next), run.task_id, ms(c.slot)])?;
        let mut skipped = run.clone();
        skipped.message = format!("skipped: the previous run {running} was still running");
        insert_run(tx, &skipped, RunState::Skipped)?;
    }
    Ok(Claim::AlreadyRunning { run_id: running })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_task(
        &self,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        let now = ms(Utc::now());
        let json = serde_json::to_string(config).map_err(anyhow::Error::from)?;
        let result = self.write(|tx| {
            tx.execute(
                "INSERT INTO tasks (name, enabled, config, created_at, updated_at, next_run_at)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                params![config.name, config.enabled, json, now, opt_ms(next_run_at)],
            )
        });
        name_free(result, &config.name)?;
        self.get_task(&config.name).await
    }

    async fn update_task(
        &self,
        name: &str,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        let json = serde_json::to_string(config).map_err(anyhow::Error::from)?;
        let changed = self.write(|tx| {
            tx.execute(
                "UPDATE tasks SET name = ?1, enabled = ?2, config = ?3, updated_at = ?4,
                        next_run_at = ?5
                 WHERE name = ?6",
                params![
                    config.name,
                    config.enabled,
                    json,
                    ms(Utc::now()),
                    opt_ms(next_run_at),
                    name
                ],
            )
        });
        match name_free(changed, &config.name)? {
            0 => Err(StoreError::TaskNotFound(name.to_owned())),
            _ => self.get_task(&config.name).await,
        }
    }

    async fn delete_task(&self, name: &str) -> StoreResult<()> {
        let deleted = self.write(|tx| {
            let id: Option<i64> = tx
                .query_row("SELECT id FROM tasks WHERE name = ?1", [name], |r| r.get(0))
                .optional()?;
            let Some(id) = id else { return Ok(false) };
            tx.execute("DELETE FROM tasks WHERE id = ?1", [id])?;
            tx.execute("DELETE FROM task_state WHERE task_id = ?1", [id])?;
            Ok(true)
        })?;
        if deleted {
            Ok(())
        } else {
            Err(StoreError::TaskNotFound(name.to_owned()))
        }
    }

    async fn get_task(&self, name: &str) -> StoreResult<TaskRecord> {
        self.task_where("name = ?1", [name])?
            .ok_or_else(|| StoreError::TaskNotFound(name.to_owned()))
    }

    async fn get_task_by_id(&self, id: i64) -> StoreResult<TaskRecord> {
        self.task_where("id = ?1", [id])?
            .ok_or_else(|| StoreError::TaskNotFound(format!("#{id}")))
    }

    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY name"))?;
            stmt.query_map([], task_from_row)?.collect()
        })
    }

    async fn due_tasks(&self, now: DateTime<Utc>) -> StoreResult<Vec<TaskRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks
                 WHERE enabled = 1 AND (next_run_at <= ?1 OR retry_at <= ?1)
                 ORDER BY MIN(COALESCE(next_run_at, retry_at), COALESCE(retry_at, next_run_at))"
            ))?;
            stmt.query_map([ms(now)], task_from_row)?.collect()
        })
    }

    async fn earliest_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.with(|c| {
            // Two index-only MINs (tasks_due, tasks_retry) rather than a
            // scan of every configuration; the same minimum over all
            // non-null next_run_at and retry_at of enabled rows.
            c.query_row(
                "SELECT MIN(t) FROM (
                     SELECT MIN(next_run_at) AS t FROM tasks WHERE enabled = 1
                     UNION ALL
                     SELECT MIN(retry_at) FROM tasks WHERE enabled = 1)",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
        })
        .map(|v| v.map(from_ms))
    }

    async fn claim_slots(&self, claims: &[SlotClaim]) -> StoreResult<Vec<Claim>> {
        self.write(|tx| claims.iter().map(|c| claim_one(tx, c)).collect())
    }

    async fn skip_slot(
        &self,
        task_id: i64,
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        skipped: &NewRun,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let won = tx.execute(
                "UPDATE tasks SET next_run_at = ?1, skipped_count = skipped_count + 1
                 WHERE id = ?2 AND next_run_at = ?3",
                params![opt_ms(next), task_id, ms(slot)],
            )?;
            if won == 1 {
                insert_run(tx, skipped, RunState::Skipped)?;
            }
            Ok(won == 1)
        })
    }

    async fn claim_retry(
        &self,
        task_id: i64,
        retry_at: DateTime<Utc>,
        run: &NewRun,
    ) -> StoreResult<Claim> {
        self.write(|tx| {
            let won = tx.execute(
                "UPDATE tasks SET retry_at = NULL, running_run_id = ?1, last_run_at = ?2,
                        run_count = run_count + 1
                 WHERE id = ?3 AND retry_at = ?4 AND enabled = 1 AND running_run_id IS NULL",
                params![run.id, ms(run.started_at), task_id, ms(retry_at)],
            )?;
            if won == 1 {
                insert_run(tx, run, RunState::Running)?;
                Ok(Claim::Claimed)
            } else {
                Ok(Claim::Lost)
            }
        })
    }

    async fn claim_manual(&self, task_id: i64, run: &NewRun) -> StoreResult<Claim> {
        self.write(|tx| {
            let won = tx.execute(
                "UPDATE tasks SET running_run_id = ?1, last_run_at = ?2, run_count = run_count + 1
                 WHERE id = ?3 AND running_run_id IS NULL",
                params![run.id, ms(run.started_at), task_id],
            )?;
            if won == 1 {
                insert_run(tx, run, RunState::Running)?;
                return Ok(Claim::Claimed);
            }
            let running: Option<Option<String>> = tx
                .query_row(
                    "SELECT running_run_id FROM tasks WHERE id = ?1",
                    [task_id],
                    |r| r.get(0),
                )
                .optional()?;
            match running {
                Some(Some(run_id)) => {
                    let mut skipped = run.clone();
                    skipped.message = format!("not started: run {run_id} is still running");
                    insert_run(tx, &skipped, RunState::Skipped)?;
                    tx.execute(
                        "UPDATE tasks SET skipped_count = skipped_count + 1 WHERE id = ?1",
                        [task_id],
                    )?;
                    Ok(Claim::AlreadyRunning { run_id })
                }
                _ => Ok(Claim::Lost),
            }
        })
    }

    async fn finish_runs(&self, finishes: &[RunFinish]) -> StoreResult<Vec<bool>> {
        self.write(|tx| finishes.iter().map(|f| finish_one(tx, f)).collect())
    }

    async fn renew_leases(&self, run_ids: &[String], until: DateTime<Utc>) -> StoreResult<()> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE runs SET lease_until = ?1 WHERE id = ?2 AND state = 'running'",
            )?;
            for id in run_ids {
                stmt.execute(params![ms(until), id])?;
            }
            Ok(())
        })
    }

    async fn abandon_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>> {
        self.write(|tx| {
            let expired: Vec<RunRecord> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' AND lease_until < ?1"
                ))?;
                stmt.query_map([ms(now)], run_from_row)?
                    .collect::<rusqlite::Result<_>>()?
            };
            for run in &expired {
                let message = format!(
                    "abandoned: instance {} stopped renewing the run's lease (crashed or killed?)",
                    run.instance.as_deref().unwrap_or("?")
                );
                tx.execute(
                    "UPDATE runs SET state = 'abandoned', finished_at = ?1, message = ?2,
                            lease_until = NULL
                     WHERE id = ?3 AND state = 'running'",
                    params![ms(now), message, run.id],
                )?;
                tx.execute(
                    "UPDATE tasks SET running_run_id = NULL, last_outcome = 'abandoned',
                            last_message = ?1, failed_count = failed_count + 1
                     WHERE id = ?2 AND running_run_id = ?3",
                    params![message, run.task_id, run.id],
                )?;
                insert_events(
                    tx,
                    &[NewEvent {
                        at: now,
                        level: Level::Error,
                        source: EventSource::Host,
                        code: "RUN_ABANDONED".into(),
                        message,
                        task_id: Some(run.task_id),
                        run_id: Some(run.id.clone()),
                    }],
                )?;
            }
            Ok(expired)
        })
    }

    async fn get_run(&self, id: &str) -> StoreResult<RunRecord> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_from_row,
            )
            .optional()
        })?
        .ok_or_else(|| StoreError::RunNotFound(id.to_owned()))
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE (?1 IS NULL OR task_id = ?1) AND (?2 IS NULL OR state = ?2)
                   AND (?4 IS NULL OR COALESCE(started_at, queued_at, scheduled_for) >= ?4)
                   AND (?5 IS NULL OR COALESCE(started_at, queued_at, scheduled_for) < ?5)
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            stmt.query_map(
                params![
                    filter.task_id,
                    filter.state.map(RunState::as_str),
                    filter.limit.map_or(-1, i64::from),
                    opt_ms(filter.since),
                    opt_ms(filter.until)
                ],
                run_from_row,
            )?
            .collect()
        })
    }

    async fn queued_runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'queued' ORDER BY id"
            ))?;
            stmt.query_map([], run_from_row)?.collect()
        })
    }

    async fn queue_manual_run(&self, task_id: i64, requested_by: &str) -> StoreResult<String> {
        let task = self.get_task_by_id(task_id).await?;
        let id = uuid::Uuid::now_v7().to_string();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO runs (id, task_id, task_name, implementation, trigger, queued_at,
                                   state, message, instance)
                 VALUES (?1, ?2, ?3, ?4, 'manual', ?5, 'queued', ?6, NULL)",
                params![
                    id,
                    task_id,
                    task.config.name,
                    task.config.implementation,
                    ms(Utc::now()),
                    format!("requested by {requested_by}")
                ],
            )
        })?;
        Ok(id)
    }

    async fn start_queued_run(
        &self,
        run_id: &str,
        instance: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        self.write(|tx| {
            let task_id: Option<i64> = tx
                .query_row(
                    "SELECT task_id FROM runs WHERE id = ?1 AND state = 'queued'",
                    [run_id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(task_id) = task_id else {
                return Ok(Claim::Lost);
            };
            let won = tx.execute(
                "UPDATE tasks SET running_run_id = ?1, last_run_at = ?2, run_count = run_count + 1
                 WHERE id = ?3 AND running_run_id IS NULL",
                params![run_id, ms(now), task_id],
            )?;
            if won == 1 {
                tx.execute(
                    "UPDATE runs SET state = 'running', started_at = ?1, lease_until = ?2,
                            instance = ?3
                     WHERE id = ?4",
                    params![ms(now), ms(lease_until), instance, run_id],
                )?;
                return Ok(Claim::Claimed);
            }
            let running: Option<String> = tx
                .query_row(
                    "SELECT running_run_id FROM tasks WHERE id = ?1",
                    [task_id],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            match running {
                Some(other) => {
                    tx.execute(
                        "UPDATE runs SET state = 'skipped', started_at = ?1, finished_at = ?1,
                                instance = ?2, message = ?3
                         WHERE id = ?4",
                        params![
                            ms(now),
                            instance,
                            format!("not started: run {other} is still running"),
                            run_id
                        ],
                    )?;
                    tx.execute(
                        "UPDATE tasks SET skipped_count = skipped_count + 1 WHERE id = ?1",
                        [task_id],
                    )?;
                    Ok(Claim::AlreadyRunning { run_id: other })
                }
                None => Ok(Claim::Lost),
            }
        })
    }

    async fn append_events(&self, events: &[NewEvent]) -> StoreResult<()> {
        self.write(|tx| insert_events(tx, events))
    }

    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<EventRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT e.id, e.at, e.level, e.source, e.code, e.message, e.task_id, t.name,
                        e.run_id
                 FROM events e LEFT JOIN tasks t ON t.id = e.task_id
                 WHERE (?1 IS NULL OR e.task_id = ?1) AND (?2 IS NULL OR e.run_id = ?2)
                   AND (?3 IS NULL OR e.level >= ?3) AND (?4 IS NULL OR e.id > ?4)
                 ORDER BY e.id DESC LIMIT ?5",
            )?;
            let mut rows: Vec<EventRecord> = stmt
                .query_map(
                    params![
                        filter.task_id,
                        filter.run_id,
                        filter.min_level.map(level_to_int),
                        filter.after_id,
                        filter.limit.map_or(-1, i64::from)
                    ],
                    |r| {
                        Ok(EventRecord {
                            id: r.get(0)?,
                            at: from_ms(r.get(1)?),
                            level: level_from_int(r.get(2)?),
                            source: source_from(&r.get::<_, String>(3)?),
                            code: r.get(4)?,
                            message: r.get(5)?,
                            task_id: r.get(6)?,
                            task_name: r.get(7)?,
                            run_id: r.get(8)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<_>>()?;
            rows.reverse();
            Ok(rows)
        })
    }

    async fn load_state(&self, task_id: i64) -> StoreResult<BTreeMap<String, String>> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT key, value FROM task_state WHERE task_id = ?1")?;
            stmt.query_map([task_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    async fn load_states(
        &self,
        task_ids: &[i64],
    ) -> StoreResult<std::collections::HashMap<i64, BTreeMap<String, String>>> {
        self.with(|c| {
            let mut states: std::collections::HashMap<i64, BTreeMap<String, String>> =
                task_ids.iter().map(|id| (*id, BTreeMap::new())).collect();
            let mut stmt =
                c.prepare_cached("SELECT key, value FROM task_state WHERE task_id = ?1")?;
            for id in task_ids {
                let entries = stmt.query_map([id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
                let state = states.entry(*id).or_default();
                for entry in entries {
                    let (k, v) = entry?;
                    state.insert(k, v);
                }
            }
            Ok(states)
        })
    }

    async fn set_plugins(&self, instance: &str, plugins: &[PluginRow]) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM plugins WHERE instance = ?1", [instance])?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO plugins (instance, file, sha256, identifier, version, loaded_at,
                                      status, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for p in plugins {
                stmt.execute(params![
                    instance,
                    p.file,
                    p.sha256,
                    p.identifier,
                    p.version,
                    ms(p.loaded_at),
                    p.status.as_str(),
                    p.error
                ])?;
            }
            Ok(())
        })
    }

    async fn list_plugins(&self) -> StoreResult<Vec<PluginRow>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT instance, file, sha256, identifier, version, loaded_at, status, error
                 FROM plugins ORDER BY instance, file",
            )?;
            stmt.query_map([], |r| {
                Ok(PluginRow {
                    instance: r.get(0)?,
                    file: r.get(1)?,
                    sha256: r.get(2)?,
                    identifier: r.get(3)?,
                    version: r.get(4)?,
                    loaded_at: from_ms(r.get(5)?),
                    status: r
                        .get::<_, String>(6)?
                        .parse()
                        .unwrap_or(PluginState::Failed),
                    error: r.get(7)?,
                })
            })?
            .collect()
        })
    }

    async fn heartbeat(&self, i: &InstanceRow) -> StoreResult<()> {
        let roles = serde_json::to_string(&i.roles).map_err(anyhow::Error::from)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO instances (name, pid, version, roles, started_at, heartbeat_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET pid = ?2, version = ?3, roles = ?4,
                        started_at = ?5, heartbeat_at = ?6",
                params![
                    i.name,
                    i.pid,
                    i.version,
                    roles,
                    ms(i.started_at),
                    ms(i.heartbeat_at)
                ],
            )?;
            Ok(())
        })
    }

    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT name, pid, version, roles, started_at, heartbeat_at FROM instances
                 ORDER BY name",
            )?;
            stmt.query_map([], |r| {
                Ok(InstanceRow {
                    name: r.get(0)?,
                    pid: r.get::<_, i64>(1)? as u32,
                    version: r.get(2)?,
                    roles: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    started_at: from_ms(r.get(4)?),
                    heartbeat_at: from_ms(r.get(5)?),
                })
            })?
            .collect()
        })
    }

    async fn remove_instance(&self, name: &str) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM plugins WHERE instance = ?1", [name])?;
            tx.execute("DELETE FROM instances WHERE name = ?1", [name])?;
            Ok(())
        })
    }

    async fn create_broadcast(&self, broadcast: &NewBroadcast) -> StoreResult<()> {
        farm::create(self, broadcast)
    }

    async fn get_broadcast(&self, id: &str) -> StoreResult<BroadcastRecord> {
        farm::get(self, id)
    }

    async fn list_broadcasts(&self, limit: u32) -> StoreResult<Vec<BroadcastRecord>> {
        farm::list(self, limit)
    }

    async fn pending_deliveries(&self, instance: &str) -> StoreResult<Vec<PendingDelivery>> {
        farm::pending(self, instance)
    }

    async fn start_delivery(
        &self,
        broadcast_id: &str,
        instance: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        farm::start(self, broadcast_id, instance, run_id, now)
    }

    async fn finish_delivery(&self, finish: &DeliveryFinish) -> StoreResult<bool> {
        farm::finish(self, finish)
    }

    async fn expire_deliveries(
        &self,
        instances: &[String],
        now: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<u64> {
        farm::expire(self, instances, now, reason)
    }

    async fn join_broadcasts(&self, instance: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        farm::join(self, instance, since)
    }

    async fn set_setting(
        &self,
        identifier: &str,
        key: &str,
        value: Option<&str>,
    ) -> StoreResult<()> {
        self.write(|tx| {
            match value {
                Some(value) => tx.execute(
                    "INSERT INTO settings (identifier, key, value, updated_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (identifier, key)
                     DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    params![identifier, key, value, ms(Utc::now())],
                )?,
                None => tx.execute(
                    "DELETE FROM settings WHERE identifier = ?1 AND key = ?2",
                    params![identifier, key],
                )?,
            };
            Ok(())
        })
    }

    async fn list_settings(&self) -> StoreResult<super::Settings> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT identifier, key, value FROM settings")?;
            let mut settings = super::Settings::new();
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (identifier, key, value) = row?;
                settings.entry(identifier).or_default().insert(key, value);
            }
            Ok(settings)
        })
    }

    async fn change_token(&self) -> StoreResult<u64> {
        let data_version: i64 =
            self.with(|c| c.query_row("PRAGMA data_version", [], |r| r.get(0)))?;
        Ok(((data_version as u64) << 32) ^ self.local_changes.load(Ordering::Relaxed))
    }

    async fn prune(&self, keep_runs: u32, events_since: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        self.write(|tx| {
            let runs = tx.execute(
                "DELETE FROM runs WHERE state NOT IN ('running', 'queued') AND id IN (
                     SELECT id FROM (
                         SELECT id, ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY id DESC) AS n
                         FROM runs WHERE state NOT IN ('running', 'queued'))
                     WHERE n > ?1)",
                [keep_runs],
            )?;
            let events = tx.execute("DELETE FROM events WHERE at < ?1", [ms(events_since)])?;
            farm::prune(tx, ms(events_since))?;
            Ok((runs as u64, events as u64))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_store_conformance_suite() {
        super::super::conformance::run_all(|| Box::new(SqliteStore::in_memory().unwrap())).await;
    }

    #[tokio::test]
    async fn another_connections_commit_changes_the_token_and_slots_stay_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(dir.path()).unwrap();
        let b = SqliteStore::open(dir.path()).unwrap();
        let before = a.change_token().await.unwrap();
        let now = Utc::now();
        let schedule = crate::model::Schedule::every(Duration::from_secs(1), now).unwrap();
        let task = b
            .create_task(&TaskConfig::new("x", "A.B", schedule), Some(now))
            .await
            .unwrap();
        assert_ne!(a.change_token().await.unwrap(), before);
        // Two processes' connections race for one slot: exactly one wins.
        let run = |id: &str| NewRun {
            id: id.into(),
            task_id: task.id,
            task_name: "x".into(),
            implementation: "A.B".into(),
            trigger: Trigger::Schedule,
            attempt: 1,
            scheduled_for: Some(now),
            started_at: now,
            lease_until: now,
            instance: id.into(),
            message: String::new(),
        };
        let (run_a, run_b) = (run("a"), run("b"));
        let (ra, rb) = tokio::join!(
            a.claim_slot(task.id, now, None, &run_a),
            b.claim_slot(task.id, now, None, &run_b)
        );
        let wins = [ra.unwrap(), rb.unwrap()]
            .iter()
            .filter(|c| **c == Claim::Claimed)
            .count();
        assert_eq!(wins, 1);
    }
}

//! The cluster backend: several `cronwerk serve` instances (and the CLI)
//! share one PostgreSQL database, which does all the coordination. A slot
//! is claimed by a conditional update in a transaction, with a unique
//! `(task, scheduled_for)` row behind it, so exactly one instance runs it;
//! no instance holds authority in memory.
//!
//! Time: the trait's operations take the times they compare against
//! (`now`, lease ends) from the caller, so tests can decide them, and this
//! backend stores and compares exactly those. What makes every instance
//! agree is [`Store::clock`]: here it is the local clock corrected by the
//! measured offset to the database server's clock, and `serve` schedules by
//! it. Slots fire, leases are written and expired leases judged on the
//! database's clock, whatever the machines' clocks say. Times the backend
//! sets itself (created, updated, queued) come from the server (`now()`).
//!
//! Changes: writes that other instances must see (configurations, queued
//! manual runs, new retries) `NOTIFY` through triggers; each store keeps
//! one connection that `LISTEN`s and bumps [`Store::change_token`], and
//! reconnects when it drops (counting the gap as a change).
//!
//! Connections come from a pool; a transaction PostgreSQL aborts for a
//! deadlock or serialization failure was rolled back whole and is retried.

mod listener;
mod rows;
mod schema;
#[cfg(test)]
mod tests;
mod writes;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::*;
use crate::model::{
    BroadcastRecord, Clock, EventRecord, InstanceRow, NewEvent, PendingDelivery, PluginRow,
    RunRecord, RunState, TaskConfig, TaskRecord,
};
use listener::{DatabaseClock, Shared};
use rows::{ms, opt_ms};

pub use schema::LATEST as SCHEMA_VERSION;

/// Connections per store: a `serve` has a claim pass, group commits, lease
/// renewal, heartbeats and plugin reports in flight at once.
const POOL_SIZE: usize = 16;
/// Attempts of a transaction PostgreSQL aborted as a deadlock victim.
const ATTEMPTS: u32 = 5;

/// True for `postgres://` and `postgresql://` URLs (the `--database` values
/// that select this backend).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A connection target for messages: never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    format!(
        "database '{}' on {host}",
        config.get_dbname().unwrap_or("(default)")
    )
}

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    shared: Arc<Shared>,
    listener: JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Was `e` PostgreSQL aborting this transaction to let another proceed?
fn is_transient(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

/// Did `e` come from a unique constraint named `constraint`?
fn violates(e: &anyhow::Error, constraint: &str) -> bool {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
        .is_some_and(|db| {
            *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(constraint)
        })
}

/// Runs `$body` with `$tx` bound to a new transaction and commits it,
/// retrying the whole transaction when PostgreSQL aborted it for a deadlock
/// or serialization failure (it was rolled back, so running it again is
/// what the caller asked for). Evaluates to `StoreResult<_>`.
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let store: &PostgresStore = $store;
        let mut attempt = 1;
        loop {
            let outcome: anyhow::Result<_> = async {
                let mut client = store.client().await?;
                let $tx = client.transaction().await?;
                let value = $body;
                $tx.commit().await?;
                Ok(value)
            }
            .await;
            match outcome {
                Ok(value) => {
                    store.shared.bump();
                    break Ok(value);
                }
                Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                Err(e) => break Err(StoreError::Backend(e)),
            }
        }
    }};
}

// After the macro, so the broadcast queries can use it.
mod farm;

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host/db`, or
    /// `postgresql:///db?host=/run/postgresql` for a Unix socket) and
    /// migrates it.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let config: tokio_postgres::Config = url.parse().context(
            "the --database URL is not a PostgreSQL connection URL \
             (e.g. postgres://user:password@host:5432/cronwerk)",
        )?;
        Self::connect(config).await
    }

    /// Like [`open`](Self::open) with a parsed configuration.
    pub async fn connect(mut config: tokio_postgres::Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.get_ssl_mode() != tokio_postgres::config::SslMode::Require,
            "sslmode=require: cronwerk does not speak TLS to PostgreSQL yet; connect over a \
             Unix socket or a trusted network (sslmode=disable or prefer)"
        );
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("cronwerk");
        }
        let target = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .context("creating the PostgreSQL connection pool")?;
        let mut client = pool
            .get()
            .await
            .with_context(|| format!("connecting to PostgreSQL ({target})"))?;
        schema::migrate(&mut client)
            .await
            .with_context(|| format!("preparing the schema in {target}"))?;
        drop(client);
        let shared = Arc::new(Shared::default());
        let mut listen_config = config;
        listen_config.application_name("cronwerk-listener");
        let listener = listener::start(listen_config, shared.clone())
            .await
            .with_context(|| format!("listening for changes in {target}"))?;
        Ok(PostgresStore {
            pool,
            shared,
            listener,
        })
    }

    async fn client(&self) -> anyhow::Result<Object> {
        self.pool
            .get()
            .await
            .context("getting a PostgreSQL connection from the pool")
    }

    /// Runs one (cached) read statement.
    async fn read(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> anyhow::Result<Vec<Row>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query(&stmt, params).await?)
    }

    async fn task_where(
        &self,
        clause: &str,
        param: &(dyn ToSql + Sync),
    ) -> StoreResult<Option<TaskRecord>> {
        let found = self
            .read(
                &format!("SELECT {} FROM tasks WHERE {clause}", rows::TASK_COLUMNS),
                &[param],
            )
            .await?;
        Ok(found.first().map(rows::task).transpose()?)
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn create_task(
        &self,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        let json = serde_json::to_string(config).map_err(anyhow::Error::from)?;
        let created = in_transaction!(self, |tx| {
            writes::query(
                &tx,
                &format!(
                    "INSERT INTO tasks (name, enabled, config, created_at, updated_at, next_run_at)
                     VALUES ($1, $2, $3, date_trunc('milliseconds', now()),
                             date_trunc('milliseconds', now()), $4)
                     RETURNING {}",
                    rows::TASK_COLUMNS
                ),
                &[&config.name, &config.enabled, &json, &opt_ms(next_run_at)],
            )
            .await?
        });
        match created {
            Ok(row) => Ok(rows::task(&row[0])?),
            Err(StoreError::Backend(e)) if violates(&e, "tasks_name_key") => {
                Err(StoreError::TaskExists(config.name.clone()))
            }
            Err(e) => Err(e),
        }
    }

    async fn update_task(
        &self,
        name: &str,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        let json = serde_json::to_string(config).map_err(anyhow::Error::from)?;
        let updated = in_transaction!(self, |tx| {
            writes::query(
                &tx,
                &format!(
                    "UPDATE tasks SET name = $1, enabled = $2, config = $3,
                            updated_at = date_trunc('milliseconds', now()), next_run_at = $4
                     WHERE name = $5
                     RETURNING {}",
                    rows::TASK_COLUMNS
                ),
                &[
                    &config.name,
                    &config.enabled,
                    &json,
                    &opt_ms(next_run_at),
                    &name,
                ],
            )
            .await?
        });
        match updated {
            Ok(found) => match found.first() {
                Some(row) => Ok(rows::task(row)?),
                None => Err(StoreError::TaskNotFound(name.to_owned())),
            },
            Err(StoreError::Backend(e)) if violates(&e, "tasks_name_key") => {
                Err(StoreError::TaskExists(config.name.clone()))
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_task(&self, name: &str) -> StoreResult<()> {
        let deleted = in_transaction!(self, |tx| {
            let gone = writes::query(
                &tx,
                "DELETE FROM tasks WHERE name = $1 RETURNING id",
                &[&name],
            )
            .await?;
            match gone.first() {
                Some(row) => {
                    let id: i64 = row.try_get(0)?;
                    writes::exec(&tx, "DELETE FROM task_state WHERE task_id = $1", &[&id]).await?;
                    true
                }
                None => false,
            }
        })?;
        if deleted {
            Ok(())
        } else {
            Err(StoreError::TaskNotFound(name.to_owned()))
        }
    }

    async fn get_task(&self, name: &str) -> StoreResult<TaskRecord> {
        self.task_where("name = $1", &name)
            .await?
            .ok_or_else(|| StoreError::TaskNotFound(name.to_owned()))
    }

    async fn get_task_by_id(&self, id: i64) -> StoreResult<TaskRecord> {
        self.task_where("id = $1", &id)
            .await?
            .ok_or_else(|| StoreError::TaskNotFound(format!("#{id}")))
    }

    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        let found = self
            .read(
                &format!("SELECT {} FROM tasks ORDER BY name", rows::TASK_COLUMNS),
                &[],
            )
            .await?;
        Ok(rows::all(&found, rows::task)?)
    }

    async fn due_tasks(&self, now: DateTime<Utc>) -> StoreResult<Vec<TaskRecord>> {
        let found = self
            .read(
                &format!(
                    "SELECT {} FROM tasks
                     WHERE enabled AND (next_run_at <= $1 OR retry_at <= $1)
                     ORDER BY LEAST(next_run_at, retry_at), id",
                    rows::TASK_COLUMNS
                ),
                &[&ms(now)],
            )
            .await?;
        Ok(rows::all(&found, rows::task)?)
    }

    async fn earliest_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let found = self
            .read(
                "SELECT LEAST((SELECT MIN(next_run_at) FROM tasks WHERE enabled),
                              (SELECT MIN(retry_at) FROM tasks WHERE enabled))",
                &[],
            )
            .await?;
        Ok(found[0].try_get(0).map_err(anyhow::Error::from)?)
    }

    async fn claim_slots(&self, claims: &[SlotClaim]) -> StoreResult<Vec<Claim>> {
        in_transaction!(self, |tx| writes::claim_slots(&tx, claims).await?)
    }

    async fn skip_slot(
        &self,
        task_id: i64,
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        skipped: &NewRun,
    ) -> StoreResult<bool> {
        in_transaction!(self, |tx| {
            let won = writes::exec(
                &tx,
                "UPDATE tasks SET next_run_at = $1, skipped_count = skipped_count + 1
                 WHERE id = $2 AND next_run_at = $3",
                &[&opt_ms(next), &task_id, &ms(slot)],
            )
            .await?;
            if won == 1 {
                writes::insert_run(&tx, skipped, RunState::Skipped).await?;
            }
            won == 1
        })
    }

    async fn claim_retry(
        &self,
        task_id: i64,
        retry_at: DateTime<Utc>,
        run: &NewRun,
    ) -> StoreResult<Claim> {
        in_transaction!(self, |tx| {
            let won = writes::exec(
                &tx,
                "UPDATE tasks SET retry_at = NULL, running_run_id = $1, last_run_at = $2,
                        run_count = run_count + 1
                 WHERE id = $3 AND retry_at = $4 AND enabled AND running_run_id IS NULL",
                &[&run.id, &ms(run.started_at), &task_id, &ms(retry_at)],
            )
            .await?;
            if won == 1 {
                writes::insert_run(&tx, run, RunState::Running).await?;
                Claim::Claimed
            } else {
                Claim::Lost
            }
        })
    }

    async fn claim_manual(&self, task_id: i64, run: &NewRun) -> StoreResult<Claim> {
        in_transaction!(self, |tx| writes::claim_manual(&tx, task_id, run).await?)
    }

    async fn finish_runs(&self, finishes: &[RunFinish]) -> StoreResult<Vec<bool>> {
        in_transaction!(self, |tx| writes::finish_runs(&tx, finishes).await?)
    }

    async fn renew_leases(&self, run_ids: &[String], until: DateTime<Utc>) -> StoreResult<()> {
        if run_ids.is_empty() {
            return Ok(());
        }
        in_transaction!(self, |tx| {
            writes::exec(
                &tx,
                "UPDATE runs SET lease_until = $1 WHERE id IN (
                     SELECT id FROM runs WHERE id = ANY($2) AND state = 'running'
                     ORDER BY id FOR UPDATE)",
                &[&ms(until), &run_ids],
            )
            .await?;
        })
    }

    async fn abandon_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>> {
        in_transaction!(self, |tx| writes::abandon_expired(&tx, now).await?)
    }

    async fn get_run(&self, id: &str) -> StoreResult<RunRecord> {
        let found = self
            .read(
                &format!("SELECT {} FROM runs WHERE id = $1", rows::RUN_COLUMNS),
                &[&id],
            )
            .await?;
        match found.first() {
            Some(row) => Ok(rows::run(row)?),
            None => Err(StoreError::RunNotFound(id.to_owned())),
        }
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        let found = self
            .read(
                &format!(
                    "SELECT {} FROM runs
                     WHERE ($1::BIGINT IS NULL OR task_id = $1)
                       AND ($2::TEXT IS NULL OR state = $2)
                       AND ($4::TIMESTAMPTZ IS NULL
                            OR COALESCE(started_at, queued_at, scheduled_for) >= $4)
                       AND ($5::TIMESTAMPTZ IS NULL
                            OR COALESCE(started_at, queued_at, scheduled_for) < $5)
                     ORDER BY id DESC LIMIT $3",
                    rows::RUN_COLUMNS
                ),
                &[
                    &filter.task_id,
                    &filter.state.map(RunState::as_str),
                    &filter.limit.map(i64::from),
                    &filter.since.map(ms),
                    &filter.until.map(ms),
                ],
            )
            .await?;
        Ok(rows::all(&found, rows::run)?)
    }

    async fn queued_runs(&self) -> StoreResult<Vec<RunRecord>> {
        let found = self
            .read(
                &format!(
                    "SELECT {} FROM runs WHERE state = 'queued' ORDER BY id",
                    rows::RUN_COLUMNS
                ),
                &[],
            )
            .await?;
        Ok(rows::all(&found, rows::run)?)
    }

    async fn queue_manual_run(&self, task_id: i64, requested_by: &str) -> StoreResult<String> {
        let task = self.get_task_by_id(task_id).await?;
        let id = uuid::Uuid::now_v7().to_string();
        let message = format!("requested by {requested_by}");
        in_transaction!(self, |tx| {
            writes::exec(
                &tx,
                "INSERT INTO runs (id, task_id, task_name, implementation, trigger, queued_at,
                                   state, message, instance)
                 VALUES ($1, $2, $3, $4, 'manual', date_trunc('milliseconds', now()), 'queued',
                         $5, NULL)",
                &[
                    &id,
                    &task_id,
                    &task.config.name,
                    &task.config.implementation,
                    &message,
                ],
            )
            .await?;
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
        in_transaction!(self, |tx| {
            writes::start_queued_run(&tx, run_id, instance, now, lease_until).await?
        })
    }

    async fn append_events(&self, events: &[NewEvent]) -> StoreResult<()> {
        in_transaction!(self, |tx| writes::insert_events(&tx, events).await?)
    }

    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<EventRecord>> {
        let found = self
            .read(
                &format!(
                    "SELECT {} FROM events e LEFT JOIN tasks t ON t.id = e.task_id
                     WHERE ($1::BIGINT IS NULL OR e.task_id = $1)
                       AND ($2::TEXT IS NULL OR e.run_id = $2)
                       AND ($3::BIGINT IS NULL OR e.level >= $3)
                       AND ($4::BIGINT IS NULL OR e.id > $4)
                     ORDER BY e.id DESC LIMIT $5",
                    rows::EVENT_COLUMNS
                ),
                &[
                    &filter.task_id,
                    &filter.run_id,
                    &filter.min_level.map(rows::level_to_int),
                    &filter.after_id,
                    &filter.limit.map(i64::from),
                ],
            )
            .await?;
        let mut events = rows::all(&found, rows::event)?;
        events.reverse();
        Ok(events)
    }

    async fn load_state(&self, task_id: i64) -> StoreResult<BTreeMap<String, String>> {
        Ok(self
            .load_states(&[task_id])
            .await?
            .remove(&task_id)
            .unwrap_or_default())
    }

    async fn load_states(
        &self,
        task_ids: &[i64],
    ) -> StoreResult<HashMap<i64, BTreeMap<String, String>>> {
        let mut states: HashMap<i64, BTreeMap<String, String>> =
            task_ids.iter().map(|id| (*id, BTreeMap::new())).collect();
        if task_ids.is_empty() {
            return Ok(states);
        }
        let found = self
            .read(
                "SELECT task_id, key, value FROM task_state WHERE task_id = ANY($1)",
                &[&task_ids],
            )
            .await?;
        for row in &found {
            let id: i64 = row.try_get(0).map_err(anyhow::Error::from)?;
            let key: String = row.try_get(1).map_err(anyhow::Error::from)?;
            let value: String = row.try_get(2).map_err(anyhow::Error::from)?;
            states.entry(id).or_default().insert(key, value);
        }
        Ok(states)
    }

    async fn set_plugins(&self, instance: &str, plugins: &[PluginRow]) -> StoreResult<()> {
        let file: Vec<&str> = plugins.iter().map(|p| p.file.as_str()).collect();
        let sha256: Vec<&str> = plugins.iter().map(|p| p.sha256.as_str()).collect();
        let identifier: Vec<Option<&str>> =
            plugins.iter().map(|p| p.identifier.as_deref()).collect();
        let version: Vec<Option<&str>> = plugins.iter().map(|p| p.version.as_deref()).collect();
        let loaded_at: Vec<DateTime<Utc>> = plugins.iter().map(|p| ms(p.loaded_at)).collect();
        let status: Vec<&str> = plugins.iter().map(|p| p.status.as_str()).collect();
        let error: Vec<Option<&str>> = plugins.iter().map(|p| p.error.as_deref()).collect();
        in_transaction!(self, |tx| {
            writes::exec(&tx, "DELETE FROM plugins WHERE instance = $1", &[&instance]).await?;
            writes::exec(
                &tx,
                "INSERT INTO plugins (instance, file, sha256, identifier, version, loaded_at,
                                      status, error)
                 SELECT $1::text, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[],
                                          $6::timestamptz[], $7::text[], $8::text[])",
                &[
                    &instance,
                    &file,
                    &sha256,
                    &identifier,
                    &version,
                    &loaded_at,
                    &status,
                    &error,
                ],
            )
            .await?;
        })
    }

    async fn list_plugins(&self) -> StoreResult<Vec<PluginRow>> {
        let found = self
            .read(
                "SELECT instance, file, sha256, identifier, version, loaded_at, status, error
                 FROM plugins ORDER BY instance, file",
                &[],
            )
            .await?;
        Ok(rows::all(&found, rows::plugin)?)
    }

    async fn heartbeat(&self, i: &InstanceRow) -> StoreResult<()> {
        in_transaction!(self, |tx| {
            writes::exec(
                &tx,
                "INSERT INTO instances (name, pid, version, roles, started_at, heartbeat_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET pid = $2, version = $3, roles = $4,
                        started_at = $5, heartbeat_at = $6",
                &[
                    &i.name,
                    &i64::from(i.pid),
                    &i.version,
                    &i.roles,
                    &ms(i.started_at),
                    &ms(i.heartbeat_at),
                ],
            )
            .await?;
        })
    }

    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>> {
        let found = self
            .read(
                "SELECT name, pid, version, roles, started_at, heartbeat_at FROM instances
                 ORDER BY name",
                &[],
            )
            .await?;
        Ok(rows::all(&found, rows::instance)?)
    }

    async fn remove_instance(&self, name: &str) -> StoreResult<()> {
        in_transaction!(self, |tx| {
            writes::exec(&tx, "DELETE FROM plugins WHERE instance = $1", &[&name]).await?;
            writes::exec(&tx, "DELETE FROM instances WHERE name = $1", &[&name]).await?;
        })
    }

    async fn create_broadcast(&self, broadcast: &NewBroadcast) -> StoreResult<()> {
        self.farm_create(broadcast).await
    }

    async fn get_broadcast(&self, id: &str) -> StoreResult<BroadcastRecord> {
        self.farm_get(id).await
    }

    async fn list_broadcasts(&self, limit: u32) -> StoreResult<Vec<BroadcastRecord>> {
        self.farm_list(limit).await
    }

    async fn pending_deliveries(&self, instance: &str) -> StoreResult<Vec<PendingDelivery>> {
        self.farm_pending(instance).await
    }

    async fn start_delivery(
        &self,
        broadcast_id: &str,
        instance: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.farm_start(broadcast_id, instance, run_id, now).await
    }

    async fn finish_delivery(&self, finish: &DeliveryFinish) -> StoreResult<bool> {
        self.farm_finish(finish).await
    }

    async fn expire_deliveries(
        &self,
        instances: &[String],
        now: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<u64> {
        self.farm_expire(instances, now, reason).await
    }

    async fn join_broadcasts(&self, instance: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        self.farm_join(instance, since).await
    }

    async fn set_setting(
        &self,
        identifier: &str,
        key: &str,
        value: Option<&str>,
    ) -> StoreResult<()> {
        in_transaction!(self, |tx| {
            match value {
                Some(value) => {
                    writes::exec(
                        &tx,
                        "INSERT INTO settings (identifier, key, value) VALUES ($1, $2, $3)
                         ON CONFLICT (identifier, key)
                         DO UPDATE SET value = excluded.value, updated_at = now()",
                        &[&identifier, &key, &value],
                    )
                    .await?
                }
                None => {
                    writes::exec(
                        &tx,
                        "DELETE FROM settings WHERE identifier = $1 AND key = $2",
                        &[&identifier, &key],
                    )
                    .await?
                }
            };
        })
    }

    async fn list_settings(&self) -> StoreResult<super::Settings> {
        let found = self
            .read("SELECT identifier, key, value FROM settings", &[])
            .await?;
        let mut settings = super::Settings::new();
        for row in &found {
            let identifier: String = row.try_get(0).map_err(anyhow::Error::from)?;
            let key: String = row.try_get(1).map_err(anyhow::Error::from)?;
            let value: String = row.try_get(2).map_err(anyhow::Error::from)?;
            settings.entry(identifier).or_default().insert(key, value);
        }
        Ok(settings)
    }

    async fn change_token(&self) -> StoreResult<u64> {
        Ok(self
            .shared
            .changes
            .load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn prune(&self, keep_runs: u32, events_since: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        in_transaction!(self, |tx| {
            let runs = writes::exec(
                &tx,
                "DELETE FROM runs WHERE id IN (
                     SELECT id FROM (
                         SELECT id, ROW_NUMBER() OVER (PARTITION BY task_id ORDER BY id DESC) AS n
                         FROM runs WHERE state NOT IN ('running', 'queued')) ranked
                     WHERE n > $1)",
                &[&i64::from(keep_runs)],
            )
            .await?;
            let events = writes::exec(
                &tx,
                "DELETE FROM events WHERE at < $1",
                &[&ms(events_since)],
            )
            .await?;
            // Deliveries go with their broadcast (ON DELETE CASCADE).
            writes::exec(
                &tx,
                "DELETE FROM broadcasts WHERE created_at < $1",
                &[&ms(events_since)],
            )
            .await?;
            (runs, events)
        })
    }

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(DatabaseClock(self.shared.clone()))
    }
}

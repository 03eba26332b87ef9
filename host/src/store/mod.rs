//! What happened and what is configured: task configurations with their
//! scheduling state, runs, events, per-configuration state, plugin status
//! and instances. Each concern is a role trait ([`Configurations`],
//! [`RunLedger`], [`EventJournal`], [`StateAndSettings`], [`Fleet`],
//! [`Housekeeping`]) so a caller or a decorator can name only what it
//! uses; [`Store`] is their sum, what a backend provides (SQLite on one
//! machine, PostgreSQL for clusters). The ledger's operations are the
//! scheduler's consistency points: claiming a slot and finishing a run are
//! each one atomic, conditional step in the database, never in a process's
//! memory. Both backends run those steps from one statement of each rule
//! (`sql`), each through its own small adapter.

#[cfg(test)]
mod conformance;
mod observed;
mod ops;
mod outage;
mod postgres;
mod sql;
mod sqlite;

pub use observed::{CallObserver, Observed};
pub use ops::*;
pub use outage::{Outage, REPORT_EVERY, StoreHealth, is_unavailable};
pub use postgres::{PostgresStore, SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION, is_postgres_url};
pub use sqlite::SqliteStore;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::model::audit::{AuditRecord, NewAudit};
use crate::model::backfill::{BackfillRecord, NewBackfill};
use crate::model::{
    BroadcastRecord, Clock, EventRecord, Heartbeat, InstanceRow, NewEvent, PendingDelivery,
    PluginRow, RunRecord, SystemClock, TaskConfig, TaskRecord,
};

use chrono::{DateTime, Utc};

/// Failures a caller can act on. The messages say what is wrong, not
/// what to do about it: that depends on the caller (the CLI names its
/// commands, the API its status codes).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no task configuration named '{0}'")]
    TaskNotFound(String),
    #[error("a task configuration named '{0}' already exists")]
    TaskExists(String),
    #[error("no run with id '{0}'")]
    RunNotFound(String),
    #[error("no broadcast with id '{0}'")]
    BroadcastNotFound(String),
    #[error("no backfill with id '{0}'")]
    BackfillNotFound(String),
    /// A configuration has one backfill going at a time.
    #[error("the configuration has a backfill going: {0}")]
    BackfillActive(String),
    #[error("setting '{key}' of '{identifier}' is secret; a plain value does not replace it")]
    SecretSetting { identifier: String, key: String },
    #[error("the store failed: {0:#}")]
    Backend(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Persistence for everything the scheduler, the CLI and the API share:
/// every role. Implemented for whatever implements all of them.
pub trait Store:
    Configurations + RunLedger + EventJournal + StateAndSettings + Fleet + Housekeeping
{
}

impl<T> Store for T where
    T: Configurations + RunLedger + EventJournal + StateAndSettings + Fleet + Housekeeping + ?Sized
{
}

/// Task configurations and the scheduling fields the dispatcher reads.
#[async_trait::async_trait]
pub trait Configurations: Send + Sync {
    /// Creates a configuration whose first fire time is `next_run_at`.
    async fn create_task(
        &self,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord>;
    /// Replaces a configuration (found by its current name); scheduling
    /// counters stay, the next fire time is recomputed by the caller.
    async fn update_task(
        &self,
        name: &str,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord>;
    async fn delete_task(&self, name: &str) -> StoreResult<()>;
    async fn get_task(&self, name: &str) -> StoreResult<TaskRecord>;
    async fn get_task_by_id(&self, id: i64) -> StoreResult<TaskRecord>;
    /// The configurations of `ids` that exist, in any order, in one read
    /// (runs claimed ahead re-read theirs together at their instant).
    async fn get_tasks(&self, ids: &[i64]) -> StoreResult<Vec<TaskRecord>>;
    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>>;
    /// Enabled configurations whose next fire time or retry time is at or
    /// before `now`.
    async fn due_tasks(&self, now: DateTime<Utc>) -> StoreResult<Vec<TaskRecord>>;
    /// The earliest next fire time or retry time of any enabled configuration.
    async fn earliest_due(&self) -> StoreResult<Option<DateTime<Utc>>>;
}

/// Runs: claiming slots, retries and manual runs, finishing them, their
/// leases, and reading them back.
#[async_trait::async_trait]
pub trait RunLedger: Send + Sync {
    /// Claims many slots in one atomic step. Each claim succeeds only if its
    /// slot is still the configuration's next fire time and nothing is
    /// running, and then moves the next fire time on; on overlap it records
    /// the slot skipped (or leaves it due, per [`OnOverlap`]). Exactly one
    /// claimant wins a slot. Batching is what keeps a thousand slots due in
    /// the same second from being a thousand transactions.
    async fn claim_slots(&self, claims: &[SlotClaim]) -> StoreResult<Vec<Claim>>;
    /// How many slots a claim transaction should take at most. Where
    /// several instances share a database and its writers work in
    /// parallel, small chunks let each instance take part of a burst and
    /// start its first runs early; where there is one writer at a time
    /// (SQLite), every chunk is a transaction competing with the finishes
    /// for that writer, and bigger is better.
    fn claims_per_transaction(&self) -> usize {
        500
    }
    /// One slot: [`claim_slots`](Self::claim_slots) with [`OnOverlap::Wait`].
    async fn claim_slot(
        &self,
        task_id: i64,
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        run: &NewRun,
    ) -> StoreResult<Claim> {
        debug_assert_eq!(task_id, run.task_id);
        let claim = SlotClaim {
            slot,
            next,
            run: run.clone(),
            on_overlap: OnOverlap::Wait,
        };
        Ok(self.claim_slots(&[claim]).await?.remove(0))
    }
    /// Records slot `slot` as skipped (overlap, misfire) and moves the next
    /// fire time to `next`, conditionally like [`claim_slot`](Self::claim_slot).
    async fn skip_slot(
        &self,
        task_id: i64,
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        skipped: &NewRun,
    ) -> StoreResult<bool>;
    /// Claims the pending retry of `task_id` (due at `retry_at`) for `run`.
    async fn claim_retry(
        &self,
        task_id: i64,
        retry_at: DateTime<Utc>,
        run: &NewRun,
    ) -> StoreResult<Claim>;
    /// Starts a manual run unless one is running (then records it skipped).
    async fn claim_manual(&self, task_id: i64, run: &NewRun) -> StoreResult<Claim>;
    /// Records how runs ended (in one transaction): outcome, events and the
    /// state each left; clears the configuration's running mark, updates its
    /// counters, schedules a retry when asked. Only a run still `running`
    /// can finish; the result says which did. If the batch's transaction
    /// fails, each finish is retried in its own, so one the store cannot
    /// write fails alone (it reads as not finished, and is logged).
    async fn finish_runs(&self, finishes: &[RunFinish]) -> StoreResult<Vec<bool>>;
    /// One run: [`finish_runs`](Self::finish_runs).
    async fn finish_run(&self, finish: &RunFinish) -> StoreResult<bool> {
        Ok(self
            .finish_runs(std::slice::from_ref(finish))
            .await?
            .remove(0))
    }
    /// Extends the leases of `run_ids` (held by a live instance) to `until`.
    async fn renew_leases(&self, run_ids: &[String], until: DateTime<Utc>) -> StoreResult<()>;
    /// Marks running runs whose lease expired before `now` as abandoned and
    /// frees their configurations; returns them.
    async fn abandon_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>>;
    async fn get_run(&self, id: &str) -> StoreResult<RunRecord>;
    /// The ids of runs that start with `prefix`, in id order, at most
    /// `limit` (a person names a run by the start of its id).
    async fn run_ids_starting_with(&self, prefix: &str, limit: u32) -> StoreResult<Vec<String>>;
    /// What run `id` was given, as recorded when it finished
    /// (`model::replay::StoredInputs` as JSON); `None` when nothing was
    /// recorded (a run not finished, abandoned, or recorded before inputs
    /// were), `RunNotFound` when there is no such run.
    async fn run_inputs(&self, id: &str) -> StoreResult<Option<String>>;
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>>;
    /// Manual runs requested (by the CLI) and not yet picked up by an instance.
    async fn queued_runs(&self) -> StoreResult<Vec<RunRecord>>;
    /// Asks for run `run_id` to stop on behalf of `by` (see [`StopAsked`]).
    async fn request_stop(
        &self,
        run_id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<StopAsked>;
    /// The stop requests for runs of `instance`: (run id, who asked).
    async fn stop_requests(&self, instance: &str) -> StoreResult<Vec<(String, String)>>;
    /// Requests a manual run for an instance to pick up; returns its id.
    async fn queue_manual_run(&self, task_id: i64, requested_by: &str) -> StoreResult<String>;
    /// Moves a queued run to running (lease until `lease_until`) unless its
    /// configuration is running already (then it is recorded skipped).
    async fn start_queued_run(
        &self,
        run_id: &str,
        instance: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim>;
    /// Queues a run on the start of `instance` (with `roles`) for every
    /// configuration that asks for one and that it may run, for it alone, cancelling those an
    /// earlier process of it left queued; (configuration id, run id) each.
    async fn queue_startup_runs(
        &self,
        instance: &str,
        roles: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<(i64, String)>>;
    /// Records a backfill of a configuration's past slots, for instances
    /// to run ([`top_up_backfills`](Self::top_up_backfills));
    /// [`StoreError::BackfillActive`] if the configuration has one going.
    async fn create_backfill(&self, backfill: &NewBackfill) -> StoreResult<BackfillRecord>;
    /// Queues the next slots of the active backfills, as far as each one's
    /// concurrency allows, and closes those that are through; how many runs
    /// it queued.
    async fn top_up_backfills(&self, now: DateTime<Utc>) -> StoreResult<u32>;
    async fn get_backfill(&self, id: &str) -> StoreResult<BackfillRecord>;
    /// A configuration's newest backfills, at most `limit`.
    async fn list_backfills(&self, task_id: i64, limit: u32) -> StoreResult<Vec<BackfillRecord>>;
    /// Cancels a backfill: slots not started are not run.
    async fn cancel_backfill(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<BackfillRecord>;
}

/// The event log: what tasks and the host reported.
#[async_trait::async_trait]
pub trait EventJournal: Send + Sync {
    async fn append_events(&self, events: &[NewEvent]) -> StoreResult<()>;
    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<EventRecord>>;
    /// Appends an entry to the audit trail.
    async fn append_audit(&self, entry: &NewAudit) -> StoreResult<()>;
    /// Audit entries, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>>;
}

/// What tasks keep between runs, and the settings operators give them.
#[async_trait::async_trait]
pub trait StateAndSettings: Send + Sync {
    /// The states of several configurations in one read (for a batch of
    /// claimed runs); configurations without state map to an empty map.
    async fn load_states(
        &self,
        task_ids: &[i64],
    ) -> StoreResult<HashMap<i64, BTreeMap<String, String>>>;
    /// One configuration's state: [`load_states`](Self::load_states).
    async fn load_state(&self, task_id: i64) -> StoreResult<BTreeMap<String, String>> {
        Ok(self
            .load_states(&[task_id])
            .await?
            .remove(&task_id)
            .unwrap_or_default())
    }
    /// Sets one setting of an implementation identifier (the tasks'
    /// `config` import), or removes it (`None`); removing a missing setting
    /// is not an error. A secret setting stays secret: a plain value for it
    /// is refused ([`StoreError::SecretSetting`]), so that a value typed on
    /// a command line neither replaces a secret unnoticed nor unmasks it;
    /// removing it first is the explicit way back to a plain setting.
    async fn set_setting(
        &self,
        identifier: &str,
        key: &str,
        setting: Option<&Setting>,
    ) -> StoreResult<()>;
    /// Every setting, by identifier, then key.
    async fn list_settings(&self) -> StoreResult<Settings>;
}

/// The instances sharing the store: their liveness, their plugins, and the
/// broadcasts (web farm) delivered to each.
#[async_trait::async_trait]
pub trait Fleet: Send + Sync {
    /// Replaces the plugin status an instance reports.
    async fn set_plugins(&self, instance: &str, plugins: &[PluginRow]) -> StoreResult<()>;
    async fn list_plugins(&self) -> StoreResult<Vec<PluginRow>>;
    /// Makes the instance's name its process's, whichever held it (a
    /// start after deciding the name is free, or `serve --replace`).
    async fn claim_instance(&self, instance: &InstanceRow) -> StoreResult<()>;
    /// Renews the heartbeat while the name is still this process's
    /// (`instance.process`); says so when another process took it over.
    async fn heartbeat(&self, instance: &InstanceRow) -> StoreResult<Heartbeat>;
    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>>;
    /// Forgets an instance that stopped cleanly (its plugin rows too), if
    /// `process` still holds its name.
    async fn remove_instance(&self, name: &str, process: &str) -> StoreResult<()>;
    /// Records a broadcast with a queued delivery for each of its instances.
    async fn create_broadcast(&self, broadcast: &NewBroadcast) -> StoreResult<()>;
    async fn get_broadcast(&self, id: &str) -> StoreResult<BroadcastRecord>;
    /// The newest `limit` broadcasts, newest first.
    async fn list_broadcasts(&self, limit: u32) -> StoreResult<Vec<BroadcastRecord>>;
    /// Deliveries queued for `instance`, oldest first.
    async fn pending_deliveries(
        &self,
        instance: &str,
        limit: u32,
    ) -> StoreResult<Vec<PendingDelivery>>;
    /// Moves a queued delivery to running as `run_id`; false if it was not
    /// queued any more (expired meanwhile).
    async fn start_delivery(
        &self,
        broadcast_id: &str,
        instance: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records how a running delivery ended, with its events; false if it
    /// was not running any more.
    async fn finish_delivery(&self, finish: &DeliveryFinish) -> StoreResult<bool>;
    /// Records the queued and running deliveries of `instances` abandoned
    /// with `reason` (they stopped, died or restarted); returns how many.
    async fn expire_deliveries(
        &self,
        instances: &[String],
        now: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<u64>;
    /// Queues for `instance` the broadcasts made since `since` that it has
    /// no delivery of (a joining instance asked to catch up); returns how many.
    async fn join_broadcasts(&self, instance: &str, since: DateTime<Utc>) -> StoreResult<u64>;
}

/// What keeps processes sharing a store in step: noticing each other's
/// changes, agreeing on the time, and retention.
#[async_trait::async_trait]
pub trait Housekeeping: Send + Sync {
    /// A value that changes whenever anyone (another process too) committed
    /// a change; the dispatcher polls it to pick up CLI edits.
    async fn change_token(&self) -> StoreResult<u64>;
    /// The clock every process sharing this store should schedule and judge
    /// leases by, so they agree on "now": the machine's own clock for a
    /// store on this machine; for a shared server, the server's clock.
    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }
    /// Applies retention: keeps the newest `keep_runs` finished runs per
    /// configuration, and events and broadcasts newer than `events_since`.
    async fn prune(&self, keep_runs: u32, events_since: DateTime<Utc>) -> StoreResult<(u64, u64)>;
}

//! The store's roles on SQLite: each operation is one of the shared rules
//! (`store::sql`) run through the SQLite adapter, in a write transaction
//! or on the bare connection for reads.

use std::collections::{BTreeMap, HashMap};

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::{SqliteStore, violates_constraint};
use crate::model::audit::{AuditRecord, NewAudit};
use crate::model::{
    BroadcastRecord, EventRecord, Heartbeat, InstanceRow, NewEvent, PendingDelivery, PluginRow,
    RunRecord, TaskConfig, TaskRecord,
};
use crate::store::sql::{audit, backfills, fleet, journal, ledger, run_now, stops, tasks};
use crate::store::*;

#[async_trait::async_trait]
impl Configurations for SqliteStore {
    async fn create_task(
        &self,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        match self.write(|tx| run_now(tasks::create(tx, config, next_run_at))) {
            Err(StoreError::Backend(e)) if violates_constraint(&e) => {
                Err(StoreError::TaskExists(config.name.clone()))
            }
            other => other,
        }
    }

    async fn update_task(
        &self,
        name: &str,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        match self.write(|tx| run_now(tasks::update(tx, name, config, next_run_at))) {
            Ok(Some(task)) => Ok(task),
            Ok(None) => Err(StoreError::TaskNotFound(name.to_owned())),
            Err(StoreError::Backend(e)) if violates_constraint(&e) => {
                Err(StoreError::TaskExists(config.name.clone()))
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_task(&self, name: &str) -> StoreResult<()> {
        if self.write(|tx| run_now(tasks::delete(tx, name)))? {
            Ok(())
        } else {
            Err(StoreError::TaskNotFound(name.to_owned()))
        }
    }

    async fn get_task(&self, name: &str) -> StoreResult<TaskRecord> {
        self.read(|c| run_now(tasks::by_name(c, name)))?
            .ok_or_else(|| StoreError::TaskNotFound(name.to_owned()))
    }

    async fn get_task_by_id(&self, id: i64) -> StoreResult<TaskRecord> {
        self.read(|c| run_now(tasks::by_id(c, id)))?
            .ok_or_else(|| StoreError::TaskNotFound(format!("#{id}")))
    }

    async fn get_tasks(&self, ids: &[i64]) -> StoreResult<Vec<TaskRecord>> {
        self.read(|c| run_now(tasks::by_ids(c, ids)))
    }

    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        self.read(|c| run_now(tasks::list(c)))
    }

    async fn due_tasks(&self, now: DateTime<Utc>) -> StoreResult<Vec<TaskRecord>> {
        self.read(|c| run_now(tasks::due(c, now)))
    }

    async fn earliest_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(|c| run_now(tasks::earliest_due(c)))
    }
}

#[async_trait::async_trait]
impl RunLedger for SqliteStore {
    async fn claim_slots(&self, claims: &[SlotClaim]) -> StoreResult<Vec<Claim>> {
        self.write(|tx| run_now(ledger::claim_slots(tx, claims)))
    }

    /// One writer at a time: a burst of 20,000 claimed 500 at a time ran at
    /// half the rate of one claim (BENCHMARKS.md), while 5,000 keeps a
    /// claim well under a second.
    fn claims_per_transaction(&self) -> usize {
        5_000
    }

    async fn skip_slot(
        &self,
        task_id: i64,
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        skipped: &NewRun,
    ) -> StoreResult<bool> {
        self.write(|tx| run_now(ledger::skip_slot(tx, task_id, slot, next, skipped)))
    }

    async fn claim_retry(
        &self,
        task_id: i64,
        retry_at: DateTime<Utc>,
        run: &NewRun,
    ) -> StoreResult<Claim> {
        self.write(|tx| run_now(ledger::claim_retry(tx, task_id, retry_at, run)))
    }

    async fn claim_manual(&self, task_id: i64, run: &NewRun) -> StoreResult<Claim> {
        self.write(|tx| run_now(ledger::claim_manual(tx, task_id, run)))
    }

    async fn finish_runs(&self, finishes: &[RunFinish]) -> StoreResult<Vec<bool>> {
        ledger::finish_runs_isolated(finishes, |batch| {
            std::future::ready(self.write(|tx| run_now(ledger::finish_runs(tx, batch))))
        })
        .await
    }

    async fn renew_leases(&self, run_ids: &[String], until: DateTime<Utc>) -> StoreResult<()> {
        self.write(|tx| run_now(ledger::renew_leases(tx, run_ids, until)))
    }

    async fn abandon_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>> {
        self.write(|tx| run_now(ledger::abandon_expired(tx, now)))
    }

    async fn get_run(&self, id: &str) -> StoreResult<RunRecord> {
        self.read(|c| run_now(ledger::get_run(c, id)))?
            .ok_or_else(|| StoreError::RunNotFound(id.to_owned()))
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        self.read(|c| run_now(ledger::list_runs(c, filter)))
    }

    async fn run_ids_starting_with(&self, prefix: &str, limit: u32) -> StoreResult<Vec<String>> {
        self.read(|c| run_now(ledger::run_ids_starting_with(c, prefix, limit)))
    }

    async fn run_inputs(&self, id: &str) -> StoreResult<Option<String>> {
        self.read(|c| run_now(ledger::run_inputs(c, id)))?
            .ok_or_else(|| StoreError::RunNotFound(id.to_owned()))
    }

    async fn queued_runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.read(|c| run_now(ledger::queued_runs(c)))
    }

    async fn request_stop(
        &self,
        run_id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<StopAsked> {
        self.write(|tx| run_now(stops::request_stop(tx, run_id, by, at)))?
            .ok_or_else(|| StoreError::RunNotFound(run_id.to_owned()))
    }

    async fn stop_requests(&self, instance: &str) -> StoreResult<Vec<(String, String)>> {
        self.read(|c| run_now(stops::stop_requests(c, instance)))
    }

    async fn queue_manual_run(&self, task_id: i64, requested_by: &str) -> StoreResult<String> {
        self.write(|tx| run_now(ledger::queue_manual_run(tx, task_id, requested_by)))?
            .ok_or_else(|| StoreError::TaskNotFound(format!("#{task_id}")))
    }

    async fn queue_startup_runs(
        &self,
        instance: &str,
        roles: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<(i64, String)>> {
        self.write(|tx| run_now(ledger::queue_startup_runs(tx, instance, roles, at)))
    }

    async fn create_backfill(&self, backfill: &NewBackfill) -> StoreResult<BackfillRecord> {
        let created = self.write(|tx| {
            run_now(async {
                match backfills::create(tx, backfill).await? {
                    Ok(()) => Ok(Ok(backfills::get(tx, &backfill.id).await?)),
                    Err(active) => Ok(Err(active)),
                }
            })
        })?;
        match created {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(StoreError::BackfillNotFound(backfill.id.clone())),
            Err(active) => Err(StoreError::BackfillActive(active)),
        }
    }

    async fn top_up_backfills(&self, now: DateTime<Utc>) -> StoreResult<u32> {
        if !self.read(|c| run_now(backfills::any_active(c)))? {
            return Ok(0);
        }
        self.write(|tx| run_now(backfills::top_up(tx, now)))
    }

    async fn get_backfill(&self, id: &str) -> StoreResult<BackfillRecord> {
        self.read(|c| run_now(backfills::get(c, id)))?
            .ok_or_else(|| StoreError::BackfillNotFound(id.to_owned()))
    }

    async fn list_backfills(&self, task_id: i64, limit: u32) -> StoreResult<Vec<BackfillRecord>> {
        self.read(|c| run_now(backfills::list(c, task_id, limit)))
    }

    async fn cancel_backfill(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<BackfillRecord> {
        self.write(|tx| run_now(backfills::cancel(tx, id, by, at)))?
            .ok_or_else(|| StoreError::BackfillNotFound(id.to_owned()))
    }

    async fn start_queued_run(
        &self,
        run_id: &str,
        instance: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        self.write(|tx| {
            run_now(ledger::start_queued_run(
                tx,
                run_id,
                instance,
                now,
                lease_until,
            ))
        })
    }
}

#[async_trait::async_trait]
impl EventJournal for SqliteStore {
    async fn append_events(&self, events: &[NewEvent]) -> StoreResult<()> {
        self.write(|tx| run_now(crate::store::sql::Tx::insert_events(tx, events)))
    }

    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<EventRecord>> {
        self.read(|c| run_now(journal::list_events(c, filter)))
    }

    async fn append_audit(&self, entry: &NewAudit) -> StoreResult<()> {
        self.write(|tx| run_now(audit::append(tx, entry)))
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        self.read(|c| run_now(audit::list(c, filter)))
    }
}

#[async_trait::async_trait]
impl StateAndSettings for SqliteStore {
    async fn load_states(
        &self,
        task_ids: &[i64],
    ) -> StoreResult<HashMap<i64, BTreeMap<String, String>>> {
        self.read(|c| run_now(journal::load_states(c, task_ids)))
    }

    async fn set_setting(
        &self,
        identifier: &str,
        key: &str,
        setting: Option<&Setting>,
    ) -> StoreResult<()> {
        let written =
            self.write(|tx| run_now(journal::set_setting(tx, identifier, key, setting)))?;
        journal::setting_written(written, identifier, key)
    }

    async fn list_settings(&self) -> StoreResult<Settings> {
        self.read(|c| run_now(journal::list_settings(c)))
    }
}

#[async_trait::async_trait]
impl Fleet for SqliteStore {
    async fn set_plugins(&self, instance: &str, plugins: &[PluginRow]) -> StoreResult<()> {
        self.write(|tx| run_now(fleet::set_plugins(tx, instance, plugins)))
    }

    async fn list_plugins(&self) -> StoreResult<Vec<PluginRow>> {
        self.read(|c| run_now(fleet::list_plugins(c)))
    }

    async fn claim_instance(&self, instance: &InstanceRow) -> StoreResult<()> {
        self.write(|tx| run_now(fleet::claim_instance(tx, instance)))
    }

    async fn heartbeat(&self, instance: &InstanceRow) -> StoreResult<Heartbeat> {
        self.write(|tx| run_now(fleet::heartbeat(tx, instance)))
    }

    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>> {
        self.read(|c| run_now(fleet::list_instances(c)))
    }

    async fn remove_instance(&self, name: &str, process: &str) -> StoreResult<()> {
        self.write(|tx| run_now(fleet::remove_instance(tx, name, process)))
    }

    async fn create_broadcast(&self, broadcast: &NewBroadcast) -> StoreResult<()> {
        self.write(|tx| run_now(fleet::create_broadcast(tx, broadcast)))
    }

    async fn get_broadcast(&self, id: &str) -> StoreResult<BroadcastRecord> {
        self.read(|c| run_now(fleet::get_broadcast(c, id)))?
            .ok_or_else(|| StoreError::BroadcastNotFound(id.to_owned()))
    }

    async fn list_broadcasts(&self, limit: u32) -> StoreResult<Vec<BroadcastRecord>> {
        self.read(|c| run_now(fleet::list_broadcasts(c, limit)))
    }

    async fn pending_deliveries(
        &self,
        instance: &str,
        limit: u32,
    ) -> StoreResult<Vec<PendingDelivery>> {
        self.read(|c| run_now(fleet::pending_deliveries(c, instance, limit)))
    }

    async fn start_delivery(
        &self,
        broadcast_id: &str,
        instance: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            run_now(fleet::start_delivery(
                tx,
                broadcast_id,
                instance,
                run_id,
                now,
            ))
        })
    }

    async fn finish_delivery(&self, finish: &DeliveryFinish) -> StoreResult<bool> {
        self.write(|tx| run_now(fleet::finish_delivery(tx, finish)))
    }

    async fn expire_deliveries(
        &self,
        instances: &[String],
        now: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<u64> {
        self.write(|tx| run_now(fleet::expire_deliveries(tx, instances, now, reason)))
    }

    async fn join_broadcasts(&self, instance: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        self.write(|tx| run_now(fleet::join_broadcasts(tx, instance, since)))
    }
}

#[async_trait::async_trait]
impl Housekeeping for SqliteStore {
    async fn change_token(&self) -> StoreResult<u64> {
        let data_version: i64 = self
            .lock()
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(anyhow::Error::from)?;
        let local = self.local_changes.load(Ordering::Relaxed);
        Ok(((data_version as u64) << 32) ^ local)
    }

    async fn prune(&self, keep_runs: u32, events_since: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        self.write(|tx| {
            run_now(async {
                stops::forget_ended(tx).await?;
                journal::prune(tx, keep_runs, events_since).await
            })
        })
    }
}

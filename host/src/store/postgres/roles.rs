//! The store's roles on PostgreSQL: each operation is one of the shared
//! rules (`store::sql`) run through the PostgreSQL adapter, in a
//! transaction retried on deadlock, or on a pooled connection for reads;
//! the claim and finish batches, lease renewals, state reads and plugin
//! reports are set-based instead (`batches`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::listener::DatabaseClock;
use super::tx::PgTx;
use super::{PostgresStore, batches, violates};
use crate::model::audit::{AuditRecord, NewAudit};
use crate::model::{
    BroadcastRecord, Clock, EventRecord, Heartbeat, InstanceRow, NewEvent, PendingDelivery,
    PluginRow, RunRecord, TaskConfig, TaskRecord,
};
use crate::store::sql::{Tx, audit, backfills, fleet, journal, ledger, stops, tasks};
use crate::store::*;

/// Turns the unique name failing into [`StoreError::TaskExists`].
fn name_free<T>(result: StoreResult<T>, name: &str) -> StoreResult<T> {
    match result {
        Err(StoreError::Backend(e)) if violates(&e, "tasks_name_key") => {
            Err(StoreError::TaskExists(name.to_owned()))
        }
        other => other,
    }
}

#[async_trait::async_trait]
impl Configurations for PostgresStore {
    async fn create_task(
        &self,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        let created = in_transaction!(self, |tx| tasks::create(tx, config, next_run_at).await?);
        name_free(created, &config.name)
    }

    async fn update_task(
        &self,
        name: &str,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        let updated = in_transaction!(self, |tx| {
            tasks::update(tx, name, config, next_run_at).await?
        });
        name_free(updated, &config.name)?.ok_or_else(|| StoreError::TaskNotFound(name.to_owned()))
    }

    async fn delete_task(&self, name: &str) -> StoreResult<()> {
        if in_transaction!(self, |tx| tasks::delete(tx, name).await?)? {
            Ok(())
        } else {
            Err(StoreError::TaskNotFound(name.to_owned()))
        }
    }

    async fn get_task(&self, name: &str) -> StoreResult<TaskRecord> {
        let c = self.client().await?;
        tasks::by_name(&PgTx(&c), name)
            .await?
            .ok_or_else(|| StoreError::TaskNotFound(name.to_owned()))
    }

    async fn get_task_by_id(&self, id: i64) -> StoreResult<TaskRecord> {
        let c = self.client().await?;
        tasks::by_id(&PgTx(&c), id)
            .await?
            .ok_or_else(|| StoreError::TaskNotFound(format!("#{id}")))
    }

    async fn get_tasks(&self, ids: &[i64]) -> StoreResult<Vec<TaskRecord>> {
        let c = self.client().await?;
        Ok(batches::tasks_by_ids(&PgTx(&c), ids).await?)
    }

    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        let c = self.client().await?;
        Ok(tasks::list(&PgTx(&c)).await?)
    }

    async fn due_tasks(&self, now: DateTime<Utc>) -> StoreResult<Vec<TaskRecord>> {
        let c = self.client().await?;
        Ok(tasks::due(&PgTx(&c), now).await?)
    }

    async fn earliest_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let c = self.client().await?;
        Ok(tasks::earliest_due(&PgTx(&c)).await?)
    }
}

#[async_trait::async_trait]
impl RunLedger for PostgresStore {
    async fn claim_slots(&self, claims: &[SlotClaim]) -> StoreResult<Vec<Claim>> {
        in_transaction!(self, |tx| batches::claim_slots(tx, claims).await?)
    }

    async fn skip_slot(
        &self,
        task_id: i64,
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        skipped: &NewRun,
    ) -> StoreResult<bool> {
        in_transaction!(self, |tx| {
            ledger::skip_slot(tx, task_id, slot, next, skipped).await?
        })
    }

    async fn claim_retry(
        &self,
        task_id: i64,
        retry_at: DateTime<Utc>,
        run: &NewRun,
    ) -> StoreResult<Claim> {
        in_transaction!(self, |tx| {
            ledger::claim_retry(tx, task_id, retry_at, run).await?
        })
    }

    async fn claim_manual(&self, task_id: i64, run: &NewRun) -> StoreResult<Claim> {
        in_transaction!(self, |tx| ledger::claim_manual(tx, task_id, run).await?)
    }

    async fn finish_runs(&self, finishes: &[RunFinish]) -> StoreResult<Vec<bool>> {
        ledger::finish_runs_isolated(finishes, |batch| async move {
            in_transaction!(self, |tx| batches::finish_runs(tx, batch).await?)
        })
        .await
    }

    async fn renew_leases(&self, run_ids: &[String], until: DateTime<Utc>) -> StoreResult<()> {
        if run_ids.is_empty() {
            return Ok(());
        }
        in_transaction!(self, |tx| batches::renew_leases(tx, run_ids, until).await?)
    }

    async fn abandon_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>> {
        in_transaction!(self, |tx| ledger::abandon_expired(tx, now).await?)
    }

    async fn get_run(&self, id: &str) -> StoreResult<RunRecord> {
        let c = self.client().await?;
        ledger::get_run(&PgTx(&c), id)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(id.to_owned()))
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        let c = self.client().await?;
        Ok(ledger::list_runs(&PgTx(&c), filter).await?)
    }

    async fn run_ids_starting_with(&self, prefix: &str, limit: u32) -> StoreResult<Vec<String>> {
        let c = self.client().await?;
        Ok(ledger::run_ids_starting_with(&PgTx(&c), prefix, limit).await?)
    }

    async fn run_inputs(&self, id: &str) -> StoreResult<Option<String>> {
        let c = self.client().await?;
        ledger::run_inputs(&PgTx(&c), id)
            .await?
            .ok_or_else(|| StoreError::RunNotFound(id.to_owned()))
    }

    async fn queued_runs(&self) -> StoreResult<Vec<RunRecord>> {
        let c = self.client().await?;
        Ok(ledger::queued_runs(&PgTx(&c)).await?)
    }

    async fn request_stop(
        &self,
        run_id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<StopAsked> {
        in_transaction!(self, |tx| stops::request_stop(tx, run_id, by, at).await?)?
            .ok_or_else(|| StoreError::RunNotFound(run_id.to_owned()))
    }

    async fn stop_requests(&self, instance: &str) -> StoreResult<Vec<(String, String)>> {
        let c = self.client().await?;
        Ok(stops::stop_requests(&PgTx(&c), instance).await?)
    }

    async fn queue_manual_run(&self, task_id: i64, requested_by: &str) -> StoreResult<String> {
        in_transaction!(self, |tx| {
            ledger::queue_manual_run(tx, task_id, requested_by).await?
        })?
        .ok_or_else(|| StoreError::TaskNotFound(format!("#{task_id}")))
    }

    async fn queue_startup_runs(
        &self,
        instance: &str,
        roles: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<(i64, String)>> {
        in_transaction!(self, |tx| ledger::queue_startup_runs(
            tx, instance, roles, at
        )
        .await?)
    }

    async fn create_backfill(&self, backfill: &NewBackfill) -> StoreResult<BackfillRecord> {
        let created = in_transaction!(self, |tx| {
            match backfills::create(tx, backfill).await? {
                Ok(()) => Ok(backfills::get(tx, &backfill.id).await?),
                Err(active) => Err(active),
            }
        })?;
        match created {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(StoreError::BackfillNotFound(backfill.id.clone())),
            Err(active) => Err(StoreError::BackfillActive(active)),
        }
    }

    async fn top_up_backfills(&self, now: DateTime<Utc>) -> StoreResult<u32> {
        if !backfills::any_active(&PgTx(&self.client().await?)).await? {
            return Ok(0);
        }
        in_transaction!(self, |tx| backfills::top_up(tx, now).await?)
    }

    async fn get_backfill(&self, id: &str) -> StoreResult<BackfillRecord> {
        let c = self.client().await?;
        backfills::get(&PgTx(&c), id)
            .await?
            .ok_or_else(|| StoreError::BackfillNotFound(id.to_owned()))
    }

    async fn list_backfills(&self, task_id: i64, limit: u32) -> StoreResult<Vec<BackfillRecord>> {
        let c = self.client().await?;
        Ok(backfills::list(&PgTx(&c), task_id, limit).await?)
    }

    async fn cancel_backfill(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<BackfillRecord> {
        in_transaction!(self, |tx| backfills::cancel(tx, id, by, at).await?)?
            .ok_or_else(|| StoreError::BackfillNotFound(id.to_owned()))
    }

    async fn start_queued_run(
        &self,
        run_id: &str,
        instance: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        in_transaction!(self, |tx| {
            ledger::start_queued_run(tx, run_id, instance, now, lease_until).await?
        })
    }
}

#[async_trait::async_trait]
impl EventJournal for PostgresStore {
    async fn append_events(&self, events: &[NewEvent]) -> StoreResult<()> {
        in_transaction!(self, |tx| tx.insert_events(events).await?)
    }

    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<EventRecord>> {
        let c = self.client().await?;
        Ok(journal::list_events(&PgTx(&c), filter).await?)
    }

    async fn append_audit(&self, entry: &NewAudit) -> StoreResult<()> {
        in_transaction!(self, |tx| audit::append(tx, entry).await?)
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        let c = self.client().await?;
        Ok(audit::list(&PgTx(&c), filter).await?)
    }
}

#[async_trait::async_trait]
impl StateAndSettings for PostgresStore {
    async fn load_states(
        &self,
        task_ids: &[i64],
    ) -> StoreResult<HashMap<i64, BTreeMap<String, String>>> {
        let c = self.client().await?;
        Ok(batches::load_states(&PgTx(&c), task_ids).await?)
    }

    async fn set_setting(
        &self,
        identifier: &str,
        key: &str,
        setting: Option<&Setting>,
    ) -> StoreResult<()> {
        let written = in_transaction!(self, |tx| {
            journal::set_setting(tx, identifier, key, setting).await?
        })?;
        journal::setting_written(written, identifier, key)
    }

    async fn list_settings(&self) -> StoreResult<Settings> {
        let c = self.client().await?;
        Ok(journal::list_settings(&PgTx(&c)).await?)
    }
}

#[async_trait::async_trait]
impl Fleet for PostgresStore {
    async fn set_plugins(&self, instance: &str, plugins: &[PluginRow]) -> StoreResult<()> {
        in_transaction!(self, |tx| {
            batches::set_plugins(tx, instance, plugins).await?
        })
    }

    async fn list_plugins(&self) -> StoreResult<Vec<PluginRow>> {
        let c = self.client().await?;
        Ok(fleet::list_plugins(&PgTx(&c)).await?)
    }

    async fn claim_instance(&self, instance: &InstanceRow) -> StoreResult<()> {
        in_transaction!(self, |tx| fleet::claim_instance(tx, instance).await?)
    }

    async fn heartbeat(&self, instance: &InstanceRow) -> StoreResult<Heartbeat> {
        in_transaction!(self, |tx| fleet::heartbeat(tx, instance).await?)
    }

    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>> {
        let c = self.client().await?;
        Ok(fleet::list_instances(&PgTx(&c)).await?)
    }

    async fn remove_instance(&self, name: &str, process: &str) -> StoreResult<()> {
        in_transaction!(self, |tx| fleet::remove_instance(tx, name, process).await?)
    }

    async fn create_broadcast(&self, broadcast: &NewBroadcast) -> StoreResult<()> {
        in_transaction!(self, |tx| fleet::create_broadcast(tx, broadcast).await?)
    }

    async fn get_broadcast(&self, id: &str) -> StoreResult<BroadcastRecord> {
        let c = self.client().await?;
        fleet::get_broadcast(&PgTx(&c), id)
            .await?
            .ok_or_else(|| StoreError::BroadcastNotFound(id.to_owned()))
    }

    async fn list_broadcasts(&self, limit: u32) -> StoreResult<Vec<BroadcastRecord>> {
        let c = self.client().await?;
        Ok(fleet::list_broadcasts(&PgTx(&c), limit).await?)
    }

    async fn pending_deliveries(
        &self,
        instance: &str,
        limit: u32,
    ) -> StoreResult<Vec<PendingDelivery>> {
        let c = self.client().await?;
        Ok(fleet::pending_deliveries(&PgTx(&c), instance, limit).await?)
    }

    async fn start_delivery(
        &self,
        broadcast_id: &str,
        instance: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        in_transaction!(self, |tx| {
            fleet::start_delivery(tx, broadcast_id, instance, run_id, now).await?
        })
    }

    async fn finish_delivery(&self, finish: &DeliveryFinish) -> StoreResult<bool> {
        in_transaction!(self, |tx| fleet::finish_delivery(tx, finish).await?)
    }

    async fn expire_deliveries(
        &self,
        instances: &[String],
        now: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<u64> {
        in_transaction!(self, |tx| {
            fleet::expire_deliveries(tx, instances, now, reason).await?
        })
    }

    async fn join_broadcasts(&self, instance: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        in_transaction!(self, |tx| fleet::join_broadcasts(tx, instance, since)
            .await?)
    }
}

#[async_trait::async_trait]
impl Housekeeping for PostgresStore {
    async fn change_token(&self) -> StoreResult<u64> {
        Ok(self
            .shared
            .changes
            .load(std::sync::atomic::Ordering::Relaxed))
    }

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(DatabaseClock(self.shared.clone()))
    }

    async fn prune(&self, keep_runs: u32, events_since: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        in_transaction!(self, |tx| {
            stops::forget_ended(tx).await?;
            journal::prune(tx, keep_runs, events_since).await?
        })
    }
}

//! A decorator that reports how long each store call took and whether it
//! failed, for benches, metrics and outage reports: it implements exactly the roles of what it wraps (an
//! `Observed<dyn Store, _>` is a [`Store`]; one over a single role is that
//! role), so an observer is written once instead of as a forwarding impl
//! of every operation.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// Told of every call made through an [`Observed`] store once it returned.
pub trait CallObserver: Send + Sync {
    /// `call` is the operation's name (`claim_slots`), `took` its wall time,
    /// including any wait for a connection; `failed` its error, if any.
    fn observe(&self, call: &'static str, took: Duration, failed: Option<&StoreError>);
}

impl<O: CallObserver + ?Sized> CallObserver for Arc<O> {
    fn observe(&self, call: &'static str, took: Duration, failed: Option<&StoreError>) {
        (**self).observe(call, took, failed)
    }
}

/// `inner`, with every call reported to `observer`. Default methods
/// (`claim_slot`, `finish_run`, `load_state`) are reported as the batch
/// they call.
pub struct Observed<S: ?Sized, O> {
    pub inner: Arc<S>,
    pub observer: O,
}

impl<S: ?Sized, O: CallObserver> Observed<S, O> {
    pub fn new(inner: Arc<S>, observer: O) -> Arc<Self> {
        Arc::new(Observed { inner, observer })
    }

    async fn time<T>(
        &self,
        call: &'static str,
        f: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let result = f.await;
        self.observer
            .observe(call, start.elapsed(), result.as_ref().err());
        result
    }
}

/// `self.inner.$call(args)`, timed under the call's name.
macro_rules! observe {
    ($self:ident . $call:ident ( $($arg:expr),* )) => {
        $self.time(stringify!($call), $self.inner.$call($($arg),*)).await
    };
}

#[async_trait::async_trait]
impl<S: Configurations + ?Sized, O: CallObserver> Configurations for Observed<S, O> {
    async fn create_task(
        &self,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        observe!(self.create_task(config, next_run_at))
    }
    async fn update_task(
        &self,
        name: &str,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        observe!(self.update_task(name, config, next_run_at))
    }
    async fn delete_task(&self, name: &str) -> StoreResult<()> {
        observe!(self.delete_task(name))
    }
    async fn get_task(&self, name: &str) -> StoreResult<TaskRecord> {
        observe!(self.get_task(name))
    }
    async fn get_task_by_id(&self, id: i64) -> StoreResult<TaskRecord> {
        observe!(self.get_task_by_id(id))
    }
    async fn get_tasks(&self, ids: &[i64]) -> StoreResult<Vec<TaskRecord>> {
        observe!(self.get_tasks(ids))
    }
    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        observe!(self.list_tasks())
    }
    async fn due_tasks(&self, now: DateTime<Utc>) -> StoreResult<Vec<TaskRecord>> {
        observe!(self.due_tasks(now))
    }
    async fn earliest_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        observe!(self.earliest_due())
    }
}

#[async_trait::async_trait]
impl<S: RunLedger + ?Sized, O: CallObserver> RunLedger for Observed<S, O> {
    async fn claim_slots(&self, claims: &[SlotClaim]) -> StoreResult<Vec<Claim>> {
        observe!(self.claim_slots(claims))
    }
    fn claims_per_transaction(&self) -> usize {
        self.inner.claims_per_transaction()
    }
    async fn skip_slot(
        &self,
        task_id: i64,
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        skipped: &NewRun,
    ) -> StoreResult<bool> {
        observe!(self.skip_slot(task_id, slot, next, skipped))
    }
    async fn claim_retry(
        &self,
        task_id: i64,
        retry_at: DateTime<Utc>,
        run: &NewRun,
    ) -> StoreResult<Claim> {
        observe!(self.claim_retry(task_id, retry_at, run))
    }
    async fn claim_manual(&self, task_id: i64, run: &NewRun) -> StoreResult<Claim> {
        observe!(self.claim_manual(task_id, run))
    }
    async fn finish_runs(&self, finishes: &[RunFinish]) -> StoreResult<Vec<bool>> {
        observe!(self.finish_runs(finishes))
    }
    async fn renew_leases(&self, run_ids: &[String], until: DateTime<Utc>) -> StoreResult<()> {
        observe!(self.renew_leases(run_ids, until))
    }
    async fn abandon_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>> {
        observe!(self.abandon_expired(now))
    }
    async fn get_run(&self, id: &str) -> StoreResult<RunRecord> {
        observe!(self.get_run(id))
    }
    async fn run_ids_starting_with(&self, prefix: &str, limit: u32) -> StoreResult<Vec<String>> {
        observe!(self.run_ids_starting_with(prefix, limit))
    }
    async fn run_inputs(&self, id: &str) -> StoreResult<Option<String>> {
        observe!(self.run_inputs(id))
    }
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        observe!(self.list_runs(filter))
    }
    async fn queued_runs(&self) -> StoreResult<Vec<RunRecord>> {
        observe!(self.queued_runs())
    }
    async fn request_stop(
        &self,
        run_id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<StopAsked> {
        observe!(self.request_stop(run_id, by, at))
    }
    async fn stop_requests(&self, instance: &str) -> StoreResult<Vec<(String, String)>> {
        observe!(self.stop_requests(instance))
    }
    async fn queue_manual_run(&self, task_id: i64, requested_by: &str) -> StoreResult<String> {
        observe!(self.queue_manual_run(task_id, requested_by))
    }
    async fn start_queued_run(
        &self,
        run_id: &str,
        instance: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        observe!(self.start_queued_run(run_id, instance, now, lease_until))
    }
    async fn queue_startup_runs(
        &self,
        instance: &str,
        roles: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<(i64, String)>> {
        observe!(self.queue_startup_runs(instance, roles, at))
    }
    async fn create_backfill(&self, backfill: &NewBackfill) -> StoreResult<BackfillRecord> {
        observe!(self.create_backfill(backfill))
    }
    async fn top_up_backfills(&self, now: DateTime<Utc>) -> StoreResult<u32> {
        observe!(self.top_up_backfills(now))
    }
    async fn get_backfill(&self, id: &str) -> StoreResult<BackfillRecord> {
        observe!(self.get_backfill(id))
    }
    async fn list_backfills(&self, task_id: i64, limit: u32) -> StoreResult<Vec<BackfillRecord>> {
        observe!(self.list_backfills(task_id, limit))
    }
    async fn cancel_backfill(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<BackfillRecord> {
        observe!(self.cancel_backfill(id, by, at))
    }
}

#[async_trait::async_trait]
impl<S: EventJournal + ?Sized, O: CallObserver> EventJournal for Observed<S, O> {
    async fn append_events(&self, events: &[NewEvent]) -> StoreResult<()> {
        observe!(self.append_events(events))
    }
    async fn append_audit(&self, entry: &NewAudit) -> StoreResult<()> {
        observe!(self.append_audit(entry))
    }
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        observe!(self.list_audit(filter))
    }
    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<EventRecord>> {
        observe!(self.list_events(filter))
    }
}

#[async_trait::async_trait]
impl<S: StateAndSettings + ?Sized, O: CallObserver> StateAndSettings for Observed<S, O> {
    async fn load_states(
        &self,
        task_ids: &[i64],
    ) -> StoreResult<HashMap<i64, BTreeMap<String, String>>> {
        observe!(self.load_states(task_ids))
    }
    async fn set_setting(
        &self,
        identifier: &str,
        key: &str,
        setting: Option<&Setting>,
    ) -> StoreResult<()> {
        observe!(self.set_setting(identifier, key, setting))
    }
    async fn list_settings(&self) -> StoreResult<Settings> {
        observe!(self.list_settings())
    }
}

#[async_trait::async_trait]
impl<S: Fleet + ?Sized, O: CallObserver> Fleet for Observed<S, O> {
    async fn set_plugins(&self, instance: &str, plugins: &[PluginRow]) -> StoreResult<()> {
        observe!(self.set_plugins(instance, plugins))
    }
    async fn list_plugins(&self) -> StoreResult<Vec<PluginRow>> {
        observe!(self.list_plugins())
    }
    async fn claim_instance(&self, instance: &InstanceRow) -> StoreResult<()> {
        observe!(self.claim_instance(instance))
    }
    async fn heartbeat(&self, instance: &InstanceRow) -> StoreResult<Heartbeat> {
        observe!(self.heartbeat(instance))
    }
    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>> {
        observe!(self.list_instances())
    }
    async fn remove_instance(&self, name: &str, process: &str) -> StoreResult<()> {
        observe!(self.remove_instance(name, process))
    }
    async fn create_broadcast(&self, broadcast: &NewBroadcast) -> StoreResult<()> {
        observe!(self.create_broadcast(broadcast))
    }
    async fn get_broadcast(&self, id: &str) -> StoreResult<BroadcastRecord> {
        observe!(self.get_broadcast(id))
    }
    async fn list_broadcasts(&self, limit: u32) -> StoreResult<Vec<BroadcastRecord>> {
        observe!(self.list_broadcasts(limit))
    }
    async fn pending_deliveries(
        &self,
        instance: &str,
        limit: u32,
    ) -> StoreResult<Vec<PendingDelivery>> {
        observe!(self.pending_deliveries(instance, limit))
    }
    async fn start_delivery(
        &self,
        broadcast_id: &str,
        instance: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        observe!(self.start_delivery(broadcast_id, instance, run_id, now))
    }
    async fn finish_delivery(&self, finish: &DeliveryFinish) -> StoreResult<bool> {
        observe!(self.finish_delivery(finish))
    }
    async fn expire_deliveries(
        &self,
        instances: &[String],
        now: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<u64> {
        observe!(self.expire_deliveries(instances, now, reason))
    }
    async fn join_broadcasts(&self, instance: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        observe!(self.join_broadcasts(instance, since))
    }
}

#[async_trait::async_trait]
impl<S: Housekeeping + ?Sized, O: CallObserver> Housekeeping for Observed<S, O> {
    async fn change_token(&self) -> StoreResult<u64> {
        observe!(self.change_token())
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock()
    }
    async fn prune(&self, keep_runs: u32, events_since: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        observe!(self.prune(keep_runs, events_since))
    }
}

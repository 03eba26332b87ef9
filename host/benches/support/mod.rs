//! What the scheduler benches share: a pass-through store and executor
//! that time every call (to show where the time goes), and the figures'
//! arithmetic and tables.

// Each bench uses what it needs of this.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use cronwerk::model::{
    BroadcastRecord, Clock, EventRecord, InstanceRow, NewEvent, PendingDelivery, PluginRow,
    RunRecord, TaskConfig, TaskRecord, Trigger,
};
use cronwerk::plugins::{PluginExecutor, Plugins};
use cronwerk::runtime::{Execution, Executor, RunRequest};
use cronwerk::store::{
    Claim, DeliveryFinish, EventFilter, NewBroadcast, NewRun, RunFilter, RunFinish, Settings,
    SlotClaim, Store, StoreResult,
};

/// Call counts and summed wall time per operation. Concurrent calls
/// overlap, so sums can exceed the elapsed time; they include waiting for
/// the store's connection mutex.
#[derive(Default)]
pub struct Timing(Mutex<BTreeMap<&'static str, (u64, Duration)>>);

impl Timing {
    pub fn record(&self, what: &'static str, took: Duration) {
        let mut map = self.0.lock().unwrap();
        let entry = map.entry(what).or_default();
        entry.0 += 1;
        entry.1 += took;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, (u64, Duration)> {
        self.0.lock().unwrap().clone()
    }
}

pub struct TimedStore {
    pub inner: Arc<dyn Store>,
    pub timing: Arc<Timing>,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn Store>, timing: Arc<Timing>) -> Arc<TimedStore> {
        Arc::new(TimedStore { inner, timing })
    }

    async fn time<T>(&self, what: &'static str, f: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let result = f.await;
        self.timing.record(what, start.elapsed());
        result
    }
}

#[async_trait::async_trait]
impl Store for TimedStore {
    async fn create_task(
        &self,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        self.time("create_task", self.inner.create_task(config, next_run_at))
            .await
    }
    async fn update_task(
        &self,
        name: &str,
        config: &TaskConfig,
        next_run_at: Option<DateTime<Utc>>,
    ) -> StoreResult<TaskRecord> {
        self.time(
            "update_task",
            self.inner.update_task(name, config, next_run_at),
        )
        .await
    }
    async fn delete_task(&self, name: &str) -> StoreResult<()> {
        self.time("delete_task", self.inner.delete_task(name)).await
    }
    async fn get_task(&self, name: &str) -> StoreResult<TaskRecord> {
        self.time("get_task", self.inner.get_task(name)).await
    }
    async fn get_task_by_id(&self, id: i64) -> StoreResult<TaskRecord> {
        self.time("get_task_by_id", self.inner.get_task_by_id(id))
            .await
    }
    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        self.time("list_tasks", self.inner.list_tasks()).await
    }
    async fn due_tasks(&self, now: DateTime<Utc>) -> StoreResult<Vec<TaskRecord>> {
        self.time("due_tasks", self.inner.due_tasks(now)).await
    }
    async fn earliest_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.time("earliest_due", self.inner.earliest_due()).await
    }
    async fn claim_slots(&self, claims: &[SlotClaim]) -> StoreResult<Vec<Claim>> {
        self.time("claim_slots", self.inner.claim_slots(claims))
            .await
    }
    async fn skip_slot(
        &self,
        task_id: i64,
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        skipped: &NewRun,
    ) -> StoreResult<bool> {
        self.time(
            "skip_slot",
            self.inner.skip_slot(task_id, slot, next, skipped),
        )
        .await
    }
    async fn claim_retry(
        &self,
        task_id: i64,
        retry_at: DateTime<Utc>,
        run: &NewRun,
    ) -> StoreResult<Claim> {
        self.time(
            "claim_retry",
            self.inner.claim_retry(task_id, retry_at, run),
        )
        .await
    }
    async fn claim_manual(&self, task_id: i64, run: &NewRun) -> StoreResult<Claim> {
        self.time("claim_manual", self.inner.claim_manual(task_id, run))
            .await
    }
    async fn finish_runs(&self, finishes: &[RunFinish]) -> StoreResult<Vec<bool>> {
        self.time("finish_runs", self.inner.finish_runs(finishes))
            .await
    }
    async fn renew_leases(&self, run_ids: &[String], until: DateTime<Utc>) -> StoreResult<()> {
        self.time("renew_leases", self.inner.renew_leases(run_ids, until))
            .await
    }
    async fn abandon_expired(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>> {
        self.time("abandon_expired", self.inner.abandon_expired(now))
            .await
    }
    async fn get_run(&self, id: &str) -> StoreResult<RunRecord> {
        self.time("get_run", self.inner.get_run(id)).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        self.time("list_runs", self.inner.list_runs(filter)).await
    }
    async fn queued_runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.time("queued_runs", self.inner.queued_runs()).await
    }
    async fn queue_manual_run(&self, task_id: i64, requested_by: &str) -> StoreResult<String> {
        self.time(
            "queue_manual_run",
            self.inner.queue_manual_run(task_id, requested_by),
        )
        .await
    }
    async fn start_queued_run(
        &self,
        run_id: &str,
        instance: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        self.time(
            "start_queued_run",
            self.inner
                .start_queued_run(run_id, instance, now, lease_until),
        )
        .await
    }
    async fn append_events(&self, events: &[NewEvent]) -> StoreResult<()> {
        self.time("append_events", self.inner.append_events(events))
            .await
    }
    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<EventRecord>> {
        self.time("list_events", self.inner.list_events(filter))
            .await
    }
    async fn load_state(&self, task_id: i64) -> StoreResult<BTreeMap<String, String>> {
        self.time("load_state", self.inner.load_state(task_id))
            .await
    }
    async fn load_states(
        &self,
        task_ids: &[i64],
    ) -> StoreResult<std::collections::HashMap<i64, BTreeMap<String, String>>> {
        self.time("load_states", self.inner.load_states(task_ids))
            .await
    }
    async fn set_plugins(&self, instance: &str, plugins: &[PluginRow]) -> StoreResult<()> {
        self.time("set_plugins", self.inner.set_plugins(instance, plugins))
            .await
    }
    async fn list_plugins(&self) -> StoreResult<Vec<PluginRow>> {
        self.time("list_plugins", self.inner.list_plugins()).await
    }
    async fn heartbeat(&self, instance: &InstanceRow) -> StoreResult<()> {
        self.time("heartbeat", self.inner.heartbeat(instance)).await
    }
    async fn list_instances(&self) -> StoreResult<Vec<InstanceRow>> {
        self.time("list_instances", self.inner.list_instances())
            .await
    }
    async fn remove_instance(&self, name: &str) -> StoreResult<()> {
        self.time("remove_instance", self.inner.remove_instance(name))
            .await
    }
    async fn create_broadcast(&self, broadcast: &NewBroadcast) -> StoreResult<()> {
        self.time("create_broadcast", self.inner.create_broadcast(broadcast))
            .await
    }
    async fn get_broadcast(&self, id: &str) -> StoreResult<BroadcastRecord> {
        self.time("get_broadcast", self.inner.get_broadcast(id))
            .await
    }
    async fn list_broadcasts(&self, limit: u32) -> StoreResult<Vec<BroadcastRecord>> {
        self.time("list_broadcasts", self.inner.list_broadcasts(limit))
            .await
    }
    async fn pending_deliveries(&self, instance: &str) -> StoreResult<Vec<PendingDelivery>> {
        self.time(
            "pending_deliveries",
            self.inner.pending_deliveries(instance),
        )
        .await
    }
    async fn start_delivery(
        &self,
        broadcast_id: &str,
        instance: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.time(
            "start_delivery",
            self.inner
                .start_delivery(broadcast_id, instance, run_id, now),
        )
        .await
    }
    async fn finish_delivery(&self, finish: &DeliveryFinish) -> StoreResult<bool> {
        self.time("finish_delivery", self.inner.finish_delivery(finish))
            .await
    }
    async fn expire_deliveries(
        &self,
        instances: &[String],
        now: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<u64> {
        self.time(
            "expire_deliveries",
            self.inner.expire_deliveries(instances, now, reason),
        )
        .await
    }
    async fn join_broadcasts(&self, instance: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        self.time(
            "join_broadcasts",
            self.inner.join_broadcasts(instance, since),
        )
        .await
    }
    async fn set_setting(
        &self,
        identifier: &str,
        key: &str,
        value: Option<&str>,
    ) -> StoreResult<()> {
        self.time(
            "set_setting",
            self.inner.set_setting(identifier, key, value),
        )
        .await
    }
    async fn list_settings(&self) -> StoreResult<Settings> {
        self.time("list_settings", self.inner.list_settings()).await
    }
    async fn change_token(&self) -> StoreResult<u64> {
        self.time("change_token", self.inner.change_token()).await
    }
    async fn prune(&self, keep_runs: u32, events_since: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        self.time("prune", self.inner.prune(keep_runs, events_since))
            .await
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock()
    }
}

/// `cronwerk serve`'s executor (a run takes whatever component the plugins
/// folder serves now), plus timing and the moment each scheduled run
/// actually reached the executor.
pub struct BenchExecutor {
    pub inner: PluginExecutor,
    pub timing: Arc<Timing>,
    /// (scheduled_for, executor entered) of scheduled runs.
    pub entered: Mutex<Vec<(SystemTime, SystemTime)>>,
}

impl BenchExecutor {
    pub fn new(plugins: Arc<Plugins>, timing: Arc<Timing>) -> Arc<BenchExecutor> {
        Arc::new(BenchExecutor {
            inner: PluginExecutor::new(plugins),
            timing,
            entered: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl Executor for BenchExecutor {
    async fn execute(&self, implementation: &str, request: RunRequest) -> Execution {
        if request.context.trigger == Trigger::Schedule
            && let Some(slot) = request.context.scheduled_for
        {
            self.entered.lock().unwrap().push((slot, SystemTime::now()));
        }
        let start = Instant::now();
        let execution = self.inner.execute(implementation, request).await;
        // Besides the run, only a lookup in the folder's current mapping,
        // which is negligible next to it: the figure keeps its old name.
        if let Execution::Ran { .. } = execution {
            self.timing.record("Runtime::run (wasm)", start.elapsed());
        }
        execution
    }
}

/// Sorted-sample quantile.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn print_breakdown(title: &str, breakdown: &BTreeMap<&'static str, (u64, Duration)>) {
    println!("\n{title}\n");
    println!("| call | calls | mean µs | total s |");
    println!("| --- | ---: | ---: | ---: |");
    let mut rows: Vec<_> = breakdown.iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.1));
    for (what, (count, total)) in rows {
        println!(
            "| {what} | {count} | {:.1} | {:.2} |",
            total.as_secs_f64() * 1e6 / *count as f64,
            total.as_secs_f64()
        );
    }
}

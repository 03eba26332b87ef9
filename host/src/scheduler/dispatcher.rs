//! The event-driven dispatcher: sleeps until the earliest due time (or a
//! change), claims due slots in the store (one conditional update each, so
//! several dispatchers on one database never run a slot twice), hands runs
//! to the [`Executor`], keeps their leases alive, and records how they end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::farm::RunFarm;
use super::plan::{SlotAction, plan_slot};
use crate::model::{
    Clock, InstanceInfo, Level, NewEvent, PendingDelivery, RunOutcome, RunRecord, RunState,
    TaskRecord, Trigger,
};
use crate::runtime::{CancelToken, Execution, Executor, Farm, Outcome, RunContext, RunRequest};
use crate::store::{
    Claim, DeliveryFinish, NewRun, OnOverlap, RunFinish, Settings, SlotClaim, Store, StoreResult,
};

/// What asking this instance for a manual run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManualStart {
    /// Tried here; the claim says whether it runs.
    Here(Claim),
    /// This instance lacks roles the configuration needs, so the run was
    /// queued for an instance that has them.
    Queued { missing_roles: Vec<String> },
}

/// Knobs of a dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub instance: InstanceInfo,
    /// A running run's lease; renewed every third of it. A run whose lease
    /// expires (its instance died) is recorded abandoned.
    pub lease: Duration,
    /// How long cancelled runs get to stop on shutdown.
    pub grace: Duration,
    /// How often to look for changes made by other processes (CLI edits,
    /// manual run requests) when nothing is due sooner.
    pub poll: Duration,
    /// Finished runs kept per configuration.
    pub keep_runs: u32,
    /// Events kept this long.
    pub keep_events: Duration,
    /// An instance without a heartbeat for this long is gone: its queued
    /// broadcast deliveries are recorded abandoned.
    pub liveness: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            instance: InstanceInfo {
                name: "local".into(),
                roles: Vec::new(),
            },
            lease: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            poll: Duration::from_millis(250),
            keep_runs: 1000,
            keep_events: Duration::from_secs(14 * 24 * 3600),
            liveness: super::farm::LIVENESS,
        }
    }
}

/// Claims due work and runs it. Share as `Arc`.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    config: DispatcherConfig,
    wake: Notify,
    running: Mutex<HashMap<String, CancelToken>>,
    runs: tokio::sync::Mutex<JoinSet<()>>,
    /// Finished runs waiting to be committed together (group commit).
    finished: Mutex<Vec<RunFinish>>,
    /// Identifier settings as of the latest pass; runs read them through
    /// the `config` import.
    settings: Mutex<Arc<Settings>>,
}

fn to_std(d: chrono::TimeDelta) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

fn delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        executor: Arc<dyn Executor>,
        clock: Arc<dyn Clock>,
        config: DispatcherConfig,
    ) -> Arc<Self> {
        Arc::new(Dispatcher {
            store,
            executor,
            clock,
            config,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            runs: tokio::sync::Mutex::new(JoinSet::new()),
            finished: Mutex::new(Vec::new()),
            settings: Mutex::new(Arc::new(Settings::new())),
        })
    }

    /// Makes the loop look again now (a configuration changed in-process).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ids of the runs this dispatcher has in flight.
    pub fn running_ids(&self) -> Vec<String> {
        self.lock_running().keys().cloned().collect()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancelToken>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs until `shutdown` resolves; then cancels runs in flight, gives
    /// them the grace period, and returns once every run is recorded.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_token = None;
        let mut next_housekeeping = self.clock.now();
        let mut next_lease_renewal = self.clock.now();
        loop {
            let now = self.clock.now();
            if now >= next_housekeeping {
                self.housekeeping(now).await;
                next_housekeeping = now + delta(self.config.lease / 2);
            }
            if now >= next_lease_renewal {
                self.renew_leases(now).await;
                next_lease_renewal = now + delta(self.config.lease / 3);
            }
            let pass = self.tick(now).await;
            self.reap().await;
            let poll_until = now + delta(self.config.poll);
            let earliest = match pass {
                Ok(()) => self.store.earliest_due().await.ok().flatten(),
                Err(e) => {
                    // Back off: a failing store must not turn into a busy loop.
                    tracing::error!("dispatcher pass failed: {e}");
                    None
                }
            };
            // A time already past is work waiting on a running run (catch-up,
            // retry); that run's end wakes us, so only poll meanwhile.
            let wake_at = match earliest {
                Some(e) if e > now => e.min(poll_until),
                _ => poll_until,
            }
            .min(next_lease_renewal)
            .min(next_housekeeping);
            // Sleep until the earliest of: a due slot, a local wake-up, the
            // next look for other processes' changes, shutdown.
            loop {
                let now = self.clock.now();
                if now >= wake_at {
                    // No sleep this time (the pass outlasted the poll
                    // interval, as it does under sustained load), so the
                    // select below is skipped: look for a stop request
                    // here, or a busy instance would never stop.
                    if (&mut shutdown).now_or_never().is_some() {
                        self.shut_down().await;
                        return;
                    }
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(to_std(wake_at - now)) => {}
                    _ = self.wake.notified() => break,
                    _ = &mut shutdown => {
                        self.shut_down().await;
                        return;
                    }
                }
                let token = self.store.change_token().await.ok();
                if token != last_token {
                    last_token = token;
                    break;
                }
            }
        }
    }

    /// One pass: queued manual runs, due retries and slots. All slots due
    /// in this pass are claimed in one store transaction.
    pub async fn tick(self: &Arc<Self>, now: DateTime<Utc>) -> StoreResult<()> {
        // One small read per pass keeps `config set` live without a read per run.
        let settings = Arc::new(self.store.list_settings().await?);
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
        for queued in self.store.queued_runs().await? {
            self.start_queued(queued, now).await?;
        }
        for delivery in self
            .store
            .pending_deliveries(&self.config.instance.name)
            .await?
        {
            self.start_delivery(delivery, now).await?;
        }
        let mut claims = Vec::new();
        let mut claimed_tasks = Vec::new();
        for task in self.store.due_tasks(now).await? {
            // Another instance with the roles claims it; slots that pass
            // while none is live are handled by the misfire policy then.
            if !self.may_run(&task) {
                continue;
            }
            if task.retry_at.is_some_and(|r| r <= now) && task.running_run_id.is_none() {
                self.start_retry(&task, now).await?;
                continue;
            }
            match plan_slot(&task, now) {
                Some(SlotAction::Run {
                    slot,
                    next,
                    catch_up,
                }) => {
                    let mut run = self.new_run(&task, Trigger::Schedule, now);
                    run.scheduled_for = Some(slot);
                    claims.push(SlotClaim {
                        slot,
                        next,
                        run,
                        // Catch-up slots wait for the running one to finish.
                        on_overlap: if catch_up {
                            OnOverlap::Wait
                        } else {
                            OnOverlap::Skip
                        },
                    });
                    claimed_tasks.push(task);
                }
                Some(SlotAction::Skip { slot, next, reason }) => {
                    let mut run = self.new_run(&task, Trigger::Schedule, now);
                    run.scheduled_for = Some(slot);
                    run.message = reason;
                    self.store.skip_slot(task.id, slot, next, &run).await?;
                }
                None => {}
            }
        }
        if claims.is_empty() {
            return Ok(());
        }
        let results = self.store.claim_slots(&claims).await?;
        let won: Vec<i64> = claims
            .iter()
            .zip(&results)
            .filter(|(_, r)| **r == Claim::Claimed)
            .map(|(c, _)| c.run.task_id)
            .collect();
        // One read for the state of every claimed run, not one per run.
        let mut states = self.store.load_states(&won).await?;
        for ((claim, task), result) in claims.into_iter().zip(claimed_tasks).zip(results) {
            if result == Claim::Claimed {
                let state = states.remove(&task.id);
                self.spawn_run(task, claim.run, claim.next, state).await;
            }
        }
        Ok(())
    }

    /// Whether this instance has every role the configuration needs.
    fn may_run(&self, task: &TaskRecord) -> bool {
        task.config
            .missing_roles(&self.config.instance.roles)
            .is_empty()
    }

    fn new_run(&self, task: &TaskRecord, trigger: Trigger, now: DateTime<Utc>) -> NewRun {
        NewRun {
            id: uuid::Uuid::now_v7().to_string(),
            task_id: task.id,
            task_name: task.config.name.clone(),
            implementation: task.config.implementation.clone(),
            trigger,
            attempt: 1,
            scheduled_for: None,
            started_at: now,
            lease_until: now + delta(self.config.lease),
            instance: self.config.instance.name.clone(),
            message: String::new(),
        }
    }

    async fn start_retry(
        self: &Arc<Self>,
        task: &TaskRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let Some(retry_at) = task.retry_at else {
            return Ok(());
        };
        let mut run = self.new_run(task, Trigger::Retry, now);
        run.attempt = task.retry_attempt;
        if self.store.claim_retry(task.id, retry_at, &run).await? == Claim::Claimed {
            self.spawn_run(task.clone(), run, task.next_run_at, None)
                .await;
        }
        Ok(())
    }

    async fn start_queued(
        self: &Arc<Self>,
        queued: RunRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let task = match self.store.get_task_by_id(queued.task_id).await {
            Ok(task) => task,
            // Deleted meanwhile: nothing to run; its queued runs went with it.
            Err(crate::store::StoreError::TaskNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !self.may_run(&task) {
            return Ok(());
        }
        let lease_until = now + delta(self.config.lease);
        let claim = self
            .store
            .start_queued_run(&queued.id, &self.config.instance.name, now, lease_until)
            .await?;
        if claim == Claim::Claimed {
            let mut run = self.new_run(&task, Trigger::Manual, now);
            run.id = queued.id;
            let next = task.next_run_at;
            self.spawn_run(task, run, next, None).await;
        }
        Ok(())
    }

    /// Runs this instance's delivery of a broadcast.
    async fn start_delivery(
        self: &Arc<Self>,
        delivery: PendingDelivery,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let run_id = uuid::Uuid::now_v7().to_string();
        let instance = &self.config.instance.name;
        if !self
            .store
            .start_delivery(&delivery.broadcast_id, instance, &run_id, now)
            .await?
        {
            return Ok(());
        }
        self.track(run_id.clone(), move |this, cancel| async move {
            if let Err(e) = this.deliver(&delivery, &run_id, cancel).await {
                tracing::error!(
                    broadcast = %delivery.broadcast_id,
                    "recording a broadcast run failed: {e}"
                );
            }
            // Nothing waits on a broadcast run.
            false
        })
        .await;
        Ok(())
    }

    async fn deliver(
        self: &Arc<Self>,
        delivery: &PendingDelivery,
        run_id: &str,
        cancel: CancelToken,
    ) -> StoreResult<()> {
        let identifier = &delivery.identifier;
        let request = RunRequest {
            context: RunContext {
                configuration_name: format!("broadcast {}", delivery.broadcast_id),
                run_id: run_id.to_owned(),
                trigger: Trigger::Broadcast,
                ..Default::default()
            },
            payload: Some(delivery.payload.clone()),
            // A broadcast has no configuration: default limits, no grants.
            limits: Default::default(),
            grants: Default::default(),
            config: self.settings_of(identifier),
            state: Default::default(),
            instance: self.config.instance.clone(),
            farm: Some(self.farm(format!("broadcast {}", delivery.broadcast_id), true)),
            cancel,
            grace: self.config.grace,
        };
        let execution = self.executor.execute(identifier, request).await;
        let (outcome, _) = outcome_of(
            execution,
            identifier,
            &self.config.instance.name,
            None,
            run_id,
        );
        self.store
            .finish_delivery(&DeliveryFinish {
                broadcast_id: delivery.broadcast_id.clone(),
                instance: self.config.instance.name.clone(),
                finished_at: self.clock.now(),
                outcome,
            })
            .await?;
        Ok(())
    }

    /// The `farm` import for a run on this instance.
    fn farm(self: &Arc<Self>, created_by: String, from_broadcast: bool) -> Arc<dyn Farm> {
        Arc::new(RunFarm {
            store: self.store.clone(),
            dispatcher: Arc::downgrade(self),
            created_by,
            from_broadcast,
        })
    }

    fn settings_of(&self, identifier: &str) -> std::collections::BTreeMap<String, String> {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(identifier)
            .cloned()
            .unwrap_or_default()
    }

    /// Starts a manual run now on this instance (the one that got the
    /// request), or, if it lacks a role the configuration needs, queues it
    /// for an instance that has them.
    pub async fn run_now(self: &Arc<Self>, task_name: &str) -> StoreResult<(String, ManualStart)> {
        let task = self.store.get_task(task_name).await?;
        let missing: Vec<String> = task
            .config
            .missing_roles(&self.config.instance.roles)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !missing.is_empty() {
            let requested_by = format!("instance {}", self.config.instance.name);
            let id = self.store.queue_manual_run(task.id, &requested_by).await?;
            return Ok((
                id,
                ManualStart::Queued {
                    missing_roles: missing,
                },
            ));
        }
        let run = self.new_run(&task, Trigger::Manual, self.clock.now());
        let claim = self.store.claim_manual(task.id, &run).await?;
        let id = run.id.clone();
        if claim == Claim::Claimed {
            let next = task.next_run_at;
            self.spawn_run(task, run, next, None).await;
        }
        Ok((id, ManualStart::Here(claim)))
    }

    /// Starts a claimed run; `state` is the configuration's stored state
    /// when the caller already read it.
    async fn spawn_run(
        self: &Arc<Self>,
        task: TaskRecord,
        run: NewRun,
        next: Option<DateTime<Utc>>,
        state: Option<std::collections::BTreeMap<String, String>>,
    ) {
        let run_id = run.id.clone();
        self.track(run_id.clone(), move |this, cancel| async move {
            match this.execute(&task, run, next, cancel, state).await {
                Ok(wake) => wake,
                Err(e) => {
                    tracing::error!(run = %run_id, "recording the run failed: {e}");
                    true
                }
            }
        })
        .await;
    }

    /// Runs `work` as run `run_id` of this dispatcher: cancelled on
    /// shutdown, its lease renewed, awaited by [`wait_idle`](Self::wait_idle).
    /// `work` says whether its end should make the dispatcher look again
    /// (only work a run was holding up needs a pass now: a retry, or a slot
    /// that came due while it ran).
    async fn track<F, Fut>(self: &Arc<Self>, run_id: String, work: F)
    where
        F: FnOnce(Arc<Self>, CancelToken) -> Fut,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let cancel = CancelToken::new();
        self.lock_running().insert(run_id.clone(), cancel.clone());
        let this = self.clone();
        let work = work(self.clone(), cancel);
        self.runs.lock().await.spawn(async move {
            let wake = work.await;
            this.lock_running().remove(&run_id);
            if wake {
                this.wake();
            }
        });
    }

    /// Runs and records one run; true if the dispatcher should look again.
    async fn execute(
        self: &Arc<Self>,
        task: &TaskRecord,
        run: NewRun,
        next: Option<DateTime<Utc>>,
        cancel: CancelToken,
        state: Option<std::collections::BTreeMap<String, String>>,
    ) -> StoreResult<bool> {
        let config = &task.config;
        let state = match state {
            Some(state) => state,
            None => self.store.load_state(task.id).await?,
        };
        let request = RunRequest {
            context: RunContext {
                configuration_name: config.name.clone(),
                run_id: run.id.clone(),
                trigger: run.trigger,
                scheduled_for: run.scheduled_for.map(Into::into),
                last_run: task.last_run_at.map(Into::into),
                next_run: next.map(Into::into),
                run_count: task.run_count,
                properties: config.properties.clone(),
            },
            payload: None,
            limits: config.limits,
            grants: config.grants.clone(),
            config: self.settings_of(&config.implementation),
            state,
            instance: self.config.instance.clone(),
            farm: Some(self.farm(
                format!(
                    "run {} of '{}' on {}",
                    run.id, config.name, self.config.instance.name
                ),
                false,
            )),
            cancel,
            grace: self.config.grace,
        };
        let execution = self.executor.execute(&config.implementation, request).await;
        let finished_at = self.clock.now();
        let (outcome, task_state) = outcome_of(
            execution,
            &config.implementation,
            &self.config.instance.name,
            Some(task.id),
            &run.id,
        );
        let mut finish = RunFinish::of(&run.id, task.id, finished_at, outcome, task_state);
        if finish.outcome.state.is_failure() && run.attempt <= config.retries {
            let backoff = config.retry_backoff * 2u32.saturating_pow(run.attempt - 1);
            finish.retry = Some((finished_at + delta(backoff), run.attempt + 1));
        }
        let wake = finish.retry.is_some() || next.is_some_and(|n| n <= self.clock.now());
        self.record(finish).await?;
        Ok(wake)
    }

    /// Group commit: the first run to finish while no commit is gathering
    /// becomes the committer; runs finishing meanwhile join its batch. One
    /// transaction then records them all. A commit that fails leaves its runs
    /// `running` until their leases expire and they are recorded abandoned.
    async fn record(&self, finish: RunFinish) -> StoreResult<()> {
        let committer = {
            let mut pending = self.finished.lock().unwrap_or_else(|e| e.into_inner());
            pending.push(finish);
            pending.len() == 1
        };
        if !committer {
            return Ok(());
        }
        tokio::task::yield_now().await;
        let batch = std::mem::take(&mut *self.finished.lock().unwrap_or_else(|e| e.into_inner()));
        self.store.finish_runs(&batch).await?;
        Ok(())
    }

    async fn renew_leases(&self, now: DateTime<Utc>) {
        let ids = self.running_ids();
        if ids.is_empty() {
            return;
        }
        let until = now + delta(self.config.lease);
        if let Err(e) = self.store.renew_leases(&ids, until).await {
            tracing::error!("renewing run leases failed: {e}");
        }
    }

    async fn housekeeping(&self, now: DateTime<Utc>) {
        match self.store.abandon_expired(now).await {
            Ok(runs) => {
                for run in runs {
                    tracing::warn!(run = %run.id, task = %run.task_name, "run abandoned: lease expired");
                }
            }
            Err(e) => tracing::error!("rescuing expired runs failed: {e}"),
        }
        if let Err(e) = self.expire_dead_deliveries(now).await {
            tracing::error!("expiring dead instances' broadcast deliveries failed: {e}");
        }
        let since = now - delta(self.config.keep_events);
        if let Err(e) = self.store.prune(self.config.keep_runs, since).await {
            tracing::error!("applying retention failed: {e}");
        }
    }

    /// Broadcast deliveries of instances that stopped heartbeating will
    /// never run: record them abandoned so the broadcast's overview is final.
    async fn expire_dead_deliveries(&self, now: DateTime<Utc>) -> StoreResult<()> {
        let cutoff = now - delta(self.config.liveness);
        let dead: Vec<String> = self
            .store
            .list_instances()
            .await?
            .into_iter()
            .filter(|i| i.heartbeat_at < cutoff)
            .map(|i| i.name)
            .collect();
        if !dead.is_empty() {
            let reason = format!(
                "its instance stopped heartbeating for over {}",
                humantime::format_duration(self.config.liveness)
            );
            self.store.expire_deliveries(&dead, now, &reason).await?;
        }
        Ok(())
    }

    /// Waits until every run this dispatcher started has been recorded.
    pub async fn wait_idle(&self) {
        let mut runs = self.runs.lock().await;
        while runs.join_next().await.is_some() {}
    }

    /// Collects finished run tasks so the set does not grow.
    async fn reap(&self) {
        let mut runs = self.runs.lock().await;
        while runs.try_join_next().is_some() {}
    }

    /// Cancels the runs in flight, gives them the grace period, and returns
    /// once every one is recorded. [`run`](Self::run) does this when told
    /// to stop; call it only for a dispatcher whose loop is not running.
    pub async fn shut_down(&self) {
        let tokens: Vec<CancelToken> = self.lock_running().values().cloned().collect();
        if !tokens.is_empty() {
            tracing::info!(
                "cancelling {} running task(s); they have {} to stop",
                tokens.len(),
                humantime::format_duration(self.config.grace)
            );
        }
        for t in tokens {
            t.cancel();
        }
        // The runtime stops a run hard once its grace period is over, so
        // every run ends and is recorded (as cancelled if it had to stop).
        let mut runs = self.runs.lock().await;
        while runs.join_next().await.is_some() {}
    }
}

/// What an execution comes to in the store's terms, whether it was a
/// configuration's run or a broadcast delivery, with the task's state after
/// it (`None`: leave the stored state as it is).
fn outcome_of(
    execution: Execution,
    implementation: &str,
    instance: &str,
    task_id: Option<i64>,
    run_id: &str,
) -> (
    RunOutcome,
    Option<std::collections::BTreeMap<String, String>>,
) {
    match execution {
        Execution::Missing => {
            let message = format!(
                "no component implements '{implementation}' on instance {instance}: \
                     add one to its plugins folder"
            );
            let outcome = RunOutcome {
                state: RunState::Failed,
                reason: None,
                events: vec![NewEvent {
                    task_id,
                    run_id: Some(run_id.to_owned()),
                    ..NewEvent::host(Level::Error, "COMPONENT_MISSING", message.clone())
                }],
                message,
                duration_us: 0,
                fuel: 0,
                peak_memory_bytes: 0,
                component_sha256: None,
                component_version: None,
            };
            (outcome, None)
        }
        Execution::Ran { report, version } => {
            let (state, reason) = match &report.outcome {
                Outcome::Succeeded { .. } => (RunState::Succeeded, None),
                Outcome::Failed { .. } => (RunState::Failed, None),
                Outcome::Stopped { reason, .. } => (RunState::Stopped, Some(*reason)),
                Outcome::Cancelled { .. } => (RunState::Cancelled, None),
            };
            let outcome = RunOutcome {
                state,
                reason,
                message: report.outcome.message().to_owned(),
                duration_us: report.duration.as_micros() as u64,
                fuel: report.fuel_consumed,
                peak_memory_bytes: report.peak_memory_bytes,
                component_sha256: Some(report.component_sha256.clone()),
                component_version: Some(version),
                events: report
                    .events
                    .iter()
                    .map(|e| NewEvent {
                        at: e.at.into(),
                        level: e.level,
                        source: e.source,
                        code: e.code.clone(),
                        message: e.message.clone(),
                        task_id,
                        run_id: Some(run_id.to_owned()),
                    })
                    .collect(),
            };
            (outcome, Some(report.state.clone()))
        }
    }
}

//! One run from claimed to recorded: the request its component sees (its
//! context, the identifier's settings, the configuration's state, the
//! `farm` import), the execution, and its end handed to the recorder.
//! Broadcast deliveries go the same way, without a configuration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use super::Dispatcher;
use super::claims::Start;
use super::recorder::{outcome_of, run_finish};
use crate::model::follow_up;
use crate::model::replay::{RecordedPayload, RunInputs};
use crate::model::{
    BroadcastSender, Level, NewEvent, OverlapPolicy, PendingDelivery, RunLimits, RunOutcome,
    RunState, TaskRecord, Trigger,
};
use crate::runtime::{CancelToken, Execution, Farm, RunContext, RunRequest, Timeline};
use crate::scheduler::farm::RunFarm;
use crate::scheduler::trace::{Phase, Recorded, RunTrace};
use crate::store::{DeliveryFinish, NewRun, RunFinish, StoreResult};

/// A run as claimed, and when its claim's transaction ran.
pub(super) struct Claimed {
    run: NewRun,
    claim: Phase,
}

/// How long before its instant a run claimed ahead reads its
/// configuration again: an edit committed later applies from the next run.
pub const REREAD_LEAD: std::time::Duration = std::time::Duration::from_millis(50);

impl Dispatcher {
    /// Starts a claimed run, at once or (a slot claimed ahead) at
    /// `start_at`; `state` is the configuration's stored state when the
    /// caller already read it.
    pub(super) async fn spawn_run(
        self: &Arc<Self>,
        task: TaskRecord,
        run: NewRun,
        next: Option<DateTime<Utc>>,
        state: Option<BTreeMap<String, String>>,
        start: Option<Start>,
        claim: Phase,
    ) {
        let run_id = run.id.clone();
        let this = self.clone();
        let work = move |cancel| async move {
            let id = run.id.clone();
            let claimed = Claimed { run, claim };
            let result = match start {
                Some(start) => {
                    this.start_on_time(task, claimed, next, cancel, state, start)
                        .await
                }
                None => this.execute(&task, claimed, next, cancel, state).await,
            };
            match result {
                Ok(again) => again,
                Err(e) => {
                    if !e.is_unavailable() {
                        tracing::error!(run_id = %id, "recording the run failed: {e}");
                    }
                    true
                }
            }
        };
        self.tracker.track(run_id, work).await;
    }

    /// A slot claimed ahead: waits for its instant, then runs it with the
    /// configuration as it is then (an edit made after the claim applies;
    /// a configuration disabled meanwhile does not run; if the store
    /// cannot be read, as claimed). Stopping the instance before the
    /// instant records the run cancelled, not started.
    async fn start_on_time(
        &self,
        task: TaskRecord,
        claimed: Claimed,
        next: Option<DateTime<Utc>>,
        cancel: CancelToken,
        state: Option<BTreeMap<String, String>>,
        start: Start,
    ) -> StoreResult<bool> {
        let at = start.at;
        // The configuration is read a little before the instant, so the
        // read (one for every run of the instant) is not part of the
        // lateness of any of them.
        if !self
            .wait_until(at - super::delta(REREAD_LEAD), at, &task, &claimed, &cancel)
            .await?
        {
            return Ok(false);
        }
        let task = match start.reread.current(&*self.store, task.id).await {
            Some(Some(task)) => task,
            // Deleted meanwhile: its runs went with it.
            Some(None) => return Ok(false),
            // The store cannot say (it is unavailable, and its watcher says
            // so): the configuration as claimed is the latest known, and
            // the run's end is held until the store is back.
            None => task,
        };
        if !self.wait_until(at, at, &task, &claimed, &cancel).await? {
            return Ok(false);
        }
        if !task.config.enabled {
            let message =
                "not run: the configuration was disabled after this slot was claimed".to_owned();
            self.record_not_run(&task, &claimed, RunState::Skipped, message)
                .await?;
            return Ok(false);
        }
        self.execute(&task, claimed, next, cancel, state).await
    }

    /// Sleeps until `until` by the dispatcher's clock. If the instance is
    /// stopped first, records the run (of the slot at `slot`) cancelled,
    /// not started, and returns false.
    async fn wait_until(
        &self,
        until: DateTime<Utc>,
        slot: DateTime<Utc>,
        task: &TaskRecord,
        claimed: &Claimed,
        cancel: &CancelToken,
    ) -> StoreResult<bool> {
        let run = &claimed.run;
        let wait = (until - self.clock.now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(true),
            _ = cancel.cancelled() => {
                let message = match self.tracker.stopped_by(&run.id) {
                    Some(by) => format!("not started: stopped by {by} before the slot at {slot}"),
                    None => format!(
                        "not started: instance {} stopped before the slot at {slot}",
                        self.config.instance.name
                    ),
                };
                self.record_not_run(task, claimed, RunState::Cancelled, message).await?;
                Ok(false)
            }
        }
    }

    /// Records a claimed run that never reached its component.
    async fn record_not_run(
        &self,
        task: &TaskRecord,
        claimed: &Claimed,
        state: RunState,
        message: String,
    ) -> StoreResult<()> {
        let run = &claimed.run;
        let event = NewEvent {
            task_id: Some(task.id),
            run_id: Some(run.id.clone()),
            ..NewEvent::host(Level::Info, "RUN_NOT_STARTED", message)
        };
        let outcome = RunOutcome::not_run(state, event);
        let finish = RunFinish::of(&run.id, task.id, self.clock.now(), outcome, None);
        let trace = self.trace_of(task, claimed, Timeline::default(), &finish);
        self.recorder.record(&*self.store, finish, trace).await
    }

    /// The trace of a run about to be recorded, if traces are on.
    fn trace_of(
        &self,
        task: &TaskRecord,
        claimed: &Claimed,
        timeline: Timeline,
        finish: &RunFinish,
    ) -> Option<RunTrace> {
        if !self.recorder.traces() {
            return None;
        }
        let run = &claimed.run;
        let lateness = run
            .scheduled_for
            .zip(finish.started_at)
            .map(|(slot, started)| super::to_std(started - slot));
        Some(RunTrace {
            run_id: run.id.clone(),
            configuration: task.config.name.clone(),
            identifier: task.config.implementation.clone(),
            trigger: run.trigger,
            attempt: run.attempt,
            instance: self.config.instance.name.clone(),
            scheduled_for: run.scheduled_for,
            lateness,
            claim: claimed.claim,
            timeline,
            record: Phase::since(SystemTime::now()),
            recorded: Recorded::Committed,
            outcome: finish.outcome.clone(),
        })
    }

    /// Runs and records one run; true if the dispatcher should look again.
    async fn execute(
        &self,
        task: &TaskRecord,
        claimed: Claimed,
        next: Option<DateTime<Utc>>,
        cancel: CancelToken,
        state: Option<BTreeMap<String, String>>,
    ) -> StoreResult<bool> {
        let state = match state {
            Some(state) => state,
            None => self.store.load_state(task.id).await?,
        };
        let run = &claimed.run;
        let request = self.run_request(task, run, next, state, cancel);
        let mut inputs = run_inputs(&task.config.implementation, &request);
        let implementation = &task.config.implementation;
        let started_at = self.clock.now();
        let execution = self.executor.execute(implementation, request).await;
        let (missing, timeline) = match &execution {
            Execution::Missing => (true, Timeline::default()),
            Execution::Ran { report, .. } => (false, report.timeline),
        };
        let instance = &self.config.instance.name;
        let now = self.clock.now();
        let mut finish = run_finish(task, run, execution, instance, now);
        if missing {
            self.say_who_lacks(&mut finish, implementation).await;
        }
        finish.started_at = Some(started_at);
        inputs.state_after = finish
            .task_state
            .as_ref()
            .filter(|after| **after != inputs.state)
            .cloned();
        finish.inputs = Some(inputs.to_stored());
        if let Some(by) = self.tracker.stopped_by(&run.id)
            && finish.outcome.state == RunState::Cancelled
        {
            finish.outcome.message = format!("stopped by {by}: {}", finish.outcome.message);
            finish.outcome.events.push(NewEvent {
                task_id: Some(task.id),
                run_id: Some(run.id.clone()),
                ..NewEvent::host(Level::Warning, "RUN_STOPPED", format!("stopped by {by}"))
            });
        }
        let ended = follow_up::EndedRun {
            configuration: task.config.name.clone(),
            identifier: implementation.clone(),
            run_id: run.id.clone(),
            outcome: finish.outcome.state,
            message: finish.outcome.message.clone(),
            trigger: run.trigger,
            attempt: run.attempt,
            scheduled_for: run.scheduled_for,
            started_at: Some(started_at),
            finished_at: now,
            instance: Some(instance.clone()),
        };
        finish.follow_ups = ended.follow_ups(&task.config, finish.retry.is_some());
        // The next slot, if it is within the look-ahead, can be claimed now;
        // a slot waiting for this run to end (policies queue and replace)
        // can start.
        let horizon = now + super::delta(self.config.look_ahead);
        // So can a backfill's next slot.
        let waiting = matches!(
            task.config.on_overlap,
            OverlapPolicy::Queue | OverlapPolicy::Replace
        ) || run.trigger == Trigger::Backfill;
        let again = finish.retry.is_some() || next.is_some_and(|n| n <= horizon) || waiting;
        let trace = self.trace_of(task, &claimed, timeline, &finish);
        self.recorder.record(&*self.store, finish, trace).await?;
        Ok(again)
    }

    /// A run no live instance could run (it came here because none has the
    /// component): its message names the instances that lack it, so one
    /// record says what the farm is missing.
    async fn say_who_lacks(&self, finish: &mut RunFinish, implementation: &str) {
        let Ok(fleet) = self.fleet().await else {
            return;
        };
        let lacking = fleet.lacking(implementation);
        if lacking.len() < 2 {
            return;
        }
        let message = format!(
            "no live instance has a component implementing '{implementation}' (instances {} \
             lack it): add one to their plugins folders",
            lacking.join(", ")
        );
        for event in &mut finish.outcome.events {
            if event.code == "COMPONENT_MISSING" {
                event.message = message.clone();
            }
        }
        finish.outcome.message = message;
    }

    fn run_request(
        &self,
        task: &TaskRecord,
        run: &NewRun,
        next: Option<DateTime<Utc>>,
        state: BTreeMap<String, String>,
        cancel: CancelToken,
    ) -> RunRequest {
        let config = &task.config;
        let instance = &self.config.instance;
        let created_by = format!("run {} of '{}' on {}", run.id, config.name, instance.name);
        let (settings, secrets) = self.settings_of(&config.implementation);
        RunRequest {
            context: RunContext {
                configuration_name: config.name.clone(),
                run_id: run.id.clone(),
                trigger: run.trigger,
                attempt: run.attempt,
                scheduled_for: run.scheduled_for.map(Into::into),
                last_run: task.last_run_at.map(Into::into),
                next_run: next.map(Into::into),
                run_count: task.run_count,
                properties: config.properties.clone(),
            },
            payload: run.payload.as_deref().map(follow_up::payload_of),
            limits: config.limits,
            grants: config.grants.clone(),
            config: settings,
            secrets,
            state,
            instance: instance.clone(),
            farm: Some(self.farm(
                created_by,
                false,
                BroadcastSender {
                    limits: config.limits,
                    roles: config.roles.clone(),
                },
            )),
            cancel,
            grace: self.config.grace,
        }
    }

    /// Runs this instance's claimed delivery of a broadcast.
    pub(super) async fn spawn_delivery(
        self: &Arc<Self>,
        delivery: PendingDelivery,
        run_id: String,
    ) {
        let this = self.clone();
        let id = run_id.clone();
        let work = move |cancel| async move {
            if let Err(e) = this.deliver(&delivery, &id, cancel).await
                && !e.is_unavailable()
            {
                tracing::error!(
                    broadcast = %delivery.broadcast_id,
                    "recording a broadcast run failed: {e}"
                );
            }
            // Nothing waits on a broadcast run.
            false
        };
        self.tracker.track(run_id, work).await;
    }

    async fn deliver(
        &self,
        delivery: &PendingDelivery,
        run_id: &str,
        cancel: CancelToken,
    ) -> StoreResult<()> {
        let identifier = &delivery.identifier;
        let instance = &self.config.instance.name;
        let missing = delivery
            .sender
            .as_ref()
            .map(|s| s.missing_roles(&self.config.instance.roles))
            .unwrap_or_default();
        let outcome = if missing.is_empty() {
            let request = self.delivery_request(delivery, run_id, cancel);
            let execution = self.executor.execute(identifier, request).await;
            outcome_of(execution, identifier, instance, None, run_id).0
        } else {
            // Queued only for instances with the sender's roles; one that
            // lacks them (restarted under the same name) does not run it.
            let message = format!(
                "not run: instance {instance} lacks the role {} of the run that broadcast it",
                missing.join(" and ")
            );
            RunOutcome::not_run(
                RunState::Skipped,
                NewEvent {
                    run_id: Some(run_id.to_owned()),
                    ..NewEvent::host(Level::Warning, "BROADCAST_SKIPPED", message)
                },
            )
        };
        self.store
            .finish_delivery(&DeliveryFinish {
                broadcast_id: delivery.broadcast_id.clone(),
                instance: instance.clone(),
                finished_at: self.clock.now(),
                outcome,
            })
            .await?;
        Ok(())
    }

    fn delivery_request(
        &self,
        delivery: &PendingDelivery,
        run_id: &str,
        cancel: CancelToken,
    ) -> RunRequest {
        let name = format!("broadcast {}", delivery.broadcast_id);
        let (config, secrets) = self.settings_of(&delivery.identifier);
        RunRequest {
            context: RunContext {
                configuration_name: name.clone(),
                run_id: run_id.to_owned(),
                trigger: Trigger::Broadcast,
                ..Default::default()
            },
            payload: Some(delivery.payload.clone()),
            // A broadcast has no configuration and no grants. A run's
            // broadcast runs with the run's limits; an operator's with the
            // defaults.
            limits: delivery
                .sender
                .as_ref()
                .map_or_else(RunLimits::default, |s| s.limits),
            grants: Default::default(),
            config,
            secrets,
            state: Default::default(),
            instance: self.config.instance.clone(),
            farm: Some(self.farm(
                name,
                true,
                delivery.sender.clone().unwrap_or(BroadcastSender {
                    limits: RunLimits::default(),
                    roles: Vec::new(),
                }),
            )),
            cancel,
            grace: self.config.grace,
        }
    }

    /// The `farm` import for a run on this instance.
    fn farm(
        &self,
        created_by: String,
        from_broadcast: bool,
        sender: BroadcastSender,
    ) -> Arc<dyn Farm> {
        Arc::new(RunFarm {
            store: self.store.clone(),
            wake: self.wake.clone(),
            created_by,
            from_broadcast,
            sender,
            spent: Default::default(),
        })
    }
}

/// What a run of `identifier` is given, as its record keeps it for replay:
/// the request it runs with, less the values of secret settings (a setting
/// whose value is a secret's is kept by name only).
fn run_inputs(identifier: &str, request: &RunRequest) -> RunInputs {
    let c = &request.context;
    let at = |t: Option<SystemTime>| t.map(DateTime::<Utc>::from);
    let (secret, settings): (Vec<_>, Vec<_>) = request
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(_, v)| request.secrets.contains(v));
    RunInputs {
        configuration: c.configuration_name.clone(),
        identifier: identifier.to_owned(),
        trigger: c.trigger,
        attempt: c.attempt,
        scheduled_for: at(c.scheduled_for),
        last_run: at(c.last_run),
        next_run: at(c.next_run),
        run_count: c.run_count,
        properties: c.properties.clone(),
        payload: request.payload.as_ref().map(RecordedPayload::of),
        settings: settings.into_iter().collect(),
        secret_settings: secret.into_iter().map(|(k, _)| k).collect(),
        state: request.state.clone(),
        state_after: None,
        instance: request.instance.name.clone(),
        roles: request.instance.roles.clone(),
        limits: request.limits,
        grants: request.grants.clone(),
    }
}

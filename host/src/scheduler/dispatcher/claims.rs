//! What one pass claims, and manual runs asked of this instance. Each
//! claim is a conditional update in the store, so several dispatchers on
//! one database never start the same work twice; a pass claims its due
//! slots in chunks, one transaction each (their size is the store's:
//! `RunLedger::claims_per_transaction`). A burst's first runs start when
//! the first chunk commits, not the last, and instances sharing a database
//! each claim chunks of it instead of one taking it all.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use super::{Dispatcher, ManualStart, delta};
use crate::model::{OverlapPolicy, PendingDelivery, RunRecord, TaskRecord, Trigger};
use crate::scheduler::plan::{SlotAction, plan_ahead};
use crate::scheduler::trace::Phase;
use crate::store::{Claim, NewRun, OnOverlap, SlotClaim, StoreError, StoreResult};

/// Due slots planned in a pass, each with the configuration it belongs to.
type Planned = Vec<(SlotClaim, TaskRecord)>;

/// Whether a queued manual run waits instead of being tried now: it was
/// asked for before the configuration's running run started (that run
/// was a slot claimed ahead), so it runs after that one rather than being
/// refused for overlapping it. A claimed run's start is the
/// configuration's `last_run_at` until it ends.
fn waits_for_claimed_slot(task: &TaskRecord, queued: &RunRecord) -> bool {
    match (&task.running_run_id, task.last_run_at, queued.queued_at) {
        (Some(_), Some(started), Some(asked)) => started >= asked,
        _ => false,
    }
}

/// When a run claimed ahead starts, and the read of the configurations
/// claimed for that instant, which it shares.
pub(super) struct Start {
    pub at: DateTime<Utc>,
    pub reread: Arc<Reread>,
}

/// The configurations of the runs claimed for one instant, read once when
/// the first of them needs them: one read per instant instead of one per
/// run, which at a thousand runs an instant is what made them late.
pub(super) struct Reread {
    ids: Vec<i64>,
    read: tokio::sync::OnceCell<Option<HashMap<i64, TaskRecord>>>,
}

impl Reread {
    fn new(ids: Vec<i64>) -> Self {
        Reread {
            ids,
            read: tokio::sync::OnceCell::new(),
        }
    }

    /// The configuration as it is now: `Some(None)` if it was deleted,
    /// `None` if the store could not say.
    pub(super) async fn current(
        &self,
        store: &dyn crate::store::Store,
        id: i64,
    ) -> Option<Option<TaskRecord>> {
        let read = self
            .read
            .get_or_init(|| async {
                let tasks = store.get_tasks(&self.ids).await.ok()?;
                Some(tasks.into_iter().map(|t| (t.id, t)).collect())
            })
            .await;
        read.as_ref().map(|tasks| tasks.get(&id).cloned())
    }
}

/// What a due slot does if the configuration has no room for another run:
/// what its overlap policy says, but a catch-up slot (`catch_up`) waits
/// for the running one to finish, and so does a slot claimed ahead, whose
/// overlap is judged when it is due.
fn on_overlap(task: &TaskRecord, wait: bool) -> OnOverlap {
    match task.config.on_overlap {
        _ if wait => OnOverlap::Wait,
        OverlapPolicy::Skip | OverlapPolicy::Allow => OnOverlap::Skip,
        OverlapPolicy::Queue => OnOverlap::Queue,
        OverlapPolicy::Replace => OnOverlap::Replace,
    }
}

/// When a claimed slot starts: at once if it is due, else at its instant.
fn start_of(slot: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (slot > now).then_some(slot)
}

/// Most broadcast deliveries one pass reads (with their payloads) and
/// starts: a backlog is worked through a page at a time.
pub const DELIVERIES_PER_PASS: u32 = 64;

impl Dispatcher {
    /// One pass: backfills' next slots queued, queued runs started, this
    /// instance's broadcast deliveries, due retries and slots.
    pub async fn tick(self: &Arc<Self>, now: DateTime<Utc>) -> StoreResult<()> {
        // One small read per pass keeps `config set` live without a read per run.
        self.refresh_settings(self.store.list_settings().await?);
        self.honour_stop_requests().await?;
        self.store.top_up_backfills(now).await?;
        for queued in self.store.queued_runs().await? {
            self.start_queued(queued, now).await?;
        }
        let instance = &self.config.instance.name;
        let page = self
            .store
            .pending_deliveries(instance, DELIVERIES_PER_PASS)
            .await?;
        if page.len() == DELIVERIES_PER_PASS as usize {
            // More may wait: the next pass reads the next page.
            self.wake.notify_one();
        }
        for delivery in page {
            self.start_delivery(delivery, now).await?;
        }
        let planned = self.plan_due(now).await?;
        self.claim_planned(planned, now).await
    }

    /// Starts due retries and records skipped slots as it goes; returns the
    /// slots to claim, those due within the look-ahead included.
    async fn plan_due(self: &Arc<Self>, now: DateTime<Utc>) -> StoreResult<Planned> {
        let mut planned = Planned::new();
        let horizon = now + delta(self.config.look_ahead);
        for task in self.store.due_tasks(horizon).await? {
            // Another instance with the roles claims it; slots that pass
            // while none is live are handled by the misfire policy then.
            // So does one whose folder serves the component this one lacks.
            if !self.may_run(&task) || self.leave_to_others(&task).await? {
                continue;
            }
            if task.retry_at.is_some_and(|r| r <= now) && task.has_room() {
                self.start_retry(task, now).await?;
                continue;
            }
            match plan_ahead(&task, now, horizon) {
                Some(SlotAction::Run {
                    slot,
                    next,
                    catch_up,
                }) => {
                    let mut run = self.slot_run(&task, slot, String::new(), now);
                    // Until the finish records the real start, the planned one.
                    run.started_at = slot.max(now);
                    let claim = SlotClaim {
                        slot,
                        next,
                        run,
                        on_overlap: on_overlap(&task, catch_up || slot > now),
                    };
                    planned.push((claim, task));
                }
                Some(SlotAction::Skip { slot, next, reason }) => {
                    let run = self.slot_run(&task, slot, reason, now);
                    self.store.skip_slot(task.id, slot, next, &run).await?;
                }
                None => {}
            }
        }
        Ok(planned)
    }

    /// Claims the planned slots, earliest first, a chunk per transaction,
    /// and starts the runs won. A claim lost (another instance took the
    /// slot or holds its row) makes the dispatcher look again shortly.
    async fn claim_planned(
        self: &Arc<Self>,
        mut planned: Planned,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        // Within one instant, an order of this pass's own: instances
        // claiming the same burst then start on different parts of it.
        let order = std::collections::hash_map::RandomState::new();
        planned.sort_by_cached_key(|(claim, _)| (claim.slot, order.hash_one(claim.run.task_id)));
        while !planned.is_empty() {
            let chunk = self
                .config
                .claims_per_transaction
                .unwrap_or_else(|| self.store.claims_per_transaction())
                .max(1);
            let rest = planned.split_off(planned.len().min(chunk));
            let chunk = std::mem::replace(&mut planned, rest);
            if self.claim_chunk(chunk, now).await? {
                self.look_again_soon();
            }
        }
        Ok(())
    }

    /// Claims one chunk in one transaction and starts the runs won: those
    /// due at once, those claimed ahead at their instant. True if a claim
    /// was lost.
    async fn claim_chunk(
        self: &Arc<Self>,
        chunk: Planned,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (claims, tasks): (Vec<SlotClaim>, Vec<TaskRecord>) = chunk.into_iter().unzip();
        let claim_started = SystemTime::now();
        let results = self.store.claim_slots(&claims).await?;
        let claim = Phase::since(claim_started);
        let lost = results.contains(&Claim::Lost);
        let won: Vec<i64> = claims
            .iter()
            .zip(&results)
            .filter(|(_, r)| **r == Claim::Claimed)
            .map(|(c, _)| c.run.task_id)
            .collect();
        // One read for the state of every claimed run, not one per run.
        let mut states = self.store.load_states(&won).await?;
        // The runs claimed ahead for one instant re-read their
        // configurations together, once, when it comes.
        let mut instants: HashMap<DateTime<Utc>, Vec<i64>> = HashMap::new();
        for ((claim, task), result) in claims.iter().zip(&tasks).zip(&results) {
            if *result == Claim::Claimed && start_of(claim.slot, now).is_some() {
                instants.entry(claim.slot).or_default().push(task.id);
            }
        }
        let instants: HashMap<DateTime<Utc>, Arc<Reread>> = instants
            .into_iter()
            .map(|(at, ids)| (at, Arc::new(Reread::new(ids))))
            .collect();
        for ((slot, task), result) in claims.into_iter().zip(tasks).zip(results) {
            if result == Claim::Claimed {
                let state = states.remove(&task.id);
                let start = start_of(slot.slot, now).map(|at| Start {
                    at,
                    reread: instants[&at].clone(),
                });
                self.spawn_run(task, slot.run, slot.next, state, start, claim)
                    .await;
            }
        }
        Ok(lost)
    }

    /// Stops the runs in flight here that an operator asked to stop: the
    /// cancellation flag now, the hard stop after the grace period (the
    /// runtime's). Nothing in flight, nothing to read.
    async fn honour_stop_requests(&self) -> StoreResult<()> {
        if self.tracker.is_idle() {
            return Ok(());
        }
        let instance = &self.config.instance.name;
        for (run_id, by) in self.store.stop_requests(instance).await? {
            if self.tracker.stop(&run_id, &by) {
                tracing::info!("run {run_id}: stopping, as {by} asked");
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
            payload: None,
        }
    }

    /// The run of a scheduled slot; `message` says why it is skipped, if it is.
    fn slot_run(
        &self,
        task: &TaskRecord,
        slot: DateTime<Utc>,
        message: String,
        now: DateTime<Utc>,
    ) -> NewRun {
        NewRun {
            scheduled_for: Some(slot),
            message,
            ..self.new_run(task, Trigger::Schedule, now)
        }
    }

    async fn start_retry(
        self: &Arc<Self>,
        task: TaskRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let Some(retry_at) = task.retry_at else {
            return Ok(());
        };
        let run = NewRun {
            attempt: task.retry_attempt,
            ..self.new_run(&task, Trigger::Retry, now)
        };
        let claim_started = SystemTime::now();
        let claim = self.store.claim_retry(task.id, retry_at, &run).await?;
        self.start_if_won(&claim, task, run, Phase::since(claim_started))
            .await;
        Ok(())
    }

    /// Starts a run that is not a scheduled slot's, if its claim was won.
    async fn start_if_won(
        self: &Arc<Self>,
        claim: &Claim,
        task: TaskRecord,
        run: NewRun,
        phase: Phase,
    ) {
        if *claim == Claim::Claimed {
            let next = task.next_run_at;
            self.spawn_run(task, run, next, None, None, phase).await;
        }
    }

    async fn start_queued(
        self: &Arc<Self>,
        queued: RunRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let task = match self.store.get_task_by_id(queued.task_id).await {
            Ok(task) => task,
            // Deleted meanwhile: nothing to run; its queued runs went with it.
            Err(StoreError::TaskNotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        // A run on start is for the instance that started alone, which
        // runs it (or fails saying what it lacks) rather than hand it on.
        if queued.trigger == Trigger::Startup {
            if queued.instance.as_deref() != Some(self.config.instance.name.as_str()) {
                return Ok(());
            }
        } else if !self.may_run(&task) || self.leave_to_others(&task).await? {
            return Ok(());
        }
        if waits_for_claimed_slot(&task, &queued) {
            return Ok(());
        }
        let lease_until = now + delta(self.config.lease);
        let claim_started = SystemTime::now();
        let claim = self
            .store
            .start_queued_run(&queued.id, &self.config.instance.name, now, lease_until)
            .await?;
        // A manual run, a follow-up (with what it is told), or a slot that
        // waited its turn (overlap policies `queue` and `replace`).
        let run = NewRun {
            id: queued.id,
            scheduled_for: queued.scheduled_for,
            payload: queued.payload,
            ..self.new_run(&task, queued.trigger, now)
        };
        self.start_if_won(&claim, task, run, Phase::since(claim_started))
            .await;
        Ok(())
    }

    /// Claims this instance's delivery of a broadcast and runs it.
    async fn start_delivery(
        self: &Arc<Self>,
        delivery: PendingDelivery,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let run_id = uuid::Uuid::now_v7().to_string();
        let instance = &self.config.instance.name;
        if self
            .store
            .start_delivery(&delivery.broadcast_id, instance, &run_id, now)
            .await?
        {
            self.spawn_delivery(delivery, run_id).await;
        }
        Ok(())
    }

    /// Starts a manual run now on this instance (the one that got the
    /// request), or, if it lacks a role the configuration needs, queues it
    /// for an instance that has them. If the configuration's next slot is
    /// claimed but not started yet, the manual run is queued behind it
    /// rather than refused: nothing runs yet, and runs never overlap.
    pub async fn run_now(self: &Arc<Self>, task_name: &str) -> StoreResult<(String, ManualStart)> {
        let task = self.store.get_task(task_name).await?;
        if let (Some(run_id), Some(starts_at)) = (&task.running_run_id, task.last_run_at)
            && starts_at > self.clock.now()
        {
            let requested_by = format!("instance {}", self.config.instance.name);
            let id = self.store.queue_manual_run(task.id, &requested_by).await?;
            let start = ManualStart::Behind {
                run_id: run_id.clone(),
                starts_at,
            };
            return Ok((id, start));
        }
        let missing: Vec<String> = task
            .config
            .missing_roles(&self.config.instance.roles)
            .into_iter()
            .map(str::to_owned)
            .collect();
        // Asked of an instance without the component, while another has it.
        if missing.is_empty() && self.leave_to_others(&task).await? {
            let requested_by = format!("instance {}", self.config.instance.name);
            let id = self.store.queue_manual_run(task.id, &requested_by).await?;
            let fleet = self.fleet().await?;
            let able = fleet.able(&task, &self.config.instance.name);
            let start = ManualStart::Elsewhere {
                instances: able.into_iter().map(str::to_owned).collect(),
            };
            return Ok((id, start));
        }
        if !missing.is_empty() {
            let requested_by = format!("instance {}", self.config.instance.name);
            let id = self.store.queue_manual_run(task.id, &requested_by).await?;
            let start = ManualStart::Queued {
                missing_roles: missing,
            };
            return Ok((id, start));
        }
        let run = self.new_run(&task, Trigger::Manual, self.clock.now());
        let claim_started = SystemTime::now();
        let claim = self.store.claim_manual(task.id, &run).await?;
        let id = run.id.clone();
        self.start_if_won(&claim, task, run, Phase::since(claim_started))
            .await;
        Ok((id, ManualStart::Here(claim)))
    }
}

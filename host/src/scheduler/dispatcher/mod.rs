//! The event-driven dispatcher: sleeps until the earliest due time (or a
//! change), claims due work in the store, hands runs to the [`Executor`],
//! keeps their leases alive, and records how they end.
//!
//! This file is the loop and the dispatcher's public face; each other part
//! has one job: `claims` decides and claims what a pass starts, `runs`
//! takes one run from claimed to recorded, `tracker` knows the runs in
//! flight (cancelling, awaiting, lease renewal), `recorder` turns their
//! ends into records and commits them in groups, `held` keeps those the
//! store could not take while it was unavailable, `housekeeping` does the
//! periodic chores.

mod claims;
mod held;
mod housekeeping;
mod inventory;
mod recorder;
mod runs;
#[cfg(test)]
mod tests;
mod tracker;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use tokio::sync::Notify;

use crate::model::{Clock, InstanceInfo};
use crate::runtime::Executor;
use crate::scheduler::trace::Tracing;
use crate::store::{Claim, Settings, Store};
use housekeeping::Chores;
use recorder::Recorder;
use tracker::Tracker;

/// What asking this instance for a manual run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManualStart {
    /// Tried here; the claim says whether it runs.
    Here(Claim),
    /// This instance lacks roles the configuration needs, so the run was
    /// queued for an instance that has them.
    Queued { missing_roles: Vec<String> },
    /// This instance's plugins folder lacks the component, so the run was
    /// queued for one of `instances`, whose folders serve it.
    Elsewhere { instances: Vec<String> },
    /// The configuration's next slot is claimed and starts at `starts_at`:
    /// the manual run is queued and starts once that run has ended.
    Behind {
        run_id: String,
        starts_at: DateTime<Utc>,
    },
}

/// How far ahead slots are claimed by default: long enough for a claim of
/// thousands of slots to be committed before their instant, short enough
/// that a claimed run rarely stands in a listing before it starts.
pub const LOOK_AHEAD: Duration = Duration::from_millis(250);

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
    /// Slots due this soon are claimed ahead and started at their instant,
    /// so the claim's transaction is not part of a run's lateness.
    pub look_ahead: Duration,
    /// Most slots one claim transaction takes; `None` leaves it to the
    /// store ([`RunLedger::claims_per_transaction`](crate::store::RunLedger::claims_per_transaction)).
    pub claims_per_transaction: Option<usize>,
    /// Where recorded runs go as traces; off by default.
    pub tracing: Tracing,
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
            look_ahead: LOOK_AHEAD,
            claims_per_transaction: None,
            tracing: Tracing::default(),
        }
    }
}

/// Claims due work and runs it. Share as `Arc`.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    executor: Arc<dyn Executor>,
    clock: Arc<dyn Clock>,
    config: DispatcherConfig,
    /// Makes the loop look again; shared with what frees or creates work
    /// (a run's end, a task's broadcast), which need not know the dispatcher.
    wake: Arc<Notify>,
    tracker: Tracker,
    recorder: Recorder,
    /// Identifier settings as of the latest pass; runs read them through
    /// the `config` import.
    settings: Mutex<Arc<Settings>>,
    /// A claim was lost in the latest pass: look again shortly, in case
    /// the slot was only held by another instance that then let it go.
    recheck: AtomicBool,
    /// What the other live instances serve, when this one lacks a component.
    inventory: inventory::Inventory,
}

/// How soon a pass that lost a claim looks again.
const RECHECK_AFTER: Duration = Duration::from_millis(10);

/// Why the loop stopped sleeping.
#[derive(PartialEq, Eq)]
enum Woken {
    Look,
    Stop,
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
        let wake = Arc::new(Notify::new());
        Arc::new(Dispatcher {
            recorder: Recorder::new(config.tracing.0.clone()),
            store,
            executor,
            clock,
            config,
            tracker: Tracker::new(wake.clone()),
            wake,
            settings: Mutex::new(Arc::new(Settings::new())),
            recheck: AtomicBool::new(false),
            inventory: inventory::Inventory::default(),
        })
    }

    /// Makes the loop look again now (a configuration changed in-process).
    /// Queues this instance's runs on start (configurations with
    /// `on_start`); the first pass starts them. A store that cannot take
    /// them now is reported by its watcher, and the instance goes on.
    async fn queue_startup_runs(&self) {
        let instance = &self.config.instance;
        let now = self.clock.now();
        match self
            .store
            .queue_startup_runs(&instance.name, &instance.roles, now)
            .await
        {
            Ok(queued) if !queued.is_empty() => {
                tracing::info!("{} run(s) on start queued", queued.len());
            }
            Ok(_) => {}
            Err(e) if e.is_unavailable() => {}
            Err(e) => tracing::error!("queueing the runs on start failed: {e}"),
        }
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn look_again_soon(&self) {
        self.recheck.store(true, Ordering::Relaxed);
    }

    /// Ids of the runs this dispatcher has in flight.
    pub fn running_ids(&self) -> Vec<String> {
        self.tracker.running_ids()
    }

    /// Runs until `shutdown` resolves; then cancels runs in flight, gives
    /// them the grace period, and returns once every run is recorded.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.queue_startup_runs().await;
        let mut last_token = None;
        let mut chores = Chores::new(self.clock.now());
        loop {
            let now = self.clock.now();
            let chores_due = chores.run_due(&self, now).await;
            let wake_at = self.pass(now).await.min(chores_due);
            if self
                .sleep(wake_at, shutdown.as_mut(), &mut last_token)
                .await
                == Woken::Stop
            {
                self.shut_down().await;
                return;
            }
        }
    }

    /// One pass at `now`; returns when the next one is due, at the latest.
    async fn pass(self: &Arc<Self>, now: DateTime<Utc>) -> DateTime<Utc> {
        let pass = self.tick(now).await;
        self.tracker.reap().await;
        let poll_until = now + delta(self.config.poll);
        let earliest = match pass {
            Ok(()) => self.store.earliest_due().await.ok().flatten(),
            Err(e) => {
                // Back off: a failing store must not turn into a busy loop.
                // An unavailable store is reported by its watcher, at a
                // bounded rate; this loop would report it every pass.
                if !e.is_unavailable() {
                    tracing::error!("dispatcher pass failed: {e}");
                }
                None
            }
        };
        // A slot beyond the look-ahead is claimed when it comes within it.
        // One within it that this pass did not claim waits on a running run
        // (or a retry): that run's end wakes us, else its instant does. A
        // time already past is work waiting on a running run (catch-up,
        // retry); only poll meanwhile.
        let look_ahead = delta(self.config.look_ahead);
        let wake_at = match earliest {
            Some(e) if e - look_ahead > now => (e - look_ahead).min(poll_until),
            Some(e) if e > now => e.min(poll_until),
            _ => poll_until,
        };
        match self.recheck.swap(false, Ordering::Relaxed) {
            true => wake_at.min(now + delta(RECHECK_AFTER)),
            false => wake_at,
        }
    }

    /// Sleeps until the earliest of: `wake_at`, a local wake-up, a change
    /// by another process (seen through the store's change token), shutdown.
    async fn sleep(
        &self,
        wake_at: DateTime<Utc>,
        mut shutdown: Pin<&mut impl std::future::Future<Output = ()>>,
        last_token: &mut Option<u64>,
    ) -> Woken {
        loop {
            let now = self.clock.now();
            if now >= wake_at {
                // No sleep this time (the pass outlasted the poll interval,
                // as it does under sustained load), so the select below is
                // skipped: look for a stop request here, or a busy instance
                // would never stop.
                return match shutdown.as_mut().now_or_never() {
                    Some(()) => Woken::Stop,
                    None => Woken::Look,
                };
            }
            tokio::select! {
                _ = tokio::time::sleep(to_std(wake_at - now)) => {}
                _ = self.wake.notified() => return Woken::Look,
                _ = shutdown.as_mut() => return Woken::Stop,
            }
            let token = self.store.change_token().await.ok();
            if token != *last_token {
                *last_token = token;
                return Woken::Look;
            }
        }
    }

    /// Waits until every run this dispatcher started has been recorded.
    pub async fn wait_idle(&self) {
        self.tracker.wait_idle().await;
    }

    /// Cancels the runs in flight, gives them the grace period, and returns
    /// once every one is recorded. [`run`](Self::run) does this when told
    /// to stop; call it only for a dispatcher whose loop is not running.
    pub async fn shut_down(&self) {
        let cancelled = self.tracker.cancel_all();
        if cancelled > 0 {
            tracing::info!(
                "cancelling {cancelled} running task(s); they have {} to stop",
                humantime::format_duration(self.config.grace)
            );
        }
        // The runtime stops a run hard once its grace period is over, so
        // every run ends and is recorded (as cancelled if it had to stop).
        self.tracker.wait_idle().await;
        self.recorder.held.record(&*self.store).await;
        let unrecorded = self.recorder.held.len();
        if unrecorded > 0 {
            tracing::error!(
                "{unrecorded} finished runs could not be recorded before stopping: the store                  is unavailable; they are recorded abandoned when their leases lapse"
            );
        }
    }

    fn refresh_settings(&self, settings: Settings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }

    /// What a run of `identifier` reads through its `config` import, and
    /// the values of its secret settings, which the run's events and
    /// result are redacted of.
    fn settings_of(&self, identifier: &str) -> (BTreeMap<String, String>, Vec<String>) {
        let settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        let Some(of) = settings.get(identifier) else {
            return Default::default();
        };
        let config = of
            .iter()
            .map(|(k, s)| (k.clone(), s.value.clone()))
            .collect();
        let secrets = of
            .values()
            .filter(|s| s.secret)
            .map(|s| s.value.clone())
            .collect();
        (config, secrets)
    }
}

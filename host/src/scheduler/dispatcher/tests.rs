//! The dispatcher against a real (in-memory) store with an injected clock
//! and a scripted executor: every scheduling rule checked at exact instants.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::Semaphore;

use super::{Dispatcher, DispatcherConfig, ManualStart};
use crate::model::{
    Clock, EventSource, Level, MisfirePolicy, OverlapPolicy, RunRecord, RunState, Schedule,
    TaskConfig, Trigger,
};
use crate::runtime::{Availability, Event, Execution, Executor, Outcome, RunReport, RunRequest};
use crate::store::{Configurations, RunFilter, RunLedger, SqliteStore};

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap() + chrono::TimeDelta::seconds(s)
}

struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn set(&self, now: DateTime<Utc>) {
        *self.0.lock().unwrap() = now;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// Plays back scripted outcomes (success when the script runs out); can
/// hold runs until released, to make them overlap. A held run that is
/// cancelled ends cancelled, as a task that honours cancellation does.
struct Script {
    outcomes: Mutex<VecDeque<Option<Outcome>>>,
    gate: Option<Arc<Semaphore>>,
    seen: Mutex<Vec<RunRequest>>,
    /// What it says it can run (every identifier alike).
    availability: Mutex<Availability>,
}

#[async_trait::async_trait]
impl Executor for Script {
    fn availability(&self, _implementation: &str) -> Availability {
        *self.availability.lock().unwrap()
    }

    async fn execute(&self, _implementation: &str, request: RunRequest) -> Execution {
        if *self.availability.lock().unwrap() == Availability::Lacks {
            return Execution::Missing;
        }
        if let Some(gate) = &self.gate {
            tokio::select! {
                permit = gate.acquire() => permit.unwrap().forget(),
                _ = request.cancel.cancelled() => {
                    return ran(&request, Outcome::Cancelled { message: "cancelled".into() });
                }
            }
        }
        self.seen.lock().unwrap().push(request.clone());
        let next = self.outcomes.lock().unwrap().pop_front();
        let outcome = match next {
            Some(None) => return Execution::Missing,
            Some(Some(o)) => o,
            None => Outcome::Succeeded {
                message: String::new(),
            },
        };
        ran(&request, outcome)
    }
}

/// The execution of a run that ended with `outcome`.
fn ran(request: &RunRequest, outcome: Outcome) -> Execution {
    let mut state = request.state.clone();
    state.insert("seen".into(), request.context.run_id.clone());
    Execution::Ran {
        report: Box::new(RunReport {
            outcome,
            run_id: request.context.run_id.clone(),
            identifier: "A.B".into(),
            component_sha256: "sha".into(),
            duration: Duration::from_micros(5),
            fuel_consumed: 1,
            peak_memory_bytes: 1,
            events: vec![Event {
                at: std::time::SystemTime::now(),
                level: Level::Info,
                source: EventSource::Task,
                code: "RAN".into(),
                message: "ran".into(),
            }],
            state,
            timeline: Default::default(),
        }),
        version: "1.0.0".into(),
    }
}

struct Fixture {
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    script: Arc<Script>,
    dispatcher: Arc<Dispatcher>,
}

fn fixture(outcomes: Vec<Option<Outcome>>, gated: bool) -> Fixture {
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let clock = Arc::new(ManualClock(Mutex::new(t(0))));
    let script = Arc::new(Script {
        outcomes: Mutex::new(outcomes.into()),
        gate: gated.then(|| Arc::new(Semaphore::new(0))),
        seen: Mutex::new(Vec::new()),
        availability: Mutex::new(Availability::Serves),
    });
    let dispatcher = Dispatcher::new(
        store.clone(),
        script.clone(),
        clock.clone(),
        DispatcherConfig::default(),
    );
    Fixture {
        store,
        clock,
        script,
        dispatcher,
    }
}

impl Fixture {
    async fn add(&self, config: TaskConfig, next: DateTime<Utc>) -> i64 {
        self.store
            .create_task(&config, Some(next))
            .await
            .unwrap()
            .id
    }

    /// One dispatcher pass at `now`, then every run it started recorded.
    async fn tick(&self, now: DateTime<Utc>) {
        self.clock.set(now);
        self.dispatcher.tick(now).await.unwrap();
        if self.script.gate.is_none() {
            self.dispatcher.wait_idle().await;
        }
    }

    async fn runs(&self, task_id: i64) -> Vec<RunRecord> {
        let mut runs = self
            .store
            .list_runs(&RunFilter {
                task_id: Some(task_id),
                ..Default::default()
            })
            .await
            .unwrap();
        runs.reverse();
        runs
    }
}

fn every_10s(misfire: MisfirePolicy) -> TaskConfig {
    let mut c = TaskConfig::new(
        "t",
        "A.B",
        Schedule::every(Duration::from_secs(10), t(0)).unwrap(),
    );
    c.misfire = misfire;
    c.catch_up_window = Duration::from_secs(35);
    c
}

fn summary(runs: &[RunRecord]) -> Vec<(Option<DateTime<Utc>>, RunState, Trigger)> {
    runs.iter()
        .map(|r| (r.scheduled_for, r.state, r.trigger))
        .collect()
}

#[tokio::test]
async fn a_due_slot_runs_once_and_records_everything() {
    let f = fixture(vec![], false);
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    f.tick(t(8)).await;
    assert!(f.runs(id).await.is_empty(), "not due before its time");
    f.tick(t(10)).await;
    f.tick(t(10)).await;
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![(Some(t(10)), RunState::Succeeded, Trigger::Schedule)]
    );
    let task = f.store.get_task_by_id(id).await.unwrap();
    assert_eq!(task.next_run_at, Some(t(20)));
    assert_eq!(task.run_count, 1);
    assert_eq!(task.last_outcome, Some(RunState::Succeeded));
    // State the run left is handed to the next run.
    f.tick(t(20)).await;
    let seen = f.script.seen.lock().unwrap();
    assert_eq!(seen[1].state.get("seen"), Some(&runs[0].id));
    assert_eq!(seen[1].context.run_count, 1);
    assert_eq!(seen[1].context.scheduled_for, Some(t(20).into()));
}

/// A pass a little before a slot (within the look-ahead): the slot is
/// claimed, and its run waits for the instant.
async fn claimed_ahead(f: &Fixture, id: i64) -> RunRecord {
    let ahead = t(10) - chrono::TimeDelta::milliseconds(200);
    f.clock.set(ahead);
    f.dispatcher.tick(ahead).await.unwrap();
    // Let the run's task begin its wait (of 200 ms).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![(Some(t(10)), RunState::Running, Trigger::Schedule)]
    );
    assert!(
        f.script.seen.lock().unwrap().is_empty(),
        "started before its instant"
    );
    let task = f.store.get_task_by_id(id).await.unwrap();
    assert_eq!(task.next_run_at, Some(t(20)));
    runs.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_slot_claimed_ahead_starts_at_its_instant_with_the_settings_current_then() {
    let f = fixture(vec![], false);
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    let run = claimed_ahead(&f, id).await;
    assert_eq!(
        run.started_at,
        Some(t(10)),
        "the planned start, until it starts"
    );
    // Edited between the claim and the instant: the run gets the edit.
    let mut edited = every_10s(MisfirePolicy::Skip);
    edited.properties.insert("edited".into(), "yes".into());
    f.store
        .update_task("t", &edited, Some(t(20)))
        .await
        .unwrap();
    let started = t(10) + chrono::TimeDelta::milliseconds(2);
    f.clock.set(started);
    f.dispatcher.wait_idle().await;
    let seen = f.script.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].context.properties.get("edited").map(String::as_str),
        Some("yes")
    );
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![(Some(t(10)), RunState::Succeeded, Trigger::Schedule)]
    );
    assert_eq!(
        runs[0].started_at,
        Some(started),
        "the real start is recorded"
    );
}

#[tokio::test]
async fn a_configuration_disabled_after_its_slot_was_claimed_does_not_run() {
    let f = fixture(vec![], false);
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    claimed_ahead(&f, id).await;
    let mut disabled = every_10s(MisfirePolicy::Skip);
    disabled.enabled = false;
    f.store.update_task("t", &disabled, None).await.unwrap();
    f.clock.set(t(10));
    f.dispatcher.wait_idle().await;
    assert!(f.script.seen.lock().unwrap().is_empty());
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![(Some(t(10)), RunState::Skipped, Trigger::Schedule)]
    );
    assert!(
        runs[0]
            .message
            .contains("disabled after this slot was claimed"),
        "{}",
        runs[0].message
    );
    let task = f.store.get_task_by_id(id).await.unwrap();
    assert_eq!(task.running_run_id, None);
}

#[tokio::test]
async fn stopping_before_a_claimed_slot_records_it_cancelled_not_run() {
    let f = fixture(vec![], false);
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    claimed_ahead(&f, id).await;
    f.dispatcher.shut_down().await;
    assert!(f.script.seen.lock().unwrap().is_empty());
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![(Some(t(10)), RunState::Cancelled, Trigger::Schedule)]
    );
    assert!(
        runs[0].message.starts_with("not started"),
        "{}",
        runs[0].message
    );
}

#[tokio::test]
async fn a_manual_run_asked_for_before_a_claimed_slot_starts_runs_after_it() {
    let f = fixture(vec![], false);
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    let slot_run = claimed_ahead(&f, id).await;
    let (manual, start) = f.dispatcher.run_now("t").await.unwrap();
    assert_eq!(
        start,
        ManualStart::Behind {
            run_id: slot_run.id.clone(),
            starts_at: t(10)
        }
    );
    f.clock.set(t(10));
    f.dispatcher.wait_idle().await;
    // The slot's run has ended; the next pass starts the manual run.
    f.tick(t(11)).await;
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![
            (Some(t(10)), RunState::Succeeded, Trigger::Schedule),
            (None, RunState::Succeeded, Trigger::Manual)
        ]
    );
    assert_eq!(runs[1].id, manual);
}

/// Counts the store's claim transactions.
#[derive(Default)]
struct ClaimCount(std::sync::atomic::AtomicUsize);

impl crate::store::CallObserver for ClaimCount {
    fn observe(&self, call: &'static str, _: Duration, _: Option<&crate::store::StoreError>) {
        if call == "claim_slots" {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[tokio::test]
async fn a_burst_is_claimed_a_chunk_per_transaction_and_runs_once() {
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let claims = Arc::new(ClaimCount::default());
    let observed = crate::store::Observed::new(store.clone(), claims.clone());
    let script = Arc::new(Script {
        outcomes: Mutex::new(VecDeque::new()),
        gate: None,
        seen: Mutex::new(Vec::new()),
        availability: Mutex::new(Availability::Serves),
    });
    let clock = Arc::new(ManualClock(Mutex::new(t(10))));
    let chunk = 100;
    let dispatcher = Dispatcher::new(
        observed,
        script.clone(),
        clock,
        DispatcherConfig {
            claims_per_transaction: Some(chunk),
            ..Default::default()
        },
    );
    let burst = 2 * chunk + 1;
    for i in 0..burst {
        let mut config = every_10s(MisfirePolicy::Skip);
        config.name = format!("t{i}");
        store.create_task(&config, Some(t(10))).await.unwrap();
    }
    dispatcher.tick(t(10)).await.unwrap();
    dispatcher.wait_idle().await;
    assert_eq!(claims.0.load(std::sync::atomic::Ordering::Relaxed), 3);
    let runs = store.list_runs(&RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), burst);
    assert!(runs.iter().all(|r| r.state == RunState::Succeeded));
    let mut ids: Vec<i64> = runs.iter().map(|r| r.task_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), burst, "each configuration ran once");
    assert_eq!(script.seen.lock().unwrap().len(), burst);
}

#[tokio::test]
async fn a_running_configuration_is_not_claimed_ahead() {
    let f = fixture(vec![], true);
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    f.tick(t(10)).await;
    // The run of 10 s is still going a little before 20 s: its next slot
    // is left for when it is due, when overlap can be judged.
    let ahead = t(20) - chrono::TimeDelta::milliseconds(200);
    f.tick(ahead).await;
    assert_eq!(
        summary(&f.runs(id).await),
        vec![(Some(t(10)), RunState::Running, Trigger::Schedule)]
    );
    f.script.gate.as_ref().unwrap().add_permits(2);
    f.dispatcher.wait_idle().await;
}

#[tokio::test]
async fn a_run_reads_its_identifiers_settings_and_is_told_which_are_secret() {
    use crate::store::{Setting, StateAndSettings};
    let f = fixture(vec![], false);
    let settings = [
        ("A.B", "team", Setting::plain("ops")),
        ("A.B", "api-key", Setting::secret("k-123456")),
        ("Other.Task", "token", Setting::secret("not-for-A.B")),
    ];
    for (id, key, setting) in &settings {
        f.store.set_setting(id, key, Some(setting)).await.unwrap();
    }
    f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    f.tick(t(10)).await;
    let seen = f.script.seen.lock().unwrap();
    let config: Vec<(&str, &str)> = seen[0]
        .config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(config, [("api-key", "k-123456"), ("team", "ops")]);
    assert_eq!(seen[0].secrets, ["k-123456"]);
}

#[tokio::test]
async fn a_slot_that_comes_while_the_previous_run_is_going_is_skipped() {
    let f = fixture(vec![], true);
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    f.tick(t(10)).await; // starts, held by the gate
    f.tick(t(20)).await; // overlap
    f.script.gate.as_ref().unwrap().add_permits(1);
    f.dispatcher.wait_idle().await;
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![
            (Some(t(10)), RunState::Succeeded, Trigger::Schedule),
            (Some(t(20)), RunState::Skipped, Trigger::Schedule),
        ]
    );
    assert!(runs[1].message.contains("was still running"));
    let task = f.store.get_task_by_id(id).await.unwrap();
    assert_eq!((task.skipped_count, task.next_run_at), (1, Some(t(30))));
}

fn with_overlap(policy: OverlapPolicy, max_concurrent: Option<u32>) -> TaskConfig {
    let mut config = every_10s(MisfirePolicy::Skip);
    config.on_overlap = policy;
    config.max_concurrent = max_concurrent;
    config
}

#[tokio::test]
async fn under_queue_one_slot_waits_for_the_running_run_and_the_next_is_skipped() {
    let f = fixture(vec![], true);
    let id = f.add(with_overlap(OverlapPolicy::Queue, None), t(10)).await;
    let gate = f.script.gate.clone().unwrap();
    f.tick(t(10)).await; // starts, held by the gate
    f.tick(t(20)).await; // waits for it
    f.tick(t(30)).await; // skipped: a slot waits already
    f.tick(t(31)).await; // the waiting slot is not started while t(10)'s runs
    assert_eq!(f.script.seen.lock().unwrap().len(), 0);
    gate.add_permits(1);
    f.dispatcher.wait_idle().await;
    f.tick(t(32)).await; // t(10)'s run has ended: the waiting slot starts
    gate.add_permits(1);
    f.dispatcher.wait_idle().await;
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![
            (Some(t(10)), RunState::Succeeded, Trigger::Schedule),
            (Some(t(20)), RunState::Succeeded, Trigger::Schedule),
            (Some(t(30)), RunState::Skipped, Trigger::Schedule),
        ]
    );
    assert!(
        runs[2].message.contains("already waits"),
        "{}",
        runs[2].message
    );
    assert_eq!(runs[1].started_at, Some(t(32)));
    // The component is told which slot it runs for.
    let context = f.script.seen.lock().unwrap()[1].context.clone();
    assert_eq!(context.trigger, Trigger::Schedule);
    assert_eq!(context.scheduled_for, Some(t(20).into()));
    let task = f.store.get_task_by_id(id).await.unwrap();
    assert_eq!(
        (task.running_count, task.skipped_count, task.next_run_at),
        (0, 1, Some(t(40)))
    );
}

#[tokio::test]
async fn under_allow_runs_go_side_by_side_up_to_the_limit() {
    let f = fixture(vec![], true);
    let id = f
        .add(with_overlap(OverlapPolicy::Allow, Some(2)), t(10))
        .await;
    f.tick(t(10)).await;
    f.tick(t(20)).await; // beside the first
    f.tick(t(30)).await; // a third would pass the limit: skipped
    let task = f.store.get_task_by_id(id).await.unwrap();
    assert_eq!(task.running_count, 2);
    f.script.gate.as_ref().unwrap().add_permits(2);
    f.dispatcher.wait_idle().await;
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![
            (Some(t(10)), RunState::Succeeded, Trigger::Schedule),
            (Some(t(20)), RunState::Succeeded, Trigger::Schedule),
            (Some(t(30)), RunState::Skipped, Trigger::Schedule),
        ]
    );
    assert!(
        runs[2].message.contains("2 runs were still running"),
        "{}",
        runs[2].message
    );
    let task = f.store.get_task_by_id(id).await.unwrap();
    assert_eq!((task.running_count, task.running_run_id), (0, None));
}

#[tokio::test]
async fn under_replace_the_running_run_is_stopped_and_the_slot_runs_after_it() {
    let f = fixture(vec![], true);
    let id = f
        .add(with_overlap(OverlapPolicy::Replace, None), t(10))
        .await;
    f.tick(t(10)).await; // starts, held by the gate
    f.tick(t(20)).await; // asks it to stop; the slot waits
    f.tick(t(21)).await; // this instance honours the stop: the run ends cancelled
    f.dispatcher.wait_idle().await;
    f.tick(t(22)).await; // the slot's run starts
    f.script.gate.as_ref().unwrap().add_permits(1);
    f.dispatcher.wait_idle().await;
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![
            (Some(t(10)), RunState::Cancelled, Trigger::Schedule),
            (Some(t(20)), RunState::Succeeded, Trigger::Schedule),
        ]
    );
    assert!(
        runs[0]
            .message
            .starts_with("stopped by overlap policy replace"),
        "{}",
        runs[0].message
    );
}

#[tokio::test]
async fn a_failure_with_no_retry_left_runs_its_follow_up_told_about_it() {
    let failure = || {
        Some(Outcome::Failed {
            message: "boom".into(),
        })
    };
    let f = fixture(vec![failure(), failure()], false);
    let mut alert = every_10s(MisfirePolicy::Skip);
    alert.name = "alert".into();
    alert.enabled = false;
    let alert = f.add(alert, t(10)).await;
    let mut config = every_10s(MisfirePolicy::Skip);
    config.schedule = Schedule::every(Duration::from_secs(3600), t(0)).unwrap();
    config.retries = 1;
    config.retry_backoff = Duration::from_secs(1);
    config.on_failure = vec!["alert".into()];
    let id = f.add(config, t(10)).await;
    f.tick(t(10)).await; // fails; a retry is to come: no follow-up yet
    assert!(f.runs(alert).await.is_empty());
    f.tick(t(11)).await; // the retry fails too: the follow-up is queued
    f.tick(t(12)).await; // and runs (its configuration is disabled: it runs all the same)
    let runs = f.runs(alert).await;
    assert_eq!(
        summary(&runs),
        vec![(None, RunState::Succeeded, Trigger::FollowUp)]
    );
    let seen = f.script.seen.lock().unwrap().clone();
    let request = seen.last().unwrap();
    assert_eq!(request.context.configuration_name, "alert");
    let payload = request
        .payload
        .as_ref()
        .expect("a follow-up carries a payload");
    assert_eq!(payload.target, "follow-up");
    let told: serde_json::Value = serde_json::from_str(&payload.text).unwrap();
    let failed = &f.runs(id).await[1];
    assert_eq!(told["run_id"], failed.id.as_str());
    assert_eq!(
        (
            &told["outcome"],
            &told["message"],
            &told["attempt"],
            &told["trigger"]
        ),
        (&"failed".into(), &"boom".into(), &2.into(), &"retry".into())
    );
}

#[tokio::test]
async fn misfire_skip_records_the_gap_and_resumes_in_the_future() {
    let f = fixture(vec![], false);
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    f.tick(t(100)).await;
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![(Some(t(10)), RunState::Skipped, Trigger::Schedule)]
    );
    assert!(
        runs[0].message.starts_with("missed 10 slot(s)"),
        "{}",
        runs[0].message
    );
    assert_eq!(
        f.store.get_task_by_id(id).await.unwrap().next_run_at,
        Some(t(110))
    );
}

#[tokio::test]
async fn misfire_once_runs_a_single_catch_up() {
    let f = fixture(vec![], false);
    let id = f.add(every_10s(MisfirePolicy::Once), t(10)).await;
    f.tick(t(100)).await;
    f.tick(t(100)).await;
    assert_eq!(
        summary(&f.runs(id).await),
        vec![(Some(t(10)), RunState::Succeeded, Trigger::Schedule)]
    );
    assert_eq!(
        f.store.get_task_by_id(id).await.unwrap().next_run_at,
        Some(t(110))
    );
}

#[tokio::test]
async fn misfire_all_runs_every_slot_in_the_window_one_after_another() {
    let f = fixture(vec![], false);
    let id = f.add(every_10s(MisfirePolicy::All), t(10)).await;
    for _ in 0..8 {
        f.tick(t(100)).await;
    }
    let runs = f.runs(id).await;
    // Window 35 s back from t(100) starts at t(65): slots 70, 80, 90, 100 run.
    assert_eq!(
        summary(&runs),
        vec![
            (Some(t(10)), RunState::Skipped, Trigger::Schedule),
            (Some(t(70)), RunState::Succeeded, Trigger::Schedule),
            (Some(t(80)), RunState::Succeeded, Trigger::Schedule),
            (Some(t(90)), RunState::Succeeded, Trigger::Schedule),
            (Some(t(100)), RunState::Succeeded, Trigger::Schedule),
        ]
    );
    assert!(
        runs[0].message.contains("catch-up window"),
        "{}",
        runs[0].message
    );
    assert_eq!(
        f.store.get_task_by_id(id).await.unwrap().next_run_at,
        Some(t(110))
    );
}

#[tokio::test]
async fn failed_runs_are_retried_with_doubling_backoff() {
    let failure = || {
        Some(Outcome::Failed {
            message: "boom".into(),
        })
    };
    let f = fixture(
        vec![
            failure(),
            failure(),
            Some(Outcome::Succeeded {
                message: "ok".into(),
            }),
        ],
        false,
    );
    let mut config = every_10s(MisfirePolicy::Skip);
    config.schedule = Schedule::every(Duration::from_secs(3600), t(0)).unwrap();
    config.retries = 2;
    config.retry_backoff = Duration::from_secs(1);
    let id = f.add(config, t(10)).await;
    f.tick(t(10)).await;
    assert_eq!(
        f.store.get_task_by_id(id).await.unwrap().retry_at,
        Some(t(11))
    );
    f.tick(t(11)).await;
    assert_eq!(
        f.store.get_task_by_id(id).await.unwrap().retry_at,
        Some(t(13))
    );
    f.tick(t(12)).await;
    f.tick(t(13)).await;
    let runs = f.runs(id).await;
    let attempts: Vec<_> = runs
        .iter()
        .map(|r| (r.trigger, r.attempt, r.state))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (Trigger::Schedule, 1, RunState::Failed),
            (Trigger::Retry, 2, RunState::Failed),
            (Trigger::Retry, 3, RunState::Succeeded),
        ]
    );
    let task = f.store.get_task_by_id(id).await.unwrap();
    assert_eq!((task.retry_at, task.failed_count), (None, 2));
}

#[tokio::test]
async fn a_missing_component_fails_the_run_with_a_clear_message() {
    let f = fixture(vec![None], false);
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    f.tick(t(10)).await;
    let runs = f.runs(id).await;
    assert_eq!(runs[0].state, RunState::Failed);
    assert_eq!(
        runs[0].message,
        "no component implements 'A.B' on instance local: add one to its plugins folder"
    );
}

#[tokio::test]
async fn manual_runs_work_for_disabled_configurations_and_do_not_overlap() {
    let f = fixture(vec![], true);
    let mut config = every_10s(MisfirePolicy::Skip);
    config.enabled = false;
    let id = f.add(config, t(10)).await;
    let (first, claim) = f.dispatcher.run_now("t").await.unwrap();
    assert_eq!(claim, ManualStart::Here(crate::store::Claim::Claimed));
    let (_, second) = f.dispatcher.run_now("t").await.unwrap();
    assert_eq!(
        second,
        ManualStart::Here(crate::store::Claim::AlreadyRunning { run_id: first })
    );
    f.tick(t(10)).await; // disabled: no scheduled run
    f.script.gate.as_ref().unwrap().add_permits(1);
    f.dispatcher.wait_idle().await;
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![
            (None, RunState::Succeeded, Trigger::Manual),
            (None, RunState::Skipped, Trigger::Manual),
        ]
    );
}

#[tokio::test]
async fn configurations_that_need_a_role_run_only_on_instances_that_have_it() {
    let f = fixture(vec![], false);
    let edit = Dispatcher::new(
        f.store.clone(),
        f.script.clone(),
        f.clock.clone(),
        DispatcherConfig {
            instance: crate::model::InstanceInfo {
                name: "edit-1".into(),
                roles: vec!["edit".into(), "eu".into()],
            },
            ..Default::default()
        },
    );
    let mut config = every_10s(MisfirePolicy::Skip);
    config.roles = vec!["edit".into()];
    let id = f.add(config, t(10)).await;

    // The instance without the role leaves the slot alone; the one with it runs it.
    f.tick(t(10)).await;
    assert!(f.runs(id).await.is_empty());
    edit.tick(t(10)).await.unwrap();
    edit.wait_idle().await;
    assert_eq!(f.runs(id).await.len(), 1);

    // A manual run asked of the instance without the role is queued for
    // one that has it.
    let (queued, start) = f.dispatcher.run_now("t").await.unwrap();
    assert_eq!(
        start,
        ManualStart::Queued {
            missing_roles: vec!["edit".into()]
        }
    );
    f.tick(t(15)).await;
    assert_eq!(
        f.store.get_run(&queued).await.unwrap().state,
        RunState::Queued
    );
    edit.tick(t(15)).await.unwrap();
    edit.wait_idle().await;

    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![
            (Some(t(10)), RunState::Succeeded, Trigger::Schedule),
            (None, RunState::Succeeded, Trigger::Manual),
        ]
    );
    assert!(runs.iter().all(|r| r.instance.as_deref() == Some("edit-1")));
    let (_, start) = edit.run_now("t").await.unwrap();
    assert_eq!(start, ManualStart::Here(crate::store::Claim::Claimed));
    edit.wait_idle().await;
}

/// A clock that moves a second on every read: every pass outlasts the
/// poll interval, as under sustained load. Gives up (panics) after many
/// reads, so a dispatcher that never stops fails the test instead of
/// hanging it.
struct RacingClock(Mutex<i64>);

impl Clock for RacingClock {
    fn now(&self) -> DateTime<Utc> {
        let mut reads = self.0.lock().unwrap();
        *reads += 1;
        assert!(*reads < 10_000, "the dispatcher did not stop");
        t(*reads)
    }
}

#[tokio::test]
async fn a_dispatcher_whose_passes_outlast_the_poll_interval_still_stops() {
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    store
        .create_task(&every_10s(MisfirePolicy::Skip), Some(t(10)))
        .await
        .unwrap();
    let script = Arc::new(Script {
        outcomes: Mutex::new(VecDeque::new()),
        gate: None,
        seen: Mutex::new(Vec::new()),
        availability: Mutex::new(Availability::Serves),
    });
    let dispatcher = Dispatcher::new(
        store,
        script,
        Arc::new(RacingClock(Mutex::new(0))),
        DispatcherConfig::default(),
    );
    // Asked to stop from the start; it never gets to sleep.
    dispatcher.run(std::future::ready(())).await;
}

fn live(name: &str, roles: &[&str]) -> crate::model::InstanceRow {
    crate::model::InstanceRow {
        name: name.into(),
        process: format!("process of {name}"),
        host: "test".into(),
        pid: 1,
        version: "test".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        started_at: Utc::now(),
        heartbeat_at: Utc::now(),
    }
}

async fn serves(f: &Fixture, instance: &str, identifier: &str) {
    use crate::store::Fleet;
    let row = crate::model::PluginRow {
        instance: instance.into(),
        file: "a.wasm".into(),
        sha256: "sha".into(),
        identifier: Some(identifier.into()),
        version: None,
        serving_sha256: None,
        loaded_at: Utc::now(),
        status: crate::model::PluginState::Ok,
        error: None,
    };
    f.store.set_plugins(instance, &[row]).await.unwrap();
}

fn payload(data_bytes: usize) -> crate::model::BroadcastPayload {
    crate::model::BroadcastPayload {
        data: vec![7; data_bytes],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_runs_broadcasts_are_capped_and_carry_its_limits_and_roles() {
    use crate::model::{BROADCAST_BYTES_PER_RUN, BROADCASTS_PER_RUN, RunLimits};
    use crate::store::Fleet;

    let f = fixture(vec![], false);
    let edit = Dispatcher::new(
        f.store.clone(),
        f.script.clone(),
        f.clock.clone(),
        DispatcherConfig {
            instance: crate::model::InstanceInfo {
                name: "edit-1".into(),
                roles: vec!["edit".into()],
            },
            ..Default::default()
        },
    );
    f.store.heartbeat(&live("local", &[])).await.unwrap();
    f.store.heartbeat(&live("edit-1", &["edit"])).await.unwrap();
    serves(&f, "edit-1", "A.B").await;
    let limits = RunLimits {
        timeout: Duration::from_secs(5),
        fuel: Some(1_000_000),
        memory_bytes: 4 * 1024 * 1024,
    };
    let mut config = every_10s(MisfirePolicy::Skip);
    config.limits = limits;
    config.roles = vec!["edit".into()];
    f.add(config, t(1000)).await;

    // One run may make BROADCASTS_PER_RUN broadcasts; the next is refused.
    // A name no instance has loaded is refused (and counts).
    edit.run_now("t").await.unwrap();
    edit.wait_idle().await;
    let farm = f.script.seen.lock().unwrap()[0].farm.clone().unwrap();
    let unknown = farm.broadcast("Made.Up", payload(10)).await.unwrap_err();
    assert!(unknown.contains("has loaded 'Made.Up'"), "{unknown}");
    let ok = BROADCASTS_PER_RUN as usize - 1;
    for _ in 0..ok {
        farm.broadcast("A.B", payload(10)).await.unwrap();
    }
    let refused = farm.broadcast("A.B", payload(10)).await.unwrap_err();
    assert!(refused.contains("at most 10 broadcasts"), "{refused}");
    let made = f.store.list_broadcasts(100).await.unwrap();
    assert_eq!(made.len(), ok);

    // Each goes only to the instance with the run's roles, and runs there
    // with the run's limits, not the defaults.
    assert!(
        made.iter()
            .all(|b| { b.deliveries.len() == 1 && b.deliveries[0].instance == "edit-1" })
    );
    f.tick(t(1)).await;
    edit.tick(t(1)).await.unwrap();
    edit.wait_idle().await;
    let delivered: Vec<RunLimits> = f
        .script
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.context.trigger == Trigger::Broadcast)
        .map(|r| r.limits)
        .collect();
    assert_eq!(delivered, vec![limits; ok]);

    // Payload bytes count into a budget per run, refused ones included.
    edit.run_now("t").await.unwrap();
    edit.wait_idle().await;
    let farm = f
        .script
        .seen
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .farm
        .clone()
        .unwrap();
    let full = crate::model::BROADCAST_MAX_DATA_BYTES;
    let fits = (BROADCAST_BYTES_PER_RUN / full as u64) as usize;
    for _ in 0..fits {
        farm.broadcast("A.B", payload(full)).await.unwrap();
    }
    let refused = farm.broadcast("A.B", payload(1)).await.unwrap_err();
    assert!(refused.contains("of payload together"), "{refused}");
    assert_eq!(f.store.list_broadcasts(100).await.unwrap().len(), ok + fits);
}

#[tokio::test]
async fn an_instance_without_the_senders_roles_does_not_run_its_delivery() {
    use crate::store::{Fleet, NewBroadcast};

    let f = fixture(vec![], false);
    f.store
        .create_broadcast(&NewBroadcast {
            id: "b1".into(),
            identifier: "A.B".into(),
            payload: payload(1),
            created_at: t(0),
            created_by: "test".into(),
            instances: vec!["local".into()],
            sender: Some(crate::model::BroadcastSender {
                limits: Default::default(),
                roles: vec!["edit".into()],
            }),
        })
        .await
        .unwrap();
    f.tick(t(1)).await;
    assert!(f.script.seen.lock().unwrap().is_empty());
    let b = f.store.get_broadcast("b1").await.unwrap();
    assert_eq!(b.deliveries[0].state, RunState::Skipped);
    assert!(
        b.deliveries[0].message.contains("edit"),
        "{:?}",
        b.deliveries[0]
    );
}

#[tokio::test]
async fn chores_that_wake_late_renew_this_instances_runs_instead_of_abandoning_them() {
    let f = fixture(vec![], true);
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    let mut chores = super::housekeeping::Chores::new(t(10));
    f.tick(t(10)).await; // starts, held by the gate; leased until t(40)
    chores.run_due(&f.dispatcher, t(10)).await;
    // The loop wakes late, past the lease (a machine busy for 35 s): the
    // run is still in flight here, so it is renewed, not rescued.
    f.clock.set(t(45));
    chores.run_due(&f.dispatcher, t(45)).await;
    let runs = f.runs(id).await;
    assert_eq!(runs[0].state, RunState::Running, "{}", runs[0].message);
    assert_eq!(runs[0].lease_until, Some(t(75)));
    f.script.gate.as_ref().unwrap().add_permits(1);
    f.dispatcher.wait_idle().await;
    assert_eq!(f.runs(id).await[0].state, RunState::Succeeded);
}

#[tokio::test]
async fn an_instance_without_the_component_leaves_its_runs_to_a_live_one_that_has_it() {
    use crate::store::Fleet;
    let f = fixture(vec![], false);
    *f.script.availability.lock().unwrap() = Availability::Lacks;
    let id = f.add(every_10s(MisfirePolicy::Skip), t(10)).await;
    f.store.heartbeat(&live("other", &[])).await.unwrap();
    f.store.heartbeat(&live("local", &[])).await.unwrap();
    serves(&f, "other", "A.B").await;
    f.tick(t(10)).await; // left to "other"
    assert!(f.runs(id).await.is_empty());
    let (queued, start) = f.dispatcher.run_now("t").await.unwrap();
    assert!(
        matches!(&start, ManualStart::Elsewhere { instances } if instances == &["other"]),
        "{start:?}"
    );
    f.tick(t(11)).await; // not started here either
    let runs = f.runs(id).await;
    assert_eq!(
        summary(&runs),
        vec![(None, RunState::Queued, Trigger::Manual)]
    );
    assert_eq!(runs[0].id, queued);

    // "other" no longer serves it: nobody can run it, so the queued run
    // runs here and fails, naming who lacks it.
    f.store.set_plugins("other", &[]).await.unwrap();
    f.tick(t(20)).await; // the inventory read at t(11) has aged out
    let failed: Vec<RunRecord> = f
        .runs(id)
        .await
        .into_iter()
        .filter(|r| r.state == RunState::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].id, queued);
    assert!(
        failed[0]
            .message
            .contains("(instances local, other lack it)"),
        "{}",
        failed[0].message
    );
}

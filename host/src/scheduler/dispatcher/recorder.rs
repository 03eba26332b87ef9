//! How a run's end reaches the store: what an [`Execution`] comes to in the
//! store's terms (state, reason, events, whether and when to retry), and
//! the group commit that records runs finishing together in one
//! transaction, which is what lets a busy instance keep up. Runs the store
//! cannot take while it is unavailable wait in [`Held`] for it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use super::delta;
use super::held::Held;
use crate::model::{Level, NewEvent, RunOutcome, RunState, TaskRecord, Trigger};
use crate::runtime::{Execution, Outcome, RunReport};
use crate::scheduler::trace::{Recorded, RunTrace, RunTracer};
use crate::store::{NewRun, RunFinish, Store, StoreResult};

/// A configuration's state after a run; `None` leaves it as it was.
pub(super) type TaskState = Option<BTreeMap<String, String>>;

/// Finished runs waiting to be committed together, and those waiting for
/// the store to come back.
#[derive(Default)]
pub(super) struct Recorder {
    pending: Mutex<Pending>,
    pub(super) held: Held,
    /// Where each run goes once its record is committed (or held).
    tracer: Option<Arc<dyn RunTracer>>,
}

#[derive(Default)]
struct Pending {
    finished: Vec<RunFinish>,
    /// The traces of runs in `finished` (only with a tracer).
    traces: Vec<RunTrace>,
    /// A committer is at work; it takes `finished` before it stops.
    committing: bool,
}

impl Recorder {
    pub(super) fn new(tracer: Option<Arc<dyn RunTracer>>) -> Recorder {
        Recorder {
            tracer,
            ..Recorder::default()
        }
    }

    /// Whether runs should bring their traces.
    pub(super) fn traces(&self) -> bool {
        self.tracer.is_some()
    }

    /// Group commit: the first run to finish while no commit is under way
    /// becomes the committer; runs finishing meanwhile join the next
    /// batch, which the committer takes as soon as its transaction ends,
    /// until none is left. One commit at a time per dispatcher, so batches
    /// grow with the load instead of transactions piling up. If a
    /// transaction fails, the store records each run alone, so one it
    /// cannot write leaves only itself `running` until its lease expires
    /// and it is recorded abandoned. If the store is unavailable, the batch
    /// is held and recorded once it is back. `trace` (with a tracer) is
    /// handed to it once the batch's commit is over.
    pub(super) async fn record(
        &self,
        store: &dyn Store,
        finish: RunFinish,
        trace: Option<RunTrace>,
    ) -> StoreResult<()> {
        let committer = {
            let mut pending = self.lock();
            pending.finished.push(finish);
            pending.traces.extend(trace);
            !std::mem::replace(&mut pending.committing, true)
        };
        if !committer {
            return Ok(());
        }
        tokio::task::yield_now().await;
        let mut result = Ok(());
        loop {
            let (batch, traces) = {
                let mut pending = self.lock();
                if pending.finished.is_empty() {
                    pending.committing = false;
                    return result;
                }
                (
                    std::mem::take(&mut pending.finished),
                    std::mem::take(&mut pending.traces),
                )
            };
            let recorded = match store.finish_runs(&batch).await {
                Err(e) if e.is_unavailable() => {
                    self.held.hold(batch);
                    Recorded::Held
                }
                Err(e) => {
                    let recorded = Recorded::Failed(e.to_string());
                    result = Err(e);
                    recorded
                }
                Ok(_) => Recorded::Committed,
            };
            self.trace(traces, recorded);
        }
    }

    fn trace(&self, traces: Vec<RunTrace>, recorded: Recorded) {
        let Some(tracer) = &self.tracer else {
            return;
        };
        let end = SystemTime::now();
        for mut trace in traces {
            trace.record.end = end;
            trace.recorded = recorded.clone();
            tracer.recorded(trace);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The record of a configuration's run that ended at `finished_at`, with a
/// retry planned if it failed and the configuration allows another attempt
/// (the backoff doubles with each).
pub(super) fn run_finish(
    task: &TaskRecord,
    run: &NewRun,
    execution: Execution,
    instance: &str,
    finished_at: DateTime<Utc>,
) -> RunFinish {
    let config = &task.config;
    let (outcome, state) = outcome_of(
        execution,
        &config.implementation,
        instance,
        Some(task.id),
        &run.id,
    );
    let mut finish = RunFinish::of(&run.id, task.id, finished_at, outcome, state);
    // A backfill's slot is not retried: backfilling the window again runs
    // the slots that failed.
    if finish.outcome.state.is_failure()
        && run.attempt <= config.retries
        && run.trigger != Trigger::Backfill
    {
        let backoff = config.retry_backoff * 2u32.saturating_pow(run.attempt - 1);
        finish.retry = Some((finished_at + delta(backoff), run.attempt + 1));
    }
    finish
}

/// What an execution comes to in the store's terms, whether it was a
/// configuration's run or a broadcast delivery, with the task's state after
/// it.
pub(super) fn outcome_of(
    execution: Execution,
    implementation: &str,
    instance: &str,
    task_id: Option<i64>,
    run_id: &str,
) -> (RunOutcome, TaskState) {
    match execution {
        Execution::Missing => (missing(implementation, instance, task_id, run_id), None),
        Execution::Ran { report, version } => {
            let state = Some(report.state.clone());
            (ran(&report, version, task_id, run_id), state)
        }
    }
}

fn missing(implementation: &str, instance: &str, task_id: Option<i64>, run_id: &str) -> RunOutcome {
    let message = format!(
        "no component implements '{implementation}' on instance {instance}: \
             add one to its plugins folder"
    );
    RunOutcome::not_run(
        RunState::Failed,
        NewEvent {
            task_id,
            run_id: Some(run_id.to_owned()),
            ..NewEvent::host(Level::Error, "COMPONENT_MISSING", message)
        },
    )
}

fn ran(report: &RunReport, version: String, task_id: Option<i64>, run_id: &str) -> RunOutcome {
    let (state, reason) = match &report.outcome {
        Outcome::Succeeded { .. } => (RunState::Succeeded, None),
        Outcome::Failed { .. } => (RunState::Failed, None),
        Outcome::Stopped { reason, .. } => (RunState::Stopped, Some(*reason)),
        Outcome::Cancelled { .. } => (RunState::Cancelled, None),
    };
    RunOutcome {
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
    }
}

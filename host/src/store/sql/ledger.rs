//! The run ledger's rules. Each claim is a conditional `UPDATE` of the
//! configuration row whose condition is the claim's premise (the slot is
//! still the next fire time, the retry is still pending, nothing runs);
//! the number of rows it changed says whether this claimant won, and only
//! a winner writes anything else. That is what makes a slot go to exactly
//! one claimant on either backend: SQLite serialises write transactions;
//! under PostgreSQL's read committed isolation an `UPDATE` that waited for
//! another transaction's lock re-checks its condition against what that
//! transaction committed, so every check below is on rows changed, never
//! on what an earlier `SELECT` saw.
//!
//! How many of a configuration's runs go on is counted on its row
//! (`running_count`, one more for each run recorded running, one less for
//! each that stops being so), beside how many may (`max_concurrent`, from
//! its overlap policy), so "may one more start" is a condition on the row
//! like the others.
//!
//! Rows are changed in one global order so concurrent batches cannot
//! deadlock on PostgreSQL: run rows before task rows, each in ascending id
//! order. Batches here go item by item in that order; PostgreSQL replaces
//! the common batches by set-based statements (`postgres::batches`) that
//! apply these same rules.

use chrono::{DateTime, Utc};

use super::rows::{self, RUN_COLUMNS};
use super::{Tx, params, query_opt};
use crate::model::follow_up::{EndedRun, FollowUp};
use crate::model::{EventSource, Level, NewEvent, RunRecord, RunState, TaskRecord, Trigger};
use crate::store::{Claim, NewRun, OnOverlap, RunFilter, RunFinish, SlotClaim, StoreResult};

/// Records `run` in `state` (running, or skipped with its message).
pub async fn insert_run<T: Tx + ?Sized>(
    tx: &T,
    run: &NewRun,
    state: RunState,
) -> anyhow::Result<()> {
    let finished = (state == RunState::Skipped).then_some(run.started_at);
    let lease = (state == RunState::Running).then_some(run.lease_until);
    tx.exec(
        "INSERT INTO runs (id, task_id, task_name, implementation, trigger, attempt, scheduled_for,
                           started_at, finished_at, lease_until, state, message, instance)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        params![
            &run.id,
            run.task_id,
            &run.task_name,
            &run.implementation,
            run.trigger.as_str(),
            run.attempt,
            run.scheduled_for,
            run.started_at,
            finished,
            lease,
            state.as_str(),
            &run.message,
            &run.instance,
        ],
    )
    .await?;
    Ok(())
}

/// A claim's condition that one more run of the configuration may start.
pub const HAS_ROOM: &str = "running_count < max_concurrent";

/// The configuration's newest run still going on once run `$2` has ended
/// (an expression over the row being updated, whose id is `$1`): the
/// partial index `runs_running` makes it one lookup.
const NEWEST_LEFT: &str = "CASE WHEN running_run_id IS NOT NULL AND running_run_id <> $2
         THEN running_run_id
         ELSE (SELECT r.id FROM runs r WHERE r.task_id = $1 AND r.state = 'running'
               ORDER BY r.id DESC LIMIT 1) END";

/// One run fewer going on, never below none.
const ONE_LESS: &str = "CASE WHEN running_count > 0 THEN running_count - 1 ELSE 0 END";

/// A configuration that could not start another run: its newest run going
/// on and how many go on.
#[derive(Debug, Clone)]
pub struct Busy {
    pub run_id: String,
    pub count: u32,
}

/// The message of a slot skipped because the configuration was busy.
pub fn overlap_message(busy: &Busy) -> String {
    match busy.count {
        0 | 1 => format!(
            "skipped: the previous run {} was still running",
            busy.run_id
        ),
        n => format!(
            "skipped: {n} runs were still running, as many as it may run at once \
             (the newest: {})",
            busy.run_id
        ),
    }
}

/// The message of a manual run not started because `running` was.
fn not_started_message(running: &str) -> String {
    format!("not started: run {running} is still running")
}

/// Claims slots item by item in task-id order (the lock order); results in
/// input order. Items naming the same configuration keep their order, so
/// each sees the one before.
pub async fn claim_slots<T: Tx + ?Sized>(
    tx: &T,
    claims: &[SlotClaim],
) -> anyhow::Result<Vec<Claim>> {
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by_key(|&i| claims[i].run.task_id);
    let mut results = vec![Claim::Lost; claims.len()];
    for i in order {
        results[i] = claim_slot(tx, &claims[i]).await?;
    }
    Ok(results)
}

/// One slot: won if it is still the next fire time, the configuration is
/// enabled and nothing runs. If something runs, the slot is skipped (or
/// left due, per [`OnOverlap`]); otherwise someone else took it.
pub async fn claim_slot<T: Tx + ?Sized>(tx: &T, c: &SlotClaim) -> anyhow::Result<Claim> {
    let run = &c.run;
    let won = tx
        .exec(
            &format!(
                "UPDATE tasks SET next_run_at = $1, running_run_id = $2, last_run_at = $3,
                        run_count = run_count + 1, running_count = running_count + 1,
                        retry_at = NULL, retry_attempt = 0
                 WHERE id = $4 AND next_run_at = $5 AND enabled = TRUE AND {HAS_ROOM}"
            ),
            params![c.next, &run.id, run.started_at, run.task_id, c.slot],
        )
        .await?;
    if won == 1 {
        insert_run(tx, run, RunState::Running).await?;
        return Ok(Claim::Claimed);
    }
    let Some(busy) = busy_at_slot(tx, run.task_id, c.slot).await? else {
        return Ok(Claim::Lost);
    };
    if !on_busy(tx, c, &busy).await? {
        return Ok(Claim::Lost);
    }
    Ok(Claim::AlreadyRunning {
        run_id: busy.run_id,
    })
}

/// What a slot does when its configuration is busy, per its
/// [`OnOverlap`]; false if the slot was not the next fire time any more
/// (someone else dealt with it). Every change is conditional again, and
/// judged by what it changed: another instance may be handling this very
/// slot, and only the one that moves the schedule records anything.
pub async fn on_busy<T: Tx + ?Sized>(tx: &T, c: &SlotClaim, busy: &Busy) -> anyhow::Result<bool> {
    let run = &c.run;
    match c.on_overlap {
        OnOverlap::Wait => Ok(true),
        OnOverlap::Skip => {
            let mut skipped = run.clone();
            skipped.message = overlap_message(busy);
            skip_slot(tx, run.task_id, c.slot, c.next, &skipped).await
        }
        OnOverlap::Queue | OnOverlap::Replace => queue_slot(tx, c, busy).await,
    }
}

/// Keeps the slot waiting behind the runs going on (policies `queue` and
/// `replace`): moves the schedule on and records the slot's run queued,
/// to start when the configuration has room (`queued_runs` offers it
/// then). At most one slot waits: a slot that finds one waiting is
/// skipped. Under `replace`, the runs going on are asked to stop, as an
/// operator would ask.
async fn queue_slot<T: Tx + ?Sized>(tx: &T, c: &SlotClaim, busy: &Busy) -> anyhow::Result<bool> {
    let run = &c.run;
    let sql = format!(
        "SELECT scheduled_for FROM runs
         WHERE task_id = $1 AND state = 'queued' AND trigger = 'schedule'{}",
        T::FOR_UPDATE
    );
    if let Some(mut waiting) = query_opt(tx, &sql, params![run.task_id]).await? {
        let waits = waiting.opt_time(0)?.map_or_else(
            || "an earlier slot".to_owned(),
            |t| format!("the slot of {t}"),
        );
        let mut skipped = run.clone();
        skipped.message = format!(
            "skipped: run {} was still running and {waits} already waits for it",
            busy.run_id
        );
        return skip_slot(tx, run.task_id, c.slot, c.next, &skipped).await;
    }
    let moved = tx
        .exec(
            "UPDATE tasks SET next_run_at = $1 WHERE id = $2 AND next_run_at = $3",
            params![c.next, run.task_id, c.slot],
        )
        .await?;
    if moved == 0 {
        return Ok(false);
    }
    let message = if c.on_overlap == OnOverlap::Replace {
        let by = format!(
            "overlap policy replace (the slot of {} replaces it)",
            c.slot
        );
        let going_on = tx
            .query(
                "SELECT id, instance FROM runs WHERE task_id = $1 AND state = 'running'",
                params![run.task_id],
            )
            .await?;
        for mut row in going_on {
            let (id, instance) = (row.text(0)?, row.opt_text(1)?.unwrap_or_default());
            super::stops::ask(tx, &id, &instance, &by, run.started_at).await?;
        }
        format!(
            "waits for run {} to stop (overlap policy replace)",
            busy.run_id
        )
    } else {
        format!(
            "waits for run {} to end (overlap policy queue)",
            busy.run_id
        )
    };
    tx.exec(
        "INSERT INTO runs (id, task_id, task_name, implementation, trigger, attempt, scheduled_for,
                           queued_at, state, message, instance)
         VALUES ($1, $2, $3, $4, 'schedule', 1, $5, $6, 'queued', $7, NULL)",
        params![
            &run.id,
            run.task_id,
            &run.task_name,
            &run.implementation,
            c.slot,
            run.started_at,
            &message,
        ],
    )
    .await?;
    Ok(true)
}

/// Whether the configuration is still at `slot` and has no room for
/// another run: its newest run going on and how many go on.
pub async fn busy_at_slot<T: Tx + ?Sized>(
    tx: &T,
    task_id: i64,
    slot: DateTime<Utc>,
) -> anyhow::Result<Option<Busy>> {
    let sql = format!(
        "SELECT running_run_id, running_count FROM tasks
         WHERE id = $1 AND next_run_at = $2 AND NOT ({HAS_ROOM})"
    );
    match query_opt(tx, &sql, params![task_id, slot]).await? {
        Some(mut row) => Ok(Some(Busy {
            run_id: row.opt_text(0)?.unwrap_or_else(|| "?".to_owned()),
            count: row.int(1)?.max(0) as u32,
        })),
        None => Ok(None),
    }
}

/// Records `slot` skipped and moves the schedule on, if the slot is still
/// the next fire time; false (nothing recorded) if it is not.
pub async fn skip_slot<T: Tx + ?Sized>(
    tx: &T,
    task_id: i64,
    slot: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    skipped: &NewRun,
) -> anyhow::Result<bool> {
    let moved = tx
        .exec(
            "UPDATE tasks SET next_run_at = $1, skipped_count = skipped_count + 1
             WHERE id = $2 AND next_run_at = $3",
            params![next, task_id, slot],
        )
        .await?;
    if moved == 1 {
        insert_run(tx, skipped, RunState::Skipped).await?;
    }
    Ok(moved == 1)
}

/// Claims the pending retry due at `retry_at`, if it is still pending and
/// nothing runs.
pub async fn claim_retry<T: Tx + ?Sized>(
    tx: &T,
    task_id: i64,
    retry_at: DateTime<Utc>,
    run: &NewRun,
) -> anyhow::Result<Claim> {
    let won = tx
        .exec(
            &format!(
                "UPDATE tasks SET retry_at = NULL, running_run_id = $1, last_run_at = $2,
                        run_count = run_count + 1, running_count = running_count + 1
                 WHERE id = $3 AND retry_at = $4 AND enabled = TRUE AND {HAS_ROOM}"
            ),
            params![&run.id, run.started_at, task_id, retry_at],
        )
        .await?;
    if won == 1 {
        insert_run(tx, run, RunState::Running).await?;
        return Ok(Claim::Claimed);
    }
    Ok(Claim::Lost)
}

/// Marks the configuration running `run_id` if it has room for one more
/// run; else names its newest run going on (`None`: the configuration is
/// gone).
async fn take_configuration<T: Tx + ?Sized>(
    tx: &T,
    task_id: i64,
    run_id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Result<(), Option<String>>> {
    let won = tx
        .exec(
            &format!(
                "UPDATE tasks SET running_run_id = $1, last_run_at = $2,
                        run_count = run_count + 1, running_count = running_count + 1
                 WHERE id = $3 AND {HAS_ROOM}"
            ),
            params![run_id, now, task_id],
        )
        .await?;
    if won == 1 {
        return Ok(Ok(()));
    }
    let running = match query_opt(
        tx,
        "SELECT running_run_id FROM tasks WHERE id = $1",
        params![task_id],
    )
    .await?
    {
        Some(mut row) => Some(row.opt_text(0)?.unwrap_or_else(|| "?".to_owned())),
        None => None,
    };
    Ok(Err(running))
}

/// Counts a run not started because the configuration was busy.
async fn count_skip<T: Tx + ?Sized>(tx: &T, task_id: i64) -> anyhow::Result<()> {
    tx.exec(
        "UPDATE tasks SET skipped_count = skipped_count + 1 WHERE id = $1",
        params![task_id],
    )
    .await?;
    Ok(())
}

/// Starts a manual run unless one is running (then records it skipped).
pub async fn claim_manual<T: Tx + ?Sized>(
    tx: &T,
    task_id: i64,
    run: &NewRun,
) -> anyhow::Result<Claim> {
    match take_configuration(tx, task_id, &run.id, run.started_at).await? {
        Ok(()) => {
            insert_run(tx, run, RunState::Running).await?;
            Ok(Claim::Claimed)
        }
        Err(Some(running)) => {
            count_skip(tx, task_id).await?;
            let mut skipped = run.clone();
            skipped.message = not_started_message(&running);
            insert_run(tx, &skipped, RunState::Skipped).await?;
            Ok(Claim::AlreadyRunning { run_id: running })
        }
        Err(None) => Ok(Claim::Lost),
    }
}

/// Records a manual run of configuration `task_id` for an instance to pick
/// up; its id, or `None` if there is no such configuration.
pub async fn queue_manual_run<T: Tx + ?Sized>(
    tx: &T,
    task_id: i64,
    requested_by: &str,
) -> anyhow::Result<Option<String>> {
    let Some(task) = super::tasks::by_id(tx, task_id).await? else {
        return Ok(None);
    };
    let message = format!("requested by {requested_by}");
    Ok(Some(
        insert_queued(tx, &task, Trigger::Manual, &message, None, None).await?,
    ))
}

/// Queues a run on start of instance `instance` (with `roles`) for each
/// configuration that asks for one (`on_start`) and that it may run,
/// enabled or not, for that instance alone
/// to start; runs on start an earlier process of the same instance left
/// queued (it stopped before it ran them) are cancelled, so a start runs
/// each once. The ids of the runs queued.
pub async fn queue_startup_runs<T: Tx + ?Sized>(
    tx: &T,
    instance: &str,
    roles: &[String],
    at: DateTime<Utc>,
) -> anyhow::Result<Vec<(i64, String)>> {
    tx.exec(
        "UPDATE runs SET state = 'cancelled', finished_at = $2,
                message = 'not started: its instance started again first'
         WHERE trigger = 'startup' AND state = 'queued' AND instance = $1",
        params![instance, at],
    )
    .await?;
    let sql = format!(
        "SELECT {} FROM tasks WHERE on_start = TRUE",
        super::rows::TASK_COLUMNS
    );
    let tasks = rows::all(tx.query(&sql, &[]).await?, rows::task)?;
    let message = format!("run on the start of instance {instance}");
    let mut queued = Vec::with_capacity(tasks.len());
    // Only those this instance may run (it has their roles).
    for task in tasks
        .into_iter()
        .filter(|t| t.config.missing_roles(roles).is_empty())
    {
        let id = insert_queued(tx, &task, Trigger::Startup, &message, None, Some(instance)).await?;
        queued.push((task.id, id));
    }
    Ok(queued)
}

/// Records a run of `task` queued for an instance to pick up (`instance`:
/// for that one alone), queued now by the store's clock; its id.
async fn insert_queued<T: Tx + ?Sized>(
    tx: &T,
    task: &TaskRecord,
    trigger: Trigger,
    message: &str,
    payload: Option<&str>,
    instance: Option<&str>,
) -> anyhow::Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    let sql = format!(
        "INSERT INTO runs (id, task_id, task_name, implementation, trigger, queued_at, state,
                           message, instance, payload)
         VALUES ($1, $2, $3, $4, $5, {}, 'queued', $6, $8, $7)",
        T::NOW
    );
    tx.exec(
        &sql,
        params![
            &id,
            task.id,
            &task.config.name,
            &task.config.implementation,
            trigger.as_str(),
            message,
            payload,
            instance
        ],
    )
    .await?;
    Ok(id)
}

/// Moves a queued run to running if its configuration has room. If it has
/// none, a manual run is recorded skipped; a scheduled slot waiting its
/// turn (overlap policies `queue` and `replace`) goes on waiting. The
/// queued row is locked first, so of two instances picking up the same
/// request one starts it and the other finds it gone.
pub async fn start_queued_run<T: Tx + ?Sized>(
    tx: &T,
    run_id: &str,
    instance: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> anyhow::Result<Claim> {
    let sql = format!(
        "SELECT task_id, trigger FROM runs WHERE id = $1 AND state = 'queued'{}",
        T::FOR_UPDATE
    );
    let Some(mut queued) = query_opt(tx, &sql, params![run_id]).await? else {
        return Ok(Claim::Lost);
    };
    let task_id = queued.int(0)?;
    let waits_its_turn = waits_its_turn(&queued.text(1)?);
    match take_configuration(tx, task_id, run_id, now).await? {
        Ok(()) => {
            tx.exec(
                "UPDATE runs SET state = 'running', started_at = $1, lease_until = $2,
                        instance = $3
                 WHERE id = $4",
                params![now, lease_until, instance, run_id],
            )
            .await?;
            Ok(Claim::Claimed)
        }
        Err(Some(running)) if waits_its_turn => Ok(Claim::AlreadyRunning { run_id: running }),
        Err(Some(running)) => {
            count_skip(tx, task_id).await?;
            tx.exec(
                "UPDATE runs SET state = 'skipped', started_at = $1, finished_at = $1,
                        instance = $2, message = $3
                 WHERE id = $4",
                params![now, instance, &not_started_message(&running), run_id],
            )
            .await?;
            Ok(Claim::AlreadyRunning { run_id: running })
        }
        Err(None) => Ok(Claim::Lost),
    }
}

/// Finishes that fail alone in a row, none recorded yet, after which
/// [`finish_runs_isolated`] stops trying the rest: the store is failing,
/// not the finishes, and an unreachable database would otherwise cost a
/// timeout per run of the batch.
pub const FAILING_STORE: usize = 3;

/// Records a batch of finishes with `commit` (one transaction per call);
/// if the batch fails as a whole, each finish again in a transaction of its
/// own, so one that cannot be written (whatever a hostile task put in it)
/// fails alone and the rest of the batch is recorded. A finish that fails
/// alone is logged and reads as not finished; its run stays `running` until
/// its lease expires and it is recorded abandoned. If every finish fails
/// alone, or the first [`FAILING_STORE`] tried alone all fail, the store
/// itself is taken to be failing and the batch's error is returned.
pub async fn finish_runs_isolated<'a, F, Fut>(
    finishes: &'a [RunFinish],
    commit: F,
) -> StoreResult<Vec<bool>>
where
    F: Fn(&'a [RunFinish]) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Vec<bool>>>,
{
    let batch_error = match commit(finishes).await {
        // An unavailable store fails each alone too; the caller holds them.
        Err(e) if finishes.len() > 1 && !e.is_unavailable() => e,
        result => return result,
    };
    tracing::warn!(
        "recording {} finished runs together failed, recording each alone: {batch_error}",
        finishes.len()
    );
    let mut results = Vec::with_capacity(finishes.len());
    let mut failed = 0;
    let mut recorded = false;
    for finish in finishes {
        match commit(std::slice::from_ref(finish)).await {
            Ok(done) => {
                recorded = true;
                results.push(done.first().copied().unwrap_or(false));
            }
            Err(_) if !recorded && failed + 1 >= FAILING_STORE => return Err(batch_error),
            Err(e) => {
                tracing::error!(
                    run = %finish.run_id,
                    "the end of run {} cannot be recorded: {e}",
                    finish.run_id
                );
                failed += 1;
                results.push(false);
            }
        }
    }
    if failed == finishes.len() {
        return Err(batch_error);
    }
    Ok(results)
}

/// Records finished runs item by item: run rows locked in id order, then
/// each finish in task-id order; results in input order.
pub async fn finish_runs<T: Tx + ?Sized>(
    tx: &T,
    finishes: &[RunFinish],
) -> anyhow::Result<Vec<bool>> {
    let ids: Vec<&str> = finishes.iter().map(|f| f.run_id.as_str()).collect();
    tx.lock_runs(&ids).await?;
    let mut order: Vec<usize> = (0..finishes.len()).collect();
    order.sort_by_key(|&i| finishes[i].task_id);
    let mut results = vec![false; finishes.len()];
    for i in order {
        results[i] = finish_run(tx, &finishes[i]).await?;
    }
    Ok(results)
}

/// Records how one run ended: only a run still `running` finishes; a run
/// abandoned meanwhile (lease expired) keeps its record and touches nothing
/// else. The configuration is freed only if it still names this run.
pub async fn finish_run<T: Tx + ?Sized>(tx: &T, f: &RunFinish) -> anyhow::Result<bool> {
    let o = &f.outcome;
    let finished = tx
        .exec(
            "UPDATE runs SET state = $1, reason = $2, message = $3, finished_at = $4,
                    duration_us = $5, fuel = $6, peak_memory = $7, component_sha256 = $8,
                    component_version = $9, lease_until = NULL,
                    started_at = COALESCE($11, started_at), inputs = $12
             WHERE id = $10 AND state = 'running'",
            params![
                o.state.as_str(),
                o.reason.map(|r| r.as_str()),
                &o.message,
                f.finished_at,
                o.duration_us,
                o.fuel,
                o.peak_memory_bytes,
                &o.component_sha256,
                &o.component_version,
                &f.run_id,
                f.started_at,
                &f.inputs,
            ],
        )
        .await?;
    if finished == 0 {
        return Ok(false);
    }
    let (retry_at, retry_attempt) = match f.retry {
        Some((at, attempt)) => (Some(at), attempt),
        None => (None, 0),
    };
    // Its row changed from running above, so the run is one fewer going on.
    tx.exec(
        &format!(
            "UPDATE tasks SET running_run_id = {NEWEST_LEFT}, running_count = {ONE_LESS},
                    last_outcome = $3, last_message = $4, failed_count = failed_count + $5,
                    retry_at = $6, retry_attempt = $7
             WHERE id = $1"
        ),
        params![
            f.task_id,
            &f.run_id,
            o.state.as_str(),
            &o.message,
            i64::from(o.state.is_failure()),
            retry_at,
            retry_attempt,
        ],
    )
    .await?;
    tx.insert_events(&o.events).await?;
    if let Some(state) = &f.task_state {
        tx.replace_state(f.task_id, state).await?;
    }
    queue_follow_ups(tx, &f.follow_ups).await?;
    Ok(true)
}

/// Queues a run of each follow-up's configuration, carrying what it is
/// told. A configuration deleted meanwhile gets none.
pub async fn queue_follow_ups<T: Tx + ?Sized>(
    tx: &T,
    follow_ups: &[FollowUp],
) -> anyhow::Result<()> {
    for f in follow_ups {
        let Some(task) = super::tasks::by_name(tx, &f.configuration).await? else {
            continue;
        };
        let payload = Some(f.payload.as_str());
        insert_queued(tx, &task, Trigger::FollowUp, &f.message, payload, None).await?;
    }
    Ok(())
}

/// Extends leases one run at a time (PostgreSQL: one statement).
pub async fn renew_leases<T: Tx + ?Sized>(
    tx: &T,
    run_ids: &[String],
    until: DateTime<Utc>,
) -> anyhow::Result<()> {
    for id in run_ids {
        tx.exec(
            "UPDATE runs SET lease_until = $1 WHERE id = $2 AND state = 'running'",
            params![until, id],
        )
        .await?;
    }
    Ok(())
}

/// Records runs whose lease expired before `now` as abandoned. Runs
/// locked by someone else right now are left alone (PostgreSQL): that is
/// their instance finishing them, or another survivor abandoning them.
pub async fn abandon_expired<T: Tx + ?Sized>(
    tx: &T,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<RunRecord>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' AND lease_until < $1
         ORDER BY id{}",
        T::FOR_UPDATE_SKIP_LOCKED
    );
    let mut expired = rows::all(tx.query(&sql, params![now]).await?, rows::run)?;
    expired.sort_by_key(|r| r.task_id);
    for run in &expired {
        let message = format!(
            "abandoned: instance {} stopped renewing the run's lease (crashed or killed?)",
            run.instance.as_deref().unwrap_or("?")
        );
        tx.exec(
            "UPDATE runs SET state = 'abandoned', finished_at = $1, message = $2,
                    lease_until = NULL
             WHERE id = $3 AND state = 'running'",
            params![now, &message, &run.id],
        )
        .await?;
        tx.exec(
            &format!(
                "UPDATE tasks SET running_run_id = {NEWEST_LEFT}, running_count = {ONE_LESS},
                        last_outcome = 'abandoned', last_message = $3,
                        failed_count = failed_count + 1
                 WHERE id = $1"
            ),
            params![run.task_id, &run.id, &message],
        )
        .await?;
        tx.insert_events(&[NewEvent {
            at: now,
            level: Level::Error,
            source: EventSource::Host,
            code: "RUN_ABANDONED".into(),
            message: message.clone(),
            task_id: Some(run.task_id),
            run_id: Some(run.id.clone()),
        }])
        .await?;
        // An abandoned run is a failure its follow-ups hear of; it is not
        // retried, so its `on_failure` runs now.
        if let Some(task) = super::tasks::by_id(tx, run.task_id).await?
            && !task.config.on_failure.is_empty()
        {
            let ended = EndedRun {
                configuration: run.task_name.clone(),
                identifier: run.implementation.clone(),
                run_id: run.id.clone(),
                outcome: RunState::Abandoned,
                message,
                trigger: run.trigger,
                attempt: run.attempt,
                scheduled_for: run.scheduled_for,
                started_at: run.started_at,
                finished_at: now,
                instance: run.instance.clone(),
            };
            queue_follow_ups(tx, &ended.follow_ups(&task.config, false)).await?;
        }
    }
    Ok(expired)
}

pub async fn get_run<T: Tx + ?Sized>(tx: &T, id: &str) -> anyhow::Result<Option<RunRecord>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
    query_opt(tx, &sql, params![id])
        .await?
        .map(rows::run)
        .transpose()
}

/// Ids of runs starting with `prefix`. `substr` compares bytes as they
/// are on both backends (a collation's ordering would not).
pub async fn run_ids_starting_with<T: Tx + ?Sized>(
    tx: &T,
    prefix: &str,
    limit: u32,
) -> anyhow::Result<Vec<String>> {
    let rows = tx
        .query(
            "SELECT id FROM runs
             WHERE substr(id, 1, length(CAST($1 AS TEXT))) = CAST($1 AS TEXT)
             ORDER BY id LIMIT $2",
            params![prefix, i64::from(limit)],
        )
        .await?;
    rows.into_iter().map(|mut r| r.text(0)).collect()
}

/// What run `id` was given (see [`RunLedger::run_inputs`]).
/// `None` when there is no such run.
pub async fn run_inputs<T: Tx + ?Sized>(
    tx: &T,
    id: &str,
) -> anyhow::Result<Option<Option<String>>> {
    query_opt(tx, "SELECT inputs FROM runs WHERE id = $1", params![id])
        .await?
        .map(|mut row| row.opt_text(0))
        .transpose()
}

/// Runs newest first. The casts type the parameters a filter leaves NULL
/// (PostgreSQL must know them; SQLite takes them as they are).
pub async fn list_runs<T: Tx + ?Sized>(
    tx: &T,
    filter: &RunFilter,
) -> anyhow::Result<Vec<RunRecord>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE (CAST($1 AS BIGINT) IS NULL OR task_id = $1)
           AND (CAST($2 AS TEXT) IS NULL OR state = $2)
           AND (CAST($4 AS TIMESTAMPTZ) IS NULL
                OR COALESCE(started_at, queued_at, scheduled_for) >= $4)
           AND (CAST($5 AS TIMESTAMPTZ) IS NULL
                OR COALESCE(started_at, queued_at, scheduled_for) < $5)
         ORDER BY id DESC LIMIT $3"
    );
    let rows = tx
        .query(
            &sql,
            params![
                filter.task_id,
                filter.state.map(RunState::as_str),
                limit(filter.limit),
                filter.since,
                filter.until,
            ],
        )
        .await?;
    rows::all(rows, rows::run)
}

/// Whether a queued run of this trigger waits for room rather than being
/// recorded skipped when its configuration is busy: a slot waiting its
/// turn (overlap policies `queue`, `replace`), a follow-up, which stands
/// for an event that happened (an alert is not dropped because the
/// previous one is still being sent), and a backfill's slot.
fn waits_its_turn(trigger: &str) -> bool {
    [
        Trigger::Schedule,
        Trigger::FollowUp,
        Trigger::Backfill,
        Trigger::Startup,
    ]
    .iter()
    .any(|t| t.as_str() == trigger)
}

/// Queued runs to try now: manual runs, and those waiting their turn
/// (see [`waits_its_turn`]) whose configuration has room (the others would
/// only be tried in vain, every pass, for as long as a long run goes on).
pub async fn queued_runs<T: Tx + ?Sized>(tx: &T) -> anyhow::Result<Vec<RunRecord>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs
         WHERE state = 'queued'
           AND (trigger NOT IN ('schedule', 'follow-up', 'backfill', 'startup')
                OR EXISTS (SELECT 1 FROM tasks t WHERE t.id = runs.task_id
                           AND t.running_count < t.max_concurrent))
         ORDER BY id"
    );
    rows::all(tx.query(&sql, &[]).await?, rows::run)
}

/// A `LIMIT` for an optional limit: SQLite rejects NULL, PostgreSQL a
/// negative number; both take the largest integer as none.
pub fn limit(limit: Option<u32>) -> i64 {
    limit.map_or(i64::MAX, i64::from)
}

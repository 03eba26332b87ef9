//! The multi-statement writes, each run inside one transaction by the
//! caller. Under PostgreSQL's default isolation (read committed) a
//! conditional `UPDATE` that waited for another transaction's lock
//! re-checks its condition against the row that transaction committed, so
//! "`next_run_at` is still this slot" is decided by the database: of two
//! instances claiming one slot, exactly one moves it on.
//!
//! Rows are locked in one global order so concurrent batches cannot
//! deadlock: run rows before task rows, each in ascending id order.
//!
//! Batches (claims, finishes) are set-based: the rows are locked in that
//! order by one `SELECT ... ORDER BY id FOR UPDATE`, then each kind of
//! change is one statement over arrays (`UNNEST`), so a batch costs a
//! handful of round trips whatever its size. Round trips, not the
//! database's work, are what a cluster's claims and finishes spend their
//! time on. A batch naming one configuration (or run) twice, which the
//! dispatcher never sends, goes item by item instead, where each item sees
//! the one before.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::rows::{self, ms, opt_ms};
use crate::model::{EventSource, Level, NewEvent, RunRecord, RunState};
use crate::store::{Claim, NewRun, OnOverlap, RunFinish, SlotClaim};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Executes one (cached) statement; returns the number of rows it changed.
pub async fn exec(tx: &Transaction<'_>, sql: &str, params: Params<'_>) -> anyhow::Result<u64> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, params).await?)
}

/// Runs one (cached) query.
pub async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> anyhow::Result<Vec<Row>> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query(&stmt, params).await?)
}

pub async fn insert_run(tx: &Transaction<'_>, run: &NewRun, state: RunState) -> anyhow::Result<()> {
    let finished = (state == RunState::Skipped).then_some(ms(run.started_at));
    let lease = (state == RunState::Running).then_some(ms(run.lease_until));
    exec(
        tx,
        "INSERT INTO runs (id, task_id, task_name, implementation, trigger, attempt, scheduled_for,
                           started_at, finished_at, lease_until, state, message, instance)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &run.id,
            &run.task_id,
            &run.task_name,
            &run.implementation,
            &rows::trigger_str(run.trigger),
            &i64::from(run.attempt),
            &opt_ms(run.scheduled_for),
            &ms(run.started_at),
            &finished,
            &lease,
            &state.as_str(),
            &run.message,
            &run.instance,
        ],
    )
    .await?;
    Ok(())
}

/// Inserts many runs in one statement (all in `state`).
async fn insert_runs(
    tx: &Transaction<'_>,
    runs: &[&NewRun],
    state: RunState,
) -> anyhow::Result<()> {
    match runs {
        [] => return Ok(()),
        [run] => return insert_run(tx, run, state).await,
        _ => {}
    }
    let id: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let task_id: Vec<i64> = runs.iter().map(|r| r.task_id).collect();
    let task_name: Vec<&str> = runs.iter().map(|r| r.task_name.as_str()).collect();
    let implementation: Vec<&str> = runs.iter().map(|r| r.implementation.as_str()).collect();
    let trigger: Vec<&str> = runs.iter().map(|r| rows::trigger_str(r.trigger)).collect();
    let attempt: Vec<i64> = runs.iter().map(|r| i64::from(r.attempt)).collect();
    let scheduled_for: Vec<Option<DateTime<Utc>>> =
        runs.iter().map(|r| opt_ms(r.scheduled_for)).collect();
    let started_at: Vec<DateTime<Utc>> = runs.iter().map(|r| ms(r.started_at)).collect();
    let finished_at: Vec<Option<DateTime<Utc>>> = runs
        .iter()
        .map(|r| (state == RunState::Skipped).then_some(ms(r.started_at)))
        .collect();
    let lease_until: Vec<Option<DateTime<Utc>>> = runs
        .iter()
        .map(|r| (state == RunState::Running).then_some(ms(r.lease_until)))
        .collect();
    let message: Vec<&str> = runs.iter().map(|r| r.message.as_str()).collect();
    let instance: Vec<&str> = runs.iter().map(|r| r.instance.as_str()).collect();
    exec(
        tx,
        "INSERT INTO runs (id, task_id, task_name, implementation, trigger, attempt, scheduled_for,
                           started_at, finished_at, lease_until, state, message, instance)
         SELECT id, task_id, task_name, implementation, trigger, attempt, scheduled_for,
                started_at, finished_at, lease_until, $11, message, instance
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
                     $12::text[], $13::text[])
              AS r(id, task_id, task_name, implementation, trigger, attempt, scheduled_for,
                   started_at, finished_at, lease_until, message, instance)",
        &[
            &id,
            &task_id,
            &task_name,
            &implementation,
            &trigger,
            &attempt,
            &scheduled_for,
            &started_at,
            &finished_at,
            &lease_until,
            &state.as_str(),
            &message,
            &instance,
        ],
    )
    .await?;
    Ok(())
}

/// True if two items share a key.
fn has_duplicates<T: Ord>(keys: impl Iterator<Item = T>) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    keys.into_iter().any(|k| !seen.insert(k))
}

/// Locks the rows of `table` with these ids, in ascending id order.
async fn lock_in_order<T: ToSql + Sync>(
    tx: &Transaction<'_>,
    table: &str,
    ids: &[T],
) -> anyhow::Result<()> {
    let sql = format!("SELECT id FROM {table} WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    query(tx, &sql, &[&ids]).await?;
    Ok(())
}

/// Appends events in one statement, in order (ids ascend with the input).
pub async fn insert_events(tx: &Transaction<'_>, events: &[NewEvent]) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let at: Vec<DateTime<Utc>> = events.iter().map(|e| ms(e.at)).collect();
    let level: Vec<i64> = events.iter().map(|e| rows::level_to_int(e.level)).collect();
    let source: Vec<&str> = events.iter().map(|e| rows::source_str(e.source)).collect();
    let code: Vec<&str> = events.iter().map(|e| e.code.as_str()).collect();
    let message: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    let task_id: Vec<Option<i64>> = events.iter().map(|e| e.task_id).collect();
    let run_id: Vec<Option<&str>> = events.iter().map(|e| e.run_id.as_deref()).collect();
    exec(
        tx,
        "INSERT INTO events (at, level, source, code, message, task_id, run_id)
         SELECT at, level, source, code, message, task_id, run_id FROM UNNEST($1::timestamptz[], $2::bigint[], $3::text[], $4::text[],
                              $5::text[], $6::bigint[], $7::text[])
         WITH ORDINALITY AS e(at, level, source, code, message, task_id, run_id, n)
         ORDER BY n",
        &[&at, &level, &source, &code, &message, &task_id, &run_id],
    )
    .await?;
    Ok(())
}

/// Claims slots; results in input order. Each claim succeeds only if its
/// slot is still the configuration's next fire time, it is enabled and
/// nothing runs; a claim that finds a run going on records the slot skipped
/// (or leaves it due, per its [`OnOverlap`]).
pub async fn claim_slots(tx: &Transaction<'_>, claims: &[SlotClaim]) -> anyhow::Result<Vec<Claim>> {
    if claims.len() < 2 || has_duplicates(claims.iter().map(|c| c.run.task_id)) {
        // Item by item, in task-id order (the lock order).
        let mut order: Vec<usize> = (0..claims.len()).collect();
        order.sort_by_key(|&i| claims[i].run.task_id);
        let mut results = vec![Claim::Lost; claims.len()];
        for i in order {
            results[i] = claim_slot(tx, &claims[i]).await?;
        }
        return Ok(results);
    }
    let task_ids: Vec<i64> = claims.iter().map(|c| c.run.task_id).collect();
    let slots: Vec<DateTime<Utc>> = claims.iter().map(|c| ms(c.slot)).collect();
    // Once the rows are ours, what the statements below read of them stays
    // true until commit.
    lock_in_order(tx, "tasks", &task_ids).await?;
    let nexts: Vec<Option<DateTime<Utc>>> = claims.iter().map(|c| opt_ms(c.next)).collect();
    let run_ids: Vec<&str> = claims.iter().map(|c| c.run.id.as_str()).collect();
    let started: Vec<DateTime<Utc>> = claims.iter().map(|c| ms(c.run.started_at)).collect();
    let won: std::collections::HashSet<i64> = query(
        tx,
        "UPDATE tasks t SET next_run_at = c.next, running_run_id = c.run_id,
                last_run_at = c.started_at, run_count = t.run_count + 1, retry_at = NULL,
                retry_attempt = 0
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::text[],
                     $5::timestamptz[]) AS c(task_id, slot, next, run_id, started_at)
         WHERE t.id = c.task_id AND t.next_run_at = c.slot AND t.enabled
           AND t.running_run_id IS NULL
         RETURNING t.id",
        &[&task_ids, &slots, &nexts, &run_ids, &started],
    )
    .await?
    .iter()
    .map(|row| row.try_get(0))
    .collect::<Result<_, _>>()?;
    let claimed: Vec<&NewRun> = claims
        .iter()
        .filter(|c| won.contains(&c.run.task_id))
        .map(|c| &c.run)
        .collect();
    insert_runs(tx, &claimed, RunState::Running).await?;
    let mut results: Vec<Claim> = claims
        .iter()
        .map(|c| {
            if won.contains(&c.run.task_id) {
                Claim::Claimed
            } else {
                Claim::Lost
            }
        })
        .collect();
    let rest: Vec<usize> = (0..claims.len())
        .filter(|&i| results[i] == Claim::Lost)
        .collect();
    if rest.is_empty() {
        return Ok(results);
    }

    // The others: still at their slot with a run going on, or lost.
    let rest_ids: Vec<i64> = rest.iter().map(|&i| task_ids[i]).collect();
    let rest_slots: Vec<DateTime<Utc>> = rest.iter().map(|&i| slots[i]).collect();
    let mut running: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    for row in query(
        tx,
        "SELECT t.id, t.running_run_id FROM tasks t
         JOIN UNNEST($1::bigint[], $2::timestamptz[]) AS c(task_id, slot)
           ON t.id = c.task_id AND t.next_run_at = c.slot
         WHERE t.running_run_id IS NOT NULL",
        &[&rest_ids, &rest_slots],
    )
    .await?
    {
        running.insert(row.try_get(0)?, row.try_get(1)?);
    }
    let to_skip: Vec<usize> = rest
        .iter()
        .copied()
        .filter(|&i| running.contains_key(&task_ids[i]) && claims[i].on_overlap == OnOverlap::Skip)
        .collect();
    let moved: std::collections::HashSet<i64> = if to_skip.is_empty() {
        Default::default()
    } else {
        let ids: Vec<i64> = to_skip.iter().map(|&i| task_ids[i]).collect();
        let at: Vec<DateTime<Utc>> = to_skip.iter().map(|&i| slots[i]).collect();
        let next: Vec<Option<DateTime<Utc>>> = to_skip.iter().map(|&i| nexts[i]).collect();
        query(
            tx,
            "UPDATE tasks t SET next_run_at = c.next, skipped_count = t.skipped_count + 1
             FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[])
                  AS c(task_id, slot, next)
             WHERE t.id = c.task_id AND t.next_run_at = c.slot
             RETURNING t.id",
            &[&ids, &at, &next],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?
    };
    let mut skipped = Vec::new();
    for &i in &rest {
        let Some(run_id) = running.get(&task_ids[i]) else {
            continue;
        };
        if claims[i].on_overlap == OnOverlap::Skip {
            if !moved.contains(&task_ids[i]) {
                continue;
            }
            let mut run = claims[i].run.clone();
            run.message = format!("skipped: the previous run {run_id} was still running");
            skipped.push(run);
        }
        results[i] = Claim::AlreadyRunning {
            run_id: run_id.clone(),
        };
    }
    insert_runs(tx, &skipped.iter().collect::<Vec<_>>(), RunState::Skipped).await?;
    Ok(results)
}

async fn claim_slot(tx: &Transaction<'_>, c: &SlotClaim) -> anyhow::Result<Claim> {
    let run = &c.run;
    let won = exec(
        tx,
        "UPDATE tasks SET next_run_at = $1, running_run_id = $2, last_run_at = $3,
                run_count = run_count + 1, retry_at = NULL, retry_attempt = 0
         WHERE id = $4 AND next_run_at = $5 AND enabled AND running_run_id IS NULL",
        &[
            &opt_ms(c.next),
            &run.id,
            &ms(run.started_at),
            &run.task_id,
            &ms(c.slot),
        ],
    )
    .await?;
    if won == 1 {
        insert_run(tx, run, RunState::Running).await?;
        return Ok(Claim::Claimed);
    }
    let running = query(
        tx,
        "SELECT running_run_id FROM tasks WHERE id = $1 AND next_run_at = $2",
        &[&run.task_id, &ms(c.slot)],
    )
    .await?;
    let Some(Some(running)) = running
        .first()
        .map(|r| r.try_get::<_, Option<String>>(0))
        .transpose()?
    else {
        return Ok(Claim::Lost);
    };
    if c.on_overlap == OnOverlap::Skip {
        // Conditional again: another instance may be skipping this very
        // slot; only the one that moves the schedule records the skip.
        let moved = exec(
            tx,
            "UPDATE tasks SET next_run_at = $1, skipped_count = skipped_count + 1
             WHERE id = $2 AND next_run_at = $3",
            &[&opt_ms(c.next), &run.task_id, &ms(c.slot)],
        )
        .await?;
        if moved == 0 {
            return Ok(Claim::Lost);
        }
        let mut skipped = run.clone();
        skipped.message = format!("skipped: the previous run {running} was still running");
        insert_run(tx, &skipped, RunState::Skipped).await?;
    }
    Ok(Claim::AlreadyRunning { run_id: running })
}

/// Records finished runs: locks their run rows (id order), then updates
/// them and their configurations (task-id order); results in input order.
/// Only a run still `running` finishes.
pub async fn finish_runs(
    tx: &Transaction<'_>,
    finishes: &[RunFinish],
) -> anyhow::Result<Vec<bool>> {
    let ids: Vec<&str> = finishes.iter().map(|f| f.run_id.as_str()).collect();
    lock_in_order(tx, "runs", &ids).await?;
    let mut order: Vec<usize> = (0..finishes.len()).collect();
    order.sort_by_key(|&i| finishes[i].task_id);
    if finishes.len() < 2
        || has_duplicates(ids.iter())
        || has_duplicates(finishes.iter().map(|f| f.task_id))
    {
        let mut results = vec![false; finishes.len()];
        for i in order {
            results[i] = finish_run(tx, &finishes[i]).await?;
        }
        return Ok(results);
    }

    let state: Vec<&str> = finishes.iter().map(|f| f.outcome.state.as_str()).collect();
    let reason: Vec<Option<&str>> = finishes
        .iter()
        .map(|f| f.outcome.reason.map(|r| r.as_str()))
        .collect();
    let message: Vec<&str> = finishes
        .iter()
        .map(|f| f.outcome.message.as_str())
        .collect();
    let finished_at: Vec<DateTime<Utc>> = finishes.iter().map(|f| ms(f.finished_at)).collect();
    let duration_us: Vec<i64> = finishes
        .iter()
        .map(|f| f.outcome.duration_us as i64)
        .collect();
    let fuel: Vec<i64> = finishes.iter().map(|f| f.outcome.fuel as i64).collect();
    let peak_memory: Vec<i64> = finishes
        .iter()
        .map(|f| f.outcome.peak_memory_bytes as i64)
        .collect();
    let sha256: Vec<Option<&str>> = finishes
        .iter()
        .map(|f| f.outcome.component_sha256.as_deref())
        .collect();
    let version: Vec<Option<&str>> = finishes
        .iter()
        .map(|f| f.outcome.component_version.as_deref())
        .collect();
    let finished: std::collections::HashSet<String> = query(
        tx,
        "UPDATE runs r SET state = f.state, reason = f.reason, message = f.message,
                finished_at = f.finished_at, duration_us = f.duration_us, fuel = f.fuel,
                peak_memory = f.peak_memory, component_sha256 = f.sha256,
                component_version = f.version, lease_until = NULL
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::text[])
              AS f(id, state, reason, message, finished_at, duration_us, fuel, peak_memory,
                   sha256, version)
         WHERE r.id = f.id AND r.state = 'running'
         RETURNING r.id",
        &[
            &ids,
            &state,
            &reason,
            &message,
            &finished_at,
            &duration_us,
            &fuel,
            &peak_memory,
            &sha256,
            &version,
        ],
    )
    .await?
    .iter()
    .map(|row| row.try_get(0))
    .collect::<Result<_, _>>()?;
    // Runs abandoned meanwhile (lease expired) keep their record and touch
    // nothing else.
    let done: Vec<&RunFinish> = order
        .iter()
        .map(|&i| &finishes[i])
        .filter(|f| finished.contains(&f.run_id))
        .collect();
    if !done.is_empty() {
        let task_id: Vec<i64> = done.iter().map(|f| f.task_id).collect();
        lock_in_order(tx, "tasks", &task_id).await?;
        let run_id: Vec<&str> = done.iter().map(|f| f.run_id.as_str()).collect();
        let outcome: Vec<&str> = done.iter().map(|f| f.outcome.state.as_str()).collect();
        let message: Vec<&str> = done.iter().map(|f| f.outcome.message.as_str()).collect();
        let failed: Vec<i64> = done
            .iter()
            .map(|f| i64::from(f.outcome.state.is_failure()))
            .collect();
        let retry_at: Vec<Option<DateTime<Utc>>> =
            done.iter().map(|f| f.retry.map(|(at, _)| ms(at))).collect();
        let retry_attempt: Vec<i64> = done
            .iter()
            .map(|f| f.retry.map_or(0, |(_, attempt)| i64::from(attempt)))
            .collect();
        exec(
            tx,
            "UPDATE tasks t SET running_run_id = NULL, last_outcome = f.outcome,
                    last_message = f.message, failed_count = t.failed_count + f.failed,
                    retry_at = f.retry_at, retry_attempt = f.retry_attempt
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                         $6::timestamptz[], $7::bigint[])
                  AS f(task_id, run_id, outcome, message, failed, retry_at, retry_attempt)
             WHERE t.id = f.task_id AND t.running_run_id = f.run_id",
            &[
                &task_id,
                &run_id,
                &outcome,
                &message,
                &failed,
                &retry_at,
                &retry_attempt,
            ],
        )
        .await?;
        let events: Vec<NewEvent> = done.iter().flat_map(|f| f.outcome.events.clone()).collect();
        insert_events(tx, &events).await?;
        let with_state: Vec<&&RunFinish> = done.iter().filter(|f| f.task_state.is_some()).collect();
        if !with_state.is_empty() {
            let ids: Vec<i64> = with_state.iter().map(|f| f.task_id).collect();
            exec(
                tx,
                "DELETE FROM task_state WHERE task_id = ANY($1)",
                &[&ids],
            )
            .await?;
            let mut owner = Vec::new();
            let mut keys = Vec::new();
            let mut values = Vec::new();
            for f in &with_state {
                for (k, v) in f.task_state.iter().flatten() {
                    owner.push(f.task_id);
                    keys.push(k.as_str());
                    values.push(v.as_str());
                }
            }
            if !owner.is_empty() {
                exec(
                    tx,
                    "INSERT INTO task_state (task_id, key, value)
                     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[])",
                    &[&owner, &keys, &values],
                )
                .await?;
            }
        }
    }
    Ok(finishes
        .iter()
        .map(|f| finished.contains(&f.run_id))
        .collect())
}

async fn finish_run(tx: &Transaction<'_>, f: &RunFinish) -> anyhow::Result<bool> {
    let finished = exec(
        tx,
        "UPDATE runs SET state = $1, reason = $2, message = $3, finished_at = $4,
                duration_us = $5, fuel = $6, peak_memory = $7, component_sha256 = $8,
                component_version = $9, lease_until = NULL
         WHERE id = $10 AND state = 'running'",
        &[
            &f.outcome.state.as_str(),
            &f.outcome.reason.map(|r| r.as_str()),
            &f.outcome.message,
            &ms(f.finished_at),
            &(f.outcome.duration_us as i64),
            &(f.outcome.fuel as i64),
            &(f.outcome.peak_memory_bytes as i64),
            &f.outcome.component_sha256,
            &f.outcome.component_version,
            &f.run_id,
        ],
    )
    .await?;
    if finished == 0 {
        // Abandoned meanwhile (lease expired): its record stands.
        return Ok(false);
    }
    let failed = i64::from(f.outcome.state.is_failure());
    let (retry_at, retry_attempt) = match f.retry {
        Some((at, attempt)) => (Some(ms(at)), i64::from(attempt)),
        None => (None, 0),
    };
    exec(
        tx,
        "UPDATE tasks SET running_run_id = NULL, last_outcome = $1, last_message = $2,
                failed_count = failed_count + $3, retry_at = $4, retry_attempt = $5
         WHERE id = $6 AND running_run_id = $7",
        &[
            &f.outcome.state.as_str(),
            &f.outcome.message,
            &failed,
            &retry_at,
            &retry_attempt,
            &f.task_id,
            &f.run_id,
        ],
    )
    .await?;
    insert_events(tx, &f.outcome.events).await?;
    if let Some(state) = &f.task_state {
        exec(
            tx,
            "DELETE FROM task_state WHERE task_id = $1",
            &[&f.task_id],
        )
        .await?;
        let keys: Vec<&str> = state.keys().map(String::as_str).collect();
        let values: Vec<&str> = state.values().map(String::as_str).collect();
        exec(
            tx,
            "INSERT INTO task_state (task_id, key, value)
             SELECT $1, k, v FROM UNNEST($2::text[], $3::text[]) AS s(k, v)",
            &[&f.task_id, &keys, &values],
        )
        .await?;
    }
    Ok(true)
}

/// Records runs whose lease expired before `now` as abandoned. Runs locked
/// by someone else right now are left alone: that is their instance
/// finishing them, or another survivor abandoning them.
pub async fn abandon_expired(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<RunRecord>> {
    let expired = query(
        tx,
        &format!(
            "SELECT {} FROM runs WHERE state = 'running' AND lease_until < $1
             ORDER BY id FOR UPDATE SKIP LOCKED",
            rows::RUN_COLUMNS
        ),
        &[&ms(now)],
    )
    .await?;
    let mut expired = rows::all(&expired, rows::run)?;
    expired.sort_by_key(|r| r.task_id);
    for run in &expired {
        let message = format!(
            "abandoned: instance {} stopped renewing the run's lease (crashed or killed?)",
            run.instance.as_deref().unwrap_or("?")
        );
        exec(
            tx,
            "UPDATE runs SET state = 'abandoned', finished_at = $1, message = $2,
                    lease_until = NULL
             WHERE id = $3 AND state = 'running'",
            &[&ms(now), &message, &run.id],
        )
        .await?;
        exec(
            tx,
            "UPDATE tasks SET running_run_id = NULL, last_outcome = 'abandoned',
                    last_message = $1, failed_count = failed_count + 1
             WHERE id = $2 AND running_run_id = $3",
            &[&message, &run.task_id, &run.id],
        )
        .await?;
        insert_events(
            tx,
            &[NewEvent {
                at: now,
                level: Level::Error,
                source: EventSource::Host,
                code: "RUN_ABANDONED".into(),
                message,
                task_id: Some(run.task_id),
                run_id: Some(run.id.clone()),
            }],
        )
        .await?;
    }
    Ok(expired)
}

/// Moves a queued run to running unless its configuration is running
/// already. The queued row is locked first, so of two instances picking
/// up the same request one starts it and the other finds it gone.
pub async fn start_queued_run(
    tx: &Transaction<'_>,
    run_id: &str,
    instance: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> anyhow::Result<Claim> {
    let queued = query(
        tx,
        "SELECT task_id FROM runs WHERE id = $1 AND state = 'queued' FOR UPDATE",
        &[&run_id],
    )
    .await?;
    let Some(row) = queued.first() else {
        return Ok(Claim::Lost);
    };
    let task_id: i64 = row.try_get(0)?;
    let won = exec(
        tx,
        "UPDATE tasks SET running_run_id = $1, last_run_at = $2, run_count = run_count + 1
         WHERE id = $3 AND running_run_id IS NULL",
        &[&run_id, &ms(now), &task_id],
    )
    .await?;
    if won == 1 {
        exec(
            tx,
            "UPDATE runs SET state = 'running', started_at = $1, lease_until = $2, instance = $3
             WHERE id = $4",
            &[&ms(now), &ms(lease_until), &instance, &run_id],
        )
        .await?;
        return Ok(Claim::Claimed);
    }
    let running = query(
        tx,
        "SELECT running_run_id FROM tasks WHERE id = $1",
        &[&task_id],
    )
    .await?;
    let running: Option<String> = match running.first() {
        Some(row) => row.try_get(0)?,
        None => None,
    };
    match running {
        Some(other) => {
            exec(
                tx,
                "UPDATE runs SET state = 'skipped', started_at = $1, finished_at = $1,
                        instance = $2, message = $3
                 WHERE id = $4",
                &[
                    &ms(now),
                    &instance,
                    &format!("not started: run {other} is still running"),
                    &run_id,
                ],
            )
            .await?;
            exec(
                tx,
                "UPDATE tasks SET skipped_count = skipped_count + 1 WHERE id = $1",
                &[&task_id],
            )
            .await?;
            Ok(Claim::AlreadyRunning { run_id: other })
        }
        None => Ok(Claim::Lost),
    }
}

/// Starts a manual run unless one is running (then records it skipped).
pub async fn claim_manual(
    tx: &Transaction<'_>,
    task_id: i64,
    run: &NewRun,
) -> anyhow::Result<Claim> {
    let won = exec(
        tx,
        "UPDATE tasks SET running_run_id = $1, last_run_at = $2, run_count = run_count + 1
         WHERE id = $3 AND running_run_id IS NULL",
        &[&run.id, &ms(run.started_at), &task_id],
    )
    .await?;
    if won == 1 {
        insert_run(tx, run, RunState::Running).await?;
        return Ok(Claim::Claimed);
    }
    let running = query(
        tx,
        "SELECT running_run_id FROM tasks WHERE id = $1",
        &[&task_id],
    )
    .await?;
    let running: Option<String> = match running.first() {
        Some(row) => row.try_get(0)?,
        None => None,
    };
    match running {
        Some(run_id) => {
            let mut skipped = run.clone();
            skipped.message = format!("not started: run {run_id} is still running");
            insert_run(tx, &skipped, RunState::Skipped).await?;
            exec(
                tx,
                "UPDATE tasks SET skipped_count = skipped_count + 1 WHERE id = $1",
                &[&task_id],
            )
            .await?;
            Ok(Claim::AlreadyRunning { run_id })
        }
        None => Ok(Claim::Lost),
    }
}

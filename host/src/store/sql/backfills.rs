//! Backfills, shared by both backends. A backfill is a row with a cursor:
//! each dispatcher pass "tops up" the active ones, queueing their next
//! slots while fewer than their concurrency are queued or running, so a
//! long window never becomes a long queue, and every instance may do it:
//! the backfill rows are locked (PostgreSQL: the ones another instance is
//! topping up are passed over), and the configuration's row is locked
//! before a slot is checked, so two backfills of one configuration never
//! queue the same slot. A slot that has run already (succeeded, or queued
//! or running now) is counted and passed over; one that failed runs again.

use chrono::{DateTime, Utc};

use super::{Tx, params, query_opt, rows};
use crate::model::backfill::{BackfillCounts, BackfillRecord, BackfillState, NewBackfill};
use crate::model::{RunState, TaskRecord};

/// Most slots one top-up looks at per backfill: a long stretch of slots
/// that ran already is passed over a pass at a time, not in one
/// transaction.
const SLOTS_PER_TOP_UP: usize = 1000;

const COLUMNS: &str = "b.id, b.task_id, COALESCE(t.name, ''), b.from_at, b.to_at, b.next_slot, \
    b.concurrency, b.state, b.requested_by, b.created_at, b.total, b.already_ran";

fn record(mut r: super::Row) -> anyhow::Result<BackfillRecord> {
    Ok(BackfillRecord {
        id: r.text(0)?,
        task_id: r.int(1)?,
        task_name: r.text(2)?,
        from: r.time(3)?,
        to: r.time(4)?,
        next_slot: r.opt_time(5)?,
        concurrency: r.int(6)?.max(0) as u32,
        state: r.parsed(7)?.unwrap_or(BackfillState::Cancelled),
        requested_by: r.text(8)?,
        created_at: r.time(9)?,
        total: r.int(10)?.max(0) as u32,
        already_ran: r.int(11)?.max(0) as u32,
        runs: BackfillCounts::default(),
    })
}

/// How many of a backfill's runs are in each state.
async fn counts<T: Tx + ?Sized>(tx: &T, id: &str) -> anyhow::Result<BackfillCounts> {
    let mut counts = BackfillCounts::default();
    let rows = tx
        .query(
            "SELECT state, COUNT(*) FROM runs WHERE backfill_id = $1 GROUP BY state",
            params![id],
        )
        .await?;
    for mut row in rows {
        let n = row.int(1)?.max(0) as u32;
        match row.parsed::<RunState>(0)? {
            Some(RunState::Queued) => counts.queued += n,
            Some(RunState::Running) => counts.running += n,
            Some(RunState::Succeeded) => counts.succeeded += n,
            Some(RunState::Cancelled | RunState::Skipped) => counts.cancelled += n,
            _ => counts.failed += n,
        }
    }
    Ok(counts)
}

/// The active backfill of configuration `task_id`, if one is.
pub async fn active_of<T: Tx + ?Sized>(tx: &T, task_id: i64) -> anyhow::Result<Option<String>> {
    match query_opt(
        tx,
        "SELECT id FROM backfills WHERE task_id = $1 AND state = 'active'",
        params![task_id],
    )
    .await?
    {
        Some(mut row) => Ok(Some(row.text(0)?)),
        None => Ok(None),
    }
}

/// Records a backfill; `Err(id)` if the configuration has an active one.
pub async fn create<T: Tx + ?Sized>(tx: &T, b: &NewBackfill) -> anyhow::Result<Result<(), String>> {
    // The configuration's row first: two requests for one configuration
    // are taken one after the other, and the second sees the first.
    let sql = format!("SELECT id FROM tasks WHERE id = $1{}", T::FOR_UPDATE);
    query_opt(tx, &sql, params![b.task_id]).await?;
    if let Some(active) = active_of(tx, b.task_id).await? {
        return Ok(Err(active));
    }
    tx.exec(
        "INSERT INTO backfills (id, task_id, from_at, to_at, next_slot, concurrency, state,
                                requested_by, created_at, total, already_ran)
         VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, 0)",
        params![
            &b.id,
            b.task_id,
            b.from,
            b.to,
            b.first_slot,
            i64::from(b.concurrency),
            &b.requested_by,
            b.created_at,
            i64::from(b.total),
        ],
    )
    .await?;
    Ok(Ok(()))
}

pub async fn get<T: Tx + ?Sized>(tx: &T, id: &str) -> anyhow::Result<Option<BackfillRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM backfills b LEFT JOIN tasks t ON t.id = b.task_id WHERE b.id = $1"
    );
    let Some(row) = query_opt(tx, &sql, params![id]).await? else {
        return Ok(None);
    };
    let mut backfill = record(row)?;
    backfill.runs = counts(tx, id).await?;
    Ok(Some(backfill))
}

/// A configuration's newest backfills (at most `limit`), with progress.
pub async fn list<T: Tx + ?Sized>(
    tx: &T,
    task_id: i64,
    limit: u32,
) -> anyhow::Result<Vec<BackfillRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM backfills b LEFT JOIN tasks t ON t.id = b.task_id
         WHERE b.task_id = $1 ORDER BY b.created_at DESC, b.id DESC LIMIT $2"
    );
    let mut found = rows::all(
        tx.query(&sql, params![task_id, i64::from(limit)]).await?,
        record,
    )?;
    for b in &mut found {
        b.runs = counts(tx, &b.id).await?;
    }
    Ok(found)
}

/// Cancels a backfill: no more of its slots are queued, and those queued
/// are recorded cancelled; runs already going finish. `None` if there is
/// no such backfill.
pub async fn cancel<T: Tx + ?Sized>(
    tx: &T,
    id: &str,
    by: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<Option<BackfillRecord>> {
    let sql = format!("SELECT state FROM backfills WHERE id = $1{}", T::FOR_UPDATE);
    if query_opt(tx, &sql, params![id]).await?.is_none() {
        return Ok(None);
    }
    tx.exec(
        "UPDATE backfills SET state = 'cancelled', next_slot = NULL
         WHERE id = $1 AND state = 'active'",
        params![id],
    )
    .await?;
    tx.exec(
        "UPDATE runs SET state = 'cancelled', finished_at = $2, message = $3
         WHERE backfill_id = $1 AND state = 'queued'",
        params![
            id,
            at,
            &format!("not started: the backfill was cancelled by {by}")
        ],
    )
    .await?;
    get(tx, id).await
}

/// Whether any backfill is active: the read every dispatcher pass makes
/// first, so that passes without one take no write transaction.
pub async fn any_active<T: Tx + ?Sized>(tx: &T) -> anyhow::Result<bool> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM backfills WHERE state = 'active' LIMIT 1",
        &[],
    )
    .await?
    .is_some())
}

/// Queues the next slots of every active backfill (as each one's
/// concurrency allows) and closes the ones that are through; how many runs
/// it queued.
pub async fn top_up<T: Tx + ?Sized>(tx: &T, now: DateTime<Utc>) -> anyhow::Result<u32> {
    // The backfill rows alone (no join): PostgreSQL locks rows of one table.
    let columns = COLUMNS.replace("COALESCE(t.name, '')", "''");
    let sql = format!(
        "SELECT {columns} FROM backfills b WHERE b.state = 'active' ORDER BY b.id{}",
        T::FOR_UPDATE_SKIP_LOCKED
    );
    let active = rows::all(tx.query(&sql, &[]).await?, record)?;
    let mut queued = 0;
    for b in active {
        queued += top_up_one(tx, &b, now).await?;
    }
    Ok(queued)
}

async fn top_up_one<T: Tx + ?Sized>(
    tx: &T,
    b: &BackfillRecord,
    now: DateTime<Utc>,
) -> anyhow::Result<u32> {
    let lock = format!("SELECT id FROM tasks WHERE id = $1{}", T::FOR_UPDATE);
    query_opt(tx, &lock, params![b.task_id]).await?;
    let Some(task) = super::tasks::by_id(tx, b.task_id).await? else {
        // Its configuration was deleted: nothing left to run.
        tx.exec(
            "UPDATE backfills SET state = 'cancelled', next_slot = NULL WHERE id = $1",
            params![&b.id],
        )
        .await?;
        return Ok(0);
    };
    let counts = counts(tx, &b.id).await?;
    let outstanding = counts.queued + counts.running;
    let mut room = b.concurrency.saturating_sub(outstanding);
    let times = task.config.fire_times();
    let (mut slot, mut passed, mut queued) = (b.next_slot, 0u32, 0u32);
    let mut looked = 0;
    while let Some(s) = slot
        && room > 0
        && looked < SLOTS_PER_TOP_UP
    {
        looked += 1;
        slot = times.next_after_slot(s).filter(|n| *n < b.to);
        if has_run(tx, b.task_id, s).await? {
            passed += 1;
            continue;
        }
        queue_slot(tx, b, &task, s, now).await?;
        queued += 1;
        room -= 1;
    }
    let through = slot.is_none() && outstanding + queued == 0;
    tx.exec(
        "UPDATE backfills SET next_slot = $2, already_ran = already_ran + $3,
                state = CASE WHEN $4 THEN 'done' ELSE state END
         WHERE id = $1",
        params![&b.id, slot, i64::from(passed), through],
    )
    .await?;
    Ok(queued)
}

/// Whether slot `slot` of the configuration has run already: succeeded,
/// or queued or running now, on its schedule or in a backfill.
async fn has_run<T: Tx + ?Sized>(
    tx: &T,
    task_id: i64,
    slot: DateTime<Utc>,
) -> anyhow::Result<bool> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM runs WHERE task_id = $1 AND scheduled_for = $2
           AND trigger IN ('schedule', 'backfill')
           AND state IN ('queued', 'running', 'succeeded')",
        params![task_id, slot],
    )
    .await?
    .is_some())
}

async fn queue_slot<T: Tx + ?Sized>(
    tx: &T,
    b: &BackfillRecord,
    task: &TaskRecord,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let id = uuid::Uuid::now_v7().to_string();
    tx.exec(
        "INSERT INTO runs (id, task_id, task_name, implementation, trigger, scheduled_for,
                           queued_at, state, message, instance, backfill_id)
         VALUES ($1, $2, $3, $4, 'backfill', $5, $6, 'queued', $7, NULL, $8)",
        params![
            &id,
            task.id,
            &task.config.name,
            &task.config.implementation,
            slot,
            now,
            &format!("backfill {} asked for by {}", b.id, b.requested_by),
            &b.id,
        ],
    )
    .await?;
    Ok(())
}

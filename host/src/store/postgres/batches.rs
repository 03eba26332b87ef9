//! The set-based batches of the PostgreSQL store. The dispatcher claims
//! and finishes hundreds of runs at once; done item by item (the shared
//! rules in `store::sql::ledger`) each item costs round trips, which is
//! what a cluster's claims and finishes spend their time on. Here the rows
//! are locked in the global order by one `SELECT ... ORDER BY id FOR
//! UPDATE`, then each kind of change is one statement over arrays
//! (`UNNEST`), so a batch costs a handful of round trips whatever its size.
//!
//! The rules are the ledger's, applied to a set: the same conditions on
//! the same columns, the same checks on which rows changed (`RETURNING`
//! gives the set), the same records on a skip. A batch naming one
//! configuration (or run) twice, which the dispatcher never sends, goes
//! through the shared rules item by item instead, where each item sees the
//! one before. The conformance suite runs mixed batches against single
//! calls on both backends to hold the two to the same results.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::tx::{PgTx, lock_in_order, lock_unheld_in_order, opt_texts, texts};
use crate::model::text::storable;
use crate::model::{NewEvent, PluginRow, RunState};
use crate::store::sql::rows::{self, TASK_COLUMNS};
use crate::store::sql::{Tx, ledger, ms};
use crate::store::{Claim, NewRun, OnOverlap, RunFinish, SlotClaim};

fn opt_ms(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.map(ms)
}

/// Inserts many runs in one statement (all in `state`).
async fn insert_runs<C: GenericClient>(
    tx: &PgTx<'_, C>,
    runs: &[&NewRun],
    state: RunState,
) -> anyhow::Result<()> {
    match runs {
        [] => return Ok(()),
        [run] => return ledger::insert_run(tx, run, state).await,
        _ => {}
    }
    let id = texts(runs.iter().map(|r| r.id.as_str()));
    let task_id: Vec<i64> = runs.iter().map(|r| r.task_id).collect();
    let task_name = texts(runs.iter().map(|r| r.task_name.as_str()));
    let implementation = texts(runs.iter().map(|r| r.implementation.as_str()));
    let trigger = texts(runs.iter().map(|r| r.trigger.as_str()));
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
    let message = texts(runs.iter().map(|r| r.message.as_str()));
    let instance = texts(runs.iter().map(|r| r.instance.as_str()));
    tx.pg_exec(
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

/// Claims slots; results in input order. Each claim succeeds only if its
/// slot is still the configuration's next fire time, it is enabled and
/// nothing runs; a claim that finds a run going on records the slot skipped
/// (or leaves it due, per its [`OnOverlap`]).
///
/// A configuration whose row another transaction holds is `Lost` here, not
/// waited for: that is most likely another instance claiming the same
/// slot, whose commit decides it. Waiting would serialise the instances of
/// a cluster behind whichever locked a burst first; skipping lets each
/// claim the part nobody else holds. If the other transaction was not a
/// claim, or rolls back, the slot is still due and the next pass takes it.
pub async fn claim_slots<C: GenericClient>(
    tx: &PgTx<'_, C>,
    claims: &[SlotClaim],
) -> anyhow::Result<Vec<Claim>> {
    let task_ids: Vec<i64> = claims.iter().map(|c| c.run.task_id).collect();
    // Once the rows are ours, what the statements below read of them stays
    // true until commit.
    let locked = lock_unheld_in_order(tx, "tasks", &task_ids).await?;
    let claim_mine = async |mine: &[SlotClaim]| match mine.len() {
        0 => Ok(Vec::new()),
        1 => ledger::claim_slots(tx, mine).await,
        // One configuration twice (which the dispatcher never sends): item
        // by item, each seeing the one before.
        _ if has_duplicates(mine.iter().map(|c| c.run.task_id)) => {
            ledger::claim_slots(tx, mine).await
        }
        _ => claim_locked(tx, mine).await,
    };
    if task_ids.iter().all(|id| locked.contains(id)) {
        return claim_mine(claims).await;
    }
    let mine: Vec<SlotClaim> = claims
        .iter()
        .filter(|c| locked.contains(&c.run.task_id))
        .cloned()
        .collect();
    let mut results = claim_mine(&mine).await?.into_iter();
    Ok(claims
        .iter()
        .map(|c| match locked.contains(&c.run.task_id) {
            true => results.next().unwrap_or(Claim::Lost),
            false => Claim::Lost,
        })
        .collect())
}

/// [`claim_slots`] once every configuration's row is locked by this
/// transaction.
async fn claim_locked<C: GenericClient>(
    tx: &PgTx<'_, C>,
    claims: &[SlotClaim],
) -> anyhow::Result<Vec<Claim>> {
    let task_ids: Vec<i64> = claims.iter().map(|c| c.run.task_id).collect();
    let slots: Vec<DateTime<Utc>> = claims.iter().map(|c| ms(c.slot)).collect();
    let nexts: Vec<Option<DateTime<Utc>>> = claims.iter().map(|c| opt_ms(c.next)).collect();
    let run_ids = texts(claims.iter().map(|c| c.run.id.as_str()));
    let started: Vec<DateTime<Utc>> = claims.iter().map(|c| ms(c.run.started_at)).collect();
    let won: std::collections::HashSet<i64> = tx
        .pg_query(
            "UPDATE tasks t SET next_run_at = c.next, running_run_id = c.run_id,
                last_run_at = c.started_at, run_count = t.run_count + 1,
                running_count = t.running_count + 1, retry_at = NULL, retry_attempt = 0
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::text[],
                     $5::timestamptz[]) AS c(task_id, slot, next, run_id, started_at)
         WHERE t.id = c.task_id AND t.next_run_at = c.slot AND t.enabled
           AND t.running_count < t.max_concurrent
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

    // The others: still at their slot with no room for another run, or lost.
    let rest_ids: Vec<i64> = rest.iter().map(|&i| task_ids[i]).collect();
    let rest_slots: Vec<DateTime<Utc>> = rest.iter().map(|&i| slots[i]).collect();
    let mut running: HashMap<i64, ledger::Busy> = HashMap::new();
    for row in tx
        .pg_query(
            "SELECT t.id, COALESCE(t.running_run_id, '?'), t.running_count FROM tasks t
         JOIN UNNEST($1::bigint[], $2::timestamptz[]) AS c(task_id, slot)
           ON t.id = c.task_id AND t.next_run_at = c.slot
         WHERE t.running_count >= t.max_concurrent",
            &[&rest_ids, &rest_slots],
        )
        .await?
    {
        let count: i64 = row.try_get(2)?;
        let busy = ledger::Busy {
            run_id: row.try_get(1)?,
            count: count.max(0) as u32,
        };
        running.insert(row.try_get(0)?, busy);
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
        tx.pg_query(
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
        let Some(busy) = running.get(&task_ids[i]) else {
            continue;
        };
        match claims[i].on_overlap {
            OnOverlap::Skip if !moved.contains(&task_ids[i]) => continue,
            OnOverlap::Skip => {
                let mut run = claims[i].run.clone();
                run.message = ledger::overlap_message(busy);
                skipped.push(run);
            }
            OnOverlap::Wait => {}
            // Rare (a busy configuration under `queue` or `replace`): the
            // shared rule, on the row this transaction holds.
            OnOverlap::Queue | OnOverlap::Replace => {
                if !ledger::on_busy(tx, &claims[i], busy).await? {
                    continue;
                }
            }
        }
        results[i] = Claim::AlreadyRunning {
            run_id: busy.run_id.clone(),
        };
    }
    insert_runs(tx, &skipped.iter().collect::<Vec<_>>(), RunState::Skipped).await?;
    Ok(results)
}

/// Records finished runs: locks their run rows (id order), then updates
/// them and their configurations (task-id order); results in input order.
/// Only a run still `running` finishes.
pub async fn finish_runs<C: GenericClient>(
    tx: &PgTx<'_, C>,
    finishes: &[RunFinish],
) -> anyhow::Result<Vec<bool>> {
    let ids = texts(finishes.iter().map(|f| f.run_id.as_str()));
    if finishes.len() < 2
        || has_duplicates(ids.iter())
        || has_duplicates(finishes.iter().map(|f| f.task_id))
    {
        return ledger::finish_runs(tx, finishes).await;
    }
    lock_in_order(tx, "runs", &ids).await?;
    let mut order: Vec<usize> = (0..finishes.len()).collect();
    order.sort_by_key(|&i| finishes[i].task_id);

    let state = texts(finishes.iter().map(|f| f.outcome.state.as_str()));
    let reason = opt_texts(
        finishes
            .iter()
            .map(|f| f.outcome.reason.map(|r| r.as_str())),
    );
    let message = texts(finishes.iter().map(|f| f.outcome.message.as_str()));
    let finished_at: Vec<DateTime<Utc>> = finishes.iter().map(|f| ms(f.finished_at)).collect();
    let started_at: Vec<Option<DateTime<Utc>>> =
        finishes.iter().map(|f| f.started_at.map(ms)).collect();
    let duration_us: Vec<i64> = finishes
        .iter()
        .map(|f| f.outcome.duration_us as i64)
        .collect();
    let fuel: Vec<i64> = finishes.iter().map(|f| f.outcome.fuel as i64).collect();
    let peak_memory: Vec<i64> = finishes
        .iter()
        .map(|f| f.outcome.peak_memory_bytes as i64)
        .collect();
    let sha256 = opt_texts(
        finishes
            .iter()
            .map(|f| f.outcome.component_sha256.as_deref()),
    );
    let version = opt_texts(
        finishes
            .iter()
            .map(|f| f.outcome.component_version.as_deref()),
    );
    let inputs = opt_texts(finishes.iter().map(|f| f.inputs.as_deref()));
    let finished: std::collections::HashSet<String> = tx
        .pg_query(
            "UPDATE runs r SET state = f.state, reason = f.reason, message = f.message,
                finished_at = f.finished_at, duration_us = f.duration_us, fuel = f.fuel,
                peak_memory = f.peak_memory, component_sha256 = f.sha256,
                component_version = f.version, lease_until = NULL,
                started_at = COALESCE(f.started_at, r.started_at), inputs = f.inputs
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::text[],
                     $11::timestamptz[], $12::text[])
              AS f(id, state, reason, message, finished_at, duration_us, fuel, peak_memory,
                   sha256, version, started_at, inputs)
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
                &started_at,
                &inputs,
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
        let run_id = texts(done.iter().map(|f| f.run_id.as_str()));
        let outcome = texts(done.iter().map(|f| f.outcome.state.as_str()));
        let message = texts(done.iter().map(|f| f.outcome.message.as_str()));
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
        tx.pg_exec(
            "UPDATE tasks t SET
                    running_run_id = CASE
                        WHEN t.running_run_id IS NOT NULL AND t.running_run_id <> f.run_id
                        THEN t.running_run_id
                        ELSE (SELECT r.id FROM runs r WHERE r.task_id = t.id
                                AND r.state = 'running' ORDER BY r.id DESC LIMIT 1) END,
                    running_count = GREATEST(t.running_count - 1, 0),
                    last_outcome = f.outcome,
                    last_message = f.message, failed_count = t.failed_count + f.failed,
                    retry_at = f.retry_at, retry_attempt = f.retry_attempt
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                         $6::timestamptz[], $7::bigint[])
                  AS f(task_id, run_id, outcome, message, failed, retry_at, retry_attempt)
             WHERE t.id = f.task_id",
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
        tx.insert_events(&events).await?;
        // Follow-ups are few (alerts, chained tasks): the shared rule.
        for f in &done {
            ledger::queue_follow_ups(tx, &f.follow_ups).await?;
        }
        let with_state: Vec<&&RunFinish> = done.iter().filter(|f| f.task_state.is_some()).collect();
        if !with_state.is_empty() {
            let ids: Vec<i64> = with_state.iter().map(|f| f.task_id).collect();
            tx.pg_exec("DELETE FROM task_state WHERE task_id = ANY($1)", &[&ids])
                .await?;
            let mut owner = Vec::new();
            let mut keys = Vec::new();
            let mut values = Vec::new();
            for f in &with_state {
                for (k, v) in f.task_state.iter().flatten() {
                    owner.push(f.task_id);
                    keys.push(storable(k));
                    values.push(storable(v));
                }
            }
            if !owner.is_empty() {
                tx.pg_exec(
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

/// Extends leases in one statement (rows locked in id order).
pub async fn renew_leases<C: GenericClient>(
    tx: &PgTx<'_, C>,
    run_ids: &[String],
    until: DateTime<Utc>,
) -> anyhow::Result<()> {
    tx.pg_exec(
        "UPDATE runs SET lease_until = $1 WHERE id IN (
             SELECT id FROM runs WHERE id = ANY($2) AND state = 'running'
             ORDER BY id FOR UPDATE)",
        &[&ms(until), &run_ids],
    )
    .await?;
    Ok(())
}

/// The states of `task_ids` in one read.
pub async fn load_states<C: GenericClient>(
    tx: &PgTx<'_, C>,
    task_ids: &[i64],
) -> anyhow::Result<HashMap<i64, BTreeMap<String, String>>> {
    let mut states: HashMap<i64, BTreeMap<String, String>> =
        task_ids.iter().map(|id| (*id, BTreeMap::new())).collect();
    if task_ids.is_empty() {
        return Ok(states);
    }
    for row in tx
        .pg_query(
            "SELECT task_id, key, value FROM task_state WHERE task_id = ANY($1)",
            &[&task_ids],
        )
        .await?
    {
        states
            .entry(row.try_get(0)?)
            .or_default()
            .insert(row.try_get(1)?, row.try_get(2)?);
    }
    Ok(states)
}

/// The configurations of `ids` that exist, in one statement.
pub async fn tasks_by_ids<C: GenericClient>(
    tx: &PgTx<'_, C>,
    ids: &[i64],
) -> anyhow::Result<Vec<crate::model::TaskRecord>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1)");
    tx.pg_query(&sql, &[&ids])
        .await?
        .iter()
        .map(|r| rows::task(super::tx::row(r)?))
        .collect()
}

/// Replaces what `instance` reports in one insert.
pub async fn set_plugins<C: GenericClient>(
    tx: &PgTx<'_, C>,
    instance: &str,
    plugins: &[PluginRow],
) -> anyhow::Result<()> {
    let file = texts(plugins.iter().map(|p| p.file.as_str()));
    let sha256 = texts(plugins.iter().map(|p| p.sha256.as_str()));
    let identifier = opt_texts(plugins.iter().map(|p| p.identifier.as_deref()));
    let version = opt_texts(plugins.iter().map(|p| p.version.as_deref()));
    let loaded_at: Vec<DateTime<Utc>> = plugins.iter().map(|p| ms(p.loaded_at)).collect();
    let status = texts(plugins.iter().map(|p| p.status.as_str()));
    let error = opt_texts(plugins.iter().map(|p| p.error.as_deref()));
    let serving_sha256 = opt_texts(plugins.iter().map(|p| p.serving_sha256.as_deref()));
    tx.pg_exec("DELETE FROM plugins WHERE instance = $1", &[&instance])
        .await?;
    tx.pg_exec(
        "INSERT INTO plugins (instance, file, sha256, identifier, version, loaded_at, status,
                              error, serving_sha256)
         SELECT $1::text, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::timestamptz[], $7::text[], $8::text[], $9::text[])",
        &[
            &instance,
            &file,
            &sha256,
            &identifier,
            &version,
            &loaded_at,
            &status,
            &error,
            &serving_sha256,
        ],
    )
    .await?;
    Ok(())
}

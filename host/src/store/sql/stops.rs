//! Operators' requests to stop a run, shared by both backends. A request
//! for a run in flight is a row the run's instance reads on its next pass
//! (within its poll interval, sooner on PostgreSQL, whose insert notifies
//! every instance); a run still queued is cancelled at once, as it holds
//! nothing yet.

use chrono::{DateTime, Utc};

use super::{Tx, params, query_opt};
use crate::model::RunState;
use crate::store::StopAsked;

/// Asks for run `run_id` to stop on behalf of `by`; `None` if there is no
/// such run.
pub async fn request_stop<T: Tx + ?Sized>(
    tx: &T,
    run_id: &str,
    by: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<Option<StopAsked>> {
    let sql = format!(
        "SELECT state, instance FROM runs WHERE id = $1{}",
        T::FOR_UPDATE
    );
    let Some(mut row) = query_opt(tx, &sql, params![run_id]).await? else {
        return Ok(None);
    };
    let state: RunState = row.parsed(0)?.unwrap_or(RunState::Abandoned);
    let instance = row.opt_text(1)?.unwrap_or_default();
    Ok(Some(match state {
        RunState::Running => {
            ask(tx, run_id, &instance, by, at).await?;
            StopAsked::Signalled { instance }
        }
        RunState::Queued => {
            tx.exec(
                "UPDATE runs SET state = 'cancelled', finished_at = $2, message = $3
                 WHERE id = $1 AND state = 'queued'",
                params![run_id, at, &format!("stopped by {by} before it started")],
            )
            .await?;
            StopAsked::CancelledQueued
        }
        state => StopAsked::NotRunning { state },
    }))
}

/// Records the request that run `run_id`, in flight on `instance`, stop.
/// Asked twice, the first request (and who made it) stands.
pub async fn ask<T: Tx + ?Sized>(
    tx: &T,
    run_id: &str,
    instance: &str,
    by: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    tx.exec(
        "INSERT INTO stop_requests (run_id, instance, requested_by, requested_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (run_id) DO NOTHING",
        params![run_id, instance, by, at],
    )
    .await?;
    Ok(())
}

/// The stop requests for runs of `instance`: (run id, who asked).
pub async fn stop_requests<T: Tx + ?Sized>(
    tx: &T,
    instance: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    tx.query(
        "SELECT run_id, requested_by FROM stop_requests WHERE instance = $1",
        params![instance],
    )
    .await?
    .into_iter()
    .map(|mut row| Ok((row.text(0)?, row.text(1)?)))
    .collect()
}

/// Forgets the requests of runs no longer running (housekeeping).
pub async fn forget_ended<T: Tx + ?Sized>(tx: &T) -> anyhow::Result<u64> {
    tx.exec(
        "DELETE FROM stop_requests WHERE run_id NOT IN
             (SELECT id FROM runs WHERE state = 'running')",
        params![],
    )
    .await
}

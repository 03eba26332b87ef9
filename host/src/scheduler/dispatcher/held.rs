//! Finished runs the store could not take because it was unavailable (a
//! database restarting, a full disk): kept in memory, oldest first, and
//! recorded once it takes writes again, so a run that ended during an
//! outage is recorded as it ended instead of as abandoned. The backlog is
//! bounded in runs and bytes; a run beyond the bound is counted and let go
//! (its record stays `running` until its lease lapses and it is recorded
//! abandoned), and the count is reported once the store is back.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::store::{RunFinish, Store};

/// At most this many finished runs are held.
pub const HELD_MAX_RUNS: usize = 10_000;
/// At most about this many bytes of finished runs (messages, events,
/// state) are held.
pub const HELD_MAX_BYTES: usize = 64 << 20;
/// Held runs are recorded this many per transaction once the store is back.
const RECORD_PER_BATCH: usize = 500;

#[derive(Default)]
pub(super) struct Held {
    backlog: Mutex<Backlog>,
}

#[derive(Default)]
struct Backlog {
    /// Each finish with its weight in bytes.
    finishes: VecDeque<(RunFinish, usize)>,
    bytes: usize,
    /// Finishes not kept since the backlog was last empty.
    let_go: u64,
    /// Finishes recorded late since the backlog was last empty.
    recorded: u64,
}

/// About how many bytes a finish holds on to.
fn weight(f: &RunFinish) -> usize {
    let events: usize = f
        .outcome
        .events
        .iter()
        .map(|e| 96 + e.code.len() + e.message.len())
        .sum();
    let state: usize = f
        .task_state
        .iter()
        .flatten()
        .map(|(k, v)| 48 + k.len() + v.len())
        .sum();
    256 + f.run_id.len() + f.outcome.message.len() + events + state
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `batch` for later, as much of it as the bounds allow.
    pub(super) fn hold(&self, batch: Vec<RunFinish>) {
        let mut backlog = self.lock();
        for finish in batch {
            let weight = weight(&finish);
            if backlog.finishes.len() >= HELD_MAX_RUNS || backlog.bytes + weight > HELD_MAX_BYTES {
                if backlog.let_go == 0 {
                    tracing::error!(
                        "{} finished runs are held for the store, the most it keeps \
                         ({HELD_MAX_RUNS} runs, {} MiB): runs finishing from now on are let go \
                         and recorded abandoned when their leases lapse",
                        backlog.finishes.len(),
                        HELD_MAX_BYTES >> 20
                    );
                }
                backlog.let_go += 1;
                continue;
            }
            backlog.bytes += weight;
            backlog.finishes.push_back((finish, weight));
        }
    }

    /// Ids of the held runs, whose leases must stay renewed: they are over,
    /// but the store does not know yet.
    pub(super) fn ids(&self) -> Vec<String> {
        let backlog = self.lock();
        backlog
            .finishes
            .iter()
            .map(|(f, _)| f.run_id.clone())
            .collect()
    }

    pub(super) fn len(&self) -> usize {
        self.lock().finishes.len()
    }

    /// Records held runs, oldest first, until none is left or the store
    /// fails again.
    pub(super) async fn record(&self, store: &dyn Store) {
        loop {
            let batch: Vec<(RunFinish, usize)> = {
                let mut backlog = self.lock();
                if backlog.finishes.is_empty() {
                    if backlog.let_go > 0 {
                        report_done(&mut backlog);
                    }
                    return;
                }
                let n = backlog.finishes.len().min(RECORD_PER_BATCH);
                backlog.finishes.drain(..n).collect()
            };
            let finishes: Vec<RunFinish> = batch.iter().map(|(f, _)| f.clone()).collect();
            let result = store.finish_runs(&finishes).await;
            let mut backlog = self.lock();
            match result {
                Err(e) if e.is_unavailable() => {
                    // Back to the front, in order; the store's outage is
                    // reported by whoever watches it.
                    for item in batch.into_iter().rev() {
                        backlog.finishes.push_front(item);
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(
                        "{} finished runs held for the store cannot be recorded, and are \
                         recorded abandoned when their leases lapse: {e}",
                        batch.len()
                    );
                    backlog.let_go += batch.len() as u64;
                }
                Ok(_) => backlog.recorded += batch.len() as u64,
            }
            backlog.bytes -= batch.iter().map(|(_, w)| w).sum::<usize>();
            if backlog.finishes.is_empty() {
                report_done(&mut backlog);
            }
        }
    }
}

/// Says what became of the held runs once none is left.
fn report_done(backlog: &mut Backlog) {
    let (recorded, let_go) = (backlog.recorded, backlog.let_go);
    backlog.recorded = 0;
    backlog.let_go = 0;
    if let_go > 0 {
        tracing::warn!(
            "recorded {recorded} run(s) that finished while the store was unavailable; \
             {let_go} more were not kept and are recorded abandoned when their leases lapse"
        );
    } else {
        // At the outage's level, so it is read with it.
        tracing::warn!("recorded {recorded} run(s) that finished while the store was unavailable");
    }
}

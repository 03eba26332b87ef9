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

pub(super) struct Held {
    backlog: Mutex<Backlog>,
    max_runs: usize,
    max_bytes: usize,
}

impl Default for Held {
    fn default() -> Self {
        Held::with_bounds(HELD_MAX_RUNS, HELD_MAX_BYTES)
    }
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
    fn with_bounds(max_runs: usize, max_bytes: usize) -> Self {
        Held {
            backlog: Mutex::default(),
            max_runs,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `batch` for later, as much of it as the bounds allow.
    pub(super) fn hold(&self, batch: Vec<RunFinish>) {
        let mut backlog = self.lock();
        for finish in batch {
            let weight = weight(&finish);
            if backlog.finishes.len() >= self.max_runs || backlog.bytes + weight > self.max_bytes {
                if backlog.let_go == 0 {
                    tracing::error!(
                        "{} finished runs are held for the store, the most it keeps ({} runs, \
                         {} MiB): runs finishing from now on are let go and recorded abandoned \
                         when their leases lapse",
                        backlog.finishes.len(),
                        self.max_runs,
                        self.max_bytes >> 20
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Level, NewEvent, RunOutcome, RunState};

    fn finish(id: &str, message_bytes: usize) -> RunFinish {
        let event = NewEvent::host(Level::Info, "X", "y".repeat(message_bytes));
        RunFinish::of(
            id,
            1,
            chrono::Utc::now(),
            RunOutcome::not_run(RunState::Succeeded, event),
            None,
        )
    }

    #[test]
    fn the_backlog_keeps_the_oldest_runs_up_to_its_bounds_and_counts_the_rest() {
        let held = Held::with_bounds(3, 1 << 20);
        held.hold(vec![finish("a", 10), finish("b", 10)]);
        held.hold(vec![finish("c", 10), finish("d", 10)]);
        assert_eq!(held.ids(), ["a", "b", "c"]);
        assert_eq!(held.lock().let_go, 1);

        let held = Held::with_bounds(100, 1 << 20);
        // Each weighs over 400 KiB (its message, twice: the outcome's and
        // the event's): the third does not fit in 1 MiB.
        held.hold((0..3).map(|i| finish(&i.to_string(), 200 << 10)).collect());
        assert_eq!(held.ids(), ["0", "1"]);
        assert_eq!(held.lock().let_go, 1);
        let weights: usize = held.lock().finishes.iter().map(|(_, w)| w).sum();
        assert_eq!(held.lock().bytes, weights);
    }

    #[tokio::test]
    async fn the_backlog_empties_once_the_store_takes_it() {
        let store = crate::store::SqliteStore::in_memory().unwrap();
        let held = Held::default();
        held.hold((0..1_200).map(|i| finish(&i.to_string(), 1)).collect());
        held.record(&store).await;
        assert_eq!(held.len(), 0);
        assert_eq!(held.lock().bytes, 0);
        assert_eq!(held.lock().recorded, 0, "reported and reset");
    }
}

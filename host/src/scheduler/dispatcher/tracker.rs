//! The runs a dispatcher has in flight: each one's cancel token (for
//! shutdown, and for an operator who stops it, whose name is kept for its
//! record), its task (so shutdown and tests can wait for it to be
//! recorded) and its id (so its lease can be renewed while it runs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::delta;
use crate::runtime::CancelToken;
use crate::store::Store;

/// One run in flight.
struct InFlight {
    cancel: CancelToken,
    /// Who asked for it to stop, if someone did.
    stopped_by: Option<String>,
}

type Running = Arc<Mutex<HashMap<String, InFlight>>>;

pub(super) struct Tracker {
    running: Running,
    runs: tokio::sync::Mutex<JoinSet<()>>,
    /// The dispatcher's wake-up, for runs whose end frees work.
    wake: Arc<Notify>,
}

fn lock(running: &Running) -> MutexGuard<'_, HashMap<String, InFlight>> {
    running.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tracker {
    pub(super) fn new(wake: Arc<Notify>) -> Self {
        Tracker {
            running: Arc::default(),
            runs: tokio::sync::Mutex::new(JoinSet::new()),
            wake,
        }
    }

    /// Runs `work` as run `run_id`: cancelled on shutdown, its lease
    /// renewed, awaited by [`wait_idle`](Self::wait_idle). `work` says
    /// whether its end should make the dispatcher look again (only work a
    /// run was holding up needs a pass now: a retry, or a slot that came
    /// due while it ran).
    pub(super) async fn track<F, Fut>(&self, run_id: String, work: F)
    where
        F: FnOnce(CancelToken) -> Fut,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let cancel = CancelToken::new();
        let in_flight = InFlight {
            cancel: cancel.clone(),
            stopped_by: None,
        };
        lock(&self.running).insert(run_id.clone(), in_flight);
        let work = work(cancel);
        let (running, wake) = (self.running.clone(), self.wake.clone());
        self.runs.lock().await.spawn(async move {
            let again = work.await;
            lock(&running).remove(&run_id);
            if again {
                wake.notify_one();
            }
        });
    }

    pub(super) fn running_ids(&self) -> Vec<String> {
        lock(&self.running).keys().cloned().collect()
    }

    pub(super) fn is_idle(&self) -> bool {
        lock(&self.running).is_empty()
    }

    /// Asks run `run_id`, if it is in flight here and not asked already,
    /// to stop on behalf of `by`; true if it was.
    pub(super) fn stop(&self, run_id: &str, by: &str) -> bool {
        let mut running = lock(&self.running);
        match running.get_mut(run_id) {
            Some(run) if run.stopped_by.is_none() => {
                run.stopped_by = Some(by.to_owned());
                run.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Who asked run `run_id` to stop, if anyone did.
    pub(super) fn stopped_by(&self, run_id: &str) -> Option<String> {
        lock(&self.running)
            .get(run_id)
            .and_then(|r| r.stopped_by.clone())
    }

    /// Extends the lease of every run in flight, and of the runs in `also`,
    /// to `lease` from `now`.
    pub(super) async fn renew_leases(
        &self,
        store: &dyn Store,
        also: Vec<String>,
        now: DateTime<Utc>,
        lease: Duration,
    ) {
        let mut ids = self.running_ids();
        ids.extend(also);
        if ids.is_empty() {
            return;
        }
        match store.renew_leases(&ids, now + delta(lease)).await {
            Err(e) if !e.is_unavailable() => tracing::error!("renewing run leases failed: {e}"),
            _ => {}
        }
    }

    /// Asks every run in flight to stop; returns how many there were.
    pub(super) fn cancel_all(&self) -> usize {
        let tokens: Vec<CancelToken> = lock(&self.running)
            .values()
            .map(|r| r.cancel.clone())
            .collect();
        for t in &tokens {
            t.cancel();
        }
        tokens.len()
    }

    /// Waits until every run started so far has ended.
    pub(super) async fn wait_idle(&self) {
        let mut runs = self.runs.lock().await;
        while runs.join_next().await.is_some() {}
    }

    /// Collects ended runs' tasks so the set does not grow.
    pub(super) async fn reap(&self) {
        let mut runs = self.runs.lock().await;
        while runs.try_join_next().is_some() {}
    }
}

//! The dispatcher's periodic chores, beside its passes: rescuing runs whose
//! instance died (their lease expired), closing broadcast deliveries of
//! instances that stopped heartbeating, applying retention, and renewing
//! the leases of this instance's own runs so no other instance rescues them,
//! and recording runs held while the store was unavailable. Errors of an
//! unavailable store are left to its watcher, which reports them at a
//! bounded rate.

use chrono::{DateTime, Utc};

use super::{Dispatcher, DispatcherConfig, delta};
use crate::store::{Store, StoreResult};

/// When each chore is next due.
pub(super) struct Chores {
    housekeeping: DateTime<Utc>,
    lease_renewal: DateTime<Utc>,
}

impl Chores {
    /// Every chore due at once: the first pass starts with them.
    pub(super) fn new(now: DateTime<Utc>) -> Self {
        Chores {
            housekeeping: now,
            lease_renewal: now,
        }
    }

    /// Does the chores due at `now`; returns when the next one is due.
    pub(super) async fn run_due(&mut self, d: &Dispatcher, now: DateTime<Utc>) -> DateTime<Utc> {
        let lease = d.config.lease;
        // Runs held while the store was unavailable go first: before any
        // rescue could record them abandoned.
        d.recorder.held.record(&*d.store).await;
        // Renewal first: when this loop wakes late (a busy machine), the
        // leases of runs still in flight here may have lapsed, and rescuing
        // expired runs before renewing would record this instance's own
        // live runs abandoned.
        if now >= self.lease_renewal {
            let held = d.recorder.held.ids();
            d.tracker.renew_leases(&*d.store, held, now, lease).await;
            self.lease_renewal = now + delta(lease / 3);
        }
        if now >= self.housekeeping {
            housekeeping(&*d.store, &d.config, now).await;
            self.housekeeping = now + delta(lease / 2);
        }
        self.lease_renewal.min(self.housekeeping)
    }
}

async fn housekeeping(store: &dyn Store, config: &DispatcherConfig, now: DateTime<Utc>) {
    match store.abandon_expired(now).await {
        Ok(runs) => {
            for run in runs {
                tracing::warn!(run_id = %run.id, task = %run.task_name, "run abandoned: lease expired");
            }
        }
        Err(e) if e.is_unavailable() => return,
        Err(e) => tracing::error!("rescuing expired runs failed: {e}"),
    }
    match expire_dead_deliveries(store, config, now).await {
        Err(e) if e.is_unavailable() => return,
        Err(e) => tracing::error!("expiring dead instances' broadcast deliveries failed: {e}"),
        Ok(()) => {}
    }
    let since = now - delta(config.keep_events);
    match store.prune(config.keep_runs, since).await {
        Err(e) if !e.is_unavailable() => tracing::error!("applying retention failed: {e}"),
        _ => {}
    }
}

/// Broadcast deliveries of instances that stopped heartbeating will never
/// run: record them abandoned so the broadcast's overview is final.
async fn expire_dead_deliveries(
    store: &dyn Store,
    config: &DispatcherConfig,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let cutoff = now - delta(config.liveness);
    let dead: Vec<String> = store
        .list_instances()
        .await?
        .into_iter()
        .filter(|i| i.heartbeat_at < cutoff)
        .map(|i| i.name)
        .collect();
    if !dead.is_empty() {
        let reason = format!(
            "its instance stopped heartbeating for over {}",
            humantime::format_duration(config.liveness)
        );
        store.expire_deliveries(&dead, now, &reason).await?;
    }
    Ok(())
}

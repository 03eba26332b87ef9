//! An instance's presence among those sharing the store: whether its name
//! is already taken, which broadcasts from before it started it takes on,
//! the heartbeat that keeps it listed as live, and leaving cleanly. Other
//! instances judge it by these rows alone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::Notice;
use crate::model::{Clock, InstanceInfo, InstanceRow};
use crate::scheduler::farm::{HEARTBEAT, live_instances};
use crate::store::{Store, StoreResult};

/// A live instance already using `name`. Also what a quick restart after a
/// crash looks like, so the caller warns rather than refuses.
pub(super) async fn namesake(
    store: &dyn Store,
    name: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<Notice>> {
    let other = live_instances(store)
        .await?
        .into_iter()
        .find(|i| i.name == name);
    Ok(other.map(|other| Notice::NameInUse {
        pid: other.pid,
        heartbeat_age: (now - other.heartbeat_at).to_std().unwrap_or_default(),
    }))
}

/// Deliveries left from this name's previous process were for that
/// process: this one starts clean unless told to catch up on the
/// broadcasts made within `catch_up` before it started.
pub(super) async fn settle_broadcasts(
    store: &dyn Store,
    name: &str,
    started_at: DateTime<Utc>,
    catch_up: Option<Duration>,
) -> anyhow::Result<Option<Notice>> {
    let Some(window) = catch_up else {
        let reason = format!("instance {name} restarted before running it");
        store
            .expire_deliveries(&[name.to_owned()], started_at, &reason)
            .await?;
        return Ok(None);
    };
    let since = started_at - chrono::TimeDelta::from_std(window)?;
    let broadcasts = store.join_broadcasts(name, since).await?;
    Ok((broadcasts > 0).then_some(Notice::CatchingUp { broadcasts, since }))
}

/// Writes the first heartbeat, then keeps writing one every [`HEARTBEAT`]
/// until the returned task is aborted. The first is written before the
/// instance says it is serving, so a broadcast made from then on includes it.
pub(super) async fn heartbeat(
    store: std::sync::Arc<dyn Store>,
    clock: std::sync::Arc<dyn Clock>,
    info: &InstanceInfo,
    started_at: DateTime<Utc>,
) -> StoreResult<JoinHandle<()>> {
    let row = InstanceRow {
        name: info.name.clone(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        roles: info.roles.clone(),
        started_at,
        heartbeat_at: started_at,
    };
    store.heartbeat(&row).await?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let row = InstanceRow {
                heartbeat_at: clock.now(),
                ..row.clone()
            };
            // An unavailable store is reported by its watcher.
            match store.heartbeat(&row).await {
                Err(e) if !e.is_unavailable() => tracing::error!("instance heartbeat failed: {e}"),
                _ => {}
            }
        }
    }))
}

/// Gone cleanly: deliveries it did not start will not run, and it is no
/// longer listed (a crashed instance stays listed as gone).
pub(super) async fn leave(store: &dyn Store, name: &str, now: DateTime<Utc>) -> StoreResult<()> {
    let reason = format!("instance {name} stopped before running it");
    store
        .expire_deliveries(&[name.to_owned()], now, &reason)
        .await?;
    store.remove_instance(name).await
}

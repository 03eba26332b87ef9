//! An instance's presence among those sharing the store: making its name
//! this process's (or refusing, when another live process serves it),
//! which broadcasts from before it started it takes on, the heartbeat that
//! keeps it listed as live (and notices a takeover), and leaving cleanly.
//! Other instances judge it by these rows alone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::{Notice, Takeover};
use crate::model::{Clock, Heartbeat, InstanceInfo, InstanceRow};
use crate::scheduler::farm::{HEARTBEAT, is_live};
use crate::store::{Store, StoreResult};

/// This machine's name, as instance rows record it.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "cronwerk".into())
}

/// Why an instance did not start: another live process serves its name.
#[derive(Debug, thiserror::Error)]
#[error(
    "an instance named {name} is running (pid {pid} on {host}, sending heartbeats): give this \
     process its own --name, or stop that one first, or take its place with --replace"
)]
pub struct NameTaken {
    pub name: String,
    pub pid: u32,
    pub host: String,
}

/// Whether process `pid` exists on this machine.
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let sent = unsafe { libc::kill(pid, 0) };
    sent == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Makes `me.name` this process's before it serves. Free, or held by a
/// process that is gone (no heartbeat within [`LIVENESS`](crate::scheduler::farm::LIVENESS), or one of this
/// machine's processes that no longer exists: a quick restart after a
/// crash), it is taken at once. Held by a live process elsewhere, it is
/// taken over with `replace`; without, this waits for that process's
/// heartbeat to lapse (a crash on another machine) and refuses with
/// [`NameTaken`] as soon as a new heartbeat shows it alive.
pub(super) async fn claim_name(
    store: &dyn Store,
    me: &InstanceRow,
    replace: bool,
    notices: &(dyn Fn(Notice) + Send + Sync),
) -> anyhow::Result<()> {
    let mut seen: Option<DateTime<Utc>> = None;
    loop {
        let now = store.clock().now();
        let holder = store
            .list_instances()
            .await?
            .into_iter()
            .find(|i| i.name == me.name && is_live(i, now));
        let Some(holder) = holder else {
            if seen.is_some() {
                notices(Notice::NamesakeGone);
            }
            break;
        };
        let here = holder.host == me.host;
        if here && (holder.pid == me.pid || !process_exists(holder.pid)) {
            notices(Notice::TakingOver {
                pid: holder.pid,
                host: holder.host,
                why: Takeover::Gone,
            });
            break;
        }
        if replace {
            notices(Notice::TakingOver {
                pid: holder.pid,
                host: holder.host,
                why: Takeover::Replace,
            });
            break;
        }
        match seen {
            Some(first) if holder.heartbeat_at > first => {
                return Err(NameTaken {
                    name: me.name.clone(),
                    pid: holder.pid,
                    host: holder.host,
                }
                .into());
            }
            Some(_) => {}
            None => {
                notices(Notice::WaitingForNamesake {
                    pid: holder.pid,
                    host: holder.host.clone(),
                });
                seen = Some(holder.heartbeat_at);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    store.claim_instance(me).await?;
    Ok(())
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

/// This process's instance row as it starts.
pub(super) fn row(info: &InstanceInfo, process: &str, started_at: DateTime<Utc>) -> InstanceRow {
    InstanceRow {
        name: info.name.clone(),
        process: process.to_owned(),
        host: host_name(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        roles: info.roles.clone(),
        started_at,
        heartbeat_at: started_at,
    }
}

/// Writes the first heartbeat, then keeps writing one every [`HEARTBEAT`]
/// until the returned task is aborted, or until another process took the
/// name over: then `displaced` gets that process's row and the heartbeat
/// stops. The first is written before the instance says it is serving, so a
/// broadcast made from then on includes it.
pub(super) async fn heartbeat(
    store: std::sync::Arc<dyn Store>,
    clock: std::sync::Arc<dyn Clock>,
    row: InstanceRow,
    displaced: tokio::sync::watch::Sender<Option<InstanceRow>>,
) -> StoreResult<JoinHandle<()>> {
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
                Ok(Heartbeat::Kept) => {}
                Ok(Heartbeat::Displaced(by)) => {
                    let _ = displaced.send(Some(by));
                    return;
                }
                Err(e) if !e.is_unavailable() => tracing::error!("instance heartbeat failed: {e}"),
                Err(_) => {}
            }
        }
    }))
}

/// Gone cleanly: deliveries it did not start will not run, and it is no
/// longer listed (a crashed instance stays listed as gone).
pub(super) async fn leave(
    store: &dyn Store,
    name: &str,
    process: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let reason = format!("instance {name} stopped before running it");
    store
        .expire_deliveries(&[name.to_owned()], now, &reason)
        .await?;
    store.remove_instance(name, process).await
}

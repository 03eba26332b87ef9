//! Instances, the plugins each reports, and broadcasts (web farm) with one
//! delivery per instance. A delivery moves queued → running → finished by
//! conditional updates like a run, so an instance that was expired
//! meanwhile cannot finish it.

use chrono::{DateTime, Utc};

use super::rows::{self, BROADCAST_COLUMNS, BROADCAST_FIELDS, PENDING_COLUMNS, PLUGIN_COLUMNS};
use super::{Tx, params};
use crate::model::{BroadcastRecord, Heartbeat, InstanceRow, PendingDelivery, PluginRow};
use crate::store::{DeliveryFinish, NewBroadcast};

/// Replaces what `instance` reports, one row per plugin (PostgreSQL: one
/// statement over arrays).
pub async fn set_plugins<T: Tx + ?Sized>(
    tx: &T,
    instance: &str,
    plugins: &[PluginRow],
) -> anyhow::Result<()> {
    tx.exec("DELETE FROM plugins WHERE instance = $1", params![instance])
        .await?;
    for p in plugins {
        tx.exec(
            "INSERT INTO plugins (instance, file, sha256, identifier, version, loaded_at,
                                  status, error, serving_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            params![
                instance,
                &p.file,
                &p.sha256,
                &p.identifier,
                &p.version,
                p.loaded_at,
                p.status.as_str(),
                &p.error,
                &p.serving_sha256
            ],
        )
        .await?;
    }
    Ok(())
}

pub async fn list_plugins<T: Tx + ?Sized>(tx: &T) -> anyhow::Result<Vec<PluginRow>> {
    let sql = format!("SELECT {PLUGIN_COLUMNS} FROM plugins ORDER BY instance, file");
    rows::all(tx.query(&sql, &[]).await?, rows::plugin)
}

/// Makes the name `i`'s, whoever held it.
pub async fn claim_instance<T: Tx + ?Sized>(tx: &T, i: &InstanceRow) -> anyhow::Result<()> {
    tx.exec(
        "INSERT INTO instances (name, pid, version, roles, started_at, heartbeat_at, process, host)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (name) DO UPDATE SET pid = $2, version = $3, roles = $4,
                started_at = $5, heartbeat_at = $6, process = $7, host = $8",
        params![
            &i.name,
            i.pid,
            &i.version,
            i.roles.as_slice(),
            i.started_at,
            i.heartbeat_at,
            &i.process,
            &i.host
        ],
    )
    .await?;
    Ok(())
}

/// Renews `i`'s heartbeat while the name is its process's; a name no row
/// holds (removed meanwhile) is claimed again.
pub async fn heartbeat<T: Tx + ?Sized>(tx: &T, i: &InstanceRow) -> anyhow::Result<Heartbeat> {
    let renewed = tx
        .exec(
            "UPDATE instances SET heartbeat_at = $3, roles = $4
             WHERE name = $1 AND process = $2",
            params![&i.name, &i.process, i.heartbeat_at, i.roles.as_slice()],
        )
        .await?;
    if renewed > 0 {
        return Ok(Heartbeat::Kept);
    }
    let sql = format!(
        "SELECT {} FROM instances WHERE name = $1",
        rows::INSTANCE_COLUMNS
    );
    match rows::all(tx.query(&sql, params![&i.name]).await?, rows::instance)?
        .into_iter()
        .next()
    {
        Some(other) => Ok(Heartbeat::Displaced(other)),
        None => {
            claim_instance(tx, i).await?;
            Ok(Heartbeat::Kept)
        }
    }
}

pub async fn list_instances<T: Tx + ?Sized>(tx: &T) -> anyhow::Result<Vec<InstanceRow>> {
    let sql = format!(
        "SELECT {} FROM instances ORDER BY name",
        rows::INSTANCE_COLUMNS
    );
    rows::all(tx.query(&sql, &[]).await?, rows::instance)
}

/// Forgets instance `name` and its plugin rows, if `process` holds it (a
/// process that was taken over leaves its successor's rows alone).
pub async fn remove_instance<T: Tx + ?Sized>(
    tx: &T,
    name: &str,
    process: &str,
) -> anyhow::Result<()> {
    let removed = tx
        .exec(
            "DELETE FROM instances WHERE name = $1 AND process = $2",
            params![name, process],
        )
        .await?;
    if removed > 0 {
        tx.exec("DELETE FROM plugins WHERE instance = $1", params![name])
            .await?;
    }
    Ok(())
}

pub async fn create_broadcast<T: Tx + ?Sized>(tx: &T, b: &NewBroadcast) -> anyhow::Result<()> {
    let sender = b.sender.as_ref().map(serde_json::to_string).transpose()?;
    tx.exec(
        "INSERT INTO broadcasts (id, identifier, target, text, data, created_at, created_by,
                                 sender)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        params![
            &b.id,
            &b.identifier,
            &b.payload.target,
            &b.payload.text,
            &b.payload.data,
            b.created_at,
            &b.created_by,
            sender.as_ref()
        ],
    )
    .await?;
    for instance in &b.instances {
        tx.exec(
            "INSERT INTO deliveries (broadcast_id, instance, state) VALUES ($1, $2, 'queued')",
            params![&b.id, instance],
        )
        .await?;
    }
    Ok(())
}

/// The broadcast `id` with its deliveries.
pub async fn get_broadcast<T: Tx + ?Sized>(
    tx: &T,
    id: &str,
) -> anyhow::Result<Option<BroadcastRecord>> {
    let sql = with_deliveries("WHERE id = $1");
    let found = tx.query(&sql, params![id]).await?;
    Ok(rows::broadcasts(found)?.pop())
}

/// The newest `limit` broadcasts with their deliveries, newest first.
pub async fn list_broadcasts<T: Tx + ?Sized>(
    tx: &T,
    limit: u32,
) -> anyhow::Result<Vec<BroadcastRecord>> {
    let sql = with_deliveries("ORDER BY created_at DESC, id DESC LIMIT $1");
    rows::broadcasts(tx.query(&sql, params![limit]).await?)
}

/// The broadcasts `which` picks, each followed by its deliveries.
fn with_deliveries(which: &str) -> String {
    format!(
        "SELECT {BROADCAST_COLUMNS}
         FROM (SELECT {BROADCAST_FIELDS} FROM broadcasts {which}) AS b
         LEFT JOIN deliveries d ON d.broadcast_id = b.id
         ORDER BY b.created_at DESC, b.id DESC, d.instance"
    )
}

/// The oldest `limit` queued deliveries of `instance`, with their payloads:
/// read a page at a time, so a backlog is never loaded (or started) at once.
pub async fn pending_deliveries<T: Tx + ?Sized>(
    tx: &T,
    instance: &str,
    limit: u32,
) -> anyhow::Result<Vec<PendingDelivery>> {
    let sql = format!(
        "SELECT {PENDING_COLUMNS}
         FROM deliveries d JOIN broadcasts b ON b.id = d.broadcast_id
         WHERE d.instance = $1 AND d.state = 'queued'
         ORDER BY b.created_at, b.id
         LIMIT $2"
    );
    rows::all(
        tx.query(&sql, params![instance, limit]).await?,
        rows::pending,
    )
}

/// Moves a queued delivery to running; false if it was not queued any more.
pub async fn start_delivery<T: Tx + ?Sized>(
    tx: &T,
    broadcast_id: &str,
    instance: &str,
    run_id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let changed = tx
        .exec(
            "UPDATE deliveries SET state = 'running', run_id = $3, started_at = $4
             WHERE broadcast_id = $1 AND instance = $2 AND state = 'queued'",
            params![broadcast_id, instance, run_id, now],
        )
        .await?;
    Ok(changed == 1)
}

/// Records how a running delivery ended, and its events; false (nothing
/// recorded) if it was not running any more.
pub async fn finish_delivery<T: Tx + ?Sized>(tx: &T, f: &DeliveryFinish) -> anyhow::Result<bool> {
    let o = &f.outcome;
    let changed = tx
        .exec(
            "UPDATE deliveries SET state = $3, finished_at = $4, reason = $5, message = $6,
                    duration_us = $7, fuel = $8, peak_memory = $9, component_sha256 = $10,
                    component_version = $11
             WHERE broadcast_id = $1 AND instance = $2 AND state = 'running'",
            params![
                &f.broadcast_id,
                &f.instance,
                o.state.as_str(),
                f.finished_at,
                o.reason.map(|r| r.as_str()),
                &o.message,
                o.duration_us,
                o.fuel,
                o.peak_memory_bytes,
                &o.component_sha256,
                &o.component_version
            ],
        )
        .await?;
    if changed == 1 {
        tx.insert_events(&o.events).await?;
    }
    Ok(changed == 1)
}

/// Abandons the queued and running deliveries of `instances`; how many.
pub async fn expire_deliveries<T: Tx + ?Sized>(
    tx: &T,
    instances: &[String],
    now: DateTime<Utc>,
    reason: &str,
) -> anyhow::Result<u64> {
    let mut expired = 0;
    for instance in instances {
        expired += tx
            .exec(
                "UPDATE deliveries SET state = 'abandoned', finished_at = $2, message = $3
                 WHERE instance = $1 AND state IN ('queued', 'running')",
                params![instance, now, reason],
            )
            .await?;
    }
    Ok(expired)
}

/// Queues for `instance` the broadcasts since `since` it has no delivery
/// of; how many. The conflict clause keeps a concurrent join (or a
/// broadcast made meanwhile) from failing the insert.
pub async fn join_broadcasts<T: Tx + ?Sized>(
    tx: &T,
    instance: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<u64> {
    tx.exec(
        "INSERT INTO deliveries (broadcast_id, instance, state)
         SELECT id, $1, 'queued' FROM broadcasts WHERE created_at >= $2
         ON CONFLICT (broadcast_id, instance) DO NOTHING",
        params![instance, since],
    )
    .await
}

//! Broadcasts (web farm) in the SQLite store: one row per broadcast, one
//! per instance it goes to. Processes sharing the file see each other's
//! broadcasts through the same `data_version` check as any other change.

use rusqlite::{OptionalExtension, Transaction, params};

use super::{SqliteStore, from_ms, insert_events, ms};
use crate::model::{BroadcastPayload, BroadcastRecord, DeliveryRecord, PendingDelivery, RunState};
use crate::store::{DeliveryFinish, NewBroadcast, StoreError, StoreResult};

pub(super) const SCHEMA: &str = "
CREATE TABLE broadcasts (
    id         TEXT    PRIMARY KEY,
    identifier TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    data       BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL
);
CREATE INDEX broadcasts_created ON broadcasts (created_at);
CREATE TABLE deliveries (
    broadcast_id      TEXT    NOT NULL,
    instance          TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    run_id            TEXT,
    started_at        INTEGER,
    finished_at       INTEGER,
    reason            TEXT,
    message           TEXT    NOT NULL DEFAULT '',
    duration_us       INTEGER,
    fuel              INTEGER,
    peak_memory       INTEGER,
    component_sha256  TEXT,
    component_version TEXT,
    PRIMARY KEY (broadcast_id, instance)
);
CREATE INDEX deliveries_waiting ON deliveries (instance, state);
";

const DELIVERY_COLUMNS: &str = "instance, state, run_id, started_at, finished_at, reason, \
    message, duration_us, fuel, peak_memory, component_sha256, component_version";

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let opt_u64 = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|v| v as u64))
    };
    Ok(DeliveryRecord {
        instance: r.get(0)?,
        state: r
            .get::<_, String>(1)?
            .parse()
            .unwrap_or(RunState::Abandoned),
        run_id: r.get(2)?,
        started_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
        finished_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
        reason: r.get(5)?,
        message: r.get(6)?,
        duration_us: opt_u64(7)?,
        fuel: opt_u64(8)?,
        peak_memory_bytes: opt_u64(9)?,
        component_sha256: r.get(10)?,
        component_version: r.get(11)?,
    })
}

fn broadcast_with_deliveries(
    c: &rusqlite::Connection,
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<BroadcastRecord> {
    let id: String = r.get(0)?;
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE broadcast_id = ?1 ORDER BY instance"
    ))?;
    let deliveries = stmt
        .query_map([&id], delivery_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(BroadcastRecord {
        id,
        identifier: r.get(1)?,
        target: r.get(2)?,
        text: r.get(3)?,
        data_bytes: r.get::<_, i64>(4)? as u64,
        created_at: from_ms(r.get(5)?),
        created_by: r.get(6)?,
        deliveries,
    })
}

const BROADCAST_COLUMNS: &str =
    "id, identifier, target, text, length(data), created_at, created_by";

pub(super) fn create(store: &SqliteStore, b: &NewBroadcast) -> StoreResult<()> {
    store.write(|tx| {
        tx.execute(
            "INSERT INTO broadcasts (id, identifier, target, text, data, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                b.id,
                b.identifier,
                b.payload.target,
                b.payload.text,
                b.payload.data,
                ms(b.created_at),
                b.created_by
            ],
        )?;
        let mut stmt = tx.prepare_cached(
            "INSERT INTO deliveries (broadcast_id, instance, state) VALUES (?1, ?2, 'queued')",
        )?;
        for instance in &b.instances {
            stmt.execute(params![b.id, instance])?;
        }
        Ok(())
    })
}

pub(super) fn get(store: &SqliteStore, id: &str) -> StoreResult<BroadcastRecord> {
    store
        .with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {BROADCAST_COLUMNS} FROM broadcasts WHERE id = ?1"
            ))?;
            stmt.query_row([id], |r| broadcast_with_deliveries(c, r))
                .optional()
        })?
        .ok_or_else(|| StoreError::BroadcastNotFound(id.to_owned()))
}

pub(super) fn list(store: &SqliteStore, limit: u32) -> StoreResult<Vec<BroadcastRecord>> {
    store.with(|c| {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {BROADCAST_COLUMNS} FROM broadcasts ORDER BY created_at DESC, id DESC LIMIT ?1"
        ))?;
        stmt.query_map([limit], |r| broadcast_with_deliveries(c, r))?
            .collect()
    })
}

pub(super) fn pending(store: &SqliteStore, instance: &str) -> StoreResult<Vec<PendingDelivery>> {
    store.with(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT b.id, b.identifier, b.target, b.text, b.data, b.created_at, b.created_by
             FROM deliveries d JOIN broadcasts b ON b.id = d.broadcast_id
             WHERE d.instance = ?1 AND d.state = 'queued'
             ORDER BY b.created_at, b.id",
        )?;
        stmt.query_map([instance], |r| {
            Ok(PendingDelivery {
                broadcast_id: r.get(0)?,
                identifier: r.get(1)?,
                payload: BroadcastPayload {
                    target: r.get(2)?,
                    text: r.get(3)?,
                    data: r.get(4)?,
                },
                created_at: from_ms(r.get(5)?),
                created_by: r.get(6)?,
            })
        })?
        .collect()
    })
}

pub(super) fn start(
    store: &SqliteStore,
    broadcast_id: &str,
    instance: &str,
    run_id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> StoreResult<bool> {
    store.write(|tx| {
        let changed = tx.execute(
            "UPDATE deliveries SET state = 'running', run_id = ?3, started_at = ?4
             WHERE broadcast_id = ?1 AND instance = ?2 AND state = 'queued'",
            params![broadcast_id, instance, run_id, ms(now)],
        )?;
        Ok(changed == 1)
    })
}

pub(super) fn finish(store: &SqliteStore, f: &DeliveryFinish) -> StoreResult<bool> {
    store.write(|tx| {
        let changed = tx.execute(
            "UPDATE deliveries SET state = ?3, finished_at = ?4, reason = ?5, message = ?6,
                    duration_us = ?7, fuel = ?8, peak_memory = ?9, component_sha256 = ?10,
                    component_version = ?11
             WHERE broadcast_id = ?1 AND instance = ?2 AND state = 'running'",
            params![
                f.broadcast_id,
                f.instance,
                f.outcome.state.as_str(),
                ms(f.finished_at),
                f.outcome.reason.map(|r| r.as_str()),
                f.outcome.message,
                f.outcome.duration_us as i64,
                f.outcome.fuel as i64,
                f.outcome.peak_memory_bytes as i64,
                f.outcome.component_sha256,
                f.outcome.component_version
            ],
        )?;
        if changed == 1 {
            insert_events(tx, &f.outcome.events)?;
        }
        Ok(changed == 1)
    })
}

pub(super) fn expire(
    store: &SqliteStore,
    instances: &[String],
    now: chrono::DateTime<chrono::Utc>,
    reason: &str,
) -> StoreResult<u64> {
    store.write(|tx| {
        let mut stmt = tx.prepare_cached(
            "UPDATE deliveries SET state = 'abandoned', finished_at = ?2, message = ?3
             WHERE instance = ?1 AND state IN ('queued', 'running')",
        )?;
        let mut expired = 0;
        for instance in instances {
            expired += stmt.execute(params![instance, ms(now), reason])? as u64;
        }
        Ok(expired)
    })
}

pub(super) fn join(
    store: &SqliteStore,
    instance: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> StoreResult<u64> {
    store.write(|tx| {
        let joined = tx.execute(
            "INSERT INTO deliveries (broadcast_id, instance, state)
             SELECT id, ?1, 'queued' FROM broadcasts b
             WHERE b.created_at >= ?2 AND NOT EXISTS (
                 SELECT 1 FROM deliveries d WHERE d.broadcast_id = b.id AND d.instance = ?1)",
            params![instance, ms(since)],
        )?;
        Ok(joined as u64)
    })
}

/// Broadcasts made before `since`, with their deliveries.
pub(super) fn prune(tx: &Transaction<'_>, since: i64) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM deliveries WHERE broadcast_id IN
             (SELECT id FROM broadcasts WHERE created_at < ?1)",
        [since],
    )?;
    tx.execute("DELETE FROM broadcasts WHERE created_at < ?1", [since])
}

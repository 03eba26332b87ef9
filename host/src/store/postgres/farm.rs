//! Broadcasts (web farm) in the PostgreSQL store. A new delivery row
//! notifies every instance (the same channel as configuration edits), so an
//! instance starts its delivery within its next pass, not at its next poll.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::rows::ms;
use super::writes;
use std::time::Duration;

// What `in_transaction!` expands to needs.
use super::{ATTEMPTS, PostgresStore, is_transient};
use crate::model::{BroadcastPayload, BroadcastRecord, DeliveryRecord, PendingDelivery, RunState};
use crate::store::{DeliveryFinish, NewBroadcast, StoreError, StoreResult};

/// Schema migration 3.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE broadcasts (
    id         TEXT COLLATE "C" PRIMARY KEY,
    identifier TEXT NOT NULL,
    target     TEXT NOT NULL,
    text       TEXT NOT NULL,
    data       BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX broadcasts_created ON broadcasts (created_at);
CREATE TABLE deliveries (
    broadcast_id      TEXT COLLATE "C" NOT NULL REFERENCES broadcasts (id) ON DELETE CASCADE,
    instance          TEXT COLLATE "C" NOT NULL,
    state             TEXT NOT NULL,
    run_id            TEXT,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    reason            TEXT,
    message           TEXT NOT NULL DEFAULT '',
    duration_us       BIGINT,
    fuel              BIGINT,
    peak_memory       BIGINT,
    component_sha256  TEXT,
    component_version TEXT,
    PRIMARY KEY (broadcast_id, instance)
);
CREATE INDEX deliveries_waiting ON deliveries (instance, state);
CREATE TRIGGER deliveries_queued AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION cronwerk_notify_change();
"#;

const DELIVERY_COLUMNS: &str = "broadcast_id, instance, state, run_id, started_at, finished_at, \
    reason, message, duration_us, fuel, peak_memory, component_sha256, component_version";

const BROADCAST_COLUMNS: &str =
    "id, identifier, target, text, octet_length(data)::BIGINT, created_at, created_by";

fn delivery(r: &Row) -> anyhow::Result<(String, DeliveryRecord)> {
    let opt_u64 = |i: usize| -> anyhow::Result<Option<u64>> {
        Ok(r.try_get::<_, Option<i64>>(i)?.map(|v| v as u64))
    };
    Ok((
        r.try_get(0)?,
        DeliveryRecord {
            instance: r.try_get(1)?,
            state: r
                .try_get::<_, String>(2)?
                .parse()
                .unwrap_or(RunState::Abandoned),
            run_id: r.try_get(3)?,
            started_at: r.try_get(4)?,
            finished_at: r.try_get(5)?,
            reason: r.try_get(6)?,
            message: r.try_get(7)?,
            duration_us: opt_u64(8)?,
            fuel: opt_u64(9)?,
            peak_memory_bytes: opt_u64(10)?,
            component_sha256: r.try_get(11)?,
            component_version: r.try_get(12)?,
        },
    ))
}

fn broadcast(r: &Row) -> anyhow::Result<BroadcastRecord> {
    Ok(BroadcastRecord {
        id: r.try_get(0)?,
        identifier: r.try_get(1)?,
        target: r.try_get(2)?,
        text: r.try_get(3)?,
        data_bytes: r.try_get::<_, i64>(4)? as u64,
        created_at: r.try_get(5)?,
        created_by: r.try_get(6)?,
        deliveries: Vec::new(),
    })
}

impl PostgresStore {
    /// Broadcasts with their deliveries, in the order given.
    async fn with_deliveries(&self, rows: &[Row]) -> StoreResult<Vec<BroadcastRecord>> {
        let mut found: Vec<BroadcastRecord> =
            rows.iter().map(broadcast).collect::<anyhow::Result<_>>()?;
        let ids: Vec<&str> = found.iter().map(|b| b.id.as_str()).collect();
        let deliveries = self
            .read(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE broadcast_id = ANY($1)
                     ORDER BY instance"
                ),
                &[&ids],
            )
            .await?;
        for row in &deliveries {
            let (id, d) = delivery(row)?;
            if let Some(b) = found.iter_mut().find(|b| b.id == id) {
                b.deliveries.push(d);
            }
        }
        Ok(found)
    }

    pub(super) async fn farm_create(&self, b: &NewBroadcast) -> StoreResult<()> {
        in_transaction!(self, |tx| {
            writes::exec(
                &tx,
                "INSERT INTO broadcasts (id, identifier, target, text, data, created_at, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &b.id,
                    &b.identifier,
                    &b.payload.target,
                    &b.payload.text,
                    &b.payload.data,
                    &ms(b.created_at),
                    &b.created_by,
                ],
            )
            .await?;
            writes::exec(
                &tx,
                "INSERT INTO deliveries (broadcast_id, instance, state)
                 SELECT $1, instance, 'queued' FROM UNNEST($2::text[]) AS i(instance)",
                &[&b.id, &b.instances],
            )
            .await?;
        })
    }

    pub(super) async fn farm_get(&self, id: &str) -> StoreResult<BroadcastRecord> {
        let rows = self
            .read(
                &format!("SELECT {BROADCAST_COLUMNS} FROM broadcasts WHERE id = $1"),
                &[&id],
            )
            .await?;
        self.with_deliveries(&rows)
            .await?
            .pop()
            .ok_or_else(|| StoreError::BroadcastNotFound(id.to_owned()))
    }

    pub(super) async fn farm_list(&self, limit: u32) -> StoreResult<Vec<BroadcastRecord>> {
        let rows = self
            .read(
                &format!(
                    "SELECT {BROADCAST_COLUMNS} FROM broadcasts
                     ORDER BY created_at DESC, id DESC LIMIT $1"
                ),
                &[&i64::from(limit)],
            )
            .await?;
        self.with_deliveries(&rows).await
    }

    pub(super) async fn farm_pending(&self, instance: &str) -> StoreResult<Vec<PendingDelivery>> {
        let rows = self
            .read(
                "SELECT b.id, b.identifier, b.target, b.text, b.data, b.created_at, b.created_by
                 FROM deliveries d JOIN broadcasts b ON b.id = d.broadcast_id
                 WHERE d.instance = $1 AND d.state = 'queued'
                 ORDER BY b.created_at, b.id",
                &[&instance],
            )
            .await?;
        let pending = rows
            .iter()
            .map(|r| {
                Ok(PendingDelivery {
                    broadcast_id: r.try_get(0)?,
                    identifier: r.try_get(1)?,
                    payload: BroadcastPayload {
                        target: r.try_get(2)?,
                        text: r.try_get(3)?,
                        data: r.try_get(4)?,
                    },
                    created_at: r.try_get(5)?,
                    created_by: r.try_get(6)?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(pending)
    }

    pub(super) async fn farm_start(
        &self,
        broadcast_id: &str,
        instance: &str,
        run_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        in_transaction!(self, |tx| {
            writes::exec(
                &tx,
                "UPDATE deliveries SET state = 'running', run_id = $3, started_at = $4
                 WHERE broadcast_id = $1 AND instance = $2 AND state = 'queued'",
                &[&broadcast_id, &instance, &run_id, &ms(now)],
            )
            .await?
                == 1
        })
    }

    pub(super) async fn farm_finish(&self, f: &DeliveryFinish) -> StoreResult<bool> {
        in_transaction!(self, |tx| {
            let changed = writes::exec(
                &tx,
                "UPDATE deliveries SET state = $3, finished_at = $4, reason = $5, message = $6,
                        duration_us = $7, fuel = $8, peak_memory = $9, component_sha256 = $10,
                        component_version = $11
                 WHERE broadcast_id = $1 AND instance = $2 AND state = 'running'",
                &[
                    &f.broadcast_id,
                    &f.instance,
                    &f.outcome.state.as_str(),
                    &ms(f.finished_at),
                    &f.outcome.reason.map(|r| r.as_str()),
                    &f.outcome.message,
                    &(f.outcome.duration_us as i64),
                    &(f.outcome.fuel as i64),
                    &(f.outcome.peak_memory_bytes as i64),
                    &f.outcome.component_sha256,
                    &f.outcome.component_version,
                ],
            )
            .await?;
            if changed == 1 {
                writes::insert_events(&tx, &f.outcome.events).await?;
            }
            changed == 1
        })
    }

    pub(super) async fn farm_expire(
        &self,
        instances: &[String],
        now: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<u64> {
        in_transaction!(self, |tx| {
            writes::exec(
                &tx,
                "UPDATE deliveries SET state = 'abandoned', finished_at = $2, message = $3
                 WHERE instance = ANY($1) AND state IN ('queued', 'running')",
                &[&instances, &ms(now), &reason],
            )
            .await?
        })
    }

    pub(super) async fn farm_join(&self, instance: &str, since: DateTime<Utc>) -> StoreResult<u64> {
        in_transaction!(self, |tx| {
            writes::exec(
                &tx,
                "INSERT INTO deliveries (broadcast_id, instance, state)
                 SELECT id, $1, 'queued' FROM broadcasts WHERE created_at >= $2
                 ON CONFLICT (broadcast_id, instance) DO NOTHING",
                &[&instance, &ms(since)],
            )
            .await?
        })
    }
}

//! Events, the state tasks keep between runs, identifier settings, and
//! retention.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::rows::{self, EVENT_COLUMNS};
use super::{Tx, params};
use crate::model::{EventRecord, NewEvent};
use crate::store::{EventFilter, Setting, Settings, StoreError, StoreResult};

pub async fn insert_event<T: Tx + ?Sized>(tx: &T, e: &NewEvent) -> anyhow::Result<()> {
    tx.exec(
        "INSERT INTO events (at, level, source, code, message, task_id, run_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        params![
            e.at,
            e.level.rank(),
            e.source.as_str(),
            &e.code,
            &e.message,
            e.task_id,
            &e.run_id
        ],
    )
    .await?;
    Ok(())
}

/// The newest events that pass `filter` (the oldest, with
/// `filter.oldest`), oldest first. The casts type the parameters a filter
/// leaves NULL (PostgreSQL must know them).
pub async fn list_events<T: Tx + ?Sized>(
    tx: &T,
    filter: &EventFilter,
) -> anyhow::Result<Vec<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN tasks t ON t.id = e.task_id
         WHERE (CAST($1 AS BIGINT) IS NULL OR e.task_id = $1)
           AND (CAST($2 AS TEXT) IS NULL OR e.run_id = $2)
           AND (CAST($3 AS BIGINT) IS NULL OR e.level >= $3)
           AND (CAST($4 AS BIGINT) IS NULL OR e.id > $4)
         ORDER BY e.id {} LIMIT $5",
        if filter.oldest { "ASC" } else { "DESC" }
    );
    let found = tx
        .query(
            &sql,
            params![
                filter.task_id,
                &filter.run_id,
                filter.min_level.map(|l| l.rank()),
                filter.after_id,
                super::ledger::limit(filter.limit),
            ],
        )
        .await?;
    let mut events = rows::all(found, rows::event)?;
    if !filter.oldest {
        events.reverse();
    }
    Ok(events)
}

/// The states of `task_ids` (empty for those without), one read each
/// (PostgreSQL: one read for all).
pub async fn load_states<T: Tx + ?Sized>(
    tx: &T,
    task_ids: &[i64],
) -> anyhow::Result<HashMap<i64, BTreeMap<String, String>>> {
    let mut states: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
    for &id in task_ids {
        let mut state = BTreeMap::new();
        for mut row in tx
            .query(
                "SELECT key, value FROM task_state WHERE task_id = $1",
                params![id],
            )
            .await?
        {
            state.insert(row.text(0)?, row.text(1)?);
        }
        states.insert(id, state);
    }
    Ok(states)
}

/// Sets or (`None`) removes one setting; false when a plain value was
/// refused because the setting is secret. The upsert's condition is the
/// rule: a secret value may replace anything, a plain one only a plain one.
pub async fn set_setting<T: Tx + ?Sized>(
    tx: &T,
    identifier: &str,
    key: &str,
    setting: Option<&Setting>,
) -> anyhow::Result<bool> {
    match setting {
        Some(setting) => {
            let sql = format!(
                "INSERT INTO settings (identifier, key, value, secret, updated_at)
                 VALUES ($1, $2, $3, $4, {})
                 ON CONFLICT (identifier, key)
                 DO UPDATE SET value = excluded.value, secret = excluded.secret,
                               updated_at = excluded.updated_at
                 WHERE excluded.secret = TRUE OR settings.secret = FALSE",
                T::NOW
            );
            let changed = tx
                .exec(
                    &sql,
                    params![identifier, key, &setting.value, setting.secret],
                )
                .await?;
            Ok(changed > 0)
        }
        None => {
            tx.exec(
                "DELETE FROM settings WHERE identifier = $1 AND key = $2",
                params![identifier, key],
            )
            .await?;
            Ok(true)
        }
    }
}

/// What [`set_setting`] returned, as the role's result.
pub fn setting_written(written: bool, identifier: &str, key: &str) -> StoreResult<()> {
    if written {
        Ok(())
    } else {
        Err(StoreError::SecretSetting {
            identifier: identifier.to_owned(),
            key: key.to_owned(),
        })
    }
}

pub async fn list_settings<T: Tx + ?Sized>(tx: &T) -> anyhow::Result<Settings> {
    let mut settings = Settings::new();
    for mut row in tx
        .query("SELECT identifier, key, value, secret FROM settings", &[])
        .await?
    {
        let setting = Setting {
            value: row.text(2)?,
            secret: row.flag(3)?,
        };
        settings
            .entry(row.text(0)?)
            .or_default()
            .insert(row.text(1)?, setting);
    }
    Ok(settings)
}

/// Retention: the newest `keep_runs` finished runs per configuration, and
/// events and broadcasts (with their deliveries) from `since` on.
pub async fn prune<T: Tx + ?Sized>(
    tx: &T,
    keep_runs: u32,
    since: DateTime<Utc>,
) -> anyhow::Result<(u64, u64)> {
    // Configurations without limits of their own (and runs of deleted
    // ones): the newest `keep_runs` finished runs, whatever their outcome.
    let mut runs = tx
        .exec(
            "DELETE FROM runs WHERE id IN (
                 SELECT id FROM (
                     SELECT r.id,
                            ROW_NUMBER() OVER (PARTITION BY r.task_id ORDER BY r.id DESC) AS n
                     FROM runs r LEFT JOIN tasks t ON t.id = r.task_id
                     WHERE r.state NOT IN ('running', 'queued')
                       AND (t.id IS NULL OR (t.keep_runs IS NULL AND t.keep_failed IS NULL))
                 ) ranked
                 WHERE n > $1)",
            params![keep_runs],
        )
        .await?;
    // Configurations with their own: failures and the rest counted apart,
    // each against its limit (the one not given is `keep_runs`).
    runs += tx
        .exec(
            "DELETE FROM runs WHERE id IN (
                 SELECT id FROM (
                     SELECT r.id,
                            ROW_NUMBER() OVER (
                                PARTITION BY r.task_id,
                                    r.state IN ('failed', 'stopped', 'abandoned')
                                ORDER BY r.id DESC) AS n,
                            CASE WHEN r.state IN ('failed', 'stopped', 'abandoned')
                                 THEN COALESCE(t.keep_failed, t.keep_runs, $1)
                                 ELSE COALESCE(t.keep_runs, $1) END AS keep
                     FROM runs r JOIN tasks t ON t.id = r.task_id
                     WHERE r.state NOT IN ('running', 'queued')
                       AND (t.keep_runs IS NOT NULL OR t.keep_failed IS NOT NULL)
                 ) ranked
                 WHERE n > keep)",
            params![keep_runs],
        )
        .await?;
    let events = tx
        .exec("DELETE FROM events WHERE at < $1", params![since])
        .await?;
    tx.exec(
        "DELETE FROM deliveries WHERE broadcast_id IN
             (SELECT id FROM broadcasts WHERE created_at < $1)",
        params![since],
    )
    .await?;
    tx.exec(
        "DELETE FROM broadcasts WHERE created_at < $1",
        params![since],
    )
    .await?;
    Ok((runs, events))
}

//! Between result rows and the store's records, once for both backends:
//! which columns a listing selects, in what order, and how each becomes a
//! field. A value this build cannot name (a state written by a newer
//! version) reads as the most cautious variant rather than failing the
//! whole listing.

use anyhow::Context as _;

use super::Row;
use crate::model::{
    BroadcastPayload, BroadcastRecord, DeliveryRecord, EventRecord, EventSource, InstanceRow,
    Level, PendingDelivery, PluginRow, PluginState, RunRecord, RunState, TaskConfig, TaskRecord,
    Trigger,
};

pub const TASK_COLUMNS: &str = "id, config, created_at, updated_at, next_run_at, last_run_at, \
    last_outcome, last_message, run_count, skipped_count, failed_count, running_run_id, \
    retry_at, retry_attempt, enabled, name, running_count";

pub fn task(mut r: Row) -> anyhow::Result<TaskRecord> {
    let name = r.text(15)?;
    let json = r.text(1)?;
    let mut config: TaskConfig = serde_json::from_str(&json)
        .with_context(|| format!("the stored configuration of '{name}' is not valid"))?;
    // The columns are the truth for what the CLI toggles without rewriting JSON.
    config.enabled = r.flag(14)?;
    config.name = name;
    Ok(TaskRecord {
        id: r.int(0)?,
        config,
        created_at: r.time(2)?,
        updated_at: r.time(3)?,
        next_run_at: r.opt_time(4)?,
        last_run_at: r.opt_time(5)?,
        last_outcome: r.parsed(6)?,
        last_message: r.opt_text(7)?,
        run_count: r.int(8)? as u64,
        skipped_count: r.int(9)? as u64,
        failed_count: r.int(10)? as u64,
        running_run_id: r.opt_text(11)?,
        running_count: r.int(16)?.max(0) as u32,
        retry_at: r.opt_time(12)?,
        retry_attempt: r.int(13)? as u32,
    })
}

pub const RUN_COLUMNS: &str = "id, task_id, task_name, implementation, trigger, attempt, \
    scheduled_for, queued_at, started_at, finished_at, lease_until, state, reason, message, \
    duration_us, fuel, peak_memory, component_sha256, component_version, instance, payload";

pub fn run(mut r: Row) -> anyhow::Result<RunRecord> {
    Ok(RunRecord {
        id: r.text(0)?,
        task_id: r.int(1)?,
        task_name: r.text(2)?,
        implementation: r.text(3)?,
        trigger: r.parsed(4)?.unwrap_or(Trigger::Manual),
        attempt: r.int(5)? as u32,
        scheduled_for: r.opt_time(6)?,
        queued_at: r.opt_time(7)?,
        started_at: r.opt_time(8)?,
        finished_at: r.opt_time(9)?,
        lease_until: r.opt_time(10)?,
        state: r.parsed(11)?.unwrap_or(RunState::Abandoned),
        reason: r.parsed(12)?,
        message: r.text(13)?,
        duration_us: r.opt_u64(14)?,
        fuel: r.opt_u64(15)?,
        peak_memory_bytes: r.opt_u64(16)?,
        component_sha256: r.opt_text(17)?,
        component_version: r.opt_text(18)?,
        instance: r.opt_text(19)?,
        payload: r.opt_text(20)?,
    })
}

/// Events joined with their configuration's current name (`t`).
pub const EVENT_COLUMNS: &str =
    "e.id, e.at, e.level, e.source, e.code, e.message, e.task_id, t.name, e.run_id";

pub fn event(mut r: Row) -> anyhow::Result<EventRecord> {
    Ok(EventRecord {
        id: r.int(0)?,
        at: r.time(1)?,
        level: Level::from_rank(r.int(2)?),
        source: r.parsed(3)?.unwrap_or(EventSource::Host),
        code: r.text(4)?,
        message: r.text(5)?,
        task_id: r.opt_int(6)?,
        task_name: r.opt_text(7)?,
        run_id: r.opt_text(8)?,
    })
}

pub const PLUGIN_COLUMNS: &str =
    "instance, file, sha256, identifier, version, loaded_at, status, error, serving_sha256";

pub fn plugin(mut r: Row) -> anyhow::Result<PluginRow> {
    Ok(PluginRow {
        instance: r.text(0)?,
        file: r.text(1)?,
        sha256: r.text(2)?,
        identifier: r.opt_text(3)?,
        version: r.opt_text(4)?,
        loaded_at: r.time(5)?,
        status: r.parsed(6)?.unwrap_or(PluginState::Failed),
        error: r.opt_text(7)?,
        serving_sha256: r.opt_text(8)?,
    })
}

pub const INSTANCE_COLUMNS: &str =
    "name, pid, version, roles, started_at, heartbeat_at, process, host";

pub fn instance(mut r: Row) -> anyhow::Result<InstanceRow> {
    Ok(InstanceRow {
        name: r.text(0)?,
        pid: r.int(1)? as u32,
        version: r.text(2)?,
        roles: r.list(3)?,
        started_at: r.time(4)?,
        heartbeat_at: r.time(5)?,
        process: r.text(6)?,
        host: r.text(7)?,
    })
}

/// Broadcasts (`b`: a subquery giving the payload's size, not its bytes)
/// with their deliveries (`d`, joined on the broadcast), one row per
/// delivery: a listing and its deliveries come from one statement, so
/// they agree.
pub const BROADCAST_COLUMNS: &str = "b.id, b.identifier, b.target, b.text, b.data_bytes, \
    b.created_at, b.created_by, d.instance, d.state, d.run_id, d.started_at, d.finished_at, \
    d.reason, d.message, d.duration_us, d.fuel, d.peak_memory, d.component_sha256, \
    d.component_version";

/// What the `b` subquery selects of `broadcasts`.
pub const BROADCAST_FIELDS: &str =
    "id, identifier, target, text, length(data) AS data_bytes, created_at, created_by";

/// Broadcasts from rows of [`BROADCAST_COLUMNS`] ordered by broadcast.
pub fn broadcasts(rows: Vec<Row>) -> anyhow::Result<Vec<BroadcastRecord>> {
    let mut found: Vec<BroadcastRecord> = Vec::new();
    for mut r in rows {
        let id = r.text(0)?;
        if found.last().is_none_or(|b| b.id != id) {
            found.push(BroadcastRecord {
                id,
                identifier: r.text(1)?,
                target: r.text(2)?,
                text: r.text(3)?,
                data_bytes: r.int(4)? as u64,
                created_at: r.time(5)?,
                created_by: r.text(6)?,
                deliveries: Vec::new(),
            });
        }
        // A broadcast to no instance joins no delivery.
        let Some(instance) = r.opt_text(7)? else {
            continue;
        };
        let delivery = DeliveryRecord {
            instance,
            state: r.parsed(8)?.unwrap_or(RunState::Abandoned),
            run_id: r.opt_text(9)?,
            started_at: r.opt_time(10)?,
            finished_at: r.opt_time(11)?,
            reason: r.opt_text(12)?,
            message: r.text(13)?,
            duration_us: r.opt_u64(14)?,
            fuel: r.opt_u64(15)?,
            peak_memory_bytes: r.opt_u64(16)?,
            component_sha256: r.opt_text(17)?,
            component_version: r.opt_text(18)?,
        };
        if let Some(b) = found.last_mut() {
            b.deliveries.push(delivery);
        }
    }
    Ok(found)
}

/// A delivery waiting to run: its broadcast with the payload (`b`).
pub const PENDING_COLUMNS: &str =
    "b.id, b.identifier, b.target, b.text, b.data, b.created_at, b.created_by, b.sender";

pub fn pending(mut r: Row) -> anyhow::Result<PendingDelivery> {
    Ok(PendingDelivery {
        broadcast_id: r.text(0)?,
        identifier: r.text(1)?,
        payload: BroadcastPayload {
            target: r.text(2)?,
            text: r.text(3)?,
            data: r.bytes(4)?,
        },
        created_at: r.time(5)?,
        created_by: r.text(6)?,
        sender: r
            .opt_text(7)?
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .context("a broadcast's stored sender is not valid")?,
    })
}

/// Maps every row, failing on the first that does not map.
pub fn all<T>(rows: Vec<Row>, f: impl Fn(Row) -> anyhow::Result<T>) -> anyhow::Result<Vec<T>> {
    rows.into_iter().map(f).collect()
}

//! Between PostgreSQL rows and the store's records, and the encodings both
//! backends share (levels as numbers, sources and triggers as words).

use anyhow::Context as _;
use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::Row;

use crate::model::{
    EventRecord, EventSource, InstanceRow, Level, PluginRow, PluginState, RunRecord, RunState,
    TaskConfig, TaskRecord, Trigger,
};

/// A time as stored: whole milliseconds, like the SQLite backend, so a slot
/// read back compares equal to the one the schedule computes.
pub fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.timestamp_millis())
        .single()
        .unwrap_or(t)
}

pub fn opt_ms(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.map(ms)
}

pub fn level_to_int(l: Level) -> i64 {
    match l {
        Level::Trace => 0,
        Level::Debug => 1,
        Level::Info => 2,
        Level::Warning => 3,
        Level::Error => 4,
    }
}

fn level_from_int(v: i64) -> Level {
    match v {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warning,
        _ => Level::Error,
    }
}

pub fn source_str(s: EventSource) -> &'static str {
    match s {
        EventSource::Task => "task",
        EventSource::Stdout => "stdout",
        EventSource::Stderr => "stderr",
        EventSource::Host => "host",
    }
}

fn source_from(s: &str) -> EventSource {
    match s {
        "task" => EventSource::Task,
        "stdout" => EventSource::Stdout,
        "stderr" => EventSource::Stderr,
        _ => EventSource::Host,
    }
}

pub fn trigger_str(t: Trigger) -> &'static str {
    match t {
        Trigger::Schedule => "schedule",
        Trigger::Manual => "manual",
        Trigger::Broadcast => "broadcast",
        Trigger::Retry => "retry",
    }
}

pub const TASK_COLUMNS: &str = "id, config, created_at, updated_at, next_run_at, last_run_at, \
    last_outcome, last_message, run_count, skipped_count, failed_count, running_run_id, \
    retry_at, retry_attempt, enabled, name";

pub fn task(row: &Row) -> anyhow::Result<TaskRecord> {
    let name: String = row.try_get(15)?;
    let json: String = row.try_get(1)?;
    let mut config: TaskConfig = serde_json::from_str(&json)
        .with_context(|| format!("the stored configuration of '{name}' is not valid"))?;
    // The columns are the truth for what the CLI toggles without rewriting JSON.
    config.enabled = row.try_get(14)?;
    config.name = name;
    Ok(TaskRecord {
        id: row.try_get(0)?,
        config,
        created_at: row.try_get(2)?,
        updated_at: row.try_get(3)?,
        next_run_at: row.try_get(4)?,
        last_run_at: row.try_get(5)?,
        last_outcome: row
            .try_get::<_, Option<String>>(6)?
            .and_then(|s| s.parse().ok()),
        last_message: row.try_get(7)?,
        run_count: row.try_get::<_, i64>(8)? as u64,
        skipped_count: row.try_get::<_, i64>(9)? as u64,
        failed_count: row.try_get::<_, i64>(10)? as u64,
        running_run_id: row.try_get(11)?,
        retry_at: row.try_get(12)?,
        retry_attempt: row.try_get::<_, i64>(13)? as u32,
    })
}

pub const RUN_COLUMNS: &str = "id, task_id, task_name, implementation, trigger, attempt, \
    scheduled_for, queued_at, started_at, finished_at, lease_until, state, reason, message, \
    duration_us, fuel, peak_memory, component_sha256, component_version, instance";

pub fn run(row: &Row) -> anyhow::Result<RunRecord> {
    let opt_u64 = |i: usize| -> anyhow::Result<Option<u64>> {
        Ok(row.try_get::<_, Option<i64>>(i)?.map(|v| v as u64))
    };
    Ok(RunRecord {
        id: row.try_get(0)?,
        task_id: row.try_get(1)?,
        task_name: row.try_get(2)?,
        implementation: row.try_get(3)?,
        trigger: row
            .try_get::<_, String>(4)?
            .parse()
            .unwrap_or(Trigger::Manual),
        attempt: row.try_get::<_, i64>(5)? as u32,
        scheduled_for: row.try_get(6)?,
        queued_at: row.try_get(7)?,
        started_at: row.try_get(8)?,
        finished_at: row.try_get(9)?,
        lease_until: row.try_get(10)?,
        state: row
            .try_get::<_, String>(11)?
            .parse()
            .unwrap_or(RunState::Abandoned),
        reason: row
            .try_get::<_, Option<String>>(12)?
            .and_then(|s| s.parse().ok()),
        message: row.try_get(13)?,
        duration_us: opt_u64(14)?,
        fuel: opt_u64(15)?,
        peak_memory_bytes: opt_u64(16)?,
        component_sha256: row.try_get(17)?,
        component_version: row.try_get(18)?,
        instance: row.try_get(19)?,
    })
}

pub const EVENT_COLUMNS: &str =
    "e.id, e.at, e.level, e.source, e.code, e.message, e.task_id, t.name, e.run_id";

pub fn event(row: &Row) -> anyhow::Result<EventRecord> {
    Ok(EventRecord {
        id: row.try_get(0)?,
        at: row.try_get(1)?,
        level: level_from_int(row.try_get(2)?),
        source: source_from(row.try_get(3)?),
        code: row.try_get(4)?,
        message: row.try_get(5)?,
        task_id: row.try_get(6)?,
        task_name: row.try_get(7)?,
        run_id: row.try_get(8)?,
    })
}

pub fn plugin(row: &Row) -> anyhow::Result<PluginRow> {
    Ok(PluginRow {
        instance: row.try_get(0)?,
        file: row.try_get(1)?,
        sha256: row.try_get(2)?,
        identifier: row.try_get(3)?,
        version: row.try_get(4)?,
        loaded_at: row.try_get(5)?,
        status: row
            .try_get::<_, String>(6)?
            .parse()
            .unwrap_or(PluginState::Failed),
        error: row.try_get(7)?,
    })
}

pub fn instance(row: &Row) -> anyhow::Result<InstanceRow> {
    Ok(InstanceRow {
        name: row.try_get(0)?,
        pid: row.try_get::<_, i64>(1)? as u32,
        version: row.try_get(2)?,
        roles: row.try_get(3)?,
        started_at: row.try_get(4)?,
        heartbeat_at: row.try_get(5)?,
    })
}

/// Converts every row, failing on the first that does not convert.
pub fn all<T>(rows: &[Row], f: impl Fn(&Row) -> anyhow::Result<T>) -> anyhow::Result<Vec<T>> {
    rows.iter().map(f).collect()
}

//! The SQLite schema as numbered migrations (`rusqlite_migration` keeps
//! the version in `user_version`), applied when a store opens. Only ever
//! append: files in use have the earlier ones applied.

use rusqlite_migration::{M, Migrations};

const SCHEMA_V1: &str = r#"
CREATE TABLE tasks (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    enabled        INTEGER NOT NULL,
    config         TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    next_run_at    INTEGER,
    last_run_at    INTEGER,
    last_outcome   TEXT,
    last_message   TEXT,
    run_count      INTEGER NOT NULL DEFAULT 0,
    skipped_count  INTEGER NOT NULL DEFAULT 0,
    failed_count   INTEGER NOT NULL DEFAULT 0,
    running_run_id TEXT,
    retry_at       INTEGER,
    retry_attempt  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_due ON tasks (enabled, next_run_at);

CREATE TABLE runs (
    id                TEXT    PRIMARY KEY,
    task_id           INTEGER NOT NULL,
    task_name         TEXT    NOT NULL,
    implementation    TEXT    NOT NULL,
    trigger           TEXT    NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 1,
    scheduled_for     INTEGER,
    queued_at         INTEGER,
    started_at        INTEGER,
    finished_at       INTEGER,
    lease_until       INTEGER,
    state             TEXT    NOT NULL,
    reason            TEXT,
    message           TEXT    NOT NULL DEFAULT '',
    duration_us       INTEGER,
    fuel              INTEGER,
    peak_memory       INTEGER,
    component_sha256  TEXT,
    component_version TEXT,
    instance          TEXT
);
CREATE INDEX runs_task ON runs (task_id, id);
CREATE INDEX runs_state ON runs (state);
-- Belt and braces for exactly-once: one record per scheduled slot.
CREATE UNIQUE INDEX runs_slot ON runs (task_id, scheduled_for) WHERE trigger = 'schedule';

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    level   INTEGER NOT NULL,
    source  TEXT    NOT NULL,
    code    TEXT    NOT NULL,
    message TEXT    NOT NULL,
    task_id INTEGER,
    run_id  TEXT
);
CREATE INDEX events_task ON events (task_id, id);
CREATE INDEX events_run ON events (run_id);
CREATE INDEX events_at ON events (at);

CREATE TABLE task_state (
    task_id INTEGER NOT NULL,
    key     TEXT    NOT NULL,
    value   TEXT    NOT NULL,
    PRIMARY KEY (task_id, key)
);

CREATE TABLE plugins (
    instance   TEXT    NOT NULL,
    file       TEXT    NOT NULL,
    sha256     TEXT    NOT NULL,
    identifier TEXT,
    version    TEXT,
    loaded_at  INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    error      TEXT,
    PRIMARY KEY (instance, file)
);

CREATE TABLE instances (
    name         TEXT    PRIMARY KEY,
    pid          INTEGER NOT NULL,
    version      TEXT    NOT NULL,
    roles        TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
"#;

/// Lets the dispatcher's per-pass queries (`due_tasks`, `earliest_due`)
/// read indexes instead of scanning every configuration: with the `OR` in
/// `due_tasks`, SQLite only uses `tasks_due` if `retry_at` has an index too.
const SCHEMA_V2: &str = "CREATE INDEX tasks_retry ON tasks (enabled, retry_at);";

/// Settings an operator scopes to an implementation identifier; every run
/// of that identifier reads them through the `config` import.
const SCHEMA_V3: &str = "CREATE TABLE settings (
    identifier TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (identifier, key)
);";

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(SCHEMA_V1),
        M::up(SCHEMA_V2),
        M::up(SCHEMA_V3),
        // Broadcasts (web farm) and their per-instance deliveries.
        M::up(FARM),
        M::up(BROADCAST_SENDER),
        M::up(SECRET_SETTINGS),
        M::up(STOP_REQUESTS),
        M::up(HISTORY_LIMITS),
        M::up(OVERLAP),
        M::up(FOLLOW_UPS),
        M::up(BACKFILLS),
        M::up(AUDIT),
        M::up(ON_START),
        M::up(INSTANCE_PROCESS),
        M::up(SERVING_SHA256),
        M::up(RUN_INPUTS),
    ])
}

/// Whether a configuration runs on every instance's start, copied out of
/// its JSON so the start reads only those.
const ON_START: &str = "ALTER TABLE tasks ADD COLUMN on_start INTEGER NOT NULL DEFAULT 0;";

/// What serves from a plugin file whose update failed (its previous
/// version), apart from what failed (the file's content now).
const SERVING_SHA256: &str = "ALTER TABLE plugins ADD COLUMN serving_sha256 TEXT;";

/// What each run was given (`model::replay::RunInputs` as JSON), for
/// `cronwerk runs replay`; deleted with its run by retention.
const RUN_INPUTS: &str = "ALTER TABLE runs ADD COLUMN inputs TEXT;";

/// Which process holds an instance's name, and on which machine: two
/// `serve` processes under one `--name` are told apart.
const INSTANCE_PROCESS: &str = "ALTER TABLE instances ADD COLUMN process TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN host TEXT NOT NULL DEFAULT '';";

/// The audit trail: who changed which configuration, setting or token,
/// and which components were swapped, with the fields before and after.
const AUDIT: &str = "CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    changes TEXT    NOT NULL
);
CREATE INDEX audit_subject ON audit (kind, subject, id);";

/// Backfills: one row each, with a cursor (`next_slot`) instances advance
/// as they queue its slots; the runs say which backfill they belong to.
const BACKFILLS: &str = "CREATE TABLE backfills (
    id           TEXT    PRIMARY KEY,
    task_id      INTEGER NOT NULL,
    from_at      INTEGER NOT NULL,
    to_at        INTEGER NOT NULL,
    next_slot    INTEGER,
    concurrency  INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    requested_by TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    total        INTEGER NOT NULL,
    already_ran  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX backfills_task ON backfills (task_id, created_at);
CREATE INDEX backfills_active ON backfills (state);
ALTER TABLE runs ADD COLUMN backfill_id TEXT;
CREATE INDEX runs_backfill ON runs (backfill_id) WHERE backfill_id IS NOT NULL;";

/// What a queued follow-up run is told about the run that ended (JSON).
const FOLLOW_UPS: &str = "ALTER TABLE runs ADD COLUMN payload TEXT;";

/// Overlap policies: how many of a configuration's runs go on
/// (`running_count`, counted from the runs recorded running) and how many
/// may (`max_concurrent`, from its policy), so a claim's condition is one
/// comparison on its row; the partial index finds the runs going on.
const OVERLAP: &str = "ALTER TABLE tasks ADD COLUMN running_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN max_concurrent INTEGER NOT NULL DEFAULT 1;
UPDATE tasks SET running_count =
    (SELECT COUNT(*) FROM runs WHERE runs.task_id = tasks.id AND runs.state = 'running');
CREATE INDEX runs_running ON runs (task_id, id) WHERE state = 'running';";

/// A configuration's own history limits, copied out of its JSON so
/// retention can read them in SQL; NULL: the instance's `--keep-runs`.
const HISTORY_LIMITS: &str = "ALTER TABLE tasks ADD COLUMN keep_runs INTEGER;
ALTER TABLE tasks ADD COLUMN keep_failed INTEGER;";

/// Operators' requests to stop a run in flight, read by the run's instance
/// on its next pass; forgotten once the run has ended.
const STOP_REQUESTS: &str = "CREATE TABLE stop_requests (
    run_id       TEXT    PRIMARY KEY,
    instance     TEXT    NOT NULL,
    requested_by TEXT    NOT NULL,
    requested_at INTEGER NOT NULL
);
CREATE INDEX stop_requests_instance ON stop_requests (instance);";

/// Which settings are secret: masked wherever settings are shown, and
/// redacted from what runs leave behind. Existing settings stay plain.
const SECRET_SETTINGS: &str = "ALTER TABLE settings ADD COLUMN secret INTEGER NOT NULL DEFAULT 0;";

/// The limits and roles of the run that made a broadcast (JSON); NULL for
/// an operator's broadcast and for rows made before this column.
const BROADCAST_SENDER: &str = "ALTER TABLE broadcasts ADD COLUMN sender TEXT;";

/// Broadcasts (web farm): one row per broadcast, one per instance it goes
/// to. Processes sharing the file see each other's broadcasts through the
/// same `data_version` check as any other change.
const FARM: &str = "
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

/// A migration failure as one line: the SQLite error, never the schema's
/// SQL (several kilobytes, of no use to an operator).
pub(super) fn migration_error(e: rusqlite_migration::Error) -> String {
    match e {
        rusqlite_migration::Error::RusqliteError { err, .. } => err.to_string(),
        other => {
            let text = other.to_string();
            match text.char_indices().nth(200) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            }
        }
    }
}

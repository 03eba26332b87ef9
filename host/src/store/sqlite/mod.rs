//! The embedded default backend: one SQLite file in the data directory, in
//! WAL mode so the CLI and a running `serve` (and several `serve`s on one
//! machine) share it safely. Every multi-row change is one immediate
//! (write-locking) transaction, so the store's rules (`store::sql`) run
//! with every other writer excluded; a claim is still a conditional
//! update, so one slot is won by exactly one process.
//!
//! Reads have connections of their own (WAL lets them read while a write
//! goes on), so a long listing never holds up a lease renewal or a claim;
//! and every call leaves its async worker thread to the runtime's other
//! tasks while SQLite works (`block_in_place`), so a slow query or a busy
//! database file never delays heartbeats, the dispatcher or the API.

mod roles;
mod schema;
mod tx;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, TransactionBehavior};

use super::{StoreError, StoreResult};
use tx::SqliteTx;

/// The file in the data directory that serializes schema migrations
/// between processes.
const MIGRATION_LOCK: &str = "cronwerk.db.migrating";

/// Statements kept prepared: every statement of the rules, with room.
const STATEMENT_CACHE: usize = 128;

/// Connections for reads besides the one for writes.
const READERS: usize = 2;

/// The SQLite store.
pub struct SqliteStore {
    /// Writes, the change token, and reads when there are no readers.
    conn: Mutex<Connection>,
    /// Reads of a file-backed store (an in-memory one has none: another
    /// connection would open another, empty, database).
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Bumped on each of this connection's own commits, which SQLite's
    /// `data_version` (the other half of the change token) does not count.
    local_changes: AtomicU64,
}

impl SqliteStore {
    /// Opens (creating if needed) `cronwerk.db` in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        // Private whatever the umask: the folder holds the configurations,
        // their grants, task state, secret settings and the API token.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join("cronwerk.db");
        // Processes opening one new data directory at once (a `serve` and
        // a CLI verb started together) would otherwise each see version 0
        // and create the tables twice; the loser failed. This lock lets one
        // migrate at a time, and the others then find the schema current.
        let lock_path = data_dir.join(MIGRATION_LOCK);
        let lock =
            private_file(&lock_path).with_context(|| format!("opening {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        // Made here, mode 0600, before SQLite would make it 0644 less the
        // umask; SQLite gives its WAL and shared-memory files the mode of
        // the database file.
        private_file(&path).with_context(|| format!("creating {}", path.display()))?;
        let conn = Connection::open(&path)
            .with_context(|| format!("opening the database {}", path.display()))?;
        let store =
            Self::setup(conn).with_context(|| format!("preparing the database {}", path.display()));
        drop(lock);
        let mut store = store?;
        for _ in 0..READERS {
            let reader = Connection::open(&path)
                .and_then(|c| {
                    c.busy_timeout(Duration::from_secs(10))?;
                    c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                    Ok(c)
                })
                .with_context(|| format!("opening the database {}", path.display()))?;
            store.readers.push(Mutex::new(reader));
        }
        Ok(store)
    }

    /// A private in-memory store (tests).
    pub fn in_memory() -> anyhow::Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> anyhow::Result<Self> {
        // Another process may hold the write lock briefly; wait rather than fail.
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrations()
            .to_latest(&mut conn)
            .map_err(|e| anyhow::anyhow!("migrating the schema: {}", schema::migration_error(e)))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: AtomicUsize::new(0),
            local_changes: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader connection: a free one if there is one, else the next in
    /// turn (or the writer's, for an in-memory store).
    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        if self.readers.is_empty() {
            return self.lock();
        }
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            let reader = &self.readers[(first + i) % self.readers.len()];
            if let Ok(conn) = reader.try_lock() {
                return conn;
            }
        }
        let reader = &self.readers[first % self.readers.len()];
        reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a reader connection, outside a transaction (reads).
    fn read<T>(&self, f: impl FnOnce(&SqliteTx<'_>) -> anyhow::Result<T>) -> StoreResult<T> {
        off_the_runtime(|| Ok(f(&SqliteTx(&self.reader()))?))
    }

    /// Runs `f` in an immediate (write-locking) transaction and commits.
    fn write<T>(&self, f: impl FnOnce(&SqliteTx<'_>) -> anyhow::Result<T>) -> StoreResult<T> {
        let result = off_the_runtime(|| {
            let mut conn = self.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&SqliteTx(&tx))?;
            tx.commit()?;
            Ok(value)
        });
        self.local_changes.fetch_add(1, Ordering::Relaxed);
        result.map_err(StoreError::Backend)
    }
}

/// Runs `f`, which blocks on SQLite, letting the runtime move this worker's
/// other tasks to another thread meanwhile. A single-threaded runtime (unit
/// tests, some CLI paths) has no other thread, so there it just runs.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Opens `path` for writing, creating it with mode 0600 if it is missing;
/// an existing file keeps its content and mode.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// Did `e` come from a constraint (the unique configuration name)?
fn violates_constraint(e: &anyhow::Error) -> bool {
    e.downcast_ref::<rusqlite::Error>().is_some_and(|e| {
        matches!(e, rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TaskConfig, Trigger};
    use crate::store::{Claim, Configurations, Housekeeping, NewRun, RunLedger};
    use chrono::Utc;

    #[tokio::test]
    async fn passes_the_store_conformance_suite() {
        super::super::conformance::run_all(|| Box::new(SqliteStore::in_memory().unwrap())).await;
    }

    #[tokio::test]
    async fn another_connections_commit_changes_the_token_and_slots_stay_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(dir.path()).unwrap();
        let b = SqliteStore::open(dir.path()).unwrap();
        let before = a.change_token().await.unwrap();
        let now = Utc::now();
        let schedule = crate::model::Schedule::every(Duration::from_secs(1), now).unwrap();
        let task = b
            .create_task(&TaskConfig::new("x", "A.B", schedule), Some(now))
            .await
            .unwrap();
        assert_ne!(a.change_token().await.unwrap(), before);
        // Two processes' connections race for one slot: exactly one wins.
        let run = |id: &str| NewRun {
            id: id.into(),
            task_id: task.id,
            task_name: "x".into(),
            implementation: "A.B".into(),
            trigger: Trigger::Schedule,
            attempt: 1,
            scheduled_for: Some(now),
            started_at: now,
            lease_until: now,
            instance: id.into(),
            message: String::new(),
            payload: None,
        };
        let (run_a, run_b) = (run("a"), run("b"));
        let (ra, rb) = tokio::join!(
            a.claim_slot(task.id, now, None, &run_a),
            b.claim_slot(task.id, now, None, &run_b)
        );
        let wins = [ra.unwrap(), rb.unwrap()]
            .iter()
            .filter(|c| **c == Claim::Claimed)
            .count();
        assert_eq!(wins, 1);
    }

    #[test]
    fn a_long_read_does_not_hold_up_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
        let (started, read_started) = std::sync::mpsc::channel();
        let (written, write_done) = std::sync::mpsc::channel::<()>();
        // A read that holds its connection and an open read transaction
        // until the write below is done (or gives up after 10 s).
        let reader = std::thread::spawn({
            let store = store.clone();
            move || {
                store
                    .read(|tx| {
                        tx.0.execute_batch("BEGIN; SELECT count(*) FROM runs;")?;
                        started.send(()).unwrap();
                        let waited = write_done.recv_timeout(Duration::from_secs(10)).is_ok();
                        tx.0.execute_batch("COMMIT")?;
                        Ok(waited)
                    })
                    .unwrap()
            }
        });
        read_started.recv().unwrap();
        // A lease renewal, as the dispatcher makes every few seconds.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(store.renew_leases(&["r".into()], Utc::now()))
            .unwrap();
        written.send(()).unwrap();
        assert!(
            reader.join().unwrap(),
            "the write waited for the read to finish"
        );
    }
}

//! When the database goes away (PostgreSQL restarting, a full disk, SQLite
//! locked beyond its busy timeout), every loop of a serving instance fails
//! on every pass. This module tells such failures apart from a store that
//! works and refused one call ([`is_unavailable`]), and watches a store's
//! calls ([`StoreHealth`], an [`Observed`](super::Observed) observer) so an
//! outage is reported once when it starts, once per interval while it lasts
//! and once when it ends, instead of once per failed call; the callers that
//! loop stay quiet about errors it reports.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{CallObserver, StoreError};

/// How often an outage that goes on is reported again.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

impl StoreError {
    /// Whether this error says the database cannot be reached or written
    /// right now (as opposed to refusing this one call): the call may well
    /// work later, so what it would have recorded is worth keeping.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Backend(e) => is_unavailable(e),
            _ => false,
        }
    }
}

/// [`StoreError::is_unavailable`] for the error of a backend.
pub fn is_unavailable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<rusqlite::Error>() {
            return sqlite_unavailable(e);
        }
        if let Some(e) = cause.downcast_ref::<tokio_postgres::Error>() {
            return postgres_unavailable(e);
        }
        if let Some(e) = cause.downcast_ref::<deadpool_postgres::PoolError>() {
            return match e {
                deadpool_postgres::PoolError::Backend(e) => postgres_unavailable(e),
                // Timeouts, a closed pool, a failed connection hook: all
                // mean no connection now.
                _ => true,
            };
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

fn sqlite_unavailable(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            DatabaseBusy
                | DatabaseLocked
                | DiskFull
                | SystemIoFailure
                | CannotOpen
                | ReadOnly
                | OutOfMemory
                | FileLockingProtocolFailed
        ),
        _ => false,
    }
}

fn postgres_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        // Connection exceptions (08), insufficient resources such as a
        // full disk (53), operator intervention such as a shutdown (57),
        // system errors (58), and a read-only standby (25006).
        Some(db) => {
            let code = db.code().code();
            ["08", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "25006"
        }
        // No answer from the server at all: the connection failed or broke.
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                if cause.downcast_ref::<std::io::Error>().is_some() {
                    return true;
                }
                source = cause.source();
            }
            e.to_string().contains("timeout") || e.to_string().contains("timed out")
        }
    }
}

/// What went wrong, without the "the store failed" every backend error
/// starts with.
fn cause(e: &StoreError) -> String {
    match e {
        StoreError::Backend(inner) => format!("{inner:#}"),
        other => other.to_string(),
    }
}

/// An outage that ended: what an instance records in the event log once
/// the store takes writes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    /// Calls that failed during it.
    pub failures: u64,
    /// The first error, which usually names the cause.
    pub first_error: String,
}

impl Outage {
    pub fn describe(&self) -> String {
        let took = (self.ended - self.started).to_std().unwrap_or_default();
        format!(
            "the store was unavailable for {} from {} ({} calls failed): {}",
            humantime::format_duration(round_to_ms(took)),
            self.started.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            self.failures,
            self.first_error
        )
    }
}

fn round_to_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// The outage going on, if any.
struct Down {
    started: DateTime<Utc>,
    started_at: Instant,
    first_error: String,
    failures: u64,
    failures_since_report: u64,
    reported_at: Instant,
    /// A write failed: only a write that works ends the outage (a full
    /// disk still serves reads).
    writes_failed: bool,
}

/// Whether a call only reads (or, like `top_up_backfills`, only reads
/// unless there is work, which is rare: its success says nothing of
/// writes); everything else writes.
fn is_read(call: &str) -> bool {
    ["get_", "list_", "load_"]
        .iter()
        .any(|prefix| call.starts_with(prefix))
        || matches!(
            call,
            "due_tasks"
                | "earliest_due"
                | "queued_runs"
                | "pending_deliveries"
                | "change_token"
                | "stop_requests"
                | "top_up_backfills"
        )
}

/// Watches a store's calls and reports outages at a bounded rate: the
/// first failure in full, then one line per [`REPORT_EVERY`] while calls
/// keep failing, then one when a call succeeds again. Ended outages wait in
/// [`take_outages`](Self::take_outages) for the event log.
pub struct StoreHealth {
    every: Duration,
    down: Mutex<Option<Down>>,
    ended: Mutex<Vec<Outage>>,
    /// Woken when an outage ends.
    recovered: Notify,
}

impl Default for StoreHealth {
    fn default() -> Self {
        Self::new(REPORT_EVERY)
    }
}

/// What one observed call changed, for the caller to log.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    Quiet,
    Started(String),
    Continuing {
        lasted: Duration,
        failures: u64,
        latest: String,
    },
    Ended(Outage, Duration),
}

impl StoreHealth {
    pub fn new(every: Duration) -> Self {
        StoreHealth {
            every,
            down: Mutex::new(None),
            ended: Mutex::new(Vec::new()),
            recovered: Notify::new(),
        }
    }

    /// Whether the latest call failed because the store is unavailable.
    pub fn is_down(&self) -> bool {
        self.lock_down().is_some()
    }

    /// The outage going on: what failed first, and since when.
    pub fn outage(&self) -> Option<(DateTime<Utc>, String)> {
        self.lock_down()
            .as_ref()
            .map(|d| (d.started, d.first_error.clone()))
    }

    /// Outages that ended since the last call, oldest first.
    pub fn take_outages(&self) -> Vec<Outage> {
        std::mem::take(&mut *self.ended.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Resolves when an outage has ended (at once if one ended unseen).
    pub async fn recovered(&self) {
        self.recovered.notified().await
    }

    fn lock_down(&self) -> std::sync::MutexGuard<'_, Option<Down>> {
        self.down.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes one call's result at `at`; says what to report.
    fn note(&self, call: &str, failed: Option<&StoreError>, at: Instant) -> Report {
        let mut down = self.lock_down();
        match (failed, down.as_mut()) {
            (Some(e), None) if e.is_unavailable() => {
                let message = format!("{} (in {call})", cause(e));
                *down = Some(Down {
                    started: Utc::now(),
                    started_at: at,
                    first_error: message.clone(),
                    failures: 1,
                    failures_since_report: 0,
                    reported_at: at,
                    writes_failed: !is_read(call),
                });
                Report::Started(message)
            }
            (Some(e), Some(d)) if e.is_unavailable() => {
                d.writes_failed |= !is_read(call);
                d.failures += 1;
                d.failures_since_report += 1;
                if at.duration_since(d.reported_at) < self.every {
                    return Report::Quiet;
                }
                let failures = std::mem::take(&mut d.failures_since_report);
                d.reported_at = at;
                Report::Continuing {
                    lasted: at.duration_since(d.started_at),
                    failures,
                    latest: format!("{} (in {call})", cause(e)),
                }
            }
            // A call refused for its own reasons says nothing of the outage.
            (Some(_), _) => Report::Quiet,
            (None, None) => Report::Quiet,
            // The change token of a shared server is counted locally:
            // that it works says nothing of the database.
            (None, Some(_)) if call == "change_token" => Report::Quiet,
            (None, Some(d)) if d.writes_failed && is_read(call) => Report::Quiet,
            (None, Some(_)) => {
                let Some(d) = down.take() else {
                    return Report::Quiet;
                };
                let outage = Outage {
                    started: d.started,
                    ended: Utc::now(),
                    failures: d.failures,
                    first_error: d.first_error,
                };
                Report::Ended(outage, at.duration_since(d.started_at))
            }
        }
    }

    fn log(&self, report: Report) {
        match report {
            Report::Quiet => {}
            Report::Started(error) => tracing::error!(
                "the store is unavailable: {error}. Serving goes on: finished runs are held \
                 in memory and recorded when it is back; this is reported again every {} \
                 while it lasts",
                humantime::format_duration(self.every)
            ),
            Report::Continuing {
                lasted,
                failures,
                latest,
            } => tracing::error!(
                "the store is still unavailable after {}: {failures} more calls failed; \
                 latest: {latest}",
                humantime::format_duration(Duration::from_secs(lasted.as_secs()))
            ),
            Report::Ended(outage, lasted) => {
                tracing::warn!(
                    "the store is available again after {} ({} calls failed)",
                    humantime::format_duration(round_to_ms(lasted)),
                    outage.failures
                );
                self.ended
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(outage);
                self.recovered.notify_one();
            }
        }
    }
}

impl CallObserver for StoreHealth {
    fn observe(&self, call: &'static str, _took: Duration, failed: Option<&StoreError>) {
        let report = self.note(call, failed, Instant::now());
        self.log(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_disk() -> StoreError {
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        StoreError::Backend(anyhow::Error::new(e).context("recording finished runs"))
    }

    fn constraint() -> StoreError {
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        StoreError::Backend(e.into())
    }

    #[test]
    fn outages_are_told_from_refused_calls() {
        assert!(full_disk().is_unavailable());
        assert!(!constraint().is_unavailable());
        assert!(!StoreError::TaskNotFound("x".into()).is_unavailable());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(StoreError::Backend(anyhow::Error::new(io).context("connecting")).is_unavailable());
    }

    #[test]
    fn an_outage_is_reported_once_per_interval_and_once_when_it_ends() {
        let health = StoreHealth::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(health.note("claim_slots", None, at(0)), Report::Quiet);
        assert!(matches!(
            health.note("claim_slots", Some(&full_disk()), at(100)),
            Report::Started(m) if m.contains("database or disk is full") && m.contains("claim_slots")
        ));
        assert!(health.is_down());
        // A flood of failures within the interval: silence, counted.
        for ms in (200..10_000).step_by(50) {
            assert_eq!(
                health.note("heartbeat", Some(&full_disk()), at(ms)),
                Report::Quiet
            );
        }
        // A refused call neither reports nor ends the outage.
        assert_eq!(
            health.note("finish_runs", Some(&constraint()), at(10_050)),
            Report::Quiet
        );
        assert!(matches!(
            health.note("heartbeat", Some(&full_disk()), at(10_100)),
            Report::Continuing { failures: 197, .. }
        ));
        // Reads work on a full disk: only a write that works ends it.
        assert_eq!(health.note("list_tasks", None, at(12_000)), Report::Quiet);
        assert!(health.is_down());
        let Report::Ended(outage, lasted) = health.note("heartbeat", None, at(12_100)) else {
            panic!("the outage did not end");
        };
        assert_eq!(lasted, Duration::from_secs(12));
        assert_eq!(outage.failures, 198);
        assert!(outage.first_error.contains("claim_slots"));
        assert!(!health.is_down());
        assert_eq!(health.note("heartbeat", None, at(12_200)), Report::Quiet);
    }

    #[test]
    fn an_outage_of_reads_alone_ends_with_a_read() {
        let health = StoreHealth::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(matches!(
            health.note("change_token", Some(&full_disk()), t0),
            Report::Started(_)
        ));
        assert_eq!(
            health.note("change_token", None, t0 + Duration::from_millis(500)),
            Report::Quiet
        );
        assert!(matches!(
            health.note("list_settings", None, t0 + Duration::from_secs(1)),
            Report::Ended(..)
        ));
    }
}

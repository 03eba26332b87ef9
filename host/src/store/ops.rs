//! What the store's operations take and give besides the records of
//! [`crate::model`]: runs to start, slots to claim and what claiming did,
//! finishes to record, broadcasts to make, and the filters of listings.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::model::follow_up::FollowUp;
use crate::model::{BroadcastPayload, BroadcastSender, Level, RunOutcome, RunState, Trigger};

/// Settings scoped to implementation identifiers: identifier → key → setting.
pub type Settings = BTreeMap<String, BTreeMap<String, Setting>>;

/// One identifier setting. A secret one reaches runs of its identifier
/// like any other, but no listing shows its value and runs' events and
/// results have it redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub secret: bool,
}

impl Setting {
    pub fn plain(value: impl Into<String>) -> Self {
        Setting {
            value: value.into(),
            secret: false,
        }
    }

    pub fn secret(value: impl Into<String>) -> Self {
        Setting {
            value: value.into(),
            secret: true,
        }
    }
}

/// Written by hand so that no `{:?}` (a log line, a failed assertion, a
/// panic) ever prints a secret's value.
impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str("Setting(secret)")
        } else {
            f.debug_tuple("Setting").field(&self.value).finish()
        }
    }
}

/// A run about to start (or a slot about to be recorded skipped).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub task_id: i64,
    pub task_name: String,
    pub implementation: String,
    pub trigger: Trigger,
    pub attempt: u32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub instance: String,
    /// For skipped slots: why.
    pub message: String,
    /// What a follow-up run is told about the run that ended (JSON text).
    pub payload: Option<String>,
}

/// What a slot claim does when the configuration has no room for another
/// run (as many going on as its overlap policy allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOverlap {
    /// Record the slot as skipped and move the schedule on (policies
    /// `skip` and `allow`).
    Skip,
    /// Leave the slot due, to run once the running run ends (catch-up, and
    /// a slot claimed ahead, whose overlap is judged when it is due).
    Wait,
    /// Move the schedule on and record the slot's run queued, to start
    /// when the configuration has room; at most one waits, later slots are
    /// skipped (policy `queue`).
    Queue,
    /// As `Queue`, and ask the runs going on to stop (policy `replace`).
    Replace,
}

/// One slot to claim for `run` (its task is `run.task_id`).
#[derive(Debug, Clone)]
pub struct SlotClaim {
    pub slot: DateTime<Utc>,
    /// The next fire time once this slot is taken or skipped.
    pub next: Option<DateTime<Utc>>,
    pub run: NewRun,
    pub on_overlap: OnOverlap,
}

/// What asking for a run to stop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopAsked {
    /// The run is in flight on `instance`, which stops it on its next pass:
    /// the cancellation flag, the grace period, then the hard stop.
    Signalled { instance: String },
    /// It was queued and had not started: recorded cancelled now.
    CancelledQueued,
    /// It is not running any more (or never ran): nothing to stop.
    NotRunning { state: RunState },
}

/// The result of trying to start a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The run is recorded as running; go ahead.
    Claimed,
    /// The configuration is still running `run_id` (the new run was
    /// recorded skipped where that applies).
    AlreadyRunning { run_id: String },
    /// Someone else claimed the slot first, or the configuration changed.
    Lost,
}

/// How a run ended, with everything to record about it.
#[derive(Debug, Clone)]
pub struct RunFinish {
    pub run_id: String,
    pub task_id: i64,
    pub finished_at: DateTime<Utc>,
    pub outcome: RunOutcome,
    /// The task's state after the run; `None` leaves the stored state as is.
    pub task_state: Option<BTreeMap<String, String>>,
    /// When to retry (failed runs with retries left), and which attempt that is.
    pub retry: Option<(DateTime<Utc>, u32)>,
    /// When the component was really started, recorded over the start the
    /// claim wrote (a slot claimed ahead starts at its instant, later than
    /// the claim); `None` keeps the claim's.
    pub started_at: Option<DateTime<Utc>>,
    /// Runs of other configurations to queue once this one is recorded
    /// finished (in the same transaction, so none is lost or doubled).
    pub follow_ups: Vec<FollowUp>,
    /// What the run was given (`model::replay::RunInputs::to_stored`), kept
    /// with its record for replay; `None` for runs that never started.
    pub inputs: Option<String>,
}

impl RunFinish {
    /// The finish of run `run_id` of configuration `task_id` (no retry
    /// scheduled; the caller decides that).
    pub fn of(
        run_id: &str,
        task_id: i64,
        finished_at: DateTime<Utc>,
        outcome: RunOutcome,
        task_state: Option<BTreeMap<String, String>>,
    ) -> RunFinish {
        RunFinish {
            run_id: run_id.to_owned(),
            task_id,
            finished_at,
            outcome,
            task_state,
            retry: None,
            started_at: None,
            follow_ups: Vec::new(),
            inputs: None,
        }
    }
}

/// How one instance's run of a broadcast ended.
#[derive(Debug, Clone)]
pub struct DeliveryFinish {
    pub broadcast_id: String,
    pub instance: String,
    pub finished_at: DateTime<Utc>,
    pub outcome: RunOutcome,
}

/// A web-farm broadcast to record: every instance in `instances` runs the
/// component implementing `identifier` once with the payload.
#[derive(Debug, Clone)]
pub struct NewBroadcast {
    pub id: String,
    pub identifier: String,
    pub payload: BroadcastPayload,
    pub created_at: DateTime<Utc>,
    /// Who asked: `cli`, `api on <instance>`, `run <id> of '<task>' on <instance>`.
    pub created_by: String,
    /// The instances it is delivered to (the live ones when it was made).
    pub instances: Vec<String>,
    /// The run that made it: its limits and roles (stored as JSON).
    pub sender: Option<BroadcastSender>,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub task_id: Option<i64>,
    pub run_id: Option<String>,
    pub min_level: Option<Level>,
    /// Only events with a larger id (for following).
    pub after_id: Option<i64>,
    /// The newest this many (oldest first in the result).
    pub limit: Option<u32>,
    /// With `limit`: the oldest this many instead, for reading forward
    /// from `after_id` page by page.
    pub oldest: bool,
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub kind: Option<crate::model::audit::AuditKind>,
    /// Only entries about this configuration, setting or token.
    pub subject: Option<String>,
    /// Only entries older than this one (paging back).
    pub before_id: Option<i64>,
    /// The newest this many.
    pub limit: Option<u32>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub task_id: Option<i64>,
    pub state: Option<RunState>,
    /// Only runs whose time (started, else queued, else scheduled) is at
    /// or after this.
    pub since: Option<DateTime<Utc>>,
    /// ... and before this.
    pub until: Option<DateTime<Utc>>,
    /// The newest this many (newest first).
    pub limit: Option<u32>,
}

//! The records the store keeps, independent of any backend.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::runtime::{BroadcastPayload, EventSource, Grants, Level, RunLimits, Trigger};
use crate::scheduler::schedule::Schedule;

/// What to do with slots that passed while no instance was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MisfirePolicy {
    /// Record the missed slots as skipped and go on with the next future one.
    #[default]
    Skip,
    /// Run once now for all missed slots, then go on.
    Once,
    /// Run every missed slot within the catch-up window, one after another.
    All,
}

impl std::str::FromStr for MisfirePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(MisfirePolicy::Skip),
            "once" => Ok(MisfirePolicy::Once),
            "all" => Ok(MisfirePolicy::All),
            other => Err(format!(
                "unknown misfire policy '{other}': use skip, once or all"
            )),
        }
    }
}

/// A task configuration as the operator sets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskConfig {
    pub name: String,
    /// The identifier of the component that implements it.
    pub implementation: String,
    pub enabled: bool,
    pub schedule: Schedule,
    #[serde(default)]
    pub misfire: MisfirePolicy,
    /// How far back `misfire = all` catches up.
    #[serde(with = "humantime_string", default = "default_catch_up")]
    pub catch_up_window: Duration,
    /// Retries after a failed or stopped run (0 = none).
    #[serde(default)]
    pub retries: u32,
    /// Delay before the first retry; doubles for each further one.
    #[serde(with = "humantime_string", default = "default_backoff")]
    pub retry_backoff: Duration,
    #[serde(default)]
    pub limits: RunLimits,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub grants: Grants,
    /// Roles an instance needs (all of them) to run this configuration, e.g.
    /// `edit` for "only on the edit server"; empty: any instance.
    #[serde(default)]
    pub roles: Vec<String>,
}

fn default_catch_up() -> Duration {
    Duration::from_secs(3600)
}

fn default_backoff() -> Duration {
    Duration::from_secs(10)
}

impl TaskConfig {
    /// A configuration with the defaults for everything but the essentials.
    pub fn new(name: &str, implementation: &str, schedule: Schedule) -> Self {
        TaskConfig {
            name: name.to_owned(),
            implementation: implementation.to_owned(),
            enabled: true,
            schedule,
            misfire: MisfirePolicy::Skip,
            catch_up_window: default_catch_up(),
            retries: 0,
            retry_backoff: default_backoff(),
            limits: RunLimits::default(),
            properties: BTreeMap::new(),
            grants: Grants::default(),
            roles: Vec::new(),
        }
    }
}

impl TaskConfig {
    /// The configuration's required roles that an instance with `roles` lacks.
    pub fn missing_roles<'a>(&'a self, roles: &[String]) -> Vec<&'a str> {
        self.roles
            .iter()
            .filter(|r| !roles.contains(r))
            .map(String::as_str)
            .collect()
    }
}

/// A configuration with its scheduling state and counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    pub id: i64,
    #[serde(flatten)]
    pub config: TaskConfig,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<RunState>,
    pub last_message: Option<String>,
    pub run_count: u64,
    pub skipped_count: u64,
    pub failed_count: u64,
    pub running_run_id: Option<String>,
    pub retry_at: Option<DateTime<Utc>>,
    pub retry_attempt: u32,
}

/// Where a run is in its life, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Requested (manual run) and waiting for an instance.
    Queued,
    Running,
    Succeeded,
    Failed,
    /// A limit or trap stopped it.
    Stopped,
    Cancelled,
    /// Not started: the previous run was still going, or the slot was missed.
    Skipped,
    /// Its instance died mid-run; found by lease expiry.
    Abandoned,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Stopped => "stopped",
            RunState::Cancelled => "cancelled",
            RunState::Skipped => "skipped",
            RunState::Abandoned => "abandoned",
        }
    }

    /// Counts as failed in the overview (and may be retried).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            RunState::Failed | RunState::Stopped | RunState::Abandoned
        )
    }
}

impl std::str::FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "stopped" => RunState::Stopped,
            "cancelled" => RunState::Cancelled,
            "skipped" => RunState::Skipped,
            "abandoned" => RunState::Abandoned,
            other => return Err(format!("unknown run state '{other}'")),
        })
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of a configuration, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub task_id: i64,
    pub task_name: String,
    pub implementation: String,
    pub trigger: Trigger,
    pub attempt: u32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub state: RunState,
    /// For stopped runs: which limit (fuel, time, memory, stack, panic, trap).
    pub reason: Option<String>,
    pub message: String,
    pub duration_us: Option<u64>,
    pub fuel: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
    pub component_sha256: Option<String>,
    pub component_version: Option<String>,
    pub instance: Option<String>,
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
}

/// What a slot claim does when the configuration is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOverlap {
    /// Record the slot as skipped and move the schedule on (the rule).
    Skip,
    /// Leave the slot due, to run once the running run ends (catch-up).
    Wait,
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
    pub state: RunState,
    pub reason: Option<String>,
    pub message: String,
    pub duration_us: u64,
    pub fuel: u64,
    pub peak_memory_bytes: u64,
    pub component_sha256: Option<String>,
    pub component_version: Option<String>,
    pub events: Vec<NewEvent>,
    /// The task's state after the run; `None` leaves the stored state as is.
    pub task_state: Option<BTreeMap<String, String>>,
    /// When to retry (failed runs with retries left), and which attempt that is.
    pub retry: Option<(DateTime<Utc>, u32)>,
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at: DateTime<Utc>,
    pub level: Level,
    pub source: EventSource,
    pub code: String,
    pub message: String,
    pub task_id: Option<i64>,
    pub run_id: Option<String>,
}

impl NewEvent {
    /// An event from the host itself (plugins, scheduler), not from a run.
    pub fn host(level: Level, code: &str, message: impl Into<String>) -> Self {
        NewEvent {
            at: Utc::now(),
            level,
            source: EventSource::Host,
            code: code.to_owned(),
            message: message.into(),
            task_id: None,
            run_id: None,
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub level: Level,
    pub source: EventSource,
    pub code: String,
    pub message: String,
    pub task_id: Option<i64>,
    pub task_name: Option<String>,
    pub run_id: Option<String>,
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

/// One plugin file as an instance sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginRow {
    pub instance: String,
    pub file: String,
    pub sha256: String,
    pub identifier: Option<String>,
    pub version: Option<String>,
    pub loaded_at: DateTime<Utc>,
    /// ok, failed or conflict.
    pub status: String,
    pub error: Option<String>,
}

/// A cronwerk instance and its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceRow {
    pub name: String,
    pub pid: u32,
    pub version: String,
    pub roles: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

/// Largest parts of a broadcast's payload: a broadcast is a message to
/// every instance, not a file transfer.
pub const BROADCAST_MAX_TARGET_BYTES: usize = 1024;
pub const BROADCAST_MAX_TEXT_BYTES: usize = 64 * 1024;
pub const BROADCAST_MAX_DATA_BYTES: usize = 1024 * 1024;

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
}

/// A broadcast as stored, with how far it got on each instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BroadcastRecord {
    pub id: String,
    pub identifier: String,
    pub target: String,
    pub text: String,
    pub data_bytes: u64,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub deliveries: Vec<DeliveryRecord>,
}

/// One instance's run of a broadcast. `state` is `queued` until the
/// instance starts it, and `abandoned` when the instance stopped or died
/// first (a delivery is never replayed by a later process).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    pub instance: String,
    pub state: RunState,
    /// Tags the run's events.
    pub run_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub message: String,
    pub duration_us: Option<u64>,
    pub fuel: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
    pub component_sha256: Option<String>,
    pub component_version: Option<String>,
}

/// A delivery waiting for its instance, with what the run needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDelivery {
    pub broadcast_id: String,
    pub identifier: String,
    pub payload: BroadcastPayload,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// How a run ended, as the store records it for a configuration's run
/// and for a broadcast delivery alike.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub state: RunState,
    /// For stopped runs: which limit.
    pub reason: Option<String>,
    pub message: String,
    pub duration_us: u64,
    pub fuel: u64,
    pub peak_memory_bytes: u64,
    pub component_sha256: Option<String>,
    pub component_version: Option<String>,
    pub events: Vec<NewEvent>,
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
            state: outcome.state,
            reason: outcome.reason,
            message: outcome.message,
            duration_us: outcome.duration_us,
            fuel: outcome.fuel,
            peak_memory_bytes: outcome.peak_memory_bytes,
            component_sha256: outcome.component_sha256,
            component_version: outcome.component_version,
            events: outcome.events,
            task_state,
            retry: None,
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

/// Durations as humantime strings ("10s") in stored JSON.
pub(crate) mod humantime_string {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

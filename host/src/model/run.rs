//! Runs: why one happens, where it is in its life, how it ended, and the
//! record the store keeps of it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr, VariantNames};

use super::event::NewEvent;

/// Why a run happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "lowercase")]
pub enum Trigger {
    Schedule,
    #[default]
    Manual,
    Broadcast,
    Retry,
    /// Another configuration's run ended and names this one to run next
    /// (`on_failure`, `on_success`); its payload is the ended run. Contract
    /// 0.1.0 has no such trigger: the task is told `manual`.
    #[serde(rename = "follow-up")]
    #[strum(serialize = "follow-up")]
    FollowUp,
    /// The instance started, and the configuration runs once on every
    /// instance's start (`--on-start`). Contract 0.1.0 has no such
    /// trigger: the task is told `manual`.
    Startup,
    /// A past slot run on an operator's request (`task backfill`).
    /// Contract 0.1.0 has no such trigger: the task is told `schedule`,
    /// with the slot as `scheduled-for`.
    Backfill,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where a run is in its life, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "lowercase")]
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
        self.into()
    }

    /// Counts as failed in the overview (and may be retried).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            RunState::Failed | RunState::Stopped | RunState::Abandoned
        )
    }
}

/// Which limit or fault stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "kebab-case")]
pub enum StopReason {
    /// The fuel budget ran out.
    Fuel,
    /// The wall-time limit passed.
    Time,
    /// The memory limit would have been exceeded.
    Memory,
    /// The wasm call stack overflowed.
    Stack,
    /// The run held more host resources (handles, `wasi:http` header bytes)
    /// than the sandbox allows.
    Resources,
    /// The guest panicked or reached `unreachable`.
    Panic,
    /// Any other trap (out-of-bounds access, bad cast, ...) or a host-side
    /// failure to set the run up.
    Trap,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        self.into()
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
    /// For stopped runs: which limit or fault.
    pub reason: Option<StopReason>,
    pub message: String,
    pub duration_us: Option<u64>,
    pub fuel: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
    pub component_sha256: Option<String>,
    pub component_version: Option<String>,
    pub instance: Option<String>,
    /// What a follow-up run is told about the run that ended (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// How a run ended, as the store records it for a configuration's run
/// and for a broadcast delivery alike.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub state: RunState,
    /// For stopped runs: which limit or fault.
    pub reason: Option<StopReason>,
    pub message: String,
    pub duration_us: u64,
    pub fuel: u64,
    pub peak_memory_bytes: u64,
    pub component_sha256: Option<String>,
    pub component_version: Option<String>,
    pub events: Vec<NewEvent>,
}

impl RunOutcome {
    /// The outcome of a run that never reached a component (nothing to
    /// run it with, or not to be run here), with the one event saying why.
    pub fn not_run(state: RunState, event: NewEvent) -> RunOutcome {
        RunOutcome {
            state,
            reason: None,
            message: event.message.clone(),
            events: vec![event],
            duration_us: 0,
            fuel: 0,
            peak_memory_bytes: 0,
            component_sha256: None,
            component_version: None,
        }
    }
}

//! Broadcasts (web farm): a message that every live instance runs once,
//! and how far it got on each.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::limits::RunLimits;
use super::run::RunState;

/// Data sent with a broadcast.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastPayload {
    pub target: String,
    pub text: String,
    pub data: Vec<u8>,
}

/// Largest parts of a broadcast's payload: a broadcast is a message to
/// every instance, not a file transfer.
pub const BROADCAST_MAX_TARGET_BYTES: usize = 1024;
pub const BROADCAST_MAX_TEXT_BYTES: usize = 64 * 1024;
pub const BROADCAST_MAX_DATA_BYTES: usize = 1024 * 1024;

/// Most broadcasts one run may make: each is stored and run on every live
/// instance, so a run that could broadcast without end could fill the store
/// and keep the whole farm busy.
pub const BROADCASTS_PER_RUN: u32 = 10;
/// Most payload bytes (target, text and data together) one run's
/// broadcasts may carry, all of them counted.
pub const BROADCAST_BYTES_PER_RUN: u64 = 4 * 1024 * 1024;

/// What a broadcast made by a run carries of its sender: the delivery runs
/// with at most the sender's limits, and only on instances with the
/// sender's roles. Broadcasts made by an operator (CLI, API) have none and
/// run with the default limits on every live instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastSender {
    pub limits: RunLimits,
    pub roles: Vec<String>,
}

impl BroadcastSender {
    /// The sender's roles that an instance with `roles` lacks.
    pub fn missing_roles<'a>(&'a self, roles: &[String]) -> Vec<&'a str> {
        super::task::missing_roles(&self.roles, roles)
    }
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
    /// A stopped run's limit (as [`super::StopReason`] names it), or why the
    /// delivery was abandoned: free text, since it names an instance.
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
    /// Set when a run made the broadcast.
    pub sender: Option<BroadcastSender>,
}

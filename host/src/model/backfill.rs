//! Backfills: a configuration's slots in a past window, run on request
//! (`cronwerk task backfill`). The store keeps one row per backfill with a
//! cursor (the next slot to queue); instances queue its slots a few at a
//! time, as its concurrency allows, so a window of ten thousand slots is
//! never ten thousand queued rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use strum::{Display, EnumString, IntoStaticStr, VariantNames};

/// Where a backfill is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "lowercase")]
pub enum BackfillState {
    /// Slots are still being queued or run.
    Active,
    /// Every slot was run (or had run already).
    Done,
    /// An operator cancelled it: slots not started were not run.
    Cancelled,
}

impl BackfillState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A backfill to create.
#[derive(Debug, Clone)]
pub struct NewBackfill {
    pub id: String,
    pub task_id: i64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The window's first slot.
    pub first_slot: DateTime<Utc>,
    /// How many slots the window holds (for progress).
    pub total: u32,
    /// Most of its runs queued or running at once.
    pub concurrency: u32,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
}

/// How many of a backfill's runs are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackfillCounts {
    pub queued: u32,
    pub running: u32,
    pub succeeded: u32,
    /// Failed, stopped or abandoned.
    pub failed: u32,
    pub cancelled: u32,
}

/// A backfill as recorded, with its progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackfillRecord {
    pub id: String,
    pub task_id: i64,
    pub task_name: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub concurrency: u32,
    pub state: BackfillState,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    /// Slots in the window when it was asked for.
    pub total: u32,
    /// Slots not run because they had run already (succeeded, or under way).
    pub already_ran: u32,
    /// The next slot to queue; `None` once all are queued.
    pub next_slot: Option<DateTime<Utc>>,
    pub runs: BackfillCounts,
}

impl BackfillRecord {
    /// Slots dealt with: run to an end, or found to have run already.
    pub fn done(&self) -> u32 {
        let r = &self.runs;
        self.already_ran + r.succeeded + r.failed + r.cancelled
    }
}

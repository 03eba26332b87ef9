//! The ground floor: the types every layer shares — the clock, schedules,
//! configurations, runs and their outcomes, events, limits, grants,
//! instances and broadcasts. Plain data and pure rules; nothing here
//! touches wasmtime, a database, the network or a flag. `runtime`,
//! `plugins`, `store`, `scheduler`, `api` and `cli` all build on it, and it
//! imports none of them.
//!
//! Each enum has one string mapping, derived (serde for JSON, strum for the
//! database and for names typed by a person), used by every layer.

pub mod audit;
pub mod backfill;
mod broadcast;
mod clock;
mod event;
pub mod follow_up;
mod grants;
pub mod humantime_serde;
mod identifier;
mod instance;
mod limits;
pub mod names;
pub mod replay;
mod run;
pub mod schedule;
mod task;
pub mod text;
pub mod timing;

pub use broadcast::{
    BROADCAST_BYTES_PER_RUN, BROADCAST_MAX_DATA_BYTES, BROADCAST_MAX_TARGET_BYTES,
    BROADCAST_MAX_TEXT_BYTES, BROADCASTS_PER_RUN, BroadcastPayload, BroadcastRecord,
    BroadcastSender, DeliveryRecord, PendingDelivery,
};
pub use clock::{Clock, SystemClock};
pub use event::{EventRecord, EventSource, Level, NewEvent};
pub use grants::{DirGrant, Grants, HttpGrant};
pub use identifier::validate_identifier;
pub use instance::{Heartbeat, InstanceInfo, InstanceRow, PluginRow, PluginState};
pub use limits::RunLimits;
pub use run::{RunOutcome, RunRecord, RunState, StopReason, Trigger};
pub use schedule::Schedule;
pub use task::{
    DEFAULT_MAX_CONCURRENT, MisfirePolicy, OverlapPolicy, Pause, TaskConfig, TaskRecord,
    missing_roles,
};

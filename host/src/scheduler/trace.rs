//! What the dispatcher knows about a run once it is recorded, in the shape
//! a tracer wants: each phase's start and end by the wall clock (claim,
//! instantiate, execute, record), the outcome and what the run cost.
//!
//! The phases of one run cross tasks and shared transactions (a claim and
//! a record commit many runs at once), so the spans are built afterwards
//! from measured times rather than held open while the run goes on. The
//! dispatcher builds a [`RunTrace`] only when it has a [`RunTracer`]: with
//! traces off, a run costs one branch more.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use crate::model::{RunOutcome, Trigger};
use crate::runtime::Timeline;

/// Receives every run this instance recorded. Called from the dispatcher's
/// record path: it must hand the trace on and return at once.
pub trait RunTracer: Send + Sync {
    fn recorded(&self, trace: RunTrace);
}

/// A tracer, or none; what [`DispatcherConfig`](super::DispatcherConfig) holds.
#[derive(Clone, Default)]
pub struct Tracing(pub Option<Arc<dyn RunTracer>>);

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "on" } else { "off" })
    }
}

/// A stretch of wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    pub start: SystemTime,
    pub end: SystemTime,
}

impl Phase {
    /// The phase that began at `start` and ends now.
    pub fn since(start: SystemTime) -> Phase {
        Phase {
            start,
            end: SystemTime::now(),
        }
    }
}

/// One recorded run.
#[derive(Debug, Clone)]
pub struct RunTrace {
    pub run_id: String,
    pub configuration: String,
    pub identifier: String,
    pub trigger: Trigger,
    pub attempt: u32,
    pub instance: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// How long after its slot the component started (scheduled runs).
    pub lateness: Option<Duration>,
    /// The transaction that claimed the run (shared with the runs claimed
    /// with it).
    pub claim: Phase,
    /// Sandbox, instance and `execute`; all `None` for a run that never
    /// reached a component.
    pub timeline: Timeline,
    /// From handing the run's end to the recorder to its commit.
    pub record: Phase,
    pub recorded: Recorded,
    pub outcome: RunOutcome,
}

/// What became of a run's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Committed,
    /// The store is unavailable: the record waits for it to come back.
    Held,
    /// The store refused the batch (its runs are then recorded one by one).
    Failed(String),
}

impl RunTrace {
    /// Where the run's span begins: its claim, or (a slot claimed ahead,
    /// or a retry) whichever came first.
    pub fn start(&self) -> SystemTime {
        [Some(self.claim.start), self.timeline.started]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.record.start)
    }
}

//! The typed result of one run and how a wasmtime error maps onto it.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use wasmtime::component::ResourceTableError;
use wasmtime_wasi_http::FieldMapError;

use super::events::Event;
use super::limits::OpenFileLimitExceeded;
use super::limits::{MAX_HTTP_FIELDS_BYTES, MAX_RESOURCE_HANDLES, MemoryLimitExceeded};
use crate::model::StopReason;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// `execute` returned `ok`; the message may be empty.
    Succeeded { message: String },
    /// `execute` returned `err` with this message.
    Failed { message: String },
    /// A limit or trap stopped the run.
    Stopped { reason: StopReason, message: String },
    /// The run was asked to stop and either returned `err` or was stopped
    /// after the grace period.
    Cancelled { message: String },
}

impl Outcome {
    /// Short name: succeeded, failed, stopped, cancelled.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Stopped { .. } => "stopped",
            Outcome::Cancelled { .. } => "cancelled",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::Succeeded { message }
            | Outcome::Failed { message }
            | Outcome::Stopped { message, .. }
            | Outcome::Cancelled { message } => message,
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. })
    }
}

/// Everything recorded about one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub run_id: String,
    pub identifier: String,
    /// Content hash of the component that ran, hex.
    pub component_sha256: String,
    #[serde(with = "duration_micros", rename = "duration_us")]
    pub duration: Duration,
    /// Fuel burnt by the run.
    pub fuel_consumed: u64,
    /// Highest linear memory held at once, in bytes.
    pub peak_memory_bytes: u64,
    pub events: Vec<Event>,
    /// The task's state as the run left it (to be stored for the next run).
    pub state: std::collections::BTreeMap<String, String>,
    /// When the run's phases began and ended, by the wall clock, for traces.
    #[serde(skip)]
    pub timeline: Timeline,
}

/// When a run's sandbox was set up, its instance ready, and its `execute`
/// over. All `None` for a run that never reached the runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeline {
    /// The sandbox began to be set up.
    pub started: Option<SystemTime>,
    /// The component was instantiated; `None` if it never was (the sandbox
    /// or the instantiation failed).
    pub instantiated: Option<SystemTime>,
    /// `execute` returned, trapped or was stopped.
    pub ended: Option<SystemTime>,
}

impl Timeline {
    /// A run that began at `started` and ends now.
    pub fn ended_at(started: SystemTime, instantiated: Option<SystemTime>) -> Timeline {
        Timeline {
            started: Some(started),
            instantiated,
            ended: Some(SystemTime::now()),
        }
    }
}

mod duration_micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

/// The wall-time limit passed while the guest was running.
#[derive(Debug, thiserror::Error)]
#[error("time limit of {0:?} exceeded")]
pub struct TimeLimitExceeded(pub Duration);

/// The run was asked to stop and did not return within the grace period.
#[derive(Debug, thiserror::Error)]
#[error("cancelled: the task did not stop within the grace period of {0:?}")]
pub struct StoppedAfterGrace(pub Duration);

/// Maps an error out of instantiation or the call onto an outcome.
pub fn classify(error: &wasmtime::Error) -> Outcome {
    if let Some(e) = error.downcast_ref::<StoppedAfterGrace>() {
        return Outcome::Cancelled {
            message: e.to_string(),
        };
    }
    let (reason, message) = if let Some(e) = error.downcast_ref::<MemoryLimitExceeded>() {
        (StopReason::Memory, e.to_string())
    } else if let Some(e) = error.downcast_ref::<TimeLimitExceeded>() {
        (StopReason::Time, e.to_string())
    } else if let Some(e) = error.downcast_ref::<OpenFileLimitExceeded>() {
        (StopReason::Resources, e.to_string())
    } else if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        (
            StopReason::Resources,
            format!(
                "resource limit: the task held more than {MAX_RESOURCE_HANDLES} host handles \
                 (streams, pollables, HTTP fields, requests, bodies) at once"
            ),
        )
    } else if let Some(e @ (FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields)) =
        error.downcast_ref::<FieldMapError>()
    {
        (
            StopReason::Resources,
            format!(
                "resource limit: one HTTP fields handle may hold {}: {e}",
                bytesize::ByteSize(MAX_HTTP_FIELDS_BYTES as u64)
            ),
        )
    } else if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        let reason = match trap {
            wasmtime::Trap::OutOfFuel => StopReason::Fuel,
            wasmtime::Trap::Interrupt => StopReason::Time,
            wasmtime::Trap::StackOverflow => StopReason::Stack,
            wasmtime::Trap::UnreachableCodeReached => StopReason::Panic,
            _ => StopReason::Trap,
        };
        let message = match reason {
            StopReason::Fuel => "fuel limit exhausted".to_string(),
            StopReason::Stack => "call stack exhausted (runaway recursion?)".to_string(),
            StopReason::Panic => "the task panicked (wasm `unreachable` reached)".to_string(),
            _ => format!("trap: {trap}"),
        };
        (reason, message)
    } else {
        (StopReason::Trap, format!("{error:#}"))
    };
    Outcome::Stopped { reason, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_traps_and_limit_errors() {
        let cases = [
            (
                wasmtime::Error::new(wasmtime::Trap::OutOfFuel),
                StopReason::Fuel,
            ),
            (
                wasmtime::Error::new(wasmtime::Trap::StackOverflow),
                StopReason::Stack,
            ),
            (
                wasmtime::Error::new(wasmtime::Trap::UnreachableCodeReached),
                StopReason::Panic,
            ),
            (
                wasmtime::Error::new(wasmtime::Trap::MemoryOutOfBounds),
                StopReason::Trap,
            ),
            (
                wasmtime::Error::new(TimeLimitExceeded(Duration::from_secs(1))),
                StopReason::Time,
            ),
            (
                wasmtime::Error::new(MemoryLimitExceeded {
                    limit: 1,
                    requested: 2,
                }),
                StopReason::Memory,
            ),
            (
                wasmtime::Error::new(ResourceTableError::Full).context("pushing fields"),
                StopReason::Resources,
            ),
            (
                wasmtime::Error::new(OpenFileLimitExceeded),
                StopReason::Resources,
            ),
            (
                wasmtime::Error::new(FieldMapError::TotalSizeTooBig),
                StopReason::Resources,
            ),
            (
                wasmtime::Error::new(ResourceTableError::NotPresent),
                StopReason::Trap,
            ),
        ];
        for (error, want) in cases {
            match classify(&error) {
                Outcome::Stopped { reason, .. } => assert_eq!(reason, want, "{error}"),
                other => panic!("{error}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_context_wrapped_trap_is_still_recognised() {
        let error =
            wasmtime::Error::new(wasmtime::Trap::OutOfFuel).context("while calling execute");
        assert!(matches!(
            classify(&error),
            Outcome::Stopped {
                reason: StopReason::Fuel,
                ..
            }
        ));
    }

    #[test]
    fn grace_expiry_is_cancelled() {
        let error = wasmtime::Error::new(StoppedAfterGrace(Duration::from_secs(5)));
        assert_eq!(classify(&error).kind(), "cancelled");
    }

    #[test]
    fn report_json_is_flat() {
        let report = RunReport {
            outcome: Outcome::Failed {
                message: "no".into(),
            },
            run_id: "r".into(),
            identifier: "A.B".into(),
            component_sha256: "00".into(),
            duration: Duration::from_micros(42),
            fuel_consumed: 7,
            peak_memory_bytes: 65536,
            events: vec![],
            state: Default::default(),
            timeline: Default::default(),
        };
        let v: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(v["outcome"], "failed");
        assert_eq!(v["message"], "no");
        assert_eq!(v["duration_us"], 42);
    }
}

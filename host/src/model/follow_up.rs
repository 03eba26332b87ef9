//! Follow-up runs: when a run of a configuration ends, the configurations
//! it names (`on_failure`, `on_success`) run once, told about the run that
//! ended. What they are told is this module's: the one description both
//! the dispatcher (a run it finished) and the store (a run it found
//! abandoned) hand on.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::broadcast::BroadcastPayload;
use super::run::{RunState, Trigger};
use super::task::TaskConfig;

/// The payload target that marks a follow-up run's payload.
pub const FOLLOW_UP_TARGET: &str = "follow-up";

/// The run that ended, as its follow-ups see it (the payload's text, JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndedRun {
    pub configuration: String,
    pub identifier: String,
    pub run_id: String,
    pub outcome: RunState,
    pub message: String,
    pub trigger: Trigger,
    pub attempt: u32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub instance: Option<String>,
}

/// A follow-up to queue: which configuration, and what it is told.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUp {
    pub configuration: String,
    /// The ended run, as JSON text.
    pub payload: String,
    /// The queued run's message, for listings: "follow-up of …".
    pub message: String,
}

impl EndedRun {
    /// The follow-ups a run of `config` that ended so calls for: those of
    /// `on_failure` after a failure (failed, stopped, abandoned) with no
    /// retry to come, those of `on_success` after a success; none after a
    /// cancelled or skipped run.
    pub fn follow_ups(&self, config: &TaskConfig, retry_pending: bool) -> Vec<FollowUp> {
        let names = match self.outcome {
            s if s.is_failure() && !retry_pending => &config.on_failure,
            RunState::Succeeded => &config.on_success,
            _ => return Vec::new(),
        };
        if names.is_empty() {
            return Vec::new();
        }
        // The message is bounded where it is made (the runtime keeps a
        // result message to a few kilobytes), so the payload is small.
        let payload = serde_json::to_string(self).unwrap_or_default();
        let message = format!(
            "follow-up of '{}' run {} ({})",
            self.configuration, self.run_id, self.outcome
        );
        names
            .iter()
            .map(|name| FollowUp {
                configuration: name.clone(),
                payload: payload.clone(),
                message: message.clone(),
            })
            .collect()
    }
}

/// What a follow-up run's task receives as its payload.
pub fn payload_of(text: &str) -> BroadcastPayload {
    BroadcastPayload {
        target: FOLLOW_UP_TARGET.to_owned(),
        text: text.to_owned(),
        data: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Schedule;

    fn ended(outcome: RunState) -> EndedRun {
        EndedRun {
            configuration: "Nightly".into(),
            identifier: "Acme.Cleanup".into(),
            run_id: "r1".into(),
            outcome,
            message: "disk full".into(),
            trigger: Trigger::Schedule,
            attempt: 1,
            scheduled_for: None,
            started_at: None,
            finished_at: "2026-12-03T02:30:01Z".parse().unwrap(),
            instance: Some("web-1".into()),
        }
    }

    #[test]
    fn failures_call_on_failure_once_no_retry_is_left_and_successes_on_success() {
        let mut config = TaskConfig::new(
            "Nightly",
            "Acme.Cleanup",
            Schedule::cron("0 30 2 * * *", "UTC").unwrap(),
        );
        config.on_failure = vec!["Page me".into(), "Ticket".into()];
        config.on_success = vec!["Report".into()];
        let names = |v: Vec<FollowUp>| v.into_iter().map(|f| f.configuration).collect::<Vec<_>>();
        for outcome in [RunState::Failed, RunState::Stopped, RunState::Abandoned] {
            assert_eq!(
                names(ended(outcome).follow_ups(&config, false)),
                ["Page me", "Ticket"]
            );
            assert!(ended(outcome).follow_ups(&config, true).is_empty());
        }
        assert_eq!(
            names(ended(RunState::Succeeded).follow_ups(&config, false)),
            ["Report"]
        );
        assert!(
            ended(RunState::Cancelled)
                .follow_ups(&config, false)
                .is_empty()
        );
        let f = &ended(RunState::Failed).follow_ups(&config, false)[0];
        let told: serde_json::Value = serde_json::from_str(&f.payload).unwrap();
        assert_eq!(told["configuration"], "Nightly");
        assert_eq!(told["outcome"], "failed");
        assert_eq!(told["message"], "disk full");
        assert_eq!(told["trigger"], "schedule");
        assert_eq!(f.message, "follow-up of 'Nightly' run r1 (failed)");
    }
}

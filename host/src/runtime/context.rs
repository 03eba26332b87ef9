//! The host's view of a run's context, and its conversion to each contract
//! version's WIT record handed to the guest.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::bindings::{v0_1, v0_2};
use crate::model::Trigger;

/// What the task is told about the run.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    pub configuration_name: String,
    pub run_id: String,
    pub trigger: Trigger,
    /// 1 for a first run, 2 for its first retry, ... (0 is taken as 1).
    pub attempt: u32,
    pub scheduled_for: Option<SystemTime>,
    pub last_run: Option<SystemTime>,
    pub next_run: Option<SystemTime>,
    pub run_count: u64,
    pub properties: BTreeMap<String, String>,
}

/// The fields every contract version's run context has, filled from `$c`;
/// `$extra` adds the version's own (trigger first).
macro_rules! wit_context {
    ($v:ident, $c:expr, $identifier:expr, $instance:expr, { $($extra:tt)* }) => {{
        use $v::cronwerk::task::types::{Datetime, RunContext as Wit};
        let at = |t: SystemTime| {
            let (seconds, nanoseconds) = to_datetime(t);
            Datetime { seconds, nanoseconds }
        };
        let c: &RunContext = $c;
        Wit {
            $($extra)*
            configuration_name: c.configuration_name.clone(),
            identifier: $identifier.to_owned(),
            run_id: c.run_id.clone(),
            scheduled_for: c.scheduled_for.map(at),
            last_run: c.last_run.map(at),
            next_run: c.next_run.map(at),
            run_count: c.run_count,
            instance_name: $instance.to_owned(),
            properties: c
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }};
}

impl RunContext {
    /// The context as contract 0.1.0 has it: the triggers it lacks are told
    /// as the nearest one it has.
    pub(crate) fn to_v0_1(
        &self,
        identifier: &str,
        instance_name: &str,
    ) -> v0_1::cronwerk::task::types::RunContext {
        use v0_1::cronwerk::task::types::Trigger as WitTrigger;
        wit_context!(v0_1, self, identifier, instance_name, {
            trigger: match self.trigger {
                Trigger::Schedule => WitTrigger::Schedule,
                Trigger::Manual => WitTrigger::Manual,
                Trigger::Broadcast => WitTrigger::Broadcast,
                Trigger::Retry => WitTrigger::Retry,
                // A follow-up's payload says it is one.
                Trigger::FollowUp | Trigger::Startup => WitTrigger::Manual,
                // A backfill run is the run of a slot, told which.
                Trigger::Backfill => WitTrigger::Schedule,
            },
        })
    }

    /// The context as contract 0.2.0 has it.
    pub(crate) fn to_v0_2(
        &self,
        identifier: &str,
        instance_name: &str,
        deadline: Option<SystemTime>,
    ) -> v0_2::cronwerk::task::types::RunContext {
        use v0_2::cronwerk::task::types::{Datetime, Trigger as WitTrigger};
        let deadline = deadline.map(|t| {
            let (seconds, nanoseconds) = to_datetime(t);
            Datetime {
                seconds,
                nanoseconds,
            }
        });
        wit_context!(v0_2, self, identifier, instance_name, {
            trigger: match self.trigger {
                Trigger::Schedule => WitTrigger::Schedule,
                Trigger::Manual => WitTrigger::Manual,
                Trigger::Broadcast => WitTrigger::Broadcast,
                Trigger::Retry => WitTrigger::Retry,
                Trigger::FollowUp => WitTrigger::FollowUp,
                Trigger::Backfill => WitTrigger::Backfill,
                Trigger::Startup => WitTrigger::Startup,
            },
            attempt: self.attempt.max(1),
            deadline,
        })
    }
}

/// Converts to the WIT datetime's (seconds, nanoseconds); times before
/// 1970 count backwards.
pub fn to_datetime(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let before = e.duration();
            let mut seconds = -(before.as_secs() as i64);
            let mut nanoseconds = 0;
            if before.subsec_nanos() > 0 {
                seconds -= 1;
                nanoseconds = 1_000_000_000 - before.subsec_nanos();
            }
            (seconds, nanoseconds)
        }
    }
}

/// Converts back from the WIT datetime.
#[cfg(test)]
fn from_datetime((seconds, nanoseconds): (i64, u32)) -> SystemTime {
    use std::time::Duration;
    let nanos = Duration::from_nanos(u64::from(nanoseconds));
    if seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(seconds as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()) + nanos
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn datetimes_round_trip_on_both_sides_of_the_epoch() {
        for t in [
            UNIX_EPOCH + Duration::new(1_700_000_000, 123),
            UNIX_EPOCH - Duration::new(5, 250_000_000),
            UNIX_EPOCH,
        ] {
            assert_eq!(from_datetime(to_datetime(t)), t);
        }
        let d = to_datetime(UNIX_EPOCH - Duration::new(5, 250_000_000));
        assert_eq!(d, (-6, 750_000_000));
    }
}

//! The host's view of a run's context and payload, and their conversion to
//! the WIT types handed to the guest.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::bindings::{Datetime, Payload, Trigger as WitTrigger, WitRunContext};
use crate::model::{BroadcastPayload, Trigger};

/// What the task is told about the run.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    pub configuration_name: String,
    pub run_id: String,
    pub trigger: Trigger,
    pub scheduled_for: Option<SystemTime>,
    pub last_run: Option<SystemTime>,
    pub next_run: Option<SystemTime>,
    pub run_count: u64,
    pub properties: BTreeMap<String, String>,
}

impl RunContext {
    pub(crate) fn to_wit(&self, identifier: &str, instance_name: &str) -> WitRunContext {
        WitRunContext {
            configuration_name: self.configuration_name.clone(),
            identifier: identifier.to_owned(),
            run_id: self.run_id.clone(),
            trigger: match self.trigger {
                Trigger::Schedule => WitTrigger::Schedule,
                Trigger::Manual => WitTrigger::Manual,
                Trigger::Broadcast => WitTrigger::Broadcast,
                Trigger::Retry => WitTrigger::Retry,
                // Contract 0.1.0 has no follow-up trigger; its payload says it is one.
                Trigger::FollowUp | Trigger::Startup => WitTrigger::Manual,
                // Nor a backfill one: it is the run of a slot, told which.
                Trigger::Backfill => WitTrigger::Schedule,
            },
            scheduled_for: self.scheduled_for.map(to_datetime),
            last_run: self.last_run.map(to_datetime),
            next_run: self.next_run.map(to_datetime),
            run_count: self.run_count,
            instance_name: instance_name.to_owned(),
            properties: self
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

pub(crate) fn payload_to_wit(p: &BroadcastPayload) -> Payload {
    Payload {
        target: p.target.clone(),
        text: p.text.clone(),
        data: p.data.clone(),
    }
}

/// Converts to the WIT datetime; times before 1970 count backwards.
pub fn to_datetime(t: SystemTime) -> Datetime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Datetime {
            seconds: d.as_secs() as i64,
            nanoseconds: d.subsec_nanos(),
        },
        Err(e) => {
            let before = e.duration();
            let mut seconds = -(before.as_secs() as i64);
            let mut nanoseconds = 0;
            if before.subsec_nanos() > 0 {
                seconds -= 1;
                nanoseconds = 1_000_000_000 - before.subsec_nanos();
            }
            Datetime {
                seconds,
                nanoseconds,
            }
        }
    }
}

/// Converts back from the WIT datetime.
#[cfg(test)]
fn from_datetime(d: Datetime) -> SystemTime {
    use std::time::Duration;
    let nanos = Duration::from_nanos(u64::from(d.nanoseconds));
    if d.seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(d.seconds as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(d.seconds.unsigned_abs()) + nanos
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
        assert_eq!((d.seconds, d.nanoseconds), (-6, 750_000_000));
    }
}

//! What to do with a due slot, decided from the configuration and the
//! clock alone (no I/O), so overlap and misfire rules are unit-testable with
//! any instant.

use chrono::{DateTime, Utc};

use crate::model::{MisfirePolicy, TaskRecord};

/// How late a slot may be and still count as on time. A dispatcher that
/// woke late by less than this runs the slot normally; beyond it, the slot
/// was missed (no instance was running) and the misfire policy decides.
pub const MISFIRE_THRESHOLD: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// The decision for the configuration's next slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotAction {
    /// Start a run for `slot`; the next fire time becomes `next`.
    Run {
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        /// A missed slot being caught up (`misfire = all`): wait for a
        /// running run instead of skipping this slot.
        catch_up: bool,
    },
    /// Record `slot` as skipped with `reason`; the next fire time becomes `next`.
    Skip {
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        reason: String,
    },
}

/// Decides what happens to `task`'s due slot at `now`; `None` if it is not due.
pub fn plan_slot(task: &TaskRecord, now: DateTime<Utc>) -> Option<SlotAction> {
    let slot = task.next_run_at.filter(|s| *s <= now)?;
    let schedule = &task.config.fire_times();
    if now - slot <= MISFIRE_THRESHOLD {
        return Some(SlotAction::Run {
            slot,
            next: schedule.next_after_slot(slot),
            catch_up: false,
        });
    }
    let future = schedule.next_after(now);
    let missed = count_missed(task, slot, now);
    match task.config.misfire {
        MisfirePolicy::Skip => Some(SlotAction::Skip {
            slot,
            next: future,
            reason: format!(
                "missed {missed} slot(s) from {slot} while no instance was running \
                 (misfire policy: skip)"
            ),
        }),
        MisfirePolicy::Once => Some(SlotAction::Run {
            slot,
            next: future,
            catch_up: false,
        }),
        MisfirePolicy::All => {
            let window = chrono::TimeDelta::from_std(task.config.catch_up_window)
                .unwrap_or(chrono::TimeDelta::MAX);
            let oldest = now - window;
            if slot < oldest {
                // Jump to the first slot inside the window; record the rest.
                let first_inside = schedule.first_at_or_after(oldest).filter(|t| *t <= now);
                Some(SlotAction::Skip {
                    slot,
                    next: first_inside.or(future),
                    reason: format!(
                        "missed slots from {slot} are older than the catch-up window of {} \
                         (misfire policy: all)",
                        humantime::format_duration(task.config.catch_up_window)
                    ),
                })
            } else {
                Some(SlotAction::Run {
                    slot,
                    next: schedule.next_after_slot(slot),
                    catch_up: true,
                })
            }
        }
    }
}

/// Like [`plan_slot`], and also a slot due after `now` but by `horizon`,
/// which is claimed ahead and started at its instant. Only a
/// configuration with room for another run and no retry pending is
/// claimed ahead: whether a running run overlaps the slot, or a pending
/// retry comes first, is known only when the slot is due.
pub fn plan_ahead(
    task: &TaskRecord,
    now: DateTime<Utc>,
    horizon: DateTime<Utc>,
) -> Option<SlotAction> {
    match task.next_run_at {
        Some(slot)
            if slot > now && slot <= horizon && task.has_room() && task.retry_at.is_none() =>
        {
            Some(SlotAction::Run {
                slot,
                next: task.config.fire_times().next_after_slot(slot),
                catch_up: false,
            })
        }
        _ => plan_slot(task, now),
    }
}

/// Slots from `slot` up to `now`, capped so a tiny interval cannot spin.
fn count_missed(task: &TaskRecord, slot: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    const CAP: u64 = 100_000;
    let mut n = 1;
    let mut t = slot;
    let times = task.config.fire_times();
    while let Some(next) = times.next_after_slot(t) {
        if next > now || n >= CAP {
            break;
        }
        n += 1;
        t = next;
    }
    n
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::model::Schedule;
    use crate::model::TaskConfig;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, h, m, s).unwrap()
    }

    fn task(policy: MisfirePolicy, next: DateTime<Utc>) -> TaskRecord {
        let schedule = Schedule::every(Duration::from_secs(60), t(0, 0, 0)).unwrap();
        let mut config = TaskConfig::new("t", "A.B", schedule);
        config.misfire = policy;
        config.catch_up_window = Duration::from_secs(600);
        TaskRecord {
            id: 1,
            next_run_at: Some(next),
            ..TaskRecord::unsaved(config, t(0, 0, 0))
        }
    }

    #[test]
    fn a_slot_stored_in_milliseconds_is_not_run_twice() {
        // Anchored a few nanoseconds past a millisecond, as `Utc::now()` is.
        let anchor = t(0, 0, 0) + chrono::TimeDelta::nanoseconds(123_456);
        let mut task = task(MisfirePolicy::Skip, t(1, 0, 0));
        task.config.schedule = Schedule::every(Duration::from_secs(60), anchor).unwrap();
        match plan_slot(&task, t(1, 0, 0)) {
            Some(SlotAction::Run { next, .. }) => {
                assert_eq!(
                    next,
                    Some(t(1, 1, 0) + chrono::TimeDelta::nanoseconds(123_456))
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_idle_configuration_is_claimed_ahead_within_the_horizon_only() {
        let task = task(MisfirePolicy::Skip, t(1, 0, 0));
        let ahead = plan_ahead(&task, t(0, 59, 59), t(1, 0, 0));
        assert_eq!(
            ahead,
            Some(SlotAction::Run {
                slot: t(1, 0, 0),
                next: Some(t(1, 1, 0)),
                catch_up: false
            })
        );
        assert_eq!(plan_ahead(&task, t(0, 59, 58), t(0, 59, 59)), None);
        // Running, or a retry pending: wait until the slot is due.
        let mut running = task.clone();
        running.running_run_id = Some("r".into());
        running.running_count = 1;
        assert_eq!(plan_ahead(&running, t(0, 59, 59), t(1, 0, 0)), None);
        let mut retrying = task.clone();
        retrying.retry_at = Some(t(0, 59, 59));
        assert_eq!(plan_ahead(&retrying, t(0, 59, 59), t(1, 0, 0)), None);
        // Due already: as plan_slot.
        assert_eq!(
            plan_ahead(&task, t(1, 0, 0), t(1, 0, 1)),
            plan_slot(&task, t(1, 0, 0))
        );
    }

    #[test]
    fn a_jittered_configuration_goes_from_shifted_slot_to_shifted_slot() {
        let mut task = task(MisfirePolicy::Skip, t(1, 0, 0));
        task.config.jitter = Some(Duration::from_secs(30));
        let offset = task.config.fire_times().offset();
        assert!(
            offset > chrono::TimeDelta::zero(),
            "a name whose offset is 0 proves little"
        );
        task.next_run_at = Some(t(1, 0, 0) + offset);
        assert_eq!(
            plan_slot(&task, t(1, 0, 0)),
            None,
            "not due before its shifted time"
        );
        match plan_slot(&task, t(1, 0, 0) + offset) {
            Some(SlotAction::Run { next, .. }) => assert_eq!(next, Some(t(1, 1, 0) + offset)),
            other => panic!("{other:?}"),
        }
        // Missed for half an hour: it resumes on a shifted slot too.
        match plan_slot(&task, t(1, 30, 10) + offset) {
            Some(SlotAction::Skip { next, .. }) => assert_eq!(next, Some(t(1, 31, 0) + offset)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_due_yet() {
        assert_eq!(
            plan_slot(&task(MisfirePolicy::Skip, t(1, 0, 0)), t(0, 59, 59)),
            None
        );
    }

    #[test]
    fn on_time_or_slightly_late_runs_and_advances_by_one_slot() {
        for now in [t(1, 0, 0), t(1, 0, 4)] {
            assert_eq!(
                plan_slot(&task(MisfirePolicy::Skip, t(1, 0, 0)), now),
                Some(SlotAction::Run {
                    slot: t(1, 0, 0),
                    next: Some(t(1, 1, 0)),
                    catch_up: false
                })
            );
        }
    }

    #[test]
    fn skip_policy_records_the_missed_slots_and_jumps_to_the_future() {
        match plan_slot(&task(MisfirePolicy::Skip, t(1, 0, 0)), t(1, 30, 10)) {
            Some(SlotAction::Skip { slot, next, reason }) => {
                assert_eq!((slot, next), (t(1, 0, 0), Some(t(1, 31, 0))));
                assert!(reason.starts_with("missed 31 slot(s)"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn once_policy_runs_once_then_jumps_to_the_future() {
        assert_eq!(
            plan_slot(&task(MisfirePolicy::Once, t(1, 0, 0)), t(1, 30, 10)),
            Some(SlotAction::Run {
                slot: t(1, 0, 0),
                next: Some(t(1, 31, 0)),
                catch_up: false
            })
        );
    }

    #[test]
    fn all_policy_runs_each_slot_within_the_window_and_skips_older_ones() {
        // 10-minute window: slots before 01:20:10 are out of it.
        match plan_slot(&task(MisfirePolicy::All, t(1, 0, 0)), t(1, 30, 10)) {
            Some(SlotAction::Skip { next, .. }) => assert_eq!(next, Some(t(1, 21, 0))),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            plan_slot(&task(MisfirePolicy::All, t(1, 21, 0)), t(1, 30, 10)),
            Some(SlotAction::Run {
                slot: t(1, 21, 0),
                next: Some(t(1, 22, 0)),
                catch_up: true
            })
        );
    }

    #[test]
    fn a_one_off_in_the_past_under_skip_ends_the_schedule() {
        let mut task = task(MisfirePolicy::Skip, t(1, 0, 0));
        task.config.schedule = Schedule::at(t(1, 0, 0));
        match plan_slot(&task, t(2, 0, 0)) {
            Some(SlotAction::Skip { next, .. }) => assert_eq!(next, None),
            other => panic!("{other:?}"),
        }
    }
}

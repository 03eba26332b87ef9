//! When a configuration's slots fall: its schedule's fire times, shifted by
//! its jitter offset and kept inside its active window. Everything that
//! works out a fire time (a first run, the dispatcher's next slot, misfire
//! handling, previews) asks this, so a shifted or windowed schedule is the
//! same wherever it is read.

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest as _, Sha256};

use super::schedule::Schedule;
use super::task::TaskConfig;

/// A configuration's fire times.
#[derive(Debug, Clone, Copy)]
pub struct FireTimes<'a> {
    schedule: &'a Schedule,
    /// How far every fire time of the schedule is shifted (0 without jitter).
    offset: TimeDelta,
    /// No slot before this.
    start: Option<DateTime<Utc>>,
    /// No slot at or after this.
    until: Option<DateTime<Utc>>,
}

/// The jitter seed of a configuration first named `name`: a hash of the
/// name, so a thousand configurations with one schedule spread over the
/// jitter, and the preview of a new configuration shows the times it will
/// have. It is kept with the configuration (a rename does not move its
/// slots).
pub fn seed_of(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The shift of a configuration with `seed` within `jitter`: whole
/// milliseconds in `[0, jitter)`, the same on every instance and after
/// every restart.
pub fn jitter_offset(seed: u64, jitter: std::time::Duration) -> TimeDelta {
    let span = jitter.as_millis().min(i64::MAX as u128) as u64;
    if span == 0 {
        return TimeDelta::zero();
    }
    TimeDelta::milliseconds((seed % span) as i64)
}

impl TaskConfig {
    /// Its fire times: the schedule's, shifted by its jitter offset, within
    /// its active window.
    pub fn fire_times(&self) -> FireTimes<'_> {
        FireTimes {
            schedule: &self.schedule,
            offset: self
                .jitter
                .map_or(TimeDelta::zero(), |j| jitter_offset(self.seed(), j)),
            start: self.start,
            until: self.until,
        }
    }

    /// Its jitter seed: the one kept with it, else its name's.
    pub fn seed(&self) -> u64 {
        self.jitter_seed.unwrap_or_else(|| seed_of(&self.name))
    }
}

impl<'a> FireTimes<'a> {
    /// How far its slots are shifted from the schedule's.
    pub fn offset(&self) -> TimeDelta {
        self.offset
    }

    /// The first fire time strictly after `after`; `None` once there are
    /// no more (the schedule ended, or its window did).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if let Some(start) = self.start
            && start > after
        {
            return self.first_at_or_after(start);
        }
        let next = self.schedule.next_after(after - self.offset)? + self.offset;
        self.within(next)
    }

    /// The fire time after a stored slot. Stores keep milliseconds, so a
    /// slot read back stands for its whole millisecond: a fire time a few
    /// nanoseconds after it is the same slot, not the next one.
    pub fn next_after_slot(&self, slot: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after(slot + TimeDelta::nanoseconds(999_999))
    }

    /// The first fire time at or after `from`.
    pub fn first_at_or_after(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = self.start.map_or(from, |start| start.max(from));
        let next = self.schedule.first_at_or_after(from - self.offset)? + self.offset;
        self.within(next)
    }

    /// Up to `n` fire times strictly after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        super::schedule::upcoming(after, n, |t| self.next_after(t))
    }

    fn within(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.until {
            Some(until) if t >= until => None,
            _ => Some(t),
        }
    }
}

/// The shortest gap between two fire times of a repeating schedule, from
/// `now` on (a cron expression's gaps differ: sampled over its next
/// fire times); `None` for a one-off.
pub fn shortest_gap(schedule: &Schedule, now: DateTime<Utc>) -> Option<TimeDelta> {
    const SAMPLES: usize = 512;
    let times = schedule.upcoming(now, SAMPLES);
    times.windows(2).map(|w| w[1] - w[0]).min()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, h, m, s).unwrap()
    }

    fn hourly(name: &str, jitter: Option<Duration>) -> TaskConfig {
        let mut c = TaskConfig::new(name, "A.B", Schedule::cron("0 0 * * * *", "UTC").unwrap());
        c.jitter = jitter;
        c
    }

    #[test]
    fn a_jitter_shifts_every_slot_by_the_same_offset_from_the_name() {
        let jitter = Some(Duration::from_secs(600));
        let c = hourly("Nightly", jitter);
        let offset = c.fire_times().offset();
        assert!(offset >= TimeDelta::zero() && offset < TimeDelta::minutes(10));
        assert_eq!(offset, hourly("Nightly", jitter).fire_times().offset());
        let times = c.fire_times().upcoming(t(10, 30, 0), 3);
        assert_eq!(
            times,
            vec![
                t(11, 0, 0) + offset,
                t(12, 0, 0) + offset,
                t(13, 0, 0) + offset
            ]
        );
        // The slot itself is not "after" itself: the next is an hour on.
        assert_eq!(c.fire_times().next_after(times[0]), Some(times[1]));
        assert_eq!(c.fire_times().first_at_or_after(times[0]), Some(times[0]));
        // Just before a shifted slot, it is the next one.
        let just_before = times[0] - TimeDelta::milliseconds(1);
        assert_eq!(c.fire_times().next_after(just_before), Some(times[0]));
    }

    #[test]
    fn a_thousand_configurations_with_one_schedule_spread_over_the_jitter() {
        let jitter = Duration::from_secs(600);
        let offsets: std::collections::BTreeSet<i64> = (0..1000)
            .map(|i| jitter_offset(seed_of(&format!("task {i}")), jitter).num_milliseconds())
            .collect();
        assert!(offsets.len() > 990, "{} distinct offsets", offsets.len());
        // Spread over the whole jitter, not bunched at one end.
        let in_first_half = offsets.iter().filter(|o| **o < 300_000).count();
        assert!((400..=600).contains(&in_first_half), "{in_first_half}");
        assert_eq!(
            jitter_offset(seed_of("x"), Duration::ZERO),
            TimeDelta::zero()
        );
    }

    #[test]
    fn the_active_window_bounds_the_slots() {
        let mut c = hourly("w", None);
        c.start = Some(t(12, 30, 0));
        c.until = Some(t(15, 0, 0));
        let times = c.fire_times();
        assert_eq!(times.next_after(t(9, 0, 0)), Some(t(13, 0, 0)));
        assert_eq!(times.first_at_or_after(t(9, 0, 0)), Some(t(13, 0, 0)));
        assert_eq!(
            times.upcoming(t(9, 0, 0), 10),
            vec![t(13, 0, 0), t(14, 0, 0)]
        );
        // The window's end is not a slot: it ends there.
        assert_eq!(times.next_after(t(14, 0, 0)), None);
    }

    #[test]
    fn the_shortest_gap_of_a_schedule() {
        let every = Schedule::every(Duration::from_secs(90), t(0, 0, 0)).unwrap();
        assert_eq!(
            shortest_gap(&every, t(1, 0, 0)),
            Some(TimeDelta::seconds(90))
        );
        let uneven = Schedule::cron("0 0,5 * * * *", "UTC").unwrap();
        assert_eq!(
            shortest_gap(&uneven, t(1, 0, 0)),
            Some(TimeDelta::minutes(5))
        );
        assert_eq!(shortest_gap(&Schedule::at(t(2, 0, 0)), t(1, 0, 0)), None);
    }
}

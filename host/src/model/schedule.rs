//! When a configuration runs: the schedule kinds a configuration can carry and
//! the arithmetic that turns one into fire instants.
//!
//! Everything the dispatcher decides ("is this slot due?", "when is the next
//! one?") comes down to [`Schedule::next_after`], so this module owns the two
//! things that are easy to get subtly wrong elsewhere: drift-free interval
//! grids and cron expressions across daylight-saving transitions.
//!
//! # Cron and DST
//!
//! A cron expression names local wall-clock times. The rule here is that each
//! local time the expression names fires exactly once:
//!
//! * a local time that happens twice (clocks going back) fires at its first
//!   occurrence only;
//! * a local time that does not exist (clocks going forward) fires once, at
//!   the first real instant after the gap; several skipped times, and a time
//!   that names the end of the gap itself, collapse into that one instant.
//!
//! Put differently, a named wall time `w` fires at the earliest instant whose
//! local reading is at or past `w`. That mapping never decreases as `w` grows,
//! which is what makes `next_after` strictly increasing and duplicate-free by
//! construction rather than by filtering.
//!
//! croner (4.x) implements the OCPS rules instead, which give these semantics
//! only to "fixed-time" expressions (a single value in each of the second,
//! minute and hour fields). Anything else, e.g. `0 0,30 2 * * *` or
//! `*/15 2 * * *`, is an "interval" job to croner: its times inside a gap are
//! dropped and its repeated times fire twice, which breaks the rule above. So
//! croner is used purely as a wall-clock matcher (it walks a `NaiveDateTime`,
//! where no DST exists) and the wall-time-to-instant mapping is done here
//! with chrono-tz. The price of one rule for every expression: during the
//! repeated hour of a fall-back an every-minute or hourly expression pauses
//! until the wall clock passes the times it already fired for.

use std::fmt;
use std::time::Duration;

use chrono::{
    DateTime, LocalResult, NaiveDate, NaiveDateTime, Offset, SecondsFormat, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

/// How a configuration says when it runs.
///
/// Stored as JSON in the database, so the serde shape (tag `kind`, kebab-case
/// variant names, field names, `interval` as a humantime string) is part of
/// the storage format and must stay stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Schedule {
    /// Every `interval`, on the grid `anchor + k·interval` for every integer
    /// `k`: the anchor fixes the phase of the grid, not its start.
    Every {
        #[serde(with = "super::humantime_serde")]
        interval: Duration,
        anchor: DateTime<Utc>,
    },
    /// A cron expression (5 fields, or 6 with seconds first) evaluated in an
    /// IANA time zone.
    Cron {
        expression: String,
        timezone: String,
    },
    /// Once, at this instant.
    At { at: DateTime<Utc> },
    /// The reference CMS's form: first run at `run_on`, then, if
    /// `interval_seconds` is set, every that many seconds after. Unlike
    /// [`Schedule::Every`] nothing fires before `run_on`.
    RunOn {
        run_on: DateTime<Utc>,
        interval_seconds: Option<u64>,
    },
}

/// Why a schedule was rejected. Messages name the offending field and say how
/// to fix it, because they reach users of the CLI unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "cron expression '{expression}': {reason}; use 6 fields: sec min hour day month weekday, \
         e.g. '0 30 2 * * *' (or 5 without the seconds, e.g. '30 2 * * *')"
    )]
    InvalidCron { expression: String, reason: String },
    #[error(
        "cron expression '{expression}' never fires: no date matches its day, month and weekday \
         fields (e.g. '0 0 31 2 *' asks for 31 February); check those fields"
    )]
    CronNeverFires { expression: String },
    #[error("unknown time zone '{timezone}': use an IANA name such as {suggestion}")]
    UnknownTimeZone {
        timezone: String,
        suggestion: String,
    },
    #[error("interval must be at least 1s (got {got}); use e.g. 30s, 5m or 1h")]
    IntervalTooShort { got: String },
    #[error("interval_seconds must be at least 1 (got 0); leave it out for a single run")]
    IntervalSecondsZero,
    #[error("interval '{text}': {reason}; write a duration such as 30s, 5m or 1h 30m")]
    InvalidInterval { text: String, reason: String },
}

/// Shorter intervals would let one configuration flood the dispatcher, and
/// cron itself has second precision.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

impl Schedule {
    /// An interval schedule; `interval` must be at least one second.
    pub fn every(interval: Duration, anchor: DateTime<Utc>) -> Result<Self, ScheduleError> {
        check_interval(interval)?;
        Ok(Schedule::Every { interval, anchor })
    }

    /// A cron schedule; both the expression and the time zone are checked
    /// now so that a bad one is reported when it is configured, not when it
    /// silently never fires.
    pub fn cron(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let schedule = Schedule::Cron {
            expression: expression.trim().to_owned(),
            timezone: timezone.trim().to_owned(),
        };
        schedule.validate()?;
        Ok(schedule)
    }

    /// A one-off run.
    pub fn at(at: DateTime<Utc>) -> Self {
        Schedule::At { at }
    }

    /// The reference CMS's form; an interval of zero is rejected rather than
    /// read as "once", so that "once" has a single spelling (`None`).
    pub fn run_on(
        run_on: DateTime<Utc>,
        interval_seconds: Option<u64>,
    ) -> Result<Self, ScheduleError> {
        let schedule = Schedule::RunOn {
            run_on,
            interval_seconds,
        };
        schedule.validate()?;
        Ok(schedule)
    }

    /// Checks a schedule that did not come through a constructor, e.g. one
    /// read back from storage or JSON.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match self {
            Schedule::Every { interval, .. } => check_interval(*interval),
            Schedule::Cron {
                expression,
                timezone,
            } => {
                let cron = parse_cron(expression)?;
                parse_timezone(timezone)?;
                // A fixed start keeps validation deterministic; with no year
                // field, an expression that matches nothing from here on
                // matches nothing ever.
                let start = NaiveDate::from_ymd_opt(2000, 1, 1)
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .expect("a valid constant date");
                if cron.find_next_occurrence(&start, true).is_err() {
                    return Err(ScheduleError::CronNeverFires {
                        expression: expression.clone(),
                    });
                }
                Ok(())
            }
            Schedule::At { .. } => Ok(()),
            Schedule::RunOn {
                interval_seconds: Some(0),
                ..
            } => Err(ScheduleError::IntervalSecondsZero),
            Schedule::RunOn { .. } => Ok(()),
        }
    }

    /// The first fire time strictly after `after`; `None` when the schedule
    /// will never fire again (or is invalid, which `validate` reports).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every { interval, anchor } => {
                let step = i128::try_from(interval.as_nanos()).ok()?;
                grid_next_after(*anchor, step, after, None)
            }
            Schedule::Cron {
                expression,
                timezone,
            } => {
                let cron = parse_cron(expression).ok()?;
                let tz = parse_timezone(timezone).ok()?;
                cron_next_after(&cron, tz, after)
            }
            Schedule::At { at } => (*at > after).then_some(*at),
            Schedule::RunOn {
                run_on,
                interval_seconds,
            } => match interval_seconds {
                Some(seconds) if *seconds > 0 => {
                    let step = i128::from(*seconds) * NANOS_PER_SECOND;
                    grid_next_after(*run_on, step, after, Some(0))
                }
                _ => (*run_on > after).then_some(*run_on),
            },
        }
    }

    /// The first fire time at or after `from`, used when a configuration is
    /// created or enabled so that a fire time equal to "now" is not skipped.
    pub fn first_at_or_after(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times have nanosecond resolution at most, so "strictly after
        // one nanosecond earlier" is exactly "at or after".
        match from.checked_sub_signed(TimeDelta::nanoseconds(1)) {
            Some(just_before) => self.next_after(just_before),
            None => self.next_after(from),
        }
    }

    /// Up to `n` upcoming fire times strictly after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        upcoming(after, n, |t| self.next_after(t))
    }

    /// A short description for listings and previews.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Every { interval, .. } => {
                format!("every {}", humantime::format_duration(*interval))
            }
            Schedule::Cron {
                expression,
                timezone,
            } => match daily_time(expression) {
                Some((h, m, s)) => format!("every day at {h:02}:{m:02}:{s:02} ({timezone})"),
                None => format!("cron '{expression}' ({timezone})"),
            },
            Schedule::At { at } => format!("once at {}", rfc3339(*at)),
            Schedule::RunOn {
                run_on,
                interval_seconds: Some(seconds),
            } if *seconds > 0 => format!("every {seconds}s from {}", rfc3339(*run_on)),
            Schedule::RunOn { run_on, .. } => format!("once at {}", rfc3339(*run_on)),
        }
    }

    /// Parses the `--every` argument: humantime durations such as "30s",
    /// "5m" or "1h 30m", at least one second long.
    pub fn parse_interval(text: &str) -> Result<Duration, ScheduleError> {
        let interval = humantime::parse_duration(text.trim()).map_err(|err| {
            ScheduleError::InvalidInterval {
                text: text.to_owned(),
                reason: err.to_string(),
            }
        })?;
        check_interval(interval)?;
        Ok(interval)
    }
}

/// Up to `n` times strictly after `after`, in order, each the `next_after`
/// of the one before.
pub fn upcoming(
    after: DateTime<Utc>,
    n: usize,
    next_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> Vec<DateTime<Utc>> {
    let mut times = Vec::with_capacity(n.min(64));
    let mut cursor = after;
    while times.len() < n {
        match next_after(cursor) {
            Some(next) => {
                times.push(next);
                cursor = next;
            }
            None => break,
        }
    }
    times
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn check_interval(interval: Duration) -> Result<(), ScheduleError> {
    if interval < MIN_INTERVAL {
        return Err(ScheduleError::IntervalTooShort {
            got: humantime::format_duration(interval).to_string(),
        });
    }
    Ok(())
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

// ---------------------------------------------------------------------------
// Interval grids
// ---------------------------------------------------------------------------

const NANOS_PER_SECOND: i128 = 1_000_000_000;

fn to_nanos(at: DateTime<Utc>) -> i128 {
    i128::from(at.timestamp()) * NANOS_PER_SECOND + i128::from(at.timestamp_subsec_nanos())
}

fn from_nanos(nanos: i128) -> Option<DateTime<Utc>> {
    let seconds = i64::try_from(nanos.div_euclid(NANOS_PER_SECOND)).ok()?;
    let subsec = u32::try_from(nanos.rem_euclid(NANOS_PER_SECOND)).ok()?;
    DateTime::from_timestamp(seconds, subsec)
}

/// The smallest grid point `anchor + k·step` strictly after `after`, with
/// `k >= min_k` when given. Each point is computed from the anchor in exact
/// integer nanoseconds rather than by adding to the previous one, so there is
/// no drift however many steps are taken.
fn grid_next_after(
    anchor: DateTime<Utc>,
    step: i128,
    after: DateTime<Utc>,
    min_k: Option<i128>,
) -> Option<DateTime<Utc>> {
    if step <= 0 {
        return None;
    }
    let anchor = to_nanos(anchor);
    let mut k = (to_nanos(after) - anchor).div_euclid(step) + 1;
    if let Some(min_k) = min_k {
        k = k.max(min_k);
    }
    from_nanos(anchor.checked_add(k.checked_mul(step)?)?)
}

// ---------------------------------------------------------------------------
// Cron
// ---------------------------------------------------------------------------

fn parse_cron(expression: &str) -> Result<Cron, ScheduleError> {
    // Years are disallowed so that the accepted forms are exactly the
    // documented 5 or 6 fields; croner would otherwise read a 7th field.
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|err| ScheduleError::InvalidCron {
            expression: expression.to_owned(),
            reason: err.to_string(),
        })
}

fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimeZone {
            timezone: name.to_owned(),
            suggestion: suggest_timezone(name)
                .unwrap_or("Europe/Prague or UTC")
                .to_owned(),
        })
}

/// The known zone closest to a misspelt one (case-insensitive, at most two
/// edits away), so the error can point at the likely intended name.
fn suggest_timezone(name: &str) -> Option<&'static str> {
    let wanted = name.to_ascii_lowercase();
    chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| {
            (
                edit_distance(&wanted, &tz.name().to_ascii_lowercase()),
                tz.name(),
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// See the module docs for the rule. Fires are `E(w)` for each matching wall
/// time `w`, where `E(w)` is the earliest instant whose local reading is at or
/// past `w`. `E` never decreases, so the answer is `E` of the first matching
/// wall time with `E(w) > after`, and `E(w) > after` holds exactly for the
/// wall times beyond the latest reading the clock showed up to `after`.
fn cron_next_after(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Fires are whole seconds, so being after `after` is being after its
    // whole second.
    let after = after.with_nanosecond(0)?;
    let mut wall = latest_wall_up_to(tz, after);
    loop {
        // Walls strictly increase and croner gives up at year 5000, so this
        // ends; the loop only repeats if a zone breaks the monotonicity that
        // `latest_wall_up_to` relies on.
        wall = cron.find_next_occurrence(&wall, false).ok()?;
        let fire = earliest_instant_showing(tz, wall)?;
        if fire > after {
            return Some(fire);
        }
    }
}

fn offset_at(tz: Tz, at: DateTime<Utc>) -> chrono::FixedOffset {
    tz.offset_from_utc_datetime(&at.naive_utc()).fix()
}

/// The latest wall-clock reading shown at or before `instant`. That is the
/// instant's own reading, except during the second pass of a repeated hour,
/// where the clock already showed later readings before it went back; those
/// were fired for then and must not fire again.
fn latest_wall_up_to(tz: Tz, instant: DateTime<Utc>) -> NaiveDateTime {
    let wall = instant.with_timezone(&tz).naive_local();
    match tz.from_local_datetime(&wall) {
        LocalResult::Ambiguous(first, _) if instant > first.with_timezone(&Utc) => {
            let first_offset = first.offset().fix();
            let (mut lo, mut hi) = (first.with_timezone(&Utc), instant);
            while hi - lo > TimeDelta::seconds(1) {
                let mid = lo + TimeDelta::seconds((hi - lo).num_seconds() / 2);
                if offset_at(tz, mid) == first_offset {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            // `lo` is the last second before the clock went back.
            lo.with_timezone(&tz).naive_local()
        }
        _ => wall,
    }
}

/// `E(w)`: the earliest instant whose local reading is at or past `wall`.
/// For a repeated wall time that is its first occurrence; for one inside a
/// gap it is the first instant after the gap.
fn earliest_instant_showing(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => {
            // UTC offsets stay within ±26h, so the reading at `lo` is before
            // `wall` and the one at `hi` past it; bisect to the second where
            // the clock jumps over `wall`.
            let naive_utc = wall.and_utc();
            let mut lo = naive_utc.checked_sub_signed(TimeDelta::hours(26))?;
            let mut hi = naive_utc.checked_add_signed(TimeDelta::hours(26))?;
            while hi - lo > TimeDelta::seconds(1) {
                let mid = lo + TimeDelta::seconds((hi - lo).num_seconds() / 2);
                if mid.with_timezone(&tz).naive_local() >= wall {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            Some(hi)
        }
    }
}

/// `(hour, minute, second)` when the expression is a plain "every day at one
/// time", the common case worth a friendlier description. This only reads
/// the already-validated text; anything less plain is described verbatim.
fn daily_time(expression: &str) -> Option<(u32, u32, u32)> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let (second, rest) = match fields.len() {
        5 => ("0", &fields[..]),
        6 => (fields[0], &fields[1..]),
        _ => return None,
    };
    let any = |field: &str| field == "*" || field == "?";
    if !(any(rest[2]) && any(rest[3]) && any(rest[4])) {
        return None;
    }
    let number = |field: &str, max: u32| field.parse::<u32>().ok().filter(|v| *v <= max);
    Some((
        number(rest[1], 23)?,
        number(rest[0], 59)?,
        number(second, 59)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("a valid RFC 3339 instant in the test")
    }

    fn cron(expression: &str, timezone: &str) -> Schedule {
        Schedule::cron(expression, timezone).expect("a valid cron schedule in the test")
    }

    /// All fires in `[from, to)`, checking on the way that each is strictly
    /// after the previous one and is found again by `first_at_or_after`.
    fn fires_between(schedule: &Schedule, from: &str, to: &str) -> Vec<DateTime<Utc>> {
        let (from, to) = (utc(from), utc(to));
        let mut fires = Vec::new();
        let mut next = schedule.first_at_or_after(from);
        while let Some(at) = next.filter(|at| *at < to) {
            if let Some(previous) = fires.last() {
                assert!(at > *previous, "{at} does not follow {previous}");
            }
            assert_eq!(schedule.first_at_or_after(at), Some(at));
            fires.push(at);
            next = schedule.next_after(at);
        }
        fires
    }

    fn local(at: DateTime<Utc>, timezone: &str) -> String {
        let tz: Tz = timezone.parse().unwrap();
        at.with_timezone(&tz).format("%F %T %Z").to_string()
    }

    // --- Every -------------------------------------------------------------

    #[test]
    fn every_follows_the_anchor_grid() {
        let anchor = utc("2026-01-01T00:00:00.250Z");
        let every = Schedule::every(Duration::from_secs(7), anchor).unwrap();
        assert_eq!(
            every.next_after(anchor),
            Some(utc("2026-01-01T00:00:07.250Z"))
        );
        assert_eq!(every.first_at_or_after(anchor), Some(anchor));
        assert_eq!(
            every.next_after(utc("2026-01-01T00:00:07.249999999Z")),
            Some(utc("2026-01-01T00:00:07.250Z"))
        );
        // The anchor fixes the phase only: the grid extends before it.
        assert_eq!(
            every.next_after(utc("2025-12-31T23:59:40Z")),
            Some(utc("2025-12-31T23:59:46.250Z"))
        );
    }

    #[test]
    fn every_does_not_drift_over_10000_steps() {
        let anchor = utc("2026-03-29T00:59:59.123456789Z");
        let interval = Schedule::parse_interval("1s 1ms 1us 1ns").unwrap();
        let every = Schedule::every(interval, anchor).unwrap();
        let mut at = anchor;
        for k in 1..=10_000_i128 {
            let next = every.next_after(at).unwrap();
            assert_eq!(
                to_nanos(next),
                to_nanos(anchor) + k * interval.as_nanos() as i128
            );
            at = next;
        }
        assert_eq!(at, utc("2026-03-29T03:46:49.133466789Z"));
    }

    // --- At and RunOn ------------------------------------------------------

    #[test]
    fn at_fires_once() {
        let at = utc("2026-12-01T08:00:00Z");
        let once = Schedule::at(at);
        assert_eq!(once.next_after(utc("2026-12-01T07:59:59Z")), Some(at));
        assert_eq!(once.next_after(at), None);
        assert_eq!(once.first_at_or_after(at), Some(at));
        assert_eq!(once.upcoming(utc("2026-01-01T00:00:00Z"), 10), vec![at]);
    }

    #[test]
    fn run_on_starts_at_run_on_and_repeats() {
        let run_on = utc("2026-12-01T08:00:00Z");
        let repeating = Schedule::run_on(run_on, Some(3600)).unwrap();
        // Nothing before run_on, even where the grid would have a point.
        assert_eq!(
            repeating.next_after(utc("2026-11-30T08:00:00Z")),
            Some(run_on)
        );
        assert_eq!(repeating.first_at_or_after(run_on), Some(run_on));
        assert_eq!(
            repeating.next_after(run_on),
            Some(utc("2026-12-01T09:00:00Z"))
        );
        assert_eq!(
            repeating.next_after(utc("2026-12-01T10:30:00Z")),
            Some(utc("2026-12-01T11:00:00Z"))
        );

        let once = Schedule::run_on(run_on, None).unwrap();
        assert_eq!(once.next_after(utc("2026-11-30T08:00:00Z")), Some(run_on));
        assert_eq!(once.next_after(run_on), None);
    }

    // --- Cron basics -------------------------------------------------------

    #[test]
    fn cron_with_and_without_seconds_field() {
        let after = utc("2026-06-01T12:00:00Z");
        let five = cron("30 2 * * *", "UTC");
        let six = cron("0 30 2 * * *", "UTC");
        assert_eq!(five.next_after(after), Some(utc("2026-06-02T02:30:00Z")));
        assert_eq!(six.next_after(after), five.next_after(after));

        let seconds = cron("15,45 * * * * *", "UTC");
        assert_eq!(
            seconds.upcoming(after, 3),
            vec![
                utc("2026-06-01T12:00:15Z"),
                utc("2026-06-01T12:00:45Z"),
                utc("2026-06-01T12:01:15Z"),
            ]
        );
    }

    #[test]
    fn cron_next_after_is_strict_at_sub_second_precision() {
        let daily = cron("0 30 2 * * *", "UTC");
        let fire = utc("2026-06-02T02:30:00Z");
        assert_eq!(daily.next_after(fire), Some(utc("2026-06-03T02:30:00Z")));
        assert_eq!(
            daily.next_after(utc("2026-06-02T02:29:59.999Z")),
            Some(fire)
        );
        assert_eq!(daily.first_at_or_after(fire), Some(fire));
        assert_eq!(
            daily.first_at_or_after(utc("2026-06-02T02:30:00.001Z")),
            Some(utc("2026-06-03T02:30:00Z"))
        );
    }

    #[test]
    fn cron_weekday_and_month_fields() {
        // 2026-06-05 is a Friday.
        let weekdays = cron("0 0 9 * * MON-FRI", "Europe/Prague");
        assert_eq!(
            weekdays.upcoming(utc("2026-06-05T08:00:00Z"), 2),
            vec![utc("2026-06-08T07:00:00Z"), utc("2026-06-09T07:00:00Z")]
        );

        let half_years = cron("0 12 1 JAN,JUL *", "UTC");
        assert_eq!(
            half_years.upcoming(utc("2026-03-01T00:00:00Z"), 3),
            vec![
                utc("2026-07-01T12:00:00Z"),
                utc("2027-01-01T12:00:00Z"),
                utc("2027-07-01T12:00:00Z"),
            ]
        );

        // 31 March only exists in March: a month with 31 days is searched for.
        let last_of_march = cron("0 0 31 3 *", "UTC");
        assert_eq!(
            last_of_march.next_after(utc("2026-04-01T00:00:00Z")),
            Some(utc("2027-03-31T00:00:00Z"))
        );

        // The second Sunday of the month ("#" is croner's nth weekday).
        let second_sunday = cron("0 10 * * SUN#2", "UTC");
        assert_eq!(
            second_sunday.next_after(utc("2026-03-01T00:00:00Z")),
            Some(utc("2026-03-08T10:00:00Z"))
        );
    }

    #[test]
    fn upcoming_returns_ten_in_order() {
        let quarter = cron("0 */15 * * * *", "Europe/Prague");
        let times = quarter.upcoming(utc("2026-06-01T10:07:00Z"), 10);
        assert_eq!(times.len(), 10);
        assert_eq!(times[0], utc("2026-06-01T10:15:00Z"));
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], TimeDelta::minutes(15));
        }

        let every = Schedule::every(Duration::from_secs(30), utc("2026-06-01T00:00:00Z")).unwrap();
        let times = every.upcoming(utc("2026-06-01T00:00:00Z"), 10);
        assert_eq!(times.len(), 10);
        assert_eq!(times[9], utc("2026-06-01T00:05:00Z"));

        assert!(
            Schedule::at(utc("2026-01-01T00:00:00Z"))
                .upcoming(utc("2026-06-01T00:00:00Z"), 10)
                .is_empty()
        );
    }

    // --- Cron across DST ---------------------------------------------------

    #[test]
    fn prague_spring_forward_fires_missing_time_once_after_the_gap() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00 UTC.
        let daily = cron("0 30 2 * * *", "Europe/Prague");
        let fires = fires_between(&daily, "2026-03-27T12:00:00Z", "2026-03-31T00:00:00Z");
        assert_eq!(
            fires,
            vec![
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // 02:30 missing: 03:00 CEST
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
            ]
        );
        assert_eq!(local(fires[1], "Europe/Prague"), "2026-03-29 03:00:00 CEST");
    }

    #[test]
    fn prague_fall_back_fires_repeated_time_once() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC, so 02:30
        // happens at 00:30 UTC and again at 01:30 UTC.
        let daily = cron("0 30 2 * * *", "Europe/Prague");
        let fires = fires_between(&daily, "2026-10-24T12:00:00Z", "2026-10-27T00:00:00Z");
        assert_eq!(
            fires,
            vec![
                utc("2026-10-25T00:30:00Z"), // 02:30 CEST, the first pass
                utc("2026-10-26T01:30:00Z"), // 02:30 CET
            ]
        );
        // Asked from inside the second pass, the repeated 02:30 is not offered.
        assert_eq!(
            daily.next_after(utc("2026-10-25T01:15:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
        assert_eq!(
            daily.first_at_or_after(utc("2026-10-25T01:30:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
    }

    #[test]
    fn several_times_in_the_gap_collapse_into_one_fire() {
        // croner alone would drop both (not a "fixed-time" job to OCPS).
        let twice = cron("0 0,30 2 * * *", "Europe/Prague");
        let fires = fires_between(&twice, "2026-03-29T00:00:00Z", "2026-03-29T12:00:00Z");
        assert_eq!(fires, vec![utc("2026-03-29T01:00:00Z")]);

        // ...and on fall-back each fires once, not twice.
        let fires = fires_between(&twice, "2026-10-24T22:00:00Z", "2026-10-25T12:00:00Z");
        assert_eq!(
            fires,
            vec![utc("2026-10-25T00:00:00Z"), utc("2026-10-25T00:30:00Z")]
        );
    }

    #[test]
    fn new_york_hourly_across_both_2026_transitions() {
        let hourly = cron("0 * * * *", "America/New_York");
        for (from, to, transition) in [
            // 2026-03-08: 02:00 EST becomes 03:00 EDT at 07:00 UTC.
            ("2026-03-07T05:00:00Z", "2026-03-10T04:00:00Z", "2026-03-08"),
            // 2026-11-01: 02:00 EDT becomes 01:00 EST at 06:00 UTC.
            ("2026-10-31T04:00:00Z", "2026-11-03T05:00:00Z", "2026-11-01"),
        ] {
            let fires = fires_between(&hourly, from, to);
            let mut gaps = Vec::new();
            for pair in fires.windows(2) {
                let gap = pair[1] - pair[0];
                if gap != TimeDelta::hours(1) {
                    gaps.push((pair[0], gap));
                }
            }
            let hours_on_transition_day: Vec<String> = fires
                .iter()
                .map(|at| local(*at, "America/New_York"))
                .filter(|text| text.starts_with(transition))
                .map(|text| text[11..13].to_owned())
                .collect();
            let mut unique = hours_on_transition_day.clone();
            unique.dedup();
            assert_eq!(unique, hours_on_transition_day, "a local hour repeats");
            if transition == "2026-03-08" {
                // 02:00 does not exist and coincides with 03:00: one fire,
                // and real time has no hole at all.
                assert!(gaps.is_empty(), "unexpected gaps {gaps:?}");
                assert_eq!(hours_on_transition_day.len(), 23);
                assert!(!hours_on_transition_day.contains(&"02".to_owned()));
            } else {
                // The repeated 01:00 fires on its first pass only, so the one
                // longer wait is the hour the clock gives back.
                assert_eq!(
                    gaps,
                    vec![(utc("2026-11-01T05:00:00Z"), TimeDelta::hours(2))]
                );
                assert_eq!(hours_on_transition_day.len(), 24);
            }
        }
    }

    #[test]
    fn every_minute_and_every_second_across_prague_transitions() {
        let minutely = cron("* * * * *", "Europe/Prague");
        let fires = fires_between(&minutely, "2026-03-29T00:57:00Z", "2026-03-29T01:03:00Z");
        assert_eq!(
            fires,
            [57, 58, 59, 60, 61, 62]
                .iter()
                .map(|m| utc("2026-03-29T00:00:00Z") + TimeDelta::minutes(*m))
                .collect::<Vec<_>>()
        );

        // Fall-back: strictly increasing (checked by fires_between) and no
        // local minute fires twice.
        let fires = fires_between(&minutely, "2026-10-25T00:00:00Z", "2026-10-25T03:00:00Z");
        let mut walls: Vec<String> = fires
            .iter()
            .map(|at| local(*at, "Europe/Prague")[..16].to_owned())
            .collect();
        let count = walls.len();
        walls.sort();
        walls.dedup();
        assert_eq!(walls.len(), count);
        assert_eq!(count, 180 - 60);
        assert_eq!(
            minutely.next_after(utc("2026-10-25T00:59:00Z")),
            Some(utc("2026-10-25T02:00:00Z"))
        );

        let secondly = cron("* * * * * *", "Europe/Prague");
        assert_eq!(
            secondly.upcoming(utc("2026-03-29T00:59:58Z"), 3),
            vec![
                utc("2026-03-29T00:59:59Z"),
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-29T01:00:01Z"),
            ]
        );
    }

    #[test]
    fn next_after_is_strictly_increasing_through_a_year_of_transitions() {
        for (expression, timezone, steps) in [
            ("0 30 2 * * *", "Europe/Prague", 400),
            ("0 0 */3 * * *", "America/New_York", 3000),
            ("0 15,45 1,2 * * *", "Australia/Lord_Howe", 1500),
            ("0 0 2 * * SUN", "America/Santiago", 60),
        ] {
            let schedule = cron(expression, timezone);
            let mut at = utc("2026-01-01T00:00:00Z");
            for _ in 0..steps {
                let next = schedule.next_after(at).unwrap();
                assert!(next > at, "{expression} in {timezone}: {next} after {at}");
                at = next;
            }
        }
    }

    // --- Errors ------------------------------------------------------------

    #[test]
    fn bad_cron_expression_explains_the_format() {
        let err = Schedule::cron("0 30 2 * *  * * *", "UTC").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ScheduleError::InvalidCron { .. }));
        assert!(
            text.starts_with("cron expression '0 30 2 * *  * * *': "),
            "{text}"
        );
        assert!(
            text.contains("sec min hour day month weekday, e.g. '0 30 2 * * *'"),
            "{text}"
        );

        let err = Schedule::cron("0 61 2 * * *", "UTC").unwrap_err();
        assert!(matches!(err, ScheduleError::InvalidCron { .. }), "{err}");

        let err = Schedule::cron("0 0 31 2 *", "UTC").unwrap_err();
        assert!(matches!(err, ScheduleError::CronNeverFires { .. }), "{err}");
        assert!(err.to_string().contains("never fires"), "{err}");
    }

    #[test]
    fn bad_time_zone_suggests_a_name() {
        let err = Schedule::cron("0 30 2 * * *", "Europe/Pragu").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown time zone 'Europe/Pragu': use an IANA name such as Europe/Prague"
        );
        let err = Schedule::cron("0 30 2 * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown time zone 'Mars/Olympus': use an IANA name such as Europe/Prague or UTC"
        );
    }

    #[test]
    fn too_short_intervals_are_rejected() {
        let anchor = utc("2026-01-01T00:00:00Z");
        let err = Schedule::every(Duration::ZERO, anchor).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("interval must be at least 1s (got 0s)"),
            "{err}"
        );
        assert!(Schedule::every(Duration::from_millis(999), anchor).is_err());
        assert!(Schedule::every(Duration::from_secs(1), anchor).is_ok());

        let err = Schedule::run_on(anchor, Some(0)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("interval_seconds must be at least 1"),
            "{err}"
        );

        let err = Schedule::parse_interval("0s").unwrap_err();
        assert!(
            matches!(err, ScheduleError::IntervalTooShort { .. }),
            "{err}"
        );
        let err = Schedule::parse_interval("soon").unwrap_err();
        assert!(err.to_string().starts_with("interval 'soon': "), "{err}");
        assert!(
            err.to_string().contains("such as 30s, 5m or 1h 30m"),
            "{err}"
        );
    }

    #[test]
    fn parse_interval_reads_humantime() {
        assert_eq!(
            Schedule::parse_interval("30s").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            Schedule::parse_interval("5m").unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            Schedule::parse_interval(" 1h 30m ").unwrap(),
            Duration::from_secs(5400)
        );
    }

    // --- describe ----------------------------------------------------------

    #[test]
    fn describe_outputs() {
        let anchor = utc("2026-01-01T00:00:00Z");
        let at = utc("2026-12-01T08:00:00Z");
        let cases = [
            (
                Schedule::every(Duration::from_secs(30), anchor).unwrap(),
                "every 30s",
            ),
            (
                Schedule::every(Duration::from_secs(5400), anchor).unwrap(),
                "every 1h 30m",
            ),
            (
                cron("0 30 2 * * *", "Europe/Prague"),
                "every day at 02:30:00 (Europe/Prague)",
            ),
            (cron("15 7 * * ?", "UTC"), "every day at 07:15:00 (UTC)"),
            (
                cron("0 0 9 * * MON-FRI", "UTC"),
                "cron '0 0 9 * * MON-FRI' (UTC)",
            ),
            (cron("@daily", "UTC"), "cron '@daily' (UTC)"),
            (Schedule::at(at), "once at 2026-12-01T08:00:00Z"),
            (
                Schedule::run_on(at, Some(3600)).unwrap(),
                "every 3600s from 2026-12-01T08:00:00Z",
            ),
            (
                Schedule::run_on(at, None).unwrap(),
                "once at 2026-12-01T08:00:00Z",
            ),
        ];
        for (schedule, expected) in cases {
            assert_eq!(schedule.describe(), expected);
            assert_eq!(schedule.to_string(), expected);
        }
    }

    // --- serde -------------------------------------------------------------

    #[test]
    fn serde_round_trips_every_variant_in_a_stable_shape() {
        let anchor = utc("2026-01-01T00:00:00Z");
        let cases = [
            (
                Schedule::every(Duration::from_secs(30), anchor).unwrap(),
                r#"{"kind":"every","interval":"30s","anchor":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                cron("0 30 2 * * *", "Europe/Prague"),
                r#"{"kind":"cron","expression":"0 30 2 * * *","timezone":"Europe/Prague"}"#,
            ),
            (
                Schedule::at(anchor),
                r#"{"kind":"at","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Schedule::run_on(anchor, Some(3600)).unwrap(),
                r#"{"kind":"run-on","run_on":"2026-01-01T00:00:00Z","interval_seconds":3600}"#,
            ),
            (
                Schedule::run_on(anchor, None).unwrap(),
                r#"{"kind":"run-on","run_on":"2026-01-01T00:00:00Z","interval_seconds":null}"#,
            ),
        ];
        for (schedule, json) in cases {
            assert_eq!(serde_json::to_string(&schedule).unwrap(), json);
            let back: Schedule = serde_json::from_str(json).unwrap();
            assert_eq!(back, schedule);
            back.validate().unwrap();
        }

        let long: Schedule = serde_json::from_str(
            r#"{"kind":"every","interval":"1h 30m","anchor":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            long,
            Schedule::every(Duration::from_secs(5400), anchor).unwrap()
        );
    }

    #[test]
    fn validate_catches_bad_values_read_back_from_json() {
        for json in [
            r#"{"kind":"every","interval":"0s","anchor":"2026-01-01T00:00:00Z"}"#,
            r#"{"kind":"cron","expression":"0 30 2 * *","timezone":"Europe/Pragu"}"#,
            r#"{"kind":"cron","expression":"every day","timezone":"UTC"}"#,
            r#"{"kind":"run-on","run_on":"2026-01-01T00:00:00Z","interval_seconds":0}"#,
        ] {
            let schedule: Schedule = serde_json::from_str(json).unwrap();
            assert!(schedule.validate().is_err(), "{json}");
        }
    }
}

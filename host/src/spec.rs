//! What an operator may set on a task configuration, validated in one place.
//! The CLI (`task add/edit`) and the HTTP API (`POST/PUT /api/tasks`) both
//! turn their input into a [`ScheduleSpec`] and a [`ConfigSpec`] and call
//! into here, so a value one accepts the other accepts too, and both report
//! a bad one with the same [`FieldError`] (the CLI names the flag, the API
//! the JSON field).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    DirGrant, HttpGrant, MisfirePolicy, OverlapPolicy, PluginRow, PluginState, Schedule,
    TaskConfig, TaskRecord,
};

/// A field of a configuration, as the CLI and the API call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Implementation,
    /// No schedule, or more than one kind of it.
    Schedule,
    Every,
    Cron,
    Timezone,
    At,
    RunOn,
    IntervalSeconds,
    Anchor,
    Timeout,
    Fuel,
    Memory,
    Properties,
    Grants,
    AllowHttp,
    Roles,
    Misfire,
    CatchUp,
    Retries,
    RetryBackoff,
    KeepRuns,
    KeepFailed,
    OnOverlap,
    MaxConcurrent,
    Jitter,
    Start,
    Until,
    OnFailure,
    OnSuccess,
    BackfillFrom,
    BackfillTo,
    Concurrency,
}

impl Field {
    /// The command-line flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Field::Name => "NAME",
            Field::Implementation => "--implementation",
            Field::Schedule => "--every/--cron/--at/--run-on",
            Field::Every => "--every",
            Field::Cron => "--cron",
            Field::Timezone => "--tz",
            Field::At => "--at",
            Field::RunOn => "--run-on",
            Field::IntervalSeconds => "--interval-seconds",
            Field::Anchor => "--anchor",
            Field::Timeout => "--timeout",
            Field::Fuel => "--fuel",
            Field::Memory => "--memory",
            Field::Properties => "--property",
            Field::Grants => "--grant-dir",
            Field::AllowHttp => "--allow-http",
            Field::Roles => "--require-role",
            Field::Misfire => "--misfire",
            Field::CatchUp => "--catch-up",
            Field::Retries => "--retries",
            Field::RetryBackoff => "--retry-backoff",
            Field::KeepRuns => "--keep-runs",
            Field::KeepFailed => "--keep-failed",
            Field::OnOverlap => "--on-overlap",
            Field::MaxConcurrent => "--max-concurrent",
            Field::Jitter => "--jitter",
            Field::Start => "--start",
            Field::Until => "--until",
            Field::OnFailure => "--on-failure",
            Field::OnSuccess => "--on-success",
            Field::BackfillFrom => "--from",
            Field::BackfillTo => "--to",
            Field::Concurrency => "--concurrency",
        }
    }

    /// The JSON field of the API's task input.
    pub fn json(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Implementation => "implementation",
            Field::Schedule => "schedule",
            Field::Every => "schedule.every",
            Field::Cron => "schedule.cron",
            Field::Timezone => "schedule.timezone",
            Field::At => "schedule.at",
            Field::RunOn => "schedule.run_on",
            Field::IntervalSeconds => "schedule.interval_seconds",
            Field::Anchor => "schedule.anchor",
            Field::Timeout => "timeout",
            Field::Fuel => "fuel",
            Field::Memory => "memory",
            Field::Properties => "properties",
            Field::Grants => "grants",
            Field::AllowHttp => "allow_http",
            Field::Roles => "roles",
            Field::Misfire => "misfire",
            Field::CatchUp => "catch_up",
            Field::Retries => "retries",
            Field::RetryBackoff => "retry_backoff",
            Field::KeepRuns => "keep_runs",
            Field::KeepFailed => "keep_failed",
            Field::OnOverlap => "on_overlap",
            Field::MaxConcurrent => "max_concurrent",
            Field::Jitter => "jitter",
            Field::Start => "start",
            Field::Until => "until",
            Field::OnFailure => "on_failure",
            Field::OnSuccess => "on_success",
            Field::BackfillFrom => "from",
            Field::BackfillTo => "to",
            Field::Concurrency => "concurrency",
        }
    }
}

/// A value the operator gave that cannot be used; `message` says what is
/// wrong and how to fix it, without naming the field (callers do that).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", field.flag())]
pub struct FieldError {
    pub field: Field,
    pub message: String,
}

impl FieldError {
    pub fn new(field: Field, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

/// A duration such as `2s`, `500ms`, `5m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("'{s}' is not a duration ({e}); use e.g. 2s, 500ms, 5m"))
}

/// A size such as `64MiB`, `1GiB`, `512KiB` or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("'{s}' is not a size ({e}); use e.g. 64MiB, 1GiB"))
}

/// A count that may use `_` separators: `10_000_000`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    s.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))
}

/// An RFC 3339 time, truncated to the millisecond the store keeps.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| {
            let t = t.with_timezone(&Utc);
            chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::milliseconds(1))
                .unwrap_or(t)
        })
        .map_err(|e| {
            format!("'{text}' is not an RFC 3339 time ({e}); use e.g. 2026-12-01T08:00:00Z")
        })
}

/// When a configuration runs: exactly one of `every`, `cron`, `at`,
/// `run_on` (or none, for an edit that keeps the schedule).
#[derive(Debug, Clone, Default)]
pub struct ScheduleSpec {
    pub every: Option<String>,
    pub cron: Option<String>,
    /// Time zone of `cron` (IANA name); UTC when not given.
    pub timezone: Option<String>,
    pub at: Option<String>,
    pub run_on: Option<String>,
    /// With `run_on`: repeat every N seconds.
    pub interval_seconds: Option<u64>,
    /// With `every`: the time its slots count from (default: now), so a
    /// configuration moved to another store keeps its slots.
    pub anchor: Option<String>,
}

impl ScheduleSpec {
    /// The schedule this describes, if any; `now` anchors intervals (on a
    /// whole second, so runs fall on round times).
    pub fn to_schedule(&self, now: DateTime<Utc>) -> Result<Option<Schedule>, FieldError> {
        let given: Vec<Field> = [
            (self.every.is_some(), Field::Every),
            (self.cron.is_some(), Field::Cron),
            (self.at.is_some(), Field::At),
            (self.run_on.is_some(), Field::RunOn),
        ]
        .into_iter()
        .filter_map(|(set, f)| set.then_some(f))
        .collect();
        if given.len() > 1 {
            return Err(FieldError::new(
                Field::Schedule,
                format!(
                    "give one of every, cron, at or run_on, not {}",
                    given
                        .iter()
                        .map(|f| f.json().trim_start_matches("schedule."))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ));
        }
        if self.interval_seconds.is_some() && self.run_on.is_none() {
            return Err(FieldError::new(
                Field::IntervalSeconds,
                "only goes with run_on (the first run); for a plain interval use every",
            ));
        }
        if self.anchor.is_some() && self.every.is_none() {
            return Err(FieldError::new(
                Field::Anchor,
                "only goes with every (the time its slots count from)",
            ));
        }
        if self.timezone.is_some() && self.cron.is_none() {
            return Err(FieldError::new(
                Field::Timezone,
                "only goes with cron; every, at and run_on are absolute",
            ));
        }
        let now = chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::seconds(1))
            .unwrap_or(now);
        let schedule = if let Some(every) = &self.every {
            let interval = Schedule::parse_interval(every)
                .map_err(|e| FieldError::new(Field::Every, e.to_string()))?;
            let anchor = match &self.anchor {
                Some(a) => parse_time(a).map_err(|m| FieldError::new(Field::Anchor, m))?,
                None => now,
            };
            Schedule::every(interval, anchor)
                .map_err(|e| FieldError::new(Field::Every, e.to_string()))?
        } else if let Some(expr) = &self.cron {
            let tz = self.timezone.as_deref().unwrap_or("UTC");
            Schedule::cron(expr, tz).map_err(|e| {
                let field = match e {
                    crate::model::schedule::ScheduleError::UnknownTimeZone { .. } => {
                        Field::Timezone
                    }
                    _ => Field::Cron,
                };
                FieldError::new(field, e.to_string())
            })?
        } else if let Some(at) = &self.at {
            Schedule::at(parse_time(at).map_err(|m| FieldError::new(Field::At, m))?)
        } else if let Some(run_on) = &self.run_on {
            let first = parse_time(run_on).map_err(|m| FieldError::new(Field::RunOn, m))?;
            Schedule::run_on(first, self.interval_seconds)
                .map_err(|e| FieldError::new(Field::IntervalSeconds, e.to_string()))?
        } else {
            return Ok(None);
        };
        Ok(Some(schedule))
    }
}

/// Limits, grants, properties and policies of a configuration. Every field
/// is optional so an edit can change just what is given.
#[derive(Debug, Clone, Default)]
pub struct ConfigSpec {
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
    pub memory: Option<u64>,
    pub properties: Vec<(String, String)>,
    pub grant_dirs: Vec<DirGrant>,
    /// Hosts the task may send HTTP requests to (added to those it has).
    pub allow_http: Vec<HttpGrant>,
    /// Roles an instance needs to run it; given, they replace the current
    /// ones (an empty list: any instance).
    pub roles: Option<Vec<String>>,
    pub misfire: Option<MisfirePolicy>,
    pub catch_up: Option<Duration>,
    pub retries: Option<u32>,
    pub retry_backoff: Option<Duration>,
    /// History kept for it: `Some(None)` goes back to `serve --keep-runs`.
    pub keep_runs: Option<Option<u32>>,
    pub keep_failed: Option<Option<u32>>,
    /// What a slot does while the configuration is still running; a
    /// policy other than `allow` drops `max_concurrent`.
    pub on_overlap: Option<OverlapPolicy>,
    /// Runs at once under `allow`.
    pub max_concurrent: Option<u32>,
    /// The spread of its slots; `Some(None)` (or zero) removes it.
    pub jitter: Option<Option<Duration>>,
    /// Its active window's start and end; `Some(None)` removes one.
    pub start: Option<Option<DateTime<Utc>>>,
    pub until: Option<Option<DateTime<Utc>>>,
    /// Configurations to run when a run of it fails / succeeds; given, a
    /// list replaces the one it had (empty: none).
    pub on_failure: Option<Vec<String>>,
    pub on_success: Option<Vec<String>>,
    /// Runs once on every instance's start.
    pub on_start: Option<bool>,
}

/// Most follow-ups of each kind one configuration may name.
pub const MAX_FOLLOW_UPS: usize = 10;

/// Most runs of one configuration that may go on at once under `allow`:
/// each holds its own memory and fuel, so a typo must not become a
/// thousand sandboxes.
pub const MAX_CONCURRENT: u32 = 100;

/// Most finished runs a configuration may keep of each kind.
pub const MAX_KEEP_RUNS: u32 = 1_000_000;

/// Most retries a configuration may ask for: with doubling backoff, more
/// would wait for years.
pub const MAX_RETRIES: u32 = 20;

impl ConfigSpec {
    /// Checks the given values and applies them onto `config`.
    pub fn apply(&self, config: &mut TaskConfig) -> Result<(), FieldError> {
        if let Some(t) = self.timeout {
            if t.is_zero() {
                return Err(FieldError::new(Field::Timeout, "must be more than zero"));
            }
            config.limits.timeout = t;
        }
        if let Some(f) = self.fuel {
            if f == 0 {
                return Err(FieldError::new(
                    Field::Fuel,
                    "must be more than zero; leave it out for unlimited fuel",
                ));
            }
            config.limits.fuel = Some(f);
        }
        if let Some(m) = self.memory {
            if m < 64 * 1024 {
                return Err(FieldError::new(
                    Field::Memory,
                    "must be at least 64KiB (one wasm page)",
                ));
            }
            config.limits.memory_bytes = m;
        }
        for (k, v) in &self.properties {
            if k.trim().is_empty() {
                return Err(FieldError::new(
                    Field::Properties,
                    format!("a property needs a name (got '={v}')"),
                ));
            }
            config.properties.insert(k.clone(), v.clone());
        }
        for grant in &self.grant_dirs {
            if !grant.guest_path.starts_with('/') {
                return Err(FieldError::new(
                    Field::Grants,
                    format!(
                        "the task sees a directory at an absolute path: '{}' should start with '/'",
                        grant.guest_path
                    ),
                ));
            }
            if !grant.host_path.is_absolute() || !grant.host_path.is_dir() {
                return Err(FieldError::new(
                    Field::Grants,
                    format!(
                        "{}: not a directory on this host (give an absolute path to an existing directory)",
                        grant.host_path.display()
                    ),
                ));
            }
            config
                .grants
                .dirs
                .retain(|g| g.guest_path != grant.guest_path);
            config.grants.dirs.push(grant.clone());
        }
        for grant in &self.allow_http {
            if !config.grants.http_hosts.contains(grant) {
                config.grants.http_hosts.push(grant.clone());
            }
        }
        if let Some(roles) = &self.roles {
            let mut checked = Vec::with_capacity(roles.len());
            for role in roles {
                check_role(role).map_err(|m| FieldError::new(Field::Roles, m))?;
                if !checked.contains(role) {
                    checked.push(role.clone());
                }
            }
            checked.sort();
            config.roles = checked;
        }
        if let Some(m) = self.misfire {
            config.misfire = m;
        }
        if let Some(c) = self.catch_up {
            config.catch_up_window = c;
        }
        if let Some(r) = self.retries {
            if r > MAX_RETRIES {
                return Err(FieldError::new(
                    Field::Retries,
                    format!("at most {MAX_RETRIES} (got {r})"),
                ));
            }
            config.retries = r;
        }
        if let Some(b) = self.retry_backoff {
            config.retry_backoff = b;
        }
        for (field, given, kept) in [
            (Field::KeepRuns, self.keep_runs, &mut config.keep_runs),
            (Field::KeepFailed, self.keep_failed, &mut config.keep_failed),
        ] {
            if let Some(Some(n)) = given
                && n > MAX_KEEP_RUNS
            {
                return Err(FieldError::new(
                    field,
                    format!("at most {MAX_KEEP_RUNS} (got {n})"),
                ));
            }
            if let Some(n) = given {
                *kept = n;
            }
        }
        if let Some(policy) = self.on_overlap {
            config.on_overlap = policy;
            if policy != OverlapPolicy::Allow {
                config.max_concurrent = None;
            }
        }
        if let Some(n) = self.max_concurrent {
            if config.on_overlap != OverlapPolicy::Allow {
                return Err(FieldError::new(
                    Field::MaxConcurrent,
                    format!(
                        "only goes with the overlap policy allow (this configuration's is {}); \
                         set both",
                        config.on_overlap
                    ),
                ));
            }
            if n == 0 || n > MAX_CONCURRENT {
                return Err(FieldError::new(
                    Field::MaxConcurrent,
                    format!("must be 1 to {MAX_CONCURRENT} (got {n})"),
                ));
            }
            config.max_concurrent = Some(n);
        }
        if let Some(jitter) = self.jitter {
            config.jitter = jitter.filter(|j| !j.is_zero());
        }
        if let Some(start) = self.start {
            config.start = start;
        }
        if let Some(until) = self.until {
            config.until = until;
        }
        for (field, given, kept) in [
            (Field::OnFailure, &self.on_failure, &mut config.on_failure),
            (Field::OnSuccess, &self.on_success, &mut config.on_success),
        ] {
            let Some(names) = given else { continue };
            if names.len() > MAX_FOLLOW_UPS {
                return Err(FieldError::new(
                    field,
                    format!(
                        "at most {MAX_FOLLOW_UPS} configurations (got {})",
                        names.len()
                    ),
                ));
            }
            let mut checked: Vec<String> = Vec::with_capacity(names.len());
            for name in names {
                check_name(name).map_err(|e| FieldError::new(field, e.message))?;
                if !checked.contains(name) {
                    checked.push(name.clone());
                }
            }
            *kept = checked;
        }
        if let Some(on_start) = self.on_start {
            config.on_start = on_start;
        }
        Ok(())
    }
}

/// The identifiers the instances' plugins folders hold now (serving,
/// compiling, or in conflict: each is there to run).
pub fn loaded_identifiers(plugins: &[PluginRow]) -> Vec<String> {
    let mut ids: Vec<String> = plugins
        .iter()
        .filter(|p| p.status != PluginState::Failed || p.served_sha256().is_some())
        .filter_map(|p| p.identifier.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Why `identifier` looks wrong when no instance has loaded a component
/// implementing it, naming the loaded identifiers nearest to it (a typo,
/// or a wrong company prefix); `None` when one has.
pub fn unknown_identifier(identifier: &str, loaded: &[String]) -> Option<String> {
    if loaded.iter().any(|l| l == identifier) {
        return None;
    }
    let wanted = identifier.to_lowercase();
    let mut near: Vec<(f64, &String)> = loaded
        .iter()
        .map(|l| {
            let score = strsim::normalized_damerau_levenshtein(&wanted, &l.to_lowercase());
            // The part after the company prefix, for a prefix gone wrong.
            let tail = |s: &str| s.rsplit('.').next().unwrap_or(s).to_lowercase();
            let tails = strsim::normalized_damerau_levenshtein(&tail(&wanted), &tail(l));
            (score.max(tails * 0.9), l)
        })
        .filter(|(score, _)| *score >= 0.6)
        .collect();
    near.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let nobody = format!("no running instance has loaded a component implementing '{identifier}'");
    Some(match near.as_slice() {
        [] => {
            let shown: Vec<&str> = loaded.iter().take(5).map(String::as_str).collect();
            let more = if loaded.len() > 5 { ", ..." } else { "" };
            format!("{nobody} (loaded: {}{more})", shown.join(", "))
        }
        near => {
            let names: Vec<String> = near.iter().take(3).map(|(_, l)| format!("'{l}'")).collect();
            format!("{nobody}; did you mean {}?", names.join(" or "))
        }
    })
}

/// Checks `config`'s follow-ups against the configurations there are
/// (`all`, which may hold `config` itself as it was): each names one that
/// exists, and none leads back to `config` (a cycle would run forever).
pub fn check_follow_ups(config: &TaskConfig, all: &[TaskRecord]) -> Result<(), FieldError> {
    let follow_ups = |c: &TaskConfig| -> Vec<String> {
        c.on_failure.iter().chain(&c.on_success).cloned().collect()
    };
    let targets_of = |name: &str| -> Vec<String> {
        if name == config.name {
            return follow_ups(config);
        }
        all.iter()
            .find(|t| t.config.name == name)
            .map(|t| follow_ups(&t.config))
            .unwrap_or_default()
    };
    for (field, names) in [
        (Field::OnFailure, &config.on_failure),
        (Field::OnSuccess, &config.on_success),
    ] {
        for name in names {
            if *name == config.name {
                return Err(FieldError::new(
                    field,
                    format!("'{name}' cannot be its own follow-up: it would run forever"),
                ));
            }
            if !all.iter().any(|t| t.config.name == *name) {
                return Err(FieldError::new(
                    field,
                    format!(
                        "there is no configuration named '{name}': create it first \
                         (`cronwerk task list` shows the names)"
                    ),
                ));
            }
            // Depth-first from this follow-up, remembering how each one was
            // reached: reaching `config` again is a cycle.
            let mut came_from = std::collections::BTreeMap::new();
            came_from.insert(name.clone(), config.name.clone());
            let mut stack = vec![name.clone()];
            while let Some(at) = stack.pop() {
                for next in targets_of(&at) {
                    if next == config.name {
                        let mut chain = vec![at.clone()];
                        while let Some(prev) = came_from.get(chain.last().unwrap_or(&at)) {
                            if *prev == config.name {
                                break;
                            }
                            chain.push(prev.clone());
                        }
                        chain.reverse();
                        let path: Vec<&str> = std::iter::once(config.name.as_str())
                            .chain(chain.iter().map(String::as_str))
                            .chain(std::iter::once(config.name.as_str()))
                            .collect();
                        return Err(FieldError::new(
                            field,
                            format!(
                                "follow-ups would run in a cycle: {}; remove one of them",
                                path.join(" → ")
                            ),
                        ));
                    }
                    if !came_from.contains_key(&next) {
                        came_from.insert(next.clone(), at.clone());
                        stack.push(next);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Most slots one backfill may cover.
pub const MAX_BACKFILL_SLOTS: u32 = 100_000;

/// A backfill of `task`'s slots in `[from, to)` asked for at `now` by
/// `by`, checked: the window is in the past, holds at least one slot and
/// not too many, and the concurrency is sane (default 1).
pub fn new_backfill(
    task: &TaskRecord,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    concurrency: Option<u32>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<crate::model::backfill::NewBackfill, FieldError> {
    if to <= from {
        return Err(FieldError::new(
            Field::BackfillTo,
            format!("{to} is not after the window's start ({from})"),
        ));
    }
    if to > now {
        return Err(FieldError::new(
            Field::BackfillTo,
            format!(
                "{to} is in the future: a backfill runs past slots (the schedule runs the \
                 coming ones); give a time up to now"
            ),
        ));
    }
    let concurrency = concurrency.unwrap_or(1);
    if concurrency == 0 || concurrency > MAX_CONCURRENT {
        return Err(FieldError::new(
            Field::Concurrency,
            format!("must be 1 to {MAX_CONCURRENT} (got {concurrency})"),
        ));
    }
    let times = task.config.fire_times();
    let Some(first_slot) = times.first_at_or_after(from).filter(|s| *s < to) else {
        return Err(FieldError::new(
            Field::BackfillFrom,
            format!(
                "no slot of '{}' falls between {from} and {to}: nothing to backfill",
                task.config.schedule
            ),
        ));
    };
    let mut total = 1u32;
    let mut slot = first_slot;
    while let Some(next) = times.next_after_slot(slot).filter(|n| *n < to) {
        total += 1;
        if total > MAX_BACKFILL_SLOTS {
            return Err(FieldError::new(
                Field::BackfillFrom,
                format!(
                    "the window holds more than {MAX_BACKFILL_SLOTS} slots of '{}': backfill \
                     a shorter one",
                    task.config.schedule
                ),
            ));
        }
        slot = next;
    }
    Ok(crate::model::backfill::NewBackfill {
        id: uuid::Uuid::now_v7().to_string(),
        task_id: task.id,
        from,
        to,
        first_slot,
        total,
        concurrency,
        requested_by: by.to_owned(),
        created_at: now,
    })
}

/// Whether storing `new` (created, or changed from `old`) needs the other
/// configurations checked ([`check_with_others`]): it names follow-ups,
/// or it is renamed.
pub fn needs_others(old: Option<&TaskConfig>, new: &TaskConfig) -> bool {
    old.is_some_and(|o| o.name != new.name)
        || !new.on_failure.is_empty()
        || !new.on_success.is_empty()
}

/// Whether `new` (created, or changed from `old`) fits with the other
/// configurations, `all`: its follow-ups exist and make no cycle, and a
/// rename strands none that names the old name as its follow-up.
pub fn check_with_others(
    old: Option<&TaskConfig>,
    new: &TaskConfig,
    all: &[TaskRecord],
) -> Result<(), FieldError> {
    if let Some(old) = old.filter(|o| o.name != new.name) {
        let by = followed_up_by(&old.name, all);
        if !by.is_empty() {
            return Err(FieldError::new(
                Field::Name,
                format!(
                    "'{}' is a follow-up of {}: name the new name there first \
                     (--on-failure / --on-success), then rename it",
                    old.name,
                    quoted(&by)
                ),
            ));
        }
    }
    check_follow_ups(new, all)
}

/// Why the configuration `name` may not be deleted: the configurations
/// that name it as a follow-up (`None`: nothing stops it).
pub fn delete_refused(name: &str, all: &[TaskRecord]) -> Option<String> {
    let by = followed_up_by(name, all);
    (!by.is_empty()).then(|| {
        format!(
            "'{name}' is a follow-up of {}: remove it there first (--on-failure / \
             --on-success, or `task edit NAME --no-follow-ups`)",
            quoted(&by)
        )
    })
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configurations (other than `name` itself) that name `name` as a
/// follow-up: it may not be deleted or renamed while they do.
pub fn followed_up_by(name: &str, all: &[TaskRecord]) -> Vec<String> {
    all.iter()
        .filter(|t| t.config.name != name)
        .filter(|t| {
            t.config
                .on_failure
                .iter()
                .chain(&t.config.on_success)
                .any(|n| n == name)
        })
        .map(|t| t.config.name.clone())
        .collect()
}

/// Fixes the jitter seed when a jitter is set (from the name then), so
/// later renames keep the slots where they are.
fn settle_seed(config: &mut TaskConfig) {
    if config.jitter.is_some() && config.jitter_seed.is_none() {
        config.jitter_seed = Some(config.seed());
    }
}

/// Checks what decides where its slots fall beyond the schedule: a jitter
/// fits between two of its fire times (else slots would change order),
/// and an active window ends after it starts.
pub fn check_timing(config: &TaskConfig, now: DateTime<Utc>) -> Result<(), FieldError> {
    if let Some(jitter) = config.jitter {
        if jitter < Duration::from_millis(1) {
            return Err(FieldError::new(
                Field::Jitter,
                "must be at least 1ms (0s removes it)",
            ));
        }
        let Some(gap) = crate::model::timing::shortest_gap(&config.schedule, now) else {
            return Err(FieldError::new(
                Field::Jitter,
                "only spreads a repeating schedule; a one-off runs at its time",
            ));
        };
        if chrono::TimeDelta::from_std(jitter).is_ok_and(|j| j > gap) || gap.to_std().is_err() {
            return Err(FieldError::new(
                Field::Jitter,
                format!(
                    "{} is longer than the schedule's shortest gap between runs ({}): \
                     its slots would change order; use at most {}",
                    humantime::format_duration(jitter),
                    humantime::format_duration(gap.to_std().unwrap_or_default()),
                    humantime::format_duration(gap.to_std().unwrap_or_default()),
                ),
            ));
        }
    }
    if let (Some(start), Some(until)) = (config.start, config.until)
        && until <= start
    {
        return Err(FieldError::new(
            Field::Until,
            format!("{until} is not after the window's start ({start})"),
        ));
    }
    Ok(())
}

/// Configuration names are what operators type and URLs carry: printable,
/// not padded, of a sane length.
pub fn check_name(name: &str) -> Result<(), FieldError> {
    let problem = if name.trim().is_empty() {
        Some("is empty: give the configuration a name, e.g. \"Nightly cleanup\"".to_owned())
    } else if name.trim() != name {
        Some(format!("'{name}' starts or ends with spaces"))
    } else if name.chars().count() > 200 {
        Some(format!(
            "is {} characters long; the limit is 200",
            name.chars().count()
        ))
    } else {
        name.chars()
            .find(|c| c.is_control() || *c == '/')
            .map(|c| format!("contains {c:?}; names are printable text without '/'"))
    };
    problem.map_or(Ok(()), |m| Err(FieldError::new(Field::Name, m)))
}

/// Role names are what `serve --role` and a configuration's required roles
/// share: short words an operator types, compared exactly.
pub fn check_role(role: &str) -> Result<(), String> {
    if role.is_empty() || role.len() > 64 {
        return Err(format!(
            "'{role}' is not a role: use 1 to 64 characters, e.g. edit"
        ));
    }
    match role
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "'{role}' contains {c:?}; a role is letters, digits, '-', '_' or '.', e.g. edit"
        )),
        None => Ok(()),
    }
}

/// Implementation identifiers follow the rule components' own identifiers
/// obey, so a configuration can only name something a component could be.
pub fn check_implementation(identifier: &str) -> Result<(), FieldError> {
    crate::model::validate_identifier(identifier)
        .map_err(|m| FieldError::new(Field::Implementation, m))
}

/// A configuration from the operator's input, checked field by field.
pub fn build_config(
    name: &str,
    implementation: &str,
    schedule: &ScheduleSpec,
    config: &ConfigSpec,
    enabled: bool,
    now: DateTime<Utc>,
) -> Result<TaskConfig, FieldError> {
    check_name(name)?;
    check_implementation(implementation)?;
    let Some(schedule) = schedule.to_schedule(now)? else {
        return Err(FieldError::new(
            Field::Schedule,
            "say when it runs: every, cron, at or run_on",
        ));
    };
    let mut task = TaskConfig::new(name, implementation, schedule);
    task.enabled = enabled;
    config.apply(&mut task)?;
    settle_seed(&mut task);
    Ok(task)
}

/// The first fire time of a configuration that starts now, its timing
/// checked; one with none (a one-off in the past, a window that has
/// ended) is an error, not a configuration that silently never runs.
pub fn first_run_checked(
    config: &TaskConfig,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, FieldError> {
    check_timing(config, now)?;
    let schedule = &config.schedule;
    match first_run(config, now) {
        Some(next) => Ok(Some(next)),
        None if first_run(
            &TaskConfig {
                until: None,
                ..config.clone()
            },
            now,
        )
        .is_some() =>
        {
            Err(FieldError::new(
                Field::Until,
                format!(
                    "'{schedule}' would never run: its active window ends at {} before its \
                     next slot",
                    config.until.map_or_else(String::new, |u| u.to_string())
                ),
            ))
        }
        None => Err(FieldError::new(
            match schedule {
                Schedule::RunOn { .. } => Field::RunOn,
                _ => Field::At,
            },
            format!("'{schedule}' would never run: that time is in the past"),
        )),
    }
}

/// A new configuration from the operator's input, and its first fire time.
pub fn new_config(
    name: &str,
    implementation: &str,
    schedule: &ScheduleSpec,
    config: &ConfigSpec,
    enabled: bool,
    now: DateTime<Utc>,
) -> Result<(TaskConfig, Option<DateTime<Utc>>), FieldError> {
    let task = build_config(name, implementation, schedule, config, enabled, now)?;
    let next = first_run_checked(&task, now)?;
    Ok((task, next))
}

/// `task` changed to `new`: the configuration to store and its next fire
/// time. A schedule given again unchanged keeps its grid and next run (an
/// interval is not restarted); a new schedule starts from now, and so do a
/// new jitter or window (and a rename under a jitter, whose offset comes
/// from the name), and enabling (slots that passed while it was disabled
/// are not runs that were missed).
pub fn change(
    task: &TaskRecord,
    mut new: TaskConfig,
    now: DateTime<Utc>,
) -> Result<(TaskConfig, Option<DateTime<Utc>>), FieldError> {
    let old = &task.config;
    let same = same_schedule(&old.schedule, &new.schedule);
    if same {
        new.schedule = old.schedule.clone();
    }
    // Once fixed, a seed stays (a replacement from the API, built afresh
    // under a new name, would otherwise take that name's).
    new.jitter_seed = old.jitter_seed.or(new.jitter_seed);
    // A pause (who, when, why) lasts while it stays disabled.
    if new.enabled {
        new.paused = None;
    } else if new.paused.is_none() {
        new.paused = old.paused.clone();
    }
    settle_seed(&mut new);
    let same_times = same
        && old.fire_times().offset() == new.fire_times().offset()
        && old.start == new.start
        && old.until == new.until;
    let next = if !same_times {
        first_run_checked(&new, now)?
    } else if new.enabled && !old.enabled {
        first_run(&new, now)
    } else {
        task.next_run_at
    };
    Ok((new, next))
}

/// The first fire time of a configuration that starts now: intervals wait
/// one interval, everything else takes its first time from now on (both
/// shifted by its jitter, within its active window).
pub fn first_run(config: &TaskConfig, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let times = config.fire_times();
    match config.schedule {
        Schedule::Every { .. } | Schedule::Cron { .. } => times.next_after(now),
        _ => times.first_at_or_after(now),
    }
}

/// Whether `new` describes the same fire times as `old`: an interval given
/// again keeps its grid (and so its next run) rather than restarting it.
pub fn same_schedule(old: &Schedule, new: &Schedule) -> bool {
    match (old, new) {
        (Schedule::Every { interval: a, .. }, Schedule::Every { interval: b, .. }) => a == b,
        _ => old == new,
    }
}

/// Up to `n` fire times of `task` from its next one on (none while disabled).
pub fn upcoming(task: &TaskRecord, n: usize) -> Vec<DateTime<Utc>> {
    let from = task
        .next_run_at
        .map(|n| n - chrono::TimeDelta::milliseconds(1));
    match (task.config.enabled, from) {
        (true, Some(from)) => task.config.fire_times().upcoming(from, n),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-01T10:00:00.400Z".parse().unwrap()
    }

    #[test]
    fn parses_values() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
        assert_eq!(parse_size("64MiB").unwrap(), 64 * 1024 * 1024);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_count("10_000").unwrap(), 10_000);
        assert!(parse_time("tomorrow").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn roles_are_checked_deduplicated_and_replace_the_old_ones() {
        let schedule = Schedule::every(Duration::from_secs(10), now()).unwrap();
        let mut config = TaskConfig::new("t", "Acme.T", schedule);
        let spec = ConfigSpec {
            roles: Some(vec!["edit".into(), "batch.eu-1".into(), "edit".into()]),
            ..Default::default()
        };
        spec.apply(&mut config).unwrap();
        assert_eq!(config.roles, ["batch.eu-1", "edit"]);
        assert_eq!(config.missing_roles(&["edit".into()]), ["batch.eu-1"]);
        assert!(
            config
                .missing_roles(&["edit".into(), "batch.eu-1".into(), "x".into()])
                .is_empty()
        );
        // Not given: kept; given empty: any instance.
        ConfigSpec::default().apply(&mut config).unwrap();
        assert_eq!(config.roles.len(), 2);
        let clear = ConfigSpec {
            roles: Some(Vec::new()),
            ..Default::default()
        };
        clear.apply(&mut config).unwrap();
        assert!(config.roles.is_empty());
        for bad in ["", "edit server", "ed/it", &"r".repeat(65)] {
            let spec = ConfigSpec {
                roles: Some(vec![bad.to_owned()]),
                ..Default::default()
            };
            let e = spec.apply(&mut config).unwrap_err();
            assert_eq!(e.field, Field::Roles, "{bad}");
            assert_eq!(e.field.flag(), "--require-role");
        }
    }

    #[test]
    fn one_schedule_kind_at_a_time() {
        let spec = ScheduleSpec {
            every: Some("10s".into()),
            cron: Some("* * * * *".into()),
            ..Default::default()
        };
        let e = spec.to_schedule(now()).unwrap_err();
        assert_eq!(e.field, Field::Schedule);
        assert!(e.message.contains("every and cron"), "{}", e.message);
        let spec = ScheduleSpec {
            every: Some("10s".into()),
            interval_seconds: Some(5),
            ..Default::default()
        };
        assert_eq!(
            spec.to_schedule(now()).unwrap_err().field,
            Field::IntervalSeconds
        );
        assert!(
            ScheduleSpec::default()
                .to_schedule(now())
                .unwrap()
                .is_none()
        );
    }

    fn every(text: &str) -> ScheduleSpec {
        ScheduleSpec {
            every: Some(text.into()),
            ..Default::default()
        }
    }

    fn timing(jitter: Option<&str>, start: Option<&str>, until: Option<&str>) -> ConfigSpec {
        ConfigSpec {
            jitter: jitter.map(|j| Some(parse_duration(j).unwrap())),
            start: start.map(|t| Some(parse_time(t).unwrap())),
            until: until.map(|t| Some(parse_time(t).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn a_jitter_shifts_the_first_run_and_must_fit_between_runs() {
        let (config, next) = new_config(
            "j",
            "A.B",
            &every("1h"),
            &timing(Some("10m"), None, None),
            true,
            now(),
        )
        .unwrap();
        let next = next.unwrap();
        let offset = config.fire_times().offset();
        assert!(offset < chrono::TimeDelta::minutes(10));
        let grid: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        assert!(next > now() && next <= now() + chrono::TimeDelta::hours(1));
        assert_eq!((next - offset - grid).num_milliseconds() % 3_600_000, 0);
        assert_eq!(
            upcoming_of(&config, next)[1],
            next + chrono::TimeDelta::hours(1)
        );

        let err = new_config(
            "j",
            "A.B",
            &every("10s"),
            &timing(Some("1m"), None, None),
            true,
            now(),
        )
        .unwrap_err();
        assert_eq!(err.field, Field::Jitter);
        assert!(err.message.contains("shortest gap"), "{}", err.message);
        let at = ScheduleSpec {
            at: Some("2026-03-02T00:00:00Z".into()),
            ..Default::default()
        };
        let err = new_config(
            "j",
            "A.B",
            &at,
            &timing(Some("1m"), None, None),
            true,
            now(),
        )
        .unwrap_err();
        assert_eq!(err.field, Field::Jitter);
        // 0s removes it.
        let (config, _) = new_config(
            "j",
            "A.B",
            &every("1h"),
            &timing(Some("0s"), None, None),
            true,
            now(),
        )
        .unwrap();
        assert_eq!(config.jitter, None);
    }

    fn record(config: &TaskConfig, next: Option<DateTime<Utc>>) -> TaskRecord {
        TaskRecord {
            id: 1,
            next_run_at: next,
            ..TaskRecord::unsaved(config.clone(), now())
        }
    }

    #[test]
    fn a_renamed_configuration_keeps_its_jittered_slots() {
        let jitter = timing(Some("30m"), None, None);
        let (config, next) =
            new_config("before", "A.B", &every("1h"), &jitter, true, now()).unwrap();
        let task = record(&config, next);
        let mut renamed = config.clone();
        renamed.name = "after".into();
        let (renamed, kept) = change(&task, renamed, now()).unwrap();
        assert_eq!(kept, next);
        // Built afresh under the new name (as the API's replacement is).
        let (fresh, _) = new_config("after", "A.B", &every("1h"), &jitter, true, now()).unwrap();
        assert_ne!(
            fresh.jitter_seed, config.jitter_seed,
            "names with one seed prove little"
        );
        let (fresh, kept) = change(&task, fresh, now()).unwrap();
        assert_eq!((kept, fresh.jitter_seed), (next, renamed.jitter_seed));
    }

    fn upcoming_of(config: &TaskConfig, next: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        config
            .fire_times()
            .upcoming(next - chrono::TimeDelta::milliseconds(1), 2)
    }

    #[test]
    fn an_active_window_bounds_the_runs_and_must_end_after_it_starts() {
        let window = timing(
            None,
            Some("2026-03-05T00:00:00Z"),
            Some("2026-03-06T00:00:00Z"),
        );
        let (_, next) = new_config("w", "A.B", &every("1h"), &window, true, now()).unwrap();
        assert_eq!(next, Some("2026-03-05T00:00:00Z".parse().unwrap()));
        let backwards = timing(
            None,
            Some("2026-03-06T00:00:00Z"),
            Some("2026-03-05T00:00:00Z"),
        );
        let err = new_config("w", "A.B", &every("1h"), &backwards, true, now()).unwrap_err();
        assert_eq!(err.field, Field::Until);
        let ended = timing(None, None, Some("2026-03-01T09:00:00Z"));
        let err = new_config("w", "A.B", &every("1h"), &ended, true, now()).unwrap_err();
        assert_eq!(err.field, Field::Until);
        assert!(err.message.contains("would never run"), "{}", err.message);
    }

    #[test]
    fn a_new_jitter_or_window_restarts_the_schedule_from_now() {
        let (config, next) = new_config(
            "r",
            "A.B",
            &every("1h"),
            &ConfigSpec::default(),
            true,
            now(),
        )
        .unwrap();
        let task = record(&config, next);
        let later = now() + chrono::TimeDelta::hours(5);
        let mut edited = config.clone();
        timing(None, Some("2026-03-09T00:00:00Z"), None)
            .apply(&mut edited)
            .unwrap();
        let (_, moved) = change(&task, edited, later).unwrap();
        assert_eq!(moved, Some("2026-03-09T00:00:00Z".parse().unwrap()));
        // Unchanged: the next run stays.
        let (_, kept) = change(&task, config, later).unwrap();
        assert_eq!(kept, next);
    }

    #[test]
    fn follow_ups_must_exist_and_never_lead_back() {
        let make = |name: &str, on_failure: &[&str]| {
            let (mut config, _) = new_config(
                name,
                "A.B",
                &every("1h"),
                &ConfigSpec::default(),
                true,
                now(),
            )
            .unwrap();
            config.on_failure = on_failure.iter().map(|s| s.to_string()).collect();
            config
        };
        let all: Vec<TaskRecord> = [make("Alert", &[]), make("B", &["C"]), make("C", &["A"])]
            .iter()
            .map(|c| record(c, None))
            .collect();
        assert_eq!(
            check_with_others(None, &make("A", &["Alert"]), &all),
            Ok(())
        );
        let unknown = check_with_others(None, &make("A", &["Nope"]), &all).unwrap_err();
        assert_eq!(unknown.field, Field::OnFailure);
        assert!(unknown.message.contains("no configuration named 'Nope'"));
        let itself = check_with_others(None, &make("A", &["A"]), &all).unwrap_err();
        assert!(
            itself.message.contains("its own follow-up"),
            "{}",
            itself.message
        );
        let cycle = check_with_others(None, &make("A", &["Alert", "B"]), &all).unwrap_err();
        assert_eq!(cycle.field, Field::OnFailure);
        assert!(cycle.message.contains("A → B → C → A"), "{}", cycle.message);
        // C follows up to A: A may not be renamed or deleted while it does.
        let a = make("A", &[]);
        let mut all = all;
        all.push(record(&a, None));
        let renamed = TaskConfig {
            name: "A2".into(),
            ..a.clone()
        };
        assert_eq!(
            check_with_others(Some(&a), &renamed, &all)
                .unwrap_err()
                .field,
            Field::Name
        );
        assert!(delete_refused("A", &all).unwrap().contains("'C'"));
        assert_eq!(delete_refused("Alert", &all), None);
    }

    #[test]
    fn a_backfill_covers_past_slots_only_and_not_too_many() {
        let (config, next) = new_config(
            "b",
            "A.B",
            &every("1h"),
            &ConfigSpec::default(),
            true,
            now(),
        )
        .unwrap();
        let task = record(&config, next);
        let t = |s: &str| -> DateTime<Utc> { s.parse().unwrap() };
        let later = t("2026-03-02T00:00:00Z");
        let b = new_backfill(
            &task,
            t("2026-03-01T10:30:00Z"),
            t("2026-03-01T14:00:00Z"),
            None,
            "ana",
            later,
        )
        .unwrap();
        // 11:00, 12:00, 13:00 (the window's end is not in it).
        assert_eq!(
            (b.first_slot, b.total, b.concurrency),
            (t("2026-03-01T11:00:00Z"), 3, 1)
        );
        let err = |from: &str, to: &str, c: Option<u32>| {
            new_backfill(&task, t(from), t(to), c, "ana", later)
                .unwrap_err()
                .field
        };
        assert_eq!(
            err("2026-03-01T12:00:00Z", "2026-03-01T11:00:00Z", None),
            Field::BackfillTo
        );
        assert_eq!(
            err("2026-03-01T12:00:00Z", "2026-03-03T11:00:00Z", None),
            Field::BackfillTo
        );
        assert_eq!(
            err("2026-03-01T12:10:00Z", "2026-03-01T12:50:00Z", None),
            Field::BackfillFrom
        );
        assert_eq!(
            err("2026-03-01T11:00:00Z", "2026-03-01T14:00:00Z", Some(0)),
            Field::Concurrency
        );
        let (fast, next) = new_config(
            "f",
            "A.B",
            &every("1s"),
            &ConfigSpec::default(),
            true,
            now(),
        )
        .unwrap();
        let too_many = new_backfill(
            &record(&fast, next),
            t("2026-03-01T10:00:00Z"),
            t("2026-03-04T00:00:00Z"),
            None,
            "ana",
            t("2026-03-05T00:00:00Z"),
        )
        .unwrap_err();
        assert_eq!(too_many.field, Field::BackfillFrom);
        assert!(
            too_many.message.contains("more than 100000"),
            "{}",
            too_many.message
        );
    }

    #[test]
    fn errors_name_the_field_at_fault() {
        let cases = [
            (
                ScheduleSpec {
                    every: Some("0s".into()),
                    ..Default::default()
                },
                Field::Every,
            ),
            (
                ScheduleSpec {
                    cron: Some("61 * * * *".into()),
                    ..Default::default()
                },
                Field::Cron,
            ),
            (
                ScheduleSpec {
                    cron: Some("0 2 * * *".into()),
                    timezone: Some("Mars/Olympus".into()),
                    ..Default::default()
                },
                Field::Timezone,
            ),
            (
                ScheduleSpec {
                    at: Some("noon".into()),
                    ..Default::default()
                },
                Field::At,
            ),
        ];
        for (spec, field) in cases {
            assert_eq!(
                spec.to_schedule(now()).unwrap_err().field,
                field,
                "{spec:?}"
            );
        }
        let every = ScheduleSpec {
            every: Some("10s".into()),
            ..Default::default()
        };
        let bad = |config: ConfigSpec| {
            new_config("t", "Acme.T", &every, &config, true, now())
                .unwrap_err()
                .field
        };
        assert_eq!(
            bad(ConfigSpec {
                timeout: Some(Duration::ZERO),
                ..Default::default()
            }),
            Field::Timeout
        );
        assert_eq!(
            bad(ConfigSpec {
                memory: Some(1000),
                ..Default::default()
            }),
            Field::Memory
        );
        assert_eq!(
            bad(ConfigSpec {
                grant_dirs: vec!["/definitely/not/here:/data".parse().unwrap()],
                ..Default::default()
            }),
            Field::Grants
        );
        assert_eq!(
            bad(ConfigSpec {
                retries: Some(1000),
                ..Default::default()
            }),
            Field::Retries
        );
        let e = new_config("", "Acme.T", &every, &ConfigSpec::default(), true, now()).unwrap_err();
        assert_eq!(e.field, Field::Name);
        let e = new_config("t", "Acme T", &every, &ConfigSpec::default(), true, now()).unwrap_err();
        assert_eq!(e.field, Field::Implementation);
        let past = ScheduleSpec {
            at: Some("2020-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        let e = new_config("t", "Acme.T", &past, &ConfigSpec::default(), true, now()).unwrap_err();
        assert_eq!(e.field, Field::At);
        assert!(e.message.contains("never run"));
    }

    #[test]
    fn a_new_configuration_starts_on_a_whole_second() {
        let every = ScheduleSpec {
            every: Some("10s".into()),
            ..Default::default()
        };
        let (config, next) =
            new_config("t", "Acme.T", &every, &ConfigSpec::default(), true, now()).unwrap();
        assert_eq!(next, Some("2026-03-01T10:00:10Z".parse().unwrap()));
        assert!(config.enabled);
    }

    #[test]
    fn the_next_run_moves_only_when_the_schedule_or_enabling_says_so() {
        let every = ScheduleSpec {
            every: Some("10s".into()),
            ..Default::default()
        };
        let (config, next) =
            new_config("t", "Acme.T", &every, &ConfigSpec::default(), false, now()).unwrap();
        let task = TaskRecord {
            id: 1,
            next_run_at: next,
            ..TaskRecord::unsaved(config.clone(), now())
        };
        let later = now() + chrono::TimeDelta::seconds(95);
        // The same interval given again: same grid, same next run.
        let mut same = config.clone();
        same.schedule = every.to_schedule(later).unwrap().unwrap();
        let (kept, kept_next) = change(&task, same, later).unwrap();
        assert_eq!(kept.schedule, config.schedule);
        assert_eq!(kept_next, next);
        // Enabling restarts from now.
        let mut enabled = config.clone();
        enabled.enabled = true;
        assert!(change(&task, enabled, later).unwrap().1.unwrap() > later);
        // A new interval restarts from now.
        let mut other = config.clone();
        other.schedule = ScheduleSpec {
            every: Some("1m".into()),
            ..Default::default()
        }
        .to_schedule(later)
        .unwrap()
        .unwrap();
        assert_eq!(
            change(&task, other, later).unwrap().1,
            Some("2026-03-01T10:02:35Z".parse().unwrap())
        );
        // A new one-off in the past is refused; the same one kept is not.
        let mut past = config;
        past.schedule = Schedule::at("2020-01-01T00:00:00Z".parse().unwrap());
        assert_eq!(
            change(&task, past.clone(), later).unwrap_err().field,
            Field::At
        );
        let task = TaskRecord {
            config: past.clone(),
            next_run_at: None,
            ..task
        };
        assert_eq!(change(&task, past, later).unwrap().1, None);
    }

    #[test]
    fn an_unknown_identifier_names_the_nearest_loaded_ones() {
        let loaded: Vec<String> = ["Acme.HelloScheduledTask", "Acme.FileCleanup", "Other.Thing"]
            .map(String::from)
            .to_vec();
        assert_eq!(unknown_identifier("Acme.FileCleanup", &loaded), None);
        let typo = unknown_identifier("Acme.HeloScheduledTask", &loaded).unwrap();
        assert!(
            typo.ends_with("did you mean 'Acme.HelloScheduledTask'?"),
            "{typo}"
        );
        let prefix = unknown_identifier("Acne.FileCleanup", &loaded).unwrap();
        assert!(prefix.contains("'Acme.FileCleanup'"), "{prefix}");
        let far = unknown_identifier("Zeta.Quux", &loaded).unwrap();
        assert!(
            far.ends_with("(loaded: Acme.HelloScheduledTask, Acme.FileCleanup, Other.Thing)"),
            "{far}"
        );
    }
}

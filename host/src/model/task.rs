//! Task configurations: what an operator sets (schedule, limits, grants,
//! roles, retries) and the record the store keeps with its scheduling state.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, IntoStaticStr, VariantNames};

use super::grants::Grants;
use super::limits::RunLimits;
use super::run::RunState;
use super::schedule::Schedule;

/// What to do with slots that passed while no instance was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "lowercase")]
pub enum MisfirePolicy {
    /// Record the missed slots as skipped and go on with the next future one.
    #[default]
    Skip,
    /// Run once now for all missed slots, then go on.
    Once,
    /// Run every missed slot within the catch-up window, one after another.
    All,
}

/// What a slot does when it comes due while the configuration is still
/// running (Kubernetes calls it `concurrencyPolicy`, Temporal an overlap
/// policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, IntoStaticStr, VariantNames)]
#[strum(serialize_all = "lowercase")]
pub enum OverlapPolicy {
    /// Record the slot as skipped: runs never overlap.
    #[default]
    Skip,
    /// Start it beside the running ones, up to `max_concurrent` at once;
    /// beyond that, skip it.
    Allow,
    /// Stop the running run (its cancellation, grace and hard stop) and
    /// start the slot's run when it has ended.
    Replace,
    /// Keep the slot waiting, and start it when the running run ends; at
    /// most one slot waits, later ones are skipped.
    Queue,
}

/// Who paused (disabled) a configuration, when, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    pub by: String,
    pub at: DateTime<Utc>,
    /// The operator's note, e.g. "waiting for the vendor's fix".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Runs at once under `allow` when the configuration does not say.
pub const DEFAULT_MAX_CONCURRENT: u32 = 10;

/// A task configuration as the operator sets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskConfig {
    pub name: String,
    /// The identifier of the component that implements it.
    pub implementation: String,
    pub enabled: bool,
    pub schedule: Schedule,
    #[serde(default)]
    pub misfire: MisfirePolicy,
    /// How far back `misfire = all` catches up.
    #[serde(with = "super::humantime_serde", default = "default_catch_up")]
    pub catch_up_window: Duration,
    /// Retries after a failed or stopped run (0 = none).
    #[serde(default)]
    pub retries: u32,
    /// Delay before the first retry; doubles for each further one.
    #[serde(with = "super::humantime_serde", default = "default_backoff")]
    pub retry_backoff: Duration,
    #[serde(default)]
    pub limits: RunLimits,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub grants: Grants,
    /// Roles an instance needs (all of them) to run this configuration, e.g.
    /// `edit` for "only on the edit server"; empty: any instance.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Finished runs other than failures kept for it (succeeded, cancelled,
    /// skipped); `None`: `serve --keep-runs`, counted over all its runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_runs: Option<u32>,
    /// Failed, stopped and abandoned runs kept for it, apart from the
    /// others, so successes do not push failures out of the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_failed: Option<u32>,
    /// What a slot does when the configuration is still running.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_overlap: OverlapPolicy,
    /// Runs at once under [`OverlapPolicy::Allow`]; `None`:
    /// [`DEFAULT_MAX_CONCURRENT`]. Only meaningful with `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Shifts every slot by an offset in `[0, jitter)` taken from the name
    /// (see `model::timing`), so configurations with one schedule do not
    /// all start at once.
    #[serde(
        default,
        with = "super::humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<Duration>,
    /// What its jitter offset is taken from, fixed when a jitter is first
    /// set (from the name then), so a rename does not move its slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_seed: Option<u64>,
    /// Configurations to run once when a run of this one has failed
    /// (failed, stopped or abandoned, no retry left), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
    /// ... and when one has succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<String>,
    /// Runs once on every instance when it starts (web farms: caches to
    /// warm, files to lay out), besides its schedule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_start: bool,
    /// Who disabled it, when and why, while it is disabled that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    /// The schedule is active from this time on (no slot before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    /// ... and until this time (no slot at or after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn default_catch_up() -> Duration {
    Duration::from_secs(3600)
}

fn default_backoff() -> Duration {
    Duration::from_secs(10)
}

impl TaskConfig {
    /// A configuration with the defaults for everything but the essentials.
    pub fn new(name: &str, implementation: &str, schedule: Schedule) -> Self {
        TaskConfig {
            name: name.to_owned(),
            implementation: implementation.to_owned(),
            enabled: true,
            schedule,
            misfire: MisfirePolicy::Skip,
            catch_up_window: default_catch_up(),
            retries: 0,
            retry_backoff: default_backoff(),
            limits: RunLimits::default(),
            properties: BTreeMap::new(),
            grants: Grants::default(),
            roles: Vec::new(),
            keep_runs: None,
            keep_failed: None,
            on_overlap: OverlapPolicy::Skip,
            max_concurrent: None,
            jitter: None,
            jitter_seed: None,
            on_failure: Vec::new(),
            on_success: Vec::new(),
            paused: None,
            on_start: false,
            start: None,
            until: None,
        }
    }

    /// How many of its runs may go on at once: `max_concurrent` under
    /// `allow`, else one.
    pub fn concurrency_limit(&self) -> u32 {
        match self.on_overlap {
            OverlapPolicy::Allow => self.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT),
            _ => 1,
        }
    }
}

impl TaskConfig {
    /// The configuration's required roles that an instance with `roles` lacks.
    pub fn missing_roles<'a>(&'a self, roles: &[String]) -> Vec<&'a str> {
        missing_roles(&self.roles, roles)
    }
}

/// The roles of `required` that an instance with `roles` lacks.
pub fn missing_roles<'a>(required: &'a [String], roles: &[String]) -> Vec<&'a str> {
    required
        .iter()
        .filter(|r| !roles.contains(r))
        .map(String::as_str)
        .collect()
}

impl TaskRecord {
    /// `config` as a record not stored yet: no id, no runs, made `at`
    /// (what checks over a set of configurations, and tests, look at).
    pub fn unsaved(config: TaskConfig, at: DateTime<Utc>) -> TaskRecord {
        TaskRecord {
            id: 0,
            config,
            created_at: at,
            updated_at: at,
            next_run_at: None,
            last_run_at: None,
            last_outcome: None,
            last_message: None,
            run_count: 0,
            skipped_count: 0,
            failed_count: 0,
            running_run_id: None,
            running_count: 0,
            retry_at: None,
            retry_attempt: 0,
        }
    }

    /// Whether one more run may start now: fewer going on than its
    /// concurrency limit.
    pub fn has_room(&self) -> bool {
        self.running_count < self.config.concurrency_limit()
    }
}

/// A configuration with its scheduling state and counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    pub id: i64,
    #[serde(flatten)]
    pub config: TaskConfig,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<RunState>,
    pub last_message: Option<String>,
    pub run_count: u64,
    pub skipped_count: u64,
    pub failed_count: u64,
    /// The newest of its runs going on (claimed ahead, running), if any.
    pub running_run_id: Option<String>,
    /// How many of its runs are going on (more than one only under `allow`).
    pub running_count: u32,
    pub retry_at: Option<DateTime<Utc>>,
    pub retry_attempt: u32,
}

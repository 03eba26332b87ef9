//! `/api/tasks`: task configurations. List, create, read, replace, delete,
//! enable / disable, run now, their next fire times, and a preview that
//! validates an input and shows its next fire times without saving it (the
//! dashboard's form calls it as the operator types). Input goes through the
//! same checks as `cronwerk task add/edit` (crate::spec).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::model::Pause;
use crate::model::audit::{self, AuditKind, NewAudit};
use crate::model::{
    DirGrant, HttpGrant, MisfirePolicy, OverlapPolicy, RunState, Schedule, TaskConfig, TaskRecord,
    names,
};
use crate::scheduler::ManualStart;
use crate::spec::{self, ConfigSpec, Field, FieldError, ScheduleSpec};
use crate::store::Claim;
use axum::Extension;

/// Fire times shown with each configuration.
const UPCOMING: usize = 5;

/// When a configuration runs: exactly one of `every`, `cron`, `at` or
/// `run_on`. The same shape is returned, so a task read can be sent back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// An interval such as `30s`, `5m`, `1h 30m` (at least 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "10s")]
    pub every: Option<String>,
    /// A cron expression: 6 fields with seconds (`0 30 2 * * *`) or 5 without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA time zone of `cron` (default UTC), e.g. `Europe/Prague`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Once, at this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// First run at this RFC 3339 time; with `interval_seconds`, then every N seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// With `every`: the RFC 3339 time its slots count from (default: when
    /// it is created; a replace keeps the one it had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
}

impl ScheduleBody {
    fn spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            every: self.every.clone(),
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            at: self.at.clone(),
            run_on: self.run_on.clone(),
            interval_seconds: self.interval_seconds,
            anchor: self.anchor.clone(),
        }
    }

    fn of(schedule: &Schedule) -> Self {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        match schedule {
            Schedule::Every { interval, anchor } => ScheduleBody {
                every: Some(humantime::format_duration(*interval).to_string()),
                anchor: Some(time(anchor)),
                ..Default::default()
            },
            Schedule::Cron {
                expression,
                timezone,
            } => ScheduleBody {
                cron: Some(expression.clone()),
                timezone: Some(timezone.clone()),
                ..Default::default()
            },
            Schedule::At { at } => ScheduleBody {
                at: Some(time(at)),
                ..Default::default()
            },
            Schedule::RunOn {
                run_on,
                interval_seconds,
            } => ScheduleBody {
                run_on: Some(time(run_on)),
                interval_seconds: *interval_seconds,
                ..Default::default()
            },
        }
    }
}

/// A host directory a task may see.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// An absolute path to an existing directory of the host.
    pub host_path: String,
    /// Where the task sees it (default: the same path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_path: Option<String>,
    #[serde(default)]
    pub read_only: bool,
}

/// A size: bytes, or text such as `64MiB`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SizeBody {
    Bytes(u64),
    Text(String),
}

/// A configuration as the operator writes it (create, or replace whole).
/// The same shape is an entry of a configurations file (`cronwerk apply`,
/// `cronwerk export`), which leaves out what is at its default.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    #[schema(example = "Hello every 10s")]
    pub name: String,
    /// Identifier of the component that implements it.
    #[schema(example = "Acme.HelloScheduledTask")]
    pub implementation: String,
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    pub schedule: ScheduleBody,
    /// Wall-time limit per run, e.g. `30s` (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Fuel per run (about one unit per wasm instruction); default unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Memory limit per run: bytes or e.g. `64MiB` (default 128MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<SizeBody>,
    /// Custom properties the task reads from its run context.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// Host directories the task may see (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<GrantBody>,
    /// Hosts the task may send HTTP requests to, e.g. `api.example.com`,
    /// `*.example.com` or `127.0.0.1:8080` (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_http: Vec<String>,
    /// Roles an instance needs (all of them) to run it, e.g. `edit`; none
    /// (the default): any instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// After downtime: `skip` (default), `once` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire: Option<String>,
    /// How far back `misfire: all` catches up, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<String>,
    /// Retries after a failed or stopped run (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Delay before the first retry, doubling each time (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<String>,
    /// Finished runs kept for it, failures apart (default: the instance's
    /// `--keep-runs`, counted over all its runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_runs: Option<u32>,
    /// Failed, stopped and abandoned runs kept for it, apart from the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_failed: Option<u32>,
    /// When a slot comes while a run still goes on: `skip` (default),
    /// `allow` (side by side, up to `max_concurrent`), `replace` (stop the
    /// running run, then start) or `queue` (one slot waits for it to end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_overlap: Option<String>,
    /// With `on_overlap: allow`: runs at once (default 10, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Shifts every slot by an offset within this (taken from the name, the
    /// same on every instance), e.g. `10m`; at most the schedule's shortest
    /// gap between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// The schedule is active from this time (RFC 3339) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// ... until this time (no slot at or after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Configurations to run once when a run of it fails for good (failed,
    /// stopped or abandoned, no retry left), told about it in their payload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
    /// ... and when one succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<String>,
    /// Also runs once on every instance when it starts (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_start: bool,
}

fn yes() -> bool {
    true
}

/// The directory grants of `c`; `guest_path` left out where it is the host
/// path unless `spelled_out`.
fn grant_bodies(c: &TaskConfig, spelled_out: bool) -> Vec<GrantBody> {
    c.grants
        .dirs
        .iter()
        .map(|g| {
            let host_path = g.host_path.display().to_string();
            GrantBody {
                guest_path: (spelled_out || g.guest_path != host_path)
                    .then(|| g.guest_path.clone()),
                host_path,
                read_only: g.read_only,
            }
        })
        .collect()
}

fn duration(
    field: Field,
    text: &Option<String>,
) -> Result<Option<std::time::Duration>, FieldError> {
    text.as_deref()
        .map(|t| spec::parse_duration(t).map_err(|m| FieldError::new(field, m)))
        .transpose()
}

fn time(field: Field, text: &Option<String>) -> Result<Option<DateTime<Utc>>, FieldError> {
    text.as_deref()
        .map(|t| spec::parse_time(t).map_err(|m| FieldError::new(field, m)))
        .transpose()
}

impl TaskInput {
    fn config_spec(&self) -> Result<ConfigSpec, FieldError> {
        let memory = match &self.memory {
            None => None,
            Some(SizeBody::Bytes(n)) => Some(*n),
            Some(SizeBody::Text(t)) => {
                Some(spec::parse_size(t).map_err(|m| FieldError::new(Field::Memory, m))?)
            }
        };
        let misfire = self
            .misfire
            .as_deref()
            .map(|m| names::parse::<MisfirePolicy>("misfire policy", m))
            .transpose()
            .map_err(|m| FieldError::new(Field::Misfire, m))?;
        let on_overlap = self
            .on_overlap
            .as_deref()
            .map(|m| names::parse::<OverlapPolicy>("overlap policy", m))
            .transpose()
            .map_err(|m| FieldError::new(Field::OnOverlap, m))?;
        let grant_dirs = self
            .grants
            .iter()
            .map(|g| DirGrant {
                host_path: g.host_path.clone().into(),
                guest_path: g.guest_path.clone().unwrap_or_else(|| g.host_path.clone()),
                read_only: g.read_only,
            })
            .collect();
        let allow_http = self
            .allow_http
            .iter()
            .map(|h| h.parse::<HttpGrant>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| FieldError::new(Field::AllowHttp, m))?;
        Ok(ConfigSpec {
            timeout: duration(Field::Timeout, &self.timeout)?,
            fuel: self.fuel,
            memory,
            properties: self
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            grant_dirs,
            allow_http,
            roles: Some(self.roles.clone()),
            misfire,
            catch_up: duration(Field::CatchUp, &self.catch_up)?,
            retries: self.retries,
            retry_backoff: duration(Field::RetryBackoff, &self.retry_backoff)?,
            keep_runs: Some(self.keep_runs),
            keep_failed: Some(self.keep_failed),
            on_overlap,
            max_concurrent: self.max_concurrent,
            jitter: Some(duration(Field::Jitter, &self.jitter)?),
            start: Some(time(Field::Start, &self.start)?),
            until: Some(time(Field::Until, &self.until)?),
            on_failure: Some(self.on_failure.clone()),
            on_success: Some(self.on_success.clone()),
            on_start: Some(self.on_start),
        })
    }

    /// The input that describes `c`, leaving out what is at its default:
    /// sent back, it makes the same configuration (`cronwerk export`).
    pub fn of(c: &TaskConfig) -> TaskInput {
        let default = TaskConfig::new(&c.name, &c.implementation, c.schedule.clone());
        let text = |d: std::time::Duration| humantime::format_duration(d).to_string();
        let changed =
            |d: std::time::Duration, default: std::time::Duration| (d != default).then(|| text(d));
        let memory = c.limits.memory_bytes;
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        TaskInput {
            name: c.name.clone(),
            implementation: c.implementation.clone(),
            enabled: c.enabled,
            schedule: ScheduleBody::of(&c.schedule),
            timeout: changed(c.limits.timeout, default.limits.timeout),
            fuel: c.limits.fuel,
            memory: (memory != default.limits.memory_bytes).then(|| {
                if memory.is_multiple_of(1 << 20) {
                    SizeBody::Text(format!("{}MiB", memory >> 20))
                } else {
                    SizeBody::Bytes(memory)
                }
            }),
            properties: c.properties.clone(),
            grants: grant_bodies(c, false),
            allow_http: c.grants.http_hosts.iter().map(|g| g.to_string()).collect(),
            roles: c.roles.clone(),
            misfire: (c.misfire != default.misfire).then(|| c.misfire.to_string()),
            catch_up: changed(c.catch_up_window, default.catch_up_window),
            retries: (c.retries != default.retries).then_some(c.retries),
            retry_backoff: changed(c.retry_backoff, default.retry_backoff),
            keep_runs: c.keep_runs,
            keep_failed: c.keep_failed,
            on_overlap: (c.on_overlap != default.on_overlap).then(|| c.on_overlap.to_string()),
            max_concurrent: c.max_concurrent,
            jitter: c.jitter.map(text),
            start: c.start.as_ref().map(time),
            until: c.until.as_ref().map(time),
            on_failure: c.on_failure.clone(),
            on_success: c.on_success.clone(),
            on_start: c.on_start,
        }
    }

    /// The configuration this input describes.
    pub(crate) fn to_config(&self, now: DateTime<Utc>) -> Result<TaskConfig, FieldError> {
        spec::build_config(
            &self.name,
            &self.implementation,
            &self.schedule.spec(),
            &self.config_spec()?,
            self.enabled,
            now,
        )
    }

    /// ... as a new configuration, with its first fire time.
    fn to_new(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(TaskConfig, Option<DateTime<Utc>>), FieldError> {
        let config = self.to_config(now)?;
        let next = spec::first_run_checked(&config, now)?;
        Ok((config, next))
    }
}

/// A configuration with its scheduling state and counters.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Task {
    pub id: i64,
    pub name: String,
    pub implementation: String,
    pub enabled: bool,
    pub schedule: ScheduleBody,
    /// The schedule in words, e.g. "every 10s".
    #[schema(example = "every 10s")]
    pub schedule_text: String,
    pub timeout: String,
    pub fuel: Option<u64>,
    /// Memory limit in bytes.
    pub memory: u64,
    pub properties: BTreeMap<String, String>,
    pub grants: Vec<GrantBody>,
    /// Hosts the task may send HTTP requests to.
    pub allow_http: Vec<String>,
    /// Roles an instance needs to run it (empty: any instance).
    pub roles: Vec<String>,
    #[schema(schema_with = super::names::schema::<MisfirePolicy>)]
    pub misfire: MisfirePolicy,
    pub catch_up: String,
    pub retries: u32,
    pub retry_backoff: String,
    /// Finished runs kept for it, failures apart (null: the instance's `--keep-runs`).
    pub keep_runs: Option<u32>,
    /// Failed, stopped and abandoned runs kept for it (null: as `keep_runs`).
    pub keep_failed: Option<u32>,
    #[schema(schema_with = super::names::schema::<OverlapPolicy>)]
    pub on_overlap: OverlapPolicy,
    /// Runs at once under `allow` (null for the other policies).
    pub max_concurrent: Option<u32>,
    /// The spread of its slots (null: none) ...
    pub jitter: Option<String>,
    /// ... and how far this configuration's slots are shifted within it.
    pub jitter_offset: Option<String>,
    /// Its active window (null: unbounded).
    pub start: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Configurations run once when a run of it fails for good / succeeds.
    pub on_failure: Vec<String>,
    pub on_success: Vec<String>,
    /// Runs once on every instance when it starts.
    pub on_start: bool,
    /// While disabled with `task disable` or `POST .../disable`: who did it,
    /// when, and the note they gave.
    pub paused_by: Option<String>,
    pub paused_at: Option<DateTime<Utc>>,
    pub pause_note: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// None once a one-off has run, or while disabled.
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    /// How the last run ended: succeeded, failed, stopped, cancelled, skipped, abandoned.
    #[schema(schema_with = super::names::schema::<RunState>)]
    pub last_outcome: Option<RunState>,
    /// The last result message (empty for a plain success).
    pub last_message: Option<String>,
    pub run_count: u64,
    pub skipped_count: u64,
    pub failed_count: u64,
    /// The newest run in progress, if one is.
    pub running_run_id: Option<String>,
    /// How many of its runs are in progress (more than one only under `allow`).
    pub running_count: u32,
    pub retry_at: Option<DateTime<Utc>>,
    pub retry_attempt: u32,
    /// The next fire times (up to 5; none while disabled).
    pub upcoming: Vec<DateTime<Utc>>,
    /// After a create or replace: what looks wrong but was accepted, e.g.
    /// that no running instance has loaded the implementation (with the
    /// nearest loaded identifiers). `?strict=true` refuses instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Options of a create or replace.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    /// Refuse (400, field `implementation`) an implementation no running
    /// instance has loaded, instead of a warning.
    #[serde(default)]
    pub strict: bool,
}

/// The warning for `implementation` when no running instance has loaded
/// it; an error under `strict`. Silent while no instance reports plugins.
async fn identifier_warnings(
    s: &AppState,
    implementation: &str,
    strict: bool,
) -> ApiResult<Vec<String>> {
    let loaded = spec::loaded_identifiers(&s.store.list_plugins().await?);
    let why = (!loaded.is_empty())
        .then(|| spec::unknown_identifier(implementation, &loaded))
        .flatten();
    match why {
        Some(why) if strict => Err(FieldError::new(Field::Implementation, why).into()),
        Some(why) => Ok(vec![why]),
        None => Ok(Vec::new()),
    }
}

impl From<&TaskRecord> for Task {
    fn from(t: &TaskRecord) -> Self {
        let c = &t.config;
        let text = |d: std::time::Duration| humantime::format_duration(d).to_string();
        Task {
            id: t.id,
            name: c.name.clone(),
            implementation: c.implementation.clone(),
            enabled: c.enabled,
            schedule: ScheduleBody::of(&c.schedule),
            schedule_text: c.schedule.describe(),
            timeout: text(c.limits.timeout),
            fuel: c.limits.fuel,
            memory: c.limits.memory_bytes,
            properties: c.properties.clone(),
            grants: grant_bodies(c, true),
            allow_http: c.grants.http_hosts.iter().map(|g| g.to_string()).collect(),
            roles: c.roles.clone(),
            misfire: c.misfire,
            catch_up: text(c.catch_up_window),
            retries: c.retries,
            retry_backoff: text(c.retry_backoff),
            keep_runs: c.keep_runs,
            keep_failed: c.keep_failed,
            on_overlap: c.on_overlap,
            max_concurrent: (c.on_overlap == OverlapPolicy::Allow).then(|| c.concurrency_limit()),
            jitter: c.jitter.map(text),
            jitter_offset: c
                .jitter
                .map(|_| text(c.fire_times().offset().to_std().unwrap_or_default())),
            start: c.start,
            until: c.until,
            on_failure: c.on_failure.clone(),
            on_success: c.on_success.clone(),
            on_start: c.on_start,
            paused_by: c.paused.as_ref().map(|p| p.by.clone()),
            paused_at: c.paused.as_ref().map(|p| p.at),
            pause_note: c.paused.as_ref().and_then(|p| p.note.clone()),
            created_at: t.created_at,
            updated_at: t.updated_at,
            next_run_at: if c.enabled { t.next_run_at } else { None },
            last_run_at: t.last_run_at,
            last_outcome: t.last_outcome,
            last_message: t.last_message.clone(),
            run_count: t.run_count,
            skipped_count: t.skipped_count,
            failed_count: t.failed_count,
            running_run_id: t.running_run_id.clone(),
            running_count: t.running_count,
            retry_at: t.retry_at,
            retry_attempt: t.retry_attempt,
            upcoming: spec::upcoming(t, UPCOMING),
            warnings: Vec::new(),
        }
    }
}

#[utoipa::path(
    get, path = "/api/tasks", tag = "tasks",
    responses((status = 200, description = "Every configuration, by name", body = [Task]))
)]
pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<Task>>> {
    let tasks = s.store.list_tasks().await?;
    Ok(Json(tasks.iter().map(Task::from).collect()))
}

#[utoipa::path(
    post, path = "/api/tasks", tag = "tasks", request_body = TaskInput, params(WriteQuery),
    security(("token" = [])),
    responses(
        (status = 201, description = "Created", body = Task),
        (status = 400, description = "A field is wrong; `field` names it", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
    )
)]
pub async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<WriteQuery>,
    ApiJson(input): ApiJson<TaskInput>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let (config, next) = input.to_new(s.store.clock().now())?;
    check_with_others(&s, None, &config).await?;
    let warnings = identifier_warnings(&s, &config.implementation, q.strict).await?;
    let task = s.store.create_task(&config, next).await?;
    record(
        &s,
        &caller,
        &task.config.name,
        "created",
        None,
        Some(&task.config),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(Task {
            warnings,
            ..Task::from(&task)
        }),
    ))
}

/// Records a change of configuration `name` in the audit trail, with the
/// fields that changed and the token that made it. The change is made
/// already: an entry the trail cannot take is logged, not an error.
async fn record(
    s: &AppState,
    caller: &Caller,
    name: &str,
    action: &str,
    before: Option<&TaskConfig>,
    after: Option<&TaskConfig>,
) {
    let entry = NewAudit {
        at: Utc::now(),
        actor: caller.0.clone(),
        kind: AuditKind::Configuration,
        subject: name.to_owned(),
        action: action.to_owned(),
        changes: audit::changes(before, after),
    };
    if let Err(e) = s.store.append_audit(&entry).await {
        tracing::error!("the audit trail could not record a change of '{name}': {e}");
    }
}

#[utoipa::path(
    get, path = "/api/tasks/{name}", tag = "tasks",
    params(("name" = String, Path, description = "The configuration's name")),
    responses(
        (status = 200, body = Task),
        (status = 404, description = "No such configuration", body = ErrorBody),
    )
)]
pub async fn get(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Task>> {
    Ok(Json(Task::from(&s.store.get_task(&name).await?)))
}

#[utoipa::path(
    put, path = "/api/tasks/{name}", tag = "tasks", request_body = TaskInput,
    params(("name" = String, Path, description = "The configuration's current name"), WriteQuery),
    security(("token" = [])),
    responses(
        (status = 200, description = "Replaced; counters and history stay", body = Task),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    )
)]
pub async fn replace(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<WriteQuery>,
    ApiJson(input): ApiJson<TaskInput>,
) -> ApiResult<Json<Task>> {
    let old = s.store.get_task(&name).await?;
    let now = s.store.clock().now();
    let config = input.to_config(now)?;
    let (config, next) = spec::change(&old, config, now)?;
    check_with_others(&s, Some(&old.config), &config).await?;
    // An implementation the configuration had already is not news.
    let warnings = match config.implementation != old.config.implementation {
        true => identifier_warnings(&s, &config.implementation, q.strict).await?,
        false => Vec::new(),
    };
    let task = s.store.update_task(&name, &config, next).await?;
    let (before, after) = (Some(&old.config), Some(&task.config));
    record(&s, &caller, &task.config.name, "changed", before, after).await;
    Ok(Json(Task {
        warnings,
        ..Task::from(&task)
    }))
}

/// Checks `config` (new, or changed from `old`) against the other
/// configurations when its follow-ups or a rename make that needed.
async fn check_with_others(
    s: &AppState,
    old: Option<&TaskConfig>,
    config: &TaskConfig,
) -> ApiResult<()> {
    if spec::needs_others(old, config) {
        spec::check_with_others(old, config, &s.store.list_tasks().await?)?;
    }
    Ok(())
}

#[utoipa::path(
    delete, path = "/api/tasks/{name}", tag = "tasks",
    params(("name" = String, Path)),
    security(("token" = [])),
    responses(
        (status = 204, description = "Deleted with its state"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Another configuration names it as a follow-up", body = ErrorBody),
    )
)]
pub async fn delete(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if let Some(why) = spec::delete_refused(&name, &s.store.list_tasks().await?) {
        return Err(ApiError::NotNow(why));
    }
    let old = s.store.get_task(&name).await?;
    s.store.delete_task(&name).await?;
    record(&s, &caller, &name, "deleted", Some(&old.config), None).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Why a configuration is disabled (optional body of `disable`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableInput {
    /// Shown with it until it is enabled again, e.g. "waiting for the
    /// vendor's fix".
    #[serde(default)]
    pub note: Option<String>,
}

async fn set_enabled(
    s: &AppState,
    caller: &Caller,
    name: &str,
    enabled: bool,
    note: Option<String>,
) -> ApiResult<Json<Task>> {
    let task = s.store.get_task(name).await?;
    let mut config = task.config.clone();
    config.enabled = enabled;
    if !enabled {
        config.paused = Some(Pause {
            by: caller.0.clone(),
            at: Utc::now(),
            note: note.filter(|n| !n.trim().is_empty()),
        });
    }
    let (config, next) = spec::change(&task, config, s.store.clock().now())?;
    let updated = s.store.update_task(name, &config, next).await?;
    let action = if enabled { "enabled" } else { "disabled" };
    record(
        s,
        caller,
        name,
        action,
        Some(&task.config),
        Some(&updated.config),
    )
    .await;
    Ok(Json(Task::from(&updated)))
}

#[utoipa::path(
    post, path = "/api/tasks/{name}/enable", tag = "tasks",
    params(("name" = String, Path)),
    security(("token" = [])),
    responses(
        (status = 200, description = "Enabled; the schedule restarts from now", body = Task),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn enable(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Task>> {
    set_enabled(&s, &caller, &name, true, None).await
}

#[utoipa::path(
    post, path = "/api/tasks/{name}/disable", tag = "tasks",
    params(("name" = String, Path)),
    request_body(content = Option<DisableInput>, description = "Optional: a note saying why"),
    security(("token" = [])),
    responses(
        (status = 200, description = "Disabled; manual runs still work", body = Task),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn disable(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Task>> {
    // The body is optional: none (or an empty one) disables without a note.
    let input: DisableInput = if body.iter().all(u8::is_ascii_whitespace) {
        DisableInput::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::field("note", e.to_string()))?
    };
    set_enabled(&s, &caller, &name, false, input.note).await
}

/// A manual run that was asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunStarted {
    pub run_id: String,
    /// `running`; `skipped` when the configuration was still running
    /// (runs never overlap; the skip is recorded); `queued` when this
    /// instance lacks a role the configuration needs (an instance that has
    /// it runs it), or when the configuration's next slot is claimed and
    /// about to start (this run starts after it).
    pub state: String,
    pub message: String,
}

#[utoipa::path(
    post, path = "/api/tasks/{name}/run", tag = "tasks",
    params(("name" = String, Path)),
    security(("token" = [])),
    responses(
        (status = 202, description = "Started on this instance (also for disabled configurations), or queued for an instance with the roles it needs or the component it lacks", body = RunStarted),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn run_now(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<RunStarted>)> {
    let (run_id, start) = s.dispatcher.run_now(&name).await?;
    let (state, message) = match start {
        ManualStart::Here(Claim::Claimed) => ("running", format!("'{name}' is running now")),
        ManualStart::Here(Claim::AlreadyRunning { run_id: running }) => (
            "skipped",
            format!("'{name}' is still running (run {running}); this run was recorded skipped"),
        ),
        ManualStart::Here(Claim::Lost) => {
            ("skipped", format!("'{name}' changed meanwhile; try again"))
        }
        ManualStart::Behind { run_id, starts_at } => (
            "queued",
            format!(
                "'{name}' has a run starting at {starts_at} (run {run_id}); this run starts \
                 once that one has ended"
            ),
        ),
        ManualStart::Queued { missing_roles } => (
            "queued",
            format!(
                "'{name}' runs only on instances with role {}, which {} lacks; \
                 an instance that has it picks the run up",
                missing_roles.join(" and "),
                s.instance
            ),
        ),
        ManualStart::Elsewhere { instances } => (
            "queued",
            format!(
                "{}'s plugins folder has no component for '{name}'; {} has one and picks the \
                 run up",
                s.instance,
                instances.join(" or ")
            ),
        ),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(RunStarted {
            run_id,
            state: state.into(),
            message,
        }),
    ))
}

/// What an input would be, without saving it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// Whether creating it would succeed (the name may still be taken).
    pub valid: bool,
    /// The first field at fault, if any.
    pub field: Option<String>,
    pub error: Option<String>,
    /// The schedule in words, when the schedule itself is valid.
    pub schedule_text: Option<String>,
    /// Its next 5 fire times from now.
    pub next: Vec<DateTime<Utc>>,
}

#[utoipa::path(
    post, path = "/api/preview", tag = "tasks", request_body = TaskInput,
    responses(
        (status = 200, description = "The verdict and, for a valid schedule, its next fire times", body = Preview),
        (status = 400, description = "The body does not have the input's shape", body = ErrorBody),
    )
)]
pub async fn preview(
    State(s): State<AppState>,
    ApiJson(input): ApiJson<TaskInput>,
) -> Json<Preview> {
    let now = s.store.clock().now();
    let mut verdict = input.to_new(now);
    // Follow-ups are checked against the configurations there are, as
    // creating it would (a store that cannot be read checks nothing here).
    if let Ok((config, _)) = &verdict
        && spec::needs_others(None, config)
        && let Ok(all) = s.store.list_tasks().await
        && let Err(e) = spec::check_with_others(None, config, &all)
    {
        verdict = Err(e);
    }
    // The times of the whole configuration (its jitter and window too) when
    // it is valid, else of the schedule alone when that is.
    let config = match &verdict {
        Ok((config, _)) => Some(config.clone()),
        Err(_) => {
            let schedule = input.schedule.spec().to_schedule(now).ok().flatten();
            schedule.map(|s| TaskConfig::new(&input.name, &input.implementation, s))
        }
    };
    let (schedule_text, next) = match &config {
        Some(c) => {
            let next = spec::first_run(c, now)
                .map(|f| {
                    c.fire_times()
                        .upcoming(f - chrono::TimeDelta::milliseconds(1), UPCOMING)
                })
                .unwrap_or_default();
            (Some(c.schedule.describe()), next)
        }
        None => (None, Vec::new()),
    };
    let (field, error) = match &verdict {
        Ok(_) => (None, None),
        Err(e) => (Some(e.field.json().to_owned()), Some(e.message.clone())),
    };
    Json(Preview {
        valid: verdict.is_ok(),
        field,
        error,
        schedule_text,
        next,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UpcomingQuery {
    /// How many fire times (default 20, at most 500).
    pub limit: Option<u32>,
}

/// One coming fire time.
#[derive(Debug, Serialize, ToSchema)]
pub struct FireTime {
    pub task: String,
    pub at: DateTime<Utc>,
}

#[utoipa::path(
    get, path = "/api/upcoming", tag = "tasks", params(UpcomingQuery),
    responses(
        (status = 200, description = "The next fire times of all enabled configurations, soonest first", body = [FireTime]),
        (status = 400, body = ErrorBody),
    )
)]
pub async fn upcoming(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<UpcomingQuery>,
) -> ApiResult<Json<Vec<FireTime>>> {
    let limit = q.limit.unwrap_or(20);
    if limit == 0 || limit > 500 {
        return Err(ApiError::field("limit", "must be between 1 and 500"));
    }
    let limit = limit as usize;
    let mut times: Vec<FireTime> = s
        .store
        .list_tasks()
        .await?
        .iter()
        .flat_map(|t| {
            spec::upcoming(t, limit).into_iter().map(|at| FireTime {
                task: t.config.name.clone(),
                at,
            })
        })
        .collect();
    times.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.task.cmp(&b.task)));
    times.truncate(limit);
    Ok(Json(times))
}

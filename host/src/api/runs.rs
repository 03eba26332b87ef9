//! `/api/runs`: the run history, filtered by configuration, outcome and
//! time, one run by id, and stopping a run.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::model::{RunRecord, RunState, StopReason, Trigger, names};
use crate::store::{RunFilter, StopAsked};

/// One run of a configuration.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Run {
    pub id: String,
    pub task_id: i64,
    pub task_name: String,
    pub implementation: String,
    #[schema(schema_with = super::names::schema::<Trigger>)]
    pub trigger: Trigger,
    pub attempt: u32,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[schema(schema_with = super::names::schema::<RunState>)]
    pub state: RunState,
    /// For stopped runs: which limit or fault.
    #[schema(schema_with = super::names::schema::<StopReason>)]
    pub reason: Option<StopReason>,
    /// The result message.
    pub message: String,
    pub duration_us: Option<u64>,
    pub fuel: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
    pub component_sha256: Option<String>,
    pub component_version: Option<String>,
    /// The instance that ran it.
    pub instance: Option<String>,
    /// What a follow-up run is told about the run that ended (JSON text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

impl From<RunRecord> for Run {
    fn from(r: RunRecord) -> Self {
        Run {
            id: r.id,
            task_id: r.task_id,
            task_name: r.task_name,
            implementation: r.implementation,
            trigger: r.trigger,
            attempt: r.attempt,
            scheduled_for: r.scheduled_for,
            queued_at: r.queued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            state: r.state,
            reason: r.reason,
            message: r.message,
            duration_us: r.duration_us,
            fuel: r.fuel,
            peak_memory_bytes: r.peak_memory_bytes,
            component_sha256: r.component_sha256,
            component_version: r.component_version,
            instance: r.instance,
            payload: r.payload,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Only runs of this configuration (by name).
    pub task: Option<String>,
    /// Only runs in this state (succeeded, failed, stopped, cancelled, skipped, abandoned, running, queued).
    pub outcome: Option<String>,
    /// Only runs that started at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only runs that started before this RFC 3339 time.
    pub until: Option<String>,
    /// The newest N (default 50, at most 1000).
    pub limit: Option<u32>,
}

fn time(field: &str, text: &Option<String>) -> ApiResult<Option<DateTime<Utc>>> {
    text.as_deref()
        .map(|t| crate::spec::parse_time(t).map_err(|m| ApiError::field(field, m)))
        .transpose()
}

#[utoipa::path(
    get, path = "/api/runs", tag = "runs", params(RunsQuery),
    responses(
        (status = 200, description = "Runs, newest first", body = [Run]),
        (status = 400, description = "A parameter is wrong; `field` names it", body = ErrorBody),
        (status = 404, description = "No such configuration", body = ErrorBody),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> ApiResult<Json<Vec<Run>>> {
    let state = q
        .outcome
        .as_deref()
        .map(|s| names::parse::<RunState>("run state", s))
        .transpose()
        .map_err(|m| ApiError::field("outcome", m))?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let task_id = match &q.task {
        Some(name) => Some(s.store.get_task(name).await?.id),
        None => None,
    };
    let runs = s
        .store
        .list_runs(&RunFilter {
            task_id,
            state,
            since: time("since", &q.since)?,
            until: time("until", &q.until)?,
            limit: Some(limit),
        })
        .await?;
    Ok(Json(runs.into_iter().map(Run::from).collect()))
}

#[utoipa::path(
    get, path = "/api/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, body = Run),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Run>> {
    Ok(Json(Run::from(s.store.get_run(&id).await?)))
}

/// What asking for a run to stop did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StopResponse {
    pub run_id: String,
    /// `stopping`: the run's instance stops it on its next pass (within a
    /// second): the cancellation flag, the grace period, then the hard
    /// stop; the run is then recorded `cancelled`. `cancelled`: it was
    /// queued and had not started; it is recorded cancelled now.
    pub status: String,
    /// The instance running it (for `stopping`).
    pub instance: Option<String>,
}

#[utoipa::path(
    post, path = "/api/runs/{id}/stop", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 202, description = "The run is being stopped (or was queued and is now cancelled)", body = StopResponse),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run is not running: it has ended", body = ErrorBody),
    )
)]
pub async fn stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(axum::http::StatusCode, Json<StopResponse>)> {
    let asked = s
        .store
        .request_stop(&id, "an API client", Utc::now())
        .await?;
    let (status, instance) = match asked {
        StopAsked::Signalled { instance } => ("stopping", Some(instance)),
        StopAsked::CancelledQueued => ("cancelled", None),
        StopAsked::NotRunning { state } => {
            return Err(ApiError::NotNow(format!(
                "run {id} is not running: it is {state}"
            )));
        }
    };
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(StopResponse {
            run_id: id,
            status: status.to_owned(),
            instance,
        }),
    ))
}

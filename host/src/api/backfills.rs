//! `/api/tasks/{name}/backfills` and `/api/backfills/{id}`: asking for a
//! configuration's past slots to run, following a backfill's progress, and
//! cancelling it. The serving instances run it (see `store::sql::backfills`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiJson, ApiResult, ErrorBody};
use crate::model::backfill::{BackfillRecord, BackfillState};
use crate::spec::{self, Field, FieldError};

/// A backfill to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillInput {
    /// The window's start (RFC 3339): its slots from this time on.
    pub from: String,
    /// The window's end (RFC 3339, up to now): its slots before this time.
    pub to: String,
    /// Slots run at once (default 1, at most 100), within the
    /// configuration's own limit of runs at once.
    #[serde(default)]
    pub concurrency: Option<u32>,
}

/// A backfill and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct Backfill {
    pub id: String,
    pub task: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub concurrency: u32,
    /// `active`, `done` or `cancelled`.
    #[schema(schema_with = super::names::schema::<BackfillState>)]
    pub state: BackfillState,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    /// Slots in the window.
    pub total: u32,
    /// Slots dealt with: run to an end, or found to have run already.
    pub done: u32,
    /// Slots not run because they had run already.
    pub already_ran: u32,
    pub queued: u32,
    pub running: u32,
    pub succeeded: u32,
    /// Failed, stopped or abandoned.
    pub failed: u32,
    pub cancelled: u32,
    /// The next slot to be queued (null once all are).
    pub next_slot: Option<DateTime<Utc>>,
}

impl From<BackfillRecord> for Backfill {
    fn from(b: BackfillRecord) -> Self {
        Backfill {
            done: b.done(),
            id: b.id,
            task: b.task_name,
            from: b.from,
            to: b.to,
            concurrency: b.concurrency,
            state: b.state,
            requested_by: b.requested_by,
            created_at: b.created_at,
            total: b.total,
            already_ran: b.already_ran,
            queued: b.runs.queued,
            running: b.runs.running,
            succeeded: b.runs.succeeded,
            failed: b.runs.failed,
            cancelled: b.runs.cancelled,
            next_slot: b.next_slot,
        }
    }
}

fn time(field: Field, text: &str) -> Result<DateTime<Utc>, FieldError> {
    spec::parse_time(text).map_err(|m| FieldError::new(field, m))
}

#[utoipa::path(
    post, path = "/api/tasks/{name}/backfills", tag = "tasks", request_body = BackfillInput,
    params(("name" = String, Path)),
    security(("token" = [])),
    responses(
        (status = 202, description = "Asked for: the serving instances run its slots", body = Backfill),
        (status = 400, description = "A field is wrong (a window in the future, with no slot, or too long); `field` names it", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The configuration has a backfill going", body = ErrorBody),
    )
)]
pub async fn create(
    State(s): State<AppState>,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<BackfillInput>,
) -> ApiResult<(StatusCode, Json<Backfill>)> {
    let task = s.store.get_task(&name).await?;
    let from = time(Field::BackfillFrom, &input.from)?;
    let to = time(Field::BackfillTo, &input.to)?;
    let now = s.store.clock().now();
    let asked = spec::new_backfill(&task, from, to, input.concurrency, "an API client", now)?;
    let backfill = s.store.create_backfill(&asked).await?;
    Ok((StatusCode::ACCEPTED, Json(Backfill::from(backfill))))
}

#[utoipa::path(
    get, path = "/api/tasks/{name}/backfills", tag = "tasks",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "Its newest backfills (up to 50), with progress", body = [Backfill]),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Backfill>>> {
    let task = s.store.get_task(&name).await?;
    let backfills = s.store.list_backfills(task.id, 50).await?;
    Ok(Json(backfills.into_iter().map(Backfill::from).collect()))
}

#[utoipa::path(
    get, path = "/api/backfills/{id}", tag = "tasks",
    params(("id" = String, Path)),
    responses((status = 200, body = Backfill), (status = 404, body = ErrorBody))
)]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Backfill>> {
    Ok(Json(Backfill::from(s.store.get_backfill(&id).await?)))
}

#[utoipa::path(
    post, path = "/api/backfills/{id}/cancel", tag = "tasks",
    params(("id" = String, Path)),
    security(("token" = [])),
    responses(
        (status = 200, description = "Cancelled: slots not started are not run; runs going finish", body = Backfill),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Backfill>> {
    let cancelled = s
        .store
        .cancel_backfill(&id, "an API client", Utc::now())
        .await?;
    Ok(Json(Backfill::from(cancelled)))
}

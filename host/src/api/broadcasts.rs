//! `/api/broadcasts`: web-farm broadcasts — make one (every live instance
//! runs a component once with a payload), list them, and follow one
//! broadcast's delivery on each instance.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::model::{BroadcastPayload, BroadcastRecord, DeliveryRecord, RunState};
use crate::scheduler::farm::{self, BroadcastError, BroadcastField, BroadcastRequest};

/// A broadcast to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastInput {
    /// The identifier of the component every instance runs.
    #[schema(example = "Acme.CacheFlush")]
    pub identifier: String,
    /// Who it is for, as the task understands it (free text, up to 1 KiB).
    #[serde(default)]
    pub target: String,
    /// Text data (up to 64 KiB).
    #[serde(default)]
    pub text: String,
    /// Binary data, base64 (up to 1 MiB decoded).
    #[serde(default)]
    pub data_base64: String,
    /// Deliver to the instance answering this request too (default true).
    #[serde(default = "yes")]
    pub include_this_instance: bool,
}

fn yes() -> bool {
    true
}

/// One instance's run of a broadcast.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub instance: String,
    /// queued (not started yet), running, succeeded, failed, stopped,
    /// cancelled, or abandoned (the instance stopped or died first).
    #[schema(schema_with = super::names::schema::<RunState>)]
    pub state: RunState,
    /// Tags the run's events (`/api/events?run=`).
    pub run_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// For stopped runs: which limit.
    pub reason: Option<String>,
    pub message: String,
    pub duration_us: Option<u64>,
    pub fuel: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
    pub component_sha256: Option<String>,
    pub component_version: Option<String>,
}

/// A broadcast and its delivery on each instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Broadcast {
    pub id: String,
    pub identifier: String,
    pub target: String,
    pub text: String,
    pub data_bytes: u64,
    pub created_at: DateTime<Utc>,
    /// cli, api on INSTANCE, or the run that broadcast it.
    pub created_by: String,
    pub deliveries: Vec<Delivery>,
}

impl From<DeliveryRecord> for Delivery {
    fn from(d: DeliveryRecord) -> Self {
        Delivery {
            instance: d.instance,
            state: d.state,
            run_id: d.run_id,
            started_at: d.started_at,
            finished_at: d.finished_at,
            reason: d.reason,
            message: d.message,
            duration_us: d.duration_us,
            fuel: d.fuel,
            peak_memory_bytes: d.peak_memory_bytes,
            component_sha256: d.component_sha256,
            component_version: d.component_version,
        }
    }
}

impl From<BroadcastRecord> for Broadcast {
    fn from(b: BroadcastRecord) -> Self {
        Broadcast {
            id: b.id,
            identifier: b.identifier,
            target: b.target,
            text: b.text,
            data_bytes: b.data_bytes,
            created_at: b.created_at,
            created_by: b.created_by,
            deliveries: b.deliveries.into_iter().map(Delivery::from).collect(),
        }
    }
}

/// A broadcast request's part as the API's JSON names it.
fn json_field(field: BroadcastField) -> &'static str {
    match field {
        BroadcastField::Identifier => "identifier",
        BroadcastField::Target => "target",
        BroadcastField::Text => "text",
        BroadcastField::Data => "data_base64",
    }
}

#[utoipa::path(
    post, path = "/api/broadcasts", tag = "farm", request_body = BroadcastInput,
    security(("token" = [])),
    responses(
        (status = 201, description = "Made: a queued delivery per live instance", body = Broadcast),
        (status = 400, description = "A field is wrong; `field` names it", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 409, description = "No live instance to deliver to", body = ErrorBody),
    )
)]
pub async fn create(
    State(s): State<AppState>,
    ApiJson(input): ApiJson<BroadcastInput>,
) -> ApiResult<(StatusCode, Json<Broadcast>)> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(input.data_base64.trim())
        .map_err(|e| {
            ApiError::field(
                json_field(BroadcastField::Data),
                format!("is not base64 ({e})"),
            )
        })?;
    let request = BroadcastRequest {
        identifier: input.identifier,
        payload: BroadcastPayload {
            target: input.target,
            text: input.text,
            data,
        },
        created_by: format!("api on {}", s.instance),
        exclude: (!input.include_this_instance).then(|| s.instance.clone()),
        sender: None,
    };
    let made = farm::broadcast(&*s.store, request, s.store.clock().now())
        .await
        .map_err(|e| match e {
            BroadcastError::Invalid { field, message } => {
                ApiError::field(json_field(field), message)
            }
            e @ (BroadcastError::NoLiveInstance
            | BroadcastError::NoInstanceWithRoles(_)
            | BroadcastError::NotLoaded(_)) => ApiError::NotNow(e.to_string()),
            BroadcastError::Store(e) => e.into(),
        })?;
    // This instance's own delivery starts now, not at the next poll.
    s.dispatcher.wake();
    Ok((StatusCode::CREATED, Json(made.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The newest this many (default 20, at most 500).
    pub limit: Option<u32>,
}

#[utoipa::path(
    get, path = "/api/broadcasts", tag = "farm", params(ListQuery),
    responses(
        (status = 200, description = "The newest broadcasts, newest first", body = [Broadcast]),
        (status = 400, body = ErrorBody),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Broadcast>>> {
    let limit = q.limit.unwrap_or(20);
    if limit == 0 || limit > 500 {
        return Err(ApiError::field("limit", "must be between 1 and 500"));
    }
    let found = s.store.list_broadcasts(limit).await?;
    Ok(Json(found.into_iter().map(Broadcast::from).collect()))
}

#[utoipa::path(
    get, path = "/api/broadcasts/{id}", tag = "farm",
    params(("id" = String, Path, description = "The broadcast's id")),
    responses(
        (status = 200, body = Broadcast),
        (status = 404, description = "No such broadcast", body = ErrorBody),
    )
)]
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Broadcast>> {
    Ok(Json(s.store.get_broadcast(&id).await?.into()))
}

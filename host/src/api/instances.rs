//! `/api/instances` (every cronwerk instance that reported a heartbeat to
//! this store, and whether it is live) and `/api/health` (this instance and
//! its store answer).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiResult;

/// A cronwerk instance and its heartbeat.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Instance {
    pub name: String,
    pub pid: u32,
    pub version: String,
    pub roles: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Its heartbeat is recent.
    pub live: bool,
    /// It is the instance answering this request.
    pub this: bool,
}

#[utoipa::path(
    get, path = "/api/instances", tag = "instances",
    responses((status = 200, description = "Instances that share this store", body = [Instance]))
)]
pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<Instance>>> {
    let cutoff =
        s.store.clock().now() - chrono::TimeDelta::from_std(s.liveness).unwrap_or_default();
    let rows = s.store.list_instances().await?;
    Ok(Json(
        rows.into_iter()
            .map(|i| Instance {
                live: i.heartbeat_at >= cutoff,
                this: i.name == s.instance,
                name: i.name,
                pid: i.pid,
                version: i.version,
                roles: i.roles,
                started_at: i.started_at,
                heartbeat_at: i.heartbeat_at,
            })
            .collect(),
    ))
}

/// What one live instance serves for an identifier.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetCell {
    pub version: String,
    pub sha256: String,
}

/// One identifier across the live instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetRow {
    pub identifier: String,
    /// What each instance of `instances` serves for it (null: nothing).
    pub served: Vec<Option<FleetCell>>,
    /// Not every live instance serves the same build, or one lacks it.
    pub skew: bool,
}

/// Identifier × live instance → version.
#[derive(Debug, Serialize, ToSchema)]
pub struct Fleet {
    pub instances: Vec<String>,
    pub identifiers: Vec<FleetRow>,
}

#[utoipa::path(
    get, path = "/api/fleet", tag = "instances",
    responses((status = 200, description = "What every live instance's plugins folder serves, by identifier", body = Fleet))
)]
pub async fn fleet(State(s): State<AppState>) -> ApiResult<Json<Fleet>> {
    let matrix = crate::scheduler::farm::fleet_matrix(&*s.store).await?;
    Ok(Json(Fleet {
        instances: matrix.instances,
        identifiers: matrix
            .identifiers
            .into_iter()
            .map(|row| FleetRow {
                identifier: row.identifier,
                served: row
                    .served
                    .into_iter()
                    .map(|cell| {
                        cell.map(|c| FleetCell {
                            version: c.version,
                            sha256: c.sha256,
                        })
                    })
                    .collect(),
                skew: row.skew,
            })
            .collect(),
    }))
}

/// Whether this instance can do its work.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// ok, or failing (then `error` says why).
    pub status: String,
    pub instance: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub error: Option<String>,
}

#[utoipa::path(
    get, path = "/api/health", tag = "instances",
    responses(
        (status = 200, description = "Serving", body = Health),
        (status = 503, description = "The store does not answer", body = Health),
    )
)]
pub async fn health(State(s): State<AppState>) -> (StatusCode, Json<Health>) {
    // A real read (the change token of a shared server is counted
    // locally), and the watch on every call: a full disk answers reads
    // but refuses writes.
    let read = s.store.earliest_due().await;
    let (code, status, error) = match (read, s.store_health.outage()) {
        (Err(e), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "failing",
            Some(format!("the store does not answer: {e}")),
        ),
        (Ok(_), Some((since, cause))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "failing",
            Some(format!(
                "the store has refused writes since {since}: {cause}"
            )),
        ),
        (Ok(_), None) => (StatusCode::OK, "ok", None),
    };
    (
        code,
        Json(Health {
            status: status.into(),
            instance: s.instance.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: s.started_at,
            error,
        }),
    )
}

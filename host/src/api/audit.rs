//! `/api/audit`: the audit trail, newest first: who changed which
//! configuration, setting or token, and which components were swapped in
//! the plugins folders, with the fields before and after.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::model::audit::{AuditKind, AuditRecord};
use crate::model::names;
use crate::store::AuditFilter;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries about this configuration (by name).
    pub task: Option<String>,
    /// Only entries of this kind: configuration, setting, token or plugins.
    pub kind: Option<String>,
    /// Only entries older than this id (the next page).
    pub before: Option<i64>,
    /// How many (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// One field that changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditChange {
    pub field: String,
    /// null when the field was not there (created).
    #[schema(value_type = Object)]
    pub before: serde_json::Value,
    /// null when it is gone (deleted).
    #[schema(value_type = Object)]
    pub after: serde_json::Value,
}

/// One entry of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Who: an operating-system user with the CLI, an API token by name, an instance.
    pub actor: String,
    #[schema(schema_with = super::names::schema::<AuditKind>)]
    pub kind: AuditKind,
    pub subject: String,
    pub action: String,
    pub changes: Vec<AuditChange>,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        AuditEntry {
            id: r.id,
            at: r.at,
            actor: r.actor,
            kind: r.kind,
            subject: r.subject,
            action: r.action,
            changes: r
                .changes
                .into_iter()
                .map(|c| AuditChange {
                    field: c.field,
                    before: c.before,
                    after: c.after,
                })
                .collect(),
        }
    }
}

#[utoipa::path(
    get, path = "/api/audit", tag = "audit", params(AuditQuery),
    responses(
        (status = 200, description = "Entries, newest first", body = [AuditEntry]),
        (status = 400, body = ErrorBody),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let mut kind = q
        .kind
        .as_deref()
        .map(|k| names::parse::<AuditKind>("kind", k))
        .transpose()
        .map_err(|m| ApiError::field("kind", m))?;
    if q.task.is_some() {
        kind = Some(AuditKind::Configuration);
    }
    let filter = AuditFilter {
        kind,
        subject: q.task,
        before_id: q.before,
        limit: Some(limit),
    };
    let entries = s.store.list_audit(&filter).await?;
    Ok(Json(entries.into_iter().map(AuditEntry::from).collect()))
}

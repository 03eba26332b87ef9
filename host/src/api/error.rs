//! How the API says no: one JSON shape for every error (`error`, and the
//! `field` at fault when there is one), the status that goes with each kind,
//! and extractors for JSON bodies and query strings whose errors name the
//! field instead of axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::spec::FieldError;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong and what to do about it.
    pub error: String,
    /// The request field at fault (`schedule.every`, `limit`, ...), if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error response.
#[derive(Debug)]
pub enum ApiError {
    /// 400: a field of the request cannot be used.
    Field { field: String, message: String },
    /// 401: no token, or the wrong one.
    Unauthorized(String),
    /// 403: the request is not allowed from where it came.
    Forbidden(String),
    /// 404: no such configuration or run.
    NotFound(String),
    /// 409: the name is taken.
    Conflict(String),
    /// 409: the request is right but the farm's state does not allow it
    /// now (no live instance to deliver a broadcast to); no field is at fault.
    NotNow(String),
    /// 413: the body is too large.
    TooLarge(String),
    /// 500: the store or the host failed.
    Internal(String),
    /// 503: the server holds as many of these as it keeps (live streams).
    Busy(String),
    /// 503: the store cannot be reached or written now (a database
    /// restarting, a full disk); the request may work when retried.
    Unavailable(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::field(e.field.json(), e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TaskNotFound(name) => {
                ApiError::NotFound(format!("no task configuration named '{name}'"))
            }
            StoreError::RunNotFound(id) => ApiError::NotFound(format!("no run with id '{id}'")),
            StoreError::BroadcastNotFound(id) => {
                ApiError::NotFound(format!("no broadcast with id '{id}'"))
            }
            StoreError::BackfillNotFound(id) => {
                ApiError::NotFound(format!("no backfill with id '{id}'"))
            }
            StoreError::BackfillActive(id) => ApiError::NotNow(format!(
                "the configuration has a backfill going ({id}): wait for it, or cancel it \
                 (POST /api/backfills/{id}/cancel)"
            )),
            StoreError::TaskExists(name) => ApiError::Conflict(format!(
                "a task configuration named '{name}' already exists: pick another name"
            )),
            e @ StoreError::Backend(_) if e.is_unavailable() => ApiError::Unavailable(format!(
                "the store is unavailable ({e}); the instance keeps running: try again shortly"
            )),
            // No endpoint writes settings; were one to, the stored setting
            // is what refuses the request, not a field of it.
            e @ StoreError::SecretSetting { .. } => ApiError::NotNow(e.to_string()),
            StoreError::Backend(e) => {
                tracing::error!("store failure behind an API request: {e:#}");
                ApiError::Internal(format!("the store failed: {e:#}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, field) = match self {
            ApiError::Field { field, message } => (
                StatusCode::BAD_REQUEST,
                format!("{field}: {message}"),
                Some(field),
            ),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m, None),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m, None),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m, None),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m, Some("name".to_owned())),
            ApiError::NotNow(m) => (StatusCode::CONFLICT, m, None),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m, None),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m, None),
            ApiError::Busy(m) | ApiError::Unavailable(m) => {
                (StatusCode::SERVICE_UNAVAILABLE, m, None)
            }
        };
        let mut response = (status, axum::Json(ErrorBody { error, field })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"cronwerk\""),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The field a serde error is about: its path, plus the field named in a
/// "missing field `x`" or "unknown field `x`" message.
fn field_of<E: std::fmt::Display>(error: &serde_path_to_error::Error<E>) -> (String, String) {
    let message = error.inner().to_string();
    let path = error.path().to_string();
    let named = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))
        .and_then(|rest| rest.split('`').next());
    let field = match (path.as_str(), named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (path, Some(name)) if message.starts_with("missing") => format!("{path}.{name}"),
        (path, _) => path.to_owned(),
    };
    (field, message)
}

/// A JSON body; a body that does not fit is a 400 naming the field.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(e.body_text()),
                _ => ApiError::field("body", e.body_text()),
            })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(&mut de) {
            Ok(value) => Ok(ApiJson(value)),
            Err(e) if e.inner().is_syntax() || e.inner().is_eof() => Err(ApiError::field(
                "body",
                format!("not valid JSON: {}", e.inner()),
            )),
            Err(e) => {
                let (field, message) = field_of(&e);
                Err(ApiError::field(field, message))
            }
        }
    }
}

/// Query parameters; one that does not fit is a 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let (field, message) = field_of(&e);
                ApiError::field(field, message)
            })
    }
}

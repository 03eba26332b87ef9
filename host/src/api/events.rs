//! `/api/events`: the event log, filtered by configuration, level and run;
//! `/api/events/stream` follows it with Server-Sent Events (each event's id
//! is its SSE id, so a reconnecting client resumes with `Last-Event-ID`);
//! `/api/changes` tells live views that anything in the store changed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, watch};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::model::{EventRecord, EventSource, Level, names};
use crate::store::{EventFilter, Store};

/// One entry of the event log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: DateTime<Utc>,
    #[schema(schema_with = super::names::schema::<Level>)]
    pub level: Level,
    /// task (logged), stdout, stderr or host.
    #[schema(schema_with = super::names::schema::<EventSource>)]
    pub source: EventSource,
    /// A machine-readable code such as NOTIFICATION; may be empty.
    pub code: String,
    pub message: String,
    pub task_id: Option<i64>,
    pub task_name: Option<String>,
    pub run_id: Option<String>,
}

impl From<EventRecord> for Event {
    fn from(e: EventRecord) -> Self {
        Event {
            id: e.id,
            at: e.at,
            level: e.level,
            source: e.source,
            code: e.code,
            message: e.message,
            task_id: e.task_id,
            task_name: e.task_name,
            run_id: e.run_id,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events of this configuration (by name).
    pub task: Option<String>,
    /// Only events at this level or above: trace, debug, info, warning, error.
    pub level: Option<String>,
    /// Only events of this run.
    pub run: Option<String>,
    /// Only events with a larger id.
    pub after: Option<i64>,
    /// The newest N (default 100, at most 1000); ignored by the stream.
    pub limit: Option<u32>,
}

async fn filter(s: &AppState, q: &EventsQuery) -> ApiResult<EventFilter> {
    let min_level = q
        .level
        .as_deref()
        .map(|s| names::parse::<Level>("level", s))
        .transpose()
        .map_err(|m| ApiError::field("level", m))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let task_id = match &q.task {
        Some(name) => Some(s.store.get_task(name).await?.id),
        None => None,
    };
    Ok(EventFilter {
        task_id,
        run_id: q.run.clone(),
        min_level,
        after_id: q.after,
        limit: Some(limit),
        oldest: false,
    })
}

#[utoipa::path(
    get, path = "/api/events", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "Events, oldest first", body = [Event]),
        (status = 400, description = "A parameter is wrong; `field` names it", body = ErrorBody),
        (status = 404, description = "No such configuration", body = ErrorBody),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    let f = filter(&s, &q).await?;
    let events = s.store.list_events(&f).await?;
    Ok(Json(events.into_iter().map(Event::from).collect()))
}

/// A stream's position in the log and what it has read but not sent.
struct Follow {
    store: Arc<dyn Store>,
    filter: EventFilter,
    changes: watch::Receiver<u64>,
    pending: VecDeque<EventRecord>,
    /// Held while the stream is open.
    _slot: OwnedSemaphorePermit,
}

/// Live streams (`/api/events/stream` and `/api/changes` together) open at
/// once; one more is answered 503. Each holds a connection, a subscription
/// and, catching up, a page of events.
pub const MAX_STREAMS: usize = 64;

/// Events a stream reads from the store at a time: catching up from
/// `after=0` over a large log goes page by page, as the client reads.
pub const STREAM_PAGE: u32 = 500;

/// A slot for one more live stream, or why not.
fn stream_slot(s: &AppState) -> ApiResult<OwnedSemaphorePermit> {
    s.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy(format!(
            "{MAX_STREAMS} live streams are open, the most this server keeps; \
             close one (or retry later)"
        ))
    })
}

#[utoipa::path(
    get, path = "/api/events/stream", tag = "events", params(EventsQuery),
    responses(
        (status = 200, description = "Server-Sent Events: each `data` is one Event as JSON, its `id` the event id. \
            Starts after `after` (or the `Last-Event-ID` header), else with what comes next.",
            content_type = "text/event-stream", body = Event),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let slot = stream_slot(&s)?;
    let mut f = filter(&s, &q).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    // Subscribe before reading the position, so nothing committed in
    // between is missed.
    let changes = s.live.subscribe();
    f.after_id = match resume.or(q.after) {
        Some(after) => Some(after),
        None => Some(latest_id(&*s.store).await?),
    };
    f.limit = Some(STREAM_PAGE);
    f.oldest = true;
    let follow = Follow {
        store: s.store.clone(),
        filter: f,
        changes,
        pending: VecDeque::new(),
        _slot: slot,
    };
    let events = stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(e) = f.pending.pop_front() {
                let id = e.id.to_string();
                let event = SseEvent::default()
                    .id(id)
                    .json_data(Event::from(e))
                    .unwrap_or_else(|e| SseEvent::default().comment(e.to_string()));
                return Some((Ok(event), f));
            }
            match f.store.list_events(&f.filter).await {
                Ok(new) if !new.is_empty() => {
                    f.filter.after_id = new.last().map(|e| e.id);
                    f.pending.extend(new);
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("following the event log: {e}"),
            }
            f.changes.changed().await.ok()?;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The id of the newest event (0 for an empty log).
async fn latest_id(store: &dyn Store) -> ApiResult<i64> {
    let newest = store
        .list_events(&EventFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    Ok(newest.last().map_or(0, |e| e.id))
}

#[utoipa::path(
    get, path = "/api/changes", tag = "events",
    responses((status = 200,
        description = "Server-Sent Events named `change`, one (coalesced) whenever configurations, runs, \
            events or plugins changed, and one at once on connecting; their data is a counter.",
        content_type = "text/event-stream", body = u64))
)]
pub async fn changes(
    State(s): State<AppState>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let slot = stream_slot(&s)?;
    let rx = s.live.subscribe();
    let first = SseEvent::default()
        .event("change")
        .data(rx.borrow().to_string());
    let later = stream::unfold((rx, slot), |(mut rx, slot)| async move {
        rx.changed().await.ok()?;
        let n = *rx.borrow_and_update();
        Some((
            Ok(SseEvent::default().event("change").data(n.to_string())),
            (rx, slot),
        ))
    });
    let events = futures_util::StreamExt::chain(stream::once(async { Ok(first) }), later);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

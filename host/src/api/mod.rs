//! The operator's window: a JSON API over the store, the scheduler and the
//! plugins folder, the live dashboard built on it, and Prometheus metrics,
//! all served by `cronwerk serve` on `--listen` (default 127.0.0.1:7878).
//!
//! One file per resource (tasks, runs, events, plugins, instances,
//! broadcasts); the
//! OpenAPI document at `/api/openapi.json` is generated from the handlers'
//! annotations, so it cannot drift from the code. [`auth`] decides who may
//! do what, [`live`] makes views follow the store, [`metrics`] counts runs.

mod audit;
pub(crate) mod auth;
mod backfills;
mod broadcasts;
mod dashboard;
mod error;
mod events;
mod instances;
mod live;
pub mod metrics;
mod names;
mod plugins;
mod runs;
mod server;
pub(crate) mod tasks;

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Json;
use axum::extract::Request;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use chrono::{DateTime, Utc};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Caller, NamedTokens, TOKEN_FILE, TokenFile, check_token_name};
pub use metrics::Metrics;

use crate::model::Level;
use crate::plugins::Plugins;
use crate::scheduler::Dispatcher;
use crate::store::Store;

/// Where the API listens when `--listen` is not given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// `--listen`: an address, or `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if matches!(s, "none" | "off") {
            return Ok(Listen::Off);
        }
        let s = match s.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => s.to_owned(),
        };
        s.parse().map(Listen::At).map_err(|_| {
            format!(
                "'{s}' is not an address to listen on: use IP:PORT (e.g. 127.0.0.1:7878, \
                 0.0.0.0:7878, [::1]:7878; port 0 picks a free one) or none"
            )
        })
    }
}

/// What the API works on, handed over by `serve`.
pub struct ApiContext {
    pub store: Arc<dyn Store>,
    /// Starts manual runs on this instance.
    pub dispatcher: Arc<Dispatcher>,
    pub plugins: Arc<Plugins>,
    pub metrics: Arc<Metrics>,
    /// This instance's name.
    pub instance: String,
    /// Where the token file lives.
    pub data_dir: PathBuf,
    pub started_at: DateTime<Utc>,
    /// An instance whose heartbeat is older than this is not live.
    pub liveness: Duration,
    /// Whether the store takes this instance's calls now.
    pub store_health: Arc<crate::store::StoreHealth>,
}

/// What every handler gets; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    ctx: ApiContext,
    live: live::Live,
    /// Live streams (Server-Sent Events) open at once, at most
    /// [`events::MAX_STREAMS`].
    streams: Arc<tokio::sync::Semaphore>,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Deref for Shared {
    type Target = ApiContext;
    fn deref(&self) -> &ApiContext {
        &self.ctx
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cronwerk",
        description = "The HTTP API of a cronwerk instance: task configurations, runs, the event log, \
            plugins, instances. Changes need `Authorization: Bearer TOKEN` (the token is in the data \
            directory's `api-token` file); reads need it too unless the API listens on loopback only. \
            Errors are `{\"error\": ..., \"field\": ...}`; a 400 names the field at fault."
    ),
    tags(
        (name = "tasks", description = "Task configurations: when which component runs, with which limits"),
        (name = "runs", description = "The run history"),
        (name = "events", description = "The event log, and live updates"),
        (name = "plugins", description = "The components in the plugins folder"),
        (name = "instances", description = "cronwerk instances sharing the store, and health"),
        (name = "farm", description = "Web-farm broadcasts: a component run once on every live instance"),
        (name = "metrics", description = "Prometheus metrics"),
        (name = "audit", description = "Who changed what: configurations, settings, tokens, plugins"),
    ),
    modifiers(&BearerToken)
)]
struct ApiDoc;

struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The token in the data directory's api-token file (`cronwerk token rotate` replaces it)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The routes and the OpenAPI document they make.
fn app(state: AppState, policy: auth::Policy) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (guarded, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tasks::list, tasks::create))
        .routes(routes!(tasks::get, tasks::replace, tasks::delete))
        .routes(routes!(tasks::enable))
        .routes(routes!(tasks::disable))
        .routes(routes!(tasks::run_now))
        .routes(routes!(tasks::preview))
        .routes(routes!(tasks::upcoming))
        .routes(routes!(backfills::create, backfills::list))
        .routes(routes!(backfills::get))
        .routes(routes!(backfills::cancel))
        .routes(routes!(audit::list))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::stop))
        .routes(routes!(events::list))
        .routes(routes!(events::stream))
        .routes(routes!(events::changes))
        .routes(routes!(plugins::list))
        .routes(routes!(plugins::reload))
        .routes(routes!(instances::list))
        .routes(routes!(instances::fleet))
        .routes(routes!(broadcasts::list, broadcasts::create))
        .routes(routes!(broadcasts::get))
        .routes(routes!(metrics::scrape))
        .route_layer(from_fn_with_state(policy.clone(), auth::guard))
        .split_for_parts();
    let (public, public_doc) = OpenApiRouter::new()
        .routes(routes!(instances::health))
        .split_for_parts();
    doc.merge(public_doc);
    let document = Arc::new(doc.clone());
    let router = guarded
        .merge(public)
        .route(
            "/api/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json((*document).clone()) }
            }),
        )
        .route("/", get(dashboard::index))
        .route("/app.js", get(dashboard::app))
        .route("/style.css", get(dashboard::style))
        .route("/icon.svg", get(dashboard::icon))
        .fallback(not_found)
        .layer(from_fn_with_state(policy, auth::public))
        .with_state(state);
    (router, doc)
}

async fn not_found(request: Request) -> error::ApiError {
    error::ApiError::NotFound(format!(
        "no such endpoint: {} {}; the API is described at /api/openapi.json",
        request.method(),
        request.uri().path()
    ))
}

/// A running API server.
pub struct ApiServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// The address it listens on (with the port picked when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving; open connections (live streams) are dropped.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Starts the API on `listen`. `None` means the default address, where a
/// port already taken (another instance on this machine) turns the API off
/// with a warning instead of failing the scheduler; an address the operator
/// gave must be free. A token made now is printed only with `print_token`:
/// otherwise stderr may be a journal that others read.
///
/// What the operator should hear of is handed to `say` with its level, a
/// sentence each, so `serve` writes it as text or as a JSON log line.
pub async fn start(
    listen: Option<&Listen>,
    print_token: bool,
    ctx: ApiContext,
    say: &(dyn Fn(Level, String) + Send + Sync),
) -> anyhow::Result<Option<ApiServer>> {
    let (addr, explicit) = match listen {
        Some(Listen::Off) => {
            say(
                Level::Info,
                "the API and dashboard are off (--listen none)".into(),
            );
            return Ok(None);
        }
        Some(Listen::At(addr)) => (*addr, true),
        None => (DEFAULT_LISTEN.parse().expect("a valid address"), false),
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if !explicit => {
            say(
                Level::Warning,
                format!(
                    "the API and dashboard are off: {addr} is not free ({e}); pass --listen \
                     ADDRESS:PORT to use another"
                ),
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("listening on {addr} (--listen): pick a free address, or none")
            });
        }
    };
    let addr = listener.local_addr()?;
    let token_file = TokenFile::in_dir(&ctx.data_dir);
    let (token, created) = token_file.ensure()?;
    let loopback = addr.ip().is_loopback();
    let policy = auth::Policy::new(
        token_file.clone(),
        NamedTokens::in_dir(&ctx.data_dir),
        loopback,
    );
    let state = AppState(Arc::new(Shared {
        live: live::Live::start(ctx.store.clone()),
        streams: Arc::new(tokio::sync::Semaphore::new(events::MAX_STREAMS)),
        ctx,
    }));
    let (router, _) = app(state, policy);
    let task = tokio::spawn(server::serve(listener, router));
    if created && print_token {
        say(
            Level::Info,
            format!(
                "API token (shown this once; kept in {}, `cronwerk token rotate` replaces it): \
                 {token}",
                token_file.path().display()
            ),
        );
    } else if created {
        say(
            Level::Info,
            format!(
                "created an API token, kept in {} (mode 0600); it is not printed here because \
                 stderr is not a terminal: read that file as this user, or start with \
                 --print-token; `cronwerk token rotate` replaces it",
                token_file.path().display()
            ),
        );
    }
    if !loopback {
        say(
            Level::Info,
            format!("{addr} is not loopback: every API request needs the token"),
        );
    }
    // Last, so whoever waits for this line has seen the ones above.
    say(Level::Info, format!("API and dashboard on http://{addr}/"));
    Ok(Some(ApiServer { addr, task }))
}

//! The API's connections: accepted here rather than by `axum::serve`, so
//! that a client cannot hold the server hostage. At most
//! [`MAX_CONNECTIONS`] are open at once (more are closed as they come);
//! a client that has not sent a request's headers within
//! [`HEADER_TIMEOUT`] (a slow-loris one, or a keep-alive connection left
//! idle) is disconnected; accept errors (a process out of file
//! descriptors) are logged once a second, not in a loop. Live streams
//! (Server-Sent Events) are bounded separately, in `events`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Connections open at once; past it a new one is closed at once.
pub const MAX_CONNECTIONS: usize = 512;
/// Longest a client may take to send a request's headers, and longest a
/// kept-alive connection may wait for its next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until the returned future is dropped
/// (which closes every connection it opened).
pub async fn serve(listener: TcpListener, router: Router) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut last_complaint: Option<Instant> = None;
    let mut complain = |what: String| {
        if last_complaint.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!("the API {what}");
            last_complaint = Some(Instant::now());
        }
    };
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                complain(format!("cannot accept a connection: {e}"));
                // EMFILE and friends do not clear by retrying at once.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            complain(format!(
                "closed a connection: {MAX_CONNECTIONS} are open, the most it keeps"
            ));
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!("API connection ended: {e}");
            }
        });
    }
}

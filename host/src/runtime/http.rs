//! Outbound HTTP for tasks (`wasi:http/outgoing-handler`): deny by default,
//! allowed only to the hosts a configuration grants, and at most
//! [`MAX_HTTP_CONNECTIONS`] connections at once. Components built with
//! componentize-js import `wasi:http` whether or not they use it, so the host
//! always links it; the policy here decides what a request may reach.

use std::sync::{Arc, Weak};

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::events::EventLog;
use super::limits::{HTTP_BODY_BUFFER_CHUNKS, HTTP_BODY_CHUNK_BYTES, MAX_HTTP_CONNECTIONS};
use crate::model::{EventSource, HttpGrant, Level};

/// The `wasi:http` hooks of one run: every outgoing request is checked
/// against the run's grants before a connection is opened, and a denied one
/// leaves a warning in the run's event log naming the grant that would allow it.
/// A request past [`MAX_HTTP_CONNECTIONS`] fails with
/// `connection-limit-reached` and leaves an `HTTP_LIMIT` warning.
pub(crate) struct HttpPolicy {
    grants: Vec<HttpGrant>,
    events: EventLog,
    /// One per request whose connection may still be open: alive while its
    /// connecting future or its connection's driver is.
    connections: Vec<Weak<()>>,
}

impl HttpPolicy {
    pub fn new(grants: Vec<HttpGrant>, events: EventLog) -> Self {
        HttpPolicy {
            grants,
            events,
            connections: Vec::new(),
        }
    }

    /// A token to keep with a new connection, or `None` when the run holds
    /// [`MAX_HTTP_CONNECTIONS`] already.
    fn connection_slot(&mut self) -> Option<Arc<()>> {
        self.connections.retain(|c| c.strong_count() > 0);
        if self.connections.len() >= MAX_HTTP_CONNECTIONS {
            return None;
        }
        let token = Arc::new(());
        self.connections.push(Arc::downgrade(&token));
        Some(token)
    }

    fn check(&self, uri: &http::Uri) -> Result<(), String> {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let default_port = if https { 443 } else { 80 };
        let Some(host) = uri.host() else {
            return Err(format!("request to '{uri}' has no host"));
        };
        let port = uri.port_u16().unwrap_or(default_port);
        if self
            .grants
            .iter()
            .any(|g| g.allows(host, port, default_port))
        {
            return Ok(());
        }
        let grant = if port == default_port {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        Err(format!(
            "HTTP request to {host}:{port} denied: this configuration grants no such host \
             (allow it with --allow-http {grant})"
        ))
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        if let Err(message) = self.check(request.uri()) {
            self.events
                .push(Level::Warning, EventSource::Host, "HTTP_DENIED", &message);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let Some(token) = self.connection_slot() else {
            self.events.push(
                Level::Warning,
                EventSource::Host,
                "HTTP_LIMIT",
                &format!(
                    "HTTP request to {} refused: the task already has {MAX_HTTP_CONNECTIONS} \
                     requests in flight",
                    request.uri()
                ),
            );
            return Box::new(async { Err(HttpError::ConnectionLimitReached) });
        };
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            // The connection is the driver's until it ends (or the task
            // drops the response and the driver is aborted).
            let io = async move {
                let _connection = token;
                io.await
            };
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        HTTP_BODY_BUFFER_CHUNKS
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        HTTP_BODY_CHUNK_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(s: &str) -> HttpGrant {
        s.parse().unwrap()
    }

    #[test]
    fn connections_count_until_their_token_is_dropped() {
        let mut policy = HttpPolicy::new(vec![], EventLog::new(Default::default()));
        let mut held: Vec<_> = (0..MAX_HTTP_CONNECTIONS)
            .map(|_| policy.connection_slot().expect("a slot"))
            .collect();
        assert!(policy.connection_slot().is_none());
        held.pop();
        assert!(policy.connection_slot().is_some());
    }

    #[test]
    fn policy_denies_and_explains() {
        let events = EventLog::new(Default::default());
        let policy = HttpPolicy::new(vec![grant("127.0.0.1:8080")], events);
        assert!(
            policy
                .check(&"http://127.0.0.1:8080/x".parse().unwrap())
                .is_ok()
        );
        let err = policy
            .check(&"https://example.com/".parse().unwrap())
            .unwrap_err();
        assert!(err.contains("--allow-http example.com"), "{err}");
        let err = policy
            .check(&"http://127.0.0.1:9/".parse().unwrap())
            .unwrap_err();
        assert!(err.contains("--allow-http 127.0.0.1:9"), "{err}");
    }
}

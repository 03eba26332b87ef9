//! Outbound HTTP for tasks (`wasi:http/outgoing-handler`): deny by default,
//! allowed only to the hosts a configuration grants. Components built with
//! componentize-js import `wasi:http` whether or not they use it, so the host
//! always links it; the policy here decides what a request may reach.

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::events::EventLog;
use super::limits::{HTTP_BODY_BUFFER_CHUNKS, HTTP_BODY_CHUNK_BYTES};
use crate::model::{EventSource, HttpGrant, Level};

/// The `wasi:http` hooks of one run: every outgoing request is checked
/// against the run's grants before a connection is opened, and a denied one
/// leaves a warning in the run's event log naming the grant that would allow it.
pub(crate) struct HttpPolicy {
    grants: Vec<HttpGrant>,
    events: EventLog,
}

impl HttpPolicy {
    pub fn new(grants: Vec<HttpGrant>, events: EventLog) -> Self {
        HttpPolicy { grants, events }
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
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
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

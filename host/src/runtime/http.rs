//! Outbound HTTP for tasks (`wasi:http/outgoing-handler`): deny by default,
//! allowed only to the hosts a configuration grants, and even then not to an
//! internal address (loopback, link-local, private, ...) unless the grant
//! names that address literally or the operator allows internal addresses
//! for the whole instance. A granted name is resolved once, every address it
//! resolves to is checked, and the connection goes to a checked address
//! (`egress`), so DNS cannot answer differently between check and connect.
//! Requests, requests in flight (connections) and response bytes per run
//! are capped. Components built with
//! componentize-js import `wasi:http` whether or not they use it, so the host
//! always links it; the policy here decides what a request may reach.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::address::internal_kind;
use super::egress::{self, Destination, IoFuture, ResponseBudget};
use super::events::EventLog;
use super::limits::{
    HTTP_BODY_BUFFER_CHUNKS, HTTP_BODY_CHUNK_BYTES, MAX_HTTP_CONNECTIONS,
    MAX_HTTP_REQUESTS_PER_RUN, MAX_HTTP_RESPONSE_BYTES_PER_RUN,
};
use crate::model::{EventSource, HttpGrant, Level};

/// What the runtime allows every run's outbound HTTP, besides its grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Whether a granted host name may lead to an internal address
    /// (`--allow-private-http`). Off by default: only a grant naming the
    /// address itself (`--allow-http 10.0.0.5`) reaches one.
    pub allow_private: bool,
    /// Requests one run may send ([`MAX_HTTP_REQUESTS_PER_RUN`]).
    pub max_requests_per_run: u32,
    /// Response body bytes one run may receive in all
    /// ([`MAX_HTTP_RESPONSE_BYTES_PER_RUN`]).
    pub max_response_bytes_per_run: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            allow_private: false,
            max_requests_per_run: MAX_HTTP_REQUESTS_PER_RUN,
            max_response_bytes_per_run: MAX_HTTP_RESPONSE_BYTES_PER_RUN,
        }
    }
}

/// A granted request's target.
#[derive(Debug)]
struct Target {
    /// The host as written in the URI, without IPv6 brackets.
    host: String,
    port: u16,
    default_port: u16,
    https: bool,
    /// The address, when the host is one.
    literal: Option<IpAddr>,
}

/// The `wasi:http` hooks of one run: every outgoing request is checked
/// against the run's grants before anything is resolved, its addresses
/// before a connection is opened, and a denied one leaves a warning in the
/// run's event log saying what would allow it.
pub(crate) struct HttpPolicy {
    /// Shared with the requests in flight, which check their addresses.
    rules: Arc<Rules>,
    /// Requests sent so far (those the grants allowed).
    requests: u32,
    budget: Arc<ResponseBudget>,
    /// One per request whose connection may still be open: alive while its
    /// connecting future or its connection's driver is. A request past
    /// [`MAX_HTTP_CONNECTIONS`] fails with `connection-limit-reached`.
    connections: Vec<Weak<()>>,
}

/// What decides whether a request may go: the run's grants and the
/// runtime's settings, and where a refusal is said.
struct Rules {
    grants: Vec<HttpGrant>,
    settings: HttpSettings,
    events: EventLog,
}

impl Target {
    /// `host:port` as people write it (`[::1]:8080` for IPv6).
    fn authority(&self) -> String {
        match self.literal {
            Some(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

impl HttpPolicy {
    pub fn new(grants: Vec<HttpGrant>, settings: HttpSettings, events: EventLog) -> Self {
        let budget = Arc::new(ResponseBudget::new(
            settings.max_response_bytes_per_run,
            events.clone(),
        ));
        HttpPolicy {
            rules: Arc::new(Rules {
                grants,
                settings,
                events,
            }),
            requests: 0,
            budget,
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
}

impl Rules {
    fn check(&self, uri: &http::Uri) -> Result<Target, String> {
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
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            return Ok(Target {
                host: bare.to_owned(),
                port,
                default_port,
                https,
                literal: bare.parse().ok(),
            });
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

    /// Whether every address `target` resolved to may be reached: a public
    /// one always, an internal one only when a grant names it literally or
    /// the runtime allows internal addresses. One internal address refuses
    /// the whole request, so a name cannot mix a public and an internal
    /// answer to slip through.
    fn check_addresses(&self, target: &Target, addrs: &[IpAddr]) -> Result<(), String> {
        if self.settings.allow_private {
            return Ok(());
        }
        for &ip in addrs {
            let Some(kind) = internal_kind(ip) else {
                continue;
            };
            let named = self
                .grants
                .iter()
                .any(|g| g.allows_address(ip, target.port, target.default_port));
            if named {
                continue;
            }
            let shown = match ip {
                IpAddr::V4(_) => ip.to_string(),
                IpAddr::V6(_) => format!("[{ip}]"),
            };
            let grant = if target.port == target.default_port {
                shown
            } else {
                format!("{shown}:{}", target.port)
            };
            let what = if target.literal == Some(ip) {
                format!("{} is {} {kind} address", target.host, article(kind))
            } else {
                format!(
                    "{} resolves to {ip}, {} {kind} address",
                    target.host,
                    article(kind)
                )
            };
            return Err(format!(
                "HTTP request to {} denied: {what}; grant the address literally \
                 (--allow-http {grant}) or start with --allow-private-http",
                target.authority()
            ));
        }
        Ok(())
    }

    fn deny(&self, code: &str, message: &str) {
        self.events
            .push(Level::Warning, EventSource::Host, code, message);
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u', 'I']) {
        "an"
    } else {
        "a"
    }
}

/// The addresses of `target`, looked up once: its own when it is one.
async fn resolve(target: &Target, limit: Duration) -> Result<Vec<IpAddr>, HttpError> {
    if let Some(ip) = target.literal {
        return Ok(vec![ip]);
    }
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let found = tokio::time::timeout(limit, lookup)
        .await
        .map_err(|_| HttpError::DnsTimeout)?
        .map_err(|e| HttpError::DnsError {
            rcode: Some(e.to_string()),
            info_code: None,
        })?;
    let mut addrs: Vec<IpAddr> = Vec::new();
    for addr in found {
        if !addrs.contains(&addr.ip()) {
            addrs.push(addr.ip());
        }
    }
    if addrs.is_empty() {
        return Err(HttpError::DestinationNotFound);
    }
    Ok(addrs)
}

type ResponseFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;

/// Refuses `request` with `error` without breaking the task's writing of
/// its body (see [`discard_body`]).
fn refuse(request: http::Request<WasiBody>, error: HttpError) -> ResponseFuture {
    discard_body(request);
    Box::new(async move { Err(error) })
}

/// Reads a refused request's body and throws it away, in the background,
/// until the task closes it (or its run ends, and the stream with it), so
/// the task sees the refusal as the response's error. Dropping the body at
/// once breaks the stream under the guest mid-write, which a guest runtime
/// may take for a crash (componentize-js's aborts the run) rather than the
/// error it is. Nothing is kept, and the run's time limit bounds the work.
fn discard_body(request: http::Request<WasiBody>) {
    use http_body_util::BodyExt as _;
    let mut body = request.into_body();
    tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
}

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        _ = fut;
        let target = match self.rules.check(request.uri()) {
            Ok(target) => target,
            Err(message) => {
                self.rules.deny("HTTP_DENIED", &message);
                return refuse(request, HttpError::HttpRequestDenied);
            }
        };
        let max = self.rules.settings.max_requests_per_run;
        if self.requests >= max {
            // Said once: a task retrying in a loop would fill its log.
            if self.requests == max {
                self.rules.deny(
                    "HTTP_LIMIT",
                    &format!(
                        "HTTP request to {} refused: this run has sent {max} HTTP requests, \
                         the most one run may send; later requests of the run are refused too",
                        target.authority()
                    ),
                );
                self.requests += 1;
            }
            return refuse(request, HttpError::HttpRequestDenied);
        }
        let Some(token) = self.connection_slot() else {
            self.rules.deny(
                "HTTP_LIMIT",
                &format!(
                    "HTTP request to {} refused: the task already has {MAX_HTTP_CONNECTIONS} \
                     requests in flight",
                    target.authority()
                ),
            );
            return refuse(request, HttpError::ConnectionLimitReached);
        };
        self.requests += 1;
        let rules = self.rules.clone();
        let budget = self.budget.clone();
        Box::new(async move {
            let limit = options
                .and_then(|o| o.connect_timeout)
                .unwrap_or(egress::DEFAULT_TIMEOUT);
            let addrs = match resolve(&target, limit).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    discard_body(request);
                    return Err(e);
                }
            };
            if let Err(message) = rules.check_addresses(&target, &addrs) {
                rules.deny("HTTP_DENIED", &message);
                discard_body(request);
                return Err(HttpError::DestinationIpProhibited);
            }
            let to = Destination {
                addrs: addrs
                    .iter()
                    .map(|&ip| SocketAddr::new(ip, target.port))
                    .collect(),
                host: target.host,
                https: target.https,
            };
            let (response, io) = egress::send(request, options, to, budget).await?;
            // The connection is the driver's until it ends (or the task
            // drops the response and the driver is aborted).
            let io = async move {
                let _connection = token;
                Box::into_pin(io).await
            };
            Ok((response, Box::new(io) as IoFuture))
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
    use http_body_util::BodyExt;

    use super::*;

    fn grant(s: &str) -> HttpGrant {
        s.parse().unwrap()
    }

    fn policy(grants: &[&str], allow_private: bool) -> HttpPolicy {
        HttpPolicy::new(
            grants.iter().map(|g| grant(g)).collect(),
            HttpSettings {
                allow_private,
                ..Default::default()
            },
            EventLog::new(Default::default()),
        )
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn connections_count_until_their_token_is_dropped() {
        let mut policy = policy(&[], false);
        let mut held: Vec<_> = (0..MAX_HTTP_CONNECTIONS)
            .map(|_| policy.connection_slot().expect("a slot"))
            .collect();
        assert!(policy.connection_slot().is_none());
        held.pop();
        assert!(policy.connection_slot().is_some());
    }

    #[test]
    fn policy_denies_and_explains() {
        let policy = policy(&["127.0.0.1:8080"], false);
        let policy = &policy.rules;
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

    fn addresses(policy: &HttpPolicy, uri: &str, resolved: &[&str]) -> Result<(), String> {
        let target = policy.rules.check(&uri.parse().unwrap()).expect("granted");
        policy.rules.check_addresses(&target, &ips(resolved))
    }

    #[test]
    fn a_granted_name_resolving_to_an_internal_address_is_refused_and_explained() {
        let p = policy(&["api.example.com", "localhost:8080"], false);
        let err = addresses(&p, "https://api.example.com/", &["10.0.0.5"]).unwrap_err();
        assert!(
            err.contains(
                "api.example.com resolves to 10.0.0.5, a private address; grant the address \
                 literally (--allow-http 10.0.0.5) or start with --allow-private-http"
            ),
            "{err}"
        );
        let err = addresses(&p, "http://localhost:8080/", &["::1", "127.0.0.1"]).unwrap_err();
        assert!(err.contains("resolves to ::1, a loopback address"), "{err}");
        assert!(err.contains("--allow-http [::1]:8080"), "{err}");
        let err = addresses(&p, "http://api.example.com/", &["169.254.169.254"]).unwrap_err();
        assert!(
            err.starts_with("HTTP request to api.example.com:80 denied"),
            "{err}"
        );
        assert!(err.contains("a link-local address"), "{err}");
        let err = addresses(&p, "http://api.example.com/", &["::ffff:127.0.0.1"]).unwrap_err();
        assert!(err.contains("loopback"), "{err}");
        // One internal answer among public ones refuses the request.
        let err = addresses(
            &p,
            "https://api.example.com/",
            &["93.184.216.34", "192.168.0.1"],
        )
        .unwrap_err();
        assert!(err.contains("192.168.0.1"), "{err}");
        // Public answers pass.
        assert!(
            addresses(
                &p,
                "https://api.example.com/",
                &["93.184.216.34", "2606:4700::1"]
            )
            .is_ok()
        );
    }

    #[test]
    fn a_literal_grant_or_the_instance_flag_allows_internal_addresses() {
        // The grant names the address: the task may use it, by address or
        // through a granted name resolving to it (same port).
        let p = policy(
            &["127.0.0.1:8080", "[::1]:8080", "svc.internal:8080"],
            false,
        );
        assert!(addresses(&p, "http://127.0.0.1:8080/", &["127.0.0.1"]).is_ok());
        assert!(addresses(&p, "http://[::1]:8080/", &["::1"]).is_ok());
        let err = addresses(&p, "http://[::1]:8080/", &["fe80::1"]).unwrap_err();
        assert!(
            err.starts_with("HTTP request to [::1]:8080 denied"),
            "{err}"
        );
        assert!(addresses(&p, "http://svc.internal:8080/", &["127.0.0.1", "::1"]).is_ok());
        let err = addresses(&p, "http://svc.internal:8080/", &["10.1.1.1"]).unwrap_err();
        assert!(err.contains("--allow-http 10.1.1.1:8080"), "{err}");
        // A wildcard grant names no address.
        let p = policy(&["*.0.0.1"], false);
        let err = addresses(&p, "http://127.0.0.1/", &["127.0.0.1"]).unwrap_err();
        assert!(err.contains("127.0.0.1 is a loopback address"), "{err}");
        // --allow-private-http lets granted names reach anything.
        let p = policy(&["localhost:8080", "api.example.com"], true);
        assert!(addresses(&p, "http://localhost:8080/", &["127.0.0.1"]).is_ok());
        assert!(addresses(&p, "http://api.example.com/", &["169.254.169.254"]).is_ok());
    }

    #[tokio::test]
    async fn requests_past_the_cap_are_refused_once_explained() {
        let events = EventLog::new(Default::default());
        let mut p = HttpPolicy::new(
            vec![grant("127.0.0.1:9")],
            HttpSettings {
                max_requests_per_run: 2,
                ..Default::default()
            },
            events.clone(),
        );
        let request = || {
            http::Request::builder()
                .uri("http://127.0.0.1:9/")
                .body(
                    http_body_util::Empty::new()
                        .map_err(|e: std::convert::Infallible| match e {})
                        .boxed_unsync(),
                )
                .unwrap()
        };
        let sent = || Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>;
        for _ in 0..2 {
            // Port 9 refuses or times out; what matters is that it is tried.
            let result = Box::into_pin(p.send_request(request(), None, sent())).await;
            assert!(!matches!(result, Err(HttpError::HttpRequestDenied)));
        }
        for _ in 0..3 {
            let result = Box::into_pin(p.send_request(request(), None, sent())).await;
            assert!(matches!(result, Err(HttpError::HttpRequestDenied)));
        }
        let limits: Vec<_> = events
            .snapshot()
            .into_iter()
            .filter(|e| e.code == "HTTP_LIMIT")
            .collect();
        assert_eq!(limits.len(), 1, "{limits:?}");
        assert!(
            limits[0].message.contains("sent 2 HTTP requests"),
            "{}",
            limits[0].message
        );
    }
}

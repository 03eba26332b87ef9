//! Outbound HTTP for tasks (`wasi:http/outgoing-handler`): deny by default,
//! allowed only to the hosts a configuration grants. Components built with
//! componentize-js import `wasi:http` whether or not they use it, so the host
//! always links it; the policy here decides what a request may reach.

use std::fmt;

use serde::{Deserialize, Serialize};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::events::{EventLog, EventSource, Level};

/// One host a task may send HTTP requests to: `example.com`,
/// `*.example.com` (any subdomain, not the domain itself), each with an
/// optional `:port`. Without a port only the scheme's default port (80 for
/// http, 443 for https) is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpGrant {
    host: String,
    port: Option<u16>,
}

impl HttpGrant {
    /// Whether a request to `host:port` falls under this grant.
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => host == self.host,
        };
        host_ok && port == self.port.unwrap_or(default_port)
    }
}

impl std::str::FromStr for HttpGrant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!(
                "'{s}' is not an HTTP host grant ({why}): use HOST or HOST:PORT, \
                 e.g. api.example.com, *.example.com or 127.0.0.1:8080"
            )
        };
        if s.contains("://") || s.contains('/') {
            return Err(bad("give the host, not a URL"));
        }
        // `[::1]:8080` or `[::1]` for IPv6; otherwise the last `:` splits.
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (addr, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("unexpected text after ']'")),
            };
            (format!("[{addr}]"), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (s.to_owned(), None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad("the port must be 1-65535"))
            })
            .transpose()?;
        if port == Some(0) {
            return Err(bad("the port must be 1-65535"));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid_name = !name.is_empty()
            && !name.contains('*')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
        if !valid_name {
            return Err(bad("not a host name or address"));
        }
        Ok(HttpGrant { host, port })
    }
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl TryFrom<String> for HttpGrant {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<HttpGrant> for String {
    fn from(g: HttpGrant) -> String {
        g.to_string()
    }
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(s: &str) -> HttpGrant {
        s.parse().unwrap()
    }

    #[test]
    fn parses_hosts_ports_and_wildcards() {
        assert_eq!(grant("API.example.com").to_string(), "api.example.com");
        assert_eq!(grant("127.0.0.1:8080").to_string(), "127.0.0.1:8080");
        assert_eq!(grant("*.example.com:443").to_string(), "*.example.com:443");
        assert_eq!(grant("[::1]:9000").to_string(), "[::1]:9000");
        for bad in [
            "",
            "http://example.com",
            "example.com/path",
            "example.com:0",
            "example.com:99999",
            "*",
            "a*.example.com",
        ] {
            let err = bad.parse::<HttpGrant>().unwrap_err();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn matches_host_and_port() {
        let g = grant("example.com");
        assert!(g.allows("example.com", 443, 443));
        assert!(g.allows("EXAMPLE.com.", 80, 80));
        assert!(!g.allows("example.com", 8443, 443));
        assert!(!g.allows("evil-example.com", 443, 443));
        assert!(!g.allows("sub.example.com", 443, 443));

        let g = grant("*.example.com");
        assert!(g.allows("a.example.com", 443, 443));
        assert!(g.allows("a.b.example.com", 80, 80));
        assert!(!g.allows("example.com", 443, 443));
        assert!(!g.allows("aexample.com", 443, 443));

        let g = grant("127.0.0.1:8080");
        assert!(g.allows("127.0.0.1", 8080, 80));
        assert!(!g.allows("127.0.0.1", 80, 80));
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

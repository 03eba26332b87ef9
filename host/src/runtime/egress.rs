//! Sending one outbound request a task's policy has already allowed, to the
//! addresses the policy checked: the host connects to those addresses
//! itself (no second DNS lookup that could answer differently), speaks TLS
//! with the request's host name for https, then HTTP/1.1 through hyper. The
//! `RequestOptions` timeouts apply as in `wasmtime-wasi-http`'s own sender,
//! and every response body draws on the run's byte budget.

use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use super::events::EventLog;
use crate::model::{EventSource, Level};

/// The future that drives a connection after its response has arrived;
/// `wasmtime-wasi-http` runs it and reports its error to the task.
pub(crate) type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

/// How long each step may take when the task sets no timeout of its own, as
/// in `wasmtime-wasi-http`. The run's time limit ends a run sooner.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a checked request goes.
pub(crate) struct Destination {
    /// The request's host as written (no brackets): the TLS server name.
    pub host: String,
    pub https: bool,
    /// The checked addresses, tried in order.
    pub addrs: Vec<SocketAddr>,
}

/// Response body bytes a run may still receive, shared by all its responses.
pub(crate) struct ResponseBudget {
    limit: u64,
    used: AtomicU64,
    reported: AtomicBool,
    events: EventLog,
}

impl ResponseBudget {
    pub fn new(limit: u64, events: EventLog) -> Self {
        ResponseBudget {
            limit,
            used: AtomicU64::new(0),
            reported: AtomicBool::new(false),
            events,
        }
    }

    /// Counts `n` more bytes; past the limit the body must end with an error
    /// (said once per run in an `HTTP_LIMIT` warning).
    fn take(&self, n: u64) -> Result<(), HttpError> {
        let before = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_add(n))
            })
            .unwrap_or_else(|u| u);
        if before.saturating_add(n) <= self.limit {
            return Ok(());
        }
        if !self.reported.swap(true, Ordering::SeqCst) {
            let message = format!(
                "HTTP response bodies of this run passed {} in all, the most one run may \
                 receive: the body that crossed it and any later one end with an error",
                bytesize::ByteSize(self.limit)
            );
            self.events
                .push(Level::Warning, EventSource::Host, "HTTP_LIMIT", &message);
        }
        Err(HttpError::HttpResponseBodySize(Some(self.limit)))
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Roots of trust for https: the Mozilla set `webpki-roots` carries, as
/// `wasmtime-wasi-http` uses.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, HttpError> {
    use rustls::pki_types::ServerName;
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(ServerName::from(ip)),
        Err(_) => ServerName::try_from(host.to_owned()).map_err(HttpError::InvalidDnsNameError),
    }
}

/// Connects to the first of `addrs` that answers, within `limit` in all.
async fn connect(addrs: &[SocketAddr], limit: Duration) -> Result<TcpStream, HttpError> {
    let attempts = async {
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or(HttpError::DestinationNotFound, HttpError::Connect))
    };
    tokio::time::timeout(limit, attempts)
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
}

/// Sends `request` to `to` and returns the response (its body charged to
/// `budget`) and the future that finishes the connection.
pub(crate) async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    to: Destination,
    budget: Arc<ResponseBudget>,
) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
    let options = options.unwrap_or_default();
    let connect_timeout = options.connect_timeout.unwrap_or(DEFAULT_TIMEOUT);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(DEFAULT_TIMEOUT);
    // Tokio panics on a zero interval; a nanosecond is as good as zero.
    let between_bytes_timeout = options
        .between_bytes_timeout
        .unwrap_or(DEFAULT_TIMEOUT)
        .max(Duration::from_nanos(1));

    let tcp = connect(&to.addrs, connect_timeout).await?;
    let stream: Box<dyn Stream> = if to.https {
        let name = server_name(&to.host)?;
        let tls = tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp);
        let tls = tokio::time::timeout(connect_timeout, tls)
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let handshake = hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream));
    let (mut sender, conn) = tokio::time::timeout(connect_timeout, handshake)
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;

    // The request line carries only the path: scheme and authority belong
    // there only when talking to a proxy (the Host header names the host).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let response = async {
        tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)?
            .map_err(HttpError::from)
    };
    // Wait for the response while driving the connection's I/O.
    let mut response = pin!(response);
    let mut conn = Some(conn);
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        let Some(running) = conn.as_mut() else {
            return Poll::Pending;
        };
        let finished = ready!(Pin::new(running).poll(cx));
        conn = None;
        match finished {
            Ok(()) => response.as_mut().poll(cx),
            Err(e) => Poll::Ready(Err(HttpError::from(e))),
        }
    })
    .await?;

    let mut timeout = tokio::time::interval(between_bytes_timeout);
    timeout.reset();
    let response = response.map(|incoming| {
        ResponseBody {
            incoming,
            timeout,
            budget,
        }
        .boxed_unsync()
    });
    let io = async move {
        let Some(conn) = conn else {
            return Ok(());
        };
        conn.await.map_err(|e| {
            if e.is_timeout() {
                HttpError::HttpResponseTimeout
            } else {
                HttpError::from(e)
            }
        })
    };
    Ok((response, Box::new(io) as IoFuture))
}

/// A response body with the between-bytes timeout and the run's byte budget.
struct ResponseBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
    budget: Arc<ResponseBudget>,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(HttpError::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                this.timeout.reset();
                if let Some(data) = frame.data_ref()
                    && let Err(e) = this.budget.take(data.len() as u64)
                {
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(this.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    fn get(uri: &str) -> http::Request<WasiBody> {
        http::Request::builder()
            .uri(uri)
            .header(http::header::HOST, "name.invalid")
            .body(
                http_body_util::Empty::new()
                    .map_err(|e: std::convert::Infallible| match e {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    fn budget() -> Arc<ResponseBudget> {
        Arc::new(ResponseBudget::new(
            1 << 20,
            EventLog::new(Default::default()),
        ))
    }

    /// A listener that hands back the first bytes of its first connection
    /// and answers `reply`.
    fn listener(reply: &'static [u8]) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = vec![0; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            buf.truncate(n);
            tx.send(buf).unwrap();
            let _ = stream.write_all(reply);
        });
        (port, rx)
    }

    #[tokio::test]
    async fn connects_to_the_checked_address_without_resolving_the_name() {
        let (port, seen) = listener(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        // A port nothing listens on comes first: the next address is tried.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let to = Destination {
            host: "name.invalid".into(),
            https: false,
            addrs: vec![
                SocketAddr::from(([127, 0, 0, 1], closed_port)),
                SocketAddr::from(([127, 0, 0, 1], port)),
            ],
        };
        let request = get(&format!("http://name.invalid:{port}/p?q=1"));
        let (response, io) = send(request, None, to, budget()).await.unwrap();
        tokio::spawn(Box::into_pin(io));
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        let head = String::from_utf8(seen.recv().unwrap()).unwrap();
        assert!(head.starts_with("GET /p?q=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("host: name.invalid\r\n"), "{head}");
    }

    #[tokio::test]
    async fn https_speaks_tls_to_the_checked_address_with_the_request_host_as_server_name() {
        let (port, seen) = listener(b"");
        let to = Destination {
            host: "tls.name.invalid".into(),
            https: true,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        };
        let request = get(&format!("https://tls.name.invalid:{port}/"));
        // The listener speaks no TLS, so the handshake fails; what it
        // received is a ClientHello naming the host.
        assert!(send(request, None, to, budget()).await.is_err());
        let hello = seen.recv().unwrap();
        assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
        assert!(
            hello.windows(16).any(|w| w == b"tls.name.invalid"),
            "the server name is in the ClientHello"
        );
    }

    #[test]
    fn the_budget_is_shared_and_reported_once() {
        let events = EventLog::new(Default::default());
        let budget = ResponseBudget::new(100, events.clone());
        assert!(budget.take(60).is_ok());
        assert!(budget.take(40).is_ok());
        assert!(matches!(
            budget.take(1),
            Err(HttpError::HttpResponseBodySize(Some(100)))
        ));
        assert!(budget.take(1).is_err());
        let limits: Vec<_> = events
            .snapshot()
            .into_iter()
            .filter(|e| e.code == "HTTP_LIMIT")
            .collect();
        assert_eq!(limits.len(), 1, "{limits:?}");
        assert!(limits[0].message.contains("100 B"), "{}", limits[0].message);
    }
}
